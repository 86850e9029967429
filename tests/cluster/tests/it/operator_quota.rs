//! Issue 17's plans and usage in the cluster: a tenant's `messages_per_minute`, set through
//! one ingest replica's admin API, holds for both ingest replicas together (the shared
//! limiters of `amp_messaging::quota`, within the bound `amp_runtime::ratelimit` documents),
//! and the usage each replica meters is summed by the store when read through either.

use std::time::{Duration, Instant};

use amp_client::AdminClient;
use amp_testkit::NatsServer;
use amp_testkit::cluster::{Deployment, HEAVY, Kind, Service, Topology, free_port};
use serde_json::json;

use crate::common::{agent, client, mailbox_ids, message_id, send};
use crate::operator::{BOOTSTRAP, ingest_with_admin};

const LIMIT: u32 = 10;
const SYNC_MS: u64 = 50;
/// Between two routes: more than the sync interval plus the bus's latency, so a replica has
/// heard of the other's previous route; the bound then allows one unheard-of route.
const SPACING: Duration = Duration::from_millis(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_cluster_plan_is_shared_by_two_ingest_replicas_and_usage_summed() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let mut topology = Topology::new("plans.test", nats.url(), 1);
    topology.replicas = [0, 1, 1, 0];
    topology.limits_sync_ms = Some(SYNC_MS);
    let d = Deployment::start(&topology).await;
    let (p1, p2) = (free_port(), free_port());
    let i1 = ingest_with_admin(&d, 1, p1).await;
    let i2 = ingest_with_admin(&d, 2, p2).await;
    let urls = [i1.url(), i2.url()];
    let a1 = AdminClient::new(&format!("http://127.0.0.1:{p1}"), BOOTSTRAP).expect("admin 1");
    let a2 = AdminClient::new(&format!("http://127.0.0.1:{p2}"), BOOTSTRAP).expect("admin 2");

    a1.create_tenant("metered", Some("open"))
        .await
        .expect("create tenant");
    let t = a1
        .set_plan("metered", json!({ "messages_per_minute": LIMIT }))
        .await
        .expect("set plan");
    assert_eq!(t["limits"]["messages_per_minute"], LIMIT, "{t}");
    // Replica 2 reads the tenant's record afresh at most TenantGate::TTL after a change.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let alice = agent(&urls[0], "metered", "alice").await;
    let bob = agent(&urls[1], "metered", "bob").await;

    let clients = [client(&urls[0]), client(&urls[1])];
    let started = Instant::now();
    let (mut accepted, mut limited) = ([0usize; 2], [0usize; 2]);
    for i in 0..30 {
        match send(&clients[i % 2], &alice, bob.address(), &message_id(), "hi").await {
            Ok(_) => accepted[i % 2] += 1,
            Err(code) if code == "rate_limited" => limited[i % 2] += 1,
            Err(code) => panic!("route {i}: {code}\n{}", d.logs()),
        }
        tokio::time::sleep(SPACING).await;
    }
    let total = accepted[0] + accepted[1];
    // The documented bound: what one process allows in the elapsed time (the burst, plus
    // one refill every minute / LIMIT, rounded up), plus one route per other replica not
    // yet heard of. Two replicas counting alone would take 2 * LIMIT and more.
    let refill = Duration::from_secs(60) / LIMIT;
    let refills = started.elapsed().as_millis().div_ceil(refill.as_millis()) as usize;
    let bound = LIMIT as usize + refills + 1;
    eprintln!(
        "plan of {LIMIT}/min over two ingest replicas: {total} accepted ({accepted:?} per \
         replica), {limited:?} limited, bound {bound}, in {:?}",
        started.elapsed()
    );
    assert!(
        total <= bound,
        "{total} routes accepted ({accepted:?} per replica), bound {bound}\n{}",
        d.logs()
    );
    assert!(
        total >= LIMIT as usize,
        "{total} accepted, {limited:?} limited"
    );
    assert_eq!(total + limited[0] + limited[1], 30);
    assert!(
        accepted.iter().all(|n| *n > 0) && limited.iter().all(|n| *n > 0),
        "both replicas accepted and refused: {accepted:?} {limited:?}"
    );

    // Usage: each replica wrote its own rows; either admin API reads their sum.
    let start = Instant::now();
    loop {
        let u = a2
            .usage("metered", Some("hour"), None, None)
            .await
            .expect("usage");
        let rows = u["rows"].as_array().expect("rows");
        let sum = |f: &str| rows.iter().map(|r| r[f].as_u64().unwrap_or(0)).sum::<u64>();
        if sum("messages_in") == total as u64 {
            assert_eq!(sum("messages_out"), total as u64, "{u}");
            assert_eq!(
                rows.last().map(|r| r["agents"].clone()),
                Some(json!(2)),
                "{u}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "usage never summed to {total}: {u}\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let csv = a1
        .usage_csv(None, Some("day"), None, None)
        .await
        .expect("csv");
    let mine: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|c| c[0] == "metered")
        .collect();
    let day_in: u64 = mine
        .iter()
        .map(|c| c[3].parse::<u64>().expect("a number"))
        .sum();
    assert_eq!(day_in, total as u64, "{csv}");
    assert!(mine.iter().all(|c| c.len() == 11 && c[1] == "day"), "{csv}");
}

/// The usage flush of the routers and ingest replicas of the stored-bytes test (`F`).
const FLUSH_MS: u64 = 200;

/// A router replica writing its held bytes every [`FLUSH_MS`].
async fn router_flushing(d: &Deployment, n: usize) -> Service {
    let name = format!("router-held-{n}");
    Service::start_with_env(
        Kind::Router,
        name.clone(),
        d.dir().join("cluster.toml"),
        d.dir().join(format!("{name}.log")),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        vec![(
            "AMP__INGEST__MESSAGING__USAGE_FLUSH_MS".into(),
            FLUSH_MS.to_string(),
        )],
    )
    .await
}

/// Issue 17: a tenant's `stored_bytes` holds for two ingest replicas together: the bytes
/// two routers wrote and one replica's acknowledgements removed reach both replicas'
/// estimates through the store. Routes spaced by more than the documented lag (`3F`, the
/// usage flush interval `F`) overshoot by at most one message; acknowledged bytes make
/// room on the other replica within that lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_cluster_stored_bytes_is_shared_by_two_ingest_replicas() {
    const LIMIT: u64 = 15_000;
    const TEXT: usize = 2500;
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let mut topology = Topology::new("held.test", nats.url(), 1);
    topology.replicas = [0, 0, 1, 0];
    let d = Deployment::start(&topology).await;
    let _routers = [router_flushing(&d, 1).await, router_flushing(&d, 2).await];
    let (p1, p2) = (free_port(), free_port());
    let i1 = ingest_with_admin(&d, 1, p1).await;
    let i2 = ingest_with_admin(&d, 2, p2).await;
    let urls = [i1.url(), i2.url()];
    let a1 = AdminClient::new(&format!("http://127.0.0.1:{p1}"), BOOTSTRAP).expect("admin");
    a1.create_tenant("held", Some("open"))
        .await
        .expect("create tenant");
    let t = a1
        .set_plan("held", json!({ "stored_bytes": LIMIT }))
        .await
        .expect("set plan");
    assert_eq!(t["limits"]["stored_bytes"], LIMIT, "{t}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let alice = agent(&urls[0], "held", "alice").await;
    let bob = agent(&urls[1], "held", "bob").await;
    let clients = [client(&urls[0]), client(&urls[1])];
    let text = "x".repeat(TEXT);
    let spacing = Duration::from_millis(3 * FLUSH_MS + 300);

    // Alternating replicas, spaced past the lag: each sees the other's and the routers'.
    let (mut accepted, mut refused) = ([0usize; 2], [0usize; 2]);
    for i in 0..12 {
        match send(&clients[i % 2], &alice, bob.address(), &message_id(), &text).await {
            Ok(_) => accepted[i % 2] += 1,
            Err(code) if code == "storage_quota_exceeded" => refused[i % 2] += 1,
            Err(code) => panic!("route {i}: {code}\n{}", d.logs()),
        }
        tokio::time::sleep(spacing).await;
    }
    let total = accepted[0] + accepted[1];
    // Each message holds more than TEXT bytes: a tenant at its limit holds at most
    // LIMIT / TEXT of them, and the bound allows one more.
    let bound = (LIMIT as usize).div_ceil(TEXT) + 1;
    eprintln!(
        "stored_bytes {LIMIT} over two ingest replicas: {total} accepted ({accepted:?}), \
         {refused:?} refused, bound {bound}"
    );
    assert!(total >= 2, "{accepted:?} {refused:?}\n{}", d.logs());
    assert!(
        total <= bound,
        "{total} messages of over {TEXT} bytes accepted for {LIMIT}\n{}",
        d.logs()
    );
    assert!(
        refused.iter().all(|n| *n > 0),
        "both replicas refuse: {refused:?}"
    );
    let ids = mailbox_ids(&urls[1], &bob).await;
    assert_eq!(ids.len(), total, "nothing refused was stored");

    // Acknowledged through replica 2: replica 1 accepts again within the lag.
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    clients[1].ack(&bob, &refs).await.expect("ack");
    let start = Instant::now();
    loop {
        match send(&clients[0], &alice, bob.address(), &message_id(), &text).await {
            Ok(_) => break,
            Err(code) if code == "storage_quota_exceeded" => {}
            Err(code) => panic!("after the ack: {code}\n{}", d.logs()),
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "replica 1 never saw the acknowledged bytes go\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "room again on the other replica after {:?}",
        start.elapsed()
    );
}
