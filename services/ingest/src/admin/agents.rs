//! The agents of a tenant, paged by name (`?after=<next_cursor>&limit=`), for the console and
//! `amp admin`: what an operator needs to recognise an agent, never a key or a key hash.

use std::sync::Arc;

use amp_proto::ApiError;
use amp_runtime::{ApiPath, ApiQuery, ApiResult};
use amp_store::operator::Operator as _;
use amp_store::{AgentRecord, AgentStatus};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Page, rfc3339, tenant_name};
use crate::routes::store_error;
use crate::state::Inner;

/// An agent as the admin API shows it.
fn view(a: &AgentRecord) -> Value {
    let status = match a.status {
        AgentStatus::Active => "active",
        AgentStatus::Deregistered { .. } => "deregistered",
    };
    json!({
        "address": a.address,
        "name": a.name,
        "alias": a.alias,
        "owner_id": a.owner_id,
        "created_at": rfc3339(a.registered_at),
        "last_seen_at": a.last_seen_at.and_then(rfc3339),
        "status": status,
    })
}

#[utoipa::path(get, path = "/admin/v1/tenants/{name}/agents", tag = "agents", operation_id = "list_tenant_agents",
    params(super::openapi::TenantName, super::Page),
    security(("operator_token" = ["read"])),
    responses((status = 200, description = "A page of the tenant's agents, by name (no keys)", body = super::openapi::AgentListDoc), (status = 404)))]
pub(super) async fn list(
    State(inner): State<Arc<Inner>>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<Response> {
    let tenant = tenant_name(&name, "name")?;
    let limit = page.limit()?;
    let (mut rows, total) = inner
        .store
        .list_agents(&tenant, None, page.after.as_deref(), limit + 1)
        .await
        .map_err(store_error)?;
    // Tenants of open registration have agents and no record; a name with neither is unknown.
    if total == 0
        && inner
            .store
            .tenant(&tenant)
            .await
            .map_err(store_error)?
            .is_none()
    {
        return Err(ApiError::not_found(format!("no tenant '{tenant}'")).into());
    }
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more {
        rows.last().map(|a| a.name.clone())
    } else {
        None
    };
    Ok(axum::Json(json!({
        "tenant": tenant,
        "agents": rows.iter().map(view).collect::<Vec<_>>(),
        "total": total,
        "next_cursor": next,
    }))
    .into_response())
}
