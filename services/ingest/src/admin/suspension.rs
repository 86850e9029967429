//! Agent suspension by an operator (spec-next 07, 08), in two places with one behaviour:
//!
//! - the admin API: `POST /admin/v1/tenants/{name}/agents/{agent}/suspend` and `…/resume`
//!   (`{agent}`: the agent's name in the tenant, or its `agt_…` id);
//! - the spec's paths on the public API: `POST /v1/agents/{agent_id}/suspend` and
//!   `…/unsuspend`, with `Authorization: Bearer <operator token>` (the admin API's tokens,
//!   scope `tenant_admin`; an agent's API key is refused).
//!
//! Body of a suspension: `{"reason": "…", "duration_hours": 24}` (`duration_hours` omitted:
//! until unsuspended). Every change is in the audit log (`agent.suspend`, `agent.unsuspend`).

use std::sync::Arc;

use amp_proto::{ApiError, Timestamp};
use amp_runtime::{ApiPath, ApiResult, HttpError};
use amp_store::AgentRecord;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, audit, rfc3339, tenant_name};
use crate::routes::store_error;
use crate::state::Inner;

/// The longest suspension with an end: ten years (longer is "until unsuspended").
const MAX_HOURS: u64 = 10 * 366 * 24;

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = AgentSuspend)]
#[serde(deny_unknown_fields)]
pub(crate) struct SuspendBody {
    /// Why (required, at most 500 characters, not only spaces).
    #[schema(required = true, nullable = false, max_length = 500, pattern = "\\S")]
    reason: Option<String>,
    /// For how long, in hours (1 to 87840); omitted, until unsuspended.
    #[schema(minimum = 1, maximum = 87840)]
    duration_hours: Option<u64>,
}

/// `POST /admin/v1/tenants/{name}/agents/{agent}/suspend`.
#[utoipa::path(post, path = "/admin/v1/tenants/{name}/agents/{agent}/suspend", tag = "agents", operation_id = "admin_suspend_agent",
    description = "Suspends an agent (spec-next 07): every authenticated call of the agent and every message to it is refused until it is unsuspended or `duration_hours` pass.",
    params(super::openapi::TenantAgent),
    request_body = SuspendBody,
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 200, description = "Suspended", body = super::openapi::AgentSuspendedDoc), (status = 404)))]
pub(super) async fn admin_suspend(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath((tenant, agent)): ApiPath<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let agent = in_tenant(&inner, &tenant, &agent).await?;
    suspend(&inner, &caller, &agent, &body).await
}

/// `POST /admin/v1/tenants/{name}/agents/{agent}/resume` (also `…/unsuspend`).
#[utoipa::path(post, path = "/admin/v1/tenants/{name}/agents/{agent}/resume", tag = "agents", operation_id = "admin_resume_agent",
    description = "Ends an agent's suspension (idempotent). Also at `…/unsuspend`.",
    params(super::openapi::TenantAgent),
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 200, description = "No longer suspended", body = super::openapi::AgentUnsuspendedDoc), (status = 404)))]
pub(super) async fn admin_resume(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath((tenant, agent)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let agent = in_tenant(&inner, &tenant, &agent).await?;
    unsuspend(&inner, &caller, &agent).await
}

/// `POST /v1/agents/{agent_id}/suspend` (spec-next 08).
#[utoipa::path(post, path = "/v1/agents/{address}/suspend", tag = "operator",
    operation_id = "suspend_agent",
    description = "Suspends an agent (spec-next 07, 08): every authenticated call of the agent and \
        every message to it is refused until it is unsuspended or `duration_hours` pass.",
    params(("address" = String, Path, description = "The agent's id (`agt_…`) or address")),
    request_body = SuspendBody,
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 200, description = "Suspended", body = Object), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn public_suspend(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let agent = by_id(&inner, &caller, &id).await?;
    suspend(&inner, &caller, &agent, &body).await
}

/// `POST /v1/agents/{agent_id}/unsuspend` (spec-next 08).
#[utoipa::path(post, path = "/v1/agents/{address}/unsuspend", tag = "operator",
    operation_id = "unsuspend_agent",
    params(("address" = String, Path, description = "The agent's id (`agt_…`) or address")),
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 200, description = "No longer suspended", body = Object), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn public_unsuspend(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let agent = by_id(&inner, &caller, &id).await?;
    unsuspend(&inner, &caller, &agent).await
}

