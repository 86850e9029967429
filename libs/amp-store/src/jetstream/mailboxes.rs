//! [`Mailboxes`] on the `AMP_MAILBOX` stream (one subject per agent) and the
//! `amp_mailbox_index` bucket.
//!
//! - **seq** is the stream sequence: assigned by JetStream, increasing per agent, never
//!   reused. `head` is the larger of the subject's last sequence and the highest sequence
//!   acknowledged or purged (kept in `meta.<agent>`, so acks never move it back).
//! - **enqueue** creates the index entry `idx.<agent>.<id>` first (create-only: the first
//!   writer of an (agent, id) wins; a second sees it and answers `Duplicate` or `Conflict`),
//!   then publishes the message with `Nats-Msg-Id = <agent>/<id>/<index revision>`, then
//!   records the sequence in the index entry (compare-and-set). A crash in between leaves a
//!   pending entry; the retry (the router redelivers: no 2xx was given) finds it and finishes
//!   the job: within JetStream's dedup window the republish returns the first copy's
//!   sequence, later it first looks for a copy in the agent's subject (rare, O(mailbox)), so
//!   a mailbox never holds two copies of one id. A pending entry is not yet an accepted
//!   message: `entry`, `ack` treat it as absent.
//! - **Quota** (`max_queued`): the count is the subject's message count, read from the
//!   stream itself (no counter to drift after a crash), and the publish carries
//!   `Nats-Expected-Last-Subject-Sequence` = the last sequence read before counting, so a
//!   concurrent enqueue to the same mailbox makes it retry: never more than `max_queued`.
//!   A refused enqueue takes back its index entry (compare-and-set delete).
//! - **fetch** is one batched direct get on the agent's subject from `after + 1` (no
//!   consumer is created), skipping expired entries; `remaining` is the server's count of
//!   matching messages after the last one returned (expired, unpurged ones included).
//! - **ack** deletes the stream message **first**, then marks the index entry acked
//!   (compare-and-set; kept as a tombstone until the message's expiry by `Nats-TTL`). Once the
//!   message is gone it is never served again, whatever happens next; an index entry still
//!   queued whose message is gone reads as acknowledged. Deleting at once (rather than an
//!   ack floor) suits mailboxes acked out of order; JetStream reclaims deleted messages by
//!   block compaction, not one write per delete.
//! - **Expiry**: every message and index entry carries `Nats-TTL` (its expiry plus a margin),
//!   so the server drops them on its own; `purge_expired` removes what is expired by the
//!   caller's clock from the front of the stream (bounded scan), raising each agent's floor.

use std::collections::HashMap;

use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::JetStreamStore;
use super::conn::{Conflict, DEDUP_WINDOW, Expect, MAX_BATCH, Raw, tok, ttl_until, untok};
use super::registry::{MAX_RETRIES, contention};
use crate::*;

/// The per-message facts kept in the index (the idempotency key and the ack state).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexEntry {
    /// The stream sequence, once the message is in the mailbox.
    seq: Option<u64>,
    sender: String,
    signature: String,
    acked: bool,
    expires_at: Millis,
    /// Wall-clock time the entry was created (to tell an old pending entry).
    created_at: Millis,
}

/// Per-agent positions that must not move back.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Meta {
    head: u64,
    floor: u64,
}

/// The `Amp-Entry` header of a mailbox message.
#[derive(Debug, Serialize, Deserialize)]
struct EntryHeader {
    id: String,
    sender: String,
    queued_at: Millis,
    expires_at: Millis,
}

const ENTRY_HEADER: &str = "Amp-Entry";

fn idx_key(agent: &str, id: &str) -> String {
    format!("idx.{}.{}", tok(agent), tok(id))
}

fn meta_key(agent: &str) -> String {
    format!("meta.{}", tok(agent))
}

