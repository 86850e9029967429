//! Operator tokens (scope `full`): create (the token is shown once), list, revoke. A token
//! may be limited to one existing tenant (`"tenant"`, scope `read` or `tenant_admin`; see
//! `tenant_scope`).

use std::sync::Arc;

use amp_proto::ApiError;
use amp_runtime::{ApiJson, ApiPath, ApiResult};
use amp_store::PutMode;
use amp_store::operator::{Operator as _, OperatorToken, TenantStatus, TokenScope};
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, TOKEN_PREFIX, audit, new_id, new_secret, rfc3339, tenant_name};
use crate::auth::hash_key;
use crate::routes::store_error;
use crate::state::Inner;

fn view(t: &OperatorToken) -> Value {
    let mut v = json!({
        "id": t.id,
        "name": t.name,
        "scope": t.scope,
        "created_at": rfc3339(t.created_at),
        "revoked_at": t.revoked_at.and_then(rfc3339),
    });
    if let Some(tenant) = &t.tenant {
        v["tenant"] = json!(tenant);
    }
    v
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = TokenCreate)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    /// What the token is for: 1-64 printable characters, not only spaces (required).
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\s][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    name: Option<String>,
    /// `read`, `tenant_admin` or `full` (required).
    #[schema(required = true, nullable = false, value_type = Option<super::openapi::ScopeDoc>)]
    scope: Option<String>,
    /// Limits the token to this existing tenant (a tenant admin's token): its own agents,
    /// quarantine entries and risk only; scope `read` or `tenant_admin`. `null` is absent.
    #[schema(pattern = "^[A-Za-z0-9-]{1,63}$")]
    tenant: Option<String>,
}

#[utoipa::path(post, path = "/admin/v1/tokens", tag = "operator tokens", operation_id = "create_token",
    description = "Creates an operator token. The token is in this answer only.",
    request_body = CreateBody,
    security(("operator_token" = ["full"])),
    responses((status = 201, description = "Created", body = super::openapi::TokenCreatedDoc)))]
pub(super) async fn create(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<Response> {
    let name = body.name.unwrap_or_default();
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name", "name must be 1-64 printable characters").into());
    }
    let Some(scope_text) = body.scope else {
        return Err(ApiError::missing("scope").into());
    };
    let Some(scope) = TokenScope::parse(&scope_text) else {
        return Err(ApiError::invalid("scope", "scope must be read, tenant_admin or full").into());
    };
    let tenant = match body.tenant {
        None => None,
        Some(raw) => {
            if scope == TokenScope::Full {
                return Err(ApiError::invalid(
                    "scope",
                    "a token limited to a tenant has scope read or tenant_admin",
                )
                .into());
            }
            let name = tenant_name(&raw, "tenant")?;
            match inner.store.tenant(&name).await.map_err(store_error)? {
                Some(t) if t.status != TenantStatus::Deleting => Some(name),
                _ => {
                    return Err(ApiError::invalid("tenant", format!("no tenant '{name}'")).into());
                }
            }
        }
    };
    let token = new_secret(TOKEN_PREFIX);
    let record = OperatorToken {
        id: new_id("opt_"),
        name: name.trim().to_owned(),
        scope,
        tenant: tenant.clone(),
        created_at: Inner::now_ms(),
        revoked_at: None,
    };
    inner
        .store
        .put_token(
            &hash_key(&inner.identity.key_pepper, &token),
            &record,
            PutMode::Create,
        )
        .await
        .map_err(store_error)?;
    audit(
        &inner,
        &caller,
        "token.create",
        &record.id,
        Some(crate::routes::no_nulls(
            json!({ "name": record.name, "scope": scope, "tenant": tenant }),
        )),
    )
    .await?;
    let mut out = view(&record);
    out["token"] = json!(token);
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

#[utoipa::path(get, path = "/admin/v1/tokens", tag = "operator tokens", operation_id = "list_tokens",
    security(("operator_token" = ["full"])),
    responses((status = 200, description = "Every operator token, oldest first (never the tokens themselves)", body = super::openapi::TokenListDoc)))]
pub(super) async fn list(State(inner): State<Arc<Inner>>) -> ApiResult<Response> {
    let mut tokens = inner.store.list_tokens().await.map_err(store_error)?;
    tokens.sort_by_key(|(_, t)| t.created_at);
    Ok(axum::Json(json!({
        "tokens": tokens.iter().map(|(_, t)| view(t)).collect::<Vec<_>>(),
    }))
    .into_response())
}

#[utoipa::path(post, path = "/admin/v1/tokens/{id}/revoke", tag = "operator tokens", operation_id = "revoke_token",
    description = "Revokes the token (idempotent).",
    params(("id" = String, Path, description = "The token's public id (`opt_…`)")),
    security(("operator_token" = ["full"])),
    responses((status = 200, description = "The token, revoked", body = super::openapi::TokenDoc), (status = 404)))]
pub(super) async fn revoke(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let tokens = inner.store.list_tokens().await.map_err(store_error)?;
    let Some((hash_hex, mut t)) = tokens.into_iter().find(|(_, t)| t.id == id) else {
        return Err(ApiError::not_found(format!("no operator token '{id}'")).into());
    };
    if t.revoked_at.is_none() {
        t.revoked_at = Some(Inner::now_ms());
        inner
            .store
            .update_token(&hash_hex, &t)
            .await
            .map_err(store_error)?;
        audit(&inner, &caller, "token.revoke", &t.id, None).await?;
    }
    Ok(axum::Json(view(&t)).into_response())
}
