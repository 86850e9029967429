//! Spec-next 08's rate limits of the admin and security endpoints, per caller (the operator
//! token's id; for the risk score of an agent asking about itself, the agent's id), with the
//! `X-RateLimit-*` headers of every other limited endpoint:
//!
//! | Route | Limit (`[ingest.limits]`) |
//! |---|---|
//! | `GET /v1/quarantine` | `quarantine_list_per_minute` (30) |
//! | `POST /v1/quarantine/{id}/approve`, `…/reject` | `quarantine_decide_per_minute` (20) |
//! | `POST /v1/agents/{id}/suspend`, the admin API's agent suspension | `suspend_per_minute` (10) |
//! | `GET /v1/agents/{id}/risk` | `risk_per_minute` (30) |
//! | the other spec operator endpoints (`GET /v1/quarantine/{id}`, `…/unsuspend`) | `api_requests_per_minute` (100, "other endpoints") |
//!
//! The same routes under `/admin/v1` count against the same budgets. The limiters are
//! shared by the ingest replicas of a cluster like the others (`[nats] limits_sync_ms`).

use std::sync::Arc;

use amp_runtime::ratelimit::{Decision, RateLimiter};
use axum::http::Method;

use crate::state::Inner;

/// The limiters of 08's admin and security endpoints.
pub(crate) struct SecurityLimiters {
    /// `GET /v1/quarantine`.
    pub(crate) quarantine_list: Arc<RateLimiter>,
    /// `POST /v1/quarantine/{id}/approve|reject`.
    pub(crate) quarantine_decide: Arc<RateLimiter>,
    /// `POST /v1/agents/{id}/suspend`.
    pub(crate) suspend: Arc<RateLimiter>,
    /// `GET /v1/agents/{id}/risk`.
    pub(crate) risk: Arc<RateLimiter>,
}

/// The limiter of the operator route `matched` (the router's path, with its prefix) for
/// `method`; `None` for the admin API's own routes, which 08 does not limit.
fn limiter<'a>(inner: &'a Inner, method: &Method, matched: &str) -> Option<&'a RateLimiter> {
    let l = &inner.security_limiters;
    let rest = ["/admin/v1", "/api/v1", "/v1"]
        .iter()
        .find_map(|p| matched.strip_prefix(p))
        .unwrap_or(matched);
    match rest {
        "/quarantine" if method == Method::GET => Some(&l.quarantine_list),
        "/quarantine/{id}/approve" | "/quarantine/{id}/reject" => Some(&l.quarantine_decide),
        "/agents/{address}/suspend" | "/tenants/{name}/agents/{agent}/suspend" => Some(&l.suspend),
        "/quarantine/{id}" | "/agents/{address}/unsuspend" => Some(&inner.agent_limiter),
        _ => None,
    }
}

/// The decision for the operator `caller` (a token's id) on the route `matched`; `None`
/// when the route has no limit of 08's.
pub(super) fn check(
    inner: &Inner,
    method: &Method,
    matched: &str,
    caller: &str,
) -> Option<Decision> {
    limiter(inner, method, matched).map(|l| l.check(caller))
}
