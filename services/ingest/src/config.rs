//! The ingest service's configuration: registration policy, owners, limits.

use amp_runtime::config::Secret;
use serde::Deserialize;

pub use amp_messaging::MessagingConfig;

/// Everything ingest needs to know beyond its identity and its store and bus.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Who may register agents.
    pub registration: RegistrationConfig,
    /// Owner accounts (spec 03 owner authentication), created or updated at start.
    pub owners: Vec<OwnerConfig>,
    /// Rate limits and quotas.
    pub limits: Limits,
    /// Message acceptance policy.
    pub messaging: MessagingConfig,
    /// Which webhook URLs agents may register (the SSRF guard).
    pub outbound: amp_runtime::outbound::OutboundPolicy,
}

/// Registration policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// `open`: anyone may register into any tenant (rate limited per source address);
    /// `owner`: a user key (`Authorization: Bearer uk_…`) is required.
    pub mode: RegistrationMode,
    /// Registrations per source address per minute (spec 07's alternative control).
    pub per_ip_per_minute: u32,
    /// Days a deregistered agent's name stays taken.
    pub name_hold_days: u32,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            mode: RegistrationMode::Open,
            per_ip_per_minute: 10,
            name_hold_days: 30,
        }
    }
}

/// Who may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// Anyone, rate limited.
    Open,
    /// Only with a user key.
    Owner,
}

/// An owner account from configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerConfig {
    /// Owner id (`usr_…`).
    pub id: String,
    /// The tenant the owner's agents register into.
    pub tenant: String,
    /// The owner's user key (`uk_…`); only its keyed hash is stored.
    pub user_key: Secret,
    /// Most agents the owner may have.
    #[serde(default = "default_agent_limit")]
    pub agent_limit: u32,
    /// A suspended owner's user key stops working.
    #[serde(default)]
    pub suspended: bool,
}

fn default_agent_limit() -> u32 {
    10
}

/// Rate limits (per minute) and quotas. Spec 07/08 defaults; operators raise them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Authenticated API requests per agent per minute (spec 08 "other endpoints").
    pub api_requests_per_minute: u32,
    /// Authenticated API requests per tenant per minute, all its agents together.
    pub tenant_requests_per_minute: u32,
    /// Messages sent per agent per minute (spec 07).
    pub messages_per_minute: u32,
    /// Pending fetches per agent per minute (spec 08).
    pub pending_per_minute: u32,
    /// Messages a mailbox holds before it refuses new ones (spec 05).
    pub mailbox_quota: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            api_requests_per_minute: 100,
            tenant_requests_per_minute: 6000,
            messages_per_minute: 60,
            pending_per_minute: 30,
            mailbox_quota: 1000,
        }
    }
}