fn parse_entry(raw: Raw) -> Result<MailboxEntry> {
    let h: EntryHeader = raw
        .header(ENTRY_HEADER)
        .ok_or_else(|| Error::Corrupt(format!("mailbox message {} without header", raw.seq)))
        .and_then(|v| serde_json::from_str(v).map_err(|e| Error::Corrupt(e.to_string())))?;
    let data =
        String::from_utf8(raw.payload.to_vec()).map_err(|e| Error::Corrupt(e.to_string()))?;
    Ok(MailboxEntry {
        seq: raw.seq,
        message_id: h.id,
        sender: h.sender,
        data,
        queued_at: h.queued_at,
        expires_at: h.expires_at,
    })
}

impl JetStreamStore {
    /// How many messages the agent's subject holds (expired, unpurged ones included).
    async fn subject_count(&self, subject: &str) -> Result<u64> {
        let b = self.conn.batch(&self.mailbox, subject, 0, 1).await?;
        Ok(if b.messages.is_empty() {
            0
        } else {
            b.pending + 1
        })
    }

    /// The last sequence on the agent's subject (0 when empty).
    async fn subject_last(&self, subject: &str) -> Result<u64> {
        Ok(self
            .conn
            .direct_get(&self.mailbox, json!({ "last_by_subj": subject }))
            .await?
            .map_or(0, |r| r.seq))
    }

    async fn meta(&self, agent_id: &str) -> Result<Meta> {
        Ok(self
            .conn
            .kv_get_json::<Meta>(&self.index, &meta_key(agent_id))
            .await?
            .0
            .unwrap_or_default())
    }

    /// Raises the agent's remembered head and floor to at least these values.
    async fn raise_meta(&self, agent_id: &str, head: u64, floor: u64) -> Result<()> {
        let key = meta_key(agent_id);
        for _ in 0..MAX_RETRIES {
            let (meta, rev) = self.conn.kv_get_json::<Meta>(&self.index, &key).await?;
            let meta = meta.unwrap_or_default();
            if meta.head >= head && meta.floor >= floor {
                return Ok(());
            }
            let new = Meta {
                head: meta.head.max(head),
                floor: meta.floor.max(floor),
            };
            match self
                .conn
                .kv_put_json(&self.index, &key, &new, Expect::Revision(rev), None)
                .await?
            {
                Ok(_) => return Ok(()),
                Err(Conflict) => continue,
            }
        }
        Err(contention("mailbox meta"))
    }

    async fn head(&self, agent_id: &str, subject: &str) -> Result<(u64, Meta)> {
        let (last, meta) = tokio::try_join!(self.subject_last(subject), self.meta(agent_id))?;
        Ok((last.max(meta.head), meta))
    }

    /// Publishes the entry (under the quota, if any); `None` when the mailbox is full.
    /// The in-process lock of `agent_id`'s mailbox (a stripe shared with other agents).
    fn mailbox_lock(&self, agent_id: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        agent_id.hash(&mut h);
        &self.mailbox_locks[(h.finish() as usize) % self.mailbox_locks.len()]
    }

