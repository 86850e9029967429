//! Webhook delivery (spec 05, 07, 12.5; SPEC-CHECKLIST §4.17).
//!
//! The router schedules a durable job when it writes a message for an agent with a webhook;
//! this worker runs due jobs: it re-reads the agent and the mailbox before every attempt
//! (stopping when the message was acknowledged or expired, or when the agent prefers its open
//! WebSocket), POSTs `{envelope, payload, local}` (`local.security` as in a pickup item) with `X-AMP-Signature: sha256=<hex HMAC-SHA256(
//! secret, "{timestamp}.{body}")>`, `X-AMP-Timestamp`, `X-AMP-Message-Id` and
//! `X-AMP-Delivery-Attempt`, and on 5xx, timeouts or refused connections tries again on the
//! configured schedule. 2xx → `webhook_2xx`; 4xx → no retry. Whatever happens, the message
//! stays in the mailbox until acknowledged (spec 12.4). Jobs live in the store, so retries
//! survive a restart.
//!
//! Outbound safety: the URL must pass the SSRF guard, every resolved address is checked, the
//! request goes to the checked address only (no second DNS answer can redirect it), no
//! redirects are followed, connect and total timeouts apply, and at most
//! `max_response_bytes` of the answer are read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amp_messaging::events::{self, Pushed};
use amp_proto::Timestamp;
use amp_proto::relay::StoredMessage;
use amp_runtime::outbound;
use amp_runtime::slots::KeyedSlots;
use amp_store::{AgentRecord, EntryState, Job};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::Inner;

/// The job kind the router schedules ([`amp_proto::relay::WebhookJob`]).
pub const KIND: &str = amp_proto::relay::WebhookJob::KIND;

/// How a single attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx.
    Delivered,
    /// A 4xx, or a target the guard refuses: retrying will not help.
    Rejected(String),
    /// 5xx, timeout, connection refused: try again later.
    Failed(String),
    /// Nothing to do any more (acknowledged, expired, webhook removed, WebSocket preferred).
    Moot,
    /// The agent's tenant already has `per_tenant_concurrency` attempts in flight: not an
    /// attempt, the job comes due again shortly.
    Busy,
}

/// How long a job of a tenant at its concurrency bound waits before it is looked at again.
const BUSY_DEFER_MS: i64 = 1_000;

/// `sha256=<lowercase hex HMAC-SHA256(secret, "{timestamp}.{body}")>` (spec 05/07).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    #[allow(clippy::expect_used)]
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC-SHA-256 accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Runs due webhook jobs until shutdown: at most `concurrency` at once, of which at most
/// `per_tenant_concurrency` for one tenant, so a tenant whose endpoints answer slowly (or
/// never, until the timeout) cannot hold every slot and stall everyone else's webhooks.
pub(crate) async fn run(inner: Arc<Inner>) {
    let tenants = KeyedSlots::new(inner.config.webhook.per_tenant_concurrency);
    run_due_jobs(inner, KIND, move |inner, job| {
        let tenants = tenants.clone();
        async move { run_job(&inner, &tenants, job).await }
    })
    .await;
}

/// Polls the store for due jobs of `kind` every `poll_interval_ms` until shutdown and runs
/// each with `run` (at most the webhook `concurrency` at once), after leasing it for the
/// webhook timeout and 5 s more. Shared by the webhook, scan callback and tenant
/// notification workers.
pub(crate) async fn run_due_jobs<F, Fut>(inner: Arc<Inner>, kind: &'static str, run: F)
where
    F: Fn(Arc<Inner>, Job) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let cfg = &inner.config.webhook;
    let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let poll = Duration::from_millis(cfg.poll_interval_ms.max(10));
    loop {
        tokio::select! {
            () = inner.shutdown.wait() => return,
            () = tokio::time::sleep(poll) => {}
        }
        let now = Timestamp::now().unix_millis();
        let jobs = match inner.store.due_jobs(kind, now, 256).await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, kind, "cannot read due jobs");
                continue;
            }
        };
        let lease = inner.config.webhook.timeout_ms as i64 + 5_000;
        for job in jobs {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let store = inner.store.clone();
            let attempt = run(inner.clone(), job.clone());
            tokio::spawn(async move {
                // Lease the job first: a later poll (or another replica) must not start it
                // again while this attempt runs; losing the claim means another task or
                // replica has it. Claimed in the task, so the claims of a poll share commits.
                if matches!(store.claim(&job, now + lease).await, Ok(true)) {
                    attempt.await;
                }
                drop(permit);
            });
        }
    }
}

