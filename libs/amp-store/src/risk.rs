//! Risk counters (spec-next 07 "Risk Scoring"), typed over [`Records`]: per sender agent,
//! per hour and per counting process, the process's running totals for that hour, in the
//! collection [`RISK`] under `<agent_id>.<hour, 10 digits>.<replica>`. A process replaces
//! only its own rows (no backend needs atomic increments, no two processes contend on a
//! row); a reader sums the rows of the hours it wants, so an agent's rolling 24 hours are
//! at most 25 hours × processes small reads of one id range.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Error, PutMode, Records, Result};

/// Collection of risk rows.
pub const RISK: &str = "risk";

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

fn row_id(agent_id: &str, hour: i64, replica: &str) -> String {
    format!("{agent_id}.{hour:010}.{replica}")
}

/// The agent id and hour of a row id of `agent_id` (`None`: another agent's row).
fn parse_row<'a>(agent_id: &str, id: &'a str) -> Option<(i64, &'a str)> {
    let rest = id.strip_prefix(agent_id)?.strip_prefix('.')?;
    let (hour, replica) = rest.split_once('.')?;
    Some((hour.parse().ok()?, replica))
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
            RISK,
            &row_id(agent_id, hour, replica),
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
        let mut sum = RiskCounts::default();
        let mut after = format!("{agent_id}.");
        let mut stale = Vec::new();
        'pages: loop {
            let rows = self.record_list(RISK, Some(&after), PAGE).await?;
            let n = rows.len();
            for (id, bytes) in rows {
                let Some((hour, _)) = parse_row(agent_id, &id) else {
                    break 'pages;
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
                after = id;
            }
            if n < PAGE {
                break;
            }
        }
        for id in stale {
            self.record_take(RISK, &id).await?;
        }
        Ok(sum)
    }

    /// Deletes every row of `agent_id` (its tenant's deletion).
    async fn drop_risk(&self, agent_id: &str) -> Result<()> {
        let prefix = format!("{agent_id}.");
        loop {
            let rows = self.record_list(RISK, Some(&prefix), 200).await?;
            let mine: Vec<String> = rows
                .into_iter()
                .map(|(id, _)| id)
                .take_while(|id| parse_row(agent_id, id).is_some())
                .collect();
            if mine.is_empty() {
                return Ok(());
            }
            for id in mine {
                self.record_take(RISK, &id).await?;
            }
        }
    }
}

impl<T: Records + ?Sized> Risk for T {}
