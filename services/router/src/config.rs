//! The router's configuration.

use std::collections::BTreeMap;
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

/// Message quarantine and blocking (`[router.quarantine]`, spec-next 07 "Message
/// Quarantine" and "Default Severity-to-Verdict Mapping"). Each injection category a message
/// triggers gets an action: its entry in `actions` if it has one (07: overrides take
/// precedence), `quarantine` if it is in `categories`, its severity's verdict with
/// `severity_defaults` on, and `flag` otherwise. The message gets the strongest of its
/// categories' actions. With nothing set (the default) every detection is flagged and
/// delivered, as before: quarantine holds mail until a person acts, and a block refuses it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineConfig {
    /// Injection categories (the pattern database's ids, e.g. `instruction_override`) whose
    /// detection holds a message for an operator's review (the same as an `actions` entry
    /// `quarantine`).
    pub categories: Vec<String>,
    /// Per-category actions, `block`, `quarantine`, `flag` or `ignore` (07's per-rule
    /// overrides), ahead of everything else.
    pub actions: BTreeMap<String, Action>,
    /// Apply 07's default table to the categories without an action: `critical` blocks
    /// (`403`), `high` quarantines, `warning` flags. Off by default.
    pub severity_defaults: bool,
    /// Flag verdicts of one sender within `escalate_window_secs` after which its next
    /// message is quarantined (07 recommends 3); 0 (the default): never.
    pub escalate_after_flags: u32,
    /// The window of `escalate_after_flags`, in seconds (07: 10 minutes).
    pub escalate_window_secs: u64,
    /// Hours an unreviewed message is held before it expires undelivered (07: 72).
    pub ttl_hours: u64,
    /// Hours an entry is kept past its expiry (still listed as `expired`, or with its
    /// decision) before the periodic purge deletes it.
    pub keep_expired_hours: u64,
    /// How often this process purges entries past `keep_expired_hours`, in seconds.
    pub purge_interval_secs: u64,
    /// Scan each message together with the sender's last `window_messages` messages to the
    /// same recipient within `window_secs` (07 "Multi-Message Window Scanning"), in memory;
    /// off by default (every message is scanned again with its window).
    pub window_scan: bool,
    /// Messages in a window (07: 5).
    pub window_messages: usize,
    /// The window's time, in seconds (07: 10 minutes).
    pub window_secs: u64,
    /// Tell the recipient that a message for it is held (07 "Notifications"), with a
    /// `system` message from `postmaster@system.<domain>` (sender and id, no content).
    pub notify_recipient: bool,
}

/// What a detection does to a message (07's per-rule actions), weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Not a finding: neither flagged nor counted.
    Ignore,
    /// Delivered with the category in `security.injection_flags`.
    Flag,
    /// Held for review.
    Quarantine,
    /// Refused: `403` to the sender (a bounce when it was answered already).
    Block,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        Self {
            categories: Vec::new(),
            actions: BTreeMap::new(),
            severity_defaults: false,
            escalate_after_flags: 0,
            escalate_window_secs: 600,
            ttl_hours: 72,
            keep_expired_hours: 24,
            purge_interval_secs: 300,
            notify_recipient: true,
            window_scan: false,
            window_messages: 5,
            window_secs: 600,
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
