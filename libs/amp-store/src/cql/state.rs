//! [`Receipts`], [`Jobs`], [`Presence`] and [`Kv`] on their tables.
//!
//! - **Receipts**: one partition per agent, positions assigned by a conditional batch on
//!   the static `head` (as mailbox appends), rows with the receipt's TTL, dropped by one
//!   range delete.
//! - **Jobs**: the record in `jobs` (the lease is a compare-and-set on its due time and
//!   attempt), an index row in `jobs_due ((kind, shard), due_at, id)`: `due_jobs` reads the
//!   front of 16 ordered partitions. An index row whose job moved or finished (a crash
//!   between the two writes) is skipped and removed when met.
//! - **Presence**: sessions with their lease as TTL; `presence_online` keeps one row per
//!   connected agent in 16 shards, written with the lease end as its write timestamp so the
//!   longest lease wins. `agents_online` counts those rows: approximate by design (a
//!   session cleared while another one's renewal races it may be counted until its lease
//!   ends); `presence_count` is exact.

use async_trait::async_trait;
use scylla::statement::batch::{Batch, BatchType};

use super::conn::{Lwt, corrupt, ttl_until, unavailable};
use super::{CqlStore, wall_ms};
use crate::*;

/// Shards of `jobs_due` per kind and of `presence_online`.
const SHARDS: i32 = 16;

