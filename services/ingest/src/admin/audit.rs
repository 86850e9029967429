//! The audit log, paged oldest first (`?after=<next_cursor>&limit=`).

use std::sync::Arc;

use amp_runtime::{ApiQuery, ApiResult};
use amp_store::operator::Operator as _;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Page, rfc3339};
use crate::routes::store_error;
use crate::state::Inner;

#[utoipa::path(get, path = "/admin/v1/audit", tag = "audit", operation_id = "list_audit",
    params(super::Page),
    security(("operator_token" = ["read"])),
    responses((status = 200, description = "A page of the audit log, oldest first", body = super::openapi::AuditPageDoc)))]
pub(super) async fn list(
    State(inner): State<Arc<Inner>>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<Response> {
    let limit = page.limit()?;
    let mut rows = inner
        .store
        .audit(page.after.as_deref(), limit + 1)
        .await
        .map_err(store_error)?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more {
        rows.last().map(|e| e.id.clone())
    } else {
        None
    };
    let entries: Vec<_> = rows
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "at": rfc3339(e.at),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "request_id": e.request_id,
                "details": e.details,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "entries": entries, "next_cursor": next })).into_response())
}
