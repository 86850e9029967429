//! The delivery service's configuration.

use amp_runtime::outbound::OutboundPolicy;
use serde::Deserialize;

/// Delivery settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Seconds a new socket has to send its `auth` frame (spec 05: 10).
    pub auth_timeout_secs: u64,
    /// Seconds without any client frame before the socket is closed (spec 05: 300).
    pub idle_timeout_secs: u64,
    /// Every this many seconds the server sends a WebSocket ping frame (RFC 6455 5.5.2; every
    /// client library answers it by itself); 0: never. With `ping_timeout_secs`, a peer that
    /// vanished without a close (a dropped network, a suspended laptop) is found in about
    /// the sum of the two rather than the idle timeout.
    pub ping_interval_secs: u64,
    /// Seconds a ping may go unanswered (no pong, nor any other frame) before the socket is
    /// closed (1001 `ping timeout`).
    pub ping_timeout_secs: u64,
    /// Frames queued for one socket before it counts as a slow consumer and is closed.
    pub send_queue_frames: usize,
    /// Bytes of frames queued for one socket before it counts as a slow consumer and is
    /// closed (live pushes), or before replay waits for the client to read; also the most
    /// bytes of a mailbox page read for replay. A frame larger than this still goes, alone.
    pub send_queue_bytes: usize,
    /// Largest client frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Seconds a socket's presence lease lasts; renewed at a third of it.
    pub presence_lease_secs: u64,
    /// Every this many seconds a socket re-reads its mailbox for messages whose push hint
    /// was lost (a NATS node died with the hint in flight); 0: only after a reconnect.
    pub resync_secs: u64,
    /// `route` frames per agent per minute, for the acceptor of the cluster's delivery
    /// binary; in ampd the frames share `ingest.limits.messages_per_minute` with REST. In a
    /// cluster the counts are shared with ingest's REST routes over NATS (`[nats]
    /// limits_sync_ms`), so keep it equal to `ingest.limits.messages_per_minute`.
    pub messages_per_minute: u32,
    /// Sockets one agent may hold open on one process (a replica); one more is refused with
    /// close code 1008. Across N replicas an agent may hold up to N times this.
    pub max_sockets_per_agent: usize,
    /// Every this many seconds a socket re-checks that its API key is still valid and its
    /// agent still registered, and closes (4001) if not: the fallback for a lost revocation
    /// event (revocation, rotation and deregistration events close sockets at once).
    pub reauth_secs: u64,
    /// Webhook delivery.
    pub webhook: WebhookConfig,
    /// Which webhook targets may be called (the SSRF guard).
    pub outbound: OutboundPolicy,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            auth_timeout_secs: 10,
            idle_timeout_secs: 300,
            ping_interval_secs: 30,
            ping_timeout_secs: 30,
            send_queue_frames: 1024,
            send_queue_bytes: 4 * 1024 * 1024,
            max_frame_bytes: 1024 * 1024,
            presence_lease_secs: 120,
            resync_secs: 60,
            messages_per_minute: 60,
            max_sockets_per_agent: 16,
            reauth_secs: 60,
            webhook: WebhookConfig::default(),
            outbound: OutboundPolicy::default(),
        }
    }
}

/// Webhook delivery settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Delay before each attempt, in milliseconds: spec 05's immediate, 30 s, 2 min.
    pub retry_delays_ms: Vec<u64>,
    /// Connect timeout.
    pub connect_timeout_ms: u64,
    /// Whole-request timeout (SPEC-CHECKLIST §4.17: 10 s).
    pub timeout_ms: u64,
    /// Most response bytes read (the rest is discarded).
    pub max_response_bytes: usize,
    /// How often due jobs are looked for, in milliseconds.
    pub poll_interval_ms: u64,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// Attempts in flight at once for the agents of one tenant (part of `concurrency`): a
    /// tenant whose endpoints hold every request until the timeout slows only itself.
    pub per_tenant_concurrency: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            retry_delays_ms: vec![0, 30_000, 120_000],
            connect_timeout_ms: 5_000,
            timeout_ms: 10_000,
            max_response_bytes: 64 * 1024,
            poll_interval_ms: 250,
            concurrency: 32,
            per_tenant_concurrency: 4,
        }
    }
}
