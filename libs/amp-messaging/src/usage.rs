//! [`Meter`]: usage metering per tenant, cheap on the hot path.
//!
//! A route adds to in-memory counters (one mutex, no allocation for a tenant already seen
//! this period); a task writes this process's running totals per tenant, hour and day to
//! the store every `usage_flush_ms` ([`amp_store::usage`]: one row per replica, summed at
//! read), so replicas never contend on a row and no backend needs atomic increments. What a
//! process counted since its last flush is lost if it is killed (at most one flush interval
//! of its traffic); a graceful stop flushes ([`Meter::flush`]).
//!
//! The meter also keeps each tenant's held bytes (plans' `stored_bytes`): a ledger of the
//! bytes this process wrote to the tenant's mailboxes (the router) less those acknowledged
//! or deleted (ingest, delivery), by the hour their messages expire (a bucket that ended
//! counts for nothing: expiry needs no event), written to the store with the usage rows
//! (`amp_store::usage::HeldLedger`, one record per process) and read back from the other
//! processes at most once per tenant and flush interval `F` ([`Meter::held`]). The estimate
//! misses at most what the other processes changed in the last `3F`; in `ampd` the router
//! and the acceptor share one meter, so it is exact there.
//!
//! Prometheus gets `amp_usage_messages_total{kind}` (bounded: four kinds); a `tenant` label
//! only with `usage_metrics_per_tenant` (one series per tenant and kind: opt in knowingly).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use amp_store::usage::{Period, Usage as _, UsageCounts};
use amp_store::{Millis, Store};
use parking_lot::Mutex;

/// What one event adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A message the tenant's agent sent, accepted.
    MessageIn,
    /// A message of `bytes` written to one of the tenant's mailboxes.
    MessageOut {
        /// Its size.
        bytes: u64,
    },
    /// A message from another provider to the tenant's agent.
    FederatedIn,
    /// A message of the tenant's agent to another provider.
    FederatedOut,
}

impl Event {
    fn kind(self) -> &'static str {
        match self {
            Event::MessageIn => "in",
            Event::MessageOut { .. } => "out",
            Event::FederatedIn => "federated_in",
            Event::FederatedOut => "federated_out",
        }
    }
}

/// One tenant's counts of the current hour and day on this process, and those of ended
/// periods not yet written.
#[derive(Default)]
struct TenantMeter {
    hour: (Millis, UsageCounts),
    day: (Millis, UsageCounts),
    /// Open WebSocket connections now (on this process).
    connections: u64,
    dirty: bool,
    ended: Vec<(Period, Millis, UsageCounts)>,
    /// Whether this process listed the tenant among those with usage rows.
    noted: bool,
    /// The open connections this process last reported to the store.
    connections_reported: Option<u64>,
    /// When `agents` was last sampled (unix ms).
    agents_sampled_at: Millis,
    agents: u64,
    /// The bytes held at the last sample (carried into the next period).
    held: u64,
}

impl TenantMeter {
    /// Rolls the periods over to those holding `now`.
    fn roll(&mut self, now: Millis) {
        for (period, slot) in [(Period::Hour, &mut self.hour), (Period::Day, &mut self.day)] {
            let start = period.start_of(now);
            if slot.0 != start {
                if slot.0 != 0 {
                    self.ended.push((period, slot.0, slot.1));
                }
                *slot = (
                    start,
                    UsageCounts {
                        connections: self.connections,
                        agents: self.agents,
                        bytes_held: self.held,
                        ..Default::default()
                    },
                );
            }
        }
    }

    fn add(&mut self, event: Event) {
        for c in [&mut self.hour.1, &mut self.day.1] {
            match event {
                Event::MessageIn => c.messages_in += 1,
                Event::MessageOut { bytes } => {
                    c.messages_out += 1;
                    c.bytes_stored += bytes;
                }
                Event::FederatedIn => c.federated_in += 1,
                Event::FederatedOut => c.federated_out += 1,
            }
        }
        self.dirty = true;
    }
}

/// A tenant's bytes held in mailboxes, as this process knows them.
#[derive(Default)]
struct Held {
    /// This process's ledger since it started: net bytes by the end of their expiry's
    /// bucket (`amp_store::usage::held_bucket`).
    mine: BTreeMap<Millis, i64>,
    /// `mine` changed since it was written.
    dirty: bool,
    /// The other processes' ledgers as last read, summed by bucket.
    others: BTreeMap<Millis, i64>,
    /// When `others` was read (`None`: never).
    read_at: Option<Instant>,
    /// A background read of `others` is under way.
    reading: bool,
}

