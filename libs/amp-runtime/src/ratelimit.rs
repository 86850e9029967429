//! A keyed in-memory rate limiter (GCRA: a token bucket that stores one timestamp per key)
//! and the `X-RateLimit-*` headers and 429 body of its decisions.
//!
//! Hand-written rather than `governor`: we need the numbers behind a decision (remaining,
//! reset, retry-after) for the headers, bounded memory with our own eviction rule, an
//! injectable clock, and the hooks that let replicas share a limit — a few hundred lines.
//!
//! # Sharing a limit between replicas
//!
//! A limiter counts in memory, so N replicas behind a load balancer would each grant the whole
//! limit. A [`shared`](RateLimiter::share) limiter also remembers, per key, how many requests
//! it allowed since its last report; a sync task (`amp_messaging::shared_limits`) takes those
//! counts every sync interval ([`RateLimiter::take_report`]) and sends them to the other
//! replicas, which [`merge`](RateLimiter::merge) them into their own buckets as if the
//! requests had arrived there. Each replica thus runs the one GCRA of the whole cluster over
//! every request it has heard of, and a request is heard of everywhere within one sync
//! interval plus the bus's latency. (Summing per-replica bucket levels instead would drain N
//! buckets at once and let N times the sustained rate through.) A report says how much of
//! the key's bucket the requests took (`spent_ns`), so limits that differ per key
//! ([`RateLimiter::check_with`]: a tenant's plan) are shared the same way.
//!
//! The error bound, for one key, over any stretch of time `T`: the cluster allows at most what
//! one process would (`limit + T / (window / limit)`), plus, for each other replica, the
//! requests it allowed in the last sync interval (plus bus latency) that this replica has not
//! heard of yet. At the sustained rate that is at most `1 + sync / (window / limit)` per
//! other replica (1 when the sync interval is shorter than the spacing of the rate); a fresh
//! burst split across replicas within one sync interval can take up to `limit` on each. The
//! over-allowed requests are debt: once heard of, they delay the key's next requests, so the
//! long-run rate stays the limit. A replica that stops reporting adds nothing more; what it
//! reported drains like any request. A lost report is made good by the next one of the same
//! key, which carries the sender's whole view of the bucket (`drained_ms`); a replica that
//! starts late learns a key's state from the first report naming it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amp_proto::{ApiError, ErrorCode};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;

use crate::http::HttpError;

const SHARDS: usize = 16;
/// A shard forgets keys whose bucket is full again every this many checks.
const SWEEP_EVERY: u32 = 1024;
/// The default cap on remembered keys.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// A report's view of a bucket replaces ours only when it is ahead by more than this: views
/// differ by the bus's latency, and adopting every such difference would let two replicas
/// push one key's bucket later and later by echoing each other.
const MERGE_SLACK_NS: u64 = 25_000_000;

const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// A rate: at most `limit` requests per `window`, refilled smoothly (one every
/// `window / limit`), with bursts up to `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per window; 0 is treated as 1.
    pub limit: u32,
    /// The window; a zero window is treated as one millisecond.
    pub window: Duration,
}

/// The outcome of one [`RateLimiter::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The configured limit per window.
    pub limit: u32,
    /// Requests still allowed right now after this one.
    pub remaining: u32,
    /// Unix time (seconds, rounded up) at which the key's bucket is full again.
    pub reset_unix: u64,
    /// When denied, seconds (rounded up, at least 1) until a request would be allowed; 0
    /// when allowed.
    pub retry_after_secs: u64,
}

impl Decision {
    /// Sets `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (unix seconds)
    /// and, when denied, `Retry-After`.
    pub fn apply_headers(&self, headers: &mut HeaderMap) {
        headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(self.limit));
        headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(self.remaining));
        headers.insert(X_RATELIMIT_RESET, HeaderValue::from(self.reset_unix));
        if !self.allowed {
            headers.insert(RETRY_AFTER, HeaderValue::from(self.retry_after_secs));
        }
    }

    /// The 429 `rate_limited` error for this decision, with `retry_after` in the body and
    /// the rate-limit headers.
    pub fn into_error(self) -> HttpError {
        let secs = self.retry_after_secs.max(1);
        let mut headers = HeaderMap::new();
        self.apply_headers(&mut headers);
        HttpError::new(
            ApiError::new(
                ErrorCode::RateLimited,
                format!("rate limit exceeded, retry in {secs} s"),
            )
            .with_extra("retry_after", serde_json::Value::from(secs)),
        )
        .with_headers(headers)
    }
}

