//! The caller's own record (`/v1/agents/me`), listing its tenant (`/v1/agents`), and
//! resolving addresses (`/v1/agents/resolve/{address}`, `/v1/agents/{address}`).

use std::sync::Arc;

use amp_proto::{Address, AddressContext, ApiError, ErrorCode, Timestamp};
use amp_runtime::{ApiJson, ApiPath, ApiQuery, ApiResult};
use amp_store::AgentRecord;
use axum::Json;
use axum::extract::{Extension, State};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::profile::{check_capabilities, check_card, check_policy};
use super::register::{DeliveryBody, check_alias, check_metadata, delivery_prefs};
use super::{Caller, store_error};
use crate::state::Inner;
use amp_messaging::events::ChangeKind;

fn ts(ms: i64) -> Value {
    Timestamp::from_unix_millis(ms).map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

fn pem_of(agent: &AgentRecord) -> Option<String> {
    amp_messaging::auth::agent_key(agent)
        .ok()
        .map(|k| k.to_pem())
}

/// The policy as `/v1/agents/me` shows it: `open` when none is set.
fn policy_json(agent: &AgentRecord) -> Value {
    match &agent.communication_policy {
        Some(p) => json!({ "mode": p.mode, "allowed_recipients": p.allowed_recipients }),
        None => json!({ "mode": "open" }),
    }
}

#[utoipa::path(get, path = "/v1/agents/me", tag = "agents", operation_id = "get_self", security(("api_key" = [])),
    responses((status = 200, body = crate::routes::openapi::AgentSelfDoc)))]
pub(super) async fn me(Extension(Caller(agent)): Extension<Caller>) -> Json<Value> {
    let metadata = agent
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str::<Value>(m).ok());
    Json(super::no_nulls(json!({
        "address": agent.address,
        "agent_id": agent.id,
        "name": agent.name,
        "tenant": agent.tenant,
        "alias": agent.alias,
        "delivery": {
            "webhook_url": agent.delivery.webhook_url,
            "prefer_websocket": agent.delivery.prefer_websocket,
        },
        "public_key": pem_of(&agent),
        "key_algorithm": agent.key_algorithm,
        "fingerprint": agent.fingerprint,
        "metadata": metadata,
        "capabilities": agent.capabilities,
        "communication_policy": policy_json(&agent),
        "registered_at": ts(agent.registered_at),
        "last_seen_at": agent.last_seen_at.map_or(Value::Null, ts),
    })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AgentUpdate)]
pub(super) struct UpdateBody {
    alias: Option<String>,
    delivery: Option<DeliveryBody>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Box<RawValue>>,
    name: Option<Value>,
    public_key: Option<Value>,
    tenant: Option<Value>,
    key_algorithm: Option<Value>,
    #[schema(value_type = Option<Vec<String>>)]
    capabilities: Option<Value>,
    #[schema(value_type = Option<Object>)]
    communication_policy: Option<Value>,
    #[schema(value_type = Option<Object>)]
    agent_card: Option<Value>,
}

#[utoipa::path(patch, path = "/v1/agents/me", tag = "agents", operation_id = "update_self", security(("api_key" = [])),
    request_body = UpdateBody, responses((status = 200, body = crate::routes::openapi::UpdatedDoc)))]
pub(super) async fn update_me(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> ApiResult<Json<Value>> {
    for (field, present, hint) in [
        (
            "name",
            body.name.is_some(),
            "register a new agent to change the name",
        ),
        (
            "tenant",
            body.tenant.is_some(),
            "register a new agent to change the tenant",
        ),
        (
            "public_key",
            body.public_key.is_some(),
            "use POST /v1/auth/rotate-keys",
        ),
        (
            "key_algorithm",
            body.key_algorithm.is_some(),
            "use POST /v1/auth/rotate-keys",
        ),
    ] {
        if present {
            return Err(
                ApiError::invalid(field, format!("{field} cannot be updated: {hint}")).into(),
            );
        }
    }
    // Re-read: the record in the request may be a moment old.
    let mut current = inner
        .store
        .agent(&agent.id)
        .await
        .map_err(store_error)?
        .filter(AgentRecord::is_active)
        .ok_or_else(ApiError::unauthorized)?;
    if body.alias.is_some() {
        current.alias = check_alias(body.alias)?;
    }
    if body.metadata.is_some() {
        current.metadata = check_metadata(body.metadata)?;
    }
    if let Some(caps) = check_capabilities(body.capabilities.as_ref())? {
        current.capabilities = caps;
    }
    if let Some(policy) = check_policy(body.communication_policy.as_ref())? {
        current.communication_policy = policy;
    }
    if body.agent_card.is_some() {
        let key = amp_messaging::auth::agent_key(&current)?;
        let address = Address::parse_full(&current.address, &inner.identity.domain)
            .map_err(|_| ApiError::internal())?;
        current.agent_card = check_card(body.agent_card.as_ref(), &key, &address)?;
    }
    if let Some(d) = body.delivery {
        current.delivery = delivery_prefs(d, current.delivery.clone(), inner.config.outbound)?;
    }
    inner
        .store
        .update_agent(current)
        .await
        .map_err(store_error)?;
    amp_messaging::events::registry_changed(
        &inner.bus,
        inner.acceptor.registry(),
        &agent.id,
        ChangeKind::Updated,
    )
    .await;
    Ok(Json(json!({ "updated": true, "address": agent.address })))
}

#[utoipa::path(delete, path = "/v1/agents/me", tag = "agents", operation_id = "deregister_self", security(("api_key" = [])),
    responses((status = 200, body = crate::routes::openapi::DeregisteredDoc)))]
