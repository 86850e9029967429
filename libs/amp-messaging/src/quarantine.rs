//! Message quarantine (spec-next 07 "Message Quarantine", 08 "Quarantine Management"): the
//! route answer for a held message, and the review (list, show, approve, reject) behind the
//! operator endpoints. The router holds a message ([`amp_store::quarantine`]) when one of
//! its injection detections is a `[router.quarantine] categories` entry; nothing is held
//! otherwise.
//!
//! - The sender is answered `202` with `status: "quarantined"` and never told why (07).
//! - Approval writes the message to the recipient's mailbox as the router would (the
//!   mailbox's idempotent enqueue, the hint to its sockets, the webhook job), so it is
//!   delivered normally; approving again is answered the same and writes nothing twice.
//! - Rejection drops it for good, and its sender (one of ours) is told, never why (07). The first decision wins (approve after reject, or the
//!   reverse, is `409 conflict`); an entry past its `expires_at` is `expired`, and approving
//!   or rejecting it is `410 quarantine_expired`.

use amp_proto::relay::RouteOutcome;
use amp_proto::{ApiError, ErrorCode, SecretKey, Timestamp};
use amp_store::quarantine::{Quarantine as _, QuarantineDecision, QuarantineEntry};
use amp_store::{Enqueued, Job, NewMailboxEntry};
use serde_json::{Value, json};

use crate::events::{self, Hint};
use crate::{Acceptor, store_err};

/// The route stage: a held message's answer (`status: "quarantined"`, no delivery method).
/// Returns whether the message was held.
pub(crate) fn answer(answer: &mut Value, outcome: Option<RouteOutcome>) -> bool {
    if outcome != Some(RouteOutcome::Quarantined) {
        return false;
    }
    answer["status"] = json!("quarantined");
    if let Some(m) = answer.as_object_mut() {
        m.remove("method");
    }
    true
}

/// An entry's state at `now`: `pending`, `approved`, `rejected` or `expired`.
fn state(entry: &QuarantineEntry, decision: Option<&QuarantineDecision>, now: i64) -> String {
    match decision {
        Some(d) => d.status.clone(),
        None if now >= entry.expires_at => "expired".into(),
        None => "pending".into(),
    }
}

fn rfc3339(ms: i64) -> Option<String> {
    Timestamp::from_unix_millis(ms).map(Timestamp::to_rfc3339)
}

/// 08's view of an entry; with `message`, the held envelope and payload too.
fn view(entry: &QuarantineEntry, status: &str, message: bool) -> Value {
    let mut v = json!({
        "quarantine_id": entry.quarantine_id,
        "from": entry.from,
        "to": entry.to,
        "subject": entry.subject,
        "reason": entry.reason,
        "rules_triggered": entry.rules_triggered,
        "severity": entry.severity,
        "quarantined_at": rfc3339(entry.quarantined_at),
        "expires_at": rfc3339(entry.expires_at),
        "status": status,
        "message_id": entry.message_id,
    });
    if message && let Ok(stored) = serde_json::from_str::<Value>(&entry.data) {
        v["message"] = json!({
            "envelope": stored.get("envelope").cloned().unwrap_or(Value::Null),
            "payload": stored.get("payload").cloned().unwrap_or(Value::Null),
        });
    }
    v
}

/// The tenant an entry belongs to: its recipient's (entries held before the record kept
/// it are told by their `to` address).
fn entry_tenant(acc: &Acceptor, entry: &QuarantineEntry) -> String {
    if !entry.tenant.is_empty() {
        return entry.tenant.clone();
    }
    amp_proto::Address::parse_full(&entry.to, &acc.domain)
        .map(|a| a.tenant().to_owned())
        .unwrap_or_default()
}

/// Whether a reviewer limited to `tenant` (`None`: the whole provider) may see `entry`.
fn visible(acc: &Acceptor, entry: &QuarantineEntry, tenant: Option<&str>) -> bool {
    tenant.is_none_or(|t| entry_tenant(acc, entry) == t)
}

