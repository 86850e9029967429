//! The HTTP routes: one module per group of endpoints, all mounted under `/v1` and `/api/v1`
//! (the attachment endpoints also at the root, where the Claude Code plugin calls them).

pub(crate) mod agents;
mod attachments;
pub(crate) mod keys;
mod messages;
mod meta;
pub mod openapi;
mod profile;

pub(crate) use meta::HealthCache;
mod register;
mod route;

use std::sync::Arc;

use amp_proto::{ApiError, ErrorCode};
use amp_runtime::HttpError;
use amp_runtime::http::bearer_token;
use amp_store::AgentRecord;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};

use crate::state::Inner;
use amp_messaging::attachments::AttachmentService;

/// `v` without `null` members, at every depth (spec-next 04 JSON profile, which we apply to
/// every answer we build: an absent value is omitted, never `null`). Only for answers built
/// from our own records; message payloads are served as stored and never pass through here.
pub(crate) fn no_nulls(mut v: serde_json::Value) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|_, x| !x.is_null());
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    let open = Router::new()
        .route("/health", get(meta::health))
        .route("/info", get(meta::info))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/register", post(register::register));
    let authed = Router::new()
        .route(
            "/agents/me",
            get(agents::me)
                .patch(agents::update_me)
                .delete(agents::delete_me),
        )
        .route("/agents/me/card", get(profile::my_card))
        .route("/agents", get(agents::list))
        .route("/agents/resolve/{address}", get(agents::resolve))
        .route("/agents/{address}", get(agents::resolve))
        .route("/auth/rotate-key", post(keys::rotate_key))
        .route("/auth/rotate-keys", post(keys::rotate_keys))
        .route("/auth/revoke-key", delete(keys::revoke_key))
        .route("/route", post(route::route))
        .route(
            "/messages/pending",
            get(messages::pending)
                .delete(messages::ack_query)
                .post(messages::ack_batch),
        )
        .route("/messages/pending/count", get(messages::count))
        .route("/messages/pending/ack", post(messages::ack_batch))
        .route("/messages/pending/{id}", delete(messages::ack_path))
        .route("/messages/receipts", get(messages::receipts))
        .route("/messages/receipts/ack", post(messages::receipts_ack))
        .route("/messages/{id}/read", post(messages::read))
        .route("/inbox", get(messages::pending))
        .route("/inbox/{id}/ack", post(messages::ack_path))
        .route_layer(middleware::from_fn_with_state(inner.clone(), authenticate));
    // The spec's operator endpoints (spec-next 08), with the admin API's operator tokens.
    let operator = Router::new()
        .route(
            "/agents/{address}/suspend",
            post(crate::admin::suspension::public_suspend),
        )
        .route(
            "/agents/{address}/unsuspend",
            post(crate::admin::suspension::public_unsuspend),
        )
        .route_layer(middleware::from_fn_with_state(
            (inner.clone(), amp_store::operator::TokenScope::TenantAdmin),
            crate::admin::authenticate,
        ));
    // Its own credentials check: the agent itself or an operator (spec-next 08).
    let risk = Router::new().route(
        "/agents/{address}/risk",
        get(crate::admin::risk::agent_risk),
    );
    let api = open
        .merge(authed)
        .merge(operator)
        .merge(risk)
        .merge(crate::admin::quarantine::routes(&inner))
        .merge(attachment_routes(&inner))
        .with_state(inner.clone());
    Router::new()
        .nest("/v1", api.clone())
        .nest("/api/v1", api)
        .merge(attachment_routes(&inner).with_state(inner.clone()))
        .route("/.well-known/agent-messaging.json", get(meta::well_known))
        .with_state(inner)
}

/// The attachment endpoints, when this deployment serves attachments (else none: 404, and
/// `/v1/info` does not advertise them).
fn attachment_routes(inner: &Arc<Inner>) -> Router<Arc<Inner>> {
    if inner.attachments.is_none() {
        return Router::new();
    }
    // The upload URL and the signed download URL carry their own credential.
    let open = Router::new()
        .route("/attachments/{id}/upload", put(attachments::upload))
        .route("/attachments/{id}/content", get(attachments::content));
    let authed = Router::new()
        .route("/attachments/upload", post(attachments::init))
        .route(
            "/attachments/upload/direct",
            post(attachments::direct).layer(axum::extract::DefaultBodyLimit::max(
                inner
                    .attachments
                    .as_ref()
                    .map_or(0, AttachmentService::max_direct_body),
            )),
        )
        .route("/attachments/{id}/confirm", post(attachments::confirm))
        .route("/attachments/{id}", get(attachments::status))
        .route("/attachments/{id}/download", get(attachments::download))
        .route_layer(middleware::from_fn_with_state(inner.clone(), authenticate));
    open.merge(authed)
}

