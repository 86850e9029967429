//! Rate limits shared by replicas over a real NATS (with the users and permissions of
//! `deploy/nats/auth.conf`): two limiters of the same name on two connections behave as one
//! limit within the bound `amp_runtime::ratelimit` documents, and a replica that stops
//! reporting stops counting.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amp_bus::Bus;
use amp_cluster::{NatsConfig, StoreConfig, connect};
use amp_messaging::shared_limits;
use amp_runtime::ratelimit::{RateLimit, RateLimiter};
use amp_testkit::{NatsServer, nats_auth_config};

const SYNC: Duration = Duration::from_millis(25);
/// More than the sync interval plus the bus's latency on one machine: each request is heard
/// of by the other replica before the next one arrives there.
const SPACING: Duration = Duration::from_millis(100);

fn password(service: &str) -> String {
    format!("pw-{service}-shared-limits")
}

/// A bus connected as `service`, with the sync interval of these tests.
async fn bus(server: &NatsServer, dir: &Path, service: &str) -> Bus {
    let file = dir.join(service);
    std::fs::write(&file, password(service)).expect("password file");
    let mut cfg = NatsConfig {
        urls: server.url(),
        limits_sync_ms: SYNC.as_millis() as u64,
        ..NatsConfig::default()
    };
    cfg.auth.user = Some(service.to_owned());
    cfg.auth.password_file = Some(file);
    let (bus, _store) = connect(&cfg, &StoreConfig::default())
        .await
        .unwrap_or_else(|e| panic!("{service} connects: {e:#}\n{}", server.log()));
    bus
}

fn rate(limit: u32, window: Duration) -> RateLimit {
    RateLimit { limit, window }
}

#[tokio::test]
async fn security_shared_limits_two_replicas_share_one_limit_within_the_bound() {
    let server = NatsServer::start_with(&nats_auth_config(password));
    let dir = tempfile::tempdir().expect("temp dir");
    // Ingest's REST routes and delivery's WebSocket route frames draw on one budget.
    let (bus_a, bus_b) = (
        bus(&server, dir.path(), "ingest").await,
        bus(&server, dir.path(), "delivery").await,
    );
    let per_minute = rate(20, Duration::from_secs(60));
    let replicas: [Arc<RateLimiter>; 2] = [
        shared_limits::limiter(&bus_a, "test_messages", per_minute),
        shared_limits::limiter(&bus_b, "test_messages", per_minute),
    ];
    assert!(replicas.iter().all(|l| l.is_shared()));
    // Both subscriptions are in place.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let mut allowed = 0;
    for i in 0..50 {
        if replicas[i % 2].check("agent-1").allowed {
            allowed += 1;
        }
        tokio::time::sleep(SPACING).await;
    }
    // The documented bound: what one process allows over the elapsed time (the burst, plus
    // one refill per `window / limit`, rounded up), plus, for the other replica, what it
    // allowed in one sync interval that was not heard of yet: at most 1 at this spacing.
    let interval = Duration::from_secs(60) / 20;
    let refills = started.elapsed().as_millis().div_ceil(interval.as_millis()) as usize;
    let bound = 20 + refills + 1;
    assert!(
        allowed <= bound,
        "{allowed} allowed across two replicas, bound {bound}"
    );
    // Each replica alone would have allowed its whole burst: 40 and more.
    assert!(allowed >= 20, "{allowed}");
    // Other keys are untouched.
    assert!(replicas[0].check("agent-2").allowed);

    bus_a.shutdown().await;
    bus_b.shutdown().await;
}

#[tokio::test]
async fn security_shared_limits_a_replica_that_stops_reporting_stops_counting() {
    let server = NatsServer::start_with(&nats_auth_config(password));
    let dir = tempfile::tempdir().expect("temp dir");
    let (bus_a, bus_b) = (
        bus(&server, dir.path(), "federation").await,
        bus(&server, dir.path(), "ingest").await,
    );
    // 10 per 4 s: one token back every 400 ms, far more than a report takes to arrive even
    // on a loaded machine (at 10 per second a token came back within the wait below, and A
    // was allowed one by the refill, not by a lost report).
    let window = Duration::from_secs(4);
    let per_window = rate(10, window);
    let a = shared_limits::limiter(&bus_a, "test_inbound", per_window);
    let b = shared_limits::limiter(&bus_b, "test_inbound", per_window);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // B takes the whole burst; A hears of it and refuses.
    for _ in 0..10 {
        assert!(b.check("peer.example").allowed);
    }
    tokio::time::sleep(SYNC * 4).await;
    assert!(!a.check("peer.example").allowed, "A heard of B's requests");

    // B goes away: what it reported drains like any request, and nothing new comes.
    drop(b);
    bus_b.shutdown().await;
    tokio::time::sleep(window + Duration::from_millis(500)).await;
    let allowed = (0..12).filter(|_| a.check("peer.example").allowed).count();
    assert_eq!(allowed, 10, "A alone has the whole limit again");

    bus_a.shutdown().await;
}

#[tokio::test]
async fn security_shared_limits_a_late_replica_learns_the_current_state() {
    let server = NatsServer::start_with(&nats_auth_config(password));
    let dir = tempfile::tempdir().expect("temp dir");
    let bus_a = bus(&server, dir.path(), "ingest").await;
    let per_minute = rate(10, Duration::from_secs(60));
    let a = shared_limits::limiter(&bus_a, "test_register", per_minute);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..9 {
        assert!(a.check("192.0.2.1").allowed);
    }
    tokio::time::sleep(SYNC * 4).await;

    // A replica started now missed those reports; A's next report carries the bucket.
    let bus_b = bus(&server, dir.path(), "ingest").await;
    let b = shared_limits::limiter(&bus_b, "test_register", per_minute);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.check("192.0.2.1").allowed);
    tokio::time::sleep(SYNC * 4).await;
    assert!(!b.check("192.0.2.1").allowed, "B knows the bucket is empty");

    bus_a.shutdown().await;
    bus_b.shutdown().await;
}
