//! [`Mailboxes`] on the `AMP_MAILBOX` stream: one subject per message, so the stream itself
//! is the index.
//!
//! - **Subjects**: a queued message is `amp.mbox.<agent>.q.<id>`; its acknowledgement is a
//!   tombstone `amp.mbox.<agent>.a.<id>` (sender, signature and the message's `seq`, kept by
//!   `Nats-TTL` until the message's expiry). `amp.mbox.<agent>.*.<id>` is everything known
//!   about one id, `amp.mbox.<agent>.q.*` the mailbox, `amp.mbox.<agent>.>` the agent.
//! - **seq** is the stream sequence: assigned by JetStream, increasing per agent, never
//!   reused. `head` is the larger of the agent's last sequence (tombstones included) and the
//!   highest sequence acknowledged or purged (kept in `meta.<agent>` of the
//!   `amp_mailbox_index` bucket, so nothing moves it back once the server drops a tombstone).
//! - **enqueue** is one write, its own commit point: the message is published with
//!   `Nats-Expected-Last-Subject-Sequence` over the id's subjects (`0`: nothing about this id
//!   exists, neither queued nor acknowledged), or, for a mailbox near its quota, over the
//!   whole agent (the last sequence read before the id was looked up and the mailbox
//!   counted, so nothing for this agent, this id included, lands between the checks and the
//!   write). Nothing is read before the write but the count: a refused write reads what
//!   holds the id, and the same sender and signature is `Duplicate` (with the first copy's
//!   `seq`), anything else `Conflict`. A retry after a crash finds the message or
//!   writes it: a mailbox never holds two copies of one id, and no dedup window is involved.
//! - **Quota** (`max_queued`): the count is the mailbox's message count, read from the stream
//!   itself (no counter to drift after a crash). Far from the quota (more than
//!   `QUOTA_SLACK` below it) the count is all that is read and the id's expectation is the
//!   commit point: writers of one mailbox take turns within a process, so fewer writer
//!   processes than the slack cannot overshoot. Near the quota the agent-wide expectation
//!   makes a concurrent enqueue retry: never more than `max_queued`. A count this process
//!   read less than [`COUNT_TRUST`] ago, plus its own writes since, stands in for the read
//!   while it is below half of a quota of at least [`COUNT_HINT_MIN_QUOTA`] (`CountHints`):
//!   acks only lower the true count, so the hint can be short of it only by what other
//!   processes wrote to this one mailbox within that second. The quota can then be exceeded
//!   only if they write more than half of it in one second.
//! - **fetch** is one batched direct get on `amp.mbox.<agent>.q.*` from `after + 1` (no
//!   consumer is created), skipping expired entries; `remaining` is the server's count of
//!   matching messages after the last one returned (expired, unpurged ones included).
//!   Tombstones are on other subjects: they are never read by a fetch or counted.
//! - **Replicated streams** (`replicas` above 1): any replica answers a direct get, also a
//!   follower that has not applied what its leader acknowledged. Single reads (the id's
//!   state, the agent's last position, the meta) then go to the leader (`STREAM.MSG.GET`),
//!   and a fetch first asks the leader for the mailbox's newest message and reads the page
//!   again (bounded, about half a second) until the replica that answers has reached it,
//!   then drops entries whose tombstone it finds (an ack's delete may not have reached that
//!   replica yet). So a listing shows every message acknowledged `mailbox_written` before it,
//!   on any process. `count` and the expiry scan stay direct reads: a count may lag an ack or
//!   a write by the replication delay.
//! - **ack** writes the tombstone **first** (expecting the message's sequence as the id's
//!   last, so of two concurrent acks one wins), then deletes the message. From the tombstone
//!   on, the id reads as acknowledged and can never be enqueued again until its expiry; an
//!   ack that stopped before the delete is finished by the next ack of that id (and the
//!   message's TTL removes it in any case). Deleting at once (rather than an ack floor) suits
//!   mailboxes acked out of order; JetStream reclaims deleted messages by block compaction.
//! - **Expiry**: every message and tombstone carries `Nats-TTL` (its expiry plus a margin),
//!   so the server drops them on its own; `purge_expired` removes what is expired by the
//!   caller's clock from the front of the stream (bounded scan), raising each agent's floor.