fn shard_of(key: &str) -> i32 {
    let h = key.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (h % SHARDS as u32) as i32
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl CqlStore {
    async fn job(&self, id: &str) -> Result<Option<Job>> {
        let rows = self
            .conn
            .query("read a job", &self.conn.st.job_get, (id,))
            .await?;
        type R = (
            Option<String>,
            Option<i32>,
            Option<i64>,
            Option<i32>,
            Option<String>,
        );
        Ok(rows.maybe_first_row::<R>().map_err(corrupt)?.and_then(
            |(kind, _shard, due_at, attempt, data)| {
                // A row without its kind or work is what a lease left of a finished job.
                Some(Job {
                    id: id.to_owned(),
                    kind: kind?,
                    due_at: due_at?,
                    attempt: u32::try_from(attempt.unwrap_or(0)).unwrap_or(0),
                    data: data?,
                })
            },
        ))
    }

    async fn unindex_job(&self, kind: &str, due_at: Millis, id: &str) -> Result<()> {
        self.conn
            .exec(
                "unindex a job",
                &self.conn.st.due_delete,
                (kind, shard_of(id), due_at, id),
            )
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Receipts for CqlStore {
    async fn put_receipt(&self, agent_id: &str, receipt: Receipt) -> Result<u64> {
        let st = &self.conn.st;
        let rows = self
            .conn
            .query("read a receipt head", &st.receipt_head, (agent_id,))
            .await?;
        let mut head = rows
            .maybe_first_row::<(Option<i64>,)>()
            .map_err(corrupt)?
            .and_then(|(h,)| h);
        let ttl = ttl_until(receipt.expires_at, wall_ms());
        for _ in 0..64 {
            let next = head.unwrap_or(0) + 1;
            let mut batch = Batch::new(BatchType::Unlogged);
            batch.append_statement(st.receipt_insert.clone());
            batch.append_statement(st.receipt_head_cas.clone());
            let values = (
                (
                    agent_id,
                    next,
                    &receipt.data,
                    receipt.created_at,
                    receipt.expires_at,
                    ttl,
                ),
                (next, agent_id, head),
            );
            let res = self
                .conn
                .session
                .batch(&batch, values)
                .await
                .map_err(|e| unavailable("retain a receipt", e))?;
            let lwt = Lwt::parse(res)?;
            if lwt.applied {
                return Ok(to_u64(next));
            }
            head = lwt.bigint("head");
        }
        Err(Error::Unavailable(
            "receipts of one agent too contended".into(),
        ))
    }

    async fn receipts(
        &self,
        agent_id: &str,
        after: Option<u64>,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<Receipt>> {
        let after = after.map_or(0, |a| i64::try_from(a).unwrap_or(i64::MAX));
        let rows = self
            .conn
            .query(
                "read receipts",
                &self.conn.st.receipts_list,
                (agent_id, after),
            )
            .await?;
        let mut out = Vec::new();
        type R = (i64, Option<String>, Option<i64>, Option<i64>);
        for row in rows.rows::<R>().map_err(corrupt)? {
            let (seq, data, created_at, expires_at) = row.map_err(corrupt)?;
            let (Some(data), Some(expires_at)) = (data, expires_at) else {
                continue;
            };
            if expires_at <= now {
                continue;
            }
            out.push(Receipt {
                seq: to_u64(seq),
                data,
                created_at: created_at.unwrap_or(0),
                expires_at,
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn drop_receipts(&self, agent_id: &str, upto: u64) -> Result<()> {
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        self.conn
            .exec(
                "drop receipts",
                &self.conn.st.receipts_drop,
                (agent_id, upto),
            )
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Jobs for CqlStore {
    async fn schedule(&self, job: Job) -> Result<()> {
        let st = &self.conn.st;
        let old = self.job(&job.id).await?;
        let shard = shard_of(&job.id);
        let attempt = i32::try_from(job.attempt).unwrap_or(i32::MAX);
        // The index row first: a job whose record exists is always found.
        self.conn
            .exec(
                "index a job",
                &st.due_put,
                (&job.kind, shard, job.due_at, &job.id),
            )
            .await?;
        self.conn
            .exec(
                "write a job",
                &st.job_put,
                (&job.id, &job.kind, shard, job.due_at, attempt, &job.data),
            )
            .await?;
        if let Some(old) = old.filter(|o| o.due_at != job.due_at || o.kind != job.kind) {
            self.unindex_job(&old.kind, old.due_at, &old.id).await?;
        }
        Ok(())
    }

    async fn due_jobs(&self, kind: &str, now: Millis, limit: usize) -> Result<Vec<Job>> {
        let st = &self.conn.st;
        let per_shard = i32::try_from(limit).unwrap_or(i32::MAX).max(1);
        let scans = futures::future::try_join_all((0..SHARDS).map(|shard| async move {
            let rows = self
                .conn
                .query("read due jobs", &st.due_scan, (kind, shard, now, per_shard))
                .await?;
            rows.rows::<(i64, String)>()
                .map_err(corrupt)?
                .map(|r| r.map_err(corrupt))
                .collect::<Result<Vec<_>>>()
        }))
        .await?;
        let mut index: Vec<(i64, String)> = scans.into_iter().flatten().collect();
        index.sort();
        let mut out = Vec::new();
        for (due_at, id) in index {
            if out.len() >= limit {
                break;
            }
            match self.job(&id).await? {
                Some(job) if job.due_at == due_at && job.kind == kind => out.push(job),
                // Moved or finished while its old index row stayed: clean it up.
                _ => self.unindex_job(kind, due_at, &id).await?,
            }
        }
        Ok(out)
    }

    async fn claim(&self, job: &Job, until: Millis) -> Result<bool> {
        let st = &self.conn.st;
        let attempt = i32::try_from(job.attempt).unwrap_or(i32::MAX);
        let res = self
            .conn
            .lwt(
                "lease a job",
                &st.job_claim,
                (until, &job.id, job.due_at, attempt),
            )
            .await?;
        if !res.applied {
            return Ok(false);
        }
        // A leased job whose record was deleted meanwhile is not claimed.
        if res.applied && self.job(&job.id).await?.is_none() {
            return Ok(false);
        }
        self.conn
            .exec(
                "index a job",
                &st.due_put,
                (&job.kind, shard_of(&job.id), until, &job.id),
            )
            .await?;
        self.unindex_job(&job.kind, job.due_at, &job.id).await?;
        Ok(true)
    }

    async fn complete(&self, id: &str) -> Result<()> {
        let Some(job) = self.job(id).await? else {
            return Ok(());
        };
        self.conn
            .exec("delete a job", &self.conn.st.job_delete, (id,))
            .await?;
        self.unindex_job(&job.kind, job.due_at, id).await?;
        Ok(())
    }
}

#[async_trait]
impl Presence for CqlStore {
    async fn presence_set(&self, agent_id: &str, session: &str, until: Millis) -> Result<()> {
        let st = &self.conn.st;
        let ttl = ttl_until(until, wall_ms());
        self.conn
            .exec(
                "record a session",
                &st.presence_put,
                (agent_id, session, until, ttl),
            )
            .await?;
        self.conn
            .exec(
                "record an agent online",
                &st.online_put,
                (
                    shard_of(agent_id),
                    agent_id,
                    until,
                    ttl,
                    until.saturating_mul(1000),
                ),
            )
            .await?;
        Ok(())
    }

    async fn presence_clear(&self, agent_id: &str, session: &str) -> Result<()> {
        let st = &self.conn.st;
        let sessions = self.sessions(agent_id).await?;
        self.conn
            .exec("clear a session", &st.presence_delete, (agent_id, session))
            .await?;
        let now = wall_ms();
        let others_live = sessions.iter().any(|(s, u)| s != session && *u > now);
        if !others_live {
            // Deleted at the latest lease end seen, so a newer session's row outlives it.
            let ts = sessions.iter().map(|(_, u)| *u).max().unwrap_or(now);
            self.conn
                .exec(
                    "record an agent offline",
                    &st.online_delete,
                    (
                        ts.saturating_mul(1000).saturating_add(1),
                        shard_of(agent_id),
                        agent_id,
                    ),
                )
                .await?;
        }
        Ok(())
    }

    async fn presence_count(&self, agent_id: &str, now: Millis) -> Result<u32> {
        Ok(self
            .sessions(agent_id)
            .await?
            .iter()
            .filter(|(_, until)| *until > now)
            .count() as u32)
    }

    async fn agents_online(&self, now: Millis) -> Result<u64> {
        let st = &self.conn.st;
        let counts = futures::future::try_join_all((0..SHARDS).map(|shard| async move {
            let rows = self
                .conn
                .query("count agents online", &st.online_scan, (shard,))
                .await?;
            let mut n = 0u64;
            for r in rows.rows::<(Option<i64>,)>().map_err(corrupt)? {
                if r.map_err(corrupt)?.0.is_some_and(|u| u > now) {
                    n += 1;
                }
            }
            Ok::<u64, Error>(n)
        }))
        .await?;
        Ok(counts.into_iter().sum())
    }
}

impl CqlStore {
    async fn sessions(&self, agent_id: &str) -> Result<Vec<(String, Millis)>> {
        let rows = self
            .conn
            .query("read sessions", &self.conn.st.presence_list, (agent_id,))
            .await?;
        rows.rows::<(String, Option<i64>)>()
            .map_err(corrupt)?
            .map(|r| r.map_err(corrupt).map(|(s, u)| (s, u.unwrap_or(0))))
            .collect()
    }
}

#[async_trait]
impl Kv for CqlStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let rows = self
            .conn
            .query("read a value", &self.conn.st.kv_get, (key,))
            .await?;
        Ok(rows
            .maybe_first_row::<(Option<Vec<u8>>, Option<i64>)>()
            .map_err(corrupt)?
            .and_then(|(v, expires_at)| match expires_at {
                Some(t) if t <= wall_ms() => None,
                _ => v,
            }))
    }

    async fn put(&self, key: &str, value: Vec<u8>, expires_at: Option<Millis>) -> Result<()> {
        let st = &self.conn.st;
        match expires_at {
            Some(t) => {
                self.conn
                    .exec(
                        "write a value",
                        &st.kv_put_ttl,
                        (key, value, t, ttl_until(t, wall_ms())),
                    )
                    .await?
            }
            None => {
                self.conn
                    .exec("write a value", &st.kv_put, (key, value))
                    .await?
            }
        };
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.conn
            .exec("delete a value", &self.conn.st.kv_delete, (key,))
            .await?;
        Ok(())
    }
}

/// Receipts' and presence's part of a purge ([`Purge`], in `purge`).
impl CqlStore {
    /// Deletes the agent's receipts (one partition delete); returns how many there were.
    pub(super) async fn purge_receipts(&self, agent_id: &str) -> Result<u64> {
        let st = &self.conn.st;
        let n = self
            .conn
            .query("count receipts", &st.receipts_count, (agent_id,))
            .await?
            .first_row::<(i64,)>()
            .map_err(corrupt)?
            .0;
        self.conn
            .exec("delete receipts", &st.receipts_delete, (agent_id,))
            .await?;
        Ok(n.max(0) as u64)
    }

    /// Deletes the agent's sessions and its online row (at a timestamp past any lease: the
    /// agent is gone for good).
    pub(super) async fn purge_presence(&self, agent_id: &str) -> Result<()> {
        let st = &self.conn.st;
        self.conn
            .exec("delete sessions", &st.presence_delete_all, (agent_id,))
            .await?;
        self.conn
            .exec(
                "record an agent offline",
                &st.online_delete,
                (i64::MAX / 2, shard_of(agent_id), agent_id),
            )
            .await?;
        Ok(())
    }
}