    async fn publish_entry(
        &self,
        e: &NewMailboxEntry,
        subject: &str,
        index_rev: u64,
    ) -> Result<Option<u64>> {
        let header = serde_json::to_string(&EntryHeader {
            id: e.message_id.clone(),
            sender: e.sender.clone(),
            queued_at: e.queued_at,
            expires_at: e.expires_at,
        })
        .map_err(|err| Error::Corrupt(err.to_string()))?;
        let msg_id = format!("{}/{}/{index_rev}", tok(&e.agent_id), tok(&e.message_id));
        let ttl = format!("{}s", ttl_until(e.expires_at).as_secs().max(1));
        let _serial = match e.max_queued {
            Some(_) => Some(self.mailbox_lock(&e.agent_id).lock().await),
            None => None,
        };
        for attempt in 0..MAX_RETRIES {
            if attempt > 0 {
                super::backoff(attempt).await;
            }
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id.as_str());
            headers.insert(ENTRY_HEADER, header.as_str());
            headers.insert("Nats-TTL", ttl.as_str());
            if let Some(max) = e.max_queued {
                // Last first, then count: if anything lands in between, the expectation
                // fails and we count again; deletions only lower the count.
                let last = self.subject_last(subject).await?;
                if self.subject_count(subject).await? >= max {
                    return Ok(None);
                }
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    last.to_string().as_str(),
                );
            }
            match self
                .conn
                .publish(subject.to_owned(), headers, Bytes::from(e.data.clone()))
                .await?
            {
                Ok(ack) => return Ok(Some(ack.sequence)),
                Err(Conflict) => continue,
            }
        }
        Err(contention("mailbox enqueue"))
    }

    /// The sequence of a copy of `message_id` already in the agent's subject.
    async fn find_in_mailbox(&self, subject: &str, message_id: &str) -> Result<Option<u64>> {
        let mut start = 0;
        loop {
            let b = self
                .conn
                .batch(&self.mailbox, subject, start, MAX_BATCH)
                .await?;
            let Some(last) = b.messages.last() else {
                return Ok(None);
            };
            start = last.seq + 1;
            for raw in b.messages {
                let seq = raw.seq;
                if parse_entry(raw)?.message_id == message_id {
                    return Ok(Some(seq));
                }
            }
            if b.pending == 0 {
                return Ok(None);
            }
        }
    }

    /// Writes the message of a pending index entry and records its sequence. `None` when a
    /// concurrent writer changed the entry first (the caller starts over).
    async fn complete_enqueue(
        &self,
        e: &NewMailboxEntry,
        pending: IndexEntry,
        rev: u64,
        fresh: bool,
    ) -> Result<Option<Enqueued>> {
        let subject = self.mailbox_subject(&e.agent_id);
        let key = idx_key(&e.agent_id, &e.message_id);
        let window = DEDUP_WINDOW.as_millis() as Millis;
        let mut seq = None;
        if !fresh && super::wall_ms().saturating_sub(pending.created_at) >= window / 2 {
            seq = self.find_in_mailbox(&subject, &e.message_id).await?;
        }
        let seq = match seq {
            Some(s) => s,
            None => match self.publish_entry(e, &subject, rev).await? {
                Some(s) => s,
                None => {
                    return match self.conn.kv_delete_if(&self.index, &key, rev).await? {
                        Ok(()) => Ok(Some(Enqueued::Full)),
                        Err(Conflict) => Ok(None),
                    };
                }
            },
        };
        let outcome = if fresh {
            Enqueued::New { seq }
        } else {
            Enqueued::Duplicate { seq }
        };
        let done = IndexEntry {
            seq: Some(seq),
            ..pending
        };
        let ttl = Some(ttl_until(e.expires_at));
        match self
            .conn
            .kv_put_json(&self.index, &key, &done, Expect::Revision(rev), ttl)
            .await?
        {
            Ok(_) => Ok(Some(outcome)),
            Err(Conflict) => {
                // A concurrent attempt finished it: with the same Nats-Msg-Id, the same copy.
                let (now, _) = self
                    .conn
                    .kv_get_json::<IndexEntry>(&self.index, &key)
                    .await?;
                Ok(now.filter(|n| n.seq == Some(seq)).map(|_| outcome))
            }
        }
    }
}

#[async_trait]
impl Mailboxes for JetStreamStore {
    async fn enqueue(&self, e: NewMailboxEntry) -> Result<Enqueued> {
        let key = idx_key(&e.agent_id, &e.message_id);
        for attempt in 0..MAX_RETRIES {
            if attempt > 0 {
                super::backoff(attempt).await;
            }
            let (found, rev) = self
                .conn
                .kv_get_json::<IndexEntry>(&self.index, &key)
                .await?;
            let done = match found {
                Some(i) if i.sender != e.sender || i.signature != e.signature => {
                    return Ok(Enqueued::Conflict);
                }
                Some(IndexEntry { seq: Some(seq), .. }) => return Ok(Enqueued::Duplicate { seq }),
                // An earlier attempt stopped half-way: finish it.
                Some(pending) => self.complete_enqueue(&e, pending, rev, false).await?,
                None => {
                    let pending = IndexEntry {
                        seq: None,
                        sender: e.sender.clone(),
                        signature: e.signature.clone(),
                        acked: false,
                        expires_at: e.expires_at,
                        created_at: super::wall_ms(),
                    };
                    let ttl = Some(ttl_until(e.expires_at));
                    match self
                        .conn
                        .kv_put_json(&self.index, &key, &pending, Expect::Revision(rev), ttl)
                        .await?
                    {
                        Ok(rev) => self.complete_enqueue(&e, pending, rev, true).await?,
                        Err(Conflict) => None,
                    }
                }
            };
            if let Some(outcome) = done {
                return Ok(outcome);
            }
        }
        Err(contention("mailbox enqueue"))
    }

