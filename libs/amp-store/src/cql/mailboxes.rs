//! [`Mailboxes`] on `mailbox_entries`, `mailbox_ids` and `mailbox_meta`.
//!
//! - **Positions**: `seq` starts at 1 and lives in partition `bucket = seq / 1024`. An append
//!   is one conditional batch on that partition: the entry rows plus `head = last IF head =
//!   expected` (`IF head = null` for the first position of a bucket). Paxos orders the
//!   batches of one partition, so positions are dense within a bucket, assigned and written
//!   in one step, and a reader that sees position N has every committed position below it.
//!   A bucket whose head expired (every entry in it expired) is never written again: the
//!   next append opens the next bucket, so a position is never reused.
//! - **Idempotency, in the same Paxos round**: the batch also inserts a *claim row* for the
//!   message id in the entry's own partition (clustering key [`claim_key`], a negative
//!   number from a hash of the id, so scans from position 1 never see it), `IF NOT EXISTS`.
//!   Two writers of one id in one bucket: Paxos lets one batch through and shows the other
//!   the claim (`Duplicate` with the same signature, `Conflict` otherwise). In different
//!   buckets: before its batch a writer records a lower bound of the bucket its entry can
//!   land in (`mailbox_ids.from_bucket`, the smallest value wins) and reads the lower
//!   bounds of the others, then looks for the id's claim with a serial read in every bucket
//!   from the smallest bound up to the one it appends to. The argument that this leaves no
//!   window is in `deploy/scylla/README.md`. After the batch, `mailbox_ids` gets the
//!   position, sender and signature (a plain write): later retries are answered from it.
//! - **Acknowledgement** sets `acked` on the entry and its id (updates, no tombstones).
//!   `mailbox_meta.floor` moves past the leading run of acknowledged or expired positions
//!   whenever a pickup or count reads from the floor, and every read starts above it: the
//!   cost of a pickup depends on the live window (at most the quota plus what is acked out
//!   of order), not on how much was ever acknowledged.
//! - **Quota**: `head - floor` bounds the queued count from above; only when that bound
//!   reaches `max_queued` are the rows counted. The check runs against the head the append
//!   is conditional on, so two processes cannot both fill the last place: never exceeded.
//! - **Hints**: each process keeps the last head, bucket and floor it saw per mailbox
//!   ([`HeadCache`]) and appends at the next position without reading first; the batch's
//!   condition checks the guess. A wrong one (another process wrote) costs a failed round,
//!   so the next [`CHECKS_AFTER_STALE`] appends of that mailbox read the head first.
//! - **Expiry**: every row carries a TTL (the message's expiry); nothing to purge by hand.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use scylla::statement::batch::{Batch, BatchType};
use sha2::{Digest, Sha256};

use super::conn::{Lwt, corrupt, ttl_until, unavailable};
use super::{CqlStore, wall_ms};
use crate::*;

/// Positions per partition.
const BUCKET: i64 = 1024;
/// The static `head` outlives every entry of its bucket written with a TTL up to this.
const HEAD_MIN_TTL_MS: Millis = 8 * 24 * 3600 * 1000;
/// An id is remembered this long after its message's expiry (a late retry is a duplicate).
const ID_MARGIN_MS: Millis = 3600 * 1000;
/// Write timestamp of a deleted mailbox's meta row: above every position, for good.
const DELETED_TS: i64 = i64::MAX / 2;
/// Compare-and-set rounds before an append gives up as contended.
const MAX_APPEND_ROUNDS: usize = 64;
/// `mailbox_ids.from_bucket` is written with the timestamp `INTENT_TS - bucket`, so of the
/// writers' lower bounds the smallest wins, without a read or a transaction. A fixed past
/// instant (2001-09-09 in microseconds), never a future one a server might refuse.
const INTENT_TS: i64 = 1_000_000_000_000_000;
/// Mailboxes whose hints a process keeps (a bound on memory; all forgotten when reached).
const HEAD_CACHE_CAP: usize = 100_000;
/// After a hint proved stale (another process wrote the mailbox), this many appends read
/// the head before their batch; then one tries the hint again. A failed batch costs a
/// whole Paxos round, a head read a plain read: two routers sharing a mailbox pay one
/// failed round per this many messages, a mailbox with one writer none.
const CHECKS_AFTER_STALE: u32 = 64;

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

