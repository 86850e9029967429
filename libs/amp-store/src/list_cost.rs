//! What one [`Registry::list_agents`](crate::Registry::list_agents) call reads, counted per
//! task so a test can assert that a page costs the page and not the tenant (issue 16: a
//! listing used to decode every agent of the tenant per call).
//!
//! Backends call [`names`] and [`records`] as they read. Each also counts into the metric
//! `amp_store_list_agents_rows_read_total{kind="names"|"records"}` (so an operator, and a
//! test against the built binary, can see what listings cost); inside a [`measure`] scope
//! the calling task's own reads are counted too.

use std::cell::Cell;
use std::future::Future;

/// The rows a listing read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ListCost {
    /// Name-index rows read (one per name of the tenant the backend looked at).
    pub names: u64,
    /// Agent records read and decoded.
    pub records: u64,
}

tokio::task_local! {
    static COST: Cell<ListCost>;
}

/// Counts `n` name-index rows read by the current listing.
pub(crate) fn names(n: u64) {
    metrics::counter!("amp_store_list_agents_rows_read_total", "kind" => "names").increment(n);
    let _ = COST.try_with(|c| {
        let mut v = c.get();
        v.names += n;
        c.set(v);
    });
}

/// Counts `n` agent records read by the current listing.
pub(crate) fn records(n: u64) {
    metrics::counter!("amp_store_list_agents_rows_read_total", "kind" => "records").increment(n);
    let _ = COST.try_with(|c| {
        let mut v = c.get();
        v.records += n;
        c.set(v);
    });
}

/// Runs `f` and returns its output with what the listings it awaited read. Only reads done
/// on the calling task count, which is where every backend's `list_agents` reads.
pub async fn measure<F: Future>(f: F) -> (F::Output, ListCost) {
    COST.scope(Cell::new(ListCost::default()), async move {
        let out = f.await;
        (out, COST.with(Cell::get))
    })
    .await
}
