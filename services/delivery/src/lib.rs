//! The delivery service: tells agents of new mail the moment it is committed, over whichever
//! route they have, without ever weakening "the mailbox is the truth" (spec 12.1).
//!
//! - [`ws`]: WebSocket sessions (`/v1/ws`): auth frame, replay of the mailbox with
//!   `replay: true`, live pushes on notify hints, acks, `route` frames, receipts, heartbeats,
//!   idle and slow-consumer closes.
//! - [`webhook`]: HMAC-signed webhook POSTs from durable jobs, re-reading the mailbox before
//!   every attempt, retried on the spec schedule, guarded against SSRF.
//! - `sockets`: the process's open sockets per agent (the per-agent cap) and its one
//!   subscription to registry changes, fanned out to the agent's sockets.
//! - [`config`]: the delivery [`Config`].

pub mod config;
mod scan_callback;
mod sockets;
mod tenant_notify;
pub mod webhook;
pub mod ws;

use std::sync::Arc;

use amp_bus::Bus;
use amp_messaging::Acceptor;
use amp_runtime::Shutdown;
use amp_store::Store;
use axum::Router;
use axum::routing::get;

pub use config::Config;

/// What delivery needs to know about the provider.
#[derive(Clone)]
pub struct Identity {
    /// The provider domain.
    pub domain: String,
    /// The server secret keyed into API-key hashes (the same as ingest's).
    pub key_pepper: Vec<u8>,
}

/// The delivery service: cheap to clone.
#[derive(Clone)]
pub struct DeliveryService {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) identity: Identity,
    pub(crate) store: Store,
    pub(crate) bus: Bus,
    pub(crate) acceptor: Acceptor,
    pub(crate) shutdown: Shutdown,
    pub(crate) sockets: Arc<sockets::Sockets>,
}

impl DeliveryService {
    /// Builds the service; `acceptor` answers `route` frames exactly as `POST /v1/route`,
    /// drawing on the same per-agent message budget ([`Acceptor::check_rate`]).
    pub fn new(
        config: Config,
        identity: Identity,
        store: Store,
        bus: Bus,
        acceptor: Acceptor,
        shutdown: Shutdown,
    ) -> Self {
        let sockets = Arc::new(sockets::Sockets::new(config.max_sockets_per_agent));
        Self {
            inner: Arc::new(Inner {
                config,
                identity,
                store,
                bus,
                acceptor,
                shutdown,
                sockets,
            }),
        }
    }

    /// `/v1/ws` and `/api/v1/ws`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/ws", get(ws::upgrade))
            .route("/api/v1/ws", get(ws::upgrade))
            .with_state(self.inner.clone())
    }

    /// Runs the webhook, scan callback and tenant notification workers, the relay of
    /// registry changes to open sockets and the watch of their tenants' suspensions until
    /// shutdown.
    pub async fn run(self) {
        tokio::join!(
            webhook::run(self.inner.clone()),
            scan_callback::run(self.inner.clone()),
            tenant_notify::run(self.inner.clone()),
            sockets::listen(self.inner.clone()),
            sockets::watch_tenants(self.inner.clone())
        );
    }
}
