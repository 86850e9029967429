//! What one stored message costs the CQL store's server: a measurement, printed for the
//! report (`deploy/bench/README.md`), not a check.
//!
//! `cargo test -p amp-store --test it cql_enqueue_cost -- --ignored --nocapture`
//!
//! A node of its own (so its CPU is the store's alone), two sessions as two routers, 32
//! mailboxes written by both; after a warm-up (the JVM compiles its hot paths), N messages
//! are stored and the node's CPU time (user + system, from /proc) is divided by N.

use std::time::Instant;

use amp_store::cql::{CqlStore, CqlStoreConfig};
use amp_store::testing::{entry, now_ms, unique};
use amp_store::{Enqueued, Store};
use amp_testkit::cql::{CqlNode, unique_keyspace};

const DAY: i64 = 24 * 3600 * 1000;

/// The node's JVM: the process whose command line names the node's directory.
fn jvm_pid(node: &CqlNode) -> Option<u32> {
    let marker = format!(
        "-Dcassandra.storagedir={}",
        node.dir().join("node").display()
    );
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let pid: u32 = p.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmd)
            .split('\0')
            .any(|a| a == marker)
            .then_some(pid)
    })
}

/// CPU seconds (user + system) the process has used.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// Stores `n` messages into `agents` from both stores, 8 at a time each.
async fn store_messages(a: &Store, b: &Store, agents: &[String], tag: &str, n: usize) {
    let now = now_ms();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let s = if w % 2 == 0 { a.clone() } else { b.clone() };
        let agents = agents.to_vec();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(16) {
                let agent = &agents[i % agents.len()];
                let r = s
                    .enqueue(entry(
                        agent,
                        &format!("msg_{tag}_{i}"),
                        "s@t.example.test",
                        now,
                        DAY,
                    ))
                    .await
                    .expect("enqueue");
                assert!(matches!(r, Enqueued::New { .. }), "{r:?}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, run by hand"]
async fn cql_enqueue_cost() {
    let Some(node) = CqlNode::start_or_skip() else {
        return;
    };
    let pid = jvm_pid(&node).expect("the node's JVM");
    let config = CqlStoreConfig::for_test(&node.contact_point(), &unique_keyspace("amp_cost"));
    let a = Store::new(CqlStore::connect(config.clone()).await.expect("connect a"));
    let b = Store::new(CqlStore::connect(config).await.expect("connect b"));
    let n: usize = std::env::var("AMP_COST_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let agents: Vec<String> = (0..32).map(|_| unique("agt_")).collect();
    store_messages(&a, &b, &agents, "warm", n).await;
    let cpu0 = cpu_s(pid);
    let t0 = Instant::now();
    store_messages(&a, &b, &agents, "run", n).await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_s(pid) - cpu0;
    println!(
        "stored {n} messages (2 writers, 32 mailboxes) in {secs:.1} s: {:.0} msg/s, node CPU {:.2} ms per message",
        n as f64 / secs,
        1000.0 * cpu / n as f64
    );
}
