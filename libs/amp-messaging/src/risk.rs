//! Risk scoring (spec-next 07 "Risk Scoring"): per sender agent, over a rolling 24 hours,
//! `risk_score = (blocked × 3 + quarantined × 2 + flagged × 1) / total_messages × 100`, and
//! the automatic suspension at the `critical` level.
//!
//! Counting costs the hot path one map update in memory: the process that scans messages
//! (the router: it alone sees every local sender's message with its injection verdict, in
//! `ampd` and in the cluster) keeps its counts per agent and hour in a [`RiskMeter`] and
//! writes its running totals to the store every `flush_ms` ([`amp_store::risk`]: one row
//! per agent, hour and process, summed at read). After each flush it reads the 24-hour sum
//! of every agent it counted in that interval, and suspends one whose score reached
//! `suspend_score` over at least `min_messages` messages (reason `automated_risk_threshold`,
//! by `system`, for `suspend_hours`). The window is the current hour and the 23 before it.
//! A change of the agent's level (07: `low`, `medium`, `high`, `critical`) and an automatic
//! suspension are written to the operator plane's audit log (actor `system`): 07's
//! "notify the tenant admin", for want of a tenant webhook.
//!
//! Why not a store counter per message: the cluster's stores have no cheap atomic
//! increment (a compare-and-set per message on JetStream KV or a CQL LWT would cost more
//! than the route), and two routers would contend on one agent's counter. The price of the
//! in-memory counts: a process killed with SIGKILL loses at most its last interval's counts
//! (the score is a guard, not a ledger), and `GET /v1/agents/{id}/risk` lags by at most
//! `flush_ms`.
//!
//! Reading the window costs a store read per row, so a process skips it after a flush for an
//! agent it counted only clean messages from since a read that found nothing blocked,
//! quarantined or flagged in the window: such messages only lower a score, and whoever
//! counts a bad one reads the window at its own next flush. It reads again at least every
//! [`QUIET_RECHECK_MS`], which bounds how late a level falling back, or a score reaching the
//! threshold only when `min_messages` is reached through another process's clean messages,
//! is seen.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use amp_bus::Bus;
use amp_store::Store;
use amp_store::risk::{Risk as _, RiskCounts};
use amp_store::suspension::AgentSuspension;
use parking_lot::Mutex;
use serde::Deserialize;

use crate::RegistryCache;

/// Risk scoring settings (`[router.risk]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    /// Count messages and suspend automatically (counting alone costs a map update per
    /// message; `false` turns both off).
    pub enabled: bool,
    /// How often a process writes its counts and checks the agents it counted, in ms.
    pub flush_ms: u64,
    /// The score (0-100) at which an agent is suspended automatically (spec: 61, the
    /// `critical` level); above 100: never.
    pub suspend_score: u32,
    /// The fewest messages in the window before a score suspends anyone: without it a new
    /// agent's first flagged message (a score of 100) would.
    pub min_messages: u64,
    /// How long an automatic suspension lasts, in hours (spec: 1).
    pub suspend_hours: u64,
}

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            flush_ms: 5_000,
            suspend_score: 61,
            min_messages: 20,
            suspend_hours: 1,
        }
    }
}

/// The score of `c`, 0 to 100 (0 with no messages).
pub fn score(c: &RiskCounts) -> u32 {
    if c.total_messages == 0 {
        return 0;
    }
    let weighted = c.blocked * 3 + c.quarantined * 2 + c.flagged;
    u32::try_from((weighted.saturating_mul(100) / c.total_messages).min(100)).unwrap_or(100)
}

/// The spec's level of a score: `low` (0-10), `medium` (11-30), `high` (31-60),
/// `critical` (61-100).
pub fn level(score: u32) -> &'static str {
    match score {
        0..=10 => "low",
        11..=30 => "medium",
        31..=60 => "high",
        _ => "critical",
    }
}

/// Unix hours of `ms`.
fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(3_600_000)
}

/// The agent's counts over the window ending at `now` (the current hour and the 23 before).
///
/// Fails only on store errors.
pub async fn window(store: &Store, agent_id: &str, now: i64) -> amp_store::Result<RiskCounts> {
    let h = hour_of(now);
    store.risk_sum(agent_id, h - 23, h).await
}

