//! [`Mailboxes`] on the embedded fjall store: rows by (agent, seq), an id index kept after
//! an ack as a tombstone until the message's expiry (a late retry is still recognised), a
//! small meta row per mailbox (head, queued count, floor, the lowest queued seq), and an expiry index by time that
//! drives bulk purging.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::keys::{self, Key};
use super::kv::kv_delete_in;
use super::writer::Tx;
use super::{FjallStore, Reads, from_json, row, to_json};
use crate::embedded::queued_id_without_row;
use crate::mailbox_row;
use crate::*;

/// A mailbox's counters.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct MailboxMeta {
    /// The last seq assigned.
    head: u64,
    /// Queued entries (expired ones until purged included).
    count: u64,
    /// The highest seq purged on expiry.
    floor: u64,
    /// No queued row lies below this seq: where reads of the queue start, so a mailbox
    /// drained by acknowledgements is not read through the tombstones of its acknowledged
    /// rows (an LSM tree keeps them until compaction). Moved on by [`Mailboxes::ack`]; 0 in a
    /// meta row written before it existed (every read then starts at the first seq).
    #[serde(default)]
    low: u64,
}

/// What the id index knows of a message, queued or acknowledged.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct IndexEntry {
    /// Its position in the mailbox.
    pub(super) seq: u64,
    /// Who sent it (a repeat is told from a conflict by sender and signature).
    sender: String,
    /// The signature it was sent with.
    signature: String,
    /// Acknowledged: the row is gone, this entry is the tombstone.
    acked: bool,
    /// When it expires (the tombstone with it).
    pub(super) expires_at: Millis,
}

/// The `mailbox` (and `receipts`) key of a position.
pub(super) fn seq_key(agent_id: &str, seq: u64) -> Vec<u8> {
    Key::new().str(agent_id).u64(seq).done()
}

/// The `msg_index` key of a message.
fn index_key(agent_id: &str, message_id: &str) -> Vec<u8> {
    Key::new().str(agent_id).str(message_id).done()
}

/// The `expiry` key of a message.
fn expiry_key(expires_at: Millis, agent_id: &str, seq: u64) -> Vec<u8> {
    Key::new().i64(expires_at).str(agent_id).u64(seq).done()
}

/// The meta row of a mailbox (zeros when it has none).
fn read_meta(r: &impl Reads, agent: &str) -> Result<MailboxMeta> {
    match r.get(&r.ks().mbox_meta, &keys::one(agent))? {
        Some(v) => from_json(&v),
        None => Ok(MailboxMeta::default()),
    }
}

/// Writes the meta row of a mailbox.
fn write_meta(txn: &mut Tx<'_>, agent: &str, meta: &MailboxMeta) -> Result<()> {
    txn.insert(&txn.ks.mbox_meta, &keys::one(agent), &to_json(meta)?)
}

/// The index entry of a message.
fn read_index(r: &impl Reads, agent_id: &str, message_id: &str) -> Result<Option<IndexEntry>> {
    match r.get(&r.ks().msg_index, &index_key(agent_id, message_id))? {
        Some(v) => Ok(Some(from_json(&v)?)),
        None => Ok(None),
    }
}

/// Every id an agent's index knows, with its entry.
pub(super) fn index_of(r: &impl Reads, agent_id: &str) -> Result<Vec<(String, IndexEntry)>> {
    let mut out = Vec::new();
    for g in r.prefix(&r.ks().msg_index, &keys::one(agent_id)) {
        let (k, v) = row(g)?;
        let mut key = keys::Reader::new(&k);
        key.str()?;
        out.push((key.str()?, from_json(&v)?));
    }
    Ok(out)
}

/// Deletes every mailbox row, index entry, expiry entry and message marker of an agent.
pub(super) fn delete_mailbox_in(txn: &mut Tx<'_>, agent_id: &str) -> Result<()> {
    let known = index_of(txn, agent_id)?;
    for (id, e) in &known {
        txn.remove(&txn.ks.msg_index, &index_key(agent_id, id))?;
        txn.remove(&txn.ks.expiry, &expiry_key(e.expires_at, agent_id, e.seq))?;
        txn.remove(&txn.ks.mailbox, &seq_key(agent_id, e.seq))?;
    }
    for (id, _) in &known {
        for kind in MESSAGE_MARKERS {
            kv_delete_in(txn, &message_marker(kind, agent_id, id))?;
        }
    }
    txn.remove(&txn.ks.mbox_meta, &keys::one(agent_id))
}

/// The keys of every row of `agent_id` in a keyspace keyed by (agent, seq), up to `upto`.
pub(super) fn seq_keys_upto(
    r: &impl Reads,
    ks: &::fjall::SingleWriterTxKeyspace,
    agent_id: &str,
    upto: u64,
) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for g in r.range(ks, seq_key(agent_id, 0)..=seq_key(agent_id, upto)) {
        out.push(g.key().map_err(super::st)?.to_vec());
    }
    Ok(out)
}

