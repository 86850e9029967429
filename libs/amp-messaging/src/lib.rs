//! Message acceptance, shared by every service that takes a message from an agent: ingest's
//! `POST /v1/route` and delivery's WebSocket `route` frame run exactly the same checks, so
//! they live here rather than in either service.
//!
//! - [`accept`]: [`RouteRequest`] (both body forms) and the acceptance pipeline.
//! - [`attachments`]: provider attachments (upload, scan, download, the route-time checks
//!   and the one-message binding, expiry).
//! - [`handoff`]: the last stage of every acceptance path (REST, WebSocket, federation
//!   inbound): the record to the router, its outcome back, what the sender is told, and the
//!   one store-error mapping.
//! - [`idempotency`]: idempotency keys (and older clients' ids) on route: the derived
//!   message id and the first answer, kept 7 days.
//! - [`events`]: the hints services send each other (mailbox changed, pushed, registry
//!   changed) and receipt retention.
//! - [`auth`]: API-key hashing and lookup.
//! - [`injection`]: the prompt-injection scanner (appendix A patterns over normalised text),
//!   run by the router over messages and by the attachment scan over text attachments.
//! - [`cache`]: [`RegistryCache`], the registry and presence reads of every route kept for a
//!   moment, dropped on the bus's registry-change events.
//! - [`bounce`]: the `system` notice a sender gets when an accepted message cannot arrive.
//! - [`policy`]: the agent communication policy (spec 03) and its route-time check.
//! - [`render`]: a mailbox entry as agents receive it (byte-preserving).
//! - [`mailbox`]: the acknowledgement shared by REST and WebSocket, with its receipts, and
//!   the byte-bounded mailbox page behind pickup and WebSocket replay.
//! - [`revocation`]: spec-next 07's `key_revoked` and `timestamp_future` checks, shared by
//!   every acceptance path.
//! - [`tenants`]: [`TenantGate`], tenant suspension as every replica sees it within a second.
//! - [`quarantine`]: messages held for review (spec-next 07): the route answer and the
//!   operator's review (list, show, approve, reject).
//! - [`risk`]: risk scoring (spec-next 07): [`risk::RiskMeter`], counts per agent flushed to
//!   the store, the score and the automatic suspension.
//! - `risk_rate`: 07's `high` action, the halved message budget of a high-risk sender.
//! - [`suspension`]: agent suspension (spec-next 07): the checks of every message path,
//!   suspend and unsuspend.
//! - [`shared_limits`]: rate limiters whose counts the replicas of a cluster share.
//! - [`quota`]: tenant plans (quotas) on the acceptance path.
//! - [`usage`]: [`usage::Meter`], usage metering per tenant, flushed to the store.
//! - [`Acceptor`]: the entry point, holding the store, the bus and the policy.

pub mod accept;
pub mod attachments;
pub mod auth;
pub mod bounce;
pub mod cache;
pub mod events;
pub mod handoff;
pub mod idempotency;
pub mod injection;
pub mod mailbox;
pub mod policy;
pub mod quarantine;
pub mod quota;
pub mod render;
pub mod revocation;
pub mod risk;
mod risk_rate;
pub mod shared_limits;
pub mod suspension;
pub mod tenant_notify;
pub mod tenants;
pub mod usage;

use amp_bus::Bus;
use amp_proto::{ApiError, ErrorCode};
use amp_store::{AgentRecord, Store};
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument as _;

pub use accept::{RouteAnswer, RouteRequest};
pub use cache::RegistryCache;
pub use tenants::TenantGate;

