//! The `[federation]` section: whether federation runs, whom it trusts, where peers are, and
//! the retry, timeout and rate-limit numbers.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

/// Whom inbound federation accepts, and whom outbound federation sends to (spec 06 "Trust
/// Model"; the central registry mode is not offered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustMode {
    /// Any provider that proves its identity (discovered key, valid signature).
    #[default]
    Open,
    /// Only the providers in `allowed_providers`.
    Allowlist,
    /// No federation at all: inbound refused, outbound bounced.
    Closed,
}

/// A peer provider configured by the operator (discovery step 1, before DNS).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticPeer {
    /// The provider domain (`beta.example`).
    pub domain: String,
    /// Its API base URL, including `/v1` (`https://api.beta.example/v1`).
    pub endpoint: String,
    /// Its Ed25519 public key, PEM or 64 hex characters. Without it the key is fetched from
    /// the peer's well-known document and must match `fingerprint`.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Its key fingerprint (`SHA256:…`), pinned; required when `public_key` is absent.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// The federation service's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Run federation: serve `POST /v1/federation/deliver`, forward messages for other
    /// providers, and advertise the `federation` capability. Off: remote recipients are
    /// refused at acceptance with `501 not_implemented`.
    pub enabled: bool,
    /// `open`, `allowlist` or `closed`.
    pub trust: TrustMode,
    /// The providers accepted (and sent to) in `allowlist` mode.
    pub allowed_providers: Vec<String>,
    /// Providers always refused (`provider_not_trusted`), whatever the mode.
    pub blocked_providers: Vec<String>,
    /// Peers known in advance; they are used before DNS and the well-known URL.
    pub peers: Vec<StaticPeer>,
    /// The DNS server asked for `_amp._tcp.<domain>` TXT records (`ip:port`); the system's
    /// resolvers when absent.
    pub dns_nameserver: Option<SocketAddr>,
    /// Base URLs to fetch a domain's `/.well-known/agent-messaging.json` from instead of
    /// `https://<domain>` (tests, split-horizon setups).
    pub well_known_overrides: BTreeMap<String, String>,
    /// Allow plain `http://` to loopback hosts (127.0.0.0/8, ::1, localhost) for peers and
    /// discovery. For tests and single-host setups only: the spec requires HTTPS.
    pub allow_insecure_http: bool,
    /// Allow peers whose addresses are private, link-local or loopback (over https). Off:
    /// such addresses are refused at connection time (SSRF guard).
    pub allow_private_targets: bool,
    /// Seconds a request timestamp (`X-AMP-Timestamp`) may differ from our clock.
    pub timestamp_window_secs: u64,
    /// Seconds a key a peer reported revoked (`X-AMP-Key-Revoked`) stays refused in that
    /// peer's messages (spec-next 07: at least 90 days, the default).
    pub key_revocation_retention_secs: u64,
    /// Seconds after one of our revocations during which every outbound request announces
    /// it (`X-AMP-Key-Revoked`); peers that hear from us less often miss it.
    pub key_revoked_announce_secs: u64,
    /// Timeout of one outbound request (delivery or discovery), milliseconds.
    pub request_timeout_ms: u64,
    /// Timeout of establishing a connection to a peer, milliseconds.
    pub connect_timeout_ms: u64,
    /// Largest peer response read, bytes; larger ones are a failed attempt.
    pub max_response_bytes: usize,
    /// First retry delay after a transient failure, milliseconds (doubled per attempt).
    pub retry_initial_ms: u64,
    /// Longest retry delay, milliseconds.
    pub retry_max_ms: u64,
    /// How often the outbound queue is scanned for due retries, milliseconds.
    pub poll_interval_ms: u64,
    /// Deliveries in flight at once.
    pub workers: usize,
    /// Deliveries in flight at once to one destination provider (part of `workers`): a peer
    /// that answers slowly, or only at the timeout, slows only the messages to itself.
    pub per_peer_workers: usize,
    /// Concurrent consumers of the federation stream (their job writes share commits).
    pub consumers: usize,
    /// Outbound messages per minute to one destination provider. This limit and the three
    /// inbound ones hold for all federation replicas together (`[nats] limits_sync_ms`).
    pub outbound_per_provider_per_minute: u32,
    /// Inbound messages per minute from one sender provider (spec 06: 100).
    pub inbound_per_provider_per_minute: u32,
    /// Inbound messages per minute to one local recipient (spec 06: 20).
    pub inbound_per_recipient_per_minute: u32,
    /// Inbound messages per minute in total (spec 06: 1000).
    pub inbound_total_per_minute: u32,
    /// How long an inbound delivery waits for the router's mailbox write, milliseconds.
    pub route_timeout_ms: u64,
    /// Least seconds a DNS answer is cached (spec 06: the record's TTL, at least 5 min).
    pub dns_min_ttl_secs: u64,
    /// Seconds a well-known document is cached (spec 06: 1 h).
    pub well_known_ttl_secs: u64,
    /// Seconds a failed discovery is remembered before it is tried again.
    pub negative_ttl_secs: u64,
    /// Discoveries (DNS and HTTPS lookups of a provider not in the cache) per minute, all
    /// providers and all sources together: inbound requests name the provider themselves, so
    /// without a bound anyone could make this provider query any domain at their rate. Over
    /// it, inbound gets 429 and outbound retries later. Per replica: it bounds the lookups
    /// each process makes, not a promise to anyone.
    pub discoveries_per_minute: u32,
    /// Discoveries one client address may cause per minute (inbound requests naming a
    /// provider not in the cache), within `discoveries_per_minute`: one sender of bogus
    /// provider names spends its own allowance, not the first contact of a real peer from
    /// elsewhere. Configured peers (`peers`) are found without a lookup and never count.
    pub discoveries_per_source_per_minute: u32,
    /// Where an inbound request's client address comes from: the direct peer, or behind
    /// trusted reverse proxies the address they forward (as `[ingest.client_address]`;
    /// `ampd` uses that one when this is left empty).
    pub client_address: amp_runtime::client_addr::ClientAddressConfig,
    /// Providers the discovery cache holds (found and failed); past it, expired and then the
    /// oldest entries make room.
    pub discovery_cache_entries: usize,
    /// Messages a local mailbox holds before inbound deliveries to it are refused; set by
    /// the composing binary from the ingest limits.
    #[serde(skip)]
    pub mailbox_quota: Option<u64>,
    /// On a broker-backed bus, how long an inbound delivery waits for the router's outcome
    /// once the broker has it (then `delivered: false`); set by the composing binary from
    /// `[ingest.messaging] outcome_wait_ms`.
    #[serde(skip)]
    pub outcome_wait_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: false,
            trust: TrustMode::Open,
            allowed_providers: Vec::new(),
            blocked_providers: Vec::new(),
            peers: Vec::new(),
            dns_nameserver: None,
            well_known_overrides: BTreeMap::new(),
            allow_insecure_http: false,
            allow_private_targets: false,
            timestamp_window_secs: 300,
            key_revocation_retention_secs: amp_store::revocation::DEFAULT_RETENTION_SECS,
            key_revoked_announce_secs: 7 * 24 * 3600,
            request_timeout_ms: 10_000,
            connect_timeout_ms: 5_000,
            max_response_bytes: 64 * 1024,
            // SPEC-CHECKLIST §4.26: 30 s to 1 h, until the message expires.
            retry_initial_ms: 30_000,
            retry_max_ms: 3_600_000,
            poll_interval_ms: 1_000,
            workers: 8,
            per_peer_workers: 2,
            consumers: 16,
            outbound_per_provider_per_minute: 1_000,
            inbound_per_provider_per_minute: 100,
            inbound_per_recipient_per_minute: 20,
            inbound_total_per_minute: 1_000,
            route_timeout_ms: 10_000,
            dns_min_ttl_secs: 300,
            well_known_ttl_secs: 3_600,
            negative_ttl_secs: 60,
            discoveries_per_minute: 120,
            discoveries_per_source_per_minute: 10,
            client_address: amp_runtime::client_addr::ClientAddressConfig::default(),
            discovery_cache_entries: 10_000,
            mailbox_quota: None,
            outcome_wait_ms: 2_000,
        }
    }
}

