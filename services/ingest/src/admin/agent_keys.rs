//! An operator's hold on an agent's identity (spec-next 07 "Key Revocation"), on the admin
//! API, scope `tenant_admin`, `{agent}` the agent's name in the tenant or its `agt_…` id:
//!
//! - `POST /admin/v1/tenants/{name}/agents/{agent}/revoke-key`, body `{"reason"?: "…"}`:
//!   the agent's current public key goes on the revocation list (`admin_action`); every
//!   message it signs is `403 key_revoked` from then on (REST, WebSocket, and at the peers
//!   it is announced to), it cannot be rotated away from (a revoked key proves nothing) nor
//!   registered again for the retention. The agent keeps its API key, so it can still read
//!   its mailbox; its owner re-keys it by registering the name again with a new key.
//! - `DELETE /admin/v1/tenants/{name}/agents/{agent}`: deregisters the agent as its own
//!   `DELETE /v1/agents/me` does, its key revoked (`agent_deregistered`).
//!
//! Both are in the audit log (`agent.revoke_key`, `agent.deregister`).

use std::sync::Arc;

use amp_proto::{ApiError, Timestamp};
use amp_runtime::{ApiPath, ApiResult};
use amp_store::revocation::Reason;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::suspension::in_tenant;
use super::{Caller, audit, optional_json, rfc3339};
use crate::state::Inner;

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[schema(as = AgentKeyRevoke)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeBody {
    /// Why, for the audit log (at most 500 characters).
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// `POST /admin/v1/tenants/{name}/agents/{agent}/revoke-key`.
#[utoipa::path(post, path = "/admin/v1/tenants/{name}/agents/{agent}/revoke-key", tag = "agents", operation_id = "admin_revoke_agent_key",
    description = "Puts the agent's current public key on the revocation list (spec-next 07, `admin_action`): every message it signs is refused from now on. The body is optional.",
    params(super::openapi::TenantAgent),
    request_body = Option<RevokeBody>,
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 200, description = "Revoked", body = super::openapi::AgentKeyRevokedDoc), (status = 404)))]
pub(super) async fn revoke_key(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath((tenant, agent)): ApiPath<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let body: RevokeBody = optional_json(&body)?;
    let reason = body
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::invalid("reason", "reason must be at most 500 characters").into());
    }
    let agent = in_tenant(&inner, &tenant, &agent).await?;
    let now = Timestamp::now();
    crate::routes::keys::revoke_public_key(
        &inner,
        &agent,
        &agent.fingerprint,
        Reason::AdminAction,
        None,
        now,
    )
    .await?;
    // Every replica drops its cached "not revoked" for the agent.
    amp_messaging::events::registry_changed(
        &inner.bus,
        inner.acceptor.registry(),
        &agent.id,
        amp_messaging::events::ChangeKind::Revoked,
    )
    .await;
    audit(
        &inner,
        &caller,
        "agent.revoke_key",
        &agent.address,
        Some(crate::routes::no_nulls(json!({
            "agent_id": agent.id,
            "fingerprint": agent.fingerprint,
            "reason": reason,
        }))),
    )
    .await?;
    Ok(Json(json!({
        "agent_id": agent.id,
        "address": agent.address,
        "fingerprint": agent.fingerprint,
        "revoked": true,
        "revoked_at": rfc3339(now.unix_millis()),
        "reason": "admin_action",
    }))
    .into_response())
}

/// `DELETE /admin/v1/tenants/{name}/agents/{agent}`.
#[utoipa::path(delete, path = "/admin/v1/tenants/{name}/agents/{agent}", tag = "agents", operation_id = "admin_deregister_agent",
    description = "Deregisters the agent as its own `DELETE /v1/agents/me` does, its key revoked (`agent_deregistered`).",
    params(super::openapi::TenantAgent),
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 200, description = "Deregistered", body = super::openapi::AgentDeregisteredDoc), (status = 404)))]
pub(super) async fn deregister(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath((tenant, agent)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let agent = in_tenant(&inner, &tenant, &agent).await?;
    let now = Timestamp::now();
    crate::routes::agents::deregister(&inner, &agent, now).await?;
    audit(
        &inner,
        &caller,
        "agent.deregister",
        &agent.address,
        Some(json!({ "agent_id": agent.id, "fingerprint": agent.fingerprint })),
    )
    .await?;
    Ok(Json(json!({
        "deregistered": true,
        "agent_id": agent.id,
        "address": agent.address,
        "deregistered_at": now.to_rfc3339(),
    }))
    .into_response())
}
