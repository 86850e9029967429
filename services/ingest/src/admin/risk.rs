//! `GET /v1/agents/{agent_id}/risk` (spec-next 08 "Risk Score"): the agent's score over the
//! rolling 24 hours, for the agent itself (its API key; also while it is suspended, so it
//! can learn why) or an operator (a token of any scope; one limited to a tenant, for that
//! tenant's agents). Another agent's id is unknown to
//! an agent (`404`), as its existence must not leak.

use std::sync::Arc;

use amp_proto::{ApiError, ErrorCode, Timestamp};
use amp_runtime::http::bearer_token;
use amp_runtime::ratelimit::Decision;
use amp_runtime::{ApiPath, ApiResult, HttpError};
use amp_store::AgentRecord;
use amp_store::operator::Operator as _;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{TOKEN_PREFIX, rfc3339};
use crate::auth::hash_key;
use crate::routes::store_error;
use crate::state::Inner;

#[utoipa::path(get, path = "/v1/agents/{address}/risk", tag = "operator",
    operation_id = "agent_risk",
    description = "The agent's risk score over the last 24 h (spec-next 07): for the agent itself \
        (its API key) or an operator.",
    params(("address" = String, Path, description = "The agent's id (`agt_…`) or address")),
    security(("api_key" = []), ("operator_token" = ["read"])),
    responses((status = 200, description = "The score and its counts", body = Object), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn agent_risk(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    // 08's 30/min for this endpoint, per caller, checked once the caller is known; its
    // headers on every answer after that.
    let mut limit = None;
    let answer = answer(&inner, &headers, id, &mut limit).await;
    let Some(decision) = limit else {
        return answer;
    };
    let mut limit_headers = HeaderMap::new();
    decision.apply_headers(&mut limit_headers);
    match answer {
        Ok(mut resp) => {
            resp.headers_mut().extend(limit_headers);
            Ok(resp)
        }
        Err(e) => Err(e.with_headers(limit_headers)),
    }
}

async fn answer(
    inner: &Inner,
    headers: &HeaderMap,
    id: String,
    limit: &mut Option<Decision>,
) -> ApiResult<Response> {
    let unauthorized = |msg: &str| HttpError::from(ApiError::new(ErrorCode::Unauthorized, msg));
    let Some(token) = bearer_token(headers) else {
        return Err(unauthorized(
            "missing credentials: send Authorization: Bearer <api_key or operator token>",
        ));
    };
    let now = Timestamp::now().unix_millis();
    let unknown = || HttpError::from(ApiError::not_found(format!("no agent '{id}'")));
    if token.starts_with(TOKEN_PREFIX) {
        let hash = hash_key(&inner.identity.key_pepper, token);
        let record = match inner.store.token_by_hash(&hash).await {
            Ok(Some(t)) if t.revoked_at.is_none() => t,
            Ok(_) => return Err(unauthorized("unknown or revoked operator token")),
            Err(e) => return Err(store_error(e)),
        };
        let found = if id.starts_with("agt_") && id.len() <= 64 {
            inner.store.agent(&id).await.map_err(store_error)?
        } else {
            None
        };
        let decision = inner.security_limiters.risk.check(&record.id);
        if !decision.allowed {
            return Err(decision.into_error());
        }
        *limit = Some(decision);
        let Some(agent) = found.filter(AgentRecord::is_active) else {
            return Err(unknown());
        };
        // A tenant admin's token: its tenant's agents only (another's is unknown to it), and
        // only while its tenant is the one it was made for.
        if let Some(tenant) = &record.tenant
            && (agent.tenant != *tenant
                || !super::tenant_scope::alive(inner, &record, tenant)
                    .await
                    .map_err(store_error)?)
        {
            return Err(unknown());
        }
    } else {
        let agent = amp_messaging::auth::agent_for_key_cached(
            inner.acceptor.registry(),
            &inner.identity.key_pepper,
            token,
            now,
        )
        .await
        .map_err(store_error)?
        .ok_or_else(|| unauthorized("invalid or expired API key"))?;
        let decision = inner.agent_limiter.check(&agent.id);
        if !decision.allowed {
            return Err(decision.into_error());
        }
        let decision = inner.security_limiters.risk.check(&agent.id);
        if !decision.allowed {
            return Err(decision.into_error());
        }
        *limit = Some(decision);
        if agent.id != id {
            return Err(unknown());
        }
    }
    let counts = amp_messaging::risk::window(&inner.store, &id, now)
        .await
        .map_err(store_error)?;
    let score = amp_messaging::risk::score(&counts);
    let suspended = amp_messaging::suspension::active(inner.acceptor.registry(), &id, now)
        .await
        .map_err(store_error)?
        .is_some();
    Ok(Json(json!({
        "agent_id": id,
        "risk_score": score,
        "risk_level": amp_messaging::risk::level(score),
        "window": "24h",
        "breakdown": {
            "total_messages": counts.total_messages,
            "blocked": counts.blocked,
            "quarantined": counts.quarantined,
            "flagged": counts.flagged,
        },
        "suspended": suspended,
        "computed_at": rfc3339(now),
    }))
    .into_response())
}