/// The entry `id`, if a reviewer limited to `tenant` may see it (another tenant's entry is
/// unknown to it: its existence does not leak).
async fn load(acc: &Acceptor, id: &str, tenant: Option<&str>) -> Result<QuarantineEntry, ApiError> {
    let found = if id.starts_with("qtn_") && id.len() <= 128 {
        acc.store.quarantine(id).await.map_err(store_err)?
    } else {
        None
    };
    found
        .filter(|e| visible(acc, e, tenant))
        .ok_or_else(|| ApiError::not_found(format!("no quarantine entry '{id}'")))
}

/// `GET /v1/quarantine/{id}`: the entry with its message, for a reviewer limited to
/// `tenant` (`None`: the whole provider).
///
/// Fails with `404` for an unknown id (or another tenant's), `503` when the store cannot be
/// read.
pub async fn show(
    acc: &Acceptor,
    id: &str,
    tenant: Option<&str>,
    now: i64,
) -> Result<Value, ApiError> {
    let entry = load(acc, id, tenant).await?;
    let d = acc.store.quarantine_decision(id).await.map_err(store_err)?;
    Ok(view(&entry, &state(&entry, d.as_ref(), now), true))
}

/// Most entries (and as many decisions) one listing reads: the periodic purge keeps the
/// collection to the entries of the last `ttl_hours` + `keep_expired_hours`, so this is
/// only reached by a flood; past it a listing omits `total` and pages on with
/// `next_cursor`.
const MAX_SCANNED: usize = 10_000;

/// Rows per store read.
const PAGE: usize = 500;

/// `GET /v1/quarantine?status=&limit=&cursor=`: entries in `status` (default `pending`),
/// oldest first, `limit` 1-100 (default 20), with 08's `count` (this page) and `total`
/// (entries in the status, all pages), and `next_cursor` when more follow; for a reviewer
/// limited to `tenant` (`None`: the whole provider), that tenant's entries only.
///
/// Fails with `400` for a bad status or limit, `503` when the store cannot be read.
pub async fn list(
    acc: &Acceptor,
    tenant: Option<&str>,
    status: Option<&str>,
    limit: Option<usize>,
    cursor: Option<&str>,
    now: i64,
) -> Result<Value, ApiError> {
    let status = status.unwrap_or("pending");
    if !["pending", "approved", "rejected", "expired"].contains(&status) {
        return Err(ApiError::invalid(
            "status",
            "status must be pending, approved, rejected or expired",
        ));
    }
    let limit = limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit must be 1 to 100"));
    }
    // The decisions first, in bulk: a read per entry would cost a round trip each.
    let mut decisions = std::collections::HashMap::new();
    let mut after: Option<String> = None;
    let mut complete = true;
    loop {
        let page = acc
            .store
            .quarantine_decisions_page(after.as_deref(), PAGE)
            .await
            .map_err(store_err)?;
        let n = page.len();
        after = page.last().map(|(id, _)| id.clone());
        decisions.extend(page);
        if n < PAGE {
            break;
        }
        if decisions.len() >= MAX_SCANNED {
            complete = false;
            break;
        }
    }
    // Every entry, from the oldest: the total counts them all, the page starts after the
    // cursor.
    let mut items = Vec::new();
    let (mut total, mut scanned, mut more) = (0usize, 0usize, false);
    let mut last: Option<String> = None;
    let mut after: Option<String> = None;
    loop {
        let page = acc
            .store
            .quarantine_page(after.as_deref(), PAGE)
            .await
            .map_err(store_err)?;
        let n = page.len();
        for entry in page {
            scanned += 1;
            after = Some(entry.quarantine_id.clone());
            if !visible(acc, &entry, tenant) {
                continue;
            }
            let s = state(&entry, decisions.get(&entry.quarantine_id), now);
            if s != status {
                continue;
            }
            total += 1;
            if cursor.is_some_and(|c| entry.quarantine_id.as_str() <= c) {
                continue;
            }
            if items.len() < limit {
                last = Some(entry.quarantine_id.clone());
                items.push(view(&entry, &s, false));
            } else {
                more = true;
            }
        }
        if n < PAGE {
            break;
        }
        if scanned >= MAX_SCANNED {
            // Not all read: the total is not known, and the listing goes on from the last
            // item given (or the last entry read, when the page is not full).
            complete = false;
            more = true;
            if items.len() < limit {
                last = after;
            }
            break;
        }
    }
    let count = items.len();
    let mut v = json!({ "items": items, "count": count });
    if complete {
        v["total"] = json!(total);
    }
    if more && let Some(c) = last {
        v["next_cursor"] = json!(c);
    }
    Ok(v)
}