async fn run_job(inner: &Inner, tenants: &Arc<KeyedSlots>, job: Job) {
    let Ok(data) = serde_json::from_str::<amp_proto::relay::WebhookJob>(&job.data) else {
        let _ = inner.store.complete(&job.id).await;
        return;
    };
    let attempt_no = job.attempt + 1;
    let span = tracing::debug_span!(
        target: amp_runtime::telemetry::TRACE_TARGET,
        "amp.delivery.webhook",
        otel.kind = "client",
        message.id = %data.message_id,
        attempt = attempt_no,
    );
    let trace = [
        (amp_runtime::telemetry::TRACEPARENT, &data.traceparent),
        (amp_runtime::telemetry::TRACESTATE, &data.tracestate),
    ];
    amp_runtime::telemetry::set_parent(
        &span,
        trace
            .iter()
            .filter_map(|(name, value)| Some((*name, value.as_deref()?))),
    );
    let outcome = tracing::Instrument::instrument(
        attempt(inner, tenants, &data.agent_id, &data.message_id, attempt_no),
        span,
    )
    .await;
    let delays = &inner.config.webhook.retry_delays_ms;
    match &outcome {
        Attempt::Busy => {
            // Not an attempt: the same one again, after the tenant's others.
            let later = Job {
                due_at: Timestamp::now().unix_millis() + BUSY_DEFER_MS,
                ..job
            };
            if let Err(e) = inner.store.schedule(later).await {
                tracing::warn!(error = %e, "webhook job not deferred; the message stays in the mailbox");
            }
            return;
        }
        Attempt::Failed(why) if (attempt_no as usize) < delays.len() => {
            tracing::info!(agent = %data.agent_id, id = %data.message_id, attempt = attempt_no, reason = %why, "webhook attempt failed, will retry");
            retry_later(
                inner,
                job,
                attempt_no,
                "webhook retry not scheduled; the message stays in the mailbox",
            )
            .await;
            return;
        }
        Attempt::Failed(why) | Attempt::Rejected(why) => {
            tracing::info!(agent = %data.agent_id, id = %data.message_id, attempt = attempt_no, reason = %why, "webhook delivery given up; the message stays in the mailbox");
            metrics::counter!("amp_webhook_given_up_total").increment(1);
        }
        Attempt::Delivered | Attempt::Moot => {}
    }
    let _ = inner.store.complete(&job.id).await;
}

/// Schedules attempt `attempt_no + 1` of `job` after the webhook schedule's delay for it
/// (the caller checked there is one); `unscheduled` is logged if the store refuses.
pub(crate) async fn retry_later(inner: &Inner, job: Job, attempt_no: u32, unscheduled: &str) {
    let delays = &inner.config.webhook.retry_delays_ms;
    let delay = delays
        .get(attempt_no as usize)
        .map_or(0, |d| i64::try_from(*d).unwrap_or(i64::MAX / 2));
    let next = Job {
        due_at: Timestamp::now().unix_millis().saturating_add(delay),
        attempt: attempt_no,
        ..job
    };
    if let Err(e) = inner.store.schedule(next).await {
        tracing::warn!(error = %e, "{unscheduled}");
    }
}

/// Runs one attempt of a job that POSTs one notice (a scan callback, a tenant
/// notification): its data read as `T` (unreadable data ends the job), `attempt` made with
/// the attempt's number; a failure with attempts left on the webhook schedule is retried,
/// else the job is completed (given up, delivered or moot), counted in `metric` by
/// `result`. `what` names the notice in the logs, with the job's id.
pub(crate) async fn run_notice<T: serde::de::DeserializeOwned>(
    inner: &Inner,
    job: Job,
    metric: &'static str,
    what: &str,
    attempt: impl AsyncFnOnce(&Inner, &T, u32) -> Attempt,
) {
    let Ok(data) = serde_json::from_str::<T>(&job.data) else {
        let _ = inner.store.complete(&job.id).await;
        return;
    };
    let attempt_no = job.attempt + 1;
    let delays = &inner.config.webhook.retry_delays_ms;
    match attempt(inner, &data, attempt_no).await {
        Attempt::Failed(why) if (attempt_no as usize) < delays.len() => {
            tracing::info!(job = %job.id, attempt = attempt_no, reason = %why, "{what} failed, will retry");
            retry_later(
                inner,
                job,
                attempt_no,
                &format!("{what} retry not scheduled"),
            )
            .await;
            return;
        }
        Attempt::Failed(why) | Attempt::Rejected(why) => {
            tracing::info!(job = %job.id, attempt = attempt_no, reason = %why, "{what} given up");
            metrics::counter!(metric, "result" => "given_up").increment(1);
        }
        Attempt::Delivered => {
            metrics::counter!(metric, "result" => "delivered").increment(1);
        }
        Attempt::Moot | Attempt::Busy => {}
    }
    let _ = inner.store.complete(&job.id).await;
}

