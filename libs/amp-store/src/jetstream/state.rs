//! [`Receipts`] on the `AMP_RECEIPTS` stream; [`Jobs`], [`Presence`] and [`Kv`] on the
//! `amp_state` bucket. Each method is one JetStream write or read; none needs more.
//!
//! - Receipts: one message per receipt on `amp.rcpt.<agent>`, its `seq` the stream
//!   sequence (increasing per agent), `Nats-TTL` from `expires_at`; dropping is one purge
//!   of the agent's subject below `upto + 1`.
//! - Jobs: `job.<id>` → the job (scheduling again replaces it). `due_jobs` reads every job
//!   (one batched direct get per 256) and sorts by due time: O(scheduled jobs) per call,
//!   fine for retry timers, which are few at any moment; a sorted index would be the next
//!   step if that stops being true.
//! - Presence: `pres.<agent>.<session>` → lease end, with `Nats-TTL` so a crashed process's
//!   sessions vanish on their own; counts read the agent's (or every) session.
//! - Kv: `kv.<key>` → bytes.

use std::collections::HashSet;

use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;

use super::JetStreamStore;
use super::conn::{Conflict, Expect, MAX_BATCH, from_json, to_json, tok, ttl_until, untok};
use crate::*;

fn refused(Conflict: Conflict) -> Error {
    Error::Corrupt("unconditional put refused".into())
}

#[async_trait]
impl Receipts for JetStreamStore {
    async fn put_receipt(&self, agent_id: &str, receipt: Receipt) -> Result<u64> {
        let mut headers = HeaderMap::new();
        let ttl = format!("{}s", ttl_until(receipt.expires_at).as_secs().max(1));
        headers.insert("Nats-TTL", ttl.as_str());
        let body = to_json(&Receipt { seq: 0, ..receipt })?;
        let ack = self
            .conn
            .publish(self.receipt_subject(agent_id), headers, body)
            .await?
            .map_err(refused)?;
        Ok(ack.sequence)
    }

