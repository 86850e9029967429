//! The embedded fjall backend against the conformance suite (and the spec-next suites the
//! redb backend runs), across reopen, and next to redb in a composed store; its kill -9
//! test is in `crash`.

use amp_store::Store;
use amp_store::fjall::{FjallConfig, FjallStore};
use amp_store::testing::conformance;

use crate::embedded;

/// The store in `dir`.
pub(crate) fn open(dir: &std::path::Path) -> Store {
    Store::new(FjallStore::open(&FjallConfig::in_dir(dir)).expect("open fjall"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fjall_passes_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    conformance::run_all(&store).await;
    store.close().await.expect("close");
}

/// The key revocation list alone (also in the suite): `cargo test spec_next` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_spec_next_revocation_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    amp_store::testing::revocation::spec_next_revocation_list(&store).await;
    store.close().await.expect("close");
}

/// The quarantine's periodic purge alone (also in the suite): `cargo test quarantine`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_spec_next_quarantine_purge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    amp_store::testing::quarantine::spec_next_quarantine_purge_deletes_expired_entries(&store)
        .await;
    store.close().await.expect("close");
}

/// A tenant deleted, then every row of every keyspace read: nothing of it is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_operator_tenant_delete_leaves_nothing_in_a_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    embedded::tenant_delete_leaves_nothing_in_a_scan(dir.path(), open, |d| {
        let fjall = FjallStore::open(&FjallConfig::in_dir(d)).expect("open fjall");
        fjall.scan_rows().expect("scan")
    })
    .await;
}

/// Issue 16: a listing page reads the page's agent records, not the tenant's; on fjall, as
/// on redb, it reads only the page's name rows too (a key range from the cursor), and the
/// total is one row, kept with the names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_security_list_agents_reads_only_the_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    embedded::list_agents_reads_only_the_page(&open(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fjall_without_group_commit_passes_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = FjallConfig {
        group_commit: false,
        ..FjallConfig::in_dir(dir.path())
    };
    let store = Store::new(FjallStore::open(&cfg).expect("open"));
    conformance::run_all(&store).await;
}

/// Usage rows written by two "replicas", summed when read (`operator` runs it alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_operator_usage_rows_sum_replicas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    amp_store::testing::records::operator_usage_rows_sum_replicas(&store).await;
    store.close().await.expect("close");
}

/// Held-bytes ledgers of several replicas, summed when read (`operator` runs it alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_operator_held_ledgers_sum_replicas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    amp_store::testing::records::operator_held_ledgers_sum_replicas(&store).await;
    store.close().await.expect("close");
}

/// Usage rows past their retention deleted by the sweep (`operator` runs it alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_operator_usage_rows_expire_after_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    amp_store::testing::records::operator_usage_rows_expire_after_retention(&store).await;
    store.close().await.expect("close");
}

/// One writer thread serialises every write in one process: the same store twice is the
/// two-writer case.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fjall_passes_two_writer_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    conformance::run_two_writers(&store, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_durable_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::durable_across_reopen(|| open(dir.path())).await;
}

/// A second open of a data directory in use fails (fjall's lock file), as redb's does: two
/// processes never share one embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_refuses_a_second_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    assert!(FjallStore::open(&FjallConfig::in_dir(dir.path())).is_err());
    store.close().await.expect("close");
    drop(store);
    let again = open(dir.path());
    assert!(again.ready().await);
}

/// The registry on redb, everything else on fjall: the whole suite passes, deregistration
/// included (it must delete the mailbox in the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fjall_composed_with_redb_passes_conformance() {
    let (a, b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let registry: std::sync::Arc<dyn amp_store::StoreBackend> = std::sync::Arc::new(
        amp_store::redb::RedbStore::open(&amp_store::redb::RedbConfig::in_dir(a.path()))
            .expect("open redb"),
    );
    let rest: std::sync::Arc<dyn amp_store::StoreBackend> =
        std::sync::Arc::new(FjallStore::open(&FjallConfig::in_dir(b.path())).expect("open b"));
    let store = Store::new(amp_store::Composed::new(rest).with_registry(registry));
    conformance::run_all(&store).await;
    conformance::run_two_writers(&store, &store).await;
    store.close().await.expect("close");
}