#[async_trait]
impl Mailboxes for FjallStore {
    async fn enqueue(&self, e: NewMailboxEntry) -> Result<Enqueued> {
        self.writer
            .write(move |txn| {
                if let Some(i) = read_index(txn, &e.agent_id, &e.message_id)? {
                    return Ok(if i.sender == e.sender && i.signature == e.signature {
                        Enqueued::Duplicate { seq: i.seq }
                    } else {
                        Enqueued::Conflict
                    });
                }
                let mut meta = read_meta(txn, &e.agent_id)?;
                if e.max_queued.is_some_and(|max| meta.count >= max) {
                    return Ok(Enqueued::Full);
                }
                meta.head += 1;
                meta.count += 1;
                let seq = meta.head;
                let entry = MailboxEntry {
                    seq,
                    message_id: e.message_id.clone(),
                    sender: e.sender.clone(),
                    data: e.data,
                    queued_at: e.queued_at,
                    expires_at: e.expires_at,
                };
                let ie = IndexEntry {
                    seq,
                    sender: e.sender,
                    signature: e.signature,
                    acked: false,
                    expires_at: e.expires_at,
                };
                txn.insert(
                    &txn.ks.msg_index,
                    &index_key(&e.agent_id, &e.message_id),
                    &to_json(&ie)?,
                )?;
                txn.insert(
                    &txn.ks.mailbox,
                    &seq_key(&e.agent_id, seq),
                    &mailbox_row::encode(&entry),
                )?;
                txn.insert(
                    &txn.ks.expiry,
                    &expiry_key(e.expires_at, &e.agent_id, seq),
                    e.message_id.as_bytes(),
                )?;
                write_meta(txn, &e.agent_id, &meta)?;
                Ok(Enqueued::New { seq })
            })
            .await
    }

    async fn entry(
        &self,
        agent_id: &str,
        message_id: &str,
        now: Millis,
    ) -> Result<Option<EntryState>> {
        let r = self.read()?;
        let Some(i) = read_index(&r, agent_id, message_id)? else {
            return Ok(None);
        };
        if i.acked {
            return Ok(Some(EntryState::Acked { sender: i.sender }));
        }
        match r.get(&r.ks().mailbox, &seq_key(agent_id, i.seq))? {
            Some(v) => {
                let e = mailbox_row::decode(&v)?;
                Ok((e.expires_at > now).then_some(EntryState::Queued(e)))
            }
            None => Ok(None),
        }
    }

    async fn fetch(
        &self,
        agent_id: &str,
        after: Option<u64>,
        limit: usize,
        now: Millis,
    ) -> Result<MailboxPage> {
        // O(page), not O(mailbox): `remaining` comes from the mailbox's queued count, less what
        // lies at or before the page's end (rows behind a cursor are counted by key only, and
        // are few when the client acknowledges as it goes). Expired rows not yet purged are
        // skipped, and counted out where the scan meets them.
        let r = self.read()?;
        let meta = read_meta(&r, agent_id)?;
        let mailbox = &r.ks().mailbox;
        let mut behind = 0u64;
        if let Some(a) = after
            && a >= meta.low
        {
            for g in r.range(mailbox, seq_key(agent_id, meta.low)..=seq_key(agent_id, a)) {
                g.key().map_err(super::st)?;
                behind += 1;
            }
        }
        let start = after.unwrap_or(0).saturating_add(1).max(meta.low);
        let mut entries = Vec::with_capacity(limit.min(1024));
        let mut expired = 0u64;
        let mut more = false;
        for g in r.range(
            mailbox,
            seq_key(agent_id, start)..=seq_key(agent_id, u64::MAX),
        ) {
            let (_, v) = row(g)?;
            if entries.len() >= limit {
                more = true;
                break;
            }
            // Expiry is read from the row's header: an expired row is never decoded.
            let (_, expires_at) = mailbox_row::times(&v)?;
            if expires_at > now {
                entries.push(mailbox_row::decode(&v)?);
            } else {
                expired += 1;
            }
        }
        let remaining = if more {
            meta.count
                .saturating_sub(behind + entries.len() as u64 + expired)
                .max(1)
        } else {
            0
        };
        Ok(MailboxPage {
            entries,
            remaining,
            head: meta.head,
        })
    }

    async fn count(&self, agent_id: &str, now: Millis) -> Result<MailboxCount> {
        // O(1) in the common case: the queued count, less expired rows at the front (with the
        // default TTL, expiry follows queue order) until the first live one.
        let r = self.read()?;
        let meta = read_meta(&r, agent_id)?;
        let mut expired = 0u64;
        let mut oldest = None;
        for g in r.range(
            &r.ks().mailbox,
            seq_key(agent_id, meta.low)..=seq_key(agent_id, u64::MAX),
        ) {
            let (_, v) = row(g)?;
            let (queued_at, expires_at) = mailbox_row::times(&v)?;
            if expires_at > now {
                oldest = Some(queued_at);
                break;
            }
            expired += 1;
        }
        Ok(MailboxCount {
            count: if oldest.is_some() {
                meta.count.saturating_sub(expired)
            } else {
                0
            },
            oldest_queued_at: oldest,
            head: meta.head,
            floor: meta.floor,
        })
    }

