//! The JetStream backend against a real `nats-server` (test kit): the conformance suite, a
//! reconnect, and a kill -9 of the server between writes.

use std::time::{Duration, Instant};

use amp_store::jetstream::{JetStreamStore, JetStreamStoreConfig};
use amp_store::testing::{agent, conformance, entry, key_hash, now_ms, unique};
use amp_store::{AckOutcome, Enqueued, EntryState, Mailboxes as _, Store};
use amp_testkit::NatsServer;

fn config(url: &str, prefix: &str) -> JetStreamStoreConfig {
    JetStreamStoreConfig {
        urls: vec![url.to_owned()],
        prefix: prefix.to_owned(),
        op_timeout: Duration::from_secs(5),
        ..JetStreamStoreConfig::default()
    }
}

async fn connect(url: &str, prefix: &str) -> Store {
    Store::new(
        JetStreamStore::connect(config(url, prefix))
            .await
            .expect("connect the JetStream store"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_passes_conformance() {
    let server = NatsServer::start();
    let store = connect(&server.url(), &unique("c")).await;
    assert!(store.ready().await);
    conformance::run_all(&store).await;
    store.close().await.expect("close");
}

/// The key revocation list alone (also in the suite): `cargo test spec_next` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_spec_next_revocation_list() {
    let server = NatsServer::start();
    let store = connect(&server.url(), &unique("r")).await;
    amp_store::testing::revocation::spec_next_revocation_list(&store).await;
    store.close().await.expect("close");
}

/// Issue 16: a listing page reads the page's agent records, not the tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_security_list_agents_reads_the_page_not_the_tenant() {
    let server = NatsServer::start();
    let store = connect(&server.url(), &unique("c")).await;
    conformance::security_list_agents_reads_the_page_not_the_tenant(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_durable_across_reopen() {
    let server = NatsServer::start();
    let url = server.url();
    let prefix = unique("r");
    // `open` is synchronous: connect on a helper thread with its own runtime, then hand the
    // store (whose connection lives on this test's runtime) back.
    let handle = tokio::runtime::Handle::current();
    conformance::durable_across_reopen(|| {
        let (url, prefix) = (url.clone(), prefix.clone());
        let handle = handle.clone();
        std::thread::spawn(move || handle.block_on(connect(&url, &prefix)))
            .join()
            .expect("connect thread")
    })
    .await;
}

/// Two connections are two cluster processes: two routers writing one mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_passes_two_writer_conformance() {
    let server = NatsServer::start();
    let prefix = unique("w");
    let a = connect(&server.url(), &prefix).await;
    let b = connect(&server.url(), &prefix).await;
    conformance::run_two_writers(&a, &b).await;
}

/// Two stores on one prefix are one store (the cluster case: several processes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_processes_share_state() {
    let server = NatsServer::start();
    let prefix = unique("s");
    let a = connect(&server.url(), &prefix).await;
    let b = connect(&server.url(), &prefix).await;
    let now = now_ms();
    let x = agent(&unique("t"), "shared", now);
    a.create_agent(x.clone(), key_hash(&x.id), now)
        .await
        .expect("create");
    assert_eq!(
        b.agent_by_name(&x.tenant, "shared").await.expect("by name"),
        Some(x.clone())
    );
    // The same message enqueued through both (a redelivery to another router): one entry.
    let e = entry(&x.id, "msg_1_s", "s@t.example.test", now, 3_600_000);
    let (ra, rb) = tokio::join!(a.enqueue(e.clone()), b.enqueue(e.clone()));
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    let seqs: Vec<u64> = [ra, rb]
        .iter()
        .map(|r| match r {
            Enqueued::New { seq } | Enqueued::Duplicate { seq } => *seq,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(seqs[0], seqs[1]);
    assert!(matches!(ra, Enqueued::New { .. }) || matches!(rb, Enqueued::New { .. }));
    assert_eq!(
        b.fetch(&x.id, None, 10, now)
            .await
            .expect("fetch")
            .entries
            .len(),
        1
    );
    let out = b.ack(&x.id, &["msg_1_s".into()], now).await.expect("ack");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].outcome, AckOutcome::Acked);
    assert_eq!(
        out[0]
            .removed
            .as_ref()
            .map(|e| (e.seq, e.message_id.as_str())),
        Some((seqs[0], "msg_1_s"))
    );
    assert!(matches!(
        a.entry(&x.id, "msg_1_s", now).await.expect("entry"),
        Some(EntryState::Acked { .. })
    ));
}

/// kill -9 of the server between writes: everything acknowledged before is there after
/// the restart, and the store (same connection, reconnecting) carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_acknowledged_writes_survive_server_kill() {
    let mut server = NatsServer::start();
    let prefix = unique("k");
    let store = connect(&server.url(), &prefix).await;
    let now = now_ms();
    let a = agent(&unique("t"), "kill", now);
    store
        .create_agent(a.clone(), key_hash(&a.id), now)
        .await
        .expect("create");
    let mut acked = Vec::new();
    for round in 0..3 {
        for i in 0..50 {
            let id = format!("msg_{round}_{i}_k");
            let r = store
                .enqueue(entry(&a.id, &id, "s@t.example.test", now, 3_600_000))
                .await
                .expect("enqueue");
            assert!(matches!(r, Enqueued::New { .. }), "{r:?}");
            acked.push(id);
        }
        store
            .ack(&a.id, &[format!("msg_{round}_0_k")], now)
            .await
            .expect("ack");
        server.kill();
        server.restart();
        // The client reconnects on its own; wait until the store answers again.
        let deadline = Instant::now() + Duration::from_secs(20);
        while store.agent(&a.id).await.is_err() {
            assert!(Instant::now() < deadline, "store did not come back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(store.agent(&a.id).await.expect("agent"), Some(a.clone()));
    assert!(
        store
            .agent_by_api_key(&key_hash(&a.id))
            .await
            .expect("key")
            .is_some()
    );
    let page = store.fetch(&a.id, None, 1000, now).await.expect("fetch");
    let got: Vec<&str> = page.entries.iter().map(|e| e.message_id.as_str()).collect();
    let want: Vec<&str> = acked
        .iter()
        .map(String::as_str)
        .filter(|id| !matches!(*id, "msg_0_0_k" | "msg_1_0_k" | "msg_2_0_k"))
        .collect();
    assert_eq!(got, want);
    // A fresh process sees the same.
    let other = connect(&server.url(), &prefix).await;
    assert_eq!(
        other.count(&a.id, now).await.expect("count").count,
        want.len() as u64
    );
}

/// Batched reads share one reply subscription per connection, told apart by a token: many
/// at once, over different mailboxes of different sizes, each get exactly its own mailbox
/// (a mix-up would hand one agent another's messages), and a page larger than one batch
/// still reads whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_concurrent_batched_reads_each_get_their_own_answer() {
    let server = NatsServer::start();
    let store = connect(&server.url(), &unique("b")).await;
    let now = now_ms();
    let agents: Vec<String> = (0..24).map(|i| unique(&format!("agt_b{i}_"))).collect();
    // 1 to 23 messages each, and the last agent more than one batched get's page.
    let sizes: Vec<usize> = (0..agents.len())
        .map(|i| if i + 1 == agents.len() { 300 } else { i + 1 })
        .collect();
    for (i, a) in agents.iter().enumerate() {
        for m in 0..sizes[i] {
            let e = entry(
                a,
                &format!("msg_{i}_{m}"),
                "s@t.example.test",
                now,
                3_600_000,
            );
            assert!(matches!(
                store.enqueue(e).await.expect("enqueue"),
                Enqueued::New { .. }
            ));
        }
    }
    let mut tasks = Vec::new();
    for round in 0..4 {
        for (i, a) in agents.iter().enumerate() {
            let (s, a, want) = (store.clone(), a.clone(), sizes[i]);
            tasks.push(tokio::spawn(async move {
                if round % 2 == 0 {
                    let page = s.fetch(&a, None, 1_000, now).await.expect("fetch");
                    assert_eq!(page.entries.len(), want, "{a}");
                    for e in &page.entries {
                        assert!(e.message_id.starts_with(&format!("msg_{i}_")), "{a}: {e:?}");
                    }
                } else {
                    let c = s.count(&a, now).await.expect("count");
                    assert_eq!(c.count, want as u64, "{a}");
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
    store.close().await.expect("close");
}

/// Enqueue throughput on one local server (not an assertion of speed: printed for the
/// report). `cargo test -p amp-store jetstream_enqueue_rate -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, run by hand"]
async fn jetstream_enqueue_rate() {
    let server = NatsServer::start();
    let store = connect(&server.url(), &unique("p")).await;
    let now = now_ms();
    let n = 5_000;
    for quota in [None, Some(1_000_000)] {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..64 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                // 64 writers over 256 mailboxes.
                for i in (w..n).step_by(64) {
                    let mut e = entry(
                        &format!("agt_rate{}", i % 256),
                        &format!("msg_{i}_{quota:?}"),
                        "s@t.example.test",
                        now,
                        3_600_000,
                    );
                    e.max_queued = quota;
                    s.enqueue(e).await.expect("enqueue");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "quota {quota:?}: {n} enqueues in {secs:.2} s = {:.0}/s",
            n as f64 / secs
        );
    }
}

/// Attachment metadata in the state bucket, and attachment bytes in the object store.
/// A tenant deleted, then every key of every bucket and every message of every stream read:
/// nothing of it is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_operator_tenant_delete_leaves_nothing_in_a_scan() {
    let server = NatsServer::start();
    let prefix = unique("d");
    let store = connect(&server.url(), &prefix).await;
    let (gone, kept) = amp_store::testing::purge::delete_a_tenant_for_a_scan(&store).await;
    // A second process's handle on the same streams and buckets reads them whole.
    let js = JetStreamStore::connect(config(&server.url(), &prefix))
        .await
        .expect("connect again");
    let rows = js.scan_rows().await.expect("scan");
    amp_store::testing::purge::assert_gone(&rows, &gone, &kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_jetstream_attachments_and_object_store() {
    let server = NatsServer::start();
    let prefix = unique("a");
    let store = connect(&server.url(), &prefix).await;
    conformance::attachments_compare_and_set(&store).await;
    let blobs = amp_store::blob::Blobs::new(
        amp_store::jetstream::JetStreamBlobs::connect(&config(&server.url(), &prefix))
            .await
            .expect("object store"),
    );
    amp_store::blob::testing::run_all(&blobs).await;
    // A second process opens the same bucket.
    let again = amp_store::blob::Blobs::new(
        amp_store::jetstream::JetStreamBlobs::connect(&config(&server.url(), &prefix))
            .await
            .expect("object store again"),
    );
    amp_store::blob::testing::run_all(&again).await;
}

/// Usage rows written by two "replicas", summed when read (`operator` runs it alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_operator_usage_rows_sum_replicas() {
    let server = NatsServer::start();
    let store = connect(&server.url(), &unique("usage")).await;
    amp_store::testing::records::operator_usage_rows_sum_replicas(&store).await;
}

/// Held-bytes ledgers of several replicas, summed when read (`operator` runs it alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_operator_held_ledgers_sum_replicas() {
    let server = NatsServer::start();
    let store = connect(&server.url(), &unique("held")).await;
    amp_store::testing::records::operator_held_ledgers_sum_replicas(&store).await;
}

/// Usage rows past their retention deleted by the sweep (`operator` runs it alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_operator_usage_rows_expire_after_retention() {
    let server = NatsServer::start();
    let store = connect(&server.url(), &unique("usage")).await;
    amp_store::testing::records::operator_usage_rows_expire_after_retention(&store).await;
}

/// spec_next 07: agent suspensions (written by one process, read by another) and risk rows on JetStream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_jetstream_suspensions() {
    let server = NatsServer::start();
    let prefix = unique("susp");
    let a = connect(&server.url(), &prefix).await;
    let b = connect(&server.url(), &prefix).await;
    amp_store::testing::suspension::spec_next_suspensions_round_trip(&a).await;
    amp_store::testing::risk::spec_next_risk_rows_summed_over_the_window(&a).await;
    amp_store::testing::quarantine::spec_next_quarantine_held_once_and_decided_once(&a).await;
    amp_store::testing::suspension::spec_next_suspension_seen_by_another_writer(&a, &b).await;
}

/// Read your writes on replicated streams (3 NATS nodes, 3 replicas): what one process wrote
/// and had acknowledged is what another process, connected to another node, reads next, with
/// no retry: an agent by its key, a message in the mailbox listing, an acknowledgement (the
/// message gone from the listing, and an ack from the reader finding what the writer
/// enqueued). Direct gets alone can be answered by a follower that has not applied the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_replicated_reads_see_acknowledged_writes() {
    let nats = amp_testkit::NatsCluster::start(3);
    let urls = nats.urls();
    let prefix = unique("ryw");
    let on = |i: usize| {
        let mut c = config(&urls[i], &prefix);
        c.replicas = 3;
        c
    };
    let writer = Store::new(JetStreamStore::connect(on(0)).await.expect("writer"));
    let reader = Store::new(JetStreamStore::connect(on(1)).await.expect("reader"));
    let now = now_ms();
    let owner = agent("ryw", "owner", now);
    writer
        .create_agent(owner.clone(), key_hash("ryw-owner"), now)
        .await
        .expect("owner");
    let mut stale = Vec::new();
    for i in 0..150 {
        let a = agent("ryw", &format!("a{i}"), now);
        let key = key_hash(&format!("ryw-key-{i}"));
        writer
            .create_agent(a.clone(), key, now)
            .await
            .expect("create");
        if reader.agent_by_api_key(&key).await.expect("read").is_none() {
            stale.push(format!("{i}: a new agent's key not found"));
        }
        let id = format!("m{i}");
        writer
            .enqueue(entry(&owner.id, &id, "sender", now, 3_600_000))
            .await
            .expect("enqueue");
        let page = reader
            .fetch(&owner.id, None, 1_000, now)
            .await
            .expect("fetch");
        if !page.entries.iter().any(|e| e.message_id == id) {
            stale.push(format!("{i}: an enqueued message missing from the listing"));
        }
        // Every other message acked by the writer (then gone for the reader), the others by
        // the reader (which must find them).
        let acker = if i % 2 == 0 { &writer } else { &reader };
        let out = acker
            .ack(&owner.id, std::slice::from_ref(&id), now)
            .await
            .expect("ack");
        let outcomes: Vec<AckOutcome> = out.iter().map(|a| a.outcome).collect();
        if outcomes != [AckOutcome::Acked] {
            stale.push(format!("{i}: ack answered {out:?}"));
        }
        let page = reader
            .fetch(&owner.id, None, 1_000, now)
            .await
            .expect("fetch");
        if page.entries.iter().any(|e| e.message_id == id) {
            stale.push(format!("{i}: an acknowledged message still listed"));
        }
    }
    assert!(stale.is_empty(), "{} stale reads: {stale:#?}", stale.len());
}

/// Mailboxes spread over three streams: the whole suite, with two writer processes, and the
/// mailboxes really are in more than one stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_mailbox_partitions_pass_conformance() {
    let server = NatsServer::start();
    let prefix = unique("mp");
    let partitioned = |prefix: &str| JetStreamStoreConfig {
        mailbox_partitions: Some(3),
        ..config(&server.url(), prefix)
    };
    let open = |c: JetStreamStoreConfig| async move {
        Store::new(JetStreamStore::connect(c).await.expect("connect"))
    };
    let a = open(partitioned(&prefix)).await;
    conformance::run_all(&a).await;
    let b = open(partitioned(&prefix)).await;
    conformance::run_two_writers(&a, &b).await;

    // Twenty agents' mailboxes land in all three streams, and each reads back whole.
    let direct = JetStreamStore::connect(partitioned(&prefix))
        .await
        .expect("connect");
    let mut agents = Vec::new();
    for i in 0..20 {
        let id = unique(&format!("agt_{i}_"));
        direct
            .enqueue(entry(
                &id,
                &format!("m{i}"),
                "s@t.example.test",
                now_ms(),
                3_600_000,
            ))
            .await
            .expect("enqueue");
        agents.push(id);
    }
    let rows = direct.scan_rows().await.expect("scan");
    let mut streams: Vec<&str> = rows
        .iter()
        .filter(|r| agents.iter().any(|a| r.key.contains(a.as_str())))
        .map(|r| r.table.as_str())
        .collect();
    streams.sort_unstable();
    streams.dedup();
    assert_eq!(streams.len(), 3, "mailboxes in {streams:?}");
    for (i, id) in agents.iter().enumerate() {
        let page = direct.fetch(id, None, 10, now_ms()).await.expect("fetch");
        assert_eq!(page.entries.len(), 1, "{id}");
        assert_eq!(page.entries[0].message_id, format!("m{i}"));
    }
}

/// The number of mailbox streams is the store's from its creation: another is refused (and
/// a store from before partitions, which has `AMP_MAILBOX` and nothing recorded, has one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_mailbox_partitions_are_fixed_when_the_store_is_created() {
    let server = NatsServer::start();
    let with = |prefix: &str, n: Option<usize>| JetStreamStoreConfig {
        mailbox_partitions: n,
        ..config(&server.url(), prefix)
    };
    let prefix = unique("fx");
    JetStreamStore::connect(with(&prefix, Some(3)))
        .await
        .expect("created with 3");
    let unset = JetStreamStore::connect(with(&prefix, None))
        .await
        .expect("unset: the store's");
    assert_eq!(unset.mailbox_partitions(), 3);
    let fresh = JetStreamStore::connect(with(&unique("new"), None))
        .await
        .expect("a new store, unset");
    assert_eq!(
        fresh.mailbox_partitions(),
        amp_store::jetstream::DEFAULT_MAILBOX_PARTITIONS
    );
    let refused = JetStreamStore::connect(with(&prefix, Some(2)))
        .await
        .expect_err("2 against 3");
    assert!(
        refused
            .to_string()
            .contains("created with 3; it cannot change: set mailbox_partitions = 3"),
        "{refused}"
    );

    // A store of the first layout: its mailbox stream exists, nothing is recorded.
    let old = unique("old");
    JetStreamStore::connect(with(&old, Some(1)))
        .await
        .expect("one");
    let nats = async_nats::connect(server.url()).await.expect("nats");
    let js = async_nats::jetstream::new(nats);
    let index = js
        .get_key_value(format!("{old}_amp_mailbox_index"))
        .await
        .expect("index bucket");
    index
        .purge("layout.mailbox_partitions")
        .await
        .expect("forget the layout");
    let refused = JetStreamStore::connect(with(&old, Some(4)))
        .await
        .expect_err("4 against a store of one stream");
    assert!(refused.to_string().contains("created with 1"), "{refused}");
    JetStreamStore::connect(with(&old, Some(1)))
        .await
        .expect("one still opens it");
    let unset = JetStreamStore::connect(with(&old, None))
        .await
        .expect("unset opens it too");
    assert_eq!(unset.mailbox_partitions(), 1);
}