/// The active agent `agent` (name or `agt_…` id) of `tenant`; another tenant's is unknown.
pub(super) async fn in_tenant(inner: &Inner, tenant: &str, agent: &str) -> ApiResult<AgentRecord> {
    let tenant = tenant_name(tenant, "name")?;
    let found = if agent.starts_with("agt_") {
        inner.store.agent(agent).await.map_err(store_error)?
    } else {
        let name = agent.trim().to_ascii_lowercase();
        inner
            .store
            .agent_by_name(&tenant, &name)
            .await
            .map_err(store_error)?
    };
    found
        .filter(|a| a.is_active() && a.tenant == tenant)
        .ok_or_else(|| {
            ApiError::not_found(format!("no agent '{agent}' in tenant '{tenant}'")).into()
        })
}

/// The active agent with id `id`; one outside the tenant a tenant-limited token is for is
/// unknown to it.
async fn by_id(inner: &Inner, caller: &Caller, id: &str) -> ApiResult<AgentRecord> {
    if !id.starts_with("agt_") || id.len() > 64 {
        return Err(ApiError::not_found("no such agent; give its id (agt_…)").into());
    }
    inner
        .store
        .agent(id)
        .await
        .map_err(store_error)?
        .filter(|a| a.is_active() && caller.tenant.as_ref().is_none_or(|t| *t == a.tenant))
        .ok_or_else(|| ApiError::not_found(format!("no agent '{id}'")).into())
}

async fn suspend(
    inner: &Inner,
    caller: &Caller,
    agent: &AgentRecord,
    body: &[u8],
) -> ApiResult<Response> {
    let body: SuspendBody = amp_runtime::http::parse_json(body).map_err(HttpError::from)?;
    let reason = body
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::missing("reason"))?;
    if reason.chars().count() > 500 {
        return Err(ApiError::invalid("reason", "reason must be at most 500 characters").into());
    }
    let duration_ms = match body.duration_hours {
        None => None,
        Some(h) if (1..=MAX_HOURS).contains(&h) => Some(h as i64 * 3_600_000),
        Some(_) => {
            return Err(ApiError::invalid(
                "duration_hours",
                format!(
                    "duration_hours must be 1 to {MAX_HOURS}; omit it for an indefinite suspension"
                ),
            )
            .into());
        }
    };
    let now = Timestamp::now().unix_millis();
    let s = amp_messaging::suspension::suspend(
        &inner.acceptor,
        &agent.id,
        &reason,
        &caller.id,
        now,
        duration_ms,
    )
    .await
    .map_err(store_error)?;
    audit(
        inner,
        caller,
        "agent.suspend",
        &agent.address,
        Some(crate::routes::no_nulls(json!({
            "agent_id": agent.id,
            "reason": reason,
            "duration_hours": body.duration_hours,
        }))),
    )
    .await?;
    let mut answer = json!({
        "agent_id": agent.id,
        "address": agent.address,
        "suspended": true,
        "suspended_at": rfc3339(s.suspended_at),
        "reason": s.reason,
        "suspended_by": s.suspended_by,
    });
    if let Some(t) = s.expires_at.and_then(rfc3339) {
        answer["expires_at"] = Value::String(t);
    }
    Ok(Json(answer).into_response())
}

async fn unsuspend(inner: &Inner, caller: &Caller, agent: &AgentRecord) -> ApiResult<Response> {
    let had = amp_messaging::suspension::unsuspend(&inner.acceptor, &agent.id)
        .await
        .map_err(store_error)?;
    audit(
        inner,
        caller,
        "agent.unsuspend",
        &agent.address,
        Some(json!({ "agent_id": agent.id, "was_suspended": had })),
    )
    .await?;
    Ok(Json(json!({
        "agent_id": agent.id,
        "address": agent.address,
        "suspended": false,
        "unsuspended_at": rfc3339(Timestamp::now().unix_millis()),
    }))
    .into_response())
}
