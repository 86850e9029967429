//! The public HTTP API of the AMP provider: discovery (health, info, well-known),
//! registration, agent management, resolution and key management (spec 02, 03, 07, 08).
//!
//! Every route is served under `/v1` and `/api/v1` (the prefix AI Maestro's clients use).
//! The crate exposes [`Ingest`], built from its [`Config`], the provider's [`Identity`], a
//! [`Store`] and a [`Bus`]; [`Ingest::router`] is the axum router, which the composing binary
//! hardens (`amp_runtime::http::harden`) and serves.
//!
//! - [`config`]: registration policy, owners, limits.
//! - `auth`: API-key and user-key hashing and the authenticated-agent extractor.
//! - `routes`: one module per group of endpoints.

pub mod config;

mod auth;
mod routes;
mod state;

use std::sync::Arc;

use amp_bus::Bus;
use amp_proto::SecretKey;
use amp_store::Store;
use axum::Router;

pub use config::Config;
pub use state::Identity;

/// The capability tokens advertised in `/v1/info` by every deployment: only what the
/// services really do (spec 09's `registration` and `relay-queue`; the delivery service's
/// WebSockets, webhooks and spec 12's `notify:v1` with long-poll). `federation` is added
/// where federation runs.
pub const CAPABILITIES: &[&str] = &[
    "registration",
    "relay-queue",
    "websockets",
    "webhooks",
    "notify:v1",
    "notify:longpoll",
    // `afp` attachments are shape-checked and passed through untouched (spec 04); the
    // `attachments` capability is added where a blob store is configured.
    "attachments:afp",
];

/// The ingest service: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<state::Inner>,
}

impl Ingest {
    /// Builds the service and writes the configured owners to the store. With `blobs` (and
    /// `attachments.enabled`), it serves provider attachments and advertises `attachments`.
    ///
    /// Fails when the store cannot be written.
    pub async fn new(
        config: Config,
        identity: Identity,
        store: Store,
        bus: Bus,
        blobs: Option<amp_store::blob::Blobs>,
    ) -> Result<Self, amp_store::Error> {
        let inner = state::Inner::new(config, identity, store, bus, blobs).await?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// All routes, under `/v1` and `/api/v1`, plus `/.well-known/agent-messaging.json`.
    pub fn router(&self) -> Router {
        routes::router(self.inner.clone())
    }

    /// The message acceptance pipeline, for other services that accept messages the same
    /// way (the WebSocket `route` frame).
    pub fn acceptor(&self) -> amp_messaging::Acceptor {
        self.inner.acceptor.clone()
    }

    /// The attachment service, when attachments are served (its sweep runs beside).
    pub fn attachments(&self) -> Option<amp_messaging::attachments::AttachmentService> {
        self.inner.attachments.clone()
    }

    /// The provider key this service signs and advertises with.
    pub fn provider_key(&self) -> &SecretKey {
        &self.inner.identity.provider_key
    }
}