/// Message acceptance policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingConfig {
    /// Accept unsigned messages from this provider's own agents (spec 04 MAY), delivered as
    /// `untrusted` with the warning wrapper. Off: a missing signature is `signature_missing`.
    pub allow_unsigned_local: bool,
    /// How long acceptance waits for the router's durable write before answering 503.
    pub route_timeout_ms: u64,
    /// On a broker-backed bus (the cluster): how long, once the broker has the message, the
    /// answer waits for the router's outcome (`mailbox_written`, 409, 404, 507, …). Past it
    /// the answer is `202` with `basis: "queued"`, and the outcome still takes effect (a
    /// failure then reaches the sender as a bounce). 0: never wait. The in-process bus always
    /// has the outcome.
    pub outcome_wait_ms: u64,
    /// How long a route answer waits, after the mailbox write, for a WebSocket push to an
    /// online recipient to be confirmed (`socket_written`); then it says `mailbox_written`.
    pub push_wait_ms: u64,
    /// The same for a webhook's 2xx (`webhook_2xx`); the delivery goes on afterwards.
    pub webhook_wait_ms: u64,
    /// How long the registry records a route reads (the sender's API key, the recipient)
    /// may be reused without reading the store again. Changes made by this process apply
    /// at once; changes made by another replica apply when its registry-change event
    /// arrives (milliseconds), and never later than this if the event is lost without the
    /// bus noticing (a reconnect or a slow-consumer drop empties the cache). 0: every route
    /// reads the store.
    pub registry_cache_ms: u64,
    /// Messages a mailbox holds before it refuses new ones (spec 05).
    #[serde(skip)]
    pub mailbox_quota: u64,
    /// Messages per agent per minute, one budget for every way this acceptor is reached
    /// (`POST /v1/route` and the WebSocket `route` frame); set by the composing binary from
    /// `ingest.limits.messages_per_minute`.
    #[serde(skip)]
    pub messages_per_minute: u32,
    /// The default plan of every tenant (a tenant's record overrides it limit by limit);
    /// set by the composing binary from `ingest.plan`.
    #[serde(skip)]
    pub plan: amp_store::operator::PlanLimits,
    /// How often this process writes its usage counts to the store (`amp_store::usage`):
    /// what a killed process counted in the last interval is lost.
    pub usage_flush_ms: u64,
    /// Adds a `tenant` label to `amp_usage_messages_total` (one series per tenant: only
    /// for a bounded number of tenants).
    pub usage_metrics_per_tenant: bool,
    /// Days hourly usage rows are kept (from the start of their hour); 0: for good. The
    /// ingest processes delete older ones once an hour ([`usage::expire_at`]).
    pub usage_hourly_retention_days: u32,
    /// Days daily usage rows are kept (from the start of their day); 0: for good.
    pub usage_daily_retention_days: u32,
    /// Keeps a well-formed client `envelope.id` (`msg_<digits>_<hex>`) as the message id, as
    /// the older text and COMPAT.md have it: the Claude Code plugin names its sent copy by
    /// that id, prints it, and threads replies by it, so replacing it breaks the plugin's own
    /// flows. `false`: every id is the provider's (spec-next 04 "providers MUST overwrite"),
    /// and a client's id only names its message for retries (an implicit idempotency key).
    /// Either way a message without a client id gets the provider's id.
    pub keep_client_ids: bool,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            allow_unsigned_local: false,
            route_timeout_ms: 10_000,
            outcome_wait_ms: 2_000,
            push_wait_ms: 1_000,
            webhook_wait_ms: 3_000,
            registry_cache_ms: 30_000,
            mailbox_quota: 1000,
            messages_per_minute: 60,
            plan: Default::default(),
            usage_flush_ms: 10_000,
            usage_metrics_per_tenant: false,
            usage_hourly_retention_days: 35,
            usage_daily_retention_days: 400,
            keep_client_ids: true,
        }
    }
}

/// Accepts messages from authenticated local agents.
#[derive(Clone)]
pub struct Acceptor {
    store: Store,
    bus: Bus,
    cache: RegistryCache,
    domain: String,
    config: MessagingConfig,
    federation: bool,
    /// The per-agent message budget, shared by every clone of this acceptor.
    send_limiter: std::sync::Arc<amp_runtime::ratelimit::RateLimiter>,
    /// The senders whose budget is halved (07's `high` risk action), shared by every clone.
    risk_levels: std::sync::Arc<risk_rate::RiskLevels>,
    tenants: TenantGate,
    quotas: quota::Quotas,
    meter: usage::Meter,
    attachments: Option<attachments::AttachmentService>,
}