impl Held {
    fn add(&mut self, bucket: Millis, delta: i64) {
        let net = self.mine.entry(bucket).or_insert(0);
        *net += delta;
        if *net == 0 {
            self.mine.remove(&bucket);
        }
        self.dirty = true;
    }

    /// Bytes held at `now`: the buckets that end after it, never below zero.
    fn total(&self, now: Millis) -> u64 {
        let live = |m: &BTreeMap<Millis, i64>| -> i64 {
            m.range(now.saturating_add(1)..).map(|(_, n)| *n).sum()
        };
        u64::try_from(live(&self.mine) + live(&self.others)).unwrap_or(0)
    }
}

struct Inner {
    store: Store,
    replica: String,
    /// The flush interval: another replica's connection report older than three of them
    /// is left out (that replica stopped).
    every: Duration,
    per_tenant_metrics: bool,
    tenants: Mutex<HashMap<String, TenantMeter>>,
    /// Bytes held per tenant (kept apart: a ledger is cumulative, never forgotten while it
    /// has a live bucket).
    held: Mutex<HashMap<String, Held>>,
    /// Serialises flushes (the task's and an explicit one).
    flushing: tokio::sync::Mutex<()>,
}

/// Usage counters of this process; cheap to clone.
#[derive(Clone)]
pub struct Meter(Arc<Inner>);

/// How often `agents` is sampled per tenant (a count of the tenant's agents in the store).
const AGENTS_SAMPLE_MS: Millis = 60_000;