/// What became of a counted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered, nothing detected.
    Clean,
    /// Delivered with injection flags.
    Flagged,
    /// Held for review.
    Quarantined,
    /// Refused by a security rule (spec-next 07's `block` verdict).
    Blocked,
}

/// Counts per agent, in memory, flushed to the store (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct RiskMeter {
    inner: Arc<Inner>,
}

struct Inner {
    config: RiskConfig,
    store: Store,
    bus: Bus,
    cache: RegistryCache,
    state: Mutex<State>,
}

struct State {
    /// This process's name in the rows; a new one whenever the counts start again from
    /// zero (a full map was emptied), so a row is never replaced by a smaller total.
    replica: String,
    /// Running totals per (agent, hour) since the replica name was taken.
    counts: HashMap<(String, i64), RiskCounts>,
    /// Agents counted since the last flush.
    dirty: HashMap<String, Dirty>,
    /// Agents whose window was read clean (nothing blocked, quarantined or flagged), until
    /// when that read stands in for another after a clean interval.
    quiet: HashMap<String, i64>,
}

/// An agent counted since the last flush.
struct Dirty {
    /// The hour of its last count.
    hour: i64,
    /// Whether any message was not clean.
    bad: bool,
    /// Its tenant: a flush that finds it deleted drops what it wrote.
    tenant: String,
}

/// Most (agent, hour) totals held before the map starts afresh under a new replica name.
const MAX_COUNTED: usize = 200_000;

/// How long a window found clean spares the reads after a flush of only clean messages.
pub const QUIET_RECHECK_MS: i64 = 60_000;

