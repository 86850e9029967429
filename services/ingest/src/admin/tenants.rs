//! Tenants: create, list (paged), get, update, suspend, resume (deletion: `deletion`).

use std::sync::Arc;

use amp_proto::{ApiError, ErrorCode};
use amp_runtime::{ApiJson, ApiPath, ApiQuery, ApiResult};
use amp_store::operator::{
    Operator as _, PlanLimits, TenantRecord, TenantRegistration, TenantStatus,
};
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, Page, audit, rfc3339, tenant_name};
use crate::routes::store_error;
use crate::state::Inner;

/// A tenant as the admin API shows it.
pub(crate) fn view(inner: &Inner, t: &TenantRecord) -> Value {
    json!({
        "name": t.name,
        "status": t.status,
        "registration": t.registration,
        "suspended_reason": t.suspended_reason,
        // Its own limits, and those in force (over the configuration's default plan).
        "plan": t.plan,
        "limits": inner.acceptor.quotas().resolve(Some(&t.plan)),
        "notify": t.notify.as_ref().map(super::notify::view),
        "created_at": rfc3339(t.created_at),
        "updated_at": rfc3339(t.updated_at),
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = TenantCreate)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    /// The tenant's label: 1-63 characters of a-z, 0-9 and `-` (required).
    #[schema(required = true, nullable = false, pattern = "^[A-Za-z0-9-]{1,63}$")]
    name: Option<String>,
    /// Who may register agents (default `owner_key`).
    #[schema(value_type = Option<super::openapi::RegistrationDoc>)]
    registration: Option<TenantRegistration>,
    /// Its own limits (default: none, the default plan's).
    #[schema(value_type = Option<super::openapi::PlanDoc>)]
    #[serde(default, deserialize_with = "plan_object")]
    plan: Option<PlanLimits>,
}

#[utoipa::path(post, path = "/admin/v1/tenants", tag = "tenants", operation_id = "create_tenant",
    request_body = CreateBody,
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 201, description = "Created", body = super::openapi::TenantDoc),
        (status = 409, description = "Error: `name_taken` (the tenant exists)")))]
pub(super) async fn create(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<Response> {
    let Some(raw) = body.name.as_deref() else {
        return Err(ApiError::missing("name").into());
    };
    let name = tenant_name(raw, "name")?;
    if inner.config.registration.is_reserved_tenant(&name) {
        return Err(ApiError::invalid("name", format!("tenant '{name}' is reserved")).into());
    }
    let now = Inner::now_ms();
    let tenant = TenantRecord {
        name: name.clone(),
        status: TenantStatus::Active,
        registration: body.registration.unwrap_or(TenantRegistration::OwnerKey),
        suspended_reason: None,
        notify: None,
        plan: body.plan.unwrap_or_default(),
        created_at: now,
        updated_at: now,
    };
    if !inner
        .store
        .create_tenant(&tenant)
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::new(
            ErrorCode::NameTaken,
            format!("tenant '{name}' already exists"),
        )
        .with_field("name")
        .into());
    }
    inner.acceptor.tenants().forget(&name);
    audit(
        &inner,
        &caller,
        "tenant.create",
        &name,
        Some(json!({ "registration": tenant.registration, "plan": tenant.plan })),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(view(&inner, &tenant))).into_response())
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// The previous page's `next_cursor`.
    after: Option<String>,
    /// Tenants per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// Only tenants in this status.
    #[param(value_type = Option<super::openapi::TenantStatusDoc>)]
    status: Option<TenantStatus>,
}

#[utoipa::path(get, path = "/admin/v1/tenants", tag = "tenants", operation_id = "list_tenants",
    params(ListQuery),
    security(("operator_token" = ["read"])),
    responses((status = 200, description = "A page of tenants, by name", body = super::openapi::TenantListDoc)))]
pub(super) async fn list(
    State(inner): State<Arc<Inner>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let limit = Page {
        after: None,
        limit: q.limit,
    }
    .limit()?;
    // A status filter reads on past the tenants it skips, a batch at a time.
    const BATCH: usize = 500;
    let mut out: Vec<TenantRecord> = Vec::new();
    let mut after = q.after;
    'scan: loop {
        let rows = inner
            .store
            .list_tenants(after.as_deref(), BATCH)
            .await
            .map_err(store_error)?;
        let n = rows.len();
        for t in rows {
            after = Some(t.name.clone());
            if q.status.is_none_or(|s| s == t.status) {
                out.push(t);
                if out.len() > limit {
                    break 'scan;
                }
            }
        }
        if n < BATCH {
            break;
        }
    }
    let more = out.len() > limit;
    out.truncate(limit);
    let next = if more {
        out.last().map(|t| t.name.clone())
    } else {
        None
    };
    Ok(axum::Json(json!({
        "tenants": out.iter().map(|t| view(&inner, t)).collect::<Vec<_>>(),
        "next_cursor": next,
    }))
    .into_response())
}

/// The tenant named in the path, or 404; 409 when it is being deleted (nothing changes it
/// from then on).
pub(super) async fn load_for_change(inner: &Inner, raw: &str) -> ApiResult<TenantRecord> {
    let t = load(inner, raw).await?;
    if t.status == TenantStatus::Deleting {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("tenant '{}' is being deleted", t.name),
        )
        .into());
    }
    Ok(t)
}