/// One attempt for one message, re-checking everything first (spec 12.1 rule 2).
async fn attempt(
    inner: &Inner,
    tenants: &Arc<KeyedSlots>,
    agent_id: &str,
    message_id: &str,
    attempt_no: u32,
) -> Attempt {
    let now = Timestamp::now();
    let agent = match inner.store.agent(agent_id).await {
        Ok(Some(a)) if a.is_active() => a,
        Ok(_) => return Attempt::Moot,
        // Fail open on unreadable state (spec 12.1 rule 4): try again later.
        Err(e) => return Attempt::Failed(format!("store: {e}")),
    };
    // A suspended tenant's webhooks stop (spec-next 07: skipped, the message stays in the
    // mailbox for pickup after the tenant is resumed).
    if let Ok(true) = inner.acceptor.tenants().is_suspended(&agent.tenant).await {
        tracing::info!(tenant = %agent.tenant, agent = %agent_id, "webhook skipped: tenant suspended");
        return Attempt::Moot;
    }
    // So does a suspended agent's (the same rule, its own record).
    if let Ok(Some(_)) =
        amp_messaging::suspension::active(inner.acceptor.registry(), agent_id, now.unix_millis())
            .await
    {
        tracing::info!(tenant = %agent.tenant, agent = %agent_id, "webhook skipped: agent suspended");
        return Attempt::Moot;
    }
    let (Some(url), Some(secret)) = (
        agent.delivery.webhook_url.clone(),
        agent.delivery.webhook_secret.clone(),
    ) else {
        return Attempt::Moot;
    };
    if agent.delivery.prefer_websocket
        && inner
            .store
            .presence_count(agent_id, now.unix_millis())
            .await
            .unwrap_or(0)
            > 0
    {
        // Spec 05's order: the open WebSocket has it.
        return Attempt::Moot;
    }
    let entry = match inner
        .store
        .entry(agent_id, message_id, now.unix_millis())
        .await
    {
        Ok(Some(EntryState::Queued(e))) => e,
        Ok(_) => return Attempt::Moot,
        Err(e) => return Attempt::Failed(format!("store: {e}")),
    };
    if entry.expires_at <= now.unix_millis() {
        return Attempt::Moot;
    }
    let Ok(message) = serde_json::from_str::<StoredMessage>(&entry.data) else {
        return Attempt::Rejected("unreadable mailbox entry".into());
    };
    let Ok(envelope) = serde_json::to_string(&message.envelope) else {
        return Attempt::Rejected("unserialisable envelope".into());
    };
    let body = webhook_body(&envelope, &message);
    let Some(_slot) = tenants.try_acquire(&agent.tenant) else {
        metrics::counter!("amp_webhook_tenant_busy_total").increment(1);
        return Attempt::Busy;
    };
    let started = std::time::Instant::now();
    let result = post(
        inner,
        &url,
        &secret,
        message_id,
        attempt_no,
        Bytes::from(body),
    )
    .await;
    // The hop to the agent's endpoint: how long its webhook takes to answer (or time out).
    metrics::histogram!("amp_webhook_attempt_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    let label = match &result {
        Attempt::Delivered => "delivered",
        Attempt::Failed(_) => "failed",
        Attempt::Rejected(_) => "rejected",
        Attempt::Busy | Attempt::Moot => "other",
    };
    metrics::counter!("amp_webhook_attempts_total", "result" => label).increment(1);
    if result == Attempt::Delivered {
        metrics::counter!("amp_webhook_delivered_total").increment(1);
        confirm(inner, &agent, &message).await;
    }
    result
}