/// `POST /v1/quarantine/{id}/approve` by `by`: delivered as if it had just arrived.
///
/// Fails with `404` (also another tenant's entry for a reviewer limited to `tenant`), `409
/// conflict` (rejected), `410 quarantine_expired`, or `503`.
pub async fn approve(
    acc: &Acceptor,
    id: &str,
    tenant: Option<&str>,
    by: &str,
    now: i64,
) -> Result<Value, ApiError> {
    let entry = load(acc, id, tenant).await?;
    decide(acc, &entry, "approved", by, now).await?;
    let delivered = deliver(acc, &entry, now).await?;
    tracing::info!(quarantine = %id, actor = %by, id = %entry.message_id, delivered, "quarantined message approved");
    Ok(json!({
        "quarantine_id": id,
        "status": "approved",
        "message_id": entry.message_id,
        "delivered": delivered,
    }))
}

/// `POST /v1/quarantine/{id}/reject` by `by`: never delivered. The sender, when it is one
/// of this provider's agents, is told with a notice signed by `provider_key` (07
/// "Notifications"): which message, to whom, that a review rejected it, never which rules
/// held it. Told once: a repeated rejection tells nothing again.
///
/// Fails with `404` (also another tenant's entry for a reviewer limited to `tenant`), `409
/// conflict` (approved), `410 quarantine_expired`, or `503`.
pub async fn reject(
    acc: &Acceptor,
    id: &str,
    tenant: Option<&str>,
    by: &str,
    now: i64,
    provider_key: &SecretKey,
) -> Result<Value, ApiError> {
    let entry = load(acc, id, tenant).await?;
    let first = decide(acc, &entry, "rejected", by, now).await?;
    tracing::info!(quarantine = %id, actor = %by, id = %entry.message_id, "quarantined message rejected");
    if first {
        notify_rejected(acc, &entry, provider_key).await;
    }
    Ok(json!({ "quarantine_id": id, "status": "rejected" }))
}

/// The notice to the sender of a rejected message (see [`reject`]); a sender on another
/// provider (or gone) is not told, and a notice that cannot be handed to the router is
/// logged (the rejection stands).
async fn notify_rejected(acc: &Acceptor, entry: &QuarantineEntry, provider_key: &SecretKey) {
    let sender = match amp_proto::Address::parse_full(&entry.from, &acc.domain) {
        Ok(a) if a.provider() == acc.domain && a.tenant() != "system" => a,
        _ => return,
    };
    let agent = match acc
        .store
        .agent_by_name(sender.tenant(), sender.name())
        .await
    {
        Ok(Some(a)) if a.is_active() && a.address == sender.as_str() => a,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(error = %e, id = %entry.message_id, "sender of a rejected message not told");
            return;
        }
    };
    let thread = serde_json::from_str::<amp_proto::relay::StoredMessage>(&entry.data)
        .ok()
        .map(|m| m.envelope.thread_id);
    let payload = json!({
        "type": "system",
        "message": format!(
            "Your message to {} was not delivered: a security review rejected it.",
            entry.to
        ),
        "context": {
            "original_id": entry.message_id,
            "recipient": entry.to,
            "error": "message_rejected",
        },
    });
    let notice = match crate::bounce::system_notice(
        &acc.domain,
        provider_key,
        &agent,
        &format!("Undeliverable: {}", entry.subject),
        &payload,
        Some(&entry.message_id),
        thread,
    ) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "rejection notice not built");
            return;
        }
    };
    let waits = crate::handoff::Waits {
        route_timeout: std::time::Duration::from_millis(acc.config.route_timeout_ms),
        outcome_wait: std::time::Duration::from_millis(acc.config.outcome_wait_ms),
    };
    if let Err(e) = crate::handoff::hand_off(&acc.bus, &agent.tenant, &notice, waits).await {
        tracing::warn!(error = %e.message, agent = %agent.id, id = %entry.message_id, "sender of a rejected message not told");
    }
}