impl Acceptor {
    /// An acceptor for the provider `domain`. With `federation` off, a recipient on another
    /// provider is refused with `501 not_implemented` (never silently dropped).
    pub fn new(
        store: Store,
        bus: Bus,
        domain: &str,
        config: MessagingConfig,
        federation: bool,
    ) -> Self {
        let cache = RegistryCache::new(
            store.clone(),
            std::time::Duration::from_millis(config.registry_cache_ms),
        );
        cache.follow(&bus);
        let send_limiter = shared_limits::limiter(
            &bus,
            "messages",
            amp_runtime::ratelimit::RateLimit {
                limit: config.messages_per_minute,
                window: std::time::Duration::from_secs(60),
            },
        );
        let quotas = quota::Quotas::new(&bus, config.plan);
        let meter = usage::Meter::new(
            store.clone(),
            std::time::Duration::from_millis(config.usage_flush_ms),
            config.usage_metrics_per_tenant,
        );
        // A level takes effect within 5 s (or the registry cache's time, if shorter).
        let risk_levels = std::sync::Arc::new(risk_rate::RiskLevels::new(
            store.clone(),
            std::time::Duration::from_millis(config.registry_cache_ms.min(5_000)),
        ));
        Self {
            cache,
            send_limiter,
            risk_levels,
            quotas,
            meter,
            tenants: TenantGate::new(store.clone()),
            store,
            bus,
            domain: domain.to_ascii_lowercase(),
            config,
            federation,
            attachments: None,
        }
    }

    /// Takes one message from `sender_id`'s budget (`messages_per_minute`): REST and the
    /// WebSocket `route` frame draw on the same one when they share this acceptor (ampd); in
    /// a cluster, every ingest and delivery replica's acceptor shares it over the bus
    /// ([`shared_limits`]). Halved while the sender's risk level is `high` (spec-next 07;
    /// `risk_rate`).
    pub async fn check_rate(&self, sender_id: &str) -> amp_runtime::ratelimit::Decision {
        if self.risk_levels.reduced(sender_id).await {
            let rate = self.send_limiter.rate();
            return self.send_limiter.check_with(
                sender_id,
                amp_runtime::ratelimit::RateLimit {
                    limit: (rate.limit / 2).max(1),
                    ..rate
                },
            );
        }
        self.send_limiter.check(sender_id)
    }

    /// The registry reads it shares with the API-key check of the serving process.
    pub fn registry(&self) -> &RegistryCache {
        &self.cache
    }

    /// The tenant records this acceptor refuses suspended senders and recipients by; the
    /// other checks of the process share it.
    pub fn tenants(&self) -> &TenantGate {
        &self.tenants
    }

    /// The tenant plans this acceptor enforces.
    pub fn quotas(&self) -> &quota::Quotas {
        &self.quotas
    }

    /// The usage meter of this process (WebSocket connections are counted by their holder).
    pub fn meter(&self) -> &usage::Meter {
        &self.meter
    }

    /// Accepts messages that reference `provider` attachments, checked and bound by
    /// `service`. Without it such messages are refused with `422
    /// attachments_not_supported` (never stripped).
    pub fn with_attachments(mut self, service: attachments::AttachmentService) -> Self {
        self.attachments = Some(service);
        self
    }

    /// Validates, verifies and hands off a message from `sender`; the answer carries the body
    /// of spec 05's route response (`id`, `status`, `method`, `basis`, …).
    ///
    /// Fails with the spec error for the first problem found, or `503` when the store or the
    /// router does not answer in time.
    pub async fn accept(
        &self,
        sender: &AgentRecord,
        request: RouteRequest,
    ) -> Result<RouteAnswer, ApiError> {
        // The message's trace starts here; the router, delivery and federation continue it
        // from the bus headers. Never the payload, keys or signatures as attributes.
        let span = tracing::debug_span!(
            target: amp_runtime::telemetry::TRACE_TARGET,
            "amp.route",
            otel.kind = "server",
            tenant = %sender.tenant,
            agent = %sender.id,
            message.id = tracing::field::Empty,
        );
        accept::accept(self, sender, request).instrument(span).await
    }
}

pub(crate) use handoff::store_error as store_err;

/// `503` with `retry_after`, the cause logged.
pub(crate) fn unavailable(cause: impl std::fmt::Display) -> ApiError {
    tracing::warn!(cause = %cause, "message acceptance unavailable");
    ApiError::new(
        ErrorCode::Unavailable,
        "service temporarily unavailable, retry shortly",
    )
    .with_extra("retry_after", Value::from(1))
}

/// `500`, the cause logged at error level and never shown.
pub(crate) fn internal(cause: impl std::fmt::Display) -> ApiError {
    tracing::error!(cause = %cause, "internal error while accepting a message");
    ApiError::internal()
}
