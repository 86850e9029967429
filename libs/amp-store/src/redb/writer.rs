//! Group commit: one writer thread applies many operations in one redb write transaction and
//! one fsync, then answers each. An answer is never sent before its commit.

use std::sync::Arc;
use std::sync::mpsc;

use ::redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use crate::{Error, Result};

/// Called once the batch an operation was in is committed (or failed).
type Completion = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;
/// An operation: applies its writes, reports whether it failed fatally (storage error, so the
/// batch must not commit), and returns its completion.
type Op = Box<dyn FnOnce(&WriteTransaction) -> (bool, Completion) + Send>;

/// The sending side of the writer thread.
pub(crate) struct Writer {
    tx: parking_lot::Mutex<Option<mpsc::Sender<Op>>>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread. With `group_commit` off every operation gets its own
    /// transaction and fsync (for comparison in benchmarks).
    pub(crate) fn start(
        db: Arc<Database>,
        group_commit: bool,
        max_batch: usize,
        quick_repair: bool,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Op>();
        let max_batch = if group_commit { max_batch.max(1) } else { 1 };
        let thread = std::thread::Builder::new()
            .name("amp-store-writer".into())
            .spawn(move || run(&db, &rx, max_batch, quick_repair))
            .ok();
        Self {
            tx: parking_lot::Mutex::new(Some(tx)),
            thread: parking_lot::Mutex::new(thread),
        }
    }

    /// Runs `f` inside a write transaction and waits for the commit.
    ///
    /// `f` must check before it writes: when it returns a logic error ([`Error::NameTaken`],
    /// [`Error::NotFound`]) it must not have written anything, because the batch still
    /// commits. A storage error ([`Error::Unavailable`], [`Error::Corrupt`]) aborts the whole
    /// batch and every operation in it fails.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op: Op = Box::new(move |txn| {
            let r = f(txn);
            let fatal = matches!(r, Err(Error::Unavailable(_) | Error::Corrupt(_)));
            let completion: Completion = Box::new(move |committed| {
                let out = match committed {
                    Ok(()) => r,
                    Err(e) => Err(Error::Unavailable(e)),
                };
                let _ = reply.send(out);
            });
            (fatal, completion)
        });
        {
            let guard = self.tx.lock();
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

    /// Stops accepting writes, lets the queued ones commit, and joins the thread.
    pub(crate) fn close(&self) {
        drop(self.tx.lock().take());
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

fn run(db: &Database, rx: &mpsc::Receiver<Op>, max_batch: usize, quick_repair: bool) {
    while let Ok(first) = rx.recv() {
        let mut ops = Vec::with_capacity(16);
        ops.push(first);
        while ops.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let n = ops.len();
        let mut txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "store: cannot begin write transaction");
                // Dropping an operation drops its reply channel: its caller gets `Unavailable`.
                drop(ops);
                continue;
            }
        };
        txn.set_durability(Durability::Immediate);
        txn.set_quick_repair(quick_repair);
        let mut completions = Vec::with_capacity(n);
        let mut fatal = false;
        for op in ops {
            let (f, c) = op(&txn);
            fatal |= f;
            completions.push(c);
        }
        let outcome = if fatal {
            let _ = txn.abort();
            Err("write batch aborted after a storage error".to_owned())
        } else {
            txn.commit().map_err(|e| {
                tracing::error!(error = %e, "store: commit failed");
                e.to_string()
            })
        };
        metrics::histogram!("amp_store_commit_batch_size").record(n as f64);
        metrics::counter!("amp_store_commits_total").increment(1);
        for c in completions {
            c(outcome.clone());
        }
    }
}
