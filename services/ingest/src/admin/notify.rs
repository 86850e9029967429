//! A tenant's notification webhook (spec-next 07 "Risk Scoring": "notify tenant admins
//! when an agent's risk level changes"; the `medium` level's "webhook notification to
//! tenant admin"): set, removed and tried by the tenant's admins (scope `tenant_admin`, a
//! token limited to the tenant will do).
//!
//! - `PUT …/tenants/{name}/notify` `{"url", "rotate_secret"?}`: sets the URL (checked
//!   against the outbound policy, as agents' webhooks are). The signing secret is made the
//!   first time, or again with `rotate_secret: true`, and shown only in that answer.
//! - `DELETE …/tenants/{name}/notify`: removes it (204, also when there was none); events
//!   already scheduled are dropped at their next attempt.
//! - `POST …/tenants/{name}/notify/test`: schedules a `ping` event (202), to check the
//!   receiver and its signature check.
//!
//! The events ([`amp_messaging::tenant_notify`]) are POSTed by delivery with the webhooks'
//! retries, signed as agents' webhooks are. The tenant's record shows the URL, never the
//! secret.

use std::sync::Arc;

use amp_proto::ApiError;
use amp_runtime::{ApiJson, ApiPath, ApiResult};
use amp_store::operator::TenantNotify;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::tenants::{load, load_for_change, save};
use super::{Caller, audit, new_secret, rfc3339};
use crate::routes::store_error;
use crate::state::Inner;

/// The secret's prefix.
const SECRET_PREFIX: &str = "whsec_";

/// A tenant's webhook as its record shows it (never the secret).
pub(super) fn view(n: &TenantNotify) -> Value {
    json!({ "url": n.url, "updated_at": rfc3339(n.updated_at) })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = TenantNotifySet)]
#[serde(deny_unknown_fields)]
pub(super) struct SetBody {
    /// Where events are POSTed: `https` (plain `http` and internal addresses only where the
    /// outbound policy allows them), at most 2048 bytes, no credentials (required).
    #[schema(required = true, nullable = false, max_length = 2048)]
    url: Option<String>,
    /// Makes a new signing secret (the old one stops signing at once).
    rotate_secret: Option<bool>,
}

#[utoipa::path(put, path = "/admin/v1/tenants/{name}/notify", tag = "tenants", operation_id = "set_tenant_notify",
    description = "Sets the tenant's notification webhook: risk level changes and automatic \
        suspensions of its agents (spec-next 07) are POSTed to it, signed like agents' webhooks \
        (`X-AMP-Signature: sha256=<HMAC-SHA256(secret, \"{X-AMP-Timestamp}.{body}\")>`), with \
        `X-AMP-Event` and `X-AMP-Event-Id`. The secret is in the answer only when made (the \
        first time, or with `rotate_secret`).",
    params(super::openapi::TenantName),
    request_body = SetBody,
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 200, description = "The webhook (and its new secret, when made)", body = super::openapi::TenantNotifyDoc),
        (status = 404), (status = 409, description = "Error: `conflict` (the tenant is being deleted)")))]
pub(super) async fn set(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<SetBody>,
) -> ApiResult<Response> {
    let Some(url) = body.url else {
        return Err(ApiError::missing("url").into());
    };
    if let Err(why) = amp_runtime::outbound::check_url(&url, inner.config.outbound) {
        return Err(ApiError::invalid("url", format!("url is not allowed: {why}")).into());
    }
    let mut t = load_for_change(&inner, &name).await?;
    let now = Inner::now_ms();
    let (secret, made) = match (&t.notify, body.rotate_secret.unwrap_or(false)) {
        (Some(n), false) => (n.secret.clone(), false),
        _ => (new_secret(SECRET_PREFIX), true),
    };
    let notify = TenantNotify {
        url,
        secret,
        updated_at: now,
    };
    t.notify = Some(notify.clone());
    t.updated_at = now;
    save(&inner, &t).await?;
    audit(
        &inner,
        &caller,
        "tenant.notify.set",
        &t.name,
        Some(json!({ "url": notify.url, "secret_rotated": made })),
    )
    .await?;
    let mut answer = view(&notify);
    if made {
        answer["secret"] = json!(notify.secret);
    }
    Ok(axum::Json(answer).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/tenants/{name}/notify", tag = "tenants", operation_id = "delete_tenant_notify",
    description = "Removes the tenant's notification webhook (also when it has none); events \
        not yet told are dropped.",
    params(super::openapi::TenantName),
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 204, description = "Removed"),
        (status = 404), (status = 409, description = "Error: `conflict` (the tenant is being deleted)")))]
pub(super) async fn delete(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let mut t = load_for_change(&inner, &name).await?;
    if t.notify.take().is_some() {
        t.updated_at = Inner::now_ms();
        save(&inner, &t).await?;
        audit(&inner, &caller, "tenant.notify.delete", &t.name, None).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/admin/v1/tenants/{name}/notify/test", tag = "tenants", operation_id = "test_tenant_notify",
    description = "Schedules a `ping` event to the tenant's notification webhook.",
    params(super::openapi::TenantName),
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 202, description = "Scheduled", body = super::openapi::TenantNotifyTestDoc),
        (status = 404, description = "Error: `not_found` (no such tenant, or it has no webhook)")))]
pub(super) async fn test(
    State(inner): State<Arc<Inner>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let t = load(&inner, &name).await?;
    if t.notify.is_none() {
        return Err(ApiError::not_found(format!(
            "tenant '{}' has no notification webhook",
            t.name
        ))
        .into());
    }
    let id = amp_messaging::tenant_notify::schedule(
        &inner.store,
        &t.name,
        "ping",
        None,
        json!({}),
        Inner::now_ms(),
    )
    .await
    .map_err(store_error)?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({ "event_id": id }))).into_response())
}
