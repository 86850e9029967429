//! The review of quarantined messages (spec-next 08 "Quarantine Management (Admin)"), with
//! operator tokens: `GET /v1/quarantine`, `GET /v1/quarantine/{id}` (scope `read`), `POST
//! /v1/quarantine/{id}/approve|reject` (scope `tenant_admin`, audited as
//! `quarantine.approve` / `quarantine.reject`); the same under `/admin/v1` on the admin
//! listener. The behaviour is [`amp_messaging::quarantine`]'s. A token limited to one
//! tenant sees and decides that tenant's entries only (its recipients'); another's is `404`.

use std::sync::Arc;

use amp_proto::Timestamp;
use amp_runtime::{ApiPath, ApiQuery, ApiResult, HttpError};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::{Caller, audit};
use crate::state::Inner;

/// `?status=&limit=&cursor=`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/quarantine", tag = "operator", operation_id = "list_quarantine",
    params(
        ("status" = Option<String>, Query, description = "`pending` (default), `approved`, `rejected` or `expired`", pattern = "^(pending|approved|rejected|expired)$"),
        ("limit" = Option<u64>, Query, description = "Entries per page, 1 to 100 (default 20)", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`"),
    ),
    security(("operator_token" = ["read"])),
    responses((status = 200, description = "Quarantined messages: `items`, `count` (this page), `total` (every entry in the status) and `next_cursor` when more follow", body = Object), (status = 400), (status = 401), (status = 403)))]
pub(crate) async fn list(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let v = amp_messaging::quarantine::list(
        &inner.acceptor,
        caller.tenant.as_deref(),
        q.status.as_deref(),
        q.limit,
        q.cursor.as_deref(),
        Timestamp::now().unix_millis(),
    )
    .await
    .map_err(HttpError::from)?;
    Ok(Json(v).into_response())
}

#[utoipa::path(get, path = "/v1/quarantine/{id}", tag = "operator", operation_id = "show_quarantine",
    params(("id" = String, Path, description = "The quarantine entry's id")),
    security(("operator_token" = ["read"])),
    responses((status = 200, description = "The entry", body = Object), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn show(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let v = amp_messaging::quarantine::show(
        &inner.acceptor,
        &id,
        caller.tenant.as_deref(),
        Timestamp::now().unix_millis(),
    )
    .await
    .map_err(HttpError::from)?;
    Ok(Json(v).into_response())
}

#[utoipa::path(post, path = "/v1/quarantine/{id}/approve", tag = "operator", operation_id = "approve_quarantine",
    params(("id" = String, Path, description = "The quarantine entry's id")),
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 200, description = "Approved: the message is delivered", body = Object), (status = 401), (status = 403), (status = 404), (status = 409), (status = 410)))]
pub(crate) async fn approve(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let v = amp_messaging::quarantine::approve(
        &inner.acceptor,
        &id,
        caller.tenant.as_deref(),
        &caller.id,
        Timestamp::now().unix_millis(),
    )
    .await
    .map_err(HttpError::from)?;
    audit(
        &inner,
        &caller,
        "quarantine.approve",
        &id,
        Some(json!({ "message_id": v["message_id"], "delivered": v["delivered"] })),
    )
    .await?;
    Ok(Json(v).into_response())
}

#[utoipa::path(post, path = "/v1/quarantine/{id}/reject", tag = "operator", operation_id = "reject_quarantine",
    params(("id" = String, Path, description = "The quarantine entry's id")),
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 200, description = "Rejected: the message is dropped and its sender (one of this provider's agents) told, without the rules", body = Object), (status = 401), (status = 403), (status = 404), (status = 409), (status = 410)))]
pub(crate) async fn reject(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let v = amp_messaging::quarantine::reject(
        &inner.acceptor,
        &id,
        caller.tenant.as_deref(),
        &caller.id,
        Timestamp::now().unix_millis(),
        &inner.identity.provider_key,
    )
    .await
    .map_err(HttpError::from)?;
    audit(&inner, &caller, "quarantine.reject", &id, None).await?;
    Ok(Json(v).into_response())
}

/// The four routes, `read` ones and `tenant_admin` ones behind the operator token check.
pub(crate) fn routes(inner: &Arc<Inner>) -> axum::Router<Arc<Inner>> {
    use amp_store::operator::TokenScope;
    use axum::middleware::from_fn_with_state;
    use axum::routing::{get, post};
    let read = axum::Router::new()
        .route("/quarantine", get(list))
        .route("/quarantine/{id}", get(show))
        .route_layer(from_fn_with_state(
            (inner.clone(), TokenScope::Read),
            super::authenticate,
        ));
    let decide = axum::Router::new()
        .route("/quarantine/{id}/approve", post(approve))
        .route("/quarantine/{id}/reject", post(reject))
        .route_layer(from_fn_with_state(
            (inner.clone(), TokenScope::TenantAdmin),
            super::authenticate,
        ));
    read.merge(decide)
}
