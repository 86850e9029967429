//! Outbound federation: from the `AMP_FEDERATION` stream to durable jobs, and from due jobs
//! to signed `POST <endpoint>/federation/deliver` requests, retried with exponential backoff
//! and jitter until the message expires, and bounced to the sender when it cannot arrive.
//!
//! The stream message is acked as soon as its job is stored: with the in-process bus the
//! router's publish waits for that ack, and a peer that is slow or down must not hold up
//! local routing. The job (the store's durable timer) is the truth from then on.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use amp_bus::{Acceptance, BusMessage, Delivery, StreamName, subjects};
use amp_proto::Timestamp;
use amp_proto::message::limits;
use amp_proto::relay::{Accepted, RouteOutcome, StoredMessage};
use amp_proto::signing::sha256_b64;
use amp_runtime::Shutdown;
use amp_store::Job;
use bytes::Bytes;
use parking_lot::Mutex;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use crate::signature::{PROVIDER_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::{CONSUMER, Inner, JOB_KIND, net, signature};

/// Most due jobs read per scan.
const SCAN_BATCH: usize = 256;

/// What a federation job carries.
#[derive(Serialize, Deserialize)]
struct JobData {
    /// The sending agent's tenant: a tenant's deletion removes its jobs by it
    /// (`amp_store::deletion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    /// The message as the router handed it over.
    accepted: Accepted,
    /// Why the previous attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// The message's W3C trace context from the bus headers, so every attempt continues
    /// its trace (empty when tracing is off).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    trace: Vec<(String, String)>,
}

/// Only the trace context of a stored [`JobData`].
#[derive(Deserialize)]
struct JobTrace {
    #[serde(default)]
    trace: Vec<(String, String)>,
}

/// The result of one delivery attempt.
enum Attempt {
    /// The peer accepted it (2xx).
    Delivered { provider: String },
    /// Try again later (`after`: the peer's `Retry-After`, or our rate limit).
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// It can never arrive: bounce. `peer_text`: the reason quotes the peer's answer, which
    /// goes to the sender's bounce but not into our logs.
    Permanent {
        code: String,
        reason: String,
        peer_text: bool,
    },
    /// The destination already has `per_peer_workers` deliveries in flight: not an attempt,
    /// the job comes due again shortly.
    Busy,
}

/// How long a job to a destination at its concurrency bound waits before it is looked at
/// again.
const BUSY_DEFER_MS: i64 = 1_000;

/// The job id of a message: one job per (sender, id, recipient), so a redelivered stream
/// message replaces its job instead of adding a second.
fn job_id(a: &Accepted) -> String {
    let key = format!(
        "{}\n{}\n{}",
        a.sender_address, a.message.envelope.id, a.recipient_address
    );
    format!("federation:{}", &sha256_b64(key.as_bytes())[..22])
}

/// The tenant of a message's sender (a local agent: only they send through federation).
fn sender_tenant(inner: &Inner, a: &Accepted) -> Option<String> {
    amp_proto::Address::parse_full(&a.sender_address, &inner.identity.domain)
        .ok()
        .map(|a| a.tenant().to_owned())
}

fn now_ms() -> i64 {
    Timestamp::now().unix_millis()
}

/// Consumes the federation stream until `shutdown`, storing one job per message.
pub(crate) async fn consume(inner: Arc<Inner>, shutdown: Shutdown) {
    let mut consumer = match inner.bus.consume(StreamName::Federation, CONSUMER).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "federation cannot consume its stream");
            return;
        }
    };
    loop {
        let delivery = tokio::select! {
            () = shutdown.wait() => return,
            d = consumer.next() => d,
        };
        match delivery {
            Ok(d) => enqueue(&inner, d).await,
            Err(amp_bus::Error::Closed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "federation consumer error");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn enqueue(inner: &Inner, d: Delivery) {
    let accepted: Accepted = match serde_json::from_slice(&d.message().payload) {
        Ok(a) => a,
        Err(e) => {
            let _ = d
                .term(&format!("undecodable federation message: {e}"))
                .await;
            return;
        }
    };
    let id = job_id(&accepted);
    let trace = d
        .message()
        .trace_context()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let data = match serde_json::to_string(&JobData {
        tenant: sender_tenant(inner, &accepted),
        accepted,
        last_error: None,
        trace,
    }) {
        Ok(s) => s,
        Err(e) => {
            let _ = d.term(&format!("unencodable federation job: {e}")).await;
            return;
        }
    };
    let job = Job {
        id,
        kind: JOB_KIND.to_owned(),
        due_at: now_ms(),
        attempt: 0,
        data,
    };
    match inner.store.schedule(job).await {
        Ok(()) => {
            if let Err(e) = d.ack().await {
                tracing::warn!(error = %e, "ack of a queued federation message failed");
            }
            inner.wake.notify_one();
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot store a federation job, will retry");
            let _ = d.nak(Duration::from_millis(200)).await;
        }
    }
}

/// Delivers due jobs until `shutdown`, at most `workers` at once.
pub(crate) async fn deliver_loop(inner: Arc<Inner>, shutdown: Shutdown) {
    let permits = Arc::new(tokio::sync::Semaphore::new(inner.config.workers.max(1)));
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let poll = Duration::from_millis(inner.config.poll_interval_ms.max(1));
    // Longer than one attempt can take (connect, discovery, the request itself).
    let lease_ms = i64::try_from(
        inner.config.connect_timeout_ms + 2 * inner.config.request_timeout_ms + 5_000,
    )
    .unwrap_or(i64::MAX / 2);
    'scan: loop {
        let now = now_ms();
        match inner.store.due_jobs(JOB_KIND, now, SCAN_BATCH).await {
            Ok(jobs) => {
                for job in jobs {
                    if !in_flight.lock().insert(job.id.clone()) {
                        continue;
                    }
                    let permit = tokio::select! {
                        () = shutdown.wait() => break 'scan,
                        p = permits.clone().acquire_owned() => p,
                    };
                    let inner = inner.clone();
                    let in_flight = in_flight.clone();
                    tasks.spawn(async move {
                        let id = job.id.clone();
                        // Lease the job: of several federation replicas scanning the same
                        // jobs, the one whose claim wins runs it; a replica that dies
                        // mid-attempt leaves it to come due again when the lease runs out.
                        // Claimed in the task, so the claims of a scan share commits.
                        match inner.store.claim(&job, now + lease_ms).await {
                            Ok(true) => run_job(&inner, job).await,
                            Ok(false) => {}
                            Err(e) => {
                                tracing::warn!(job = %id, error = %e, "cannot claim a federation job");
                            }
                        }
                        in_flight.lock().remove(&id);
                        drop(permit);
                        inner.wake.notify_one();
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read due federation jobs"),
        }
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            () = shutdown.wait() => break,
            () = inner.wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
    // An attempt cut short is simply made again after a restart (the job is still stored;
    // the peer deduplicates by message id), so in-flight work gets only a short grace.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(2), drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
}

async fn run_job(inner: &Inner, job: Job) {
    let data: JobData = match serde_json::from_str(&job.data) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(job = %job.id, error = %e, "undecodable federation job dropped");
            let _ = inner.store.complete(&job.id).await;
            return;
        }
    };
    let a = &data.accepted;
    let env = &a.message.envelope;
    let now = Timestamp::now();
    let expires = env
        .expires_at
        .unwrap_or_else(|| env.timestamp.plus_secs(limits::DEFAULT_TTL_SECS));
    if expires <= now {
        let why = match &data.last_error {
            Some(e) => format!(
                "the message expired before it could be delivered ({} attempts; last error: {e})",
                job.attempt
            ),
            None => "the message expired before it could be delivered".to_owned(),
        };
        finish_with_bounce(inner, &job, a, "expired", &why).await;
        return;
    }
    // Each attempt is a child of the message's trace, carried in the job from the bus.
    let span = tracing::debug_span!(
        target: amp_runtime::telemetry::TRACE_TARGET,
        "amp.federation.send",
        otel.kind = "client",
        message.id = %env.id,
        attempt = job.attempt + 1,
    );
    amp_runtime::telemetry::set_parent(
        &span,
        data.trace.iter().map(|(n, v)| (n.as_str(), v.as_str())),
    );
    match attempt(inner, a).instrument(span).await {
        Attempt::Busy => {
            let due = now.unix_millis() + BUSY_DEFER_MS;
            let last = data.last_error.clone();
            reschedule(inner, &job, &data.accepted, due, last, job.attempt).await;
        }
        Attempt::Delivered { provider } => {
            tracing::info!(
                event = "federation.sent",
                timestamp = %now,
                to_provider = %provider,
                message_id = %env.id,
                sender = %a.sender_address,
                recipient = %a.recipient_address,
                delivered = true,
                attempt = job.attempt + 1,
                "federated message delivered"
            );
            metrics::counter!("amp_federation_sent_total", "result" => "delivered").increment(1);
            if let Err(e) = inner.store.complete(&job.id).await {
                tracing::warn!(job = %job.id, error = %e, "cannot complete a federation job");
            }
        }
        Attempt::Permanent {
            code,
            reason,
            peer_text,
        } => {
            tracing::info!(
                event = "federation.sent",
                timestamp = %now,
                message_id = %env.id,
                sender = %a.sender_address,
                recipient = %a.recipient_address,
                delivered = false,
                error = %code,
                reason = if peer_text { "refused by the peer" } else { reason.as_str() },
                "federated message refused"
            );
            let why = format!(
                "Your message to {} could not be delivered: {reason}",
                a.recipient_address
            );
            finish_with_bounce(inner, &job, a, &code, &why).await;
        }
        Attempt::Retry { reason, after } => {
            let delay = backoff(inner, job.attempt).max(after.unwrap_or_default());
            let due = now.unix_millis() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
            if due >= expires.unix_millis() {
                let why = format!(
                    "Your message to {} could not be delivered before it expired ({} attempts; last error: {reason})",
                    a.recipient_address,
                    job.attempt + 1
                );
                finish_with_bounce(inner, &job, a, "expired", &why).await;
                return;
            }
            tracing::debug!(
                job = %job.id, id = %env.id, attempt = job.attempt + 1, delay_ms = delay.as_millis() as u64,
                reason = %reason, "federated delivery failed, will retry"
            );
            metrics::counter!("amp_federation_sent_total", "result" => "retry").increment(1);
            let next = job.attempt.saturating_add(1);
            reschedule(inner, &job, &data.accepted, due, Some(reason), next).await;
        }
    }
}

async fn reschedule(
    inner: &Inner,
    job: &Job,
    accepted: &Accepted,
    due: i64,
    error: Option<String>,
    attempt: u32,
) {
    let data = JobData {
        tenant: sender_tenant(inner, accepted),
        accepted: accepted.clone(),
        last_error: error,
        trace: serde_json::from_str::<JobTrace>(&job.data)
            .map(|t| t.trace)
            .unwrap_or_default(),
    };
    let Ok(data) = serde_json::to_string(&data) else {
        return;
    };
    let next = Job {
        id: job.id.clone(),
        kind: JOB_KIND.to_owned(),
        due_at: due,
        attempt,
        data,
    };
    if let Err(e) = inner.store.schedule(next).await {
        // The old job is still stored and due: it is simply tried again.
        tracing::warn!(job = %job.id, error = %e, "cannot reschedule a federation job");
    }
}

/// `retry_initial_ms * 2^attempt`, capped at `retry_max_ms`, with jitter (half to all of
/// it) so that retries to a peer that comes back do not arrive in lockstep.
fn backoff(inner: &Inner, attempt: u32) -> Duration {
    let cfg = &inner.config;
    let base = cfg
        .retry_initial_ms
        .saturating_mul(1u64 << attempt.min(32))
        .min(cfg.retry_max_ms)
        .max(1);
    Duration::from_millis(rand::thread_rng().gen_range(base / 2..=base))
}

async fn finish_with_bounce(inner: &Inner, job: &Job, a: &Accepted, code: &str, why: &str) {
    metrics::counter!("amp_federation_sent_total", "result" => "bounced").increment(1);
    match bounce(inner, a, code, why).await {
        Ok(()) => {
            if let Err(e) = inner.store.complete(&job.id).await {
                tracing::warn!(job = %job.id, error = %e, "cannot complete a federation job");
            }
        }
        Err(e) => {
            // Nothing is dropped silently: the job stays and is tried (and bounced) again.
            tracing::warn!(job = %job.id, error = %e, "bounce not delivered, will retry");
            let due = now_ms() + 1_000;
            let next = job.attempt.saturating_add(1);
            reschedule(inner, job, a, due, Some(format!("{code}: {why}")), next).await;
        }
    }
}

/// The request body: the envelope as stored, the payload byte for byte, the sender's key.
/// Built as text so the payload is never re-serialised.
pub(crate) fn request_body(message: &StoredMessage) -> Result<String, serde_json::Error> {
    let envelope = serde_json::to_string(&message.envelope)?;
    let key = serde_json::to_string(&message.sender_public_key)?;
    Ok(format!(
        r#"{{"envelope":{envelope},"payload":{},"sender_public_key":{key}}}"#,
        message.payload.get()
    ))
}

async fn attempt(inner: &Inner, a: &Accepted) -> Attempt {
    let Some((_, address_domain)) = a.recipient_address.split_once('@') else {
        return Attempt::Permanent {
            code: "invalid_recipient".into(),
            reason: "the recipient address has no domain".into(),
            peer_text: false,
        };
    };
    let peer = match inner.discovery.for_address_domain(address_domain).await {
        Ok(p) => p,
        Err(e) => {
            return Attempt::Retry {
                reason: e.to_string(),
                after: None,
            };
        }
    };
    if peer.domain == inner.identity.domain {
        return Attempt::Permanent {
            code: "recipient_not_found".into(),
            reason: "the recipient's domain is served by this provider".into(),
            peer_text: false,
        };
    }
    if !inner.config.trusts(&peer.domain) {
        return Attempt::Permanent {
            code: "provider_not_trusted".into(),
            reason: format!(
                "this provider's federation policy does not allow {}",
                peer.domain
            ),
            peer_text: false,
        };
    }
    // One peer that holds requests until the timeout (a tarpit) may take only its share of
    // the workers; the others keep delivering to everyone else.
    let Some(_slot) = inner.peer_slots.try_acquire(&peer.domain) else {
        metrics::counter!("amp_federation_peer_busy_total").increment(1);
        return Attempt::Busy;
    };
    let decision = inner.outbound_limiter.check(&peer.domain);
    if !decision.allowed {
        return Attempt::Retry {
            reason: format!("outbound rate limit to {}", peer.domain),
            after: Some(Duration::from_secs(decision.retry_after_secs.max(1))),
        };
    }
    // Attachments go only to a peer that takes them, whole (spec 06).
    match crate::attachments::check(inner, &peer, a).await {
        None => {}
        Some(crate::attachments::Refusal::Retry(reason)) => {
            return Attempt::Retry {
                reason,
                after: None,
            };
        }
        Some(crate::attachments::Refusal::Permanent(code, reason)) => {
            return Attempt::Permanent {
                code: code.into(),
                reason,
                peer_text: false,
            };
        }
    }
    let body = match request_body(&a.message) {
        Ok(b) => b,
        Err(e) => {
            return Attempt::Permanent {
                code: "internal_error".into(),
                reason: format!("cannot encode the message: {e}"),
                peer_text: false,
            };
        }
    };
    let url = format!("{}/federation/deliver", peer.endpoint);
    if let Err(e) = net::check_url(&url, &inner.config) {
        return Attempt::Permanent {
            code: "provider_not_trusted".into(),
            reason: format!("peer endpoint refused: {e}"),
            peer_text: false,
        };
    }
    let ts = Timestamp::now().unix_secs().to_string();
    let sig = signature::sign(&inner.identity.provider_key, &ts, body.as_bytes());
    let mut request = inner
        .http
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(PROVIDER_HEADER, &inner.identity.domain)
        .header(TIMESTAMP_HEADER, &ts)
        .header(SIGNATURE_HEADER, &sig);
    // Our recent key revocations, one line each (spec-next 07).
    for fp in inner.revocations.announced(inner).await {
        request = request.header(crate::revocations::KEY_REVOKED_HEADER, fp);
    }
    let sent = request.body(body).send().await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            return Attempt::Retry {
                reason: format!("{url}: {e}"),
                after: None,
            };
        }
    };
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = net::read_capped(resp, inner.config.max_response_bytes)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    if status.is_success() {
        // The answer's text is the peer's: it is not logged or kept.
        return Attempt::Delivered {
            provider: peer.domain.clone(),
        };
    }
    // The peer's words, bounded and tamed: the code becomes a log field and a bounce's
    // `error`, the message a sentence of the bounce (never a log line).
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let code = parsed["error"]
        .as_str()
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .map_or_else(|| format!("http_{}", status.as_u16()), str::to_owned);
    let message = parsed["message"].as_str().map_or_else(
        || format!("{} answered HTTP {}", peer.domain, status.as_u16()),
        |m| {
            m.chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect::<String>()
        },
    );
    let transient = status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT;
    if transient {
        Attempt::Retry {
            reason: format!("{} answered {}: {code}", peer.domain, status.as_u16()),
            after: retry_after,
        }
    } else {
        Attempt::Permanent {
            code,
            reason: format!("{} refused it ({message})", peer.domain),
            peer_text: true,
        }
    }
}

/// Puts a `system` message explaining the failure into the original sender's mailbox, from
/// `postmaster@system.<our domain>`, signed with the provider key.
///
/// Fails when the bounce cannot be handed to the router (the caller retries); a sender that
/// no longer exists is logged and not an error.
async fn bounce(inner: &Inner, a: &Accepted, code: &str, why: &str) -> Result<(), String> {
    let domain = &inner.identity.domain;
    let orig = &a.message.envelope;
    let bounce = amp_messaging::bounce::to_sender(
        &inner.store,
        domain,
        &inner.identity.provider_key,
        a,
        code,
        why,
    )
    .await
    .map_err(|e| e.to_string())?;
    let Some((agent, accepted)) = bounce else {
        tracing::warn!(sender = %a.sender_address, id = %orig.id, error = %code,
            "sender is not a local agent (or is gone); bounce dropped");
        return Ok(());
    };
    let bytes = serde_json::to_vec(&accepted).map_err(|e| e.to_string())?;
    let msg = BusMessage::new(
        subjects::mailbox_ingress_subject(&agent.tenant, &agent.id),
        Bytes::from(bytes),
    );
    let dedup = format!("bounce:{}:{}", orig.id, a.recipient_address);
    let ack = inner
        .bus
        .publish(StreamName::Ingress, &dedup, msg)
        .await
        .map_err(|e| e.to_string())?;
    if let (Acceptance::Processed, Some(reply)) = (ack.acceptance, &ack.reply) {
        match serde_json::from_slice::<RouteOutcome>(reply) {
            Ok(RouteOutcome::MailboxWritten { .. } | RouteOutcome::Duplicate { .. }) => {}
            Ok(other) => {
                tracing::warn!(sender = %agent.address, id = %orig.id, outcome = ?other, "bounce not stored");
            }
            Err(e) => return Err(format!("undecodable router outcome: {e}")),
        }
    }
    tracing::info!(
        sender = %agent.address, id = %orig.id, recipient = %a.recipient_address, error = %code,
        "federated message bounced to its sender"
    );
    Ok(())
}
