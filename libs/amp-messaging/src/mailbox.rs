//! The recipient's side of a mailbox that several services share: the acknowledgement (one
//! idempotent transition, whether it comes from REST or a WebSocket frame), with the delivery
//! receipts it triggers.

use amp_bus::Bus;
use amp_proto::relay::StoredMessage;
use amp_store::{AckOutcome, AgentRecord, EntryState, Store};

use crate::events;
use crate::render::StoredView;

/// Acknowledges `ids` in `agent`'s mailbox and sends a `message.delivered` receipt for each
/// newly acknowledged message whose sender asked for one and has not had it yet.
///
/// Fails only on store errors (the acknowledgement itself is atomic per call).
pub async fn ack(
    store: &Store,
    bus: &Bus,
    domain: &str,
    agent: &AgentRecord,
    ids: &[String],
    now: i64,
) -> Result<Vec<AckOutcome>, amp_store::Error> {
    // Read first: the entry leaves the mailbox with the ack, and with it the receipt flag.
    // Only the flag is read (a borrowed view); the few messages that want a receipt are parsed.
    let mut wanting = Vec::new();
    for id in ids {
        if let Some(EntryState::Queued(e)) = store.entry(&agent.id, id, now).await?
            && StoredView::parse(&e.data).is_ok_and(|v| v.receipt)
            && let Ok(m) = serde_json::from_str::<StoredMessage>(&e.data)
        {
            wanting.push(m);
        }
    }
    let out = store.ack(&agent.id, ids, now).await?;
    for m in wanting {
        let newly = ids
            .iter()
            .zip(&out)
            .any(|(id, o)| *id == m.envelope.id.as_str() && *o == AckOutcome::Acked);
        if newly
            && let Err(e) =
                events::delivered_receipt(store, bus, domain, agent, &m, "relay", "mailbox_written")
                    .await
        {
            tracing::warn!(error = %e, "delivery receipt not retained");
        }
    }
    Ok(out)
}
