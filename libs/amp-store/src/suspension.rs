//! Agent suspensions (spec-next 07 "Agent Suspension"), typed over [`Records`]: one record
//! per suspended agent, by agent id, in the collection [`SUSPENSIONS`].
//!
//! Kept apart from the [`AgentRecord`](crate::AgentRecord) on purpose: an agent's record is
//! replaced whole by profile updates, key rotations and card submissions, each based on a
//! read that may predate a suspension, so a suspension stored in it could be undone by a
//! concurrent `PATCH`. Here only the suspend and unsuspend calls write it. A suspension
//! with an `expires_at` lifts itself: readers compare it with the time of each request
//! ([`AgentSuspension::active_at`]), no job removes it (the spec's MUST).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Error, Millis, PutMode, Records, Result};

/// Collection of [`AgentSuspension`]s, by agent id.
pub const SUSPENSIONS: &str = "agent_suspensions";

/// The suspension record of spec-next 07.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSuspension {
    /// The suspended agent (`agt_…`).
    pub agent_id: String,
    /// When, unix ms.
    pub suspended_at: Millis,
    /// Why (`admin_action`, `suspicious_activity`, `automated_risk_threshold`, or the
    /// operator's words).
    pub reason: String,
    /// Who: `system`, or the operator token's id (`opt_…`).
    pub suspended_by: String,
    /// When it lifts by itself, unix ms; `None`: until an operator lifts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Millis>,
}

impl AgentSuspension {
    /// Whether the agent is suspended at `now` (an expired suspension is none).
    pub fn active_at(&self, now: Millis) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }
}

/// Agent suspensions with their types, over any [`Records`].
#[async_trait]
pub trait Suspensions: Records {
    /// Suspends an agent (replacing any suspension it had).
    async fn put_suspension(&self, s: &AgentSuspension) -> Result<()> {
        let bytes = serde_json::to_vec(s).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.record_put(SUSPENSIONS, &s.agent_id, bytes, PutMode::Replace)
            .await
            .map(|_| ())
    }

    /// The agent's suspension record, expired or not (see [`AgentSuspension::active_at`]).
    async fn suspension(&self, agent_id: &str) -> Result<Option<AgentSuspension>> {
        match self.record_get(SUSPENSIONS, agent_id).await? {
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Corrupt(e.to_string())),
            None => Ok(None),
        }
    }

    /// Lifts the agent's suspension; `true` when it had a record.
    async fn clear_suspension(&self, agent_id: &str) -> Result<bool> {
        self.record_take(SUSPENSIONS, agent_id).await
    }
}

impl<T: Records + ?Sized> Suspensions for T {}
