//! Scan callbacks (spec-next 08 "Scan Notification Alternatives").
//!
//! An uploader that gave a `scan_callback_url` is told when its attachment's scan ends:
//! where the scan ran (ingest, or `ampd`) schedules a durable `scan_callback` job
//! ([`amp_proto::relay::ScanCallbackJob`]), and this worker POSTs
//! `{"attachment_id": …, "scan_status": …}` to the URL, through the same outbound guard,
//! timeouts and retry schedule as webhooks, with `X-AMP-Signature` / `X-AMP-Timestamp`
//! made with the uploader's webhook secret when it has one (the spec's "if configured"),
//! and `X-AMP-Attachment-Id`. 2xx ends the job; a 4xx or a refused URL gives up; 5xx and
//! timeouts are retried. The agent is re-read before each attempt: a deregistered agent's
//! callbacks stop. Polling the status stays the way to know (callbacks are optional).

use std::sync::Arc;

use amp_proto::relay::ScanCallbackJob;
use bytes::Bytes;

use crate::Inner;
use crate::webhook::{Attempt, post_signed, run_due_jobs, run_notice};

/// Runs due scan callback jobs until shutdown, at most the webhook `concurrency` at once.
pub(crate) async fn run(inner: Arc<Inner>) {
    run_due_jobs(inner, ScanCallbackJob::KIND, |inner, job| async move {
        run_notice::<ScanCallbackJob>(
            &inner,
            job,
            "amp_scan_callbacks_total",
            "scan callback",
            attempt,
        )
        .await;
    })
    .await;
}

/// The callback's body.
fn body(data: &ScanCallbackJob) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "attachment_id": data.attachment_id,
            "scan_status": data.scan_status,
        })
        .to_string(),
    )
}

async fn attempt(inner: &Inner, data: &ScanCallbackJob, attempt_no: u32) -> Attempt {
    let agent = match inner.store.agent(&data.agent_id).await {
        Ok(Some(a)) if a.is_active() => a,
        Ok(_) => return Attempt::Moot,
        Err(e) => return Attempt::Failed(format!("store: {e}")),
    };
    post_signed(
        inner,
        &data.url,
        agent.delivery.webhook_secret.as_deref(),
        &[
            ("x-amp-attachment-id", data.attachment_id.clone()),
            ("x-amp-delivery-attempt", attempt_no.to_string()),
        ],
        body(data),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_specs() {
        let data = ScanCallbackJob {
            agent_id: "agt".into(),
            attachment_id: "att_1_ab".into(),
            scan_status: "clean".into(),
            url: "https://example.com/cb".into(),
        };
        let v: serde_json::Value = serde_json::from_slice(&body(&data)).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"attachment_id": "att_1_ab", "scan_status": "clean"})
        );
    }
}
