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
//! - `routes`: one module per group of endpoints; [`openapi`]: the OpenAPI 3.1 document built
//!   from them (`GET /v1/openapi.json`).
//! - `admin`: the admin API (operator plane) on its own listener: tenants, owner keys,
//!   invite codes, operator tokens, the audit log; the bootstrap import; and the web console
//!   (`/console/`), a page built into the binary over that API.

pub mod config;

mod admin;
mod auth;
mod routes;
mod state;

pub use admin::openapi as admin_openapi;
pub use routes::openapi;

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
    // Agents declare `capabilities` and a `communication_policy` (spec 03, 08), and serve
    // the Agent Card they signed at `GET /v1/agents/me/card` (spec 02).
    "agent-capabilities",
    "communication-policy",
    "agent-card",
];

#[cfg(test)]
mod capability_tests {
    /// The deployments that configure `capabilities` themselves (they replace this list):
    /// the Helm chart's cluster ConfigMap and the compose cluster's file list exactly the
    /// built-in tokens plus `federation`, so `/v1/info` tells the same truth everywhere.
    #[test]
    fn spec_next_configured_capability_lists_agree_with_the_built_in_one() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut want: Vec<String> = super::CAPABILITIES.iter().map(|c| c.to_string()).collect();
        want.push("federation".to_owned());

        let compose = std::fs::read_to_string(root.join("deploy/docker/cluster.toml"))
            .expect("deploy/docker/cluster.toml");
        let table: toml::Table = compose.parse().expect("toml");
        let got: Vec<String> = table["capabilities"]
            .as_array()
            .expect("capabilities")
            .iter()
            .map(|v| v.as_str().expect("string").to_owned())
            .collect();
        assert_eq!(got, want, "deploy/docker/cluster.toml");

        let helpers = std::fs::read_to_string(root.join("helm/amp/templates/_helpers.tpl"))
            .expect("helm/amp/templates/_helpers.tpl");
        let line = helpers
            .lines()
            .find(|l| l.contains("\"capabilities\" (list "))
            .expect("the chart's capability list");
        let list = line
            .split_once("(list ")
            .and_then(|(_, r)| r.split_once(')'))
            .map(|(l, _)| l)
            .expect("(list …)");
        let got: Vec<String> = list
            .split_whitespace()
            .map(|t| t.trim_matches('"').to_owned())
            .collect();
        assert_eq!(got, want, "helm/amp/templates/_helpers.tpl");
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] amp_store::Error),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// The ingest service: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<state::Inner>,
}

impl Ingest {
    /// Builds the service, imports the bootstrap seed (configured owners, bootstrap
    /// operator token) into the store and resumes unfinished tenant deletions. With `blobs` (and `attachments.enabled`), it serves
    /// provider attachments and advertises `attachments`.
    ///
    /// Fails when the store cannot be written or the admin configuration is invalid.
    pub async fn new(
        config: Config,
        identity: Identity,
        store: Store,
        bus: Bus,
        blobs: Option<amp_store::blob::Blobs>,
    ) -> Result<Self, StartError> {
        if config.attachments.enabled {
            config
                .attachments
                .validate()
                .map_err(|e| StartError::Config(format!("ingest.{e}")))?;
        }
        // `auto` registration becomes `open` or `owner` by the provider's domain, once.
        let registration = config.registration.clone().for_domain(&identity.domain);
        if config.registration.mode == config::RegistrationMode::Auto {
            tracing::info!(
                domain = %identity.domain,
                mode = ?registration.mode,
                "registration mode auto: open for a test domain, owner for a real one"
            );
        }
        let config = Config {
            registration,
            ..config
        };
        admin::seed::import(&config, &identity.key_pepper, &store).await?;
        let inner = Arc::new(state::Inner::new(config, identity, store, bus, blobs).await?);
        admin::deletion::resume_unfinished(&inner).await?;
        Ok(Self { inner })
    }

    /// All routes, under `/v1` and `/api/v1`, plus `/.well-known/agent-messaging.json`.
    pub fn router(&self) -> Router {
        routes::router(self.inner.clone())
    }

    /// The admin API (`/admin/v1/…`), for its own listener (see [`Ingest::admin_listen`]);
    /// never merge it into the public router.
    pub fn admin_router(&self) -> Router {
        admin::router(self.inner.clone())
    }

    /// Binds the admin API's listener (`ingest.admin.listen`) and serves it until
    /// `shutdown`; `None` when no listener is configured. `public` is the public listener's
    /// address: the admin API never shares its port.
    ///
    /// Fails when the address is the public one or cannot be bound.
    pub async fn serve_admin(
        &self,
        public: std::net::SocketAddr,
        body_limit: usize,
        shutdown: amp_runtime::Shutdown,
        grace: std::time::Duration,
        limits: &amp_runtime::listener::ConnectionLimits,
    ) -> Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>, StartError> {
        let Some(addr) = self.inner.config.admin.listen else {
            return Ok(None);
        };
        if addr.port() == public.port()
            && (addr.ip() == public.ip()
                || addr.ip().is_unspecified()
                || public.ip().is_unspecified())
        {
            return Err(StartError::Config(format!(
                "ingest.admin.listen ({addr}) is the public listener: the admin API needs its own"
            )));
        }
        if !addr.ip().is_loopback() {
            tracing::warn!(addr = %addr, "the admin API listens beyond loopback: keep it on a private network");
        }
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            StartError::Config(format!("cannot bind ingest.admin.listen {addr}: {e}"))
        })?;
        tracing::info!(addr = %addr, "admin API listening");
        let app = amp_runtime::http::harden(self.admin_router(), body_limit);
        let limits = limits.clone();
        Ok(Some(tokio::spawn(async move {
            amp_runtime::shutdown::serve(listener, app, &limits, shutdown, grace).await
        })))
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

    /// Deletes usage rows past their retention (`[ingest.messaging]
    /// usage_hourly_retention_days`, `usage_daily_retention_days`) once an hour until
    /// `shutdown`; spawn it beside the server.
    pub async fn expire_usage_at(self, shutdown: amp_runtime::Shutdown) {
        let m = &self.inner.config.messaging;
        let retention = amp_store::usage::UsageRetention::days(
            m.usage_hourly_retention_days,
            m.usage_daily_retention_days,
        );
        amp_messaging::usage::expire_at(self.inner.store.clone(), retention, shutdown).await;
    }

    /// The provider key this service signs and advertises with.
    pub fn provider_key(&self) -> &SecretKey {
        &self.inner.identity.provider_key
    }
}