impl Config {
    /// Checks what serde cannot.
    ///
    /// # Errors
    /// A message naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        for p in &self.peers {
            if p.public_key.is_none() && p.fingerprint.is_none() {
                return Err(format!(
                    "federation.peers: peer `{}` needs public_key or fingerprint",
                    p.domain
                ));
            }
            if let Some(k) = &p.public_key {
                amp_proto::PublicKey::parse(k)
                    .map_err(|e| format!("federation.peers: public_key of `{}`: {e}", p.domain))?;
            }
        }
        if self.workers == 0 || self.consumers == 0 {
            return Err(
                "federation.workers and federation.consumers must be at least 1".to_owned(),
            );
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            return Err(
                "federation.retry_initial_ms must be at least 1 and at most retry_max_ms"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// Whether the trust policy lets `provider` federate with us (either direction). Names
    /// are compared normalised ([`normalize_domain`]), so `evil.test.` is `evil.test`; a name
    /// that is not a domain is trusted by no policy.
    pub fn trusts(&self, provider: &str) -> bool {
        let Some(provider) = normalize_domain(provider) else {
            return false;
        };
        let listed = |l: &[String]| {
            l.iter()
                .any(|p| normalize_domain(p).as_deref() == Some(provider.as_str()))
        };
        if listed(&self.blocked_providers) {
            return false;
        }
        match self.trust {
            TrustMode::Open => true,
            TrustMode::Allowlist => listed(&self.allowed_providers),
            TrustMode::Closed => false,
        }
    }
}

/// A provider domain in its one canonical spelling: trimmed, lowercase, without the root's
/// trailing dot, at least two labels of `a-z`, `0-9` and `-`. `None` for anything else.
pub fn normalize_domain(name: &str) -> Option<String> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels = name.split('.').count();
    (name.len() <= 253 && labels >= 2 && name.split('.').all(amp_proto::address::is_valid_label))
        .then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_trust_policy() {
        let mut c = Config {
            blocked_providers: vec!["evil.test".into()],
            ..Config::default()
        };
        assert!(c.trusts("good.test"));
        assert!(!c.trusts("EVIL.test"));
        // One spelling per name: the root's trailing dot and spacing change nothing.
        assert!(!c.trusts("evil.test."));
        assert!(!c.trusts(" evil.test.. "));
        assert!(!c.trusts("not a domain"));
        c.trust = TrustMode::Allowlist;
        c.allowed_providers = vec!["good.test".into()];
        assert!(c.trusts("good.test"));
        assert!(!c.trusts("other.test"));
        c.trust = TrustMode::Closed;
        assert!(!c.trusts("good.test"));
    }

    #[test]
    fn peers_need_a_key_or_fingerprint() {
        let c = Config {
            peers: vec![StaticPeer {
                domain: "b.test".into(),
                endpoint: "https://b.test/v1".into(),
                public_key: None,
                fingerprint: None,
            }],
            ..Config::default()
        };
        assert!(c.validate().is_err());
        assert!(Config::default().validate().is_ok());
    }
}
