//! The admin API (operator plane), served on its own listener under `/admin/v1`:
//! tenants, owner keys, invite codes, operator tokens and the audit log.
//!
//! Every request carries an operator token (`Authorization: Bearer amp_op_…`). Tokens are
//! looked up by their keyed hash (HMAC-SHA-256 with the server's pepper), so no secret is
//! ever compared byte by byte, and a lookup's timing tells nothing about a token (the
//! attacker cannot compute the hash without the pepper); the one comparison of secrets left,
//! the bootstrap token's, is in constant time. Tokens are never logged. Each route needs a
//! scope (`read` < `tenant_admin` < `full`); every change is written to the audit log. A
//! token may be limited to one tenant (`tenant_scope`).
//!
//! - `tenants`: create, list (paged), get, update, suspend, resume.
//! - `notify`: a tenant's notification webhook (risk level changes, automatic
//!   suspensions of its agents; spec-next 07).
//! - `deletion`: delete a tenant (a background purge, resumed at start) and its status.
//! - `owner_keys`: issue (shown once), list, rotate with an overlap, revoke; invite codes.
//! - `tokens`: operator tokens (scope `full`).
//! - `audit`: the log, paged.
//! - `usage`: usage per tenant and hour or day, as JSON and CSV.
//! - `seed`: the bootstrap import (`[[ingest.owners]]`, the bootstrap token).
//! - `agents`: the agents of a tenant, paged (no keys).
//! - `agent_keys`: revoke an agent's public key, deregister an agent (spec-next 07).
//! - `suspension`: suspend and unsuspend an agent (spec-next 07), here and at the spec's
//!   paths on the public API.
//! - `quarantine`: the review of quarantined messages (spec-next 08), here and on the
//!   public API.
//! - `risk`: an agent's risk score (spec-next 08), on the public API, for the agent itself
//!   or an operator.
//! - `console`: the web console's page, served at `/console/` beside the API.
//! - `limits`: 08's rate limits of the spec's operator endpoints.
//! - `nulls`: no `null` members in the answers (spec-next 04's JSON profile).
//! - `tenant_scope`: tokens limited to one tenant (tenant admins).

mod agent_keys;
mod agents;
mod audit;
mod console;
pub(crate) mod deletion;
pub(crate) mod limits;
mod notify;
mod nulls;
pub mod openapi;
mod owner_keys;
pub(crate) mod quarantine;
pub(crate) mod risk;
pub(crate) mod seed;
pub(crate) mod suspension;
mod tenant_scope;
mod tenants;
mod tokens;
mod usage;

use std::sync::Arc;

use amp_proto::{ApiError, ErrorCode};
use amp_runtime::HttpError;
use amp_runtime::http::bearer_token;
use amp_store::operator::{AuditEntry, Operator as _, TokenScope};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;

use crate::auth::hash_key;
use crate::routes::store_error;
use crate::state::Inner;

/// The admin routes, under `/admin/v1`, each group behind the scope it needs.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    let read = Router::new()
        .route("/tenants", get(tenants::list))
        .route("/tenants/{name}", get(tenants::get))
        .route("/tenants/{name}/owner-keys", get(owner_keys::list))
        .route("/tenants/{name}/deletion", get(deletion::status))
        .route("/audit", get(audit::list))
        .route("/tenants/{name}/usage", get(usage::tenant_json))
        .route("/tenants/{name}/usage.csv", get(usage::tenant_csv))
        .route("/usage.csv", get(usage::all_csv))
        .route_layer(middleware::from_fn_with_state(
            (inner.clone(), TokenScope::Read),
            authenticate,
        ));
    let tenant_admin = Router::new()
        .route("/tenants", post(tenants::create))
        .route("/tenants/{name}", axum::routing::patch(tenants::update))
        .route("/tenants/{name}/suspend", post(tenants::suspend))
        .route("/tenants/{name}/resume", post(tenants::resume))
        .route(
            "/tenants/{name}/notify",
            axum::routing::put(notify::set).delete(notify::delete),
        )
        .route("/tenants/{name}/notify/test", post(notify::test))
        .route("/tenants/{name}/owner-keys", post(owner_keys::issue))
        .route(
            "/tenants/{name}/owner-keys/{id}/rotate",
            post(owner_keys::rotate),
        )
        .route(
            "/tenants/{name}/owner-keys/{id}/revoke",
            post(owner_keys::revoke),
        )
        .route("/tenants/{name}/invites", post(owner_keys::invite))
        .route(
            "/tenants/{name}/agents/{agent}/suspend",
            post(suspension::admin_suspend),
        )
        .route(
            "/tenants/{name}/agents/{agent}/resume",
            post(suspension::admin_resume),
        )
        .route(
            "/tenants/{name}/agents/{agent}/unsuspend",
            post(suspension::admin_resume),
        )
        .route(
            "/tenants/{name}/agents/{agent}/revoke-key",
            post(agent_keys::revoke_key),
        )
        .route(
            "/tenants/{name}/agents/{agent}",
            axum::routing::delete(agent_keys::deregister),
        )
        .route_layer(middleware::from_fn_with_state(
            (inner.clone(), TokenScope::TenantAdmin),
            authenticate,
        ));
    let full = Router::new()
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{id}/revoke", post(tokens::revoke))
        .route("/tenants/{name}", axum::routing::delete(deletion::delete))
        .route_layer(middleware::from_fn_with_state(
            (inner.clone(), TokenScope::Full),
            authenticate,
        ));
    // The web console's routes (scope read) and its page (no token: it holds no data).
    let console_api = Router::new()
        .route("/tenants/{name}/agents", get(agents::list))
        .route_layer(middleware::from_fn_with_state(
            (inner.clone(), TokenScope::Read),
            authenticate,
        ));
    // Same path, other method: merge the method routers (axum refuses overlapping routes).
    Router::new()
        .nest(
            "/admin/v1",
            read.merge(tenant_admin)
                .merge(full)
                .merge(console_api)
                .layer(middleware::from_fn(nulls::strip))
                .merge(quarantine::routes(&inner))
                .route("/openapi.json", get(openapi::openapi_json))
                .with_state(inner.clone()),
        )
        .merge(console::router())
        .fallback(not_found)
}