/// The authenticated agent, put in the request's extensions by [`authenticate`].
#[derive(Clone)]
pub(crate) struct Caller(pub(crate) AgentRecord);

/// A store failure as an HTTP error: 503 with `Retry-After` when the store is unavailable,
/// 500 (logged) when data is corrupt or an invariant broke.
pub(crate) fn store_error(e: amp_store::Error) -> HttpError {
    HttpError::from(amp_messaging::handoff::store_error(e))
}

/// Resolves `Authorization: Bearer amp_…` to an active agent with a valid key, applies the
/// per-agent and per-tenant rate limits, and adds the rate-limit headers to the answer.
/// User keys (`uk_…`) never authenticate anything but registration (spec 03).
async fn authenticate(State(inner): State<Arc<Inner>>, mut req: Request, next: Next) -> Response {
    let unauthorized =
        |msg: &str| HttpError::from(ApiError::new(ErrorCode::Unauthorized, msg)).into_response();
    let Some(token) = bearer_token(req.headers()) else {
        return unauthorized("missing API key: send Authorization: Bearer <api_key>");
    };
    if token.starts_with("uk_") {
        return unauthorized("user keys only authorise registration; use the agent's API key");
    }
    let now = Inner::now_ms();
    let agent = match amp_messaging::auth::agent_for_key_cached(
        inner.acceptor.registry(),
        &inner.identity.key_pepper,
        token,
        now,
    )
    .await
    {
        Ok(Some(agent)) => agent,
        Ok(None) => return unauthorized("invalid or expired API key"),
        Err(e) => return store_error(e).into_response(),
    };
    // A suspended tenant's agents are refused everywhere (spec-next 07 `agent_suspended`).
    if let Err(e) = inner.acceptor.tenants().check_caller(&agent.tenant).await {
        return HttpError::from(e).into_response();
    }
    // And a suspended agent (spec-next 07: pickup, ack and every other call as well).
    if let Err(e) =
        amp_messaging::suspension::check_caller(inner.acceptor.registry(), &agent.id, now).await
    {
        return HttpError::from(e).into_response();
    }
    let decision = inner.agent_limiter.check(&agent.id);
    if !decision.allowed {
        return decision.into_error().into_response();
    }
    let tenant = inner.tenant_limiter.check(&agent.tenant);
    if !tenant.allowed {
        return tenant.into_error().into_response();
    }
    touch_last_seen(&inner, &agent, now);
    req.extensions_mut().insert(Caller(agent));
    let mut resp = next.run(req).await;
    // A handler with its own, narrower limit (route, pickup) has set the headers already.
    if !resp.headers().contains_key("x-ratelimit-limit") {
        decision.apply_headers(resp.headers_mut());
    }
    resp
}

/// When this process last wrote each agent's `last_seen_at` (unix ms); emptied when it
/// holds [`TOUCHED_MAX`] agents.
pub(crate) type Touched = std::sync::Mutex<std::collections::HashMap<String, i64>>;

/// Agents [`Touched`] remembers at most.
const TOUCHED_MAX: usize = 100_000;

/// Records `last_seen_at`, at most once a minute per agent and process, off the request
/// path. The store does it atomically, so it can never undo a concurrent update or
/// deregistration. The agent record may come from the registry cache, which does not see
/// this process's own writes, so the last write is remembered here as well.
fn touch_last_seen(inner: &Arc<Inner>, agent: &AgentRecord, now: i64) {
    let recent = |t: i64| now - t < 60_000;
    if agent.last_seen_at.is_some_and(recent) {
        return;
    }
    {
        let mut touched = inner
            .last_touched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if touched.get(&agent.id).is_some_and(|&t| recent(t)) {
            return;
        }
        if touched.len() >= TOUCHED_MAX {
            touched.clear();
        }
        touched.insert(agent.id.clone(), now);
    }
    let inner = inner.clone();
    let id = agent.id.clone();
    tokio::spawn(async move {
        if let Err(e) = inner.store.touch_agent(&id, now).await {
            tracing::debug!(error = %e, "last_seen_at not recorded");
        }
    });
}