use std::collections::HashMap;

use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::JetStreamStore;
use super::conn::{Conflict, Expect, MAX_BATCH, Raw, tok, ttl_until, untok};
use super::registry::{MAX_RETRIES, contention};
use crate::*;

/// Per-agent positions that must not move back.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Meta {
    head: u64,
    floor: u64,
}

/// The `Amp-Entry` header of a queued message.
#[derive(Debug, Serialize, Deserialize)]
struct EntryHeader {
    id: String,
    sender: String,
    #[serde(default)]
    signature: String,
    queued_at: Millis,
    expires_at: Millis,
}

/// The `Amp-Acked` header of a tombstone: whose message it was and where it stood.
#[derive(Debug, Serialize, Deserialize)]
struct AckedHeader {
    sender: String,
    signature: String,
    seq: u64,
    expires_at: Millis,
}

const ENTRY_HEADER: &str = "Amp-Entry";
const ACKED_HEADER: &str = "Amp-Acked";

/// What the stream holds about one id: the message, or its acknowledgement.
enum Stored {
    /// Queued at `seq` (possibly expired by the caller's clock).
    Queued {
        entry: MailboxEntry,
        signature: String,
    },
    /// Acknowledged; the tombstone is at `tombstone`.
    Acked { head: AckedHeader, tombstone: u64 },
}

impl Stored {
    fn sender_and_signature(&self) -> (&str, &str) {
        match self {
            Stored::Queued { entry, signature } => (&entry.sender, signature),
            Stored::Acked { head, .. } => (&head.sender, &head.signature),
        }
    }

    /// The message's sequence (for a tombstone, the acknowledged message's).
    fn seq(&self) -> u64 {
        match self {
            Stored::Queued { entry, .. } => entry.seq,
            Stored::Acked { head, .. } => head.seq,
        }
    }
}

/// How far below its quota a mailbox is counted without the exact check. Writers of one
/// mailbox take turns within a process (see `mailbox_lock`), so at most one enqueue per
/// process is between its count and its write: the quota holds exactly with up to this
/// many processes writing (router replicas), far more than a deployment runs.
const QUOTA_SLACK: u64 = 64;
/// How long a count read from the stream may stand in for the next read (see the module
/// documentation, **Quota**).
const COUNT_TRUST: std::time::Duration = std::time::Duration::from_secs(1);
/// Smaller quotas are always counted exactly.
const COUNT_HINT_MIN_QUOTA: u64 = 4 * QUOTA_SLACK;
/// Agents whose counts are remembered; past it the hints start over.
const COUNT_HINTS_MAX: usize = 100_000;

/// Recent mailbox counts of this process: (count read, plus this process's writes since;
/// when it was read).
#[derive(Default)]
pub(crate) struct CountHints(parking_lot::Mutex<HashMap<String, (u64, std::time::Instant)>>);

impl CountHints {
    /// A count to use instead of reading one: a recent read plus this process's writes
    /// since, while below half of `max`.
    fn usable(&self, agent_id: &str, max: u64) -> Option<u64> {
        if max < COUNT_HINT_MIN_QUOTA {
            return None;
        }
        let hints = self.0.lock();
        let (count, read_at) = hints.get(agent_id)?;
        (read_at.elapsed() < COUNT_TRUST && *count < max / 2).then_some(*count)
    }

    /// Remembers a count just read from the stream.
    fn read(&self, agent_id: &str, count: u64) {
        let mut hints = self.0.lock();
        if hints.len() >= COUNT_HINTS_MAX && !hints.contains_key(agent_id) {
            hints.clear();
        }
        hints.insert(agent_id.to_owned(), (count, std::time::Instant::now()));
    }

    /// One more message written by this process.
    fn wrote(&self, agent_id: &str) {
        if let Some((count, _)) = self.0.lock().get_mut(agent_id) {
            *count = count.saturating_add(1);
        }
    }
}