fn new_replica() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl RiskMeter {
    /// A meter writing to `store`; suspensions are announced on `bus` and dropped from
    /// `cache` at once.
    pub fn new(config: RiskConfig, store: Store, bus: Bus, cache: RegistryCache) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                store,
                bus,
                cache,
                state: Mutex::new(State {
                    replica: new_replica(),
                    counts: HashMap::new(),
                    dirty: HashMap::new(),
                    quiet: HashMap::new(),
                }),
            }),
        }
    }

    /// Whether counting is on.
    pub fn enabled(&self) -> bool {
        self.inner.config.enabled
    }

    /// Counts one message of `agent_id` (of `tenant`) at `now` with what became of it.
    pub fn record(&self, agent_id: &str, tenant: &str, now: i64, verdict: Verdict) {
        if !self.inner.config.enabled {
            return;
        }
        let hour = hour_of(now);
        let mut st = self.inner.state.lock();
        if st.counts.len() >= MAX_COUNTED && !st.counts.contains_key(&(agent_id.to_owned(), hour)) {
            // What was not flushed yet goes; the rows written stay and are summed.
            st.counts.clear();
            st.dirty.clear();
            st.replica = new_replica();
        }
        let c = st.counts.entry((agent_id.to_owned(), hour)).or_default();
        c.total_messages += 1;
        match verdict {
            Verdict::Clean => {}
            Verdict::Flagged => c.flagged += 1,
            Verdict::Quarantined => c.quarantined += 1,
            Verdict::Blocked => c.blocked += 1,
        }
        let dirty = st
            .dirty
            .entry(agent_id.to_owned())
            .or_insert_with(|| Dirty {
                hour,
                bad: false,
                tenant: tenant.to_owned(),
            });
        dirty.hour = hour;
        dirty.bad |= verdict != Verdict::Clean;
    }

    /// Writes the counts of the agents counted since the last flush, and suspends those
    /// whose window reached the threshold. Failures are logged; the counts stay dirty
    /// until written.
    ///
    /// A tenant's deletion drops its agents' rows, and may do so between a count and its
    /// flush: so after writing, the flush reads each tenant it wrote for (from the store,
    /// not a cache) and, for one being deleted or gone, drops the rows it just wrote and
    /// forgets the agents' counts. A tenant is marked `deleting` before its purge starts,
    /// so a row written before that read found the mark, or was written before the purge
    /// and is dropped by it.
    pub async fn flush(&self, now: i64) {
        let (replica, rows) = {
            let mut st = self.inner.state.lock();
            let current = hour_of(now);
            // Earlier hours were written by an earlier flush after their last count.
            st.counts.retain(|(_, h), _| *h >= current - 1);
            let dirty = std::mem::take(&mut st.dirty);
            let rows: Vec<(String, Dirty, RiskCounts)> = dirty
                .into_iter()
                .filter_map(|(agent, d)| {
                    let c = *st.counts.get(&(agent.clone(), d.hour))?;
                    Some((agent, d, c))
                })
                .collect();
            (st.replica.clone(), rows)
        };
        let mut written = Vec::with_capacity(rows.len());
        for (agent, d, counts) in rows {
            if let Err(e) = self
                .inner
                .store
                .put_risk(&agent, d.hour, &replica, &counts)
                .await
            {
                tracing::warn!(error = %e, agent = %agent, "risk counts not written; retried at the next flush");
                let mut st = self.inner.state.lock();
                let bad = d.bad;
                st.dirty.entry(agent).or_insert(d).bad |= bad;
                continue;
            }
            written.push((agent, d));
        }
        let mut deleted: HashMap<String, bool> = HashMap::new();
        for (agent, d) in written {
            let gone = match deleted.get(&d.tenant) {
                Some(g) => *g,
                None => {
                    let g = self.tenant_deleted(&d.tenant).await;
                    deleted.insert(d.tenant.clone(), g);
                    g
                }
            };
            if gone {
                self.forget(&agent).await;
                continue;
            }
            let quiet = !d.bad
                && self
                    .inner
                    .state
                    .lock()
                    .quiet
                    .get(&agent)
                    .is_some_and(|until| now < *until);
            if !quiet {
                self.check(&agent, now).await;
            }
        }
    }

    /// Whether `tenant` is being deleted or was (its record marked, or gone with a
    /// deletion on record). A store that cannot be read says no: the purge, or the next
    /// flush, settles it.
    async fn tenant_deleted(&self, tenant: &str) -> bool {
        use amp_store::operator::{Operator as _, TenantStatus};
        match self.inner.store.tenant(tenant).await {
            Ok(Some(t)) => t.status == TenantStatus::Deleting,
            Ok(None) => amp_store::deletion::get(&self.inner.store, tenant)
                .await
                .is_ok_and(|d| d.is_some()),
            Err(e) => {
                tracing::warn!(error = %e, tenant = %tenant, "tenant not read after a risk flush");
                false
            }
        }
    }

    /// Drops what this process counted of `agent_id`, and its rows in the store (its
    /// tenant is being deleted). A failure is logged: the count is gone either way.
    async fn forget(&self, agent_id: &str) {
        {
            let mut st = self.inner.state.lock();
            st.counts.retain(|(a, _), _| a != agent_id);
            st.dirty.remove(agent_id);
            st.quiet.remove(agent_id);
        }
        if let Err(e) = self.inner.store.drop_risk(agent_id).await {
            tracing::warn!(error = %e, agent = %agent_id, "risk rows of a deleted tenant's agent not dropped");
        }
    }

    /// Tells of a change of `agent_id`'s level, and suspends it when its window's score
    /// reached the threshold.
    async fn check(&self, agent_id: &str, now: i64) {
        let config = &self.inner.config;
        let counts = match window(&self.inner.store, agent_id, now).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, agent = %agent_id, "risk window not read");
                return;
            }
        };
        {
            let mut st = self.inner.state.lock();
            if counts.blocked == 0 && counts.quarantined == 0 && counts.flagged == 0 {
                if st.quiet.len() >= MAX_COUNTED && !st.quiet.contains_key(agent_id) {
                    st.quiet.clear();
                }
                st.quiet
                    .insert(agent_id.to_owned(), now.saturating_add(QUIET_RECHECK_MS));
            } else {
                st.quiet.remove(agent_id);
            }
        }
        let s = score(&counts);
        // Below `min_messages` a score says little (one flagged message is 100): `low`.
        let now_level = if counts.total_messages < config.min_messages {
            "low"
        } else {
            level(s)
        };
        self.level_changed(agent_id, now_level, s, &counts, now)
            .await;
        if config.suspend_score > 100
            || counts.total_messages < config.min_messages
            || s < config.suspend_score
        {
            return;
        }
        match crate::suspension::active(&self.inner.cache, agent_id, now).await {
            Ok(None) => {}
            Ok(Some(_)) => return,
            Err(e) => {
                tracing::warn!(error = %e, agent = %agent_id, "suspension not read");
                return;
            }
        }
        let hours = i64::try_from(config.suspend_hours.max(1)).unwrap_or(1);
        let record = AgentSuspension {
            agent_id: agent_id.to_owned(),
            suspended_at: now,
            reason: "automated_risk_threshold".into(),
            suspended_by: "system".into(),
            expires_at: Some(now.saturating_add(hours.saturating_mul(3_600_000))),
        };
        tracing::warn!(agent = %agent_id, score = s, total = counts.total_messages, flagged = counts.flagged, "risk score critical: agent suspended automatically");
        if let Err(e) = crate::suspension::put(
            &self.inner.store,
            &self.inner.bus,
            &self.inner.cache,
            &record,
        )
        .await
        {
            tracing::warn!(error = %e, agent = %agent_id, "automatic suspension not written");
            return;
        }
        // 07's "notify admin": the operator plane's audit log, as every suspension, and the
        // tenant's notification webhook.
        self.audit(
            agent_id,
            "agent.suspend",
            serde_json::json!({
                "agent_id": agent_id,
                "reason": "automated_risk_threshold",
                "duration_hours": config.suspend_hours.max(1),
                "risk_score": s,
            }),
            now,
        )
        .await;
    }

    /// 07 "Risk Scoring": "notify tenant admins when an agent's risk level changes", and
    /// the `medium` level's "log + notification to tenant admin": an entry of the operator
    /// plane's audit log (`agent.risk_level`, actor `system`, the agent's address as
    /// target), the same event POSTed to the tenant's notification webhook when it set one
    /// ([`crate::tenant_notify`]), plus a log line at `warn` from `medium` up. The last level told is kept
    /// in the store for the window (`risk-level/<agent>`), so each change is told once,
    /// by whichever router counted the agent, and a level that lapses with the window
    /// starts from `low` again.
    async fn level_changed(&self, agent_id: &str, level: &str, s: u32, c: &RiskCounts, now: i64) {
        let store = &self.inner.store;
        let key = crate::risk_rate::level_key(agent_id);
        let before = match store.get(&key).await {
            Ok(v) => v.map_or_else(
                || "low".to_owned(),
                |b| String::from_utf8_lossy(&b).into_owned(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, agent = %agent_id, "risk level not read");
                return;
            }
        };
        if before == level {
            return;
        }
        let until = now.saturating_add(24 * 3_600_000);
        if let Err(e) = store
            .put(&key, level.as_bytes().to_vec(), Some(until))
            .await
        {
            tracing::warn!(error = %e, agent = %agent_id, "risk level not written");
            return;
        }
        if level == "low" {
            tracing::info!(agent = %agent_id, score = s, from = %before, "risk level back to low");
        } else {
            tracing::warn!(agent = %agent_id, score = s, from = %before, to = level, total = c.total_messages,
                "risk level changed; tenant admin notified");
        }
        self.audit(
            agent_id,
            "agent.risk_level",
            serde_json::json!({
                "agent_id": agent_id,
                "from": before,
                "to": level,
                "risk_score": s,
                "breakdown": {
                    "total_messages": c.total_messages,
                    "blocked": c.blocked,
                    "quarantined": c.quarantined,
                    "flagged": c.flagged,
                },
            }),
            now,
        )
        .await;
    }

    /// An audit entry by `system` about the agent (its address as target, as the
    /// operators' entries have it; the id when it is gone), and the same event to its
    /// tenant's notification webhook when the tenant has one ([`crate::tenant_notify`]).
    async fn audit(&self, agent_id: &str, action: &str, details: serde_json::Value, now: i64) {
        use amp_store::operator::{AuditEntry, Operator as _};
        let agent = self.inner.cache.agent(agent_id).await.ok().flatten();
        let target = agent
            .as_ref()
            .map_or_else(|| agent_id.to_owned(), |a| a.address.clone());
        let mut entry = AuditEntry::new(now, "system", action, target);
        entry.details = Some(details.clone());
        if let Err(e) = self.inner.store.append_audit(&entry).await {
            tracing::warn!(error = %e, agent = %agent_id, action, "audit entry not written");
        }
        let Some(agent) = agent else {
            return;
        };
        let subject = crate::tenant_notify::Subject {
            id: &agent.id,
            address: &agent.address,
        };
        if let Err(e) = crate::tenant_notify::notify(
            &self.inner.store,
            &agent.tenant,
            action,
            Some(subject),
            details,
            now,
        )
        .await
        {
            tracing::warn!(error = %e, agent = %agent_id, action, "tenant notification not scheduled; the audit log has it");
        }
    }

    /// Deletes the rows of the store's first risk layout (read by nothing since), a page
    /// at a time; a failure is logged and left for the next start.
    async fn drop_legacy_rows(&self) {
        loop {
            match self.inner.store.drop_legacy_risk(500).await {
                Ok(0) => return,
                Ok(n) => tracing::debug!(rows = n, "risk rows of the first layout deleted"),
                Err(e) => {
                    tracing::warn!(error = %e, "risk rows of the first layout not deleted");
                    return;
                }
            }
        }
    }

    /// Flushes every `flush_ms` until `shutdown`, then once more.
    pub async fn run(self, shutdown: amp_runtime::Shutdown) {
        if !self.inner.config.enabled {
            return;
        }
        self.drop_legacy_rows().await;
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.inner.config.flush_ms.max(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush(amp_proto::Timestamp::now().unix_millis()).await,
                () = shutdown.wait() => {
                    self.flush(amp_proto::Timestamp::now().unix_millis()).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_store::redb::{RedbConfig, RedbStore};
    use amp_store::testing::{agent, now_ms};

    /// Two processes' meters over one store: a meter that counted only clean messages from
    /// an agent whose window it read clean skips the read after its flushes, and reads again
    /// after [`QUIET_RECHECK_MS`]; a bad message is never skipped.
    #[tokio::test]
    async fn a_clean_window_spares_the_reads_for_a_bounded_time() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::new(RedbStore::open(&RedbConfig::in_dir(dir.path())).expect("redb"));
        let bus = Bus::in_process(amp_bus::InProcessConfig::default());
        let t0 = now_ms();
        let x = agent("risky", "x", t0);
        store
            .create_agent(x.clone(), [3u8; 32], t0)
            .await
            .expect("create");
        let config = RiskConfig {
            min_messages: 20,
            ..RiskConfig::default()
        };
        let meter = |store: &Store| {
            let cache = RegistryCache::new(store.clone(), Duration::from_secs(60));
            RiskMeter::new(config.clone(), store.clone(), bus.clone(), cache.clone())
        };
        let (a, b) = (meter(&store), meter(&store));
        let suspended = |now: i64| {
            let cache = RegistryCache::new(store.clone(), Duration::ZERO);
            let id = x.id.clone();
            async move {
                crate::suspension::active(&cache, &id, now)
                    .await
                    .expect("read")
                    .is_some()
            }
        };
        // B reads the window clean.
        b.record(&x.id, "risky", t0, Verdict::Clean);
        b.flush(t0).await;
        // A counts ten blocked: 11 messages, under `min_messages`: nothing yet.
        for _ in 0..10 {
            a.record(&x.id, "risky", t0 + 1_000, Verdict::Blocked);
        }
        a.flush(t0 + 1_000).await;
        assert!(!suspended(t0 + 1_000).await);
        // B's clean messages take the window to 21, a score of 100; B skips the read.
        for _ in 0..10 {
            b.record(&x.id, "risky", t0 + 2_000, Verdict::Clean);
        }
        b.flush(t0 + 2_000).await;
        assert!(!suspended(t0 + 2_000).await, "the read was skipped");
        // Past the bound B reads again and suspends.
        let later = t0 + QUIET_RECHECK_MS + 2_000;
        b.record(&x.id, "risky", later, Verdict::Clean);
        b.flush(later).await;
        assert!(suspended(later).await, "read again after the bound");

        // A flagged message is read at once, whatever was read before.
        let y = agent("risky", "y", t0);
        store
            .create_agent(y.clone(), [4u8; 32], t0)
            .await
            .expect("create");
        for _ in 0..20 {
            b.record(&y.id, "risky", t0, Verdict::Clean);
        }
        b.flush(t0).await;
        for _ in 0..40 {
            b.record(&y.id, "risky", t0 + 1_000, Verdict::Blocked);
        }
        b.flush(t0 + 1_000).await;
        let cache = RegistryCache::new(store.clone(), Duration::ZERO);
        assert!(
            crate::suspension::active(&cache, &y.id, t0 + 1_000)
                .await
                .expect("read")
                .is_some(),
            "a bad interval is never skipped"
        );
    }

    /// A tenant's deletion between a count and its flush (the purge dropped the agent's
    /// rows first): the flush finds the tenant marked, drops what it wrote and forgets the
    /// counts, so nothing of the agent is left in the store; another tenant's rows stay.
    #[tokio::test]
    async fn a_flush_after_the_tenant_deletion_leaves_no_row() {
        use amp_store::operator::{Operator as _, TenantRecord, TenantRegistration, TenantStatus};
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::new(RedbStore::open(&RedbConfig::in_dir(dir.path())).expect("redb"));
        let bus = Bus::in_process(amp_bus::InProcessConfig::default());
        let t0 = now_ms();
        let x = agent("doomed", "x", t0);
        let k = agent("kept", "k", t0);
        let mut tenant = TenantRecord {
            name: "doomed".into(),
            status: TenantStatus::Active,
            registration: TenantRegistration::Open,
            suspended_reason: None,
            plan: Default::default(),
            notify: None,
            created_at: t0,
            updated_at: t0,
        };
        assert!(store.create_tenant(&tenant).await.expect("tenant"));
        let cache = RegistryCache::new(store.clone(), Duration::from_secs(60));
        let meter = RiskMeter::new(RiskConfig::default(), store.clone(), bus, cache);
        meter.record(&x.id, "doomed", t0, Verdict::Flagged);
        meter.record(&k.id, "kept", t0, Verdict::Flagged);
        meter.flush(t0).await;
        assert_eq!(
            window(&store, &x.id, t0).await.expect("sum").total_messages,
            1
        );

        // The deletion marks the tenant, its purge drops the rows; a count was in flight.
        meter.record(&x.id, "doomed", t0 + 1, Verdict::Clean);
        tenant.status = TenantStatus::Deleting;
        store.put_tenant(&tenant).await.expect("mark");
        store.drop_risk(&x.id).await.expect("purge");
        meter.flush(t0 + 2).await;
        assert_eq!(
            window(&store, &x.id, t0 + 2).await.expect("sum"),
            RiskCounts::default(),
            "the row written after the purge was dropped"
        );
        // Forgotten: a later flush writes nothing of it either.
        meter.flush(t0 + 3).await;
        assert_eq!(
            window(&store, &x.id, t0 + 3)
                .await
                .expect("sum")
                .total_messages,
            0
        );
        assert_eq!(
            window(&store, &k.id, t0 + 3)
                .await
                .expect("sum")
                .total_messages,
            1
        );
    }

    #[test]
    fn spec_next_risk_score_formula_and_levels() {
        let c = |total, blocked, quarantined, flagged| RiskCounts {
            total_messages: total,
            blocked,
            quarantined,
            flagged,
        };
        assert_eq!(score(&c(0, 0, 0, 0)), 0);
        // 08's example: (5*3 + 10*2 + 20) / 200 * 100 = 27.5 → 27.
        assert_eq!(score(&c(200, 5, 10, 20)), 27);
        assert_eq!(score(&c(10, 10, 0, 0)), 100, "capped at 100");
        assert_eq!(level(0), "low");
        assert_eq!(level(10), "low");
        assert_eq!(level(11), "medium");
        assert_eq!(level(30), "medium");
        assert_eq!(level(31), "high");
        assert_eq!(level(60), "high");
        assert_eq!(level(61), "critical");
        assert_eq!(level(100), "critical");
    }
}
