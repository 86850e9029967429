//! Storage faults of the cluster's stores: JetStream out of space (its `max_file_store`
//! reached) and unreachable. A write the store cannot take is refused at once with a clear
//! error, `/readyz` turns 503 while the store cannot write, the services recover by
//! themselves when it can again, and nothing acknowledged is lost.
//!
//! `cargo test -p cluster-tests --test it faults_` runs these.

use std::time::{Duration, Instant};

use amp_client::Identity;
use amp_testkit::NatsServer;
use amp_testkit::cluster::{Deployment, HEAVY, Topology};

use crate::common::{agent, client, mailbox_ids, message_id, send};

async fn readyz(url: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{url}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Waits (at most `within`) until `/readyz` of `url` answers `want`; how long it took.
async fn wait_readyz(url: &str, want: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let got = readyz(url).await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{url}/readyz still answers {got}, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Routes `text` from `from` to `to` with a fresh id, which must be accepted; the id.
async fn route_ok(c: &amp_client::Client, from: &Identity, to: &Identity, text: &str) -> String {
    let id = message_id();
    send(c, from, to.address(), &id, text)
        .await
        .unwrap_or_else(|e| panic!("route {text:?}: {e}"));
    id
}

/// Waits (at most the deployment's drain timeout) until every id of `acked` is in `who`'s
/// mailbox, read through `ingest`, and checks that none appears twice.
async fn assert_all_stored(d: &Deployment, ingest: &str, who: &Identity, acked: &[String]) {
    let deadline = Instant::now() + d.drain_timeout;
    loop {
        let stored = mailbox_ids(ingest, who).await;
        let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(id)).collect();
        if missing.is_empty() {
            let unique: std::collections::HashSet<&String> = stored.iter().collect();
            assert_eq!(unique.len(), stored.len(), "a message appears twice");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged messages lost: {missing:?}\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// JetStream's space runs out (`max_file_store`, which operators set below the volume's
/// size: a volume that really fills makes nats-server disable JetStream altogether). Routes
/// are refused at once with `503` (the ingress publish is refused), `/readyz` of ingest
/// (the process refused) turns 503; the room the ingress stream's settled messages took is
/// freed by its purge and used, then refused again; when the limit is raised (a config
/// reload) ingest and router are ready again without a restart and every acknowledged
/// message is in its mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_jetstream_out_of_space_is_refused_fast_and_recovers() {
    let _heavy = HEAVY.lock().await;
    let mut nats = NatsServer::start_with_jetstream("max_file_store: 12MB", "");
    let mut topology = Topology::new("faults.test", nats.url(), 1);
    topology.replicas = [1, 1, 1, 0];
    let d = Deployment::start(&topology).await;
    let (ingest, router) = (d.ingest[0].url(), d.router[0].url());
    let alice = agent(&ingest, "faults", "alice").await;
    let bob = agent(&ingest, "faults", "bob").await;
    let c = client(&ingest);
    let filler = "z".repeat(50_000);
    let mut acked = Vec::new();
    let (first_code, first_took) = loop {
        assert!(acked.len() < 1_000, "12 MB took 1,000 messages of 50 KB");
        let id = message_id();
        let started = Instant::now();
        match send(
            &c,
            &alice,
            bob.address(),
            &id,
            &format!("{} {filler}", acked.len()),
        )
        .await
        {
            Ok(_) => acked.push(id),
            Err(code) => break (code, started.elapsed()),
        }
    };
    eprintln!(
        "JetStream full after {} messages: the first refusal was {first_code} in {first_took:?}",
        acked.len()
    );
    assert!(
        !acked.is_empty(),
        "nothing was accepted before the space ran out"
    );
    assert_eq!(first_code, "service_unavailable");
    assert!(
        first_took < Duration::from_secs(1),
        "the first refusal took {first_took:?}"
    );
    let unready = wait_readyz(&ingest, 503, Duration::from_secs(10)).await;
    eprintln!("ingest /readyz turned 503 {unready:?} after the first refusal");
    // The ingress stream's settled messages are purged once a second, which frees the room
    // they took (and readiness, proven by a write, follows): what is sent while full is
    // refused fast, or, in that room, accepted and durable. Five refusals in a row, each
    // fast, within a bounded number of sends.
    let (mut refused, mut sent) = (0, 0);
    while refused < 5 {
        sent += 1;
        assert!(sent < 300, "never full for five sends in a row");
        let id = message_id();
        let started = Instant::now();
        let r = send(
            &c,
            &alice,
            bob.address(),
            &id,
            &format!("full {sent} {filler}"),
        )
        .await;
        let took = started.elapsed();
        match r {
            Ok(_) => {
                acked.push(id);
                refused = 0;
            }
            Err(code) => {
                assert_eq!(code, "service_unavailable", "while full");
                assert!(
                    took < Duration::from_secs(1),
                    "a refusal while full took {took:?}"
                );
                refused += 1;
            }
        }
    }
    eprintln!("{sent} sends while full; the last five refused");

    nats.reload_jetstream("max_file_store: 256MB");
    let back = wait_readyz(&ingest, 200, Duration::from_secs(20)).await;
    wait_readyz(&router, 200, Duration::from_secs(20)).await;
    eprintln!("ingest /readyz back to 200 {back:?} after the limit was raised");
    acked.push(route_ok(&c, &alice, &bob, "after the limit was raised").await);
    assert_all_stored(&d, &ingest, &bob, &acked).await;
}

/// The CQL store becomes unreachable (every service's path to the Cassandra node cut, as a
/// network partition or a node that stopped answering does): routes are refused with `503`
/// within the store's request timeout, never hang; `/readyz` turns 503; when the path heals
/// the services are ready again by themselves and every acknowledged message is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_cql_store_unreachable_is_refused_in_bounded_time_and_recovers() {
    let Some(cql) = amp_testkit::cql::cql_target() else {
        return;
    };
    let _heavy = HEAVY.lock().await;
    let upstream: std::net::SocketAddr = cql.parse().expect("the CQL contact point");
    let link = amp_testkit::Link::start(upstream);
    let nats = NatsServer::start();
    let mut topology = Topology::new("faults.test", nats.url(), 1).with_cql_store(
        &link.addr().to_string(),
        &amp_testkit::cql::unique_keyspace("amp_faults"),
    );
    topology.replicas = [1, 1, 1, 0];
    // Still inside `[store.cql]`: the default request timeout (5 s) bounds the waits.
    topology.store_toml.push_str("request_timeout_ms = 5000\n");
    let d = Deployment::start(&topology).await;
    let (ingest, router) = (d.ingest[0].url(), d.router[0].url());
    let alice = agent(&ingest, "faults", "alice").await;
    let bob = agent(&ingest, "faults", "bob").await;
    let c = client(&ingest);
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(route_ok(&c, &alice, &bob, &format!("before {i}")).await);
    }

    link.cut();
    let started = Instant::now();
    let r = send(&c, &alice, bob.address(), &message_id(), "during the cut").await;
    let took = started.elapsed();
    eprintln!("CQL cut: a route was answered {r:?} in {took:?}");
    // Refused (the registry cannot be read), or accepted by the bus (`queued`: JetStream
    // holds it; the router writes it after the heal): never a hang past the client's 10 s.
    if let Ok(answer) = &r {
        assert_eq!(answer.basis.as_deref(), Some("queued"), "{answer:?}");
    } else {
        assert_eq!(
            r.as_ref().err().map(String::as_str),
            Some("service_unavailable")
        );
    }
    assert!(
        took < Duration::from_secs(8),
        "a route during the cut took {took:?}"
    );
    let unready = wait_readyz(&ingest, 503, Duration::from_secs(15)).await;
    wait_readyz(&router, 503, Duration::from_secs(15)).await;
    eprintln!("ingest /readyz turned 503 {unready:?} after the first route of the cut");

    link.heal();
    let back = wait_readyz(&ingest, 200, Duration::from_secs(60)).await;
    wait_readyz(&router, 200, Duration::from_secs(60)).await;
    eprintln!("ingest /readyz back to 200 {back:?} after the heal");
    acked.push(route_ok(&c, &alice, &bob, "after the heal").await);
    assert_all_stored(&d, &ingest, &bob, &acked).await;
}

/// NATS becomes unreachable for an ingest replica (its network path cut: packets dropped,
/// no reset, the worst case for a client): a route is answered `503` in bounded time, never
/// hangs, `/readyz` turns 503 so the proxy sends clients elsewhere, and after the heal the
/// replica is ready again by itself with every acknowledged message in its mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_nats_unreachable_from_ingest_is_refused_in_bounded_time_and_recovers() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let upstream: std::net::SocketAddr = nats
        .url()
        .trim_start_matches("nats://")
        .parse()
        .expect("the NATS address");
    let link = amp_testkit::Link::start(upstream);
    let mut topology = Topology::new("faults.test", nats.url(), 1);
    topology.replicas = [1, 1, 1, 0];
    let mut d = Deployment::start(&topology).await;
    d.ingest[0].set_env("AMP__NATS__URLS", &link.nats_url());
    d.ingest[0].restart().await;
    let ingest = d.ingest[0].url();
    let alice = agent(&ingest, "faults", "alice").await;
    let bob = agent(&ingest, "faults", "bob").await;
    let c = client(&ingest).with_timeout(Duration::from_secs(30));
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(route_ok(&c, &alice, &bob, &format!("before {i}")).await);
    }

    link.cut();
    let started = Instant::now();
    let r = send(&c, &alice, bob.address(), &message_id(), "during the cut").await;
    let took = started.elapsed();
    eprintln!("NATS cut: a route was answered {r:?} in {took:?}");
    assert_eq!(r.err().as_deref(), Some("service_unavailable"));
    assert!(
        took < Duration::from_secs(15),
        "a route during the cut took {took:?}"
    );
    let unready = wait_readyz(&ingest, 503, Duration::from_secs(15)).await;
    eprintln!("ingest /readyz turned 503 {unready:?} after the first route of the cut");

    link.heal();
    let back = wait_readyz(&ingest, 200, Duration::from_secs(60)).await;
    eprintln!("ingest /readyz back to 200 {back:?} after the heal");
    acked.push(route_ok(&c, &alice, &bob, "after the heal").await);
    assert_all_stored(&d, &ingest, &bob, &acked).await;
}
