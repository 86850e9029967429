//! Tokens limited to one tenant (spec-next 08's tenant admins: "Tenant admins can query risk
//! for any agent in their tenant", and suspend, unsuspend and review quarantine there).
//!
//! Such a token has a scope like any operator token (`read` or `tenant_admin`, never
//! `full`) and works on two kinds of routes only:
//!
//! - the admin API's routes of one tenant (`/admin/v1/tenants/{name}/…`), for its own
//!   tenant; another tenant's answers `404` (as if it did not exist). The routes that are
//!   the provider's decisions about a tenant (`PATCH` and `DELETE /tenants/{name}`, its
//!   suspension and resumption) are not a tenant admin's: `403`;
//! - the spec's admin endpoints (suspend, unsuspend, the quarantine review), whose handlers
//!   leave out what is not the tenant's (`404`), and the risk score (its own check).
//!
//! Every other route (the tenant list, tokens, the audit log, usage of all tenants) is the
//! provider's: `403`. The token dies with its tenant: a tenant deleted (or being deleted)
//! and created again under the same name is another tenant, which the old token never
//! reaches (its record must be older than the token).

use amp_proto::{ApiError, ErrorCode};
use amp_runtime::HttpError;
use amp_store::operator::{Operator as _, OperatorToken, TenantStatus};
use axum::extract::{FromRequestParts as _, MatchedPath, RawPathParams, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use crate::routes::store_error;
use crate::state::Inner;

/// What a route reaches.
#[derive(Debug, PartialEq, Eq)]
enum Reach {
    /// One tenant's, named by the path's `{name}`.
    Tenant,
    /// A spec endpoint whose handler limits itself to the caller's tenant.
    Spec,
    /// The provider's.
    Provider,
}

/// The reach of the route `matched` (the router's path, with its prefix) for `method`.
fn reach(method: &Method, matched: &str) -> Reach {
    let rest = ["/admin/v1", "/api/v1", "/v1"]
        .iter()
        .find_map(|p| matched.strip_prefix(p))
        .unwrap_or(matched);
    if rest.starts_with("/quarantine")
        || (rest.starts_with("/agents/{address}/")
            && (rest.ends_with("/suspend") || rest.ends_with("/unsuspend")))
    {
        return Reach::Spec;
    }
    match rest.strip_prefix("/tenants/{name}") {
        Some("") if method == Method::GET => Reach::Tenant,
        Some("" | "/suspend" | "/resume") | None => Reach::Provider,
        Some(_) => Reach::Tenant,
    }
}

/// Whether `tenant`, which `token` is limited to, is still the tenant it was made for: not
/// gone, not being deleted, not created again since.
///
/// Fails when the store cannot be read.
pub(super) async fn alive(
    inner: &Inner,
    token: &OperatorToken,
    tenant: &str,
) -> amp_store::Result<bool> {
    Ok(inner
        .store
        .tenant(tenant)
        .await?
        .is_some_and(|t| t.status != TenantStatus::Deleting && t.created_at <= token.created_at))
}

/// Whether `token` (limited to `tenant`) may make `req`: `Ok`, or the answer to give.
pub(super) async fn check(
    inner: &Inner,
    token: &OperatorToken,
    tenant: &str,
    req: Request,
) -> Result<Request, Response> {
    let alive = match alive(inner, token, tenant).await {
        Ok(alive) => alive,
        Err(e) => return Err(store_error(e).into_response()),
    };
    if !alive {
        return Err(HttpError::from(ApiError::new(
            ErrorCode::Unauthorized,
            "this operator token's tenant no longer exists",
        ))
        .into_response());
    }
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    match reach(req.method(), &matched) {
        Reach::Spec => Ok(req),
        Reach::Provider => Err(HttpError::from(ApiError::new(
            ErrorCode::Forbidden,
            format!("this operator token is limited to tenant '{tenant}'; this endpoint is the provider's"),
        ))
        .into_response()),
        Reach::Tenant => {
            let (mut parts, body) = req.into_parts();
            let named = RawPathParams::from_request_parts(&mut parts, &())
                .await
                .ok()
                .and_then(|p| {
                    p.iter()
                        .find(|(k, _)| *k == "name")
                        .map(|(_, v)| v.to_ascii_lowercase())
                });
            if named.as_deref() != Some(tenant) {
                // Another tenant's: unknown to this token, whether it exists or not.
                return Err(HttpError::from(ApiError::not_found(format!(
                    "no tenant '{}'",
                    named.unwrap_or_default()
                )))
                .into_response());
            }
            Ok(Request::from_parts(parts, body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_reach_a_tenant_the_spec_or_the_provider() {
        let cases = [
            (Method::GET, "/admin/v1/tenants/{name}", Reach::Tenant),
            (Method::PATCH, "/admin/v1/tenants/{name}", Reach::Provider),
            (Method::DELETE, "/admin/v1/tenants/{name}", Reach::Provider),
            (
                Method::POST,
                "/admin/v1/tenants/{name}/suspend",
                Reach::Provider,
            ),
            (
                Method::POST,
                "/admin/v1/tenants/{name}/resume",
                Reach::Provider,
            ),
            (
                Method::GET,
                "/admin/v1/tenants/{name}/agents",
                Reach::Tenant,
            ),
            (
                Method::POST,
                "/admin/v1/tenants/{name}/agents/{agent}/suspend",
                Reach::Tenant,
            ),
            (
                Method::POST,
                "/admin/v1/tenants/{name}/owner-keys",
                Reach::Tenant,
            ),
            (Method::GET, "/admin/v1/tenants", Reach::Provider),
            (Method::POST, "/admin/v1/tenants", Reach::Provider),
            (Method::GET, "/admin/v1/audit", Reach::Provider),
            (Method::GET, "/admin/v1/usage.csv", Reach::Provider),
            (Method::POST, "/admin/v1/tokens", Reach::Provider),
            (Method::GET, "/admin/v1/quarantine", Reach::Spec),
            (Method::POST, "/v1/quarantine/{id}/approve", Reach::Spec),
            (
                Method::POST,
                "/api/v1/agents/{address}/suspend",
                Reach::Spec,
            ),
            (Method::POST, "/v1/agents/{address}/unsuspend", Reach::Spec),
            (Method::GET, "", Reach::Provider),
        ];
        for (method, path, want) in cases {
            assert_eq!(reach(&method, path), want, "{method} {path}");
        }
    }
}
