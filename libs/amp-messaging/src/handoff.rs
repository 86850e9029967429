//! The last stage of every acceptance path (REST and WebSocket `route` frames in
//! [`crate::accept`], and federation's inbound deliveries): the accepted record to the
//! router over the bus, the router's outcome back, and what a sender is told about it.
//!
//! - [`hand_off`]: publish to the ingress stream (durable) and wait for the outcome (always
//!   there in-process; on a broker within the outcome wait, or `None`);
//! - [`settle_retry`]: a publish the broker recognised as a retry has no outcome of its own:
//!   the mailbox says what became of the first (the same signature stored, or another one);
//! - [`refusal`]: an outcome that refused the message, as the error its sender gets;
//! - [`store_error`]: a store failure as an error (the one mapping every service uses).

use std::time::Duration;

use amp_bus::{Acceptance, Bus, BusMessage, StreamName, subjects};
use amp_proto::relay::{Accepted, RouteOutcome, StoredMessage};
use amp_proto::{ApiError, ErrorCode};
use amp_store::{EntryState, Store};
use bytes::Bytes;
use serde_json::json;

use crate::{internal, unavailable};

/// What the hand-off learnt.
#[derive(Debug, Clone, Copy)]
pub struct Handed {
    /// The router's outcome; `None` when a broker persisted the message but the outcome
    /// did not come within the wait (it still takes effect).
    pub outcome: Option<RouteOutcome>,
    /// The bus recognised the publish as a retry of an earlier one (same sender, id and
    /// signature).
    pub retried: bool,
}

/// How long to wait.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// For the bus to take the message at all (then `503`).
    pub route_timeout: Duration,
    /// For the router's outcome once the broker has the message (then no outcome).
    pub outcome_wait: Duration,
}

/// Publishes `accepted` to the ingress stream (subject of its recipient's mailbox, so a
/// partitioned ingress keeps one mailbox on one partition; the current span's trace context
/// in the headers, so the router continues the trace) and waits for the outcome.
///
/// Fails with `503` when the bus does not take it in time, `500` for an undecodable outcome.
pub async fn hand_off(
    bus: &Bus,
    tenant: &str,
    accepted: &Accepted,
    waits: Waits,
) -> Result<Handed, ApiError> {
    let payload = serde_json::to_vec(accepted).map_err(internal)?;
    let mailbox = if accepted.recipient_id.is_empty() {
        accepted.recipient_address.as_str()
    } else {
        accepted.recipient_id.as_str()
    };
    let msg = BusMessage::new(
        subjects::mailbox_ingress_subject(tenant, mailbox),
        Bytes::from(payload),
    )
    .with_trace_context(amp_runtime::telemetry::trace_headers(
        &tracing::Span::current(),
    ));
    // No dedup id: the mailbox write is the duplicate rule (keyed by recipient and id), so a
    // retry reaches the router and is answered from the mailbox (`Duplicate`, or `Conflict`
    // for another signature), and a broker may pack this publish with others under way.
    let publish = bus.publish_for_reply(StreamName::Ingress, "", msg, waits.outcome_wait);
    let ack = match tokio::time::timeout(waits.route_timeout + waits.outcome_wait, publish).await {
        Ok(Ok(ack)) => ack,
        Ok(Err(e)) => return Err(unavailable(e)),
        Err(_) => return Err(unavailable("router did not answer in time")),
    };
    let outcome = match (ack.acceptance, ack.reply) {
        (Acceptance::Processed, Some(reply)) => {
            Some(serde_json::from_slice(&reply).map_err(internal)?)
        }
        (Acceptance::Processed, None) => {
            return Err(internal("router acked without an outcome"));
        }
        (Acceptance::Persisted, _) => None,
    };
    Ok(Handed {
        outcome,
        retried: ack.duplicate,
    })
}

/// For a retry (or a `Duplicate` outcome) of a message to a local mailbox: the entry the
/// mailbox holds under the id, and the outcome to report when the bus had none (the same
/// signature stored: `Duplicate`; another: `Conflict`; acknowledged already: `Duplicate`).
///
/// Fails like the store.
pub async fn settle_retry(
    store: &Store,
    accepted: &Accepted,
    handed: Handed,
) -> Result<(Option<RouteOutcome>, Option<EntryState>), ApiError> {
    let wanted = !accepted.recipient_id.is_empty()
        && (handed.retried || matches!(handed.outcome, Some(RouteOutcome::Duplicate { .. })));
    if !wanted {
        return Ok((handed.outcome, None));
    }
    // Expired entries count too (`Millis::MIN`): their ids stay taken until purged.
    let prior = store
        .entry(
            &accepted.recipient_id,
            accepted.message.envelope.id.as_str(),
            amp_store::Millis::MIN,
        )
        .await
        .map_err(store_error)?;
    let outcome = match (&prior, handed.outcome) {
        (Some(EntryState::Queued(e)), None) => {
            let ours = serde_json::from_str::<StoredMessage>(&e.data)
                .is_ok_and(|m| m.envelope.signature == accepted.message.envelope.signature);
            Some(if ours {
                RouteOutcome::Duplicate { seq: e.seq }
            } else {
                RouteOutcome::Conflict
            })
        }
        (Some(EntryState::Acked { .. }), None) => Some(RouteOutcome::Duplicate { seq: 0 }),
        (_, outcome) => outcome,
    };
    Ok((outcome, prior))
}

/// The error a sender gets for an outcome that refused its message; `None` when the message
/// was stored (or forwarded).
pub fn refusal(outcome: RouteOutcome) -> Option<ApiError> {
    match outcome {
        RouteOutcome::MailboxWritten { .. }
        | RouteOutcome::Duplicate { .. }
        | RouteOutcome::Forwarded
        | RouteOutcome::Quarantined => None,
        RouteOutcome::Conflict => Some(
            ApiError::new(
                ErrorCode::DuplicateMessage,
                "a different message with this id was already sent",
            )
            .with_field("id"),
        ),
        RouteOutcome::MailboxFull => Some(
            ApiError::new(
                ErrorCode::MailboxFull,
                "the recipient's mailbox is full; retry later",
            )
            .with_extra("retry_after", json!(60)),
        ),
        RouteOutcome::RecipientGone => {
            Some(ApiError::not_found("recipient not found on this provider").with_field("to"))
        }
        RouteOutcome::Unavailable => Some(unavailable(
            "the message could not be stored now (the store cannot write); retry later",
        )),
        // 07's `block` verdict is `403`; 08 has no code of its own for it. Which rule
        // matched is never said (07: it would help an attacker refine the payload).
        RouteOutcome::Blocked => Some(ApiError::new(
            ErrorCode::Forbidden,
            "the message was refused by this provider's content security policy",
        )),
    }
}

/// A store failure as an API error: `503` (with `retry_after`; `Retry-After` on HTTP) when
/// unavailable, `500` (logged, never shown) otherwise.
pub fn store_error(e: amp_store::Error) -> ApiError {
    match e {
        amp_store::Error::Unavailable(cause) => unavailable(cause),
        other => internal(other),
    }
}
