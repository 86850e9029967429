//! Owner keys (`uk_…`): issue (the key is shown once), list (prefix and metadata), rotate
//! (a new key; the old one keeps working for the overlap), revoke. And invite codes, for
//! tenants in `invite` mode: single-use, expiring.

use std::sync::Arc;

use amp_proto::ApiError;
use amp_runtime::{ApiPath, ApiResult};
use amp_store::PutMode;
use amp_store::operator::{Invite, Operator as _, OwnerKey};
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::tenants::load;
use super::{Caller, audit, new_id, new_secret, rfc3339};
use crate::auth::hash_key;
use crate::routes::store_error;
use crate::state::Inner;

/// Owner keys start with this (spec 03 user keys).
pub(crate) const OWNER_KEY_PREFIX: &str = "uk_";
/// Invite codes start with this.
pub(crate) const INVITE_PREFIX: &str = "amp_inv_";
/// Longest overlap of a rotation, and longest validity of an invite: 90 days.
const MAX_SECS: u64 = 90 * 24 * 3600;

fn view(k: &OwnerKey) -> Value {
    json!({
        "id": k.id,
        "tenant": k.tenant,
        "owner_id": k.owner_id,
        "prefix": k.prefix,
        "agent_limit": k.agent_limit,
        "created_at": rfc3339(k.created_at),
        "expires_at": k.expires_at.and_then(rfc3339),
        "revoked_at": k.revoked_at.and_then(rfc3339),
        "replaced_by": k.replaced_by,
        "valid": k.valid_at(Inner::now_ms()),
    })
}

/// The first characters of a key, enough to tell keys apart, never enough to use one.
pub(crate) fn prefix_of(key: &str) -> String {
    format!(
        "{}…",
        key.chars()
            .take(OWNER_KEY_PREFIX.len() + 6)
            .collect::<String>()
    )
}

fn seconds(v: Option<u64>, field: &str, default: Option<u64>) -> ApiResult<Option<u64>> {
    match v.or(default) {
        Some(s) if s == 0 || s > MAX_SECS => {
            Err(ApiError::invalid(field, format!("{field} must be 1 to {MAX_SECS} seconds")).into())
        }
        other => Ok(other),
    }
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[schema(as = OwnerKeyIssue)]
#[serde(deny_unknown_fields)]
pub(super) struct IssueBody {
    /// The owner the key's agents belong to; default: the tenant's first owner, else
    /// `own_<tenant>`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    owner_id: Option<String>,
    /// Most agents of the owner.
    agent_limit: Option<u32>,
    /// Valid for, in seconds (at most 90 days); default: until revoked.
    #[schema(minimum = 1, maximum = 7776000)]
    expires_in_secs: Option<u64>,
}

/// Writes a fresh key for `tenant` and returns it with its record.
async fn mint(
    inner: &Inner,
    tenant: &str,
    owner_id: String,
    agent_limit: Option<u32>,
    expires_at: Option<i64>,
) -> ApiResult<(String, OwnerKey)> {
    let key = new_secret(OWNER_KEY_PREFIX);
    let record = OwnerKey {
        id: new_id("ok_"),
        tenant: tenant.to_owned(),
        owner_id,
        prefix: prefix_of(&key),
        agent_limit,
        created_at: Inner::now_ms(),
        expires_at,
        revoked_at: None,
        replaced_by: None,
    };
    let hash = hash_key(&inner.identity.key_pepper, &key);
    inner
        .store
        .put_owner_key(&hash, &record, PutMode::Create)
        .await
        .map_err(store_error)?;
    Ok((key, record))
}

#[utoipa::path(post, path = "/admin/v1/tenants/{name}/owner-keys", tag = "owner keys", operation_id = "issue_owner_key",
    description = "Issues an owner key (`uk_…`) for registration in the tenant. The key is in this answer only. The body is optional.",
    params(super::openapi::TenantName),
    request_body = Option<IssueBody>,
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 201, description = "Issued", body = super::openapi::OwnerKeyIssuedDoc), (status = 404)))]
pub(super) async fn issue(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let body: IssueBody = super::optional_json(&body)?;
    let t = load(&inner, &name).await?;
    if let Some(o) = &body.owner_id
        && (o.is_empty()
            || o.len() > 64
            || !o
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        return Err(ApiError::invalid(
            "owner_id",
            "owner_id must be 1-64 characters of a-z, A-Z, 0-9, '_' and '-'",
        )
        .into());
    }
    let expires = seconds(body.expires_in_secs, "expires_in_secs", None)?;
    let existing = inner.store.owner_keys(&t.name).await.map_err(store_error)?;
    let owner_id = body.owner_id.unwrap_or_else(|| {
        existing
            .first()
            .map_or_else(|| format!("own_{}", t.name), |(_, k)| k.owner_id.clone())
    });
    let expires_at = expires.map(|s| Inner::now_ms() + (s as i64) * 1000);
    let (key, record) = mint(&inner, &t.name, owner_id, body.agent_limit, expires_at).await?;
    audit(
        &inner,
        &caller,
        "owner_key.issue",
        &t.name,
        Some(json!({ "key_id": record.id, "prefix": record.prefix })),
    )
    .await?;
    let mut out = view(&record);
    out["key"] = json!(key);
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

#[utoipa::path(get, path = "/admin/v1/tenants/{name}/owner-keys", tag = "owner keys", operation_id = "list_owner_keys",
    params(super::openapi::TenantName),
    security(("operator_token" = ["read"])),
    responses((status = 200, description = "The tenant's owner keys (never the keys themselves)", body = super::openapi::OwnerKeyListDoc), (status = 404)))]
