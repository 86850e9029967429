//! A keyed in-memory rate limiter (GCRA: a token bucket that stores one timestamp per key)
//! and the `X-RateLimit-*` headers and 429 body of its decisions.
//!
//! Hand-written rather than `governor`: we need the numbers behind a decision (remaining,
//! reset, retry-after) for the headers, bounded memory with our own eviction rule, and an
//! injectable clock — about a hundred lines.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
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

/// A keyed limiter: each key (an agent, a tenant, an address) has its own bucket.
///
/// Memory stays bounded: keys live in sharded maps, a key whose bucket has refilled is
/// forgotten (that is the same as a fresh key), and past `max_keys` the key nearest to
/// refilled is evicted to make room.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    /// Nanoseconds between two requests at the sustained rate.
    interval: u64,
    /// Nanoseconds of burst tolerance (`interval * limit`).
    window: u64,
    max_per_shard: usize,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    origin: Instant,
    origin_unix: SystemTime,
}

#[derive(Debug, Default)]
struct Shard {
    /// Theoretical arrival time per key, in nanoseconds since `origin`.
    tats: HashMap<String, u64>,
    checks: u32,
}

impl RateLimiter {
    /// A limiter for `rate` remembering at most [`DEFAULT_MAX_KEYS`] keys.
    pub fn new(rate: RateLimit) -> Self {
        Self::with_max_keys(rate, DEFAULT_MAX_KEYS)
    }

    /// A limiter for `rate` remembering at most about `max_keys` keys.
    pub fn with_max_keys(rate: RateLimit, max_keys: usize) -> Self {
        let limit = rate.limit.max(1);
        let window = u64::try_from(rate.window.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1_000_000);
        let interval = (window / u64::from(limit)).max(1);
        Self {
            limit,
            interval,
            window: interval.saturating_mul(u64::from(limit)),
            max_per_shard: (max_keys / SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            origin: Instant::now(),
            origin_unix: SystemTime::now(),
        }
    }

    /// Counts a request for `key` now and says whether it may proceed.
    pub fn check(&self, key: &str) -> Decision {
        self.check_at(key, Instant::now())
    }

    /// [`RateLimiter::check`] at a given instant (for tests and simulations; instants
    /// before the limiter was created count as its creation).
    pub fn check_at(&self, key: &str, now: Instant) -> Decision {
        let now_ns = self.nanos(now);
        let shard_index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        let mut shard = self.shards[shard_index].lock();
        shard.checks += 1;
        if shard.checks >= SWEEP_EVERY {
            shard.checks = 0;
            shard.tats.retain(|_, tat| *tat > now_ns);
        }

        let tat = shard.tats.get(key).copied().unwrap_or(now_ns).max(now_ns);
        let new_tat = tat.saturating_add(self.interval);
        let allow_at = new_tat.saturating_sub(self.window);
        if now_ns < allow_at {
            return Decision {
                allowed: false,
                limit: self.limit,
                remaining: 0,
                reset_unix: self.unix_secs_ceil(tat),
                retry_after_secs: ceil_secs(allow_at - now_ns).max(1),
            };
        }
        if !shard.tats.contains_key(key) && shard.tats.len() >= self.max_per_shard {
            make_room(&mut shard.tats, now_ns);
        }
        shard.tats.insert(key.to_owned(), new_tat);
        let used = new_tat - now_ns;
        let remaining = self.window.saturating_sub(used) / self.interval;
        Decision {
            allowed: true,
            limit: self.limit,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset_unix: self.unix_secs_ceil(new_tat),
            retry_after_secs: 0,
        }
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
    fn degenerate_rates_do_not_panic() {
        let limiter = RateLimiter::new(RateLimit {
            limit: 0,
            window: Duration::ZERO,
        });
        assert!(limiter.check("x").allowed);
        assert_eq!(limiter.check("x").limit, 1);
    }
}
