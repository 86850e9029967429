//! [`Mailboxes`] on `mailbox_entries`, `mailbox_ids` and `mailbox_meta`.
//!
//! - **Positions**: `seq` starts at 1 and lives in partition `bucket = seq / 1024`. An append
//!   is one conditional batch on that partition: the entry rows plus `head = last IF head =
//!   expected` (`IF head = null` for the first position of a bucket). Paxos orders the
//!   batches of one partition, so positions are dense within a bucket, assigned and written
//!   in one step, and a reader that sees position N has every committed position below it.
//!   A bucket whose head expired (every entry in it expired) is never written again: the
//!   next append opens the next bucket, so a position is never reused.
//! - **Idempotency**: before appending, the writer claims `(agent, message id)` with `IF NOT
//!   EXISTS`, recording sender and signature. Of two routers storing one id at the same
//!   moment exactly one claims it; the other answers `Duplicate` (same signature) or
//!   `Conflict` — never a second accept. A claim whose writer died before recording the
//!   position is taken over after [`CLAIM_LEASE_MS`] (compare-and-set on the claim token),
//!   and the taker first looks for the entry in the buckets written since the claim (a
//!   serial read, which completes an append still in flight). A writer never starts an
//!   append with less than [`APPEND_MARGIN_MS`] of its lease left. The documented bound: a
//!   writer stalled for longer than that margin between the check and sending its append can
//!   store a second copy of the same message (same id, same signature).
//! - **Acknowledgement** sets `acked` on the entry and its id (updates, no tombstones).
//!   `mailbox_meta.floor` moves past the leading run of acknowledged or expired positions
//!   whenever a pickup or count reads from the floor, and every read starts above it: the
//!   cost of a pickup depends on the live window (at most the quota plus what is acked out
//!   of order), not on how much was ever acknowledged.
//! - **Quota**: `head - floor` bounds the queued count from above; only when that bound
//!   reaches `max_queued` are the rows counted. The check runs against the head the append
//!   is conditional on, so two processes cannot both fill the last place: never exceeded.
//! - **Expiry**: every row carries a TTL (the message's expiry); nothing to purge by hand.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use scylla::statement::batch::{Batch, BatchType};

use super::conn::{Lwt, corrupt, ttl_until, unavailable};
use super::{CqlStore, wall_ms};
use crate::*;

/// Positions per partition.
const BUCKET: i64 = 1024;
/// How long a claim may stay without a position before another writer takes it over.
/// Shorter than the bus's redelivery budget (8 deliveries over about 16 s of backoff), so a
/// message whose writer died mid-way is stored by a redelivery, never dead-lettered.
const CLAIM_LEASE_MS: Millis = 10_000;
/// A writer does not start an append with less than this left of its claim's lease: a
/// taker-over then never races an append its owner is still starting.
const APPEND_MARGIN_MS: Millis = 3_000;
/// How long a writer waits for another's claim of the same message to get its position.
const PENDING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// The static `head` outlives every entry of its bucket written with a TTL up to this.
const HEAD_MIN_TTL_MS: Millis = 8 * 24 * 3600 * 1000;
/// An id is remembered this long after its message's expiry (a late retry is a duplicate).
const ID_MARGIN_MS: Millis = 3600 * 1000;
/// Write timestamp of a deleted mailbox's meta row: above every position, for good.
const DELETED_TS: i64 = i64::MAX / 2;
/// Compare-and-set rounds before an append gives up as contended.
const MAX_APPEND_ROUNDS: usize = 64;

fn bucket_of(seq: i64) -> i64 {
    seq / BUCKET
}

fn first_of(bucket: i64) -> i64 {
    (bucket * BUCKET).max(1)
}

