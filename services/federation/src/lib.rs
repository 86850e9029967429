//! Federation (spec 06): agents on this provider message agents on other providers, and the
//! other way round.
//!
//! - Outbound ([`outbound`]): the router hands messages for other providers to the
//!   `AMP_FEDERATION` stream; they are turned into durable jobs at once (so the router never
//!   waits on a peer), then delivered by `POST <endpoint>/federation/deliver`, signed with the
//!   provider key, retried with backoff and jitter until the message expires, and bounced to
//!   the sender as a `system` message on a permanent failure.
//! - Inbound ([`inbound`]): `POST /v1/federation/deliver` checks the headers, trust policy
//!   and the body (the same rules as a local sender's, the sender under the peer's own
//!   domain) before any network lookup, then the provider signature, replay, rate limits, the
//!   sender's signature and the recipient, and hands the message to the router marked as the
//!   peer's, so it is `external` at best.
//! - [`discovery`]: static peers, DNS TXT `_amp._tcp.<domain>`, the well-known document.
//! - [`config`]: the `[federation]` section; [`net`]: the guarded HTTP client;
//!   [`signature`]: the provider request signature; `attachments`: a message with
//!   `provider` attachments goes only to a peer whose `/v1/info` takes them (spec 06);
//!   `revocations`: `X-AMP-Key-Revoked` both ways (spec-next 07).

mod attachments;
pub mod config;
pub mod discovery;
pub mod inbound;
pub mod net;
pub mod outbound;
pub mod revocations;
pub mod signature;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amp_bus::Bus;
use amp_proto::SecretKey;
use amp_runtime::Shutdown;
use amp_runtime::ratelimit::{RateLimit, RateLimiter};
use amp_store::Store;
use axum::Router;
use axum::routing::post;
use parking_lot::Mutex;

pub use config::{Config, StaticPeer, TrustMode};
pub use discovery::{Discovery, Peer};

/// The job kind of outbound deliveries in the store's durable timers.
pub const JOB_KIND: &str = amp_proto::relay::FEDERATION_JOB_KIND;
/// The consumer name on the federation stream.
pub const CONSUMER: &str = "federation";

/// Who this provider is, as federation needs it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The provider domain (`X-AMP-Provider` of outbound requests).
    pub domain: String,
    /// The provider key: signs outbound requests and bounces.
    pub provider_key: SecretKey,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("federation configuration: {0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("federation HTTP client: {0}")]
    Http(String),
}

/// The federation service: its HTTP router (inbound) and its workers (outbound).
#[derive(Clone)]
pub struct Federation {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Arc<Config>,
    pub(crate) identity: Identity,
    pub(crate) store: Store,
    pub(crate) bus: Bus,
    pub(crate) http: reqwest::Client,
    pub(crate) discovery: Discovery,
    /// The limiters, shared with the other replicas over the bus (`shared_limits`).
    pub(crate) outbound_limiter: Arc<RateLimiter>,
    /// Deliveries in flight per destination provider (`per_peer_workers`).
    pub(crate) peer_slots: Arc<amp_runtime::slots::KeyedSlots>,
    pub(crate) inbound_provider_limiter: Arc<RateLimiter>,
    pub(crate) inbound_recipient_limiter: Arc<RateLimiter>,
    pub(crate) inbound_total_limiter: Arc<RateLimiter>,
    /// (provider, signature) of requests seen within the timestamp window.
    pub(crate) seen: Mutex<HashMap<(String, String), Instant>>,
    /// Wakes the delivery loop when a job was queued.
    pub(crate) wake: tokio::sync::Notify,
    /// Usage metering of inbound messages (`federated_in`), when the composer gives one.
    pub(crate) meter: std::sync::OnceLock<amp_messaging::usage::Meter>,
    /// Recipients' tenant plans (their records through the gate, over the default plan),
    /// when the composer gives them: inbound messages are held to `stored_bytes`.
    pub(crate) plans:
        std::sync::OnceLock<(amp_messaging::TenantGate, amp_store::operator::PlanLimits)>,
    /// `X-AMP-Key-Revoked`: what we announce, what peers announced.
    pub(crate) revocations: revocations::Revocations,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Federation {
    /// Builds the service.
    ///
    /// Fails when the configuration is invalid or the HTTP client cannot be built.
    pub fn new(
        config: Config,
        identity: Identity,
        store: Store,
        bus: Bus,
    ) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        let config = Arc::new(config);
        let http = net::client(&config).map_err(|e| StartError::Http(e.to_string()))?;
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
        let identity = Identity {
            domain: identity.domain.to_ascii_lowercase(),
            ..identity
        };
        Ok(Self {
            inner: Arc::new(Inner {
                discovery: Discovery::new(config.clone(), http.clone()),
                outbound_limiter: limit(
                    "federation_outbound",
                    config.outbound_per_provider_per_minute,
                ),
                peer_slots: amp_runtime::slots::KeyedSlots::new(config.per_peer_workers),
                inbound_provider_limiter: limit(
                    "federation_inbound_provider",
                    config.inbound_per_provider_per_minute,
                ),
                inbound_recipient_limiter: limit(
                    "federation_inbound_recipient",
                    config.inbound_per_recipient_per_minute,
                ),
                inbound_total_limiter: limit(
                    "federation_inbound_total",
                    config.inbound_total_per_minute,
                ),
                seen: Mutex::new(HashMap::new()),
                wake: tokio::sync::Notify::new(),
                meter: std::sync::OnceLock::new(),
                plans: std::sync::OnceLock::new(),
                revocations: revocations::Revocations::default(),
                http,
                config,
                identity,
                store,
                bus,
            }),
        })
    }

    /// The inbound endpoint: `POST /v1/federation/deliver` and its `/api/v1` alias.
    /// Meters inbound messages with `meter` (`federated_in` and `messages_out` of the
    /// recipient's tenant); without it they are not metered. Set once; later calls are
    /// ignored.
    pub fn meter_usage(&self, meter: amp_messaging::usage::Meter) {
        let _ = self.inner.meter.set(meter);
    }

    /// Holds inbound messages to their recipient's tenant plan's `stored_bytes` (`507
    /// storage_quota_exceeded`), reading tenant records through `gate` over `defaults` (the
    /// default plan) and the bytes held through the meter of [`meter_usage`]
    /// (Self::meter_usage), which must be set too. Set once; later calls are ignored.
    pub fn enforce_plans(
        &self,
        gate: amp_messaging::TenantGate,
        defaults: amp_store::operator::PlanLimits,
    ) {
        let _ = self.inner.plans.set((gate, defaults));
    }

    /// The federation service's HTTP routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/federation/deliver", post(inbound::deliver))
            .route("/api/v1/federation/deliver", post(inbound::deliver))
            .with_state(self.inner.clone())
    }

    /// Runs the outbound side until `shutdown`: the consumer that turns stream messages into
    /// durable jobs, and the loop that delivers due jobs.
    pub async fn run(self, shutdown: Shutdown) {
        let consumers: Vec<_> = (0..self.inner.config.consumers.max(1))
            .map(|_| tokio::spawn(outbound::consume(self.inner.clone(), shutdown.clone())))
            .collect();
        let deliver = tokio::spawn(outbound::deliver_loop(self.inner.clone(), shutdown));
        for c in consumers {
            let _ = c.await;
        }
        let _ = deliver.await;
    }
}