/// Records `status` as the entry's decision (`true`), or accepts the same decision made
/// before (a retry, `false`); another decision, or none before the expiry, refuses.
async fn decide(
    acc: &Acceptor,
    entry: &QuarantineEntry,
    status: &str,
    by: &str,
    now: i64,
) -> Result<bool, ApiError> {
    let id = &entry.quarantine_id;
    let d = QuarantineDecision {
        status: status.into(),
        by: by.into(),
        at: now,
    };
    let earlier = acc.store.quarantine_decision(id).await.map_err(store_err)?;
    let earlier = match earlier {
        Some(e) => Some(e),
        None if now >= entry.expires_at => {
            return Err(ApiError::new(
                ErrorCode::QuarantineExpired,
                "the quarantine entry expired unreviewed; the message was not delivered",
            ));
        }
        None if acc
            .store
            .decide_quarantine(id, &d)
            .await
            .map_err(store_err)? =>
        {
            None
        }
        // Another reviewer decided meanwhile.
        None => acc.store.quarantine_decision(id).await.map_err(store_err)?,
    };
    match earlier {
        Some(e) if e.status != status => Err(ApiError::new(
            ErrorCode::Conflict,
            format!("the message was {} already", e.status),
        )),
        Some(_) => Ok(false),
        None => Ok(true),
    }
}

/// Writes an approved message to its recipient's mailbox, with its hint and webhook job;
/// `false` when it cannot be delivered any more (the recipient is gone, the message expired,
/// or the mailbox is full).
async fn deliver(acc: &Acceptor, entry: &QuarantineEntry, now: i64) -> Result<bool, ApiError> {
    let Some(recipient) = acc
        .store
        .agent(&entry.recipient_id)
        .await
        .map_err(store_err)?
        .filter(amp_store::AgentRecord::is_active)
    else {
        return Ok(false);
    };
    if entry.mailbox_expires_at <= now {
        return Ok(false);
    }
    let new = NewMailboxEntry {
        agent_id: recipient.id.clone(),
        message_id: entry.message_id.clone(),
        sender: entry.from.clone(),
        signature: entry.signature.clone(),
        data: entry.data.clone(),
        queued_at: now,
        expires_at: entry.mailbox_expires_at,
        max_queued: entry.max_queued,
    };
    let seq = match acc.store.enqueue(new).await.map_err(store_err)? {
        Enqueued::New { seq } => {
            if recipient.delivery.webhook_url.is_some() {
                let data = amp_proto::relay::WebhookJob {
                    agent_id: recipient.id.clone(),
                    message_id: entry.message_id.clone(),
                    ..Default::default()
                };
                let job = Job {
                    id: format!("webhook/{}/{}", recipient.id, entry.message_id),
                    kind: amp_proto::relay::WebhookJob::KIND.into(),
                    due_at: now,
                    attempt: 0,
                    data: serde_json::to_string(&data).map_err(crate::internal)?,
                };
                if let Err(e) = acc.store.schedule(job).await {
                    tracing::warn!(error = %e, "webhook job not scheduled; the message stays in the mailbox");
                }
            }
            seq
        }
        Enqueued::Duplicate { seq } => seq,
        Enqueued::Conflict | Enqueued::Full => return Ok(false),
    };
    let hint = Hint::Message {
        id: entry.message_id.clone(),
        seq,
    };
    events::hint(&acc.bus, &recipient.tenant, &recipient.id, &hint).await;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_next_quarantine_states_expire_unreviewed_only() {
        let e = QuarantineEntry {
            quarantine_id: "qtn_1_x".into(),
            from: "a@x".into(),
            to: "b@y".into(),
            recipient_id: "agt_b".into(),
            tenant: "t".into(),
            subject: "s".into(),
            reason: "injection_detected".into(),
            rules_triggered: vec![],
            severity: "high".into(),
            quarantined_at: 0,
            expires_at: 1_000,
            message_id: "msg_1".into(),
            data: "{}".into(),
            mailbox_expires_at: 2_000,
            max_queued: None,
            signature: String::new(),
        };
        let d = QuarantineDecision {
            status: "approved".into(),
            by: "opt_x".into(),
            at: 10,
        };
        assert_eq!(state(&e, None, 999), "pending");
        assert_eq!(state(&e, None, 1_000), "expired");
        assert_eq!(state(&e, Some(&d), 5_000), "approved", "a decision stays");
    }
}
