//! Quarantined messages (spec-next 07 "Message Quarantine"), typed over [`Records`]: one
//! entry per held message in [`QUARANTINE`], by its id (`qtn_<unix s, 10 digits>_<16 hex>`,
//! so the listing is in time order), and the review's decision in [`DECISIONS`], written
//! once: of two reviewers deciding at the same moment exactly one wins (the record's
//! create-if-absent), so a message is never both approved and rejected, nor approved twice.
//! An entry's expiry is judged by its reader (`expires_at`), as the spec's `expired` state
//! is just an unreviewed entry past its time; [`Quarantine::purge_quarantine`] deletes
//! entries some time after it (the periodic purge), decided or not.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Error, Millis, PutMode, Records, Result};

/// Collection of [`QuarantineEntry`]s.
pub const QUARANTINE: &str = "quarantine";
/// Collection of [`QuarantineDecision`]s, by entry id.
pub const DECISIONS: &str = "quarantine_decisions";

/// A held message with 07's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// `qtn_…`.
    pub quarantine_id: String,
    /// The sender's address.
    pub from: String,
    /// The recipient's address.
    pub to: String,
    /// The recipient agent.
    pub recipient_id: String,
    /// The recipient's tenant (its deletion deletes the entry).
    #[serde(default)]
    pub tenant: String,
    /// The envelope's subject.
    pub subject: String,
    /// `injection_detected`, `risk_threshold`, …
    pub reason: String,
    /// The detection categories that held it.
    pub rules_triggered: Vec<String>,
    /// `warning`, `high` or `critical`.
    pub severity: String,
    /// When, unix ms.
    pub quarantined_at: Millis,
    /// When it expires unreviewed, unix ms.
    pub expires_at: Millis,
    /// The message's id.
    pub message_id: String,
    /// The stored message (JSON: envelope, payload, annotations), as the mailbox would hold it.
    pub data: String,
    /// The mailbox entry's times and limits, for writing it on approval.
    pub mailbox_expires_at: Millis,
    /// The mailbox's queued-entry limit at acceptance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<u64>,
    /// The sender's signature (the mailbox's idempotency key with the id).
    pub signature: String,
}

/// A reviewer's decision on an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineDecision {
    /// `approved` or `rejected`.
    pub status: String,
    /// Who (an operator token id).
    pub by: String,
    /// When, unix ms.
    pub at: Millis,
}

fn to_vec<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Corrupt(e.to_string()))
}

fn from_slice<T: for<'a> Deserialize<'a>>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt(e.to_string()))
}

/// Quarantine entries and decisions with their types, over any [`Records`].
#[async_trait]
pub trait Quarantine: Records {
    /// Holds a message; `false` when an entry with this id exists (a redelivered message
    /// quarantined again: nothing written).
    async fn put_quarantine(&self, e: &QuarantineEntry) -> Result<bool> {
        self.record_put(QUARANTINE, &e.quarantine_id, to_vec(e)?, PutMode::Create)
            .await
    }

    /// An entry by id.
    async fn quarantine(&self, id: &str) -> Result<Option<QuarantineEntry>> {
        match self.record_get(QUARANTINE, id).await? {
            Some(b) => from_slice(&b).map(Some),
            None => Ok(None),
        }
    }

    /// Entries after the id `after`, in id (time) order, at most `limit`.
    async fn quarantine_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<QuarantineEntry>> {
        let rows = self.record_list(QUARANTINE, after, limit).await?;
        rows.iter().map(|(_, b)| from_slice(b)).collect()
    }

    /// Decisions after the entry id `after`, in id order, at most `limit`.
    async fn quarantine_decisions_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, QuarantineDecision)>> {
        let rows = self.record_list(DECISIONS, after, limit).await?;
        rows.into_iter()
            .map(|(id, b)| from_slice(&b).map(|d| (id, d)))
            .collect()
    }

    /// Records the decision on `id` unless one exists; `false`: another came first.
    async fn decide_quarantine(&self, id: &str, d: &QuarantineDecision) -> Result<bool> {
        self.record_put(DECISIONS, id, to_vec(d)?, PutMode::Create)
            .await
    }

    /// The decision on `id`, if one was made.
    async fn quarantine_decision(&self, id: &str) -> Result<Option<QuarantineDecision>> {
        match self.record_get(DECISIONS, id).await? {
            Some(b) => from_slice(&b).map(Some),
            None => Ok(None),
        }
    }

    /// Deletes the entries that expired before `cutoff` (`expires_at < cutoff`), with their
    /// decisions, looking at no more than `max_scanned` entries from the oldest; returns the
    /// deleted entries with their decision (`None`: it expired unreviewed), for the log.
    /// Entries are listed by quarantine time and none expires before it was held, so the
    /// scan stops at the first entry held at `cutoff` or later.
    async fn purge_quarantine(
        &self,
        cutoff: Millis,
        max_scanned: usize,
    ) -> Result<Vec<(QuarantineEntry, Option<QuarantineDecision>)>> {
        let mut after: Option<String> = None;
        let mut scanned = 0;
        let mut gone = Vec::new();
        while scanned < max_scanned {
            let want = (max_scanned - scanned).min(500);
            let rows = self.record_list(QUARANTINE, after.as_deref(), want).await?;
            let len = rows.len();
            for (id, b) in rows {
                scanned += 1;
                let e: QuarantineEntry = from_slice(&b)?;
                if e.quarantined_at >= cutoff {
                    return Ok(gone);
                }
                if e.expires_at < cutoff {
                    let decision = self.quarantine_decision(&id).await?;
                    self.record_take(DECISIONS, &id).await?;
                    if self.record_take(QUARANTINE, &id).await? {
                        gone.push((e, decision));
                    }
                }
                after = Some(id);
            }
            if len < want {
                break;
            }
        }
        Ok(gone)
    }

    /// Deletes the entries held for `tenant`'s agents, with their decisions (the tenant's
    /// deletion); returns how many.
    async fn drop_tenant_quarantine(&self, tenant: &str) -> Result<u64> {
        let mut after: Option<String> = None;
        let mut n = 0;
        loop {
            let rows = self.record_list(QUARANTINE, after.as_deref(), 500).await?;
            let len = rows.len();
            for (id, b) in rows {
                let e: QuarantineEntry = from_slice(&b)?;
                if e.tenant == tenant {
                    self.record_take(DECISIONS, &id).await?;
                    if self.record_take(QUARANTINE, &id).await? {
                        n += 1;
                    }
                }
                after = Some(id);
            }
            if len < 500 {
                return Ok(n);
            }
        }
    }
}

impl<T: Records + ?Sized> Quarantine for T {}
