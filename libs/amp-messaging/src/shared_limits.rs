//! Rate limits shared by the replicas of a cluster: every limiter a service builds with
//! [`limiter`] holds for all replicas together, not for each.
//!
//! Each replica still decides on its own, from memory, with no store write or network round
//! trip on the request path. Every sync interval ([`amp_bus::BusBackend::limits_sync`]) a task
//! per limiter sends, on the core subject `amp.limits.<name>`, the keys it allowed requests
//! for since its last report (only those), and merges the other replicas' reports into its
//! buckets as if those requests had arrived here (`amp_runtime::ratelimit` explains the
//! merge and gives the error bound). On the in-process bus (`ampd`: one process) there is no
//! task, no report and no extra work per request.
//!
//! The cost is on the bus, not the request path: per limiter and replica, every interval,
//! 18 bytes plus the key for each key that had an allowed request in it (10,000 agents active
//! within 100 ms: about 0.4 MB), whatever the request rate; a quiet limiter sends nothing.
//! A larger `limits_sync_ms` trades bus traffic for a wider bound.
//!
//! A report is one or more messages of at most [`MAX_REPORT_BYTES`]; at most
//! [`MAX_KEYS_PER_TICK`] keys go out per interval, the rest wait for the next one. Keys that
//! did not fit under the limiter's cap of unreported keys are counted in
//! `amp_limits_unreported_total{limiter}`.
//!
//! Wire format (version 1, big-endian): `b"L1"`, the sender's replica id (u64, random per
//! limiter and process, so a replica skips its own reports), then per key: its length (u16),
//! its bytes, the allowed count (u32), `spent_ns` (u64) and `drained_ms` (u32).

use std::sync::{Arc, Weak};
use std::time::Duration;

use amp_bus::{Bus, subjects};
use amp_runtime::ratelimit::{RateLimit, RateLimiter, SharedCount};
use bytes::{BufMut, Bytes, BytesMut};

/// Most bytes of one report message (well under NATS's default 1 MiB payload).
pub const MAX_REPORT_BYTES: usize = 32 * 1024;
/// Most keys reported per limiter per interval; more wait for the next interval.
pub const MAX_KEYS_PER_TICK: usize = 20_000;
/// Longest key reported (longer keys are counted as unreported).
const MAX_KEY_BYTES: usize = 1024;
const MAGIC: &[u8; 2] = b"L1";
/// Magic, replica id.
const HEADER_BYTES: usize = 2 + 8;
/// Key length, allowed, spent, drained.
const ENTRY_FIXED_BYTES: usize = 2 + 4 + 8 + 4;

/// A limiter for `rate` named `name` (one name per limit: replicas share the limiters of the
/// same name, whichever service holds them). When `bus` joins several processes it is
/// shared with the other replicas (a background task runs until the limiter is dropped or
/// the bus closes); otherwise it is a plain in-memory limiter.
///
/// Must be called within a tokio runtime when the bus shares limits.
pub fn limiter(bus: &Bus, name: &'static str, rate: RateLimit) -> Arc<RateLimiter> {
    let limiter = Arc::new(RateLimiter::new(rate));
    if let Some(every) = bus.limits_sync() {
        limiter.share();
        tokio::spawn(sync(bus.clone(), name, Arc::downgrade(&limiter), every));
    }
    limiter
}

/// Sends this replica's counts every `every` and merges the others' until the limiter is
/// dropped or the bus closes.
async fn sync(bus: Bus, name: &'static str, limiter: Weak<RateLimiter>, every: Duration) {
    let subject = subjects::limits_subject(name);
    let replica: u64 = rand::random();
    let mut sub = loop {
        match bus.subscribe(&subject).await {
            Ok(sub) => break sub,
            Err(amp_bus::Error::Closed) => return,
            Err(e) => {
                tracing::warn!(limiter = name, error = %e, "cannot hear other replicas' rate-limit counts; retrying");
                tokio::time::sleep(every.max(Duration::from_secs(1))).await;
                if limiter.strong_count() == 0 {
                    return;
                }
            }
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(limiter) = limiter.upgrade() else { return };
                if !publish(&bus, &subject, name, replica, &limiter).await {
                    return;
                }
            }
            msg = sub.next() => {
                let Some(msg) = msg else { return };
                let Some(limiter) = limiter.upgrade() else { return };
                match decode(&msg.payload) {
                    Some((from, _)) if from == replica => {}
                    Some((_, counts)) => limiter.merge(&counts),
                    None => {
                        metrics::counter!("amp_limits_reports_invalid_total", "limiter" => name)
                            .increment(1);
                    }
                }
            }
        }
    }
}