fn meta_key(agent: &str) -> String {
    format!("meta.{}", tok(agent))
}

fn json_header<T: for<'a> Deserialize<'a>>(raw: &Raw, name: &str) -> Result<T> {
    raw.header(name)
        .ok_or_else(|| Error::Corrupt(format!("mailbox message {} without {name}", raw.seq)))
        .and_then(|v| serde_json::from_str(v).map_err(|e| Error::Corrupt(e.to_string())))
}

fn to_header<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Corrupt(e.to_string()))
}

/// A queued message and the signature it was accepted with.
fn parse_queued(raw: Raw) -> Result<(MailboxEntry, String)> {
    let h: EntryHeader = json_header(&raw, ENTRY_HEADER)?;
    let data =
        String::from_utf8(raw.payload.to_vec()).map_err(|e| Error::Corrupt(e.to_string()))?;
    Ok((
        MailboxEntry {
            seq: raw.seq,
            message_id: h.id,
            sender: h.sender,
            data,
            queued_at: h.queued_at,
            expires_at: h.expires_at,
        },
        h.signature,
    ))
}

fn parse_entry(raw: Raw) -> Result<MailboxEntry> {
    parse_queued(raw).map(|(e, _)| e)
}

impl JetStreamStore {
    /// Deletes up to `max` messages of one mailbox stream that are expired at `now`, looking
    /// at no more than `budget`, and raises their agents' floors; (looked at, deleted).
    async fn purge_expired_in(
        &self,
        part: &super::MailboxPart,
        now: Millis,
        max: usize,
        budget: usize,
    ) -> Result<(usize, usize)> {
        let filter = format!("{}.*.q.*", part.root);
        let mut start = 0;
        let mut scanned = 0;
        let mut purged = 0;
        let mut floors: HashMap<String, u64> = HashMap::new();
        'scan: while scanned < budget && purged < max {
            let b = self
                .conn
                .batch(&part.stream, &filter, start, MAX_BATCH)
                .await?;
            let Some(last) = b.messages.last() else {
                break;
            };
            start = last.seq + 1;
            for raw in b.messages {
                scanned += 1;
                // `<root>.<agent>.q.<id>`: the agent is the third token from the end.
                let Some(agent) = raw.subject.rsplit('.').nth(2).map(untok).transpose()? else {
                    continue;
                };
                let e = parse_entry(raw)?;
                if e.expires_at > now {
                    continue;
                }
                self.conn.delete_message(&part.stream, e.seq).await?;
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
        Ok((scanned, purged))
    }

    /// `<root>.<agent>.q.<id>`: the queued message (`root` is the agent's partition's, see
    /// the module `jetstream`: `amp.mbox` with one partition).
    fn queued_subject(&self, agent_id: &str, id: &str) -> String {
        let root = &self.part(agent_id).root;
        format!("{root}.{}.q.{}", tok(agent_id), tok(id))
    }

    /// `<root>.<agent>.a.<id>`: the acknowledgement.
    fn acked_subject(&self, agent_id: &str, id: &str) -> String {
        let root = &self.part(agent_id).root;
        format!("{root}.{}.a.{}", tok(agent_id), tok(id))
    }

    /// `<root>.<agent>.*.<id>`: everything about one id.
    fn id_filter(&self, agent_id: &str, id: &str) -> String {
        let root = &self.part(agent_id).root;
        format!("{root}.{}.*.{}", tok(agent_id), tok(id))
    }

    /// `<root>.<agent>.q.*`: the mailbox.
    fn queued_filter(&self, agent_id: &str) -> String {
        let root = &self.part(agent_id).root;
        format!("{root}.{}.q.*", tok(agent_id))
    }

    /// `<root>.<agent>.>`: everything of the agent.
    pub(super) fn agent_filter(&self, agent_id: &str) -> String {
        let root = &self.part(agent_id).root;
        format!("{root}.{}.>", tok(agent_id))
    }

    /// The stream of `agent_id`'s mailbox.
    pub(super) fn mailbox_of(&self, agent_id: &str) -> &str {
        &self.part(agent_id).stream
    }

    /// What the stream holds about `id` in the agent's mailbox (the newest of the message
    /// and its tombstone).
    async fn stored(&self, agent_id: &str, id: &str) -> Result<Option<Stored>> {
        let Some(raw) = self
            .conn
            .get(
                self.mailbox_of(agent_id),
                json!({ "last_by_subj": self.id_filter(agent_id, id) }),
            )
            .await?
        else {
            return Ok(None);
        };
        if raw.subject == self.acked_subject(agent_id, id) {
            let tombstone = raw.seq;
            let head = json_header(&raw, ACKED_HEADER)?;
            return Ok(Some(Stored::Acked { head, tombstone }));
        }
        let (entry, signature) = parse_queued(raw)?;
        Ok(Some(Stored::Queued { entry, signature }))
    }

    /// `entries` less those with an acknowledgement tombstone (one batched read).
    async fn drop_acked(
        &self,
        agent_id: &str,
        mut entries: Vec<MailboxEntry>,
    ) -> Result<Vec<MailboxEntry>> {
        let subjects: Vec<String> = entries
            .iter()
            .map(|e| self.acked_subject(agent_id, &e.message_id))
            .collect();
        let acked: std::collections::HashSet<String> = self
            .conn
            .multi_last(self.mailbox_of(agent_id), &subjects)
            .await?
            .into_iter()
            .map(|r| r.subject)
            .collect();
        if !acked.is_empty() {
            entries.retain(|e| !acked.contains(&self.acked_subject(agent_id, &e.message_id)));
        }
        Ok(entries)
    }

    /// How many messages the mailbox holds (expired, unpurged ones included).
    async fn queued_count(&self, agent_id: &str) -> Result<u64> {
        let b = self
            .conn
            .batch(
                self.mailbox_of(agent_id),
                &self.queued_filter(agent_id),
                0,
                1,
            )
            .await?;
        Ok(if b.messages.is_empty() {
            0
        } else {
            b.pending + 1
        })
    }

    /// The agent's last sequence, tombstones included (0 when it has nothing).
    async fn agent_last(&self, agent_id: &str) -> Result<u64> {
        Ok(self
            .conn
            .get(
                self.mailbox_of(agent_id),
                json!({ "last_by_subj": self.agent_filter(agent_id) }),
            )
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

    async fn head(&self, agent_id: &str) -> Result<(u64, Meta)> {
        let (last, meta) = tokio::try_join!(self.agent_last(agent_id), self.meta(agent_id))?;
        Ok((last.max(meta.head), meta))
    }

    /// The in-process lock of `agent_id`'s mailbox (a stripe shared with other agents).
    fn mailbox_lock(&self, agent_id: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        agent_id.hash(&mut h);
        &self.mailbox_locks[(h.finish() as usize) % self.mailbox_locks.len()]
    }

    /// What `e` meets when its id is taken: the same sender and signature are the first
    /// copy (`Duplicate`), anything else a `Conflict`.
    fn answer_taken(e: &NewMailboxEntry, found: &Stored) -> Enqueued {
        let (sender, signature) = found.sender_and_signature();
        if sender != e.sender || signature != e.signature {
            Enqueued::Conflict
        } else {
            Enqueued::Duplicate { seq: found.seq() }
        }
    }

    /// One attempt at writing `e`: `Err(Conflict)` when another write for this agent (or
    /// this id) landed after the reads it was checked against.
    ///
    /// The common case is one read and one write: the mailbox is counted (under a quota) and
    /// the message published expecting nothing under its id; only a refused publish reads
    /// what holds the id. A mailbox within [`QUOTA_SLACK`] of its quota takes the exact path
    /// instead: the agent's last position, the id, the count, and a publish expecting that
    /// nothing at all was written for the agent meanwhile.
    async fn try_enqueue(
        &self,
        e: &NewMailboxEntry,
        header: &str,
        ttl: &str,
    ) -> Result<std::result::Result<Enqueued, Conflict>> {
        let mut headers = HeaderMap::new();
        headers.insert(ENTRY_HEADER, header);
        headers.insert("Nats-TTL", ttl);
        let near_full = match e.max_queued {
            Some(max) => {
                let count = match self.counts.usable(&e.agent_id, max) {
                    Some(count) => count,
                    None => {
                        let count = self.queued_count(&e.agent_id).await?;
                        self.counts.read(&e.agent_id, count);
                        count
                    }
                };
                if count >= max {
                    // Full, unless this is a copy of a message already in it.
                    return Ok(Ok(match self.stored(&e.agent_id, &e.message_id).await? {
                        Some(found) => Self::answer_taken(e, &found),
                        None => Enqueued::Full,
                    }));
                }
                count.saturating_add(QUOTA_SLACK) >= max
            }
            None => false,
        };
        if near_full {
            // The last position first: the write expects it, so nothing for this agent
            // (this id included) lands between these checks and the write.
            let last = self.agent_last(&e.agent_id).await?;
            if let Some(found) = self.stored(&e.agent_id, &e.message_id).await? {
                return Ok(Ok(Self::answer_taken(e, &found)));
            }
            if let Some(max) = e.max_queued
                && self.queued_count(&e.agent_id).await? >= max
            {
                return Ok(Ok(Enqueued::Full));
            }
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                last.to_string().as_str(),
            );
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence-Subject",
                self.agent_filter(&e.agent_id).as_str(),
            );
        } else {
            headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence-Subject",
                self.id_filter(&e.agent_id, &e.message_id).as_str(),
            );
        }
        let subject = self.queued_subject(&e.agent_id, &e.message_id);
        match self
            .conn
            .publish_batched(
                self.mailbox_of(&e.agent_id),
                subject,
                headers,
                Bytes::from(e.data.clone()),
            )
            .await?
        {
            Ok(ack) => {
                self.counts.wrote(&e.agent_id);
                Ok(Ok(Enqueued::New { seq: ack.sequence }))
            }
            // Refused: the id is taken (answered from what holds it), or, on the exact path,
            // another write for the agent came first (the caller tries again).
            Err(Conflict) => match self.stored(&e.agent_id, &e.message_id).await? {
                Some(found) => Ok(Ok(Self::answer_taken(e, &found))),
                None => Ok(Err(Conflict)),
            },
        }
    }
}

