//! The embedded (redb) backend against the conformance suite, across reopen, and across a
//! kill -9 of a process that was writing; the JetStream backend (`jetstream`) against a real
//! nats-server.

mod cql;
mod cql_cost;
mod cql_tls;
mod crash;
mod jetstream;

use amp_store::Store;
use amp_store::redb::{RedbConfig, RedbStore};
use amp_store::testing::conformance;

fn open(dir: &std::path::Path) -> Store {
    Store::new(RedbStore::open(&RedbConfig::in_dir(dir)).expect("open redb"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_passes_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    conformance::run_all(&store).await;
    store.close().await.expect("close");
}

/// A tenant deleted, then every row of every table read: nothing of it is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_operator_tenant_delete_leaves_nothing_in_a_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redb = RedbStore::open(&RedbConfig::in_dir(dir.path())).expect("open redb");
    let rows_before = redb.scan_rows().expect("scan").len();
    let store = Store::new(redb);
    let (gone, kept) = amp_store::testing::purge::delete_a_tenant_for_a_scan(&store).await;
    store.close().await.expect("close");
    drop(store);
    let redb = RedbStore::open(&RedbConfig::in_dir(dir.path())).expect("reopen redb");
    let rows = redb.scan_rows().expect("scan");
    assert!(rows.len() > rows_before);
    amp_store::testing::purge::assert_gone(&rows, &gone, &kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_without_group_commit_passes_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = RedbConfig {
        group_commit: false,
        ..RedbConfig::in_dir(dir.path())
    };
    let store = Store::new(RedbStore::open(&cfg).expect("open"));
    conformance::run_all(&store).await;
}

/// Usage rows written by two "replicas", summed when read (`operator` runs it alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_operator_usage_rows_sum_replicas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    amp_store::testing::records::operator_usage_rows_sum_replicas(&store).await;
    store.close().await.expect("close");
}

/// redb serialises every write in one process: the same store twice is the two-writer case.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_passes_two_writer_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    conformance::run_two_writers(&store, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_durable_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::durable_across_reopen(|| open(dir.path())).await;
}

/// One backend per concern: the registry in one database, everything else in another. The
/// whole suite passes, deregistration included (it must delete the mailbox in the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn composed_store_passes_conformance() {
    let (a, b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let registry: std::sync::Arc<dyn amp_store::StoreBackend> =
        std::sync::Arc::new(RedbStore::open(&RedbConfig::in_dir(a.path())).expect("open a"));
    let rest: std::sync::Arc<dyn amp_store::StoreBackend> =
        std::sync::Arc::new(RedbStore::open(&RedbConfig::in_dir(b.path())).expect("open b"));
    let store = Store::new(amp_store::Composed::new(rest).with_registry(registry));
    conformance::run_all(&store).await;
    conformance::run_two_writers(&store, &store).await;
    store.close().await.expect("close");
}

/// Attachment metadata on redb, and attachment bytes in a directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_redb_attachments_and_fs_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    conformance::attachments_compare_and_set(&store).await;
    let blobs = amp_store::blob::Blobs::new(
        amp_store::blob::FsBlobs::open(&dir.path().join("blobs")).expect("blob dir"),
    );
    amp_store::blob::testing::run_all(&blobs).await;
}
