//! What the two embedded engines' backends ([`crate::redb`], [`crate::fjall`]) share: the
//! error and JSON conversions of their rows, and the plumbing of their single group-commit
//! writer thread (an operation's answer, its submission, a batch taken off the queue, the
//! batch's answers). Each engine keeps its own transaction, commit and recovery.

use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::{Error, Result};

/// A storage error, which the caller may retry (503).
pub(crate) fn st<E: std::fmt::Display>(e: E) -> Error {
    Error::Unavailable(e.to_string())
}

/// JSON of a value.
pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Corrupt(e.to_string()))
}

/// A value from its JSON.
///
/// Fails when the bytes do not parse ([`Error::Corrupt`]).
pub(crate) fn from_json<T: for<'a> Deserialize<'a>>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt(e.to_string()))
}

/// An acknowledgement that found an id still queued in the index but no row at its
/// position (never written so; what `entry` calls absent): it is told `NotFound`, nothing is
/// written, and this is logged, rather than failing the whole group-commit batch.
pub(crate) fn queued_id_without_row(agent_id: &str, id: &str, seq: u64) -> crate::Acked {
    tracing::warn!(
        agent = %agent_id,
        id = %id,
        seq,
        "store: a queued id without its mailbox row; not acknowledged"
    );
    crate::Acked::not_found()
}

/// What the writer calls once the batch of an operation committed (`Ok`) or did not (the
/// cause).
pub(crate) type Completion = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

/// The end of an operation inside the writer: whether its result `r` is fatal (a storage
/// error, so the batch must not commit), and the completion that answers `reply` with `r`
/// once the batch committed, or with [`Error::Unavailable`] when it did not.
pub(crate) fn settle<R: Send + 'static>(
    r: Result<R>,
    reply: oneshot::Sender<Result<R>>,
) -> (bool, Completion) {
    let fatal = matches!(r, Err(Error::Unavailable(_) | Error::Corrupt(_)));
    let completion: Completion = Box::new(move |committed| {
        let out = match committed {
            Ok(()) => r,
            Err(e) => Err(Error::Unavailable(e)),
        };
        let _ = reply.send(out);
    });
    (fatal, completion)
}

/// Queues `op` for the writer thread behind `tx` (none once closed) and waits for its
/// answer.
///
/// Fails with [`Error::Unavailable`] when the store is closed or its writer stopped.
pub(crate) async fn submit<Op, R>(
    tx: &parking_lot::Mutex<Option<mpsc::Sender<Op>>>,
    op: Op,
    answer: oneshot::Receiver<Result<R>>,
) -> Result<R> {
    {
        let guard = tx.lock();
        let tx = guard
            .as_ref()
            .ok_or_else(|| Error::Unavailable("store is closed".into()))?;
        tx.send(op)
            .map_err(|_| Error::Unavailable("store writer stopped".into()))?;
    }
    answer
        .await
        .map_err(|_| Error::Unavailable("store writer stopped".into()))?
}

/// One batch: `first` and what else is queued already, at most `max_batch`.
pub(crate) fn take_batch<Op>(first: Op, rx: &mpsc::Receiver<Op>, max_batch: usize) -> Vec<Op> {
    let mut ops = Vec::with_capacity(16);
    ops.push(first);
    while ops.len() < max_batch {
        match rx.try_recv() {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// Answers a batch (one completion per operation) with its outcome, and counts it
/// (`amp_store_commit_batch_size`, `amp_store_commits_total`, and the time from applying the
/// batch's first operation to the end of its commit, `amp_store_commit_seconds`).
pub(crate) fn answer(
    took: std::time::Duration,
    completions: Vec<Completion>,
    outcome: &std::result::Result<(), String>,
) {
    metrics::histogram!("amp_store_commit_batch_size").record(completions.len() as f64);
    metrics::histogram!("amp_store_commit_seconds").record(took.as_secs_f64());
    metrics::counter!("amp_store_commits_total").increment(1);
    for c in completions {
        c(outcome.clone());
    }
}
