//! Agent suspension (spec-next 07 "Agent Suspension"): the checks every message path makes,
//! and suspending and unsuspending, shared by the admin API and the spec's
//! `POST /v1/agents/{agent_id}/suspend|unsuspend`.
//!
//! The record lives in the store ([`amp_store::suspension`]); the checks read it through the
//! process's [`RegistryCache`], which keeps the answer (absence included) until the agent's
//! [`ChangeKind::Suspension`] event arrives, at most `registry_cache_ms`: a suspension
//! reaches every replica of every service as a key revocation does, at no store read per
//! route. The record's `expires_at` is compared with the time of each check (the spec's
//! MUST), so an expired suspension lifts itself without a job.
//!
//! Where it is checked: ingest's authentication of every agent request (`agent_suspended`),
//! the acceptance of every route (the sender, for WebSocket `route` frames; the local
//! recipient, `recipient_suspended`), the WebSocket `auth` frame and every re-check of an
//! open socket (close 4003), each webhook attempt (skipped, the message stays in the
//! mailbox), and federation's inbound recipient.

use amp_proto::{ApiError, ErrorCode, Timestamp};
use amp_store::suspension::{AgentSuspension, Suspensions as _};

use crate::RegistryCache;
use crate::events::{self, ChangeKind};

/// The agent's suspension in force at `now` (an expired record is none).
///
/// Fails only on store errors.
pub async fn active(
    cache: &RegistryCache,
    agent_id: &str,
    now: i64,
) -> Result<Option<AgentSuspension>, amp_store::Error> {
    Ok(cache
        .suspension(agent_id)
        .await?
        .filter(|s| s.active_at(now)))
}

/// `403 agent_suspended` when the calling agent is suspended at `now`.
///
/// Fails with that error, or the store's (503) when it cannot be read.
pub async fn check_caller(cache: &RegistryCache, agent_id: &str, now: i64) -> Result<(), ApiError> {
    match active(cache, agent_id, now).await {
        Ok(None) => Ok(()),
        Ok(Some(s)) => Err(refusal(ErrorCode::AgentSuspended, &s)),
        Err(e) => Err(crate::store_err(e)),
    }
}

/// `403 recipient_suspended` when the recipient is suspended at `now`. Its mailbox is left
/// as it is: what is queued is delivered after the suspension.
///
/// Fails with that error, or the store's (503) when it cannot be read.
pub async fn check_recipient(
    cache: &RegistryCache,
    agent_id: &str,
    now: i64,
) -> Result<(), ApiError> {
    match active(cache, agent_id, now).await {
        Ok(None) => Ok(()),
        Ok(Some(s)) => Err(refusal(ErrorCode::RecipientSuspended, &s)),
        Err(e) => Err(crate::store_err(e)),
    }
}

/// The spec error for a suspension: the reason is the operator's and stays with the
/// operator; when it ends is said (`suspended_until`) when it has an end.
pub fn refusal(code: ErrorCode, s: &AgentSuspension) -> ApiError {
    let who = if code == ErrorCode::AgentSuspended {
        "this agent"
    } else {
        "the recipient"
    };
    let until = s
        .expires_at
        .and_then(Timestamp::from_unix_millis)
        .map(Timestamp::to_rfc3339);
    let message = match &until {
        Some(t) => format!("{who} is suspended by the provider until {t}"),
        None => format!("{who} is suspended by the provider"),
    };
    let e = ApiError::new(code, message);
    match until {
        Some(t) => e.with_extra("suspended_until", serde_json::Value::String(t)),
        None => e,
    }
}

/// Suspends `agent_id` from `now` for `duration_ms` (`None`: until unsuspended), replacing
/// any suspension it had, and announces it: this process's cache forgets at once, every
/// other replica's when the event arrives, and the agent's sockets re-check (close 4003).
///
/// Fails only on store errors (nothing was suspended).
pub async fn suspend(
    acc: &crate::Acceptor,
    agent_id: &str,
    reason: &str,
    by: &str,
    now: i64,
    duration_ms: Option<i64>,
) -> Result<AgentSuspension, amp_store::Error> {
    let record = AgentSuspension {
        agent_id: agent_id.to_owned(),
        suspended_at: now,
        reason: reason.to_owned(),
        suspended_by: by.to_owned(),
        expires_at: duration_ms.map(|d| now.saturating_add(d)),
    };
    put(&acc.store, &acc.bus, &acc.cache, &record).await?;
    Ok(record)
}

/// Writes a suspension record and announces it (see [`suspend`]): for a process without an
/// acceptor (the router's automatic suspensions).
///
/// Fails only on store errors (nothing was suspended).
pub async fn put(
    store: &amp_store::Store,
    bus: &amp_bus::Bus,
    cache: &RegistryCache,
    record: &AgentSuspension,
) -> Result<(), amp_store::Error> {
    store.put_suspension(record).await?;
    events::registry_changed(bus, cache, &record.agent_id, ChangeKind::Suspension).await;
    let by = record.suspended_by.as_str();
    tracing::info!(agent = %record.agent_id, by, reason = %record.reason, expires_at = ?record.expires_at, "agent suspended");
    metrics::counter!("amp_agent_suspensions_total", "by" => if by == "system" { "system" } else { "operator" })
        .increment(1);
    Ok(())
}

/// Lifts `agent_id`'s suspension (nothing when it has none) and announces it; returns
/// whether it had a record.
///
/// Fails only on store errors.
pub async fn unsuspend(acc: &crate::Acceptor, agent_id: &str) -> Result<bool, amp_store::Error> {
    let had = acc.store.clear_suspension(agent_id).await?;
    events::registry_changed(&acc.bus, &acc.cache, agent_id, ChangeKind::Suspension).await;
    tracing::info!(agent = %agent_id, had, "agent unsuspended");
    Ok(had)
}

/// The route stage: `agent_suspended` for a suspended sender (a WebSocket `route` frame;
/// REST refused it at authentication already), `recipient_suspended` for a suspended local
/// recipient.
///
/// Fails with that error, or `503` when the store cannot be read.
pub(crate) async fn check_route(
    acc: &crate::Acceptor,
    sender: &amp_store::AgentRecord,
    recipient: Option<&amp_store::AgentRecord>,
) -> Result<(), ApiError> {
    let now = Timestamp::now().unix_millis();
    check_caller(&acc.cache, &sender.id, now).await?;
    if let Some(r) = recipient {
        check_recipient(&acc.cache, &r.id, now).await?;
    }
    Ok(())
}
