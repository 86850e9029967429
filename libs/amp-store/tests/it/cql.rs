//! The CQL backend against a real node (Apache Cassandra started by the test kit, or
//! `AMP_TEST_CQL=host:port`): the conformance suite with one and with two writers, and what
//! is particular to CQL — TTL expiry on the server, bucket rollover, out-of-order acks, the
//! floor that keeps pickups off acknowledged rows, migrations, clear errors, and a kill -9
//! of the node during writes. Every test's name contains `cql`: `cargo test --workspace cql`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use amp_store::cql::{CqlStore, CqlStoreConfig};
use amp_store::testing::{agent, conformance, entry, key_hash, now_ms, unique};
use amp_store::{Acked, Enqueued, EntryState, Error, Store};
use amp_testkit::cql::{CqlNode, cql_target, unique_keyspace};

const DAY: i64 = 24 * 3600 * 1000;

/// The keyspace most tests share (each check uses its own agents); migrated by the first.
fn shared_keyspace() -> &'static str {
    static KS: OnceLock<String> = OnceLock::new();
    KS.get_or_init(|| unique_keyspace("amp_it"))
}

async fn connect(target: &str, keyspace: &str) -> Store {
    Store::new(
        CqlStore::connect(CqlStoreConfig::for_test(target, keyspace))
            .await
            .expect("connect the CQL store"),
    )
}

/// The node's contact point, or `None` (and a loud skip line) where no node can run here;
/// with `AMP_REQUIRE_CQL=1` a missing node panics inside `cql_target`.
fn target() -> Option<String> {
    cql_target()
}

/// A tenant deleted, then every row of every table read: nothing of it is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_operator_tenant_delete_leaves_nothing_in_a_scan() {
    let Some(t) = target() else { return };
    let keyspace = unique_keyspace("amp_del");
    let store = connect(&t, &keyspace).await;
    let (gone, kept) = amp_store::testing::purge::delete_a_tenant_for_a_scan(&store).await;
    let cql = CqlStore::connect(CqlStoreConfig::for_test(&t, &keyspace))
        .await
        .expect("connect again");
    let rows = cql.scan_rows().await.expect("scan");
    amp_store::testing::purge::assert_gone(&rows, &gone, &kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cql_passes_conformance() {
    let Some(t) = target() else { return };
    let store = connect(&t, shared_keyspace()).await;
    assert!(store.ready().await);
    conformance::run_all(&store).await;
    store.close().await.expect("close");
}

/// The key revocation list alone (also in the suite): `cargo test spec_next` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_spec_next_revocation_list() {
    let Some(t) = target() else { return };
    let store = connect(&t, shared_keyspace()).await;
    amp_store::testing::revocation::spec_next_revocation_list(&store).await;
    store.close().await.expect("close");
}

/// Issue 16: a listing page reads the page's agent records, not the tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_security_list_agents_reads_the_page_not_the_tenant() {
    let Some(t) = target() else { return };
    let store = connect(&t, shared_keyspace()).await;
    conformance::security_list_agents_reads_the_page_not_the_tenant(&store).await;
}

/// Usage rows written by two "replicas", summed when read (`operator` runs it alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_operator_usage_rows_sum_replicas() {
    let Some(t) = target() else { return };
    let store = connect(&t, shared_keyspace()).await;
    amp_store::testing::records::operator_usage_rows_sum_replicas(&store).await;
}

/// Held-bytes ledgers of several replicas, summed when read (`operator` runs it alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_operator_held_ledgers_sum_replicas() {
    let Some(t) = target() else { return };
    let store = connect(&t, shared_keyspace()).await;
    amp_store::testing::records::operator_held_ledgers_sum_replicas(&store).await;
}

/// Usage rows past their retention deleted by the sweep (`operator` runs it alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_operator_usage_rows_expire_after_retention() {
    let Some(t) = target() else { return };
    let store = connect(&t, shared_keyspace()).await;
    amp_store::testing::records::operator_usage_rows_expire_after_retention(&store).await;
}

