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
        "created_at": rfc3339(t.created_at),
        "updated_at": rfc3339(t.updated_at),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    name: Option<String>,
    registration: Option<TenantRegistration>,
    plan: Option<PlanLimits>,
}

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
    status: Option<TenantStatus>,
}

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
async fn load_for_change(inner: &Inner, raw: &str) -> ApiResult<TenantRecord> {
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

pub(super) async fn get(
    State(inner): State<Arc<Inner>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let t = load(&inner, &name).await?;
    Ok(axum::Json(view(&inner, &t)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateBody {
    registration: Option<TenantRegistration>,
    /// Replaces the tenant's own limits whole (`{}`: the default plan's, all of them).
    plan: Option<PlanLimits>,
}

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct SuspendBody {
    reason: Option<String>,
}

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
