//! Discovery: `/v1/health`, `/v1/info`, `/.well-known/agent-messaging.json` (spec 06, 08, 09).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::config::RegistrationMode;
use crate::state::Inner;

/// How long `/v1/health` reuses what it read: counting agents online is a scan on the
/// cluster's stores, and the endpoint takes no credentials.
const HEALTH_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The last readiness and online count `/v1/health` read, and when. One request at a time
/// refreshes it; the others wait for that read instead of starting their own.
#[derive(Default)]
pub(crate) struct HealthCache(tokio::sync::Mutex<Option<(std::time::Instant, bool, u64)>>);

impl HealthCache {
    async fn get(&self, store: &amp_store::Store) -> (bool, u64) {
        let mut cached = self.0.lock().await;
        if let Some((at, ready, online)) = *cached
            && at.elapsed() < HEALTH_TTL
        {
            return (ready, online);
        }
        let ready = store.ready().await;
        let online = store
            .agents_online(amp_proto::Timestamp::now().unix_millis())
            .await
            .unwrap_or(0);
        *cached = Some((std::time::Instant::now(), ready, online));
        (ready, online)
    }
}

#[utoipa::path(get, path = "/v1/health", tag = "discovery", operation_id = "health",
    responses((status = 200, body = crate::routes::openapi::HealthDoc), (status = 503, description = "The store is not ready", body = crate::routes::openapi::HealthDoc)))]
pub(super) async fn health(State(inner): State<Arc<Inner>>) -> (StatusCode, Json<Value>) {
    let (ready, online) = inner.health.get(&inner.store).await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "healthy" } else { "unhealthy" },
        "version": inner.identity.version,
        "provider": inner.identity.domain,
        "federation": inner.identity.capabilities.iter().any(|c| c == "federation"),
        "agents_online": online,
        "uptime_seconds": inner.started.elapsed().as_secs(),
    });
    (status, Json(body))
}

#[utoipa::path(get, path = "/v1/info", tag = "discovery", operation_id = "provider_info",
    responses((status = 200, body = crate::routes::openapi::InfoDoc)))]
pub(super) async fn info(State(inner): State<Arc<Inner>>) -> Json<Value> {
    let modes = match inner.config.registration.mode {
        RegistrationMode::Open => vec!["open", "owner"],
        RegistrationMode::Owner | RegistrationMode::Auto => vec!["owner"],
    };
    let mut info = json!({
        "provider": inner.identity.domain,
        "version": "amp/0.1",
        "server_version": inner.identity.version,
        "endpoint": format!("{}/v1", inner.identity.public_url),
        "public_key": inner.public_pem,
        "fingerprint": inner.fingerprint,
        "capabilities": inner.identity.capabilities,
        "registration_modes": modes,
        "rate_limits": {
            "messages_per_minute": inner.config.limits.messages_per_minute,
            "api_requests_per_minute": inner.config.limits.api_requests_per_minute,
        },
    });
    if let Some(a) = &inner.attachments {
        info["attachment_limits"] = a.limits();
    }
    Json(info)
}

#[utoipa::path(get, path = "/.well-known/agent-messaging.json", tag = "discovery", operation_id = "well_known",
    responses((status = 200, body = crate::routes::openapi::WellKnownDoc)))]
pub(super) async fn well_known(State(inner): State<Arc<Inner>>) -> Json<Value> {
    Json(json!({
        "version": "AMP1",
        "provider": inner.identity.domain,
        "endpoint": format!("{}/v1", inner.identity.public_url),
        "public_key": inner.public_pem,
        "fingerprint": inner.fingerprint,
        "capabilities": inner.identity.capabilities,
    }))
}
