//! [`Jobs`] on the embedded fjall store: jobs by (due_at, id), so the due ones are a key
//! range, and each job's due time by id in `job_ids`.

use async_trait::async_trait;

use super::keys::{self, Key};
use super::{FjallStore, Reads, from_json, row, to_json};
use crate::*;

/// The `jobs` key of a job due at `due_at`.
fn job_key(due_at: Millis, id: &str) -> Vec<u8> {
    Key::new().i64(due_at).str(id).done()
}

#[async_trait]
impl Jobs for FjallStore {
    async fn schedule(&self, job: Job) -> Result<()> {
        self.writer
            .write(move |txn| {
                let id = keys::one(&job.id);
                if let Some(due) = txn.get(&txn.ks.job_ids, &id)? {
                    txn.remove(&txn.ks.jobs, &job_key(keys::i64_value(&due)?, &job.id))?;
                }
                txn.insert(&txn.ks.job_ids, &id, &job.due_at.to_be_bytes())?;
                txn.insert(&txn.ks.jobs, &job_key(job.due_at, &job.id), &to_json(&job)?)
            })
            .await
    }

    async fn due_jobs(&self, kind: &str, now: Millis, limit: usize) -> Result<Vec<Job>> {
        let r = self.read()?;
        let mut out = Vec::new();
        // Due at or before `now`: keys below (now + 1, "").
        let upto = Key::new().i64(now.saturating_add(1)).done();
        for g in r.range(&r.ks().jobs, ..upto) {
            if out.len() >= limit {
                break;
            }
            let (_, v) = row(g)?;
            let job: Job = from_json(&v)?;
            if job.kind == kind {
                out.push(job);
            }
        }
        Ok(out)
    }

    async fn claim(&self, job: &Job, until: Millis) -> Result<bool> {
        let job = job.clone();
        self.writer
            .write(move |txn| {
                let id = keys::one(&job.id);
                let due = match txn.get(&txn.ks.job_ids, &id)? {
                    Some(v) => Some(keys::i64_value(&v)?),
                    None => None,
                };
                if due != Some(job.due_at) {
                    return Ok(false);
                }
                let stored: Option<Job> =
                    match txn.get(&txn.ks.jobs, &job_key(job.due_at, &job.id))? {
                        Some(v) => Some(from_json(&v)?),
                        None => None,
                    };
                let Some(stored) = stored.filter(|s| s.attempt == job.attempt) else {
                    return Ok(false);
                };
                txn.remove(&txn.ks.jobs, &job_key(job.due_at, &job.id))?;
                let leased = Job {
                    due_at: until,
                    ..stored
                };
                txn.insert(&txn.ks.job_ids, &id, &until.to_be_bytes())?;
                txn.insert(
                    &txn.ks.jobs,
                    &job_key(until, &leased.id),
                    &to_json(&leased)?,
                )?;
                Ok(true)
            })
            .await
    }

    async fn complete(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.writer
            .write(move |txn| {
                if let Some(due) = txn.take(&txn.ks.job_ids, &keys::one(&id))? {
                    txn.remove(&txn.ks.jobs, &job_key(keys::i64_value(&due)?, &id))?;
                }
                Ok(())
            })
            .await
    }
}
