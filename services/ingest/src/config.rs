//! The ingest service's configuration: registration policy, owners, limits.

use amp_runtime::config::Secret;
use serde::Deserialize;

pub use amp_messaging::MessagingConfig;

/// Everything ingest needs to know beyond its identity and its store and bus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Who may register agents.
    pub registration: RegistrationConfig,
    /// Owner accounts (spec 03 owner authentication): a bootstrap seed. At start each is
    /// imported into the store if absent (its tenant, in `owner_key` mode, and its key's
    /// hash); from then on the admin API owns them, so a key revoked there stays revoked.
    pub owners: Vec<OwnerConfig>,
    /// The admin API (operator plane).
    pub admin: AdminConfig,
    /// Rate limits and quotas.
    pub limits: Limits,
    /// The default plan: every tenant's quotas, unless its record (admin API) sets its own,
    /// limit by limit. Unset limits: none. `agents`, `messages_per_minute`,
    /// `messages_per_day`, `stored_bytes`, `message_bytes`, `connections`, `federation`.
    pub plan: amp_store::operator::PlanLimits,
    /// Message acceptance policy.
    pub messaging: MessagingConfig,
    /// Which webhook URLs agents may register (the SSRF guard).
    pub outbound: amp_runtime::outbound::OutboundPolicy,
    /// Provider attachments (spec 04, 08): limits, the scan pipeline's extensions.
    pub attachments: amp_messaging::attachments::AttachmentsConfig,
    /// Where a request's client address comes from (the per-address registration limit):
    /// behind an Ingress or load balancer, list it in `trusted_proxies`, or every client
    /// counts as the proxy's one address.
    pub client_address: amp_runtime::client_addr::ClientAddressConfig,
    /// Seconds a rotated-out API key keeps working (`POST /v1/auth/rotate-key`); sockets
    /// opened with it close when it ends.
    pub key_rotation_grace_secs: u64,
    /// Seconds a revoked public key stays on the revocation list (spec-next 07: at least 90
    /// days, the default): messages it signs are `403 key_revoked` and it cannot register
    /// again. Shorter values break the spec's minimum; they exist for tests.
    pub key_revocation_retention_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            registration: RegistrationConfig::default(),
            owners: Vec::new(),
            admin: AdminConfig::default(),
            attachments: Default::default(),
            limits: Limits::default(),
            plan: Default::default(),
            messaging: MessagingConfig::default(),
            outbound: amp_runtime::outbound::OutboundPolicy::default(),
            client_address: amp_runtime::client_addr::ClientAddressConfig::default(),
            key_rotation_grace_secs: 24 * 3600,
            key_revocation_retention_secs: amp_store::revocation::DEFAULT_RETENTION_SECS,
        }
    }
}

/// Registration policy (spec 03 "Tenant Access"), decided per tenant, in this order:
///
/// 1. a tenant in `reserved_tenants`, or a name in `reserved_names`: refused to everyone;
/// 2. a tenant the operator plane knows (created through the admin API, or seeded from
///    `[[ingest.owners]]`): as its record says (suspended: nobody; `open`; `owner_key`: only
///    with one of its owner keys; `invite`: an owner key or a single-use invite code);
/// 3. a tenant in `open_tenants`: anyone (rate limited per source address);
/// 4. any other tenant: as `mode` says.
///
/// A stranger registered into a tenant becomes a same-tenant sender there (delivered as
/// `verified`, never wrapped) and can list it: so by default (`auto`) only a provider whose
/// domain is a test name (`amp.test`, what `cargo run` uses) is open to strangers, and any
/// provider with a real domain needs an owner's key; a hosted provider lists the few tenants
/// it opens to the public in `open_tenants`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// The policy of a tenant that is neither reserved, owned nor listed in `open_tenants`:
    /// `open` (anyone, rate limited per source address: development and closed networks),
    /// `owner` (a user key, `Authorization: Bearer uk_…`, is required) or `auto` (the
    /// default: `open` when the provider's domain is a test name, under `.test`, `.example`,
    /// `.invalid` or `.localhost`, and `owner` for any other domain).
    pub mode: RegistrationMode,
    /// Tenants anyone may register into, whatever `mode` says (unless reserved or owned).
    pub open_tenants: Vec<String>,
    /// Tenants nobody may register into: the provider's own (`system`, whose `postmaster`
    /// sends bounces) and names people take for the provider's staff.
    pub reserved_tenants: Vec<String>,
    /// Agent names nobody may register, in any tenant.
    pub reserved_names: Vec<String>,
    /// Registrations per source address per minute (spec 07's alternative control).
    pub per_ip_per_minute: u32,
    /// Days a deregistered agent's name stays taken.
    pub name_hold_days: u32,
}

/// Names of the provider and its staff: as tenants and as agent names.
const RESERVED: [&str; 16] = [
    "system",
    "postmaster",
    "admin",
    "administrator",
    "root",
    "abuse",
    "security",
    "support",
    "hostmaster",
    "webmaster",
    "mailer-daemon",
    "noreply",
    "no-reply",
    "provider",
    "federation",
    "amp",
];

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            mode: RegistrationMode::Auto,
            open_tenants: Vec::new(),
            reserved_tenants: RESERVED.iter().map(|s| (*s).to_owned()).collect(),
            reserved_names: RESERVED.iter().map(|s| (*s).to_owned()).collect(),
            per_ip_per_minute: 10,
            name_hold_days: 30,
        }
    }
}