/// Two sessions are two cluster processes: two routers writing one mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cql_passes_two_writer_conformance() {
    let Some(t) = target() else { return };
    let a = connect(&t, shared_keyspace()).await;
    let b = connect(&t, shared_keyspace()).await;
    conformance::run_two_writers(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cql_durable_across_reopen() {
    let Some(t) = target() else { return };
    let ks = shared_keyspace();
    conformance::durable_across_reopen(|| {
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(connect(&t, ks)))
    })
    .await;
}

/// Expiry needs no purge: once an entry's expiry has passed, nothing of it is served,
/// counted, acknowledged or found; and a few seconds later the cluster has dropped its rows
/// by TTL (checked with a raw query).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cql_rows_expire_by_ttl_on_the_server() {
    let Some(t) = target() else { return };
    let ks = shared_keyspace();
    let store = connect(&t, ks).await;
    let agent_id = unique("agt_");
    let now = now_ms();
    store
        .enqueue(entry(
            &agent_id,
            "msg_1_ttl",
            "s@t.example.test",
            now,
            1_000,
        ))
        .await
        .expect("short");
    store
        .enqueue(entry(&agent_id, "msg_2_ttl", "s@t.example.test", now, DAY))
        .await
        .expect("long");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let later = now_ms();
    let page = store
        .fetch(&agent_id, None, 10, later)
        .await
        .expect("fetch");
    let ids: Vec<_> = page.entries.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["msg_2_ttl"]);
    assert_eq!(store.count(&agent_id, later).await.expect("count").count, 1);
    // Even a caller whose clock is behind does not find or acknowledge it.
    assert!(
        store
            .entry(&agent_id, "msg_1_ttl", now)
            .await
            .expect("entry")
            .is_none()
    );
    assert_eq!(
        store
            .ack(&agent_id, &["msg_1_ttl".into()], now)
            .await
            .expect("ack"),
        [Acked::not_found()]
    );
    assert_eq!(store.purge_expired(later, 1000).await.expect("purge"), 0);
    // The TTL (expiry plus a 5 s grace) removes the rows themselves.
    tokio::time::sleep(Duration::from_millis(6_000)).await;
    let session = scylla_session(&t).await;
    let rows = session
        .query_unpaged(
            format!(
                "SELECT seq, message_id FROM {ks}.mailbox_entries WHERE agent = ? AND bucket = 0"
            ),
            (&agent_id,),
        )
        .await
        .expect("raw read")
        .into_rows_result()
        .expect("rows");
    // The unexpired entry and its id's claim row (at a negative position) are left.
    let left: Vec<(i64, Option<String>)> = rows
        .rows::<(i64, Option<String>)>()
        .expect("typed")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter()
            .all(|(_, id)| id.as_deref() == Some("msg_2_ttl")),
        "only the unexpired message's rows are left: {left:?}"
    );
    assert_eq!(left.iter().filter(|(seq, _)| *seq > 0).count(), 1);
    // The id is remembered one hour past the expiry (a late retry is a duplicate), no more.
    let rows = session
        .query_unpaged(
            format!(
                "SELECT TTL(sender) FROM {ks}.mailbox_ids WHERE agent = ? AND message_id = 'msg_1_ttl'"
            ),
            (&agent_id,),
        )
        .await
        .expect("raw read")
        .into_rows_result()
        .expect("rows");
    let (ttl,) = rows.single_row::<(Option<i32>,)>().expect("one id row");
    assert!(ttl.is_some_and(|t| t <= 3_600 + 5), "id TTL {ttl:?}");
}