/// The tenant named in the path, or 404.
pub(super) async fn load(inner: &Inner, raw: &str) -> ApiResult<TenantRecord> {
    let name = tenant_name(raw, "name")?;
    inner
        .store
        .tenant(&name)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("no tenant '{name}'")).into())
}

#[utoipa::path(get, path = "/admin/v1/tenants/{name}", tag = "tenants", operation_id = "get_tenant",
    params(super::openapi::TenantName),
    security(("operator_token" = ["read"])),
    responses((status = 200, description = "The tenant", body = super::openapi::TenantDoc), (status = 404)))]
pub(super) async fn get(
    State(inner): State<Arc<Inner>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let t = load(&inner, &name).await?;
    Ok(axum::Json(view(&inner, &t)).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = TenantUpdate, min_properties = 1)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateBody {
    /// Who may register agents.
    #[schema(value_type = Option<super::openapi::RegistrationDoc>)]
    registration: Option<TenantRegistration>,
    /// Replaces the tenant's own limits whole (`{}`: the default plan's, all of them).
    #[schema(value_type = Option<super::openapi::PlanDoc>)]
    #[serde(default, deserialize_with = "plan_object")]
    plan: Option<PlanLimits>,
}

/// A plan, only from a JSON object: serde's derive also reads a struct from an array
/// (`[null, null]` would be the empty plan), which the document does not allow.
fn plan_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PlanLimits>, D::Error> {
    use serde::de::Error as _;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => serde_json::from_value(v)
            .map(Some)
            .map_err(D::Error::custom),
        Some(_) => Err(D::Error::custom("plan must be a JSON object")),
    }
}

#[utoipa::path(patch, path = "/admin/v1/tenants/{name}", tag = "tenants", operation_id = "update_tenant",
    description = "Changes the registration mode or the plan (at least one of them, not null; `null` is absent).",
    params(super::openapi::TenantName),
    request_body = UpdateBody,
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 200, description = "The tenant as changed", body = super::openapi::TenantDoc),
        (status = 404), (status = 409, description = "Error: `conflict` (the tenant is being deleted)")))]
pub(super) async fn update(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> ApiResult<Response> {
    let mut t = load_for_change(&inner, &name).await?;
    if body.registration.is_none() && body.plan.is_none() {
        return Err(ApiError::missing("registration").into());
    }
    let mut details = serde_json::Map::new();
    if let Some(registration) = body.registration {
        t.registration = registration;
        details.insert("registration".into(), json!(registration));
    }
    if let Some(plan) = body.plan {
        t.plan = plan;
        details.insert("plan".into(), json!(plan));
    }
    t.updated_at = Inner::now_ms();
    save(&inner, &t).await?;
    audit(
        &inner,
        &caller,
        "tenant.update",
        &t.name,
        Some(Value::Object(details)),
    )
    .await?;
    Ok(axum::Json(view(&inner, &t)).into_response())
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[schema(as = TenantSuspend)]
#[serde(deny_unknown_fields)]
pub(super) struct SuspendBody {
    /// Why, shown on the tenant (at most 500 characters).
    #[schema(max_length = 500)]
    reason: Option<String>,
}

#[utoipa::path(post, path = "/admin/v1/tenants/{name}/suspend", tag = "tenants", operation_id = "suspend_tenant",
    description = "Refuses the tenant's agents' requests and routes, closes their sockets. The body is optional.",
    params(super::openapi::TenantName),
    request_body = Option<SuspendBody>,
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 200, description = "The tenant, suspended", body = super::openapi::TenantDoc),
        (status = 404), (status = 409, description = "Error: `conflict` (the tenant is being deleted)")))]
pub(super) async fn suspend(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let body: SuspendBody = super::optional_json(&body)?;
    let reason = body.reason;
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::invalid("reason", "reason must be at most 500 characters").into());
    }
    let mut t = load_for_change(&inner, &name).await?;
    t.status = TenantStatus::Suspended;
    t.suspended_reason = reason.clone();
    t.updated_at = Inner::now_ms();
    save(&inner, &t).await?;
    audit(
        &inner,
        &caller,
        "tenant.suspend",
        &t.name,
        reason.map(|r| json!({ "reason": r })),
    )
    .await?;
    tracing::warn!(tenant = %t.name, actor = %caller.id, "tenant suspended");
    Ok(axum::Json(view(&inner, &t)).into_response())
}

#[utoipa::path(post, path = "/admin/v1/tenants/{name}/resume", tag = "tenants", operation_id = "resume_tenant",
    params(super::openapi::TenantName),
    security(("operator_token" = ["tenant_admin"])),
    responses((status = 200, description = "The tenant, active", body = super::openapi::TenantDoc),
        (status = 404), (status = 409, description = "Error: `conflict` (the tenant is being deleted)")))]
pub(super) async fn resume(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let mut t = load_for_change(&inner, &name).await?;
    t.status = TenantStatus::Active;
    t.suspended_reason = None;
    t.updated_at = Inner::now_ms();
    save(&inner, &t).await?;
    audit(&inner, &caller, "tenant.resume", &t.name, None).await?;
    tracing::info!(tenant = %t.name, actor = %caller.id, "tenant resumed");
    Ok(axum::Json(view(&inner, &t)).into_response())
}

pub(super) async fn save(inner: &Inner, t: &TenantRecord) -> ApiResult<()> {
    inner.store.put_tenant(t).await.map_err(store_error)?;
    // This process sees it at once; the others within the gate's TTL.
    inner.acceptor.tenants().forget(&t.name);
    Ok(())
}
