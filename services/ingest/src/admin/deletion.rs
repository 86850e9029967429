//! Tenant deletion: `DELETE /admin/v1/tenants/{name}` suspends the tenant at once (marked
//! `deleting`: its routes are refused and its sockets closed, as for a suspension) and
//! starts the purge ([`amp_store::deletion`]) in the background; `GET
//! /admin/v1/tenants/{name}/deletion` tells how far it got.
//!
//! The purge's state is a record in the store, so a process that stops mid-way loses
//! nothing: every start resumes unfinished deletions ([`resume_unfinished`]). Any replica
//! may run one (each resumes at its start); the steps are idempotent, so two runs of the
//! same deletion converge.

use std::sync::Arc;
use std::time::Duration;

use amp_proto::{ApiError, ErrorCode};
use amp_runtime::{ApiPath, ApiResult};
use amp_store::deletion::{self, DeletionStatus, TenantDeletion};
use amp_store::operator::TenantStatus;
use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Caller, audit, new_id, rfc3339, tenants};
use crate::routes::store_error;
use crate::state::Inner;

/// The job kinds a tenant's deletion looks through (webhook and scan callback jobs name
/// their agent, federation and notification jobs their tenant): removed with the tenant.
const AGENT_JOB_KINDS: &[&str] = &[
    amp_proto::relay::WebhookJob::KIND,
    amp_proto::relay::FEDERATION_JOB_KIND,
    amp_proto::relay::ScanCallbackJob::KIND,
    amp_proto::relay::TenantNotifyJob::KIND,
];
/// Attempts of a run that fails on the store before the deletion is marked `failed`.
const ATTEMPTS: u32 = 5;

/// A deletion as the admin API shows it.
fn view(d: &TenantDeletion) -> Value {
    json!({
        "id": d.id,
        "tenant": d.tenant,
        "status": d.status,
        "requested_by": d.requested_by,
        "requested_at": rfc3339(d.requested_at),
        "started_at": d.started_at.and_then(rfc3339),
        "finished_at": d.finished_at.and_then(rfc3339),
        "purged": d.purged,
        "error": d.error,
    })
}

fn location(tenant: &str) -> String {
    format!("/admin/v1/tenants/{tenant}/deletion")
}

#[utoipa::path(delete, path = "/admin/v1/tenants/{name}", tag = "tenants", operation_id = "delete_tenant",
    description = "Marks the tenant `deleting` (refused from now on) and purges it in the background; asked again after a failure, resumes it.",
    params(super::openapi::TenantName),
    security(("operator_token" = ["full"])),
    responses((status = 202, description = "The deletion, started", body = super::openapi::DeletionDoc,
            headers(("Location" = String, description = "Its status: `/admin/v1/tenants/{name}/deletion`"))),
        (status = 403, description = "Error: `forbidden` (a reserved tenant, or the token's scope)"),
        (status = 404), (status = 409, description = "Error: `conflict` (already being deleted)")))]
pub(super) async fn delete(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let name = super::tenant_name(&name, "name")?;
    if inner.config.registration.is_reserved_tenant(&name) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("tenant '{name}' belongs to the provider and cannot be deleted"),
        )
        .into());
    }
    let mut t = tenants::load(&inner, &name).await?;
    let previous = deletion::get(&inner.store, &name)
        .await
        .map_err(store_error)?;
    if t.status == TenantStatus::Deleting
        && previous.as_ref().is_some_and(|d| d.status.unfinished())
    {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("tenant '{name}' is already being deleted"),
        )
        .into());
    }
    let now = Inner::now_ms();
    // A failed deletion asked again resumes, keeping its counts.
    let d = match previous {
        Some(d) if t.status == TenantStatus::Deleting && d.status == DeletionStatus::Failed => {
            TenantDeletion {
                status: DeletionStatus::Pending,
                requested_by: caller.id.clone(),
                requested_at: now,
                ..d
            }
        }
        _ => TenantDeletion {
            id: new_id("del_"),
            tenant: name.clone(),
            status: DeletionStatus::Pending,
            requested_by: caller.id.clone(),
            requested_at: now,
            started_at: None,
            finished_at: None,
            purged: Default::default(),
            error: None,
        },
    };
    // The tenant's mark first (nothing new gets in from here), then the job's record: a
    // crash between leaves a refused tenant with no job, which asking again starts. (A job
    // resumed at start marks its tenant itself.)
    t.status = TenantStatus::Deleting;
    t.updated_at = now;
    tenants::save(&inner, &t).await?;
    deletion::save(&inner.store, &d)
        .await
        .map_err(store_error)?;
    audit(
        &inner,
        &caller,
        "tenant.delete",
        &name,
        Some(json!({ "deletion": d.id })),
    )
    .await?;
    tracing::warn!(tenant = %name, actor = %caller.id, deletion = %d.id, "tenant deletion started");
    spawn(inner.clone(), d.clone());
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location(&name))],
        axum::Json(view(&d)),
    )
        .into_response())
}