/// More than one bucket (1024 positions) of messages: pages and cursors cross the bucket
/// boundary, acknowledging everything moves the floor past whole buckets, and appends go
/// on in the next bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cql_bucket_rollover_pages_and_floor() {
    let Some(t) = target() else { return };
    let store = connect(&t, shared_keyspace()).await;
    let agent_id = unique("agt_");
    let now = now_ms();
    let n = 1_100;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let s = store.clone();
        let agent_id = agent_id.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(8) {
                s.enqueue(entry(
                    &agent_id,
                    &format!("msg_{i}_roll"),
                    "s@t.example.test",
                    now,
                    DAY,
                ))
                .await
                .expect("enqueue");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let mut cursor = None;
    let mut seen = Vec::new();
    loop {
        let page = store
            .fetch(&agent_id, cursor, 300, now)
            .await
            .expect("fetch");
        if page.entries.is_empty() {
            break;
        }
        assert_eq!(page.remaining as usize, n - seen.len() - page.entries.len());
        cursor = page.entries.last().map(|e| e.seq);
        seen.extend(page.entries.iter().map(|e| (e.seq, e.message_id.clone())));
    }
    assert_eq!(seen.len(), n);
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(
        seen.last().is_some_and(|(seq, _)| *seq > 1024),
        "{:?}",
        seen.last()
    );
    let ids: Vec<String> = seen.iter().map(|(_, id)| id.clone()).collect();
    for chunk in ids.chunks(250) {
        store.ack(&agent_id, chunk, now).await.expect("ack");
    }
    let c = store.count(&agent_id, now).await.expect("count");
    assert_eq!(c.count, 0);
    assert_eq!(
        c.floor,
        seen.last().map_or(0, |s| s.0),
        "floor past everything"
    );
    let r = store
        .enqueue(entry(
            &agent_id,
            "msg_after_roll",
            "s@t.example.test",
            now,
            DAY,
        ))
        .await
        .expect("enqueue after");
    assert!(matches!(r, Enqueued::New { seq } if seq > c.head), "{r:?}");
    let page = store.fetch(&agent_id, None, 10, now).await.expect("fetch");
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].message_id, "msg_after_roll");
}

/// Acknowledging out of order: the acknowledged ones are never served again, the floor
/// stops at the first one still queued, and jumps once it is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cql_out_of_order_acks_and_the_floor() {
    let Some(t) = target() else { return };
    let store = connect(&t, shared_keyspace()).await;
    let agent_id = unique("agt_");
    let now = now_ms();
    let mut seqs = Vec::new();
    for i in 0..10 {
        match store
            .enqueue(entry(
                &agent_id,
                &format!("msg_{i}_ooo"),
                "s@t.example.test",
                now,
                DAY,
            ))
            .await
            .expect("enqueue")
        {
            Enqueued::New { seq } => seqs.push(seq),
            other => panic!("{other:?}"),
        }
    }
    let odd: Vec<String> = (1..10).step_by(2).map(|i| format!("msg_{i}_ooo")).collect();
    store.ack(&agent_id, &odd, now).await.expect("ack odd");
    let page = store.fetch(&agent_id, None, 100, now).await.expect("fetch");
    let ids: Vec<_> = page.entries.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "msg_0_ooo",
            "msg_2_ooo",
            "msg_4_ooo",
            "msg_6_ooo",
            "msg_8_ooo"
        ]
    );
    assert_eq!(store.count(&agent_id, now).await.expect("count").floor, 0);
    store
        .ack(&agent_id, &["msg_0_ooo".into()], now)
        .await
        .expect("ack first");
    let c = store.count(&agent_id, now).await.expect("count");
    assert_eq!((c.count, c.floor), (4, seqs[1]), "floor past 0 and 1");
    assert!(matches!(
        store
            .entry(&agent_id, "msg_1_ooo", now)
            .await
            .expect("entry"),
        Some(EntryState::Acked { .. })
    ));
}

/// The queue-on-Cassandra trap, checked by structure rather than by a timing: after many
/// messages were acknowledged, the floor sits past all of them, so a pickup starts reading
/// above them (and `count` reports the floor where reading starts). The latency figure for
/// 100,000 acknowledged messages comes from `cql_pickup_latency_after_acks` (by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cql_pickup_reads_above_acknowledged_rows() {
    let Some(t) = target() else { return };
    let store = connect(&t, shared_keyspace()).await;
    let agent_id = unique("agt_");
    let now = now_ms();
    let floor = churn(&store, &agent_id, 2_000, now).await;
    assert!(floor >= 2_000, "floor {floor}");
    store
        .enqueue(entry(&agent_id, "msg_live_t", "s@t.example.test", now, DAY))
        .await
        .expect("live");
    let page = store.fetch(&agent_id, None, 100, now).await.expect("fetch");
    assert_eq!(page.entries.len(), 1);
    assert_eq!(
        store.count(&agent_id, now).await.expect("count").floor,
        floor
    );
}

