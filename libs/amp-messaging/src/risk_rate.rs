//! Spec-next 07's `high` risk action, "temporary rate limit (50% reduction)": while a
//! sender's risk level ([`crate::risk`]) is `high` (or `critical` without a suspension, as
//! when automatic suspension is off or an operator lifted it), its `messages_per_minute`
//! budget is halved, on every path that draws on it ([`crate::Acceptor::check_rate`]: REST
//! `POST /v1/route` and WebSocket `route` frames).
//!
//! The level is the one the routers last told (`risk-level/<agent>` in the store, written on
//! each change and lapsing with the 24-hour window), read through this process's cache at
//! most once per [`RiskLevels::ttl`] per agent: a route costs no store read, and a level
//! takes effect within that time (plus the router's `flush_ms`). A store that cannot be read
//! leaves the budget whole (the limit is a brake, not a gate; the failure is logged).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use amp_store::Store;
use parking_lot::Mutex;

/// Agents the cache remembers at most; emptied when full (the next reads refill it).
const MAX_AGENTS: usize = 100_000;

/// The store's key of an agent's last told risk level.
pub(crate) fn level_key(agent_id: &str) -> String {
    format!("risk-level/{agent_id}")
}

/// Whether a level reduces the budget.
fn reduces(level: &[u8]) -> bool {
    level == b"high" || level == b"critical"
}

/// The cached risk levels of the senders this process has seen.
pub(crate) struct RiskLevels {
    store: Store,
    ttl: Duration,
    seen: Mutex<HashMap<String, (bool, Instant)>>,
}

impl RiskLevels {
    /// Levels read from `store`, each kept `ttl`.
    pub(crate) fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `agent_id`'s budget is halved now.
    pub(crate) async fn reduced(&self, agent_id: &str) -> bool {
        let now = Instant::now();
        if let Some(&(reduced, at)) = self.seen.lock().get(agent_id)
            && now.duration_since(at) < self.ttl
        {
            return reduced;
        }
        let reduced = match self.store.get(&level_key(agent_id)).await {
            Ok(level) => level.is_some_and(|l| reduces(&l)),
            Err(e) => {
                tracing::warn!(error = %e, agent = %agent_id, "risk level not read; full message budget");
                false
            }
        };
        let mut seen = self.seen.lock();
        if seen.len() >= MAX_AGENTS {
            seen.clear();
        }
        seen.insert(agent_id.to_owned(), (reduced, now));
        reduced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_and_critical_reduce_the_budget() {
        assert!(reduces(b"high") && reduces(b"critical"));
        assert!(!reduces(b"low") && !reduces(b"medium"));
    }
}
