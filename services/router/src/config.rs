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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            consumer_name: "router".into(),
            workers: 256,
            injection_patterns_file: None,
            registry_cache_ms: 30_000,
            risk: amp_messaging::risk::RiskConfig::default(),
        }
    }
}