fn last_of(bucket: i64) -> i64 {
    bucket * BUCKET + BUCKET - 1
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Per-mailbox positions that only move forward (zeros for a new mailbox).
#[derive(Debug, Default, Clone, Copy)]
struct Meta {
    head: i64,
    bucket: i64,
    floor: i64,
}

impl Meta {
    /// The last bucket the hints know of (a later one may exist past a stale hint).
    fn last_bucket(&self) -> i64 {
        self.bucket.max(bucket_of(self.head))
    }
}

/// Where the next append goes: the bucket, the head it is conditional on, the position.
#[derive(Debug, Clone, Copy)]
struct AppendPoint {
    bucket: i64,
    expect: Option<i64>,
    next: i64,
}

impl AppendPoint {
    fn after(bucket: i64, head: Option<i64>) -> Self {
        match head {
            Some(h) if h < last_of(bucket) => Self {
                bucket,
                expect: Some(h),
                next: h + 1,
            },
            // Full, or its head expired: the bucket is closed; open the next one.
            _ => Self {
                bucket: bucket + 1,
                expect: None,
                next: first_of(bucket + 1),
            },
        }
    }
}

/// The facts of a message id.
#[derive(Debug)]
struct IdRow {
    sender: String,
    signature: String,
    seq: Option<i64>,
    acked: bool,
    expires_at: Millis,
    claimed_at: Millis,
    claim: String,
    from_bucket: i64,
}

/// One row of a mailbox scan, without the body.
#[derive(Debug)]
struct ScanRow {
    seq: i64,
    message_id: String,
    sender: String,
    queued_at: Millis,
    expires_at: Millis,
    acked: bool,
}

impl ScanRow {
    fn live(&self, now: Millis) -> bool {
        !self.acked && self.expires_at > now
    }
}

/// A scan of a mailbox's window from a position.
struct Scan {
    rows: Vec<ScanRow>,
    meta: Meta,
    head: i64,
}

impl CqlStore {
    async fn meta(&self, agent: &str) -> Result<Meta> {
        let rows = self
            .conn
            .query("read a mailbox", &self.conn.st.meta_get, (agent,))
            .await?;
        Ok(rows
            .maybe_first_row::<(Option<i64>, Option<i64>, Option<i64>)>()
            .map_err(corrupt)?
            .map(|(h, b, f)| Meta {
                head: h.unwrap_or(0),
                bucket: b.unwrap_or(0),
                floor: f.unwrap_or(0),
            })
            .unwrap_or_default())
    }

    async fn bucket_head(&self, agent: &str, bucket: i64) -> Result<Option<i64>> {
        let rows = self
            .conn
            .query(
                "read a mailbox head",
                &self.conn.st.bucket_head,
                (agent, bucket),
            )
            .await?;
        Ok(rows
            .maybe_first_row::<(Option<i64>,)>()
            .map_err(corrupt)?
            .and_then(|(h,)| h))
    }

    /// Finds where the next append goes, from the hints in `mailbox_meta`.
    async fn append_point(&self, agent: &str, meta: &Meta) -> Result<AppendPoint> {
        let mut bucket = meta.last_bucket();
        let new_mailbox = meta.head == 0 && meta.bucket == 0;
        loop {
            match self.bucket_head(agent, bucket).await? {
                Some(h) if h >= last_of(bucket) => bucket += 1,
                Some(h) => return Ok(AppendPoint::after(bucket, Some(h))),
                None if new_mailbox && bucket == 0 => {
                    return Ok(AppendPoint {
                        bucket: 0,
                        expect: None,
                        next: 1,
                    });
                }
                // The hinted bucket expired whole (or a later one exists past a stale
                // hint): look one further before opening it.
                None => {
                    return match self.bucket_head(agent, bucket + 1).await? {
                        Some(h) => Ok(AppendPoint::after(bucket + 1, Some(h))),
                        None => Ok(AppendPoint::after(bucket, None)),
                    };
                }
            }
        }
    }

    async fn id_row(&self, agent: &str, message_id: &str) -> Result<Option<IdRow>> {
        let rows = self
            .conn
            .query(
                "read a message id",
                &self.conn.st.id_get,
                (agent, message_id),
            )
            .await?;
        type R = (
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<bool>,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<i64>,
        );
        Ok(rows.maybe_first_row::<R>().map_err(corrupt)?.and_then(
            |(sender, signature, seq, acked, expires_at, claimed_at, claim, from_bucket)| {
                Some(IdRow {
                    sender: sender?,
                    signature: signature?,
                    seq,
                    acked: acked.unwrap_or(false),
                    expires_at: expires_at.unwrap_or(0),
                    claimed_at: claimed_at.unwrap_or(0),
                    claim: claim.unwrap_or_default(),
                    from_bucket: from_bucket.unwrap_or(0),
                })
            },
        ))
    }

    /// Reads the mailbox from position `from` (never below the floor) to its end.
    async fn scan(&self, agent: &str, from: i64) -> Result<Scan> {
        let meta = self.meta(agent).await?;
        let start = from.max(meta.floor + 1);
        let last_hint = meta.last_bucket();
        let mut bucket = bucket_of(start);
        let mut rows = Vec::new();
        let mut head = meta.head;
        type R = (
            i64,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<bool>,
        );
        loop {
            let res = self
                .conn
                .query(
                    "read a mailbox",
                    &self.conn.st.entries_scan,
                    (agent, bucket, start.max(first_of(bucket))),
                )
                .await?;
            let before = rows.len();
            for row in res.rows::<R>().map_err(corrupt)? {
                let (seq, message_id, sender, queued_at, expires_at, acked) =
                    row.map_err(corrupt)?;
                // A row holding only a late `acked` cell (its entry expired) is no entry.
                let (Some(message_id), Some(sender)) = (message_id, sender) else {
                    continue;
                };
                rows.push(ScanRow {
                    seq,
                    message_id,
                    sender,
                    queued_at: queued_at.unwrap_or(0),
                    expires_at: expires_at.unwrap_or(0),
                    acked: acked.unwrap_or(false),
                });
            }
            let full = rows[before..]
                .last()
                .is_some_and(|r| r.seq >= last_of(bucket));
            if let Some(r) = rows.last() {
                head = head.max(r.seq);
            }
            if bucket < last_hint || full {
                bucket += 1;
                continue;
            }
            if rows.len() == before && bucket == last_hint {
                // Nothing here: past a stale hint, the next bucket may hold the rest.
                let next = self.bucket_head(agent, bucket + 1).await?;
                if next.is_some() {
                    bucket += 1;
                    continue;
                }
            }
            break;
        }
        Ok(Scan { rows, meta, head })
    }

    /// Moves the floor past the leading acknowledged, expired or missing positions of a
    /// scan that started at the floor, and drops the buckets it leaves behind.
    async fn advance_floor(&self, agent: &str, scan: &Scan, now: Millis) -> Result<i64> {
        let floor = scan.meta.floor;
        let new_floor = match scan.rows.iter().find(|r| r.live(now)) {
            Some(first_live) => first_live.seq - 1,
            None => scan.rows.last().map_or(floor, |r| r.seq),
        };
        if new_floor <= floor {
            return Ok(floor);
        }
        self.conn
            .exec(
                "move a mailbox floor",
                &self.conn.st.meta_floor,
                (new_floor, new_floor, agent),
            )
            .await?;
        // Whole buckets below the floor: one partition delete each instead of waiting for
        // their TTLs (never read again either way).
        for b in bucket_of(floor + 1)..bucket_of(new_floor + 1) {
            self.conn
                .exec(
                    "drop a mailbox bucket",
                    &self.conn.st.bucket_delete,
                    (agent, b),
                )
                .await?;
        }
        Ok(new_floor)
    }

    /// Counts the live entries exactly (moving the floor on the way).
    async fn count_live(&self, agent: &str, now: Millis) -> Result<(u64, Scan, i64)> {
        let scan = self.scan(agent, 0).await?;
        let floor = self.advance_floor(agent, &scan, now).await?;
        let n = scan.rows.iter().filter(|r| r.live(now)).count() as u64;
        Ok((n, scan, floor))
    }

    /// Looks for an entry of `message_id` written since bucket `from` (a taken-over claim).
    /// A serial read: it completes any append still in flight on those partitions first, so
    /// an append its dead writer had started is found, not written twice.
    async fn find_entry(&self, agent: &str, message_id: &str, from: i64) -> Result<Option<i64>> {
        let meta = self.meta(agent).await?;
        let to = meta.last_bucket() + 1;
        for b in from..=to {
            let rows = self
                .conn
                .query(
                    "look for an entry",
                    &self.conn.st.entries_find_serial,
                    (agent, b),
                )
                .await?;
            for row in rows.rows::<(i64, Option<String>)>().map_err(corrupt)? {
                let (seq, id) = row.map_err(corrupt)?;
                if id.as_deref() == Some(message_id) {
                    return Ok(Some(seq));
                }
            }
        }
        Ok(None)
    }

    /// The position of a message whose id row has none yet: its writer appended it and has
    /// not recorded the position (a moment's window, or a writer that died there). Found in
    /// the buckets written since the claim, and recorded.
    async fn resolve_seq(&self, agent: &str, message_id: &str, row: &IdRow) -> Result<Option<i64>> {
        if let Some(seq) = row.seq {
            return Ok(Some(seq));
        }
        let Some(seq) = self.find_entry(agent, message_id, row.from_bucket).await? else {
            return Ok(None);
        };
        self.conn
            .exec(
                "record a position",
                &self.conn.st.id_set_seq,
                (
                    ttl_until(row.expires_at + ID_MARGIN_MS, wall_ms()),
                    seq,
                    agent,
                    message_id,
                ),
            )
            .await?;
        Ok(Some(seq))
    }

    /// Appends one entry at the next position; returns it, or `None` when the quota is
    /// reached.
    async fn append(
        &self,
        e: &NewMailboxEntry,
        meta: &Meta,
        claimed_at: Millis,
    ) -> Result<Option<i64>> {
        let st = &self.conn.st;
        let now = wall_ms();
        let ttl = ttl_until(e.expires_at, now);
        let head_ttl = ttl.max(ttl_until(now + HEAD_MIN_TTL_MS, now));
        let mut at = self.append_point(&e.agent_id, meta).await?;
        let mut floor = meta.floor;
        for _ in 0..MAX_APPEND_ROUNDS {
            if let Some(max) = e.max_queued {
                let max = i64::try_from(max).unwrap_or(i64::MAX);
                // `next - 1 - floor` bounds the queued count; count only when it reaches max.
                if at.next - 1 - floor >= max {
                    let (n, _, f) = self.count_live(&e.agent_id, e.queued_at).await?;
                    floor = f;
                    if i64::try_from(n).unwrap_or(i64::MAX) >= max {
                        return Ok(None);
                    }
                }
            }
            if wall_ms().saturating_sub(claimed_at) > CLAIM_LEASE_MS - APPEND_MARGIN_MS {
                // Too late to append under this claim: the redelivery takes it over.
                return Err(Error::Unavailable(format!(
                    "mailbox of {} too slow: the claim of {} ran out before its append",
                    e.agent_id, e.message_id
                )));
            }
            let mut batch = Batch::new(BatchType::Unlogged);
            batch.append_statement(st.entry_insert.clone());
            batch.append_statement(st.head_cas.clone());
            let values = (
                (
                    &e.agent_id,
                    at.bucket,
                    at.next,
                    &e.message_id,
                    &e.sender,
                    &e.data,
                    e.queued_at,
                    e.expires_at,
                    ttl,
                ),
                (head_ttl, at.next, &e.agent_id, at.bucket, at.expect),
            );
            let res = self
                .conn
                .session
                .batch(&batch, values)
                .await
                .map_err(|err| unavailable("append to a mailbox", err))?;
            let lwt = Lwt::parse(res)?;
            if lwt.applied {
                self.conn
                    .exec(
                        "record a mailbox head",
                        &st.meta_head,
                        (at.next, at.next, at.bucket, &e.agent_id),
                    )
                    .await?;
                return Ok(Some(at.next));
            }
            // Another writer moved the head (or the bucket's head expired): retry after it.
            at = AppendPoint::after(at.bucket, lwt.bigint("head"));
        }
        Err(Error::Unavailable(format!(
            "mailbox of {} too contended: no position after {MAX_APPEND_ROUNDS} tries",
            e.agent_id
        )))
    }

    /// What a repeat of an already claimed id is.
    fn repeat_outcome(found: &IdRow, e: &NewMailboxEntry) -> Option<Enqueued> {
        if found.sender != e.sender || found.signature != e.signature {
            return Some(Enqueued::Conflict);
        }
        found
            .seq
            .map(|seq| Enqueued::Duplicate { seq: to_u64(seq) })
    }
}

#[async_trait]
impl Mailboxes for CqlStore {
    async fn enqueue(&self, e: NewMailboxEntry) -> Result<Enqueued> {
        let st = &self.conn.st;
        let _serial = self.mailbox_lock(&e.agent_id).lock().await;
        let now = wall_ms();
        let id_ttl = ttl_until(e.expires_at + ID_MARGIN_MS, now);
        let token = claim_token();
        let meta = self.meta(&e.agent_id).await?;
        let from_bucket = meta.last_bucket();
        let claim = self
            .conn
            .lwt(
                "claim a message id",
                &st.id_claim,
                (
                    &e.agent_id,
                    &e.message_id,
                    &e.sender,
                    &e.signature,
                    e.expires_at,
                    now,
                    &token,
                    from_bucket,
                    id_ttl,
                ),
            )
            .await?;
        let mut claim_token = token.clone();
        if !claim.applied {
            let mut found = IdRow {
                sender: claim.text("sender").unwrap_or_default(),
                signature: claim.text("signature").unwrap_or_default(),
                seq: claim.bigint("seq"),
                acked: claim.boolean("acked").unwrap_or(false),
                expires_at: claim.bigint("expires_at").unwrap_or(0),
                claimed_at: claim.bigint("claimed_at").unwrap_or(0),
                claim: claim.text("claim").unwrap_or_default(),
                from_bucket: claim.bigint("from_bucket").unwrap_or(0),
            };
            // The same message claimed by another writer that has not recorded a position
            // yet: wait a little for it (the usual case: a redelivery racing the first
            // delivery), take the claim over once its lease has run out.
            let wait_until = tokio::time::Instant::now() + PENDING_WAIT;
            loop {
                if let Some(outcome) = Self::repeat_outcome(&found, &e) {
                    return Ok(outcome);
                }
                if wall_ms().saturating_sub(found.claimed_at) >= CLAIM_LEASE_MS {
                    break;
                }
                if tokio::time::Instant::now() >= wait_until {
                    return Err(Error::Unavailable(
                        "the same message is being stored by another writer; retry".into(),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                match self.id_row(&e.agent_id, &e.message_id).await? {
                    Some(row) => found = row,
                    // Released (the mailbox was full for the other writer): retry whole.
                    None => {
                        return Err(Error::Unavailable(
                            "the same message was refused to another writer; retry".into(),
                        ));
                    }
                }
            }
            let take = self
                .conn
                .lwt(
                    "take over a message id",
                    &st.id_takeover,
                    (
                        id_ttl,
                        now,
                        &token,
                        &e.agent_id,
                        &e.message_id,
                        &found.claim,
                    ),
                )
                .await?;
            if !take.applied {
                return Err(Error::Unavailable(
                    "the same message is being stored by another writer; retry".into(),
                ));
            }
            if let Some(seq) = self
                .find_entry(&e.agent_id, &e.message_id, found.from_bucket)
                .await?
            {
                self.conn
                    .exec(
                        "record a position",
                        &st.id_set_seq,
                        (id_ttl, seq, &e.agent_id, &e.message_id),
                    )
                    .await?;
                return Ok(Enqueued::Duplicate { seq: to_u64(seq) });
            }
            claim_token = token;
        }
        let seq = match self.append(&e, &meta, now).await {
            Ok(Some(seq)) => seq,
            Ok(None) => {
                // Full: give the id back so the sender may retry once there is room.
                self.conn
                    .lwt(
                        "release a message id",
                        &st.id_release,
                        (&e.agent_id, &e.message_id, &claim_token),
                    )
                    .await?;
                return Ok(Enqueued::Full);
            }
            Err(err) => return Err(err),
        };
        self.conn
            .exec(
                "record a position",
                &st.id_set_seq,
                (id_ttl, seq, &e.agent_id, &e.message_id),
            )
            .await?;
        Ok(Enqueued::New { seq: to_u64(seq) })
    }

    async fn entry(
        &self,
        agent_id: &str,
        message_id: &str,
        now: Millis,
    ) -> Result<Option<EntryState>> {
        let Some(id) = self.id_row(agent_id, message_id).await? else {
            return Ok(None);
        };
        if id.acked {
            return Ok(Some(EntryState::Acked { sender: id.sender }));
        }
        // Expired by the caller's clock or by the cluster's (whose TTL removes the rows).
        if id.expires_at <= now.max(wall_ms()) {
            return Ok(None);
        }
        let Some(seq) = self.resolve_seq(agent_id, message_id, &id).await? else {
            return Ok(None); // claimed, not yet written: not an accepted message
        };
        let rows = self
            .conn
            .query(
                "read an entry",
                &self.conn.st.entries_data,
                (agent_id, bucket_of(seq), seq, seq),
            )
            .await?;
        type R = (
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<bool>,
        );
        match rows.maybe_first_row::<R>().map_err(corrupt)? {
            Some((_, _, _, _, _, _, Some(true))) => {
                Ok(Some(EntryState::Acked { sender: id.sender }))
            }
            Some((seq, Some(message_id), Some(sender), Some(data), q, x, _)) => {
                Ok(Some(EntryState::Queued(MailboxEntry {
                    seq: to_u64(seq),
                    message_id,
                    sender,
                    data,
                    queued_at: q.unwrap_or(0),
                    expires_at: x.unwrap_or(0),
                })))
            }
            // Expired, or the mailbox was deleted.
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
        let from = after.map_or(1, |a| {
            i64::try_from(a).unwrap_or(i64::MAX).saturating_add(1)
        });
        let scan = self.scan(agent_id, from).await?;
        if from <= scan.meta.floor + 1 {
            self.advance_floor(agent_id, &scan, now).await?;
        }
        let live: Vec<&ScanRow> = scan.rows.iter().filter(|r| r.live(now)).collect();
        let page_rows = &live[..live.len().min(limit)];
        let remaining = (live.len() - page_rows.len()) as u64;
        // Bodies for the page only, one slice per bucket it spans.
        let mut bodies: HashMap<i64, String> = HashMap::new();
        if let (Some(first), Some(last)) = (page_rows.first(), page_rows.last()) {
            for b in bucket_of(first.seq)..=bucket_of(last.seq) {
                let rows = self
                    .conn
                    .query(
                        "read a mailbox page",
                        &self.conn.st.entries_bodies,
                        (
                            agent_id,
                            b,
                            first.seq.max(first_of(b)),
                            last.seq.min(last_of(b)),
                        ),
                    )
                    .await?;
                for row in rows.rows::<(i64, Option<String>)>().map_err(corrupt)? {
                    let (seq, data) = row.map_err(corrupt)?;
                    if let Some(d) = data {
                        bodies.insert(seq, d);
                    }
                }
            }
        }
        let entries = page_rows
            .iter()
            .filter_map(|r| {
                let data = bodies.remove(&r.seq)?;
                Some(MailboxEntry {
                    seq: to_u64(r.seq),
                    message_id: r.message_id.clone(),
                    sender: r.sender.clone(),
                    data,
                    queued_at: r.queued_at,
                    expires_at: r.expires_at,
                })
            })
            .collect();
        Ok(MailboxPage {
            entries,
            remaining,
            head: to_u64(scan.head),
        })
    }

    async fn count(&self, agent_id: &str, now: Millis) -> Result<MailboxCount> {
        let (count, scan, floor) = self.count_live(agent_id, now).await?;
        Ok(MailboxCount {
            count,
            oldest_queued_at: scan
                .rows
                .iter()
                .filter(|r| r.live(now))
                .map(|r| r.queued_at)
                .min(),
            head: to_u64(scan.head),
            floor: to_u64(floor),
        })
    }

    async fn ack(
        &self,
        agent_id: &str,
        message_ids: &[String],
        now: Millis,
    ) -> Result<Vec<AckOutcome>> {
        let st = &self.conn.st;
        let distinct: Vec<&String> = {
            let mut seen = HashSet::new();
            message_ids.iter().filter(|id| seen.insert(*id)).collect()
        };
        let found =
            futures::future::try_join_all(distinct.iter().map(|id| self.id_row(agent_id, id)))
                .await?;
        let mut outcome: HashMap<&str, AckOutcome> = HashMap::new();
        let mut writes = Vec::new();
        let wall = wall_ms();
        for (id, row) in distinct.iter().zip(found) {
            let o = match row {
                Some(r) if r.acked => AckOutcome::AlreadyAcked,
                // Expired by the caller's clock or the cluster's.
                Some(r) if r.expires_at > now.max(wall) => {
                    match self.resolve_seq(agent_id, id, &r).await? {
                        Some(seq) => {
                            writes.push((id.as_str(), seq, r.expires_at));
                            AckOutcome::Acked
                        }
                        None => AckOutcome::NotFound,
                    }
                }
                _ => AckOutcome::NotFound,
            };
            outcome.insert(id.as_str(), o);
        }
        futures::future::try_join_all(writes.iter().map(|(id, seq, expires_at)| async move {
            // The entry first: once it is marked, no pickup serves it, whatever follows.
            self.conn
                .exec(
                    "acknowledge an entry",
                    &st.entry_ack,
                    (
                        ttl_until(*expires_at, wall),
                        agent_id,
                        bucket_of(*seq),
                        *seq,
                    ),
                )
                .await?;
            self.conn
                .exec(
                    "acknowledge a message id",
                    &st.id_ack,
                    (ttl_until(*expires_at + ID_MARGIN_MS, wall), agent_id, *id),
                )
                .await
        }))
        .await?;
        // In the order asked; a repeat within one call is already acknowledged.
        let mut reported = HashSet::new();
        Ok(message_ids
            .iter()
            .map(|id| {
                let o = outcome
                    .get(id.as_str())
                    .copied()
                    .unwrap_or(AckOutcome::NotFound);
                if !reported.insert(id.as_str()) && o != AckOutcome::NotFound {
                    AckOutcome::AlreadyAcked
                } else {
                    o
                }
            })
            .collect())
    }

    async fn purge_expired(&self, _now: Millis, _max: usize) -> Result<usize> {
        // Every row carries its TTL: the cluster drops expired entries and ids itself, and
        // TimeWindowCompactionStrategy drops whole expired SSTables.
        Ok(0)
    }

    async fn delete_mailbox(&self, agent_id: &str) -> Result<()> {
        let st = &self.conn.st;
        let meta = self.meta(agent_id).await?;
        let last = meta.last_bucket() + 1;
        for b in bucket_of(meta.floor + 1)..=last {
            self.conn
                .exec("delete a mailbox bucket", &st.bucket_delete, (agent_id, b))
                .await?;
        }
        self.conn
            .exec("delete a mailbox", &st.meta_delete, (DELETED_TS, agent_id))
            .await?;
        Ok(())
    }
}

/// A token naming one claim: unique across processes and calls (not a secret).
fn claim_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:x}-{:x}-{:x}",
        std::process::id(),
        wall_ms(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