impl Meter {
    /// A meter writing to `store` every `flush` (a task that ends when the last clone is
    /// dropped); `per_tenant_metrics` adds a `tenant` label to its Prometheus series.
    ///
    /// Must be called within a tokio runtime.
    pub fn new(store: Store, flush: Duration, per_tenant_metrics: bool) -> Self {
        let every = flush.max(Duration::from_millis(10));
        let inner = Arc::new(Inner {
            store,
            every,
            replica: format!("{:016x}", rand::random::<u64>()),
            per_tenant_metrics,
            tenants: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            flushing: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(run(Arc::downgrade(&inner), every));
        Self(inner)
    }

    /// Counts `event` for `tenant`.
    pub fn record(&self, tenant: &str, event: Event) {
        let now = now_ms();
        {
            let mut tenants = self.0.tenants.lock();
            match tenants.get_mut(tenant) {
                Some(t) => {
                    t.roll(now);
                    t.add(event);
                }
                None => {
                    let mut t = TenantMeter::default();
                    t.roll(now);
                    t.add(event);
                    tenants.insert(tenant.to_owned(), t);
                }
            }
        }
        if self.0.per_tenant_metrics {
            metrics::counter!("amp_usage_messages_total", "kind" => event.kind(), "tenant" => tenant.to_owned())
                .increment(1);
        } else {
            metrics::counter!("amp_usage_messages_total", "kind" => event.kind()).increment(1);
        }
    }

    /// Counts `bytes` written to a mailbox of `tenant`, expiring at `expires_at` (the
    /// router, for each new mailbox entry: the length of its stored text).
    pub fn held_added(&self, tenant: &str, bytes: u64, expires_at: Millis) {
        self.held_change(tenant, i64::try_from(bytes).unwrap_or(i64::MAX), expires_at);
    }

    /// Counts `bytes` that left a mailbox of `tenant` before `expires_at`, their expiry
    /// (acknowledged, or deleted with the agent). Expiry itself needs no call.
    pub fn held_removed(&self, tenant: &str, bytes: u64, expires_at: Millis) {
        self.held_change(
            tenant,
            -i64::try_from(bytes).unwrap_or(i64::MAX),
            expires_at,
        );
    }

    fn held_change(&self, tenant: &str, delta: i64, expires_at: Millis) {
        if expires_at <= now_ms() || delta == 0 {
            return;
        }
        let bucket = amp_store::usage::held_bucket(expires_at);
        let mut held = self.0.held.lock();
        match held.get_mut(tenant) {
            Some(h) => h.add(bucket, delta),
            None => {
                let mut h = Held::default();
                h.add(bucket, delta);
                held.insert(tenant.to_owned(), h);
            }
        }
    }

    /// The bytes `tenant`'s mailboxes hold, as this process estimates them: its own ledger
    /// exactly, the other processes' as they last wrote them (every flush interval `F`) and
    /// as this process last read them. A read younger than `F` is used as it is; one
    /// between `F` and `2F` old is used while another runs in the background; an older one
    /// (or none) is replaced by a read before answering. So at most one store read per
    /// tenant and interval, never one per message, and the answer misses at most what the
    /// other processes wrote or removed in the last `3F` (plus the store's latency).
    ///
    /// Fails when the store cannot be read and this process has no read of the tenant
    /// younger than `2F`.
    pub async fn held(&self, tenant: &str) -> amp_store::Result<u64> {
        let now = now_ms();
        let every = self.0.every;
        let read_now = {
            let mut held = self.0.held.lock();
            if !held.contains_key(tenant) {
                held.insert(tenant.to_owned(), Held::default());
            }
            let Some(h) = held.get_mut(tenant) else {
                return Ok(0);
            };
            match h.read_at.map(|at| at.elapsed()) {
                Some(age) if age < every => return Ok(h.total(now)),
                Some(age) if age < 2 * every => {
                    if !h.reading {
                        h.reading = true;
                        tokio::spawn(refresh_held(Arc::downgrade(&self.0), tenant.to_owned()));
                    }
                    return Ok(h.total(now));
                }
                _ => true,
            }
        };
        if read_now {
            read_held(&self.0, tenant).await?;
        }
        Ok(self.0.held.lock().get(tenant).map_or(0, |h| h.total(now)))
    }

    /// Forgets what this process counted of `tenant`'s held bytes (its deletion removes
    /// every process's ledger next), waiting for a flush under way so that none is written
    /// after.
    pub async fn forget_held(&self, tenant: &str) {
        let _one = self.0.flushing.lock().await;
        self.0.held.lock().remove(tenant);
    }

    /// Opens a WebSocket connection of the tenant's agent when fewer than `limit` are open
    /// on this process (always with no limit); `false`: refused, nothing counted. Close it
    /// with [`closed`](Self::closed).
    pub fn try_open(&self, tenant: &str, limit: Option<u64>) -> bool {
        let now = now_ms();
        let mut tenants = self.0.tenants.lock();
        let t = tenants.entry(tenant.to_owned()).or_default();
        t.roll(now);
        if limit.is_some_and(|l| t.connections >= l) {
            return false;
        }
        t.connections += 1;
        for c in [&mut t.hour.1, &mut t.day.1] {
            c.connections = c.connections.max(t.connections);
        }
        t.dirty = true;
        true
    }

    /// A connection opened by [`try_open`](Self::try_open) closed.
    pub fn closed(&self, tenant: &str) {
        if let Some(t) = self.0.tenants.lock().get_mut(tenant) {
            t.connections = t.connections.saturating_sub(1);
        }
    }

    /// The tenant's open connections on the other processes, as they last reported them
    /// (every flush interval; a report older than three intervals is left out).
    ///
    /// Fails when the store cannot be read.
    pub async fn connections_elsewhere(&self, tenant: &str) -> amp_store::Result<u64> {
        let since = now_ms() - 3 * self.0.every.as_millis() as Millis;
        self.0
            .store
            .connections_elsewhere(tenant, &self.0.replica, since)
            .await
    }

    /// Writes what changed since the last flush to the store.
    ///
    /// Fails when the store does not take a row; what was not written is kept for the next
    /// flush.
    pub async fn flush(&self) -> amp_store::Result<()> {
        flush(&self.0).await
    }

    /// Waits for `shutdown`, then writes what is left (a failure is logged): the last
    /// counts of a graceful stop reach the store. Join it before closing the store.
    pub async fn flush_at(self, shutdown: amp_runtime::Shutdown) {
        shutdown.wait().await;
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "usage counts not written at shutdown");
        }
    }
}

/// Reads the other processes' held-bytes ledgers of `tenant` into `inner`.
async fn read_held(inner: &Inner, tenant: &str) -> amp_store::Result<()> {
    let result = inner
        .store
        .held_elsewhere(tenant, &inner.replica, now_ms())
        .await;
    let mut held = inner.held.lock();
    let h = held.entry(tenant.to_owned()).or_default();
    h.reading = false;
    let others = result?;
    h.others = others;
    h.read_at = Some(Instant::now());
    Ok(())
}

async fn refresh_held(inner: Weak<Inner>, tenant: String) {
    let Some(inner) = inner.upgrade() else { return };
    if let Err(e) = read_held(&inner, &tenant).await {
        tracing::debug!(tenant = %tenant, error = %e, "held bytes not read; the last read stands");
    }
}

/// How often [`expire_at`] sweeps.
pub const RETENTION_SWEEP: Duration = Duration::from_secs(3600);

