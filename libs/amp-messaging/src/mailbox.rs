//! The recipient's side of a mailbox that several services share: the acknowledgement (one
//! idempotent transition, whether it comes from REST or a WebSocket frame), with the delivery
//! receipts it triggers; and reading the mailbox a page at a time within a byte budget
//! (pickup, WebSocket replay and sweeps).

use amp_bus::Bus;
use amp_proto::relay::StoredMessage;
use amp_store::{AckOutcome, AgentRecord, MailboxEntry, MailboxPage, Store};

use crate::events;
use crate::render::StoredView;
use crate::usage::Meter;

/// Acknowledges `ids` in `agent`'s mailbox and sends a `message.delivered` receipt for each
/// newly acknowledged message whose sender asked for one and has not had it yet; the bytes
/// that left the mailbox are counted off the tenant's in `meter` (`stored_bytes`).
///
/// Fails only on store errors (the acknowledgement itself is atomic per call).
pub async fn ack(
    store: &Store,
    bus: &Bus,
    meter: &Meter,
    domain: &str,
    agent: &AgentRecord,
    ids: &[String],
    now: i64,
) -> Result<Vec<AckOutcome>, amp_store::Error> {
    // The store returns what each acknowledgement removed: its size, expiry and receipt flag
    // come from there, not from a read of every id beforehand. Only the flag is read (a
    // borrowed view); the few messages that want a receipt are parsed.
    let acked = store.ack(&agent.id, ids, now).await?;
    let mut wanting = Vec::new();
    let mut newly = 0u64;
    for e in acked.iter().filter_map(|a| a.removed.as_ref()) {
        newly += 1;
        meter.held_removed(&agent.tenant, e.data.len() as u64, e.expires_at);
        if StoredView::parse(&e.data).is_ok_and(|v| v.receipt)
            && let Ok(m) = serde_json::from_str::<StoredMessage>(&e.data)
        {
            wanting.push(m);
        }
    }
    metrics::counter!("amp_mailbox_acked_total").increment(newly);
    for m in wanting {
        if let Err(e) =
            events::delivered_receipt(store, bus, domain, agent, &m, "relay", "mailbox_written")
                .await
        {
            tracing::warn!(error = %e, "delivery receipt not retained");
        }
    }
    Ok(acked.into_iter().map(|a| a.outcome).collect())
}

/// Counts the bytes queued in `agent`'s mailbox off its tenant's in `meter`, before the
/// mailbox is deleted (an agent's deregistration; a tenant's deletion removes its ledgers
/// whole instead): one pass over the queued entries, a page at a time.
///
/// Fails when the store cannot be read (nothing is counted off then).
pub async fn release_held(
    store: &Store,
    meter: &Meter,
    agent: &AgentRecord,
    now: i64,
) -> Result<(), amp_store::Error> {
    const PAGE: usize = 200;
    let mut sizes = Vec::new();
    let mut after = None;
    loop {
        let page = store.fetch(&agent.id, after, PAGE, now).await?;
        let n = page.entries.len();
        for e in page.entries {
            sizes.push((e.data.len() as u64, e.expires_at));
            after = Some(e.seq);
        }
        if n < PAGE || page.remaining == 0 {
            break;
        }
    }
    for (bytes, expires_at) in sizes {
        meter.held_removed(&agent.tenant, bytes, expires_at);
    }
    Ok(())
}

/// How much one page of a mailbox may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageBudget {
    /// Most entries.
    pub entries: usize,
    /// Most bytes of entries (their stored text and id, plus a fixed allowance each for the
    /// fields a rendered item adds). A page holds at least one entry whatever its size.
    pub bytes: usize,
}

/// Bytes an entry counts for in a [`PageBudget`]: its stored text, its id and the fixed
/// fields (times, cursor, keys) a rendered item adds.
pub fn entry_cost(entry: &MailboxEntry) -> usize {
    /// Keys, times and cursor of a rendered item.
    const ITEM_OVERHEAD: usize = 160;
    entry.data.len() + entry.message_id.len() + ITEM_OVERHEAD
}

/// The most bytes one stored entry can take: the message at its bound, plus the security
/// annotation beside it (whose wrapped copy of `payload.message` may be longer than the
/// original once JSON-escaped), the sender's key and the record's keys.
const WORST_ENTRY: usize = 2 * amp_proto::message::limits::TOTAL_BYTES;
/// Entries one store read may load however little of the budget is left: fewer would make a
/// page of small messages take many reads (round trips, on a networked store).
const READ_FLOOR: usize = 16;

/// Queued, unexpired entries after `after`, oldest first, within `budget`: a page that ends
/// early when its bytes run out, with `remaining` still exact (everything queued after the
/// page's last entry), so the next page continues at its last cursor.
///
/// Memory is bounded whatever the mailbox holds: the store is read in slices of at most
/// `max(READ_FLOOR, bytes left / WORST_ENTRY)` entries, so a page loads at most
/// `budget.bytes` plus one slice (16 MiB) — never a thousand large messages at once — and
/// sizes observed so far are never trusted to predict the next ones (a sender could put small
/// messages in front of large ones).
///
/// Fails on store errors.
pub async fn fetch_page(
    store: &Store,
    agent_id: &str,
    after: Option<u64>,
    budget: PageBudget,
    now: i64,
) -> Result<MailboxPage, amp_store::Error> {
    let max_entries = budget.entries.max(1);
    let mut entries: Vec<MailboxEntry> = Vec::new();
    let mut bytes = 0usize;
    let mut cursor = after;
    loop {
        let want = max_entries - entries.len();
        let read = (budget.bytes.saturating_sub(bytes) / WORST_ENTRY)
            .max(READ_FLOOR)
            .min(want);
        let slice = store.fetch(agent_id, cursor, read, now).await?;
        let got = slice.entries.len();
        let mut taken = 0usize;
        let mut full = false;
        for e in slice.entries {
            let cost = entry_cost(&e);
            if !entries.is_empty() && bytes + cost > budget.bytes {
                full = true;
                break;
            }
            bytes += cost;
            cursor = Some(e.seq);
            entries.push(e);
            taken += 1;
        }
        // What this slice read but the page did not take is still queued after its end.
        let remaining = slice.remaining + (got - taken) as u64;
        if full || got < read || entries.len() >= max_entries || remaining == 0 {
            return Ok(MailboxPage {
                entries,
                remaining,
                head: slice.head,
            });
        }
    }
}