#[utoipa::path(get, path = "/admin/v1/tenants/{name}/deletion", tag = "tenants", operation_id = "tenant_deletion",
    params(super::openapi::TenantName),
    security(("operator_token" = ["read"])),
    responses((status = 200, description = "How far the deletion got", body = super::openapi::DeletionDoc), (status = 404)))]
pub(super) async fn status(
    State(inner): State<Arc<Inner>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let name = super::tenant_name(&name, "name")?;
    match deletion::get(&inner.store, &name)
        .await
        .map_err(store_error)?
    {
        Some(d) => Ok(axum::Json(view(&d)).into_response()),
        None => Err(ApiError::not_found(format!("tenant '{name}' has no deletion")).into()),
    }
}

/// Runs a deletion in the background: retried on store errors with a growing pause, then
/// marked `failed` (asking again resumes it).
pub(crate) fn spawn(inner: Arc<Inner>, d: TenantDeletion) {
    tokio::spawn(async move {
        // Let every replica's tenant gate see the mark first, so nothing new is accepted for
        // the tenant while its agents are purged.
        tokio::time::sleep(amp_messaging::TenantGate::TTL * 2).await;
        let mut pause = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            // From the last saved step (its counts), when it can be read.
            let current = deletion::get(&inner.store, &d.tenant)
                .await
                .ok()
                .flatten()
                .filter(|x| x.id == d.id)
                .unwrap_or_else(|| d.clone());
            // The tenant's agents are gone from the store: every replica's registry cache
            // drops what it still holds about them (and their sockets re-check) before the
            // deletion reads `done`.
            // This process forgets what it counted of the tenant's held bytes before the
            // deletion removes every process's ledger of them (`stored_bytes`).
            let purged = || async {
                amp_messaging::events::registry_changed(
                    &inner.bus,
                    inner.acceptor.registry(),
                    "*",
                    amp_messaging::events::ChangeKind::Purged,
                )
                .await;
                inner.acceptor.meter().forget_held(&d.tenant).await;
            };
            match deletion::run_with(
                &inner.store,
                current,
                AGENT_JOB_KINDS,
                Inner::now_ms,
                purged,
            )
            .await
            {
                Ok(done) => {
                    inner.acceptor.tenants().forget(&done.tenant);
                    tracing::warn!(
                        tenant = %done.tenant, deletion = %done.id, agents = done.purged.agents,
                        messages = done.purged.messages, "tenant deleted"
                    );
                    return;
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(tenant = %d.tenant, deletion = %d.id, attempt, error = %e, "tenant deletion interrupted, retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    tracing::error!(tenant = %d.tenant, deletion = %d.id, error = %e, "tenant deletion failed");
                    // Keep the counts of the last saved step.
                    let mut failed = deletion::get(&inner.store, &d.tenant)
                        .await
                        .ok()
                        .flatten()
                        .filter(|x| x.id == d.id)
                        .unwrap_or(d);
                    failed.status = DeletionStatus::Failed;
                    failed.finished_at = Some(Inner::now_ms());
                    failed.error = Some(e.to_string());
                    if let Err(e) = deletion::save(&inner.store, &failed).await {
                        tracing::error!(tenant = %failed.tenant, error = %e, "cannot record a failed deletion");
                    }
                    return;
                }
            }
        }
    });
}

/// Starts every deletion a previous process left unfinished.
///
/// Fails when the store cannot be read.
pub(crate) async fn resume_unfinished(inner: &Arc<Inner>) -> amp_store::Result<()> {
    for d in deletion::unfinished(&inner.store).await? {
        tracing::warn!(tenant = %d.tenant, deletion = %d.id, "resuming a tenant deletion");
        spawn(inner.clone(), d);
    }
    Ok(())
}