/// Deletes usage rows past `retention` from `store` a minute after the start, then every
/// [`RETENTION_SWEEP`], until `shutdown` (a failure is logged; the next sweep goes on). Every
/// ingest replica may run it: the sweeps are idempotent deletions.
pub async fn expire_at(
    store: Store,
    retention: amp_store::usage::UsageRetention,
    shutdown: amp_runtime::Shutdown,
) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = RETENTION_SWEEP;
        match store.expire_usage(now_ms(), retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "usage rows past their retention deleted"),
            Err(e) => tracing::warn!(error = %e, "usage rows not swept; trying again later"),
        }
    }
}

/// Counts an accepted message of `sender` (of `bytes`) for `recipient`, or for another
/// provider when `None`.
pub(crate) fn count_accepted(
    meter: &Meter,
    sender: &amp_store::AgentRecord,
    recipient: Option<&amp_store::AgentRecord>,
    bytes: usize,
) {
    meter.record(&sender.tenant, Event::MessageIn);
    match recipient {
        Some(r) => meter.record(
            &r.tenant,
            Event::MessageOut {
                bytes: bytes as u64,
            },
        ),
        None => meter.record(&sender.tenant, Event::FederatedOut),
    }
}

async fn run(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = flush(&inner).await {
            tracing::warn!(error = %e, "usage counts not written; kept for the next flush");
        }
    }
}

/// What a flush writes for one tenant.
struct Pending {
    tenant: String,
    rows: Vec<(Period, Millis, UsageCounts)>,
    sample_agents: bool,
    note: bool,
    /// Open connections to report (changed, or still open: the report's time must stay
    /// fresh for the other replicas to count it).
    connections: Option<u64>,
}

