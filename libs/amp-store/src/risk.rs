//! Risk counters (spec-next 07 "Risk Scoring"), typed over [`Records`]: per sender agent,
//! per hour and per counting process, the process's running totals for that hour, in the
//! agent's own collection `risk.<agent_id>` under `<hour, 10 digits>.<replica>`. A process
//! replaces only its own rows (no backend needs atomic increments, no two processes contend
//! on a row); a reader lists the agent's collection, at most 25 hours × processes small
//! rows, so the cost of a sum does not grow with the number of agents (every backend lists
//! one collection without touching another's).
//!
//! Rows of the first layout (one collection [`RISK`] for every agent, ids
//! `<agent_id>.<hour>.<replica>`) are no longer read; [`Risk::drop_legacy_risk`] deletes
//! them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Error, PutMode, Records, Result};

/// The first layout's collection of every agent's risk rows (see the module documentation).
pub const RISK: &str = "risk";

/// The collection of `agent_id`'s risk rows.
pub fn risk_collection(agent_id: &str) -> String {
    format!("{RISK}.{agent_id}")
}

/// One process's counts of one agent's messages in one hour (or a sum of such rows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskCounts {
    /// Messages the agent sent.
    pub total_messages: u64,
    /// Refused by a security rule.
    #[serde(default)]
    pub blocked: u64,
    /// Held for review.
    #[serde(default)]
    pub quarantined: u64,
    /// Delivered with injection flags.
    #[serde(default)]
    pub flagged: u64,
}

impl RiskCounts {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &RiskCounts) {
        self.total_messages += other.total_messages;
        self.blocked += other.blocked;
        self.quarantined += other.quarantined;
        self.flagged += other.flagged;
    }
}

fn row_id(hour: i64, replica: &str) -> String {
    format!("{hour:010}.{replica}")
}

/// The hour of a row id.
fn row_hour(id: &str) -> Option<i64> {
    id.split_once('.')?.0.parse().ok()
}

/// Risk rows with their types, over any [`Records`].
#[async_trait]
pub trait Risk: Records {
    /// Writes this process's totals for `agent_id` in `hour` (unix hours), replacing its
    /// earlier row for that hour.
    async fn put_risk(
        &self,
        agent_id: &str,
        hour: i64,
        replica: &str,
        counts: &RiskCounts,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(counts).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.record_put(
            &risk_collection(agent_id),
            &row_id(hour, replica),
            bytes,
            PutMode::Replace,
        )
        .await
        .map(|_| ())
    }

    /// The sum of every process's rows of `agent_id` for the hours `from_hour..=to_hour`.
    /// Rows before `from_hour` are deleted on the way (they can never count again), so an
    /// agent that keeps sending keeps a day of rows.
    async fn risk_sum(&self, agent_id: &str, from_hour: i64, to_hour: i64) -> Result<RiskCounts> {
        const PAGE: usize = 200;
        let collection = risk_collection(agent_id);
        let mut sum = RiskCounts::default();
        let mut after: Option<String> = None;
        let mut stale = Vec::new();
        'pages: loop {
            let rows = self
                .record_list(&collection, after.as_deref(), PAGE)
                .await?;
            let n = rows.len();
            for (id, bytes) in rows {
                let Some(hour) = row_hour(&id) else {
                    return Err(Error::Corrupt(format!("risk row id {id}")));
                };
                if hour > to_hour {
                    break 'pages;
                }
                if hour < from_hour {
                    stale.push(id.clone());
                } else {
                    let c: RiskCounts = serde_json::from_slice(&bytes)
                        .map_err(|e| Error::Corrupt(e.to_string()))?;
                    sum.add(&c);
                }
                after = Some(id);
            }
            if n < PAGE {
                break;
            }
        }
        for id in stale {
            self.record_take(&collection, &id).await?;
        }
        Ok(sum)
    }

    /// Deletes every row of `agent_id` (its tenant's deletion).
    async fn drop_risk(&self, agent_id: &str) -> Result<()> {
        let collection = risk_collection(agent_id);
        loop {
            let rows = self.record_list(&collection, None, 200).await?;
            if rows.is_empty() {
                return Ok(());
            }
            for (id, _) in rows {
                self.record_take(&collection, &id).await?;
            }
        }
    }

    /// Deletes up to `max` rows of the first layout (the shared [`RISK`] collection, read by
    /// nothing since); the number deleted, 0 when none is left.
    async fn drop_legacy_risk(&self, max: usize) -> Result<usize> {
        let rows = self.record_list(RISK, None, max).await?;
        let mut n = 0;
        for (id, _) in rows {
            if self.record_take(RISK, &id).await? {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl<T: Records + ?Sized> Risk for T {}