/// Sends what `limiter` allowed since the last call; `false` once the bus is closed.
async fn publish(
    bus: &Bus,
    subject: &str,
    name: &'static str,
    replica: u64,
    limiter: &RateLimiter,
) -> bool {
    let dropped = limiter.take_dropped();
    if dropped > 0 {
        metrics::counter!("amp_limits_unreported_total", "limiter" => name).increment(dropped);
    }
    let counts = limiter.take_report(MAX_KEYS_PER_TICK);
    if counts.is_empty() {
        return true;
    }
    let (messages, too_long) = encode(replica, &counts, MAX_REPORT_BYTES);
    if too_long > 0 {
        metrics::counter!("amp_limits_unreported_total", "limiter" => name)
            .increment(too_long as u64);
    }
    for payload in messages {
        match bus.notify(subject, payload).await {
            Ok(()) => metrics::counter!("amp_limits_reports_sent_total").increment(1),
            Err(amp_bus::Error::Closed) => return false,
            // Best effort, like the counts of a lost message: the next report of a key
            // carries its whole bucket again.
            Err(e) => tracing::debug!(limiter = name, error = %e, "rate-limit report not sent"),
        }
    }
    true
}

/// `counts` as messages of at most `max_bytes` each, and how many keys were too long to send.
fn encode(replica: u64, counts: &[SharedCount], max_bytes: usize) -> (Vec<Bytes>, usize) {
    let mut messages = Vec::new();
    let mut too_long = 0;
    let mut buf = BytesMut::new();
    for count in counts {
        let key = count.key.as_bytes();
        if key.len() > MAX_KEY_BYTES {
            too_long += 1;
            continue;
        }
        let entry = ENTRY_FIXED_BYTES + key.len();
        if !buf.is_empty() && buf.len() + entry > max_bytes {
            messages.push(std::mem::take(&mut buf).freeze());
        }
        if buf.is_empty() {
            buf.put_slice(MAGIC);
            buf.put_u64(replica);
        }
        buf.put_u16(key.len() as u16);
        buf.put_slice(key);
        buf.put_u32(count.allowed);
        buf.put_u64(count.spent_ns);
        buf.put_u32(count.drained_ms);
    }
    if !buf.is_empty() {
        messages.push(buf.freeze());
    }
    (messages, too_long)
}

/// The sender and counts of a report; `None` if it is not one.
fn decode(mut bytes: &[u8]) -> Option<(u64, Vec<SharedCount>)> {
    use bytes::Buf as _;
    if bytes.len() < HEADER_BYTES || &bytes[..2] != MAGIC {
        return None;
    }
    bytes.advance(2);
    let replica = bytes.get_u64();
    let mut counts = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 2 {
            return None;
        }
        let len = usize::from(bytes.get_u16());
        if bytes.len() < len + ENTRY_FIXED_BYTES - 2 {
            return None;
        }
        let key = std::str::from_utf8(&bytes[..len]).ok()?.to_owned();
        bytes.advance(len);
        counts.push(SharedCount {
            key,
            allowed: bytes.get_u32(),
            spent_ns: bytes.get_u64(),
            drained_ms: bytes.get_u32(),
        });
    }
    Some((replica, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(key: &str, allowed: u32) -> SharedCount {
        SharedCount {
            key: key.to_owned(),
            allowed,
            spent_ns: u64::from(allowed) * 1_000_000_000,
            drained_ms: allowed * 1000,
        }
    }

    #[test]
    fn reports_round_trip_split_by_size() {
        let counts: Vec<_> = (0..100)
            .map(|i| count(&format!("agent-{i:03}"), i))
            .collect();
        let (messages, too_long) = encode(7, &counts, 256);
        assert_eq!(too_long, 0);
        assert!(messages.len() > 1);
        let mut back = Vec::new();
        for m in &messages {
            assert!(m.len() <= 256, "{}", m.len());
            let (from, part) = decode(m).expect("a report");
            assert_eq!(from, 7);
            back.extend(part);
        }
        assert_eq!(back, counts);
    }

    #[test]
    fn too_long_keys_and_garbage_are_refused() {
        let (messages, too_long) = encode(1, &[count(&"x".repeat(2000), 1)], 1 << 16);
        assert_eq!((messages.len(), too_long), (0, 1));
        assert!(decode(b"").is_none());
        assert!(decode(b"XX12345678").is_none());
        let (messages, _) = encode(1, &[count("k", 1)], 1 << 16);
        let cut = &messages[0][..messages[0].len() - 1];
        assert!(decode(cut).is_none());
    }

    #[tokio::test]
    async fn the_in_process_bus_shares_nothing() {
        let bus = Bus::in_process(amp_bus::InProcessConfig::default());
        let limiter = limiter(
            &bus,
            "test",
            RateLimit {
                limit: 1,
                window: Duration::from_secs(60),
            },
        );
        assert!(!limiter.is_shared());
        bus.shutdown().await;
    }
}