/// `{envelope, payload, local}`: the payload byte for byte, and beside it the provider's
/// `local.security` decision (trust, injection flags, the `<external-content>` wrapping), as
/// a pickup item carries it, so an agent receiving by webhook gets external content wrapped
/// too.
fn webhook_body(envelope_json: &str, message: &StoredMessage) -> String {
    let payload = message.payload.get();
    match &message.security {
        Some(security) => format!(
            r#"{{"envelope":{envelope_json},"payload":{payload},"local":{{"security":{}}}}}"#,
            security.get()
        ),
        None => format!(r#"{{"envelope":{envelope_json},"payload":{payload},"local":{{}}}}"#),
    }
}

/// Tells a route answer waiting for it, and the sender if it asked for a receipt.
async fn confirm(inner: &Inner, agent: &AgentRecord, message: &StoredMessage) {
    let pushed = Pushed {
        id: message.envelope.id.to_string(),
        method: "webhook".into(),
        basis: "webhook_2xx".into(),
        at: Timestamp::now().to_rfc3339(),
    };
    if let Ok(body) = serde_json::to_vec(&pushed) {
        let subject = events::delivered_subject(&agent.tenant, &agent.id);
        let _ = inner.bus.notify(&subject, Bytes::from(body)).await;
    }
    if let Err(e) = events::delivered_receipt(
        &inner.store,
        &inner.bus,
        &inner.identity.domain,
        agent,
        message,
        "webhook",
        "webhook_2xx",
    )
    .await
    {
        tracing::warn!(error = %e, "delivery receipt not retained");
    }
}

async fn post(
    inner: &Inner,
    url_text: &str,
    secret: &str,
    message_id: &str,
    attempt_no: u32,
    body: Bytes,
) -> Attempt {
    post_signed(
        inner,
        url_text,
        Some(secret),
        &[
            ("x-amp-message-id", message_id.to_owned()),
            ("x-amp-delivery-attempt", attempt_no.to_string()),
        ],
        body,
    )
    .await
}

/// POSTs a JSON `body` to `url_text` under the outbound guard (see the module doc), with
/// `X-AMP-Signature` and `X-AMP-Timestamp` when there is a `secret`, and `headers`.
pub(crate) async fn post_signed(
    inner: &Inner,
    url_text: &str,
    secret: Option<&str>,
    headers: &[(&str, String)],
    body: Bytes,
) -> Attempt {
    let policy = inner.config.outbound;
    let url = match outbound::check_url(url_text, policy) {
        Ok(u) => u,
        Err(why) => return Attempt::Rejected(format!("webhook URL refused: {why}")),
    };
    let Some(host) = url.host_str().map(str::to_owned) else {
        return Attempt::Rejected("webhook URL has no host".into());
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let host_for_lookup = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addrs: Vec<SocketAddr> =
        match tokio::net::lookup_host((host_for_lookup.as_str(), port)).await {
            Ok(a) => a.collect(),
            Err(e) => return Attempt::Failed(format!("cannot resolve {host}: {e}")),
        };
    let Some(addr) = addrs
        .into_iter()
        .find(|a| outbound::check_ip(a.ip(), policy).is_ok())
    else {
        return Attempt::Rejected(format!("{host} resolves only to internal addresses"));
    };
    let cfg = &inner.config.webhook;
    // Pinned to the checked address: no second resolution can point the request elsewhere.
    // No proxy from the environment either: it would resolve and connect on its own.
    let client = match reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        .timeout(Duration::from_millis(cfg.timeout_ms))
        .resolve(&host_for_lookup, addr)
        .build()
    {
        Ok(c) => c,
        Err(e) => return Attempt::Failed(format!("http client: {e}")),
    };
    let ts = Timestamp::now().unix_secs();
    let mut request = client.post(url).header("content-type", "application/json");
    if let Some(secret) = secret {
        request = request
            .header("x-amp-signature", signature(secret, ts, &body))
            .header("x-amp-timestamp", ts.to_string());
    }
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request.body(body);
    let mut response = match request.send().await {
        Ok(r) => r,
        // Without the URL: it may hold the receiver's secret token, and reasons are logged.
        Err(e) => return Attempt::Failed(format!("request failed: {}", e.without_url())),
    };
    let status = response.status();
    // Read (and discard) at most the configured number of bytes.
    let mut read = 0usize;
    while read < cfg.max_response_bytes {
        match response.chunk().await {
            Ok(Some(c)) => read += c.len(),
            _ => break,
        }
    }
    if status.is_success() {
        Attempt::Delivered
    } else if status.is_client_error() {
        Attempt::Rejected(format!("webhook answered {status}"))
    } else {
        Attempt::Failed(format!("webhook answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_spec_formula() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec_abc", b"1706648400.{\"a\":1}", hashlib.sha256).hexdigest())'
        assert_eq!(
            signature("whsec_abc", 1_706_648_400, br#"{"a":1}"#),
            "sha256=3dd4624098d23675d32b72deec8fe31b20b255edc4ebf0a8d3ec00290cde7db1"
        );
    }
}