#[async_trait]
impl Mailboxes for JetStreamStore {
    async fn enqueue(&self, e: NewMailboxEntry) -> Result<Enqueued> {
        let header = to_header(&EntryHeader {
            id: e.message_id.clone(),
            sender: e.sender.clone(),
            signature: e.signature.clone(),
            queued_at: e.queued_at,
            expires_at: e.expires_at,
        })?;
        let ttl = format!("{}s", ttl_until(e.expires_at).as_secs().max(1));
        // Writers of one mailbox in this process take turns, so the quota's expectation
        // only ever fails against another process.
        let _serial = match e.max_queued {
            Some(_) => Some(self.mailbox_lock(&e.agent_id).lock().await),
            None => None,
        };
        for attempt in 0..MAX_RETRIES {
            if attempt > 0 {
                super::backoff(attempt).await;
            }
            if let Ok(outcome) = self.try_enqueue(&e, &header, &ttl).await? {
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
        Ok(match self.stored(agent_id, message_id).await? {
            None => None,
            Some(Stored::Acked { head, .. }) => Some(EntryState::Acked {
                sender: head.sender,
            }),
            Some(Stored::Queued { entry, .. }) => {
                (entry.expires_at > now).then_some(EntryState::Queued(entry))
            }
        })
    }

    async fn fetch(
        &self,
        agent_id: &str,
        after: Option<u64>,
        limit: usize,
        now: Millis,
    ) -> Result<MailboxPage> {
        let subject = self.queued_filter(agent_id);
        let first = after.map_or(0, |a| a.saturating_add(1));
        // The page, the count after it, and how far the replica that answered was read: the
        // last sequence seen when the mailbox ran out, `u64::MAX` when the page filled first
        // (a replica that returned sequence X holds every message up to X).
        let read = || async {
            let mut start = first;
            let mut entries = Vec::new();
            if limit == 0 {
                let b = self
                    .conn
                    .batch(self.mailbox_of(agent_id), &subject, start, 1)
                    .await?;
                let remaining = if b.messages.is_empty() {
                    0
                } else {
                    b.pending + 1
                };
                return Ok((entries, remaining, u64::MAX));
            }
            let mut reached = 0;
            loop {
                let want = (limit - entries.len()).clamp(1, MAX_BATCH);
                let b = self
                    .conn
                    .batch(self.mailbox_of(agent_id), &subject, start, want)
                    .await?;
                let Some(last) = b.messages.last() else {
                    return Ok((entries, 0, reached));
                };
                start = last.seq + 1;
                reached = last.seq;
                for raw in b.messages {
                    let pending: u64 = raw
                        .header("Nats-Num-Pending")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let e = parse_entry(raw)?;
                    if e.expires_at > now {
                        entries.push(e);
                        if entries.len() >= limit {
                            return Ok((entries, pending, u64::MAX));
                        }
                    }
                }
                if b.pending == 0 {
                    return Ok((entries, 0, reached));
                }
            }
        };
        let ((entries, remaining), head) = if self.conn.replicated() {
            // Every write acknowledged before this call, whichever process made it, although
            // a direct get may be answered by a follower that has not applied it: the
            // leader's newest queued message first, then the page again until the replica
            // that answers has reached it, less what was acknowledged (its tombstone is read;
            // the message's delete may not have reached that replica yet).
            let newest = async {
                Ok::<_, Error>(
                    self.conn
                        .get(
                            self.mailbox_of(agent_id),
                            json!({ "last_by_subj": subject }),
                        )
                        .await?
                        .map_or(0, |r| r.seq),
                )
            };
            let (newest, (head, _)) = tokio::try_join!(newest, self.head(agent_id))?;
            let mut attempt = 0;
            let (entries, remaining) = loop {
                let (entries, remaining, reached) = read().await?;
                if newest < first || reached >= newest || attempt >= super::conn::CATCH_UP_TRIES {
                    if reached < newest && newest >= first {
                        tracing::warn!(
                            agent = agent_id,
                            "a replica stayed behind its leader; listing from it anyway"
                        );
                    }
                    break (entries, remaining);
                }
                metrics::counter!("amp_store_replica_catch_up_waits_total").increment(1);
                tokio::time::sleep(std::time::Duration::from_millis(1 << attempt.min(6))).await;
                attempt += 1;
            };
            ((self.drop_acked(agent_id, entries).await?, remaining), head)
        } else {
            let ((entries, remaining, _), (head, _)) =
                tokio::try_join!(read(), self.head(agent_id))?;
            ((entries, remaining), head)
        };
        let head = entries.last().map_or(head, |e| head.max(e.seq));
        Ok(MailboxPage {
            entries,
            remaining,
            head,
        })
    }

    async fn count(&self, agent_id: &str, now: Millis) -> Result<MailboxCount> {
        let subject = self.queued_filter(agent_id);
        let scan = async {
            // The total, less expired entries at the front until the first live one (with
            // the default TTL, expiry follows queue order).
            let mut start = 0;
            let mut total = None;
            let mut expired = 0u64;
            loop {
                let b = self
                    .conn
                    .batch(self.mailbox_of(agent_id), &subject, start, 64)
                    .await?;
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
        let ((count, oldest), (head, meta)) = tokio::try_join!(scan, self.head(agent_id))?;
        Ok(MailboxCount {
            count,
            oldest_queued_at: oldest,
            head,
            floor: meta.floor,
        })
    }

    async fn ack(&self, agent_id: &str, message_ids: &[String], now: Millis) -> Result<Vec<Acked>> {
        let mut out = Vec::with_capacity(message_ids.len());
        let mut top = 0;
        for id in message_ids {
            let mut outcome = None;
            for attempt in 0..MAX_RETRIES {
                if attempt > 0 {
                    super::backoff(attempt).await;
                }
                let (entry, signature) = match self.stored(agent_id, id).await? {
                    None => break,
                    Some(Stored::Acked { head, tombstone }) => {
                        // An ack that stopped before its delete is finished here.
                        self.conn
                            .delete_message(self.mailbox_of(agent_id), head.seq)
                            .await?;
                        top = top.max(tombstone);
                        outcome = Some(Acked::already_acked());
                        break;
                    }
                    Some(Stored::Queued { entry, .. }) if entry.expires_at <= now => break,
                    Some(Stored::Queued { entry, signature }) => (entry, signature),
                };
                let head = to_header(&AckedHeader {
                    sender: entry.sender.clone(),
                    signature,
                    seq: entry.seq,
                    expires_at: entry.expires_at,
                })?;
                let ttl = format!("{}s", ttl_until(entry.expires_at).as_secs().max(1));
                let mut headers = HeaderMap::new();
                headers.insert(ACKED_HEADER, head.as_str());
                headers.insert("Nats-TTL", ttl.as_str());
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    entry.seq.to_string().as_str(),
                );
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence-Subject",
                    self.id_filter(agent_id, id).as_str(),
                );
                match self
                    .conn
                    .publish_batched(
                        self.mailbox_of(agent_id),
                        self.acked_subject(agent_id, id),
                        headers,
                        Bytes::new(),
                    )
                    .await?
                {
                    Ok(ack) => {
                        // The commit point was the tombstone; from here the message is
                        // acknowledged whatever happens to this delete.
                        self.conn
                            .delete_message(self.mailbox_of(agent_id), entry.seq)
                            .await?;
                        top = top.max(ack.sequence);
                        // The message as `stored` read it: the caller's size and receipt.
                        outcome = Some(Acked::newly(entry));
                        break;
                    }
                    // A concurrent ack of the same id: read what it wrote.
                    Err(Conflict) => continue,
                }
            }
            out.push(outcome.unwrap_or_else(Acked::not_found));
        }
        if top > 0 {
            // The tombstones keep the head up until they expire; the meta after that.
            self.raise_meta(agent_id, top, 0).await?;
        }
        Ok(out)
    }

    async fn purge_expired(&self, now: Millis, max: usize) -> Result<usize> {
        // Bounded: at most this many messages looked at per call (over every partition).
        // The server's TTLs do the bulk of expiry on their own; this catches what is due by
        // the caller's clock.
        let mut budget = max.saturating_mul(4).clamp(1_024, 100_000);
        let mut purged = 0;
        for part in self.mailboxes.iter() {
            if budget == 0 || purged >= max {
                break;
            }
            let (scanned, n) = self
                .purge_expired_in(part, now, max - purged, budget)
                .await?;
            budget = budget.saturating_sub(scanned);
            purged += n;
        }
        Ok(purged)
    }

    async fn delete_mailbox(&self, agent_id: &str) -> Result<()> {
        // The ids' markers, messages and tombstones, then the meta (see `purge`).
        self.purge_mailbox(agent_id).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_count_stands_in_only_far_below_a_large_quota() {
        let hints = CountHints::default();
        assert_eq!(hints.usable("a", 1000), None, "never read: read it");
        hints.read("a", 10);
        assert_eq!(hints.usable("a", 1000), Some(10));
        hints.wrote("a");
        hints.wrote("a");
        assert_eq!(hints.usable("a", 1000), Some(12), "own writes counted");
        assert_eq!(
            hints.usable("a", COUNT_HINT_MIN_QUOTA - 1),
            None,
            "small quotas are always counted"
        );
        hints.read("a", 499);
        assert_eq!(hints.usable("a", 1000), Some(499));
        hints.wrote("a");
        assert_eq!(hints.usable("a", 1000), None, "half the quota: read it");
        hints.wrote("b");
        assert_eq!(hints.usable("b", 1000), None, "writes alone are no count");
    }

    #[test]
    fn a_count_is_trusted_for_a_second_only() {
        let hints = CountHints::default();
        hints.0.lock().insert(
            "a".into(),
            (
                5,
                std::time::Instant::now() - COUNT_TRUST - std::time::Duration::from_millis(1),
            ),
        );
        assert_eq!(hints.usable("a", 1000), None);
    }
}