pub(super) async fn list(
    State(inner): State<Arc<Inner>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let t = load(&inner, &name).await?;
    let keys = inner.store.owner_keys(&t.name).await.map_err(store_error)?;
    Ok(axum::Json(json!({
        "owner_keys": keys.iter().map(|(_, k)| view(k)).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// The tenant's key with public id `id` (another tenant's is as absent as an unknown one).
async fn find(inner: &Inner, tenant: &str, id: &str) -> ApiResult<(String, OwnerKey)> {
    inner
        .store
        .owner_keys(tenant)
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|(_, k)| k.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no owner key '{id}' in this tenant")).into())
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[schema(as = OwnerKeyRotate)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateBody {
    /// How long the old key keeps working, in seconds (default one day, at most 90 days).
    #[schema(minimum = 1, maximum = 7776000)]
    overlap_secs: Option<u64>,
}

#[utoipa::path(post, path = "/admin/v1/tenants/{name}/owner-keys/{id}/rotate", tag = "owner keys", operation_id = "rotate_owner_key",
    description = "Issues a new key for the same owner; the old one keeps working for the overlap. The body is optional.",
    params(super::openapi::OwnerKeyPath),
    request_body = Option<RotateBody>,
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 201, description = "The new key (shown once) and the old one as it is now", body = super::openapi::OwnerKeyRotatedDoc),
        (status = 400, description = "Error: `invalid_field` (the key is revoked or expired, or a bad field)"), (status = 404)))]
pub(super) async fn rotate(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, id)): ApiPath<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let body: RotateBody = super::optional_json(&body)?;
    let overlap = seconds(body.overlap_secs, "overlap_secs", Some(24 * 3600))?.unwrap_or(0);
    let t = load(&inner, &name).await?;
    let (hash_hex, mut old) = find(&inner, &t.name, &id).await?;
    let now = Inner::now_ms();
    if !old.valid_at(now) {
        return Err(ApiError::invalid("id", "this owner key is revoked or expired").into());
    }
    let (key, record) = mint(&inner, &t.name, old.owner_id.clone(), old.agent_limit, None).await?;
    let until = now + (overlap as i64) * 1000;
    old.expires_at = Some(old.expires_at.map_or(until, |e| e.min(until)));
    old.replaced_by = Some(record.id.clone());
    inner
        .store
        .update_owner_key(&hash_hex, &old)
        .await
        .map_err(store_error)?;
    audit(
        &inner,
        &caller,
        "owner_key.rotate",
        &t.name,
        Some(json!({ "old_key_id": old.id, "new_key_id": record.id, "overlap_secs": overlap })),
    )
    .await?;
    let mut out = view(&record);
    out["key"] = json!(key);
    out["previous"] = view(&old);
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

#[utoipa::path(post, path = "/admin/v1/tenants/{name}/owner-keys/{id}/revoke", tag = "owner keys", operation_id = "revoke_owner_key",
    description = "Revokes the key (idempotent).",
    params(super::openapi::OwnerKeyPath),
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 200, description = "The key, revoked", body = super::openapi::OwnerKeyDoc), (status = 404)))]
pub(super) async fn revoke(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let t = load(&inner, &name).await?;
    let (hash_hex, mut k) = find(&inner, &t.name, &id).await?;
    if k.revoked_at.is_none() {
        k.revoked_at = Some(Inner::now_ms());
        inner
            .store
            .update_owner_key(&hash_hex, &k)
            .await
            .map_err(store_error)?;
        audit(
            &inner,
            &caller,
            "owner_key.revoke",
            &t.name,
            Some(json!({ "key_id": k.id })),
        )
        .await?;
    }
    Ok(axum::Json(view(&k)).into_response())
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[schema(as = InviteCreate)]
#[serde(deny_unknown_fields)]
pub(super) struct InviteBody {
    /// Valid for, in seconds (default 7 days, at most 90 days).
    #[schema(minimum = 1, maximum = 7776000)]
    expires_in_secs: Option<u64>,
}

#[utoipa::path(post, path = "/admin/v1/tenants/{name}/invites", tag = "owner keys", operation_id = "create_invite",
    description = "A single-use invite code (`amp_inv_…`) for registration in an `invite` tenant. The code is in this answer only. The body is optional.",
    params(super::openapi::TenantName),
    request_body = Option<InviteBody>,
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 201, description = "Created", body = super::openapi::InviteDoc), (status = 404)))]
pub(super) async fn invite(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let body: InviteBody = super::optional_json(&body)?;
    let secs = seconds(body.expires_in_secs, "expires_in_secs", Some(7 * 24 * 3600))?.unwrap_or(0);
    let t = load(&inner, &name).await?;
    let code = new_secret(INVITE_PREFIX);
    let now = Inner::now_ms();
    let invite = Invite {
        id: new_id("inv_"),
        tenant: t.name.clone(),
        created_at: now,
        expires_at: now + (secs as i64) * 1000,
        created_by: caller.id.clone(),
    };
    inner
        .store
        .put_invite(&hash_key(&inner.identity.key_pepper, &code), &invite)
        .await
        .map_err(store_error)?;
    audit(
        &inner,
        &caller,
        "invite.create",
        &t.name,
        Some(json!({ "invite_id": invite.id })),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "id": invite.id,
            "tenant": invite.tenant,
            "code": code,
            "expires_at": rfc3339(invite.expires_at),
        })),
    )
        .into_response())
}
