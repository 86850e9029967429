//! Cross-provider latency and throughput on loopback (debug or release build, whatever the
//! test run uses): printed, with only loose sanity bounds asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::common::{Agent, Ampd, FederationExt, Provider, payload_with};

/// Messages timed one at a time.
const SEQUENTIAL: usize = 30;
/// Messages sent concurrently for throughput.
const BURST: usize = 300;
/// Concurrent senders in the burst.
const SENDERS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_loopback_latency_and_throughput() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    let a = Arc::new(
        pa.start(|f| {
            f.peers = vec![pb.as_peer()];
            f.workers = 32;
            // One peer gets every worker here: throughput to it is what is measured, not
            // the isolation from a slow peer (per_peer_workers, 2 by default).
            f.per_peer_workers = 32;
        })
        .await,
    );
    let b = pb.start(|f| f.peers = vec![pa.as_peer()]).await;
    let alice = Arc::new(a.register("acme", "alice").await);
    let bob = b.register("team", "bob").await;

    // Latency: POST /v1/route on alpha until the message is in bob's mailbox on beta.
    let mut samples = Vec::with_capacity(SEQUENTIAL);
    for i in 0..SEQUENTIAL {
        let start = Instant::now();
        let r = a
            .send(
                &alice,
                &bob.address,
                "ping",
                &payload_with(&format!("ping {i}")),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        b.wait_pending(&bob, i + 1).await;
        samples.push(start.elapsed());
    }
    samples.sort();
    let p50 = samples[SEQUENTIAL / 2];
    let p95 = samples[SEQUENTIAL * 95 / 100];

    // Baseline: the same burst to a local recipient on alpha (no federation).
    let carol = a.register("acme", "carol").await;
    let local = burst(&a, &alice, &carol.address).await;
    a.wait_pending(&carol, BURST).await;
    let local_rate = BURST as f64 / local.as_secs_f64();

    // Throughput: BURST messages from SENDERS concurrent senders, until all are stored.
    let start = Instant::now();
    let accepted = burst(&a, &alice, &bob.address).await;
    b.wait_pending(&bob, SEQUENTIAL + BURST).await;
    let total = start.elapsed();
    let rate = BURST as f64 / total.as_secs_f64();
    println!(
        "federation loopback: latency p50 {p50:?} p95 {p95:?} (n={SEQUENTIAL}); \
         throughput {rate:.0} msg/s ({BURST} messages, {SENDERS} senders, accepted in \
         {accepted:?}, all delivered in {total:?}); same burst to a local recipient: \
         {local_rate:.0} msg/s"
    );
    assert!(p50 < Duration::from_secs(2), "p50 {p50:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        b.pending_count(&bob).await,
        SEQUENTIAL + BURST,
        "exactly once"
    );
    Arc::try_unwrap(a).ok().expect("sole owner").stop().await;
    b.stop().await;
}

/// Sends BURST messages from SENDERS concurrent tasks; returns the time until all were
/// accepted.
async fn burst(a: &Arc<Ampd>, alice: &Arc<Agent>, to: &str) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let (a, alice, to) = (a.clone(), alice.clone(), to.to_owned());
        tasks.push(tokio::spawn(async move {
            for i in (s..BURST).step_by(SENDERS) {
                let r = a
                    .send(
                        &alice,
                        &to,
                        "burst",
                        &payload_with(&format!("burst {i}")),
                        None,
                    )
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    start.elapsed()
}
