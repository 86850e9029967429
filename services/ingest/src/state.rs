//! Shared state: identity, configuration, store, bus, limiters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use amp_bus::Bus;
use amp_proto::SecretKey;
use amp_runtime::ratelimit::{RateLimit, RateLimiter};
use amp_store::Store;

use crate::config::Config;

/// Who this provider is and what it offers, as decided by the composing binary.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The provider domain (`crabmail.ai`); clients need two labels (COMPAT.md).
    pub domain: String,
    /// The public base URL clients call, without a trailing slash (`https://api.crabmail.ai`).
    pub public_url: String,
    /// The provider's Ed25519 key (advertised in `/v1/info`; signs federation requests).
    pub provider_key: SecretKey,
    /// The server-side secret keyed into API-key and user-key hashes (stable across restarts).
    pub key_pepper: Vec<u8>,
    /// Capability tokens of what the composed services really do today.
    pub capabilities: Vec<String>,
    /// The server's version (`/v1/health`).
    pub version: String,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) identity: Identity,
    pub(crate) store: Store,
    pub(crate) bus: Bus,
    pub(crate) started: Instant,
    pub(crate) public_pem: String,
    pub(crate) fingerprint: String,
    /// The limiters, shared with the other replicas over the bus (`shared_limits`).
    pub(crate) register_limiter: Arc<RateLimiter>,
    pub(crate) agent_limiter: Arc<RateLimiter>,
    pub(crate) tenant_limiter: Arc<RateLimiter>,
    pub(crate) pending_limiter: Arc<RateLimiter>,
    /// 08's limits of the admin and security endpoints (`admin::limits`).
    pub(crate) security_limiters: crate::admin::limits::SecurityLimiters,
    pub(crate) acceptor: amp_messaging::Acceptor,
    /// Provider attachments, when a blob store was given and they are enabled.
    pub(crate) attachments: Option<amp_messaging::attachments::AttachmentService>,
    /// What `/v1/health` last read from the store (it is unauthenticated: at most one store
    /// read per second, whatever the request rate).
    pub(crate) health: crate::routes::HealthCache,
    /// When this process last recorded each agent's `last_seen_at` (the cached agent
    /// record does not show its own writes).
    pub(crate) last_touched: crate::routes::Touched,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Inner {
    pub(crate) async fn new(
        config: Config,
        identity: Identity,
        store: Store,
        bus: Bus,
        blobs: Option<amp_store::blob::Blobs>,
    ) -> Result<Self, amp_store::Error> {
        let limit = |name: &'static str, n: u32| {
            amp_messaging::shared_limits::limiter(
                &bus,
                name,
                RateLimit {
                    limit: n,
                    window: MINUTE,
                },
            )
        };
        let public = identity.provider_key.public();
        let attachments = blobs.filter(|_| config.attachments.enabled).map(|blobs| {
            amp_messaging::attachments::AttachmentService::new(
                store.clone(),
                blobs,
                config.attachments.clone(),
                &identity.key_pepper,
                &identity.public_url,
            )
            .with_callback_policy(config.outbound)
        });
        let mut identity = identity;
        if attachments.is_some() && !identity.capabilities.iter().any(|c| c == "attachments") {
            identity.capabilities.push("attachments".to_owned());
        }
        let acceptor = amp_messaging::Acceptor::new(
            store.clone(),
            bus.clone(),
            &identity.domain,
            amp_messaging::MessagingConfig {
                mailbox_quota: config.limits.mailbox_quota,
                messages_per_minute: config.limits.messages_per_minute,
                plan: config.plan,
                ..config.messaging.clone()
            },
            identity.capabilities.iter().any(|c| c == "federation"),
        );
        let acceptor = match &attachments {
            Some(a) => acceptor.with_attachments(a.clone()),
            None => acceptor,
        };
        Ok(Self {
            register_limiter: limit("register", config.registration.per_ip_per_minute),
            agent_limiter: limit("api_agent", config.limits.api_requests_per_minute),
            tenant_limiter: limit("api_tenant", config.limits.tenant_requests_per_minute),
            pending_limiter: limit("pending", config.limits.pending_per_minute),
            security_limiters: crate::admin::limits::SecurityLimiters {
                quarantine_list: limit("quarantine_list", config.limits.quarantine_list_per_minute),
                quarantine_decide: limit(
                    "quarantine_decide",
                    config.limits.quarantine_decide_per_minute,
                ),
                suspend: limit("suspend", config.limits.suspend_per_minute),
                risk: limit("risk", config.limits.risk_per_minute),
            },
            public_pem: public.to_pem(),
            fingerprint: public.fingerprint(),
            started: Instant::now(),
            health: Default::default(),
            last_touched: Default::default(),
            acceptor,
            attachments,
            config,
            identity,
            store,
            bus,
        })
    }

    /// Unix milliseconds now.
    pub(crate) fn now_ms() -> i64 {
        amp_proto::Timestamp::now().unix_millis()
    }
}