async fn flush(inner: &Inner) -> amp_store::Result<()> {
    let _one = inner.flushing.lock().await;
    let now = now_ms();
    // Take what is to be written under the lock, write without it.
    let pending: Vec<Pending> = {
        let mut tenants = inner.tenants.lock();
        let mut out = Vec::new();
        tenants.retain(|name, t| {
            t.roll(now);
            let report = t.connections > 0 || t.connections_reported != Some(t.connections);
            if !t.dirty && t.ended.is_empty() && !report {
                // Idle, nothing open, everything written: forget it once its hour is quiet.
                return t.hour.1.messages_in + t.hour.1.messages_out > 0;
            }
            let mut rows = std::mem::take(&mut t.ended);
            if t.dirty {
                rows.push((Period::Hour, t.hour.0, t.hour.1));
                rows.push((Period::Day, t.day.0, t.day.1));
            }
            let has_rows = !rows.is_empty();
            out.push(Pending {
                tenant: name.clone(),
                rows,
                sample_agents: has_rows && now - t.agents_sampled_at >= AGENTS_SAMPLE_MS,
                note: has_rows && !t.noted,
                connections: report.then_some(t.connections),
            });
            t.dirty = false;
            true
        });
        out
    };
    let mut first_err = None;
    if let Err(e) = flush_held(inner, now).await {
        first_err.get_or_insert(e);
    }
    for Pending {
        tenant,
        mut rows,
        sample_agents,
        note,
        connections,
    } in pending
    {
        if let Some(n) = connections {
            match inner
                .store
                .put_connections(&tenant, &inner.replica, n, now)
                .await
            {
                Ok(()) => {
                    if let Some(t) = inner.tenants.lock().get_mut(&tenant) {
                        t.connections_reported = Some(n);
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if note {
            match inner.store.note_usage_tenant(&tenant).await {
                Ok(()) => {
                    if let Some(t) = inner.tenants.lock().get_mut(&tenant) {
                        t.noted = true;
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if sample_agents {
            match inner.store.list_agents(&tenant, None, None, 1).await {
                Ok((_, n)) => {
                    let mut tenants = inner.tenants.lock();
                    if let Some(t) = tenants.get_mut(&tenant) {
                        t.agents = n;
                        t.agents_sampled_at = now;
                        t.hour.1.agents = n;
                        t.day.1.agents = n;
                    }
                    for r in rows.iter_mut().filter(|r| r.1 == r.0.start_of(now)) {
                        r.2.agents = n;
                    }
                }
                Err(e) => tracing::debug!(tenant = %tenant, error = %e, "agents not counted"),
            }
        }
        if !rows.is_empty() {
            // The bytes its mailboxes hold, sampled at every flush that writes its rows (one
            // read of the ledgers, as a plan's check makes): the period keeps the largest.
            match read_held(inner, &tenant).await {
                Ok(()) => {
                    let n = inner.held.lock().get(&tenant).map_or(0, |h| h.total(now));
                    let mut tenants = inner.tenants.lock();
                    if let Some(t) = tenants.get_mut(&tenant) {
                        t.held = n;
                        t.hour.1.bytes_held = t.hour.1.bytes_held.max(n);
                        t.day.1.bytes_held = t.day.1.bytes_held.max(n);
                    }
                    for r in rows.iter_mut().filter(|r| r.1 == r.0.start_of(now)) {
                        r.2.bytes_held = r.2.bytes_held.max(n);
                    }
                }
                Err(e) => tracing::debug!(tenant = %tenant, error = %e, "held bytes not sampled"),
            }
        }
        let mut failed = Vec::new();
        for (period, start, counts) in rows {
            if let Err(e) = inner
                .store
                .put_usage(&tenant, period, start, &inner.replica, &counts)
                .await
            {
                failed.push((period, start, counts));
                first_err.get_or_insert(e);
            }
        }
        if !failed.is_empty() {
            let mut tenants = inner.tenants.lock();
            if let Some(t) = tenants.get_mut(&tenant) {
                // Current periods are rewritten whole on the next flush; ended ones kept.
                t.dirty = true;
                let current = |p: Period, s: Millis| s == p.start_of(now);
                t.ended
                    .extend(failed.into_iter().filter(|(p, s, _)| !current(*p, *s)));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Writes the held-bytes ledgers that changed; forgets a tenant whose ledger is empty and
/// whose estimate nobody asked for in a while.
async fn flush_held(inner: &Inner, now: Millis) -> amp_store::Result<()> {
    let idle = inner.every * 30;
    let pending: Vec<(String, amp_store::usage::HeldLedger)> = {
        let mut held = inner.held.lock();
        let mut out = Vec::new();
        held.retain(|tenant, h| {
            let before = h.mine.len();
            h.mine.retain(|bucket, _| *bucket > now);
            if h.dirty {
                out.push((
                    tenant.clone(),
                    amp_store::usage::HeldLedger {
                        at: now,
                        buckets: h.mine.iter().map(|(b, n)| (*b, *n)).collect(),
                    },
                ));
                h.dirty = false;
            } else if h.mine.len() != before && h.mine.is_empty() {
                // Everything expired: nothing of ours to count any more.
                out.push((tenant.clone(), Default::default()));
            }
            !(h.mine.is_empty() && !h.reading && h.read_at.is_none_or(|at| at.elapsed() > idle))
        });
        out
    };
    let mut first_err = None;
    for (tenant, ledger) in pending {
        if let Err(e) = inner.store.put_held(&tenant, &inner.replica, &ledger).await {
            if let Some(h) = inner.held.lock().get_mut(&tenant) {
                h.dirty = true;
            }
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn now_ms() -> Millis {
    amp_proto::Timestamp::now().unix_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_held_bytes_add_up_and_expire_with_their_bucket() {
        use amp_store::usage::{HELD_BUCKET_MS, held_bucket};
        let t = 1_796_554_800_000; // on an hour
        assert_eq!(
            held_bucket(t),
            t,
            "an expiry on a boundary ends its own bucket"
        );
        assert_eq!(held_bucket(t + 1), t + HELD_BUCKET_MS);
        let mut h = Held::default();
        h.add(held_bucket(t + 10), 100);
        h.add(held_bucket(t + HELD_BUCKET_MS + 10), 50);
        h.others.insert(held_bucket(t + 10), 30);
        assert_eq!(h.total(t), 180);
        h.add(held_bucket(t + 10), -100);
        assert!(
            !h.mine.contains_key(&held_bucket(t + 10)),
            "a net of zero is dropped"
        );
        assert_eq!(h.total(t), 80);
        // The first bucket ended: its messages expired, nothing removes them by hand.
        assert_eq!(h.total(t + HELD_BUCKET_MS), 50);
        // Another replica acknowledged more than this one wrote: never below zero.
        h.others.insert(held_bucket(t + HELD_BUCKET_MS + 10), -500);
        assert_eq!(h.total(t), 0);
    }

    #[test]
    fn operator_usage_periods_roll_over_and_keep_what_ended() {
        let mut t = TenantMeter::default();
        let h = Period::Hour.start_of(1_796_554_800_000);
        t.roll(h + 10);
        t.add(Event::MessageIn);
        t.add(Event::MessageOut { bytes: 7 });
        t.roll(h + Period::Hour.millis() + 1);
        t.add(Event::MessageIn);
        assert_eq!(t.ended.len(), 1, "the hour ended; the day goes on");
        let (p, s, c) = t.ended[0];
        assert_eq!(
            (p, s, c.messages_in, c.bytes_stored),
            (Period::Hour, h, 1, 7)
        );
        assert_eq!(t.hour.1.messages_in, 1);
        assert_eq!(t.day.1.messages_in, 2);
    }
}
