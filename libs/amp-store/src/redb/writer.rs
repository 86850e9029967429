//! Group commit: one writer thread applies many operations in one redb write transaction and
//! one fsync, then answers each. An answer is never sent before its commit.
//!
//! A storage failure (a full disk, a failed fsync) poisons redb's file handle for good, so
//! the writer closes the database ([`Shared`] holds it) and reopens it with backoff, proving
//! each reopen with a probe write that needs free space; meanwhile writes fail at once and
//! reads and readiness report the store unavailable. Reopening recovers the last commit:
//! nothing acknowledged is lost, and a failed fsync is never retried on the same handle.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ::redb::{Database, Durability, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use crate::embedded::{self, Completion};
use crate::{Error, Result};

/// The open database, shared by readers and the writer, and whether it can be written.
pub(crate) struct Shared {
    db: parking_lot::RwLock<Option<Arc<Database>>>,
    writable: AtomicBool,
    path: PathBuf,
}

impl Shared {
    pub(crate) fn new(db: Database, path: PathBuf) -> Self {
        Self {
            db: parking_lot::RwLock::new(Some(Arc::new(db))),
            writable: AtomicBool::new(true),
            path,
        }
    }

    /// The database, unless it is being reopened after a storage failure.
    pub(crate) fn current(&self) -> Result<Arc<Database>> {
        self.db
            .read()
            .clone()
            .ok_or_else(|| Error::Unavailable("store is recovering from a storage failure".into()))
    }

    /// Whether writes can commit (false from a storage failure until a reopen proves it).
    pub(crate) fn writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    /// Closes the database after a storage failure: its handle is poisoned.
    fn fail(&self, cause: &str) {
        if self.writable.swap(false, Ordering::AcqRel) {
            metrics::counter!("amp_store_write_failures_total").increment(1);
            tracing::error!(error = %cause, "store: write failed; closing the database to reopen it");
        }
        drop(self.db.write().take());
    }

    /// One reopen attempt: open the file (redb recovers the last commit) and prove that a
    /// write needing new space commits.
    fn reopen(&self) -> std::result::Result<(), String> {
        const PROBE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
        const KEY: &str = "\u{0}amp-store-write-probe";
        if self.db.read().is_none() {
            let db = Database::create(&self.path).map_err(|e| e.to_string())?;
            *self.db.write() = Some(Arc::new(db));
        }
        let db = self.current().map_err(|e| e.to_string())?;
        let probe = || -> std::result::Result<(), String> {
            let e = |e: &dyn std::fmt::Display| e.to_string();
            let txn = db.begin_write().map_err(|x| e(&x))?;
            txn.open_table(PROBE)
                .map_err(|x| e(&x))?
                .insert(KEY, vec![0u8; 64 * 1024].as_slice())
                .map_err(|x| e(&x))?;
            txn.commit().map_err(|x| e(&x))?;
            let txn = db.begin_write().map_err(|x| e(&x))?;
            txn.open_table(PROBE)
                .map_err(|x| e(&x))?
                .remove(KEY)
                .map_err(|x| e(&x))?;
            txn.commit().map_err(|x| e(&x))
        };
        if let Err(cause) = probe() {
            drop(db);
            drop(self.db.write().take());
            return Err(cause);
        }
        self.writable.store(true, Ordering::Release);
        tracing::info!("store: reopened after a storage failure; writes resume");
        Ok(())
    }
}

/// Backoff between reopen attempts.
const REOPEN_FIRST: Duration = Duration::from_millis(100);
const REOPEN_MAX: Duration = Duration::from_secs(2);

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
        db: Arc<Shared>,
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
        let op: Op = Box::new(move |txn| embedded::settle(f(txn), reply));
        embedded::submit(&self.tx, op, answer).await
    }

    /// Stops accepting writes, lets the queued ones commit, and joins the thread.
    pub(crate) fn close(&self) {
        drop(self.tx.lock().take());
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared, rx: &mpsc::Receiver<Op>, max_batch: usize, quick_repair: bool) {
    let mut backoff = REOPEN_FIRST;
    let mut next_reopen = Instant::now();
    loop {
        // While the store cannot write, wake up to reopen it even when no write comes.
        let first = if shared.writable() {
            match rx.recv() {
                Ok(op) => op,
                Err(_) => return,
            }
        } else {
            let wait = next_reopen.saturating_duration_since(Instant::now());
            let got = rx.recv_timeout(wait);
            if Instant::now() >= next_reopen {
                match shared.reopen() {
                    Ok(()) => backoff = REOPEN_FIRST,
                    Err(cause) => {
                        tracing::warn!(error = %cause, retry_ms = backoff.as_millis() as u64, "store: cannot reopen yet");
                        next_reopen = Instant::now() + backoff;
                        backoff = (backoff * 2).min(REOPEN_MAX);
                    }
                }
            }
            match got {
                Ok(op) => op,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        };
        let ops = embedded::take_batch(first, rx, max_batch);
        let n = ops.len();
        let db = match shared.current() {
            Ok(db) if shared.writable() => db,
            // Failing fast while the store recovers: dropping an operation drops its reply
            // channel, and its caller gets `Unavailable` at once.
            _ => {
                drop(ops);
                continue;
            }
        };
        let t0 = Instant::now();
        let mut txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                drop(db);
                shared.fail(&e.to_string());
                next_reopen = Instant::now() + REOPEN_FIRST;
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
                // The handle may be poisoned (redb refuses every later I/O on it): it is
                // closed and reopened, never retried.
                let cause = e.to_string();
                shared.fail(&cause);
                next_reopen = Instant::now() + REOPEN_FIRST;
                cause
            })
        };
        drop(db);
        embedded::answer(t0.elapsed(), completions, &outcome);
    }
}
