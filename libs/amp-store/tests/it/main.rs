//! The embedded (redb) backend against the conformance suite, across reopen, and across a
//! kill -9 of a process that was writing; the embedded fjall backend the same (`fjall`,
//! `crash`); the JetStream backend (`jetstream`) against a real nats-server; a redb store
//! copied onto fjall (`migrate`).

mod cql;
mod cql_cost;
mod cql_tls;
mod crash;
mod embedded;
mod fjall;
mod jetstream;
mod migrate;
mod s3;

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

/// The key revocation list alone (also in the suite): `cargo test spec_next` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_spec_next_revocation_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    amp_store::testing::revocation::spec_next_revocation_list(&store).await;
    store.close().await.expect("close");
}

/// The quarantine's periodic purge alone (also in the suite): `cargo test quarantine`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_spec_next_quarantine_purge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    amp_store::testing::quarantine::spec_next_quarantine_purge_deletes_expired_entries(&store)
        .await;
    store.close().await.expect("close");
}

/// A tenant deleted, then every row of every table read: nothing of it is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_operator_tenant_delete_leaves_nothing_in_a_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    embedded::tenant_delete_leaves_nothing_in_a_scan(dir.path(), open, |d| {
        let redb = RedbStore::open(&RedbConfig::in_dir(d)).expect("open redb");
        redb.scan_rows().expect("scan")
    })
    .await;
}

/// Issue 16: a listing page reads the page's agent records, not the tenant's; on redb it
/// reads only the page's name rows too (a key range from the cursor), and the total is one
/// row, kept with the names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_security_list_agents_reads_only_the_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    embedded::list_agents_reads_only_the_page(&open(dir.path())).await;
}

/// A database written before the per-tenant counts existed gets them counted on open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_security_listing_totals_are_counted_for_an_older_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = amp_store::testing::now_ms();
    let t = amp_store::testing::unique("t");
    {
        let store = open(dir.path());
        for name in ["a", "b", "c"] {
            let a = amp_store::testing::agent(&t, name, now);
            let key = amp_store::testing::key_hash(&a.id);
            store.create_agent(a, key, now).await.expect("create");
        }
        store.close().await.expect("close");
    }
    // What an older version left: the names, no counts.
    {
        let db = redb::Database::create(RedbConfig::in_dir(dir.path()).path).expect("raw open");
        let txn = db.begin_write().expect("write");
        let gone = txn
            .delete_table(redb::TableDefinition::<&str, u64>::new("tenant_active"))
            .expect("delete the counts");
        assert!(gone, "the counts table exists");
        txn.commit().expect("commit");
    }
    let store = open(dir.path());
    let (page, total) = store.list_agents(&t, None, None, 10).await.expect("list");
    assert_eq!((page.len(), total), (3, 3));
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

/// Held-bytes ledgers of several replicas, summed when read (`operator` runs it alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_operator_held_ledgers_sum_replicas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    amp_store::testing::records::operator_held_ledgers_sum_replicas(&store).await;
    store.close().await.expect("close");
}

/// Usage rows past their retention deleted by the sweep (`operator` runs it alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_operator_usage_rows_expire_after_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    amp_store::testing::records::operator_usage_rows_expire_after_retention(&store).await;
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
    embedded::attachments_and_fs_blobs(&open(dir.path()), dir.path()).await;
}

/// spec_next 07: agent suspensions and risk rows on the embedded store (also in the conformance run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_redb_suspensions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    embedded::suspensions(&store).await;
    store.close().await.expect("close");
}