/// One key of a shared limiter's report to the other replicas (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCount {
    /// The key (an agent id, a tenant, an address).
    pub key: String,
    /// Requests for the key this replica allowed since its previous report.
    pub allowed: u32,
    /// The nanoseconds of bucket those requests took (`allowed` times the key's
    /// `window / limit`): what a replica adds to its own bucket for the key, whatever rate
    /// it would check the key with.
    pub spent_ns: u64,
    /// How far the key's bucket is drained as this replica knows it (its own requests and
    /// those it heard of), in milliseconds of refill: 0 is a full bucket, `window` an empty
    /// one.
    pub drained_ms: u32,
}

/// A keyed limiter: each key (an agent, a tenant, an address) has its own bucket.
///
/// Memory stays bounded: keys live in sharded maps, a key whose bucket has refilled is
/// forgotten (that is the same as a fresh key), and past `max_keys` the key nearest to
/// refilled is evicted to make room. A shared limiter's unreported counts are capped the
/// same way; keys past the cap go unreported and are counted ([`RateLimiter::take_dropped`]).
#[derive(Debug)]
pub struct RateLimiter {
    rate: Gcra,
    max_per_shard: usize,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    origin: Instant,
    origin_unix: SystemTime,
    /// Whether allowed requests are remembered for [`RateLimiter::take_report`].
    shared: AtomicBool,
    /// Keys left out of reports because the unreported counts were at their cap.
    dropped: AtomicU64,
}

/// A [`RateLimit`] in the limiter's terms.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    limit: u32,
    /// Nanoseconds between two requests at the sustained rate.
    interval: u64,
    /// Nanoseconds of burst tolerance (`interval * limit`).
    window: u64,
}