async fn not_found() -> HttpError {
    ApiError::not_found("no such admin endpoint").into()
}

/// The authenticated operator, in the request's extensions.
#[derive(Clone)]
pub(crate) struct Caller {
    /// The token's public id (`opt_…`): the audit log's actor.
    pub(crate) id: String,
    /// The request's id (`x-request-id`), for the audit log.
    pub(crate) request_id: Option<String>,
    /// The one tenant the token is limited to ([`tenant_scope`]), or `None`: the provider.
    pub(crate) tenant: Option<String>,
}

/// Resolves the operator token and checks its scope against the route's (also in front of
/// the spec's operator endpoints on the public API, [`suspension`]).
pub(crate) async fn authenticate(
    State((inner, needed)): State<(Arc<Inner>, TokenScope)>,
    mut req: Request,
    next: Next,
) -> Response {
    let unauthorized =
        |msg: &str| HttpError::from(ApiError::new(ErrorCode::Unauthorized, msg)).into_response();
    let Some(token) = bearer_token(req.headers()) else {
        return unauthorized("missing operator token: send Authorization: Bearer amp_op_…");
    };
    if !token.starts_with(TOKEN_PREFIX) {
        return unauthorized("not an operator token");
    }
    let hash = hash_key(&inner.identity.key_pepper, token);
    let record = match inner.store.token_by_hash(&hash).await {
        Ok(Some(t)) if t.revoked_at.is_none() => t,
        Ok(_) => return unauthorized("unknown or revoked operator token"),
        Err(e) => return store_error(e).into_response(),
    };
    if !record.scope.allows(needed) {
        return HttpError::from(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "this operator token has scope '{}'; this endpoint needs '{}'",
                record.scope.as_str(),
                needed.as_str()
            ),
        ))
        .into_response();
    }
    if let Some(tenant) = &record.tenant {
        req = match tenant_scope::check(&inner, &record, tenant, req).await {
            Ok(req) => req,
            Err(refused) => return refused,
        };
    }
    // The request's id ties the audit entry to the proxy's and the client's logs; one is
    // made when the request has none, and returned either way.
    let request_id = request_id(req.headers()).unwrap_or_else(|| new_id("req_"));
    // 08's limits of the spec's operator endpoints, per token.
    let matched = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let decision = limits::check(&inner, req.method(), &matched, &record.id);
    if let Some(d) = decision
        && !d.allowed
    {
        return d.into_error().into_response();
    }
    req.extensions_mut().insert(Caller {
        id: record.id,
        request_id: Some(request_id.clone()),
        tenant: record.tenant,
    });
    let mut resp = next.run(req).await;
    if let Some(d) = decision {
        d.apply_headers(resp.headers_mut());
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(128).collect())
}

/// Operator tokens start with this.
pub(crate) const TOKEN_PREFIX: &str = "amp_op_";

/// A fresh secret: `prefix` + 43 base64url characters (256 random bits).
pub(crate) fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A fresh public id: `prefix` + 16 hex characters.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

/// Appends to the audit log; a failure is logged and answered 503 (an action that cannot be
/// audited is not reported done).
pub(crate) async fn audit(
    inner: &Inner,
    caller: &Caller,
    action: &str,
    target: &str,
    details: Option<serde_json::Value>,
) -> Result<(), HttpError> {
    let mut entry = AuditEntry::new(Inner::now_ms(), &caller.id, action, target);
    entry.request_id = caller.request_id.clone();
    entry.details = details;
    inner
        .store
        .append_audit(&entry)
        .await
        .map_err(store_error)?;
    tracing::info!(actor = %caller.id, action, object = target, "admin action");
    Ok(())
}

/// `?after=…&limit=…` of the paged listings.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    /// The previous page's `next_cursor`.
    after: Option<String>,
    /// Entries per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

impl Page {
    /// The limit, 1 to 500 (default 100).
    fn limit(&self) -> Result<usize, HttpError> {
        match self.limit {
            None => Ok(100),
            Some(n) if (1..=500).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::invalid("limit", "limit must be 1 to 500").into()),
        }
    }
}

/// An optional JSON body: empty is the default; anything else must parse (spec error).
pub(crate) fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, HttpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    amp_runtime::http::parse_json(body).map_err(HttpError::from)
}

/// Milliseconds as RFC 3339, for answers.
pub(crate) fn rfc3339(ms: i64) -> Option<String> {
    amp_proto::Timestamp::from_unix_millis(ms).map(amp_proto::Timestamp::to_rfc3339)
}

/// A tenant name from a path or a body: a DNS label, lowercase.
pub(crate) fn tenant_name(raw: &str, field: &str) -> Result<String, HttpError> {
    let name = raw.to_ascii_lowercase();
    if !amp_proto::address::is_valid_label(&name) {
        return Err(
            ApiError::invalid(field, "tenant must be 1-63 characters of a-z, 0-9 and '-'").into(),
        );
    }
    Ok(name)
}