/// Sends `n` messages through one mailbox, picking up and acknowledging as a client does;
/// returns the floor.
async fn churn(store: &Store, agent_id: &str, n: usize, now: i64) -> u64 {
    let mut tasks = Vec::new();
    for w in 0..16 {
        let s = store.clone();
        let agent_id = agent_id.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(16) {
                s.enqueue(entry(
                    &agent_id,
                    &format!("msg_{i}_churn"),
                    "s@t.example.test",
                    now,
                    DAY,
                ))
                .await
                .expect("enqueue");
            }
        }));
        // A consumer keeps the mailbox small, as a real agent does.
    }
    let consumer = {
        let s = store.clone();
        let agent_id = agent_id.to_owned();
        tokio::spawn(async move {
            let mut acked = 0;
            while acked < n {
                let page = s.fetch(&agent_id, None, 200, now).await.expect("fetch");
                if page.entries.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let ids: Vec<String> = page.entries.iter().map(|e| e.message_id.clone()).collect();
                s.ack(&agent_id, &ids, now).await.expect("ack");
                acked += ids.len();
            }
        })
    };
    for t in tasks {
        t.await.expect("writer");
    }
    consumer.await.expect("consumer");
    store.count(agent_id, now).await.expect("count").floor
}

/// Pickup latency of a fresh mailbox and of one through which 100,000 messages were
/// acknowledged. A measurement, printed for the report:
/// `cargo test -p amp-store cql_pickup_latency_after_acks -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, run by hand"]
async fn cql_pickup_latency_after_acks() {
    let Some(t) = target() else { return };
    let store = connect(&t, shared_keyspace()).await;
    let now = now_ms();
    let n: usize = std::env::var("AMP_CHURN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let fresh = unique("agt_");
    let used = unique("agt_");
    let started = Instant::now();
    churn(&store, &used, n, now).await;
    println!(
        "churned {n} messages in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for agent_id in [&fresh, &used] {
        for i in 0..100 {
            store
                .enqueue(entry(
                    agent_id,
                    &format!("msg_{i}_lat"),
                    "s@t.example.test",
                    now,
                    DAY,
                ))
                .await
                .expect("enqueue");
        }
    }
    let mut median = Vec::new();
    for agent_id in [&fresh, &used] {
        let mut times = Vec::new();
        for _ in 0..50 {
            let t0 = Instant::now();
            let page = store.fetch(agent_id, None, 100, now).await.expect("fetch");
            times.push(t0.elapsed());
            assert_eq!(page.entries.len(), 100);
        }
        times.sort();
        median.push(times[times.len() / 2]);
    }
    println!(
        "pickup of 100: fresh mailbox p50 {:?}, after {n} acknowledged p50 {:?} ({:.2}x)",
        median[0],
        median[1],
        median[1].as_secs_f64() / median[0].as_secs_f64()
    );
}

/// Migrations: a new keyspace gets every migration; running them again changes nothing; a
/// migration interrupted half-way is completed; a store that may not migrate refuses an
/// old schema with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_migrations_apply_once_and_resume() {
    let Some(t) = target() else { return };
    let ks = unique_keyspace("amp_mig");
    let no_migrate = CqlStoreConfig {
        migrate_on_start: false,
        ..CqlStoreConfig::for_test(&t, &ks)
    };
    let err = CqlStore::connect(no_migrate.clone())
        .await
        .err()
        .expect("a missing keyspace is refused")
        .to_string();
    assert!(err.contains(&ks), "{err}");

    let cfg = CqlStoreConfig::for_test(&t, &ks);
    let latest = amp_store::cql::MIGRATIONS.last().map_or(0, |m| m.0);
    assert_eq!(CqlStore::migrate(&cfg).await.expect("migrate"), latest);
    assert_eq!(CqlStore::migrate(&cfg).await.expect("again"), latest);
    let store = CqlStore::connect(no_migrate).await.expect("migrated");
    assert_eq!(store.schema_version().await.expect("version"), latest);

    // An upgrade from an interrupted run: the keyspace and half of migration 1's tables
    // exist, no version is recorded. `migrate` completes it.
    let ks2 = unique_keyspace("amp_mig");
    let session = scylla_session(&t).await;
    session
        .query_unpaged(
            format!("CREATE KEYSPACE {ks2} WITH replication = {{'class': 'NetworkTopologyStrategy', 'datacenter1': 1}}"),
            (),
        )
        .await
        .expect("keyspace");
    session.use_keyspace(&ks2, false).await.expect("use");
    let first = amp_store::cql::statements(amp_store::cql::MIGRATIONS[0].1);
    for stmt in &first[..first.len() / 2] {
        session
            .query_unpaged(stmt.as_str(), ())
            .await
            .expect("half a migration");
    }
    let cfg2 = CqlStoreConfig::for_test(&t, &ks2);
    assert_eq!(CqlStore::migrate(&cfg2).await.expect("resume"), latest);
    let store = Store::new(CqlStore::connect(cfg2).await.expect("connect"));
    conformance::registry_round_trip(&store).await;
    conformance::mailbox_fifo_cursor_and_remaining(&store).await;

    // An upgrade from the previous release: a keyspace at version 1 holding data. The
    // upgraded store keeps the data and has what version 2 added (values that expire).
    let ks3 = unique_keyspace("amp_mig");
    session
        .query_unpaged(
            format!("CREATE KEYSPACE {ks3} WITH replication = {{'class': 'NetworkTopologyStrategy', 'datacenter1': 1}}"),
            (),
        )
        .await
        .expect("keyspace");
    session.use_keyspace(&ks3, false).await.expect("use");
    session
        .query_unpaged(
            "CREATE TABLE schema_version (id text PRIMARY KEY, version int, applied_at bigint, holder text)",
            (),
        )
        .await
        .expect("version table");
    for stmt in amp_store::cql::statements(amp_store::cql::MIGRATIONS[0].1) {
        session.query_unpaged(stmt, ()).await.expect("migration 1");
    }
    session
        .query_unpaged(
            "INSERT INTO schema_version (id, version) VALUES ('amp', 1)",
            (),
        )
        .await
        .expect("version 1");
    session
        .query_unpaged("INSERT INTO kv (key, value) VALUES ('old', 0x01)", ())
        .await
        .expect("old data");
    let cfg3 = CqlStoreConfig::for_test(&t, &ks3);
    let old_build = CqlStore::connect(CqlStoreConfig {
        migrate_on_start: false,
        ..cfg3.clone()
    })
    .await
    .err()
    .expect("a build newer than the schema refuses to start unmigrated")
    .to_string();
    assert!(old_build.contains("--migrate"), "{old_build}");
    assert_eq!(CqlStore::migrate(&cfg3).await.expect("upgrade"), latest);
    let store = Store::new(CqlStore::connect(cfg3).await.expect("connect"));
    assert_eq!(
        store.get("old").await.expect("old").as_deref(),
        Some(&[1u8][..])
    );
    conformance::kv_round_trip(&store).await;
}