    async fn ack(&self, agent_id: &str, message_ids: &[String], now: Millis) -> Result<Vec<Acked>> {
        let agent_id = agent_id.to_owned();
        let ids = message_ids.to_vec();
        self.writer
            .write(move |txn| {
                let mut meta = read_meta(txn, &agent_id)?;
                let mut out = Vec::with_capacity(ids.len());
                let mut changed = false;
                for id in &ids {
                    let acked = match read_index(txn, &agent_id, id)? {
                        None => Acked::not_found(),
                        Some(i) if i.acked => Acked::already_acked(),
                        Some(i) if i.expires_at <= now => Acked::not_found(),
                        Some(mut i) => {
                            // The row is the entry the caller is told about: taken, not
                            // read beforehand (the caller's size and receipt come from it).
                            let Some(row) =
                                txn.take(&txn.ks.mailbox, &seq_key(&agent_id, i.seq))?
                            else {
                                out.push(queued_id_without_row(&agent_id, id, i.seq));
                                continue;
                            };
                            let removed = mailbox_row::decode(&row)?;
                            i.acked = true;
                            txn.insert(
                                &txn.ks.msg_index,
                                &index_key(&agent_id, id),
                                &to_json(&i)?,
                            )?;
                            meta.count = meta.count.saturating_sub(1);
                            changed = true;
                            Acked::newly(removed)
                        }
                    };
                    out.push(acked);
                }
                if changed {
                    // The first queued row from the old bound on: acknowledged in order, the
                    // scan crosses this batch's removals only.
                    let first = match txn
                        .range(
                            &txn.ks.mailbox,
                            seq_key(&agent_id, meta.low)..=seq_key(&agent_id, u64::MAX),
                        )
                        .next()
                    {
                        Some(g) => {
                            let key = g.key().map_err(super::st)?;
                            let mut k = keys::Reader::new(&key);
                            k.str()?;
                            k.u64()?
                        }
                        None => meta.head + 1,
                    };
                    meta.low = meta.low.max(first);
                    write_meta(txn, &agent_id, &meta)?;
                }
                Ok(out)
            })
            .await
    }

    async fn purge_expired(&self, now: Millis, max: usize) -> Result<usize> {
        self.writer
            .write(move |txn| {
                // Everything with an expiry at or before `now`: keys below (now + 1, "").
                let upto = Key::new().i64(now.saturating_add(1)).done();
                let mut due = Vec::new();
                for g in txn.range(&txn.ks.expiry, ..upto.clone()) {
                    if due.len() >= max {
                        break;
                    }
                    let (k, v) = row(g)?;
                    let mut key = keys::Reader::new(&k);
                    let (t, agent, seq) = (key.i64()?, key.str()?, key.u64()?);
                    let id =
                        String::from_utf8(v.to_vec()).map_err(|e| Error::Corrupt(e.to_string()))?;
                    due.push((t, agent, seq, id));
                }
                for (t, agent, seq, id) in &due {
                    txn.remove(&txn.ks.expiry, &expiry_key(*t, agent, *seq))?;
                    txn.remove(&txn.ks.msg_index, &index_key(agent, id))?;
                    let was_queued = txn.take(&txn.ks.mailbox, &seq_key(agent, *seq))?.is_some();
                    let mut meta = read_meta(txn, agent)?;
                    if was_queued {
                        meta.count = meta.count.saturating_sub(1);
                    }
                    meta.floor = meta.floor.max(*seq);
                    write_meta(txn, agent, &meta)?;
                }
                // Expired kv entries (per-message markers), in the same bounded sweep.
                let mut kv_due = Vec::new();
                for g in txn.range(&txn.ks.kv_expiry, ..upto) {
                    if due.len() + kv_due.len() >= max {
                        break;
                    }
                    let (k, _) = row(g)?;
                    let mut key = keys::Reader::new(&k);
                    kv_due.push((key.i64()?, key.str()?));
                }
                for (t, key) in &kv_due {
                    txn.remove(&txn.ks.kv_expiry, &Key::new().i64(*t).str(key).done())?;
                    txn.remove(&txn.ks.kv_expires, &keys::one(key))?;
                    txn.remove(&txn.ks.kv, &keys::one(key))?;
                }
                Ok(due.len() + kv_due.len())
            })
            .await
    }

    async fn delete_mailbox(&self, agent_id: &str) -> Result<()> {
        let agent_id = agent_id.to_owned();
        self.writer
            .write(move |txn| delete_mailbox_in(txn, &agent_id))
            .await
    }
}