    async fn entry(
        &self,
        agent_id: &str,
        message_id: &str,
        now: Millis,
    ) -> Result<Option<EntryState>> {
        let (found, _) = self
            .conn
            .kv_get_json::<IndexEntry>(&self.index, &idx_key(agent_id, message_id))
            .await?;
        let Some(i) = found else {
            return Ok(None);
        };
        if i.acked {
            return Ok(Some(EntryState::Acked { sender: i.sender }));
        }
        let Some(seq) = i.seq else {
            return Ok(None);
        };
        let subject = self.mailbox_subject(agent_id);
        match self
            .conn
            .direct_get(&self.mailbox, json!({ "seq": seq }))
            .await?
        {
            Some(raw) if raw.subject == subject => {
                let e = parse_entry(raw)?;
                Ok((e.expires_at > now).then_some(EntryState::Queued(e)))
            }
            // Gone but not marked: an ack deleted it and stopped before marking, or it expired.
            _ if i.expires_at > super::wall_ms() => {
                Ok(Some(EntryState::Acked { sender: i.sender }))
            }
            _ => Ok(None),
        }
    }

    async fn fetch(
        &self,
        agent_id: &str,
        after: Option<u64>,
        limit: usize,
        now: Millis,
    ) -> Result<MailboxPage> {
        let subject = self.mailbox_subject(agent_id);
        let read = async {
            let mut start = after.map_or(0, |a| a.saturating_add(1));
            let mut entries = Vec::new();
            if limit == 0 {
                let b = self.conn.batch(&self.mailbox, &subject, start, 1).await?;
                let remaining = if b.messages.is_empty() {
                    0
                } else {
                    b.pending + 1
                };
                return Ok((entries, remaining));
            }
            loop {
                let want = (limit - entries.len()).clamp(1, MAX_BATCH);
                let b = self
                    .conn
                    .batch(&self.mailbox, &subject, start, want)
                    .await?;
                let Some(last) = b.messages.last() else {
                    return Ok((entries, 0));
                };
                start = last.seq + 1;
                for raw in b.messages {
                    let pending: u64 = raw
                        .header("Nats-Num-Pending")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let e = parse_entry(raw)?;
                    if e.expires_at > now {
                        entries.push(e);
                        if entries.len() >= limit {
                            return Ok((entries, pending));
                        }
                    }
                }
                if b.pending == 0 {
                    return Ok((entries, 0));
                }
            }
        };
        let ((entries, remaining), (head, _)) =
            tokio::try_join!(read, self.head(agent_id, &subject))?;
        let head = entries.last().map_or(head, |e| head.max(e.seq));
        Ok(MailboxPage {
            entries,
            remaining,
            head,
        })
    }

    async fn count(&self, agent_id: &str, now: Millis) -> Result<MailboxCount> {
        let subject = self.mailbox_subject(agent_id);
        let scan = async {
            // The total, less expired entries at the front until the first live one (with
            // the default TTL, expiry follows queue order).
            let mut start = 0;
            let mut total = None;
            let mut expired = 0u64;
            loop {
                let b = self.conn.batch(&self.mailbox, &subject, start, 64).await?;
                let Some(last) = b.messages.last() else {
                    return Ok((0, None));
                };
                start = last.seq + 1;
                for raw in b.messages {
                    let pending: u64 = raw
                        .header("Nats-Num-Pending")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let all = *total.get_or_insert(pending + 1);
                    let e = parse_entry(raw)?;
                    if e.expires_at > now {
                        return Ok((all.saturating_sub(expired), Some(e.queued_at)));
                    }
                    expired += 1;
                }
                if b.pending == 0 {
                    return Ok((0, None));
                }
            }
        };
        let ((count, oldest), (head, meta)) =
            tokio::try_join!(scan, self.head(agent_id, &subject))?;
        Ok(MailboxCount {
            count,
            oldest_queued_at: oldest,
            head,
            floor: meta.floor,
        })
    }

