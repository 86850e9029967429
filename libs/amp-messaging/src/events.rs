//! What services tell each other over the bus's notify subjects. Every one is a hint: the
//! mailbox (and the receipt store) stay the truth, so a lost event only delays a push until
//! the next replay or poll.
//!
//! - [`Hint`] on `amp.notify.<tenant>.<agent>`: "your mailbox or receipts changed".
//! - [`Pushed`] on `amp.delivered.<tenant>.<agent>`: "a frame with this message was written to
//!   a socket / the webhook answered 2xx", for a route answer still waiting to say so.
//! - [`RegistryChange`] on `amp.registry.changed`: an agent's keys or registration changed;
//!   caches drop it and sockets re-check their credentials.

use amp_bus::{Bus, BusMessage, subjects};
use amp_proto::Timestamp;
use amp_store::{AgentRecord, Receipt, Store};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// How long a receipt is retained for its sender.
pub const RECEIPT_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

/// A change in an agent's mailbox or receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Hint {
    /// A message was written to the mailbox.
    Message {
        /// Its id.
        id: String,
        /// Its mailbox position.
        seq: u64,
    },
    /// Receipts were retained for the agent (as a sender).
    Receipts,
}

/// A push that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pushed {
    /// The message id.
    pub id: String,
    /// `websocket` or `webhook`.
    pub method: String,
    /// `socket_written` or `webhook_2xx` (spec 12.2).
    pub basis: String,
    /// When.
    pub at: String,
}

/// What changed about an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Its API keys were revoked.
    Revoked,
    /// It was deregistered.
    Deregistered,
    /// Its API key or keypair was rotated.
    Rotated,
    /// Its profile (delivery preferences) changed.
    Updated,
    /// It was suspended or unsuspended (spec-next 07): caches drop what they knew and its
    /// sockets re-check (a suspended agent's close with 4003).
    Suspension,
    /// A WebSocket session of it opened or closed (whether a route waits for a push
    /// depends on it; caches of its presence are dropped).
    Presence,
    /// Many agents went at once (a tenant was deleted): caches drop everything and sockets
    /// re-check their credentials. `agent_id` is `*`.
    Purged,
}

/// An agent's registration changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryChange {
    /// The agent.
    pub agent_id: String,
    /// What changed.
    pub change: ChangeKind,
}

/// `amp.delivered.<tenant>.<agent>`.
pub fn delivered_subject(tenant: &str, agent_id: &str) -> String {
    format!(
        "amp.delivered.{}.{}",
        subjects::sanitise_token(tenant),
        subjects::sanitise_token(agent_id)
    )
}

/// Publishes a hint to an agent (best effort).
pub async fn hint(bus: &Bus, tenant: &str, agent_id: &str, hint: &Hint) {
    if let Ok(body) = serde_json::to_vec(hint) {
        // Carries the trace context, so the push it causes continues the message's trace.
        let msg = BusMessage::new(
            subjects::notify_subject(tenant, agent_id),
            Bytes::from(body),
        )
        .with_trace_context(amp_runtime::telemetry::trace_headers(
            &tracing::Span::current(),
        ));
        if let Err(e) = bus.notify_message(msg).await {
            tracing::debug!(error = %e, "hint not sent");
        }
    }
}

/// Publishes a registry change (best effort), after dropping what this process's `cache`
/// knew about the agent (so this process never answers from it again; other processes drop
/// theirs when the event arrives).
pub async fn registry_changed(
    bus: &Bus,
    cache: &crate::RegistryCache,
    agent_id: &str,
    change: ChangeKind,
) {
    let event = RegistryChange {
        agent_id: agent_id.to_owned(),
        change,
    };
    cache.apply(&event);
    if let Ok(body) = serde_json::to_vec(&event)
        && let Err(e) = bus
            .notify(subjects::REGISTRY_CHANGED, Bytes::from(body))
            .await
    {
        tracing::debug!(error = %e, "registry change not broadcast");
    }
}

/// Retains a receipt frame for `sender` (durable) and hints its sockets to push it.
///
/// Fails when the store cannot retain it.
pub async fn send_receipt(
    store: &Store,
    bus: &Bus,
    sender: &AgentRecord,
    frame: &serde_json::Value,
) -> Result<(), amp_store::Error> {
    let now = Timestamp::now().unix_millis();
    store
        .put_receipt(
            &sender.id,
            Receipt {
                seq: 0,
                data: frame.to_string(),
                created_at: now,
                expires_at: now + RECEIPT_TTL_MS,
            },
        )
        .await?;
    hint(bus, &sender.tenant, &sender.id, &Hint::Receipts).await;
    Ok(())
}

/// Sends the sender of `message` a `message.delivered` receipt, once per message, if it asked
/// for one (`options.receipt`) and is an agent of this provider (`domain`). `method` and
/// `basis` say how delivery was established (spec 05, 12.2).
///
/// Fails only when the store cannot retain the receipt.
pub async fn delivered_receipt(
    store: &Store,
    bus: &Bus,
    domain: &str,
    recipient: &AgentRecord,
    message: &amp_proto::relay::StoredMessage,
    method: &str,
    basis: &str,
) -> Result<(), amp_store::Error> {
    if !message.receipt {
        return Ok(());
    }
    let marker =
        amp_store::message_marker("receipt-sent", &recipient.id, message.envelope.id.as_str());
    if store.get(&marker).await?.is_some() {
        return Ok(());
    }
    let Some(sender) = local_agent(store, domain, &message.envelope.from).await? else {
        return Ok(());
    };
    let now = Timestamp::now();
    let frame = serde_json::json!({
        "type": "message.delivered",
        "data": {
            "id": message.envelope.id,
            "to": message.envelope.to,
            "delivered_at": now.to_rfc3339(),
            "method": method,
            "basis": basis,
        },
    });
    send_receipt(store, bus, &sender, &frame).await?;
    store
        .put(
            &marker,
            now.unix_millis().to_string().into_bytes(),
            Some(now.unix_millis() + MARKER_LIFETIME_MS),
        )
        .await
}

/// How long a per-message marker ("receipt sent") is kept: past the longest a message can
/// live (7 days) and be delivered or read again, so the marker outlives every retry of it.
pub const MARKER_LIFETIME_MS: i64 = 8 * 24 * 3600 * 1000;

/// The active local agent with this exact address, if any.
///
/// Fails only on store errors.
pub async fn local_agent(
    store: &Store,
    domain: &str,
    address: &str,
) -> Result<Option<AgentRecord>, amp_store::Error> {
    let Ok(a) = amp_proto::Address::parse_full(address, domain) else {
        return Ok(None);
    };
    if a.provider() != domain {
        return Ok(None);
    }
    Ok(store
        .agent_by_name(a.tenant(), a.name())
        .await?
        .filter(|x| x.address == a.as_str()))
}
