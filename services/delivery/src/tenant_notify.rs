//! Tenant notifications (spec-next 07 "Risk Scoring": "notify tenant admins when an
//! agent's risk level changes"; `high`'s "temporary suspension, notify admin").
//!
//! The router (risk levels, automatic suspensions) and ingest (the admin API's test event)
//! schedule a durable `tenant_notify` job per event ([`TenantNotifyJob`],
//! [`amp_messaging::tenant_notify`]); this worker POSTs its body to the tenant's
//! notification webhook, read from the tenant's record at each attempt (a webhook removed
//! in between ends the job; one changed is used), through the same outbound guard,
//! timeouts and retry schedule as agents' webhooks, signed with the tenant's secret
//! (`X-AMP-Signature` / `X-AMP-Timestamp`), with `X-AMP-Event`, `X-AMP-Event-Id` and
//! `X-AMP-Delivery-Attempt`. 2xx ends the job; a 4xx or a refused URL gives up; 5xx and
//! timeouts are retried. The audit log holds every event whether or not it was told.

use std::sync::Arc;

use amp_proto::relay::TenantNotifyJob;
use amp_store::operator::Operator as _;
use bytes::Bytes;

use crate::Inner;
use crate::webhook::{Attempt, post_signed, run_due_jobs, run_notice};

/// Runs due tenant notification jobs until shutdown, at most the webhook `concurrency` at
/// once.
pub(crate) async fn run(inner: Arc<Inner>) {
    run_due_jobs(inner, TenantNotifyJob::KIND, |inner, job| async move {
        run_notice::<TenantNotifyJob>(
            &inner,
            job,
            "amp_tenant_notify_attempts_total",
            "tenant notification",
            attempt,
        )
        .await;
    })
    .await;
}

async fn attempt(inner: &Inner, data: &TenantNotifyJob, attempt_no: u32) -> Attempt {
    let notify = match inner.store.tenant(&data.tenant).await {
        Ok(Some(t)) => match t.notify {
            Some(n) => n,
            None => return Attempt::Moot,
        },
        Ok(None) => return Attempt::Moot,
        Err(e) => return Attempt::Failed(format!("store: {e}")),
    };
    post_signed(
        inner,
        &notify.url,
        Some(&notify.secret),
        &[
            ("x-amp-event", data.event.clone()),
            ("x-amp-event-id", data.event_id.clone()),
            ("x-amp-delivery-attempt", attempt_no.to_string()),
        ],
        Bytes::from(data.body.clone()),
    )
    .await
}