pub(super) async fn delete_me(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let now = Timestamp::now();
    deregister(&inner, &agent, now).await?;
    Ok(Json(json!({
        "deregistered": true,
        "address": agent.address,
        "deregistered_at": now.to_rfc3339(),
    })))
}

/// Deregisters `agent` (by itself, or by an operator): its public key goes on the
/// revocation list first (spec-next 07: a key no longer trusted is not used again, and a
/// failure there leaves the agent as it was, to retry), then its mailbox and record.
pub(crate) async fn deregister(
    inner: &Inner,
    agent: &amp_store::AgentRecord,
    now: Timestamp,
) -> Result<(), amp_runtime::HttpError> {
    super::keys::revoke_public_key(
        inner,
        agent,
        &agent.fingerprint,
        amp_store::revocation::Reason::AgentDeregistered,
        None,
        now,
    )
    .await?;
    let hold = i64::from(inner.config.registration.name_hold_days) * 24 * 3600 * 1000;
    // The mailbox goes with the agent: its bytes leave the tenant's `stored_bytes`. Read
    // before the deletion (a failure leaves them counted until they expire).
    if let Err(e) = amp_messaging::mailbox::release_held(
        &inner.store,
        inner.acceptor.meter(),
        agent,
        now.unix_millis(),
    )
    .await
    {
        tracing::warn!(agent = %agent.id, error = %e, "held bytes of a deleted mailbox not counted off");
    }
    match inner
        .store
        .deregister_agent(&agent.id, now.unix_millis(), now.unix_millis() + hold)
        .await
    {
        Ok(_) | Err(amp_store::Error::NotFound) => {}
        Err(e) => return Err(store_error(e)),
    }
    amp_messaging::events::registry_changed(
        &inner.bus,
        inner.acceptor.registry(),
        &agent.id,
        ChangeKind::Deregistered,
    )
    .await;
    tracing::info!(tenant = %agent.tenant, agent = %agent.id, "agent deregistered");
    Ok(())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    tenant: Option<String>,
    search: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

const DEFAULT_LIST_LIMIT: usize = 50;
const MAX_LIST_LIMIT: usize = 200;

#[utoipa::path(get, path = "/v1/agents", tag = "agents", operation_id = "list_agents", security(("api_key" = [])),
    params(ListQuery), responses((status = 200, body = crate::routes::openapi::AgentListDoc)))]
pub(super) async fn list(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    if let Some(t) = &q.tenant
        && !t.eq_ignore_ascii_case(&agent.tenant)
    {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "agents may only list their own tenant",
        )
        .into());
    }
    let limit = q
        .limit
        .unwrap_or(DEFAULT_LIST_LIMIT)
        .clamp(1, MAX_LIST_LIMIT);
    let after = match &q.cursor {
        None => None,
        Some(c) => Some(
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    ApiError::invalid("cursor", "cursor is not one this server issued")
                })?,
        ),
    };
    let search = q
        .search
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(64).collect::<String>());
    let (page, total) = inner
        .store
        .list_agents(
            &agent.tenant,
            search.as_deref(),
            after.as_deref(),
            limit + 1,
        )
        .await
        .map_err(store_error)?;
    let has_more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    let cursor = if has_more {
        page.last()
            .map(|a| URL_SAFE_NO_PAD.encode(a.name.as_bytes()))
    } else {
        None
    };
    let now = Timestamp::now().unix_millis();
    let mut agents = Vec::with_capacity(page.len());
    for a in page {
        let online = inner
            .store
            .presence_count(&a.id, now)
            .await
            .map_err(store_error)?
            > 0;
        agents.push(json!({ "address": a.address, "alias": a.alias, "online": online }));
    }
    Ok(Json(super::no_nulls(json!({
        "agents": agents,
        "total": total,
        "cursor": cursor,
        "has_more": has_more,
    }))))
}

#[utoipa::path(get, path = "/v1/agents/resolve/{address}", tag = "agents", operation_id = "resolve_agent", security(("api_key" = [])),
    params(("address" = String, Path, description = "The agent's address, or its name in the caller's tenant")),
    responses((status = 200, body = crate::routes::openapi::ResolvedAgentDoc), (status = 404)))]
pub(super) async fn resolve(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(caller)): Extension<Caller>,
    ApiPath(address): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let not_found = || ApiError::not_found("no agent with that address on this provider");
    let ctx = AddressContext {
        local_domain: &inner.identity.domain,
        default_tenant: Some(&caller.tenant),
    };
    let addr = Address::parse(&address, ctx).map_err(|_| not_found())?;
    if addr.provider() != inner.identity.domain {
        return Err(not_found().into());
    }
    let agent = inner
        .store
        .agent_by_name(addr.tenant(), addr.name())
        .await
        .map_err(store_error)?
        .filter(|a| a.address == addr.as_str() || !addr.is_scoped())
        .ok_or_else(not_found)?;
    let online = inner
        .store
        .presence_count(&agent.id, Timestamp::now().unix_millis())
        .await
        .map_err(store_error)?
        > 0;
    Ok(Json(super::no_nulls(json!({
        "address": agent.address,
        "alias": agent.alias,
        "public_key": pem_of(&agent),
        "key_algorithm": agent.key_algorithm,
        "fingerprint": agent.fingerprint,
        "online": online,
        "capabilities": agent.capabilities,
    }))))
}