/// The clustering key of a message id's claim row in a bucket: a negative number (entries
/// are at 1 and above) from 62 bits of the id's SHA-256, so a sender cannot choose an id
/// that lands on another's. Two ids of one mailbox on one key in one bucket (odds about
/// 10⁻¹³ per bucket) make the second one fail as unavailable, never accepted.
fn claim_key(message_id: &str) -> i64 {
    let digest = Sha256::digest(message_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    -1 - (u64::from_be_bytes(first) >> 2) as i64
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

/// What `mailbox_ids` knows of a message id: all of it once the append is recorded; only
/// `from_bucket` while a writer is appending (or if it died between its batch and the
/// record, which the claim row in the bucket then completes).
#[derive(Debug, Default)]
struct IdRow {
    sender: Option<String>,
    signature: Option<String>,
    seq: Option<i64>,
    acked: bool,
    expires_at: Option<Millis>,
    from_bucket: Option<i64>,
}

/// A message id's claim row in a bucket: the facts of the message that holds the id.
#[derive(Debug, Clone)]
struct Claim {
    message_id: String,
    sender: String,
    signature: String,
    seq: i64,
    expires_at: Millis,
}

impl IdRow {
    /// The recorded claim, when the append was recorded.
    fn claim(&self, message_id: &str) -> Option<Claim> {
        Some(Claim {
            message_id: message_id.to_owned(),
            sender: self.sender.clone()?,
            signature: self.signature.clone()?,
            seq: self.seq?,
            expires_at: self.expires_at.unwrap_or(0),
        })
    }
}

impl Claim {
    /// What storing `e` is, given that this message holds its id.
    fn outcome(&self, e: &NewMailboxEntry) -> Enqueued {
        if self.sender == e.sender && self.signature == e.signature {
            Enqueued::Duplicate {
                seq: to_u64(self.seq),
            }
        } else {
            Enqueued::Conflict
        }
    }
}

/// How an append ended.
enum Appended {
    /// Stored at this position.
    New(i64),
    /// The id is held already (by this message or another).
    Held(Claim),
    /// The mailbox is at its quota.
    Full,
}

/// A mailbox's hint: the last head, bucket and floor this process saw, and how many more
/// appends read the head before trusting it (non-zero after it proved stale).
#[derive(Debug, Clone, Copy)]
struct Hint {
    meta: Meta,
    checks: u32,
}

/// The hints of this process, per mailbox. Safe to be stale: the append's condition checks
/// the head, and every value was true once (the lower bound of the id search only needs
/// that).
#[derive(Default)]
pub(super) struct HeadCache(parking_lot::Mutex<HashMap<String, Hint>>);

impl HeadCache {
    fn get(&self, agent: &str) -> Option<Hint> {
        self.0.lock().get(agent).copied()
    }

    fn put(&self, agent: &str, meta: Meta, checks: u32) {
        let mut map = self.0.lock();
        if map.len() >= HEAD_CACHE_CAP && !map.contains_key(agent) {
            map.clear();
        }
        map.insert(agent.to_owned(), Hint { meta, checks });
    }

    fn forget(&self, agent: &str) {
        self.0.lock().remove(agent);
    }
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

/// An entry row as [`CqlStore::entry_at`] reads it.
enum EntryRow {
    /// Queued (possibly expired by the caller's clock: the row's TTL is the cluster's).
    Queued(MailboxEntry),
    /// Marked acknowledged.
    Acked,
}

/// What acknowledging one id found, before anything is written.
enum AckStep {
    /// Nothing to write.
    Done(AckOutcome),
    /// Mark the entry at `seq` and its id acknowledged. `removed`: the queued entry this
    /// call takes out; `None` when an earlier acknowledgement marked the entry and stopped
    /// before its id, which this one finishes (the id is already acknowledged then, as
    /// [`Mailboxes::entry`] reads it).
    Mark {
        seq: i64,
        expires_at: Millis,
        removed: Option<MailboxEntry>,
    },
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
        let mut hinted = true;
        loop {
            match self.bucket_head(agent, bucket).await? {
                Some(h) if h >= last_of(bucket) => {
                    bucket += 1;
                    hinted = false;
                }
                Some(h) => return Ok(AppendPoint::after(bucket, Some(h))),
                None if new_mailbox && bucket == 0 => {
                    return Ok(AppendPoint {
                        bucket: 0,
                        expect: None,
                        next: 1,
                    });
                }
                // The bucket after a full one: open it (never skip one: a writer that saw
                // the full bucket's head in a failed append opens exactly this one, and a
                // skipped bucket filled later would sit below positions already served).
                None if !hinted => {
                    return Ok(AppendPoint {
                        bucket,
                        expect: None,
                        next: first_of(bucket),
                    });
                }
                // The hinted bucket (written once) has no head: it expired whole, or a later
                // one exists past a stale hint. Look one further before opening that.
                None => match self.bucket_head(agent, bucket + 1).await? {
                    Some(_) => {
                        bucket += 1;
                        hinted = false;
                    }
                    None => return Ok(AppendPoint::after(bucket, None)),
                },
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
        );
        Ok(rows.maybe_first_row::<R>().map_err(corrupt)?.map(
            |(sender, signature, seq, acked, expires_at, from_bucket)| IdRow {
                sender,
                signature,
                seq,
                acked: acked.unwrap_or(false),
                expires_at,
                from_bucket,
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
        // `mailbox_meta.head` is written when a bucket opens, not per append: the rows read
        // (or the floor, when everything up to the head was acknowledged) say the rest.
        let mut head = meta.head.max(meta.floor);
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
    /// The claim of `message_id` in `bucket`, by a serial read: it sees every committed
    /// append of the partition and completes one still in flight first.
    async fn find_claim(
        &self,
        agent: &str,
        bucket: i64,
        message_id: &str,
    ) -> Result<Option<Claim>> {
        let rows = self
            .conn
            .query(
                "look for a message id",
                &self.conn.st.claim_find_serial,
                (agent, bucket, claim_key(message_id)),
            )
            .await?;
        type R = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
        );
        Ok(rows.maybe_first_row::<R>().map_err(corrupt)?.and_then(
            |(id, sender, signature, seq, expires_at)| {
                // Another id on the same key (a hash collision) is not this one's claim.
                (id.as_deref() == Some(message_id)).then_some(Claim {
                    message_id: id?,
                    sender: sender?,
                    signature: signature.unwrap_or_default(),
                    seq: seq?,
                    expires_at: expires_at.unwrap_or(0),
                })
            },
        ))
    }

    /// Writes what `mailbox_ids` is read for: the claim's position, sender and signature.
    async fn record(&self, agent: &str, claim: &Claim) -> Result<()> {
        self.conn
            .exec(
                "record a message id",
                &self.conn.st.id_record,
                (
                    ttl_until(claim.expires_at + ID_MARGIN_MS, wall_ms()),
                    &claim.sender,
                    &claim.signature,
                    claim.seq,
                    claim.expires_at,
                    agent,
                    &claim.message_id,
                ),
            )
            .await
            .map(|_| ())
    }

    /// The claim of an id whose `mailbox_ids` row has no position: its writer is appending,
    /// or died between its batch and the record. Looked for in the buckets from the row's
    /// lower bound to the last one (serial reads), and recorded when found.
    async fn resolve(&self, agent: &str, message_id: &str, row: &IdRow) -> Result<Option<Claim>> {
        if let Some(claim) = row.claim(message_id) {
            return Ok(Some(claim));
        }
        let Some(from) = row.from_bucket else {
            return Ok(None);
        };
        let to = self.meta(agent).await?.last_bucket() + 1;
        for b in from..=to {
            if let Some(claim) = self.find_claim(agent, b, message_id).await? {
                self.record(agent, &claim).await?;
                return Ok(Some(claim));
            }
        }
        Ok(None)
    }

    /// The entry row at position `seq`: one read, body included.
    async fn entry_at(&self, agent: &str, seq: i64) -> Result<Option<EntryRow>> {
        let rows = self
            .conn
            .query(
                "read an entry",
                &self.conn.st.entries_data,
                (agent, bucket_of(seq), seq, seq),
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
        Ok(match rows.maybe_first_row::<R>().map_err(corrupt)? {
            Some((_, _, _, _, _, _, Some(true))) => Some(EntryRow::Acked),
            Some((seq, Some(message_id), Some(sender), Some(data), q, x, _)) => {
                Some(EntryRow::Queued(MailboxEntry {
                    seq: to_u64(seq),
                    message_id,
                    sender,
                    data,
                    queued_at: q.unwrap_or(0),
                    expires_at: x.unwrap_or(0),
                }))
            }
            // Expired, or the mailbox was deleted.
            _ => None,
        })
    }

    /// Appends one entry, with its id's claim, at `at` or the next free position: one
    /// conditional batch. First looks for the id's claim in the buckets from `search_from`
    /// up to the one it appends to (none, unless a bucket was closed or another writer holds
    /// a lower bound). `blind`: `at` comes from this process's hint, not from a read.
    async fn append(
        &self,
        e: &NewMailboxEntry,
        mut meta: Meta,
        mut at: AppendPoint,
        mut blind: bool,
        mut checks: u32,
        search_from: i64,
    ) -> Result<Appended> {
        let st = &self.conn.st;
        let agent = e.agent_id.as_str();
        let now = wall_ms();
        let ttl = ttl_until(e.expires_at, now);
        let head_ttl = ttl.max(ttl_until(now + HEAD_MIN_TTL_MS, now));
        let key = claim_key(&e.message_id);
        // Buckets below this one were searched after they were seen closed.
        let mut searched = search_from;
        for _ in 0..MAX_APPEND_ROUNDS {
            if let Some(max) = e.max_queued {
                let max = i64::try_from(max).unwrap_or(i64::MAX);
                // `next - 1 - floor` bounds the queued count; count only when it reaches max.
                if at.next - 1 - meta.floor >= max {
                    let (n, _, f) = self.count_live(agent, e.queued_at).await?;
                    meta.floor = f;
                    if i64::try_from(n).unwrap_or(i64::MAX) >= max {
                        if meta.head > 0 {
                            // The floor just moved; the head is a hint like any other.
                            self.heads.put(agent, meta, checks);
                        }
                        return Ok(Appended::Full);
                    }
                }
            }
            while searched < at.bucket {
                if let Some(claim) = self.find_claim(agent, searched, &e.message_id).await? {
                    self.record(agent, &claim).await?;
                    return Ok(Appended::Held(claim));
                }
                searched += 1;
            }
            let mut batch = Batch::new(BatchType::Unlogged);
            batch.append_statement(st.entry_insert.clone());
            batch.append_statement(st.claim_insert.clone());
            batch.append_statement(st.head_cas.clone());
            let values = (
                (
                    agent,
                    at.bucket,
                    at.next,
                    &e.message_id,
                    &e.sender,
                    &e.data,
                    e.queued_at,
                    e.expires_at,
                    ttl,
                ),
                (
                    agent,
                    at.bucket,
                    key,
                    &e.message_id,
                    &e.sender,
                    &e.signature,
                    at.next,
                    e.expires_at,
                    ttl,
                ),
                (head_ttl, at.next, agent, at.bucket, at.expect),
            );
            let res = self
                .conn
                .session
                .batch(&batch, values)
                .await
                .map_err(|err| unavailable("append to a mailbox", err))?;
            let lwt = Lwt::parse(res)?;
            if lwt.applied {
                // The shared hints only need the bucket: write them when it moved past
                // what the hints said (a bucket opened, or they were behind), not per append.
                let moved = at.bucket > meta.last_bucket();
                meta.head = at.next;
                meta.bucket = at.bucket;
                self.heads.put(agent, meta, checks);
                let claim = Claim {
                    message_id: e.message_id.clone(),
                    sender: e.sender.clone(),
                    signature: e.signature.clone(),
                    seq: at.next,
                    expires_at: e.expires_at,
                };
                futures::future::try_join(self.record(agent, &claim), async {
                    if moved || at.next == 1 {
                        self.conn
                            .exec(
                                "record a mailbox head",
                                &st.meta_head,
                                (at.next, at.next, at.bucket, agent),
                            )
                            .await?;
                    }
                    Ok(())
                })
                .await?;
                return Ok(Appended::New(at.next));
            }
            // Not applied: the id is claimed in this bucket, or the head moved.
            if let Some(row) = lwt.row_where("seq", |v| v.as_bigint() == Some(key))
                && let Some(holder) = row.text("message_id")
            {
                if holder != e.message_id {
                    return Err(Error::Unavailable(format!(
                        "mailbox of {agent}: message ids {holder} and {} share a claim key in bucket {}; retry later",
                        e.message_id, at.bucket
                    )));
                }
                let claim = Claim {
                    message_id: holder,
                    sender: row.text("sender").unwrap_or_default(),
                    signature: row.text("signature").unwrap_or_default(),
                    seq: row.bigint("entry_seq").unwrap_or(0),
                    expires_at: row.bigint("expires_at").unwrap_or(0),
                };
                self.record(agent, &claim).await?;
                return Ok(Appended::Held(claim));
            }
            if blind {
                // The hint was stale (another process wrote): start again from the hints
                // every writer shares, and read the head first for a while.
                blind = false;
                checks = CHECKS_AFTER_STALE;
                meta = self.meta(agent).await?;
                at = self.append_point(agent, &meta).await?;
            } else {
                at = AppendPoint::after(at.bucket, lwt.bigint("head"));
            }
        }
        Err(Error::Unavailable(format!(
            "mailbox of {agent} too contended: no position after {MAX_APPEND_ROUNDS} tries"
        )))
    }
}

#[async_trait]
impl Mailboxes for CqlStore {
    async fn enqueue(&self, e: NewMailboxEntry) -> Result<Enqueued> {
        let st = &self.conn.st;
        let agent = e.agent_id.as_str();
        let _serial = self.mailbox_lock(agent).lock().await;
        let now = wall_ms();
        let id_ttl = ttl_until(e.expires_at + ID_MARGIN_MS, now);
        // The hints: this process's own, else the shared row. Either was true once, so its
        // bucket is at most the one any later append lands in.
        let hint = self.heads.get(agent);
        let meta = match hint {
            Some(h) => h.meta,
            None => self.meta(agent).await?,
        };
        let blind = hint.is_some_and(|h| h.checks == 0);
        let checks = hint.map_or(0, |h| h.checks.saturating_sub(1));
        let from = meta.last_bucket();
        // Our lower bound for the others, theirs for us, and the head (in one round trip):
        // a writer whose batch committed before we read our hints wrote its bound before.
        let (_, index, at) = futures::future::try_join3(
            self.conn.exec(
                "note a message id",
                &st.id_intent,
                (id_ttl, INTENT_TS - from, from, agent, &e.message_id),
            ),
            self.id_row(agent, &e.message_id),
            async {
                if blind {
                    Ok(AppendPoint::after(meta.bucket, Some(meta.head)))
                } else {
                    self.append_point(agent, &meta).await
                }
            },
        )
        .await?;
        let mut search_from = from;
        if let Some(row) = index {
            if let Some(claim) = row.claim(&e.message_id) {
                return Ok(claim.outcome(&e));
            }
            if let Some(f) = row.from_bucket {
                search_from = search_from.min(f);
            }
        }
        match self
            .append(&e, meta, at, blind, checks, search_from)
            .await?
        {
            Appended::New(seq) => Ok(Enqueued::New { seq: to_u64(seq) }),
            Appended::Held(claim) => Ok(claim.outcome(&e)),
            Appended::Full => Ok(Enqueued::Full),
        }
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
        let Some(claim) = self.resolve(agent_id, message_id, &id).await? else {
            return Ok(None); // being written, or refused: not an accepted message
        };
        if id.acked {
            return Ok(Some(EntryState::Acked {
                sender: claim.sender,
            }));
        }
        // Expired by the caller's clock or by the cluster's (whose TTL removes the rows).
        if claim.expires_at <= now.max(wall_ms()) {
            return Ok(None);
        }
        Ok(match self.entry_at(agent_id, claim.seq).await? {
            Some(EntryRow::Acked) => Some(EntryState::Acked {
                sender: claim.sender,
            }),
            Some(EntryRow::Queued(e)) => Some(EntryState::Queued(e)),
            None => None,
        })
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

    async fn ack(&self, agent_id: &str, message_ids: &[String], now: Millis) -> Result<Vec<Acked>> {
        let st = &self.conn.st;
        let distinct: Vec<&String> = {
            let mut seen = HashSet::new();
            message_ids.iter().filter(|id| seen.insert(*id)).collect()
        };
        let wall = wall_ms();
        // Per id, its id row, its claim, then its entry row (the id row holds no body, and
        // the caller is told what was removed): one chain of reads per id, all at once.
        let steps = futures::future::try_join_all(distinct.iter().map(|id| async move {
            let Some(row) = self.id_row(agent_id, id).await? else {
                return Ok(AckStep::Done(AckOutcome::NotFound));
            };
            if row.acked {
                return Ok(AckStep::Done(AckOutcome::AlreadyAcked));
            }
            let claim = match self.resolve(agent_id, id, &row).await? {
                // Expired by the caller's clock or the cluster's.
                Some(c) if c.expires_at > now.max(wall) => c,
                _ => return Ok(AckStep::Done(AckOutcome::NotFound)),
            };
            let removed = match self.entry_at(agent_id, claim.seq).await? {
                Some(EntryRow::Queued(e)) => Some(e),
                Some(EntryRow::Acked) => None,
                // Dropped by its TTL, or the mailbox was deleted.
                None => return Ok(AckStep::Done(AckOutcome::NotFound)),
            };
            Ok::<_, Error>(AckStep::Mark {
                seq: claim.seq,
                expires_at: claim.expires_at,
                removed,
            })
        }))
        .await?;
        let writes: Vec<(&str, i64, Millis)> = distinct
            .iter()
            .zip(&steps)
            .filter_map(|(id, step)| match step {
                AckStep::Done(_) => None,
                AckStep::Mark {
                    seq, expires_at, ..
                } => Some((id.as_str(), *seq, *expires_at)),
            })
            .collect();
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
        // In the order asked; a repeat within one call is already acknowledged (the first
        // occurrence took the entry).
        let mut found: HashMap<&str, AckStep> =
            distinct.iter().map(|id| id.as_str()).zip(steps).collect();
        Ok(message_ids
            .iter()
            .map(|id| match found.get_mut(id.as_str()) {
                None | Some(AckStep::Done(AckOutcome::NotFound)) => Acked::not_found(),
                Some(step) => {
                    match std::mem::replace(step, AckStep::Done(AckOutcome::AlreadyAcked)) {
                        AckStep::Mark {
                            removed: Some(e), ..
                        } => Acked::newly(e),
                        _ => Acked::already_acked(),
                    }
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
        // Every bucket, id row and marker: a purge of the mailbox.
        self.purge_mailbox(agent_id).await.map(|_| ())
    }
}

/// The mailbox's part of a purge ([`Purge`], in `purge`).
impl CqlStore {
    /// Deletes every bucket of the mailbox (below the floor too: acknowledged rows wait
    /// for their TTL otherwise), each id's lookup row and markers, then the positions;
    /// returns how many entries there were. The positions go last, so a retry still knows
    /// the buckets.
    pub(super) async fn purge_mailbox(&self, agent_id: &str) -> Result<u64> {
        let st = &self.conn.st;
        self.heads.forget(agent_id);
        let meta = self.meta(agent_id).await?;
        let mut entries = 0;
        for b in 0..=meta.last_bucket() + 1 {
            let rows = self
                .conn
                .query("read a mailbox bucket", &st.entries_ids, (agent_id, b))
                .await?;
            let mut ids = Vec::new();
            for row in rows.rows::<(i64, Option<String>)>().map_err(corrupt)? {
                let (seq, id) = row.map_err(corrupt)?;
                entries += u64::from(seq > 0);
                ids.extend(id);
            }
            ids.sort();
            ids.dedup();
            for id in ids {
                for kind in MESSAGE_MARKERS {
                    Kv::delete(self, &message_marker(kind, agent_id, &id)).await?;
                }
                self.conn
                    .exec(
                        "delete a message id",
                        &st.id_delete,
                        (agent_id, id.as_str()),
                    )
                    .await?;
            }
            self.conn
                .exec("delete a mailbox bucket", &st.bucket_delete, (agent_id, b))
                .await?;
        }
        self.conn
            .exec("delete a mailbox", &st.meta_delete, (DELETED_TS, agent_id))
            .await?;
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Claim keys sit below every position, are stable across processes and releases (a
    /// later writer must find an earlier one's claim), and differ between ids.
    #[test]
    fn cql_claim_keys_are_negative_stable_and_spread() {
        for id in ["", "msg_1", "01JD7Z6N5Q1M2K3J4H5G6F7E8D", &"x".repeat(300)] {
            let k = claim_key(id);
            assert!((-(1_i64 << 62)..=-1).contains(&k), "{id}: {k}");
            assert_eq!(k, claim_key(id));
        }
        // -1 minus the first 62 bits of SHA-256("msg_1"): a key must never change meaning
        // between releases (claims written by the previous one are looked up by this one).
        assert_eq!(claim_key("msg_1"), -313_811_872_937_680_634);
        let keys: HashSet<i64> = (0..10_000)
            .map(|i| claim_key(&format!("msg_{i}")))
            .collect();
        assert_eq!(keys.len(), 10_000);
    }

    #[test]
    fn cql_append_point_after_a_full_bucket_opens_the_next_one() {
        let at = AppendPoint::after(0, Some(last_of(0)));
        assert_eq!((at.bucket, at.expect, at.next), (1, None, 1_024));
        let at = AppendPoint::after(3, Some(3 * 1_024 + 10));
        assert_eq!((at.bucket, at.expect, at.next), (3, Some(3_082), 3_083));
    }
}