async fn scylla_session(target: &str) -> scylla::client::session::Session {
    scylla::client::session_builder::SessionBuilder::new()
        .known_node(target)
        .build()
        .await
        .expect("session")
}

/// Errors name what is wrong: an address nobody listens on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_unreachable_cluster_is_named_in_the_error() {
    let cfg = CqlStoreConfig {
        connect_timeout_ms: 2_000,
        ..CqlStoreConfig::for_test("127.0.0.1:1", "amp_none")
    };
    let err = CqlStore::connect(cfg).await.err().expect("refused");
    assert!(matches!(err, Error::Unavailable(_)));
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

/// kill -9 of the node while writers run: requests fail with clear errors (and the store is
/// not ready) while it is down, every write acknowledged before the kill is there after the
/// restart, and the same store carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cql_node_kill_during_writes_loses_no_acknowledged_write() {
    if target().is_none() {
        return;
    }
    // A node of its own: the others' tests must not see it die.
    let Some(mut node) = CqlNode::start_or_skip() else {
        return;
    };
    let cp = node.contact_point();
    let ks = unique_keyspace("amp_kill");
    let store = Store::new(
        CqlStore::connect(CqlStoreConfig {
            request_timeout_ms: 2_000,
            ..CqlStoreConfig::for_test(&cp, &ks)
        })
        .await
        .expect("connect"),
    );
    let now = now_ms();
    let a = agent(&unique("t"), "kill", now);
    store
        .create_agent(a.clone(), key_hash(&a.id), now)
        .await
        .expect("create");
    let acknowledged = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let errors = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (s, agent_id) = (store.clone(), a.id.clone());
        let (acked, errs, stop) = (acknowledged.clone(), errors.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("msg_{w}_{i}_k");
                i += 1;
                match s
                    .enqueue(entry(&agent_id, &id, "s@t.example.test", now, DAY))
                    .await
                {
                    Ok(Enqueued::New { .. }) => acked.lock().push(id),
                    Ok(other) => panic!("{other:?}"),
                    Err(e) => {
                        errs.lock().push(e.to_string());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    node.kill();
    let killed_at = acknowledged.lock().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!store.ready().await, "not ready while the node is down");
    node.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !store.ready().await {
        assert!(Instant::now() < deadline, "store did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let errs = errors.lock().clone();
    assert!(!errs.is_empty(), "writes failed while the node was down");
    assert!(
        errs.iter().all(|e| e.contains("CQL store")),
        "errors name the store: {:?}",
        &errs[..errs.len().min(3)]
    );
    let want = acknowledged.lock().clone();
    assert!(want.len() > killed_at, "writes went on after the restart");
    let page = store.fetch(&a.id, None, 100_000, now).await.expect("fetch");
    let got: std::collections::HashSet<&str> =
        page.entries.iter().map(|e| e.message_id.as_str()).collect();
    let lost: Vec<&String> = want
        .iter()
        .filter(|id| !got.contains(id.as_str()))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(store.agent(&a.id).await.expect("agent"), Some(a));
}

/// The deployment the composition is for: mailboxes, registry and receipts in the CQL
/// store, presence, jobs and small values (short-lived, TTL-native) in JetStream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cql_mailboxes_with_jetstream_presence_compose() {
    let Some(t) = target() else { return };
    let nats = amp_testkit::NatsServer::start();
    let cql: std::sync::Arc<dyn amp_store::StoreBackend> = std::sync::Arc::new(
        CqlStore::connect(CqlStoreConfig::for_test(&t, shared_keyspace()))
            .await
            .expect("cql"),
    );
    let js: std::sync::Arc<dyn amp_store::StoreBackend> = std::sync::Arc::new(
        amp_store::jetstream::JetStreamStore::connect(amp_store::jetstream::JetStreamStoreConfig {
            urls: vec![nats.url()],
            prefix: unique("m"),
            ..Default::default()
        })
        .await
        .expect("jetstream"),
    );
    let store = Store::new(
        amp_store::Composed::new(cql)
            .with_presence(js.clone())
            .with_jobs(js.clone())
            .with_kv(js),
    );
    assert!(store.ready().await);
    conformance::run_all(&store).await;
}

/// Stores `n` messages `msg_fill_<tag>_<i>` from both writers in turn (two at a time).
async fn fill(a: &Store, b: &Store, agent_id: &str, tag: &str, n: usize, now: i64) {
    for i in (0..n).step_by(2) {
        let e = |i: usize| {
            entry(
                agent_id,
                &format!("msg_fill_{tag}_{i}"),
                "s@t.example.test",
                now,
                DAY,
            )
        };
        let (ra, rb) = tokio::join!(a.enqueue(e(i)), async {
            if i + 1 < n {
                b.enqueue(e(i + 1)).await.map(Some)
            } else {
                Ok(None)
            }
        });
        assert!(matches!(ra.expect("fill a"), Enqueued::New { .. }));
        assert!(matches!(
            rb.expect("fill b"),
            None | Some(Enqueued::New { .. })
        ));
    }
}

/// Every message id in the mailbox, in order.
async fn all_ids(store: &Store, agent_id: &str, now: i64) -> Vec<(u64, String)> {
    let mut cursor = None;
    let mut seen = Vec::new();
    loop {
        let page = store
            .fetch(agent_id, cursor, 500, now)
            .await
            .expect("fetch");
        if page.entries.is_empty() {
            return seen;
        }
        cursor = page.entries.last().map(|e| e.seq);
        seen.extend(page.entries.into_iter().map(|e| (e.seq, e.message_id)));
    }
}

/// Two routers (two sessions, each with its own hints) store the same id at the same moment,
/// round after round, while the mailbox crosses from bucket 0 to bucket 1: with other
/// content, exactly one is accepted and the other is a conflict; with the same message,
/// one is stored and the other is a duplicate of the same position. The mailbox holds each
/// id once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cql_same_id_from_two_writers_across_a_bucket_rollover_is_accepted_once() {
    let Some(t) = target() else { return };
    let a = connect(&t, shared_keyspace()).await;
    let b = connect(&t, shared_keyspace()).await;
    let agent_id = unique("agt_");
    let now = now_ms();
    fill(&a, &b, &agent_id, "before", 1_000, now).await;
    let rounds = 16;
    for r in 0..rounds {
        let id = format!("msg_race_{r}");
        let ea = entry(&agent_id, &id, "a@t.example.test", now, DAY);
        let mut eb = entry(&agent_id, &id, "a@t.example.test", now, DAY);
        let same = r % 2 == 1;
        if !same {
            eb.sender = "b@t.example.test".into();
            eb.signature = format!("other-sig-of-{id}");
            eb.data = format!(r#"{{"envelope":{{"id":"{id}"}},"payload":"other"}}"#);
        }
        let (ra, rb) = tokio::join!(a.enqueue(ea), b.enqueue(eb));
        let (ra, rb) = (ra.expect("a"), rb.expect("b"));
        match (ra, rb, same) {
            (Enqueued::New { .. }, Enqueued::Conflict, false)
            | (Enqueued::Conflict, Enqueued::New { .. }, false) => {}
            (Enqueued::New { seq }, Enqueued::Duplicate { seq: d }, true)
            | (Enqueued::Duplicate { seq: d }, Enqueued::New { seq }, true) => {
                assert_eq!(seq, d, "round {r}: a duplicate names the stored position");
            }
            other => panic!("round {r}: {other:?}"),
        }
        // Two more positions per round, so the bucket boundary falls inside the races.
        fill(&a, &b, &agent_id, &format!("r{r}"), 2, now).await;
    }
    let ids = all_ids(&a, &agent_id, now).await;
    assert_eq!(ids.len(), 1_000 + rounds * 3);
    assert!(ids.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(
        ids.last().is_some_and(|(seq, _)| *seq > 1_024),
        "the races crossed into bucket 1: {:?}",
        ids.last()
    );
    for r in 0..rounds {
        let id = format!("msg_race_{r}");
        let n = ids.iter().filter(|(_, m)| *m == id).count();
        assert_eq!(n, 1, "{id} stored {n} times");
    }
}

/// The one window a claim row covers alone: a writer whose batch committed the last
/// position of a bucket and which died before recording the id in `mailbox_ids` (emulated
/// by removing the record, leaving the lower bound it wrote first). Another router, whose
/// hints are already in the next bucket, stores the same id: it finds the claim in the
/// closed bucket with a serial read, answers `Conflict` (other content) or `Duplicate`
/// (the same message), and completes the record, so `entry` finds the message again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cql_claim_in_a_closed_bucket_is_found_after_a_lost_record() {
    let Some(t) = target() else { return };
    let ks = shared_keyspace();
    let a = connect(&t, ks).await;
    let b = connect(&t, ks).await;
    let agent_id = unique("agt_");
    let now = now_ms();
    fill(&a, &b, &agent_id, "x", 1_022, now).await;
    let x = entry(&agent_id, "msg_last_of_0", "a@t.example.test", now, DAY);
    assert!(matches!(
        a.enqueue(x.clone()).await.expect("x"),
        Enqueued::New { seq: 1_023 }
    ));
    // b's next append opens bucket 1, so its hints move past the bucket holding x.
    assert!(matches!(
        b.enqueue(entry(
            &agent_id,
            "msg_first_of_1",
            "s@t.example.test",
            now,
            DAY
        ))
        .await
        .expect("first of bucket 1"),
        Enqueued::New { seq: 1_024 }
    ));
    let session = scylla_session(&t).await;
    session
        .query_unpaged(
            format!(
                "DELETE sender, signature, seq, expires_at FROM {ks}.mailbox_ids WHERE agent = ? AND message_id = ?"
            ),
            (&agent_id, "msg_last_of_0"),
        )
        .await
        .expect("lose the record");

    let mut other = x.clone();
    other.signature = "another-signature".into();
    other.data = "{\"other\":true}".into();
    assert_eq!(
        b.enqueue(other).await.expect("other content"),
        Enqueued::Conflict
    );
    assert_eq!(
        b.enqueue(x).await.expect("same message"),
        Enqueued::Duplicate { seq: 1_023 }
    );
    match b
        .entry(&agent_id, "msg_last_of_0", now)
        .await
        .expect("entry")
    {
        Some(EntryState::Queued(e)) => assert_eq!(e.seq, 1_023),
        other => panic!("{other:?}"),
    }
    let ids = all_ids(&a, &agent_id, now).await;
    assert_eq!(ids.len(), 1_024, "no second copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_cql_attachments() {
    let Some(t) = target() else { return };
    let store = connect(&t, shared_keyspace()).await;
    conformance::attachments_compare_and_set(&store).await;
}

/// spec_next 07: agent suspensions (written by one session, read by another) and risk rows on CQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_cql_suspensions() {
    let Some(t) = target() else { return };
    let a = connect(&t, shared_keyspace()).await;
    let b = connect(&t, shared_keyspace()).await;
    amp_store::testing::suspension::spec_next_suspensions_round_trip(&a).await;
    amp_store::testing::risk::spec_next_risk_rows_summed_over_the_window(&a).await;
    amp_store::testing::quarantine::spec_next_quarantine_held_once_and_decided_once(&a).await;
    amp_store::testing::suspension::spec_next_suspension_seen_by_another_writer(&a, &b).await;
}

/// Too few live replicas for the store's consistency (Cassandra's `Unavailable`; here the
/// keyspace raised to 3 replicas on a one-node cluster, `local_quorum` needing 2): writes fail
/// at once with `Error::Unavailable` (503 for a client), never after a timeout, the store is
/// not ready, and once the replicas are there again (the keyspace back to 1) the same store
/// is ready and writes, with what it held before intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_too_few_replicas_fail_fast_and_recover() {
    let Some(t) = target() else { return };
    let ks = unique_keyspace("amp_replicas");
    let store = connect(&t, &ks).await;
    let now = now_ms();
    let before = agent("replicas", "before", now);
    store
        .create_agent(before.clone(), key_hash("replicas-before"), now)
        .await
        .expect("a write with its replica");
    assert!(store.ready().await, "ready with every replica");

    let raw = scylla_session(&t).await;
    let alter = |rf: u32| {
        format!(
            "ALTER KEYSPACE {ks} WITH replication = {{'class': 'NetworkTopologyStrategy', 'datacenter1': {rf}}}"
        )
    };
    raw.query_unpaged(alter(3), ()).await.expect("alter to 3");
    let started = Instant::now();
    let err = store
        .create_agent(
            agent("replicas", "during", now),
            key_hash("replicas-during"),
            now,
        )
        .await
        .expect_err("a quorum of 3 on one node");
    let took = started.elapsed();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    assert!(took < Duration::from_secs(1), "the refusal took {took:?}");
    assert!(!store.ready().await, "ready without a quorum of replicas");

    raw.query_unpaged(alter(1), ()).await.expect("alter to 1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store.ready().await {
        assert!(
            Instant::now() < deadline,
            "not ready again 30 s after the replicas returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store
        .create_agent(
            agent("replicas", "after", now),
            key_hash("replicas-after"),
            now,
        )
        .await
        .expect("a write once the replicas are back");
    let found = store
        .agent(&before.id)
        .await
        .expect("read")
        .expect("the agent written before");
    assert_eq!(found.name, "before");
}