    async fn ack(
        &self,
        agent_id: &str,
        message_ids: &[String],
        now: Millis,
    ) -> Result<Vec<AckOutcome>> {
        let mut out = Vec::with_capacity(message_ids.len());
        let mut top = 0;
        for id in message_ids {
            let key = idx_key(agent_id, id);
            let mut outcome = None;
            let mut deleted = false;
            for _ in 0..MAX_RETRIES {
                let (found, rev) = self
                    .conn
                    .kv_get_json::<IndexEntry>(&self.index, &key)
                    .await?;
                let i = match found {
                    None => break,
                    Some(i) if i.acked => {
                        outcome = Some(AckOutcome::AlreadyAcked);
                        break;
                    }
                    Some(i) if i.expires_at <= now => break,
                    Some(i) => i,
                };
                // Pending: not yet accepted into the mailbox.
                let Some(seq) = i.seq else {
                    break;
                };
                // Delete first: from here on it is never served again.
                deleted |= self.conn.delete_message(&self.mailbox, seq).await?;
                let ttl = Some(ttl_until(i.expires_at));
                let marked = IndexEntry { acked: true, ..i };
                match self
                    .conn
                    .kv_put_json(&self.index, &key, &marked, Expect::Revision(rev), ttl)
                    .await?
                {
                    Ok(_) => {
                        top = top.max(seq);
                        // Gone before we came (an ack that stopped before marking): it was
                        // acknowledged then.
                        outcome = Some(if deleted {
                            AckOutcome::Acked
                        } else {
                            AckOutcome::AlreadyAcked
                        });
                        break;
                    }
                    Err(Conflict) => continue,
                }
            }
            out.push(outcome.unwrap_or(AckOutcome::NotFound));
        }
        if top > 0 {
            self.raise_meta(agent_id, top, 0).await?;
        }
        Ok(out)
    }

    async fn purge_expired(&self, now: Millis, max: usize) -> Result<usize> {
        // Bounded: at most this many messages looked at per call. The server's TTLs do the
        // bulk of expiry on their own; this catches what is due by the caller's clock.
        let budget = max.saturating_mul(4).clamp(1_024, 100_000);
        let filter = self.conn.subject("amp.mbox.>");
        let mut start = 0;
        let mut scanned = 0;
        let mut purged = 0;
        let mut floors: HashMap<String, u64> = HashMap::new();
        'scan: while scanned < budget && purged < max {
            let b = self
                .conn
                .batch(&self.mailbox, &filter, start, MAX_BATCH)
                .await?;
            let Some(last) = b.messages.last() else {
                break;
            };
            start = last.seq + 1;
            for raw in b.messages {
                scanned += 1;
                let Some(agent) = raw.subject.rsplit('.').next().map(untok).transpose()? else {
                    continue;
                };
                let e = parse_entry(raw)?;
                if e.expires_at > now {
                    continue;
                }
                self.conn.delete_message(&self.mailbox, e.seq).await?;
                self.conn
                    .kv_delete(&self.index, &idx_key(&agent, &e.message_id))
                    .await?;
                let f = floors.entry(agent).or_default();
                *f = (*f).max(e.seq);
                purged += 1;
                if purged >= max {
                    break 'scan;
                }
            }
            if b.pending == 0 {
                break;
            }
        }
        for (agent, floor) in floors {
            self.raise_meta(&agent, floor, floor).await?;
        }
        Ok(purged)
    }

    async fn delete_mailbox(&self, agent_id: &str) -> Result<()> {
        // Messages first (nothing can be served after), then the index and meta.
        self.conn
            .purge(&self.mailbox, &self.mailbox_subject(agent_id), None)
            .await?;
        self.conn
            .kv_delete_prefix(&self.index, &format!("idx.{}", tok(agent_id)))
            .await?;
        self.conn.kv_delete(&self.index, &meta_key(agent_id)).await
    }
}