    async fn receipts(
        &self,
        agent_id: &str,
        after: Option<u64>,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<Receipt>> {
        let subject = self.receipt_subject(agent_id);
        let mut start = after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::new();
        while out.len() < limit {
            let b = self
                .conn
                .batch(&self.receipts, &subject, start, MAX_BATCH)
                .await?;
            let Some(last) = b.messages.last() else {
                break;
            };
            start = last.seq + 1;
            for raw in b.messages {
                let r: Receipt = from_json(&raw.payload)?;
                if r.expires_at > now && out.len() < limit {
                    out.push(Receipt { seq: raw.seq, ..r });
                }
            }
            if b.pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    async fn drop_receipts(&self, agent_id: &str, upto: u64) -> Result<()> {
        self.conn
            .purge(
                &self.receipts,
                &self.receipt_subject(agent_id),
                Some(upto.saturating_add(1)),
            )
            .await
            .map(|_| ())
    }
}

fn job_key(id: &str) -> String {
    format!("job.{}", tok(id))
}

#[async_trait]
impl Jobs for JetStreamStore {
    async fn schedule(&self, job: Job) -> Result<()> {
        self.conn
            .kv_put_json(&self.state, &job_key(&job.id), &job, Expect::Any, None)
            .await?
            .map_err(refused)?;
        Ok(())
    }

    async fn due_jobs(&self, kind: &str, now: Millis, limit: usize) -> Result<Vec<Job>> {
        let mut due = Vec::new();
        for (_, value) in self.conn.kv_scan(&self.state, "job").await? {
            let job: Job = from_json(&value)?;
            if job.due_at <= now && job.kind == kind {
                due.push(job);
            }
        }
        due.sort_by(|a, b| (a.due_at, &a.id).cmp(&(b.due_at, &b.id)));
        due.truncate(limit);
        Ok(due)
    }

    async fn claim(&self, job: &Job, until: Millis) -> Result<bool> {
        let key = job_key(&job.id);
        let (stored, revision) = self.conn.kv_get_json::<Job>(&self.state, &key).await?;
        let Some(stored) = stored.filter(|s| s.due_at == job.due_at && s.attempt == job.attempt)
        else {
            return Ok(false);
        };
        let leased = Job {
            due_at: until,
            ..stored
        };
        Ok(self
            .conn
            .kv_put_json(&self.state, &key, &leased, Expect::Revision(revision), None)
            .await?
            .is_ok())
    }

    async fn complete(&self, id: &str) -> Result<()> {
        self.conn.kv_delete(&self.state, &job_key(id)).await
    }
}

fn presence_key(agent_id: &str, session: &str) -> String {
    format!("pres.{}.{}", tok(agent_id), tok(session))
}

#[async_trait]
impl Presence for JetStreamStore {
    async fn presence_set(&self, agent_id: &str, session: &str, until: Millis) -> Result<()> {
        self.conn
            .kv_put_json(
                &self.state,
                &presence_key(agent_id, session),
                &until,
                Expect::Any,
                Some(ttl_until(until)),
            )
            .await?
            .map_err(refused)?;
        Ok(())
    }

    async fn presence_clear(&self, agent_id: &str, session: &str) -> Result<()> {
        self.conn
            .kv_delete(&self.state, &presence_key(agent_id, session))
            .await
    }

    async fn presence_count(&self, agent_id: &str, now: Millis) -> Result<u32> {
        let prefix = format!("pres.{}", tok(agent_id));
        let mut n = 0;
        for (_, value) in self.conn.kv_scan(&self.state, &prefix).await? {
            if from_json::<Millis>(&value)? > now {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn agents_online(&self, now: Millis) -> Result<u64> {
        let mut agents = HashSet::new();
        for (key, value) in self.conn.kv_scan(&self.state, "pres").await? {
            if from_json::<Millis>(&value)? <= now {
                continue;
            }
            if let Some(agent) = key.split('.').nth(1) {
                agents.insert(untok(agent)?);
            }
        }
        Ok(agents.len() as u64)
    }
}

fn kv_key(key: &str) -> String {
    format!("kv.{}", tok(key))
}

/// Where a value with an expiry lives (a separate key keeps the layout of values without).
fn kv_expiring_key(key: &str) -> String {
    format!("kvx.{}", tok(key))
}

#[async_trait]
impl Kv for JetStreamStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        // An expiring value is `<expires_at>\n<value>` under its own key. Both forms are
        // read at once (one request: most keys asked for hold neither), except on
        // replicated streams, whose reads go to the leader one key at a time.
        let expiring = if self.conn.replicated() {
            if let Some(v) = self.conn.kv_get(&self.state, &kv_key(key)).await?.value {
                return Ok(Some(v.to_vec()));
            }
            self.conn
                .kv_get(&self.state, &kv_expiring_key(key))
                .await?
                .value
        } else {
            let (plain, expiring) = self
                .conn
                .kv_get_two(&self.state, &kv_key(key), &kv_expiring_key(key))
                .await?;
            if let Some(v) = plain {
                return Ok(Some(v.to_vec()));
            }
            expiring
        };
        let Some(v) = expiring else {
            return Ok(None);
        };
        let Some(nl) = v.iter().position(|b| *b == b'\n') else {
            return Err(Error::Corrupt(format!(
                "kv value of {key} without its expiry"
            )));
        };
        let expires_at: Millis = std::str::from_utf8(&v[..nl])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| Error::Corrupt(format!("kv expiry of {key}")))?;
        Ok((expires_at > super::wall_ms()).then(|| v[nl + 1..].to_vec()))
    }

    async fn put(&self, key: &str, value: Vec<u8>, expires_at: Option<Millis>) -> Result<()> {
        // The server drops it after its expiry (plus the usual margin); `get` hides it from
        // the expiry on, by the value's own record of it.
        let stored = match expires_at {
            Some(t) => {
                let mut v = format!("{t}\n").into_bytes();
                v.extend_from_slice(&value);
                v
            }
            None => value,
        };
        let (key, other) = match expires_at {
            Some(_) => (kv_expiring_key(key), kv_key(key)),
            None => (kv_key(key), kv_expiring_key(key)),
        };
        // A value lives under one of the two keys: drop the other form first.
        self.conn.kv_delete(&self.state, &other).await?;
        self.conn
            .kv_put(
                &self.state,
                &key,
                Bytes::from(stored),
                Expect::Any,
                expires_at.map(super::conn::ttl_until),
            )
            .await?
            .map_err(refused)?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.conn.kv_delete(&self.state, &kv_key(key)).await?;
        self.conn
            .kv_delete(&self.state, &kv_expiring_key(key))
            .await
    }
}