/// Attachment metadata on fjall, and attachment bytes in a directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_spec_next_attachments_and_fs_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    embedded::attachments_and_fs_blobs(&open(dir.path()), dir.path()).await;
}

/// spec_next 07: agent suspensions and risk rows on fjall (also in the conformance run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_spec_next_suspensions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    embedded::suspensions(&store).await;
    store.close().await.expect("close");
}

use amp_testkit::tmpfs::Tmpfs;

/// The writer's storage-fault contract (as redb's): on a full disk a write fails with
/// `Unavailable`, the store turns unready and refuses writes at once and stays so while the
/// disk is full; when space returns it reopens by itself, and every acknowledged write is
/// still there, after a reopen too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_disk_full_fails_fast_turns_unready_and_recovers() {
    use amp_store::testing::{agent, entry, key_hash, now_ms};
    use std::time::{Duration, Instant};

    let fs = Tmpfs::mount("8m");
    let store = open(fs.path());
    let now = now_ms();
    let a = agent(&amp_store::testing::unique("t"), "full", now);
    store
        .create_agent(a.clone(), key_hash(&a.id), now)
        .await
        .expect("create");
    let filler = noise(50_000);
    let mut acked = Vec::new();
    loop {
        assert!(
            acked.len() < 1_000,
            "an 8 MB disk took 1,000 messages of 50 KB"
        );
        let id = format!("msg_{}_full", acked.len());
        let mut e = entry(&a.id, &id, "s@t.example.test", now, 86_400_000);
        e.data = format!("{} {filler}", acked.len());
        match store.enqueue(e).await {
            Ok(_) => acked.push(id),
            Err(amp_store::Error::Unavailable(_)) => break,
            Err(other) => panic!("a full disk failed a write with {other:?}"),
        }
    }
    assert!(
        !acked.is_empty(),
        "nothing was written before the disk filled"
    );
    assert!(!store.ready().await, "ready with a full disk");
    for i in 0..5 {
        let started = Instant::now();
        let r = store
            .enqueue(entry(
                &a.id,
                &format!("msg_{i}_late"),
                "s@t",
                now,
                86_400_000,
            ))
            .await;
        assert!(matches!(r, Err(amp_store::Error::Unavailable(_))), "{r:?}");
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "a refusal while full took {:?}",
            started.elapsed()
        );
    }

    // Still full: the reopen attempts (backing off from 100 ms) find no room for their probe,
    // though a reopen frees what the failed commit half wrote.
    let full_since = Instant::now();
    while full_since.elapsed() < Duration::from_secs(3) {
        assert!(!store.ready().await, "ready again on a full disk");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    fs.resize("64m");
    let started = Instant::now();
    while !store.ready().await {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the store did not reopen after space returned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store
        .enqueue(entry(&a.id, "msg_after_full", "s@t", now, 86_400_000))
        .await
        .expect("a write after the reopen");
    acked.push("msg_after_full".into());
    let ids = stored_ids(&store, &a.id, now).await;
    let missing: Vec<_> = acked.iter().filter(|id| !ids.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    store.close().await.expect("close");
    drop(store);
    let ids = stored_ids(&open(fs.path()), &a.id, now).await;
    let missing: Vec<_> = acked.iter().filter(|id| !ids.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes lost after a reopen: {missing:?}"
    );
}

/// The ids queued in `agent_id`'s mailbox.
async fn stored_ids(store: &Store, agent_id: &str, now: amp_store::Millis) -> Vec<String> {
    let page = store
        .fetch(agent_id, None, 2_000, now)
        .await
        .expect("fetch");
    page.entries.into_iter().map(|e| e.message_id).collect()
}

/// `n` characters that do not compress (fjall's journal compresses what it writes).
fn noise(n: usize) -> String {
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}