impl RegistrationConfig {
    /// Whether nobody may register into `tenant` (already lowercased).
    pub fn is_reserved_tenant(&self, tenant: &str) -> bool {
        self.reserved_tenants
            .iter()
            .any(|t| t.eq_ignore_ascii_case(tenant))
    }

    /// Whether nobody may register an agent called `name` (already lowercased).
    pub fn is_reserved_name(&self, name: &str) -> bool {
        self.reserved_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    /// This policy for the provider `domain`: `auto` becomes `open` for a test domain
    /// ([`is_test_domain`]) and `owner` for any other.
    pub fn for_domain(mut self, domain: &str) -> Self {
        if self.mode == RegistrationMode::Auto {
            self.mode = if is_test_domain(domain) {
                RegistrationMode::Open
            } else {
                RegistrationMode::Owner
            };
        }
        self
    }

    /// Whether anyone may register into `tenant` (neither reserved nor owned) without a user
    /// key. An `auto` mode not yet resolved by [`Self::for_domain`] counts as `owner`.
    pub fn is_open(&self, tenant: &str) -> bool {
        self.mode == RegistrationMode::Open
            || self
                .open_tenants
                .iter()
                .any(|t| t.eq_ignore_ascii_case(tenant))
    }
}

/// Whether `domain` is a name no real provider can have (RFC 2606 and 6761: under `.test`,
/// `.example`, `.invalid` or `.localhost`): a developer's or a test's provider.
pub fn is_test_domain(domain: &str) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    ["test", "example", "invalid", "localhost"]
        .iter()
        .any(|tld| d == *tld || d.ends_with(&format!(".{tld}")))
}

/// The registration policy of a tenant that is neither reserved, owned nor listed open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// `open` for a test domain, `owner` for a real one (the default; see
    /// [`RegistrationConfig::for_domain`]).
    Auto,
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

/// The admin API: its own listener, never the public one, authenticated with operator
/// tokens (`Authorization: Bearer amp_op_…`) stored hashed in the store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where the admin API listens (`127.0.0.1:8081`); unset, it is not served. Keep it on
    /// loopback or a private network: it must never share the public port (refused).
    pub listen: Option<std::net::SocketAddr>,
    /// A first operator token of scope `full`, imported at start if absent (a token revoked
    /// through the API stays revoked). Set it from the environment
    /// (`AMP__INGEST__ADMIN__BOOTSTRAP_TOKEN`) or use `bootstrap_token_file`. It must start
    /// with `amp_op_` and carry at least 32 characters after it.
    pub bootstrap_token: Option<Secret>,
    /// A file holding the bootstrap token (a mounted Secret).
    pub bootstrap_token_file: Option<std::path::PathBuf>,
}

/// Rate limits (per minute) and quotas. Spec 07/08 defaults; operators raise them. In a
/// cluster the rate limits (and `registration.per_ip_per_minute`) hold for all ingest
/// replicas together, the messages budget for ingest and delivery together (`[nats]
/// limits_sync_ms`; the bound is in `amp_runtime::ratelimit`).
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
    /// Most bytes of messages in one pickup page (`GET /v1/messages/pending`): a page ends at
    /// its `limit` or here, whichever comes first (always at least one message), with
    /// `remaining` and `next_cursor` exact. Bounds a request's memory, whatever the mailbox
    /// holds.
    pub pickup_page_bytes: usize,
    /// `GET /v1/quarantine` per caller (operator token) per minute (spec-next 08).
    pub quarantine_list_per_minute: u32,
    /// `POST /v1/quarantine/{id}/approve|reject` per caller per minute (spec-next 08).
    pub quarantine_decide_per_minute: u32,
    /// `POST /v1/agents/{id}/suspend` (and the admin API's agent suspension) per caller per
    /// minute (spec-next 08).
    pub suspend_per_minute: u32,
    /// `GET /v1/agents/{id}/risk` per caller (operator token or agent) per minute
    /// (spec-next 08).
    pub risk_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            api_requests_per_minute: 100,
            tenant_requests_per_minute: 6000,
            messages_per_minute: 60,
            pending_per_minute: 30,
            mailbox_quota: 1000,
            pickup_page_bytes: 4 * 1024 * 1024,
            quarantine_list_per_minute: 30,
            quarantine_decide_per_minute: 20,
            suspend_per_minute: 10,
            risk_per_minute: 30,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: out of the box only a test domain (what `cargo run` and the tests use) is
    /// open to strangers; any real domain needs an owner's key.
    #[test]
    fn security_registration_auto_is_open_only_for_test_domains() {
        assert_eq!(RegistrationConfig::default().mode, RegistrationMode::Auto);
        for domain in [
            "amp.test",
            "example.test",
            "amp.example",
            "x.invalid",
            "localhost",
        ] {
            let r = RegistrationConfig::default().for_domain(domain);
            assert_eq!(r.mode, RegistrationMode::Open, "{domain}");
            assert!(r.is_open("acme"), "{domain}");
        }
        for domain in [
            "amp.example.com",
            "crabmail.ai",
            "test.example.org",
            "mytest.io",
        ] {
            let r = RegistrationConfig::default().for_domain(domain);
            assert_eq!(r.mode, RegistrationMode::Owner, "{domain}");
            assert!(!r.is_open("acme"), "{domain}");
        }
        // Unresolved, `auto` is closed; an explicit mode is kept whatever the domain.
        assert!(!RegistrationConfig::default().is_open("acme"));
        let open = RegistrationConfig {
            mode: RegistrationMode::Open,
            ..RegistrationConfig::default()
        };
        assert!(open.for_domain("amp.example.com").is_open("acme"));
    }
}
