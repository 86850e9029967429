//! The bodies of the tests both embedded backends run, each under its own names (redb's in
//! `main`, fjall's in `fjall`): what is only about embedded stores (a scan of every row,
//! the listing's reads of name rows, attachment bytes in a directory).

use std::path::Path;

use amp_store::testing::conformance;
use amp_store::{ScannedRow, Store};

/// A tenant deleted, then every row of every table read: nothing of it is left. `open`
/// opens the store in `dir`; `scan` opens it and reads every row.
pub(crate) async fn tenant_delete_leaves_nothing_in_a_scan(
    dir: &Path,
    open: fn(&Path) -> Store,
    scan: fn(&Path) -> Vec<ScannedRow>,
) {
    let rows_before = scan(dir).len();
    let store = open(dir);
    let (gone, kept) = amp_store::testing::purge::delete_a_tenant_for_a_scan(&store).await;
    store.close().await.expect("close");
    drop(store);
    let rows = scan(dir);
    assert!(rows.len() > rows_before);
    amp_store::testing::purge::assert_gone(&rows, &gone, &kept);
}

/// Issue 16: a listing page reads the page's agent records, not the tenant's; an embedded
/// store reads only the page's name rows too (a key range from the cursor), and the total
/// is one row, kept with the names.
pub(crate) async fn list_agents_reads_only_the_page(store: &Store) {
    conformance::security_list_agents_reads_the_page_not_the_tenant(store).await;

    let now = amp_store::testing::now_ms();
    let t = amp_store::testing::unique("t");
    for i in 0..300 {
        let a = amp_store::testing::agent(&t, &format!("n{i:04}"), now);
        let key = amp_store::testing::key_hash(&a.id);
        store.create_agent(a, key, now).await.expect("create");
    }
    for after in [None, Some("n0150"), Some("n0295")] {
        let (res, cost) =
            amp_store::list_cost::measure(store.list_agents(&t, None, after, 10)).await;
        let (page, total) = res.expect("list");
        assert_eq!(total, 300);
        assert!(!page.is_empty());
        assert!(
            cost.names <= 10 && cost.records <= 10,
            "a page of 10 after {after:?} read {cost:?} in a tenant of 300"
        );
    }
}

/// Attachment metadata in the store, and attachment bytes in a directory of `dir`.
pub(crate) async fn attachments_and_fs_blobs(store: &Store, dir: &Path) {
    conformance::attachments_compare_and_set(store).await;
    let blobs = amp_store::blob::Blobs::new(
        amp_store::blob::FsBlobs::open(&dir.join("blobs")).expect("blob dir"),
    );
    amp_store::blob::testing::run_all(&blobs).await;
}

/// spec-next 07: agent suspensions, risk rows and the quarantine (also in the conformance
/// run).
pub(crate) async fn suspensions(store: &Store) {
    amp_store::testing::suspension::spec_next_suspensions_round_trip(store).await;
    amp_store::testing::risk::spec_next_risk_rows_summed_over_the_window(store).await;
    amp_store::testing::quarantine::spec_next_quarantine_held_once_and_decided_once(store).await;
    amp_store::testing::suspension::spec_next_suspension_seen_by_another_writer(store, store).await;
}
