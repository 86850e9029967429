//! The router's configuration.

use std::path::PathBuf;

use serde::Deserialize;

/// Router settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Durable consumer name shared by every router replica.
    pub consumer_name: String,
    /// Messages routed at once in this process.
    pub workers: usize,
    /// A TOML prompt-injection pattern database replacing the built-in one (spec 07,
    /// appendix A; updatable without a new release).
    pub injection_patterns_file: Option<PathBuf>,
    /// How long a recipient's record may be reused without reading the store again (see
    /// `[ingest.messaging] registry_cache_ms`: changes reach it by the registry-change
    /// event, never later than this). 0: every message reads it.
    pub registry_cache_ms: u64,
    /// Risk scoring of local senders (spec-next 07): counts, and the automatic suspension.
    pub risk: amp_messaging::risk::RiskConfig,
    /// Message quarantine (spec-next 07): which detections hold a message for review.
    pub quarantine: QuarantineConfig,
}

/// Message quarantine (`[router.quarantine]`, spec-next 07 "Message Quarantine").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineConfig {
    /// Injection categories (the pattern database's ids, e.g. `instruction_override`) whose
    /// detection holds a message for an operator's review instead of delivering it flagged
    /// (07's per-rule `quarantine` action). Empty (the default): nothing is quarantined.
    pub categories: Vec<String>,
    /// Hours an unreviewed message is held before it expires undelivered (07: 72).
    pub ttl_hours: u64,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        Self {
            categories: Vec::new(),
            ttl_hours: 72,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            consumer_name: "router".into(),
            workers: 256,
            injection_patterns_file: None,
            registry_cache_ms: 30_000,
            risk: amp_messaging::risk::RiskConfig::default(),
            quarantine: QuarantineConfig::default(),
        }
    }
}