impl Gcra {
    fn new(rate: RateLimit) -> Self {
        let limit = rate.limit.max(1);
        let window = u64::try_from(rate.window.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1_000_000);
        let interval = (window / u64::from(limit)).max(1);
        Self {
            limit,
            interval,
            window: interval.saturating_mul(u64::from(limit)),
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    /// Theoretical arrival time per key, in nanoseconds since `origin`.
    tats: HashMap<String, u64>,
    /// Per key, since the last report (shared limiters only): requests allowed, and the
    /// nanoseconds of bucket they took.
    unreported: HashMap<String, (u32, u64)>,
    checks: u32,
}

impl RateLimiter {
    /// A limiter for `rate` remembering at most [`DEFAULT_MAX_KEYS`] keys.
    pub fn new(rate: RateLimit) -> Self {
        Self::with_max_keys(rate, DEFAULT_MAX_KEYS)
    }

    /// A limiter for `rate` remembering at most about `max_keys` keys.
    pub fn with_max_keys(rate: RateLimit, max_keys: usize) -> Self {
        Self {
            rate: Gcra::new(rate),
            max_per_shard: (max_keys / SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            origin: Instant::now(),
            origin_unix: SystemTime::now(),
            shared: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }

    /// The configured rate (after the adjustments of [`RateLimit`]'s docs).
    pub fn rate(&self) -> RateLimit {
        RateLimit {
            limit: self.rate.limit,
            window: Duration::from_nanos(self.rate.window),
        }
    }

    /// From now on, remembers the requests it allows for [`RateLimiter::take_report`]: call
    /// it once something sends the reports to the other replicas. Until then (and in a
    /// single process, always) a check costs what it always did.
    pub fn share(&self) {
        self.shared.store(true, Ordering::Relaxed);
    }

    /// Whether [`RateLimiter::share`] was called.
    pub fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Relaxed)
    }

    /// Counts a request for `key` now and says whether it may proceed.
    pub fn check(&self, key: &str) -> Decision {
        self.check_at(key, Instant::now())
    }

    /// [`RateLimiter::check`] at a given instant (for tests and simulations; instants
    /// before the limiter was created count as its creation).
    pub fn check_at(&self, key: &str, now: Instant) -> Decision {
        self.decide(key, now, self.rate)
    }

    /// Counts a request for `key` now against `rate` rather than the limiter's own: for
    /// limits that differ per key (a tenant's plan). A key should always be checked with
    /// the same rate; shared limiters report what each request took of its own key's
    /// bucket, so replicas agree whatever the rates.
    pub fn check_with(&self, key: &str, rate: RateLimit) -> Decision {
        self.check_with_at(key, rate, Instant::now())
    }

    /// [`RateLimiter::check_with`] at a given instant.
    pub fn check_with_at(&self, key: &str, rate: RateLimit, now: Instant) -> Decision {
        self.decide(key, now, Gcra::new(rate))
    }

    fn decide(&self, key: &str, now: Instant, rate: Gcra) -> Decision {
        let now_ns = self.nanos(now);
        let shard_index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        let mut shard = self.shards[shard_index].lock();
        shard.checks += 1;
        if shard.checks >= SWEEP_EVERY {
            shard.checks = 0;
            shard.tats.retain(|_, tat| *tat > now_ns);
        }

        let tat = shard.tats.get(key).copied().unwrap_or(now_ns).max(now_ns);
        let new_tat = tat.saturating_add(rate.interval);
        let allow_at = new_tat.saturating_sub(rate.window);
        if now_ns < allow_at {
            return Decision {
                allowed: false,
                limit: rate.limit,
                remaining: 0,
                reset_unix: self.unix_secs_ceil(tat),
                retry_after_secs: ceil_secs(allow_at - now_ns).max(1),
            };
        }
        if !shard.tats.contains_key(key) && shard.tats.len() >= self.max_per_shard {
            make_room(&mut shard.tats, now_ns);
        }
        shard.tats.insert(key.to_owned(), new_tat);
        if self.shared.load(Ordering::Relaxed) {
            self.remember(&mut shard, key, rate.interval);
        }
        let used = new_tat - now_ns;
        let remaining = rate.window.saturating_sub(used) / rate.interval;
        Decision {
            allowed: true,
            limit: rate.limit,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset_unix: self.unix_secs_ceil(new_tat),
            retry_after_secs: 0,
        }
    }

    fn remember(&self, shard: &mut Shard, key: &str, spent: u64) {
        if let Some((n, ns)) = shard.unreported.get_mut(key) {
            *n = n.saturating_add(1);
            *ns = ns.saturating_add(spent);
        } else if shard.unreported.len() < self.max_per_shard {
            shard.unreported.insert(key.to_owned(), (1, spent));
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes up to `max_keys` keys' counts of allowed requests since the last report, with
    /// each key's bucket as this replica sees it; the other keys wait for the next call.
    pub fn take_report(&self, max_keys: usize) -> Vec<SharedCount> {
        self.take_report_at(max_keys, Instant::now())
    }

    /// [`RateLimiter::take_report`] at a given instant.
    pub fn take_report_at(&self, max_keys: usize, now: Instant) -> Vec<SharedCount> {
        let now_ns = self.nanos(now);
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            if out.len() >= max_keys {
                break;
            }
            let mut shard = shard.lock();
            let keys: Vec<String> = shard
                .unreported
                .keys()
                .take(max_keys - out.len())
                .cloned()
                .collect();
            for key in keys {
                let (allowed, spent_ns) = shard.unreported.remove(&key).unwrap_or_default();
                let tat = shard.tats.get(&key).copied().unwrap_or(now_ns);
                let drained_ms = tat.saturating_sub(now_ns) / 1_000_000;
                out.push(SharedCount {
                    key,
                    allowed,
                    spent_ns,
                    drained_ms: u32::try_from(drained_ms).unwrap_or(u32::MAX),
                });
            }
        }
        out
    }

    /// Counts the requests another replica reported as if they had arrived here now, and
    /// adopts its view of a bucket that is further drained than ours (a report we missed,
    /// or a replica that started before us).
    pub fn merge(&self, counts: &[SharedCount]) {
        self.merge_at(counts, Instant::now());
    }

    /// [`RateLimiter::merge`] at a given instant.
    pub fn merge_at(&self, counts: &[SharedCount], now: Instant) {
        let now_ns = self.nanos(now);
        for count in counts {
            let shard_index = (self.hasher.hash_one(&count.key) as usize) % self.shards.len();
            let mut shard = self.shards[shard_index].lock();
            let known = shard.tats.get(&count.key).copied();
            let mut tat = known
                .unwrap_or(now_ns)
                .max(now_ns)
                .saturating_add(count.spent_ns);
            let theirs = now_ns.saturating_add(u64::from(count.drained_ms) * 1_000_000);
            if theirs > tat.saturating_add(MERGE_SLACK_NS) {
                tat = theirs;
            }
            if tat <= now_ns {
                continue;
            }
            if known.is_none() && shard.tats.len() >= self.max_per_shard {
                make_room(&mut shard.tats, now_ns);
            }
            shard.tats.insert(count.key.clone(), tat);
        }
    }

    /// How many allowed requests went unreported (their key did not fit under the cap of
    /// unreported keys) since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Forgets every key whose bucket has refilled (checks do this shard by shard as they
    /// go; call it from a periodic task to free memory after a burst of one-off keys).
    pub fn purge(&self) {
        self.purge_at(Instant::now());
    }

    /// [`RateLimiter::purge`] at a given instant.
    pub fn purge_at(&self, now: Instant) {
        let now_ns = self.nanos(now);
        for shard in self.shards.iter() {
            shard.lock().tats.retain(|_, tat| *tat > now_ns);
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().tats.len()).sum()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    fn unix_secs_ceil(&self, nanos: u64) -> u64 {
        let at = self.origin_unix + Duration::from_nanos(nanos);
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        since.as_secs() + u64::from(since.subsec_nanos() > 0)
    }
}

/// Forgets refilled keys; if none, the one nearest to refilled.
fn make_room(tats: &mut HashMap<String, u64>, now_ns: u64) {
    tats.retain(|_, tat| *tat > now_ns);
    if tats.is_empty() {
        return;
    }
    let oldest = tats
        .iter()
        .min_by_key(|(_, tat)| **tat)
        .map(|(key, _)| key.clone());
    if let Some(key) = oldest {
        tats.remove(&key);
    }
}

fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    fn per_minute(limit: u32) -> RateLimiter {
        RateLimiter::new(RateLimit {
            limit,
            window: Duration::from_secs(60),
        })
    }

    #[test]
    fn limit_reached_is_denied_with_sane_retry_after() {
        let limiter = per_minute(3);
        let t0 = Instant::now();
        let remaining: Vec<u32> = (0..3)
            .map(|_| {
                let d = limiter.check_at("a", t0);
                assert!(d.allowed);
                d.remaining
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let denied = limiter.check_at("a", t0);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 0);
        // One request refills every 20 s.
        assert_eq!(denied.retry_after_secs, 20);
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(denied.reset_unix >= now_unix + 59 && denied.reset_unix <= now_unix + 62);
        // Denied requests are not counted: the wait does not grow.
        assert_eq!(limiter.check_at("a", t0).retry_after_secs, 20);

        let mut headers = HeaderMap::new();
        denied.apply_headers(&mut headers);
        assert_eq!(headers["x-ratelimit-limit"], "3");
        assert_eq!(headers["x-ratelimit-remaining"], "0");
        assert_eq!(headers["retry-after"], "20");
    }

    #[test]
    fn refills_after_the_window() {
        let limiter = per_minute(2);
        let t0 = Instant::now();
        assert!(limiter.check_at("a", t0).allowed);
        assert!(limiter.check_at("a", t0).allowed);
        assert!(!limiter.check_at("a", t0 + Duration::from_secs(29)).allowed);
        // Half a window later one request is back.
        let d = limiter.check_at("a", t0 + Duration::from_secs(30));
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        // A full window of quiet refills the whole burst.
        let later = t0 + Duration::from_secs(120);
        assert_eq!(limiter.check_at("a", later).remaining, 1);
        assert!(limiter.check_at("a", later).allowed);
        assert!(!limiter.check_at("a", later).allowed);
    }

    #[test]
    fn keys_are_independent() {
        let limiter = per_minute(1);
        let t0 = Instant::now();
        assert!(limiter.check_at("a", t0).allowed);
        assert!(!limiter.check_at("a", t0).allowed);
        assert!(limiter.check_at("b", t0).allowed);
        assert!(!limiter.check_at("b", t0).allowed);
    }

    #[test]
    fn memory_stays_bounded() {
        let limiter = RateLimiter::with_max_keys(
            RateLimit {
                limit: 5,
                window: Duration::from_secs(1),
            },
            160,
        );
        let t0 = Instant::now();
        for i in 0..10_000 {
            limiter.check_at(&format!("key-{i}"), t0);
        }
        assert!(limiter.len() <= 160, "{}", limiter.len());
        // Refilled keys are swept as checks go on (here in the hot key's shard)…
        let before = limiter.len();
        let later = t0 + Duration::from_secs(10);
        for _ in 0..SWEEP_EVERY {
            limiter.check_at("hot", later);
        }
        assert!(limiter.len() < before, "{}", limiter.len());
        // …and everywhere by `purge`.
        limiter.purge_at(later + Duration::from_secs(10));
        assert!(limiter.is_empty());
    }

    #[tokio::test]
    async fn into_error_is_a_429_with_headers_and_body() {
        let limiter = per_minute(1);
        limiter.check("k");
        let denied = limiter.check("k");
        assert!(!denied.allowed);
        let response = denied.into_error().into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "60");
        assert_eq!(response.headers()["x-ratelimit-limit"], "1");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(body["error"], "rate_limited");
        assert_eq!(body["retry_after"], 60);
    }

    #[test]
    fn merged_reports_count_as_local_requests() {
        let a = per_minute(10);
        let b = per_minute(10);
        a.share();
        b.share();
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(a.check_at("k", t0).allowed);
        }
        for _ in 0..3 {
            assert!(b.check_at("k", t0).allowed);
        }
        let from_a = a.take_report_at(100, t0);
        assert_eq!(from_a.len(), 1);
        assert_eq!(
            (from_a[0].allowed, from_a[0].spent_ns, from_a[0].drained_ms),
            (4, 24_000_000_000, 24_000)
        );
        b.merge_at(&from_a, t0);
        a.merge_at(&b.take_report_at(100, t0), t0);
        // Both now know all 7: 3 left on either (each takes one the other has not heard of).
        assert_eq!(a.check_at("k", t0).remaining, 2);
        assert_eq!(b.check_at("k", t0).remaining, 2);
        // Reported counts are taken once.
        assert!(a.take_report_at(100, t0).iter().all(|c| c.allowed == 1));
        assert!(a.take_report_at(100, t0).is_empty());
    }

    #[test]
    fn a_late_replica_adopts_a_further_drained_bucket() {
        let a = per_minute(10);
        let late = per_minute(10);
        a.share();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(a.check_at("k", t0).allowed);
        }
        let mut report = a.take_report_at(100, t0);
        // The late replica missed the counts but sees the bucket in a later report.
        report[0].allowed = 0;
        report[0].spent_ns = 0;
        late.merge_at(&report, t0);
        assert!(!late.check_at("k", t0).allowed);
        // Views a few milliseconds apart are not echoed back and forth.
        let before = a.check_at("k", t0).retry_after_secs;
        a.merge_at(
            &[SharedCount {
                key: "k".into(),
                allowed: 0,
                spent_ns: 0,
                drained_ms: 60_010,
            }],
            t0,
        );
        assert_eq!(a.check_at("k", t0).retry_after_secs, before);
    }

    #[test]
    fn unshared_limiters_report_nothing_and_reports_are_capped() {
        let local = per_minute(10);
        let t0 = Instant::now();
        local.check_at("k", t0);
        assert!(local.take_report_at(100, t0).is_empty());

        let shared = RateLimiter::with_max_keys(
            RateLimit {
                limit: 5,
                window: Duration::from_secs(1),
            },
            SHARDS,
        );
        shared.share();
        for i in 0..100 {
            shared.check_at(&format!("key-{i}"), t0);
        }
        // One unreported key per shard; the rest are counted as dropped.
        let first = shared.take_report_at(3, t0);
        assert_eq!(first.len(), 3);
        let rest = shared.take_report_at(1000, t0);
        assert!(first.len() + rest.len() <= SHARDS);
        assert_eq!(
            shared.take_dropped() as usize,
            100 - first.len() - rest.len()
        );
    }

    #[test]
    fn per_key_rates_are_kept_and_shared() {
        let a = per_minute(100);
        let b = per_minute(100);
        a.share();
        let t0 = Instant::now();
        let small = RateLimit {
            limit: 2,
            window: Duration::from_secs(60),
        };
        let big = RateLimit {
            limit: 5,
            window: Duration::from_secs(60),
        };
        assert!(a.check_with_at("free", small, t0).allowed);
        assert!(a.check_with_at("free", small, t0).allowed);
        let denied = a.check_with_at("free", small, t0);
        assert!(!denied.allowed);
        assert_eq!((denied.limit, denied.retry_after_secs), (2, 30));
        assert_eq!(a.check_with_at("paid", big, t0).remaining, 4);
        // The other replica adds what each request took of its key's bucket.
        b.merge_at(&a.take_report_at(100, t0), t0);
        assert!(!b.check_with_at("free", small, t0).allowed);
        assert_eq!(b.check_with_at("paid", big, t0).remaining, 3);
    }

    #[test]
    fn degenerate_rates_do_not_panic() {
        let limiter = RateLimiter::new(RateLimit {
            limit: 0,
            window: Duration::ZERO,
        });
        assert!(limiter.check("x").allowed);
        assert_eq!(limiter.check("x").limit, 1);
    }
}
