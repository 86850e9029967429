//! Group commit: one writer thread applies many operations in one fjall write transaction
//! (read-your-writes, like redb's) and one journal `fdatasync`, then answers each. An answer
//! is never sent before its commit.
//!
//! A storage failure (a full disk, a failed fsync) poisons fjall's database for good (it
//! refuses every later write), so the writer closes the database ([`Shared`] holds it) and a
//! reopener thread reopens it with backoff, proving each reopen with a probe write that needs
//! free space; meanwhile the writer refuses writes at once (a reopen attempt, which opens
//! every keyspace and syncs the probe, never holds them up), and readiness reports the
//! store unavailable.
//! Reopening replays the journal up to its last whole batch: nothing acknowledged is lost,
//! and a failed commit is never retried on the same handle. A batch whose commit failed is
//! unknown, not undone: fjall flushes its journal buffer when the old database is dropped,
//! so it may be whole in the journal and found after the reopen (as after a crash between
//! a write and its answer); callers retry idempotently.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ::fjall::{PersistMode, Readable, SingleWriterTxKeyspace, Slice};
use tokio::sync::oneshot;

use super::keys;
use super::{Db, st};
use crate::embedded::{self, Completion};
use crate::{Error, Result};

/// Keys longer than this are refused by fjall (with a panic): checked before every write.
const MAX_KEY: usize = u16::MAX as usize;

/// The open database, shared by readers and the writer, and whether it can be written.
pub(crate) struct Shared {
    /// The database; `None` from a storage failure until a reopen.
    db: parking_lot::RwLock<Option<Arc<Db>>>,
    /// Whether writes can commit.
    writable: AtomicBool,
    /// The database directory, to reopen.
    path: PathBuf,
    /// The cache and journal sizes, to reopen.
    sizes: super::Sizes,
    /// Set when the store closes: a reopener stops.
    closed: AtomicBool,
    /// The reopener thread, while one runs.
    reopener: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Shared {
    pub(crate) fn new(db: Db, path: PathBuf, sizes: super::Sizes) -> Self {
        Self {
            db: parking_lot::RwLock::new(Some(Arc::new(db))),
            writable: AtomicBool::new(true),
            path,
            sizes,
            closed: AtomicBool::new(false),
            reopener: parking_lot::Mutex::new(None),
        }
    }

    /// The database, unless it is being reopened after a storage failure.
    pub(crate) fn current(&self) -> Result<Arc<Db>> {
        self.db
            .read()
            .clone()
            .ok_or_else(|| Error::Unavailable("store is recovering from a storage failure".into()))
    }

    /// Whether writes can commit (false from a storage failure until a reopen proves it).
    pub(crate) fn writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    /// Closes the database after a storage failure: it is poisoned.
    fn fail(&self, cause: &str) {
        if self.writable.swap(false, Ordering::AcqRel) {
            metrics::counter!("amp_store_write_failures_total").increment(1);
            tracing::error!(error = %cause, "store: write failed; closing the database to reopen it");
        }
        drop(self.db.write().take());
    }

    /// One reopen attempt: open the directory (fjall replays its journal) and prove that a
    /// write needing [`PROBE_BYTES`] of new space commits and syncs (bytes that do not
    /// compress: the journal compresses, and a probe of zeros would fit in a few bytes of a
    /// full disk). Fails while a reader still holds the old
    /// database (its lock file is still taken), which the next attempt outlives.
    fn reopen(&self) -> std::result::Result<(), String> {
        if self.db.read().is_none() {
            let db = Db::open(&self.path, self.sizes).map_err(|e| e.to_string())?;
            *self.db.write() = Some(Arc::new(db));
        }
        let db = self.current().map_err(|e| e.to_string())?;
        let probe = || -> std::result::Result<(), String> {
            let key = keys::one("\u{0}amp-store-write-probe");
            let mut tx = db.db.write_tx().durability(Some(PersistMode::SyncData));
            tx.insert(&db.ks.kv, key.as_slice(), noise(PROBE_BYTES));
            tx.commit().map_err(|e| e.to_string())?;
            let mut tx = db.db.write_tx().durability(Some(PersistMode::SyncData));
            tx.remove(&db.ks.kv, key.as_slice());
            tx.commit().map_err(|e| e.to_string())
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

/// Bytes of the reopen's probe write: headroom, not one row. A reopen frees space by itself
/// (fjall truncates the journal's torn tail, what the failed commit half wrote, and drops
/// obsolete files of its own), a few hundred KiB on a full disk; a small probe fitted there,
/// and the store flapped between writable and full until space really returned.
const PROBE_BYTES: usize = 4 * 1024 * 1024;

/// `n` bytes that do not compress (xorshift).
fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A write transaction as the operations see it: fjall's, with the keyspaces of the
/// database it belongs to (new handles after a reopen), and writes that refuse keys fjall
/// cannot hold instead of panicking.
pub(crate) struct Tx<'a> {
    /// fjall's transaction.
    tx: ::fjall::SingleWriterWriteTx<'a>,
    /// The keyspaces.
    pub(crate) ks: &'a super::Keyspaces,
}

impl Tx<'_> {
    /// The value under `key`, this transaction's own writes included.
    pub(crate) fn get(&self, ks: &SingleWriterTxKeyspace, key: &[u8]) -> Result<Option<Slice>> {
        self.tx.get(ks, key).map_err(st)
    }

    /// Whether `key` has a value.
    pub(crate) fn contains(&self, ks: &SingleWriterTxKeyspace, key: &[u8]) -> Result<bool> {
        self.tx.contains_key(ks, key).map_err(st)
    }

    /// Sets `key` to `value`.
    ///
    /// Fails (fatally for the batch) when the key is empty or over fjall's 64 KiB.
    pub(crate) fn insert(
        &mut self,
        ks: &SingleWriterTxKeyspace,
        key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        check_key(key)?;
        self.tx.insert(ks, key, value);
        Ok(())
    }

    /// Removes `key` (nothing when it has no value).
    ///
    /// Fails (fatally for the batch) when the key is empty or over fjall's 64 KiB.
    pub(crate) fn remove(&mut self, ks: &SingleWriterTxKeyspace, key: &[u8]) -> Result<()> {
        check_key(key)?;
        self.tx.remove(ks, key);
        Ok(())
    }

    /// Removes `key`, returning its value.
    ///
    /// Fails as [`remove`](Self::remove) does, or when the value cannot be read.
    pub(crate) fn take(
        &mut self,
        ks: &SingleWriterTxKeyspace,
        key: &[u8],
    ) -> Result<Option<Slice>> {
        let old = self.get(ks, key)?;
        if old.is_some() {
            self.remove(ks, key)?;
        }
        Ok(old)
    }

    /// Rows with keys in `range`, in key order, read in full before the caller changes any.
    pub(crate) fn range<R: std::ops::RangeBounds<Vec<u8>>>(
        &self,
        ks: &SingleWriterTxKeyspace,
        range: R,
    ) -> ::fjall::Iter {
        self.tx.range(ks, range)
    }

    /// Rows whose key starts with `prefix`, in key order.
    pub(crate) fn prefix(&self, ks: &SingleWriterTxKeyspace, prefix: &[u8]) -> ::fjall::Iter {
        self.tx.prefix(ks, prefix)
    }
}

/// Refuses what fjall would panic on: an empty key or one over 64 KiB.
pub(super) fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(Error::Corrupt(format!(
            "a key of {} bytes: fjall holds 1 to {MAX_KEY}",
            key.len()
        )));
    }
    Ok(())
}

/// Starts a reopener thread after a storage failure, unless one runs already.
fn start_reopening(shared: &Arc<Shared>) {
    let mut slot = shared.reopener.lock();
    if slot.as_ref().is_some_and(|t| !t.is_finished()) {
        return;
    }
    let s = shared.clone();
    *slot = std::thread::Builder::new()
        .name("amp-store-fjall-reopen".into())
        .spawn(move || reopen_until_done(&s))
        .map_err(|e| tracing::error!(error = %e, "store: cannot start the reopener thread"))
        .ok();
}

/// Reopens the database with backoff until a reopen is proven or the store closes.
fn reopen_until_done(shared: &Shared) {
    let mut backoff = REOPEN_FIRST;
    loop {
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if shared.closed.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(20)),
            );
        }
        match shared.reopen() {
            Ok(()) => return,
            Err(cause) => {
                tracing::warn!(error = %cause, retry_ms = backoff.as_millis() as u64, "store: cannot reopen yet");
                backoff = (backoff * 2).min(REOPEN_MAX);
            }
        }
    }
}

/// Backoff between reopen attempts: the first, doubled up to the most.
const REOPEN_FIRST: Duration = Duration::from_millis(100);
/// The most backoff between reopen attempts.
const REOPEN_MAX: Duration = Duration::from_secs(2);

/// An operation: applies its writes, reports whether it failed fatally (storage error, so the
/// batch must not commit), and returns its completion.
type Op = Box<dyn FnOnce(&mut Tx<'_>) -> (bool, Completion) + Send>;

/// The sending side of the writer thread.
pub(crate) struct Writer {
    /// The database, whose reopener `close` stops.
    shared: Arc<Shared>,
    /// The queue of operations; `None` once closed.
    tx: parking_lot::Mutex<Option<mpsc::Sender<Op>>>,
    /// The thread, joined on close.
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread. With `group_commit` off every operation gets its own
    /// transaction and fsync (for comparison in benchmarks).
    pub(crate) fn start(db: Arc<Shared>, group_commit: bool, max_batch: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Op>();
        let max_batch = if group_commit { max_batch.max(1) } else { 1 };
        let shared = db.clone();
        let thread = std::thread::Builder::new()
            .name("amp-store-fjall-writer".into())
            .spawn(move || run(&db, &rx, max_batch))
            .ok();
        Self {
            shared,
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
        F: FnOnce(&mut Tx<'_>) -> Result<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op: Op = Box::new(move |txn| embedded::settle(f(txn), reply));
        embedded::submit(&self.tx, op, answer).await
    }

    /// Stops accepting writes, lets the queued ones commit, and joins the thread (and a
    /// reopener, stopped).
    pub(crate) fn close(&self) {
        drop(self.tx.lock().take());
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        self.shared.closed.store(true, Ordering::Release);
        let reopener = self.shared.reopener.lock().take();
        if let Some(t) = reopener {
            let _ = t.join();
        }
    }
}

/// The writer thread: takes every queued operation, applies the batch, commits it, answers;
/// after a storage failure, refuses every operation until the reopener proves a reopen.
fn run(shared: &Arc<Shared>, rx: &mpsc::Receiver<Op>, max_batch: usize) {
    while let Ok(first) = rx.recv() {
        let ops = embedded::take_batch(first, rx, max_batch);
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
        let (batch, completions) = apply(&db, ops);
        let took = t0.elapsed();
        drop(db);
        let outcome = match batch {
            Batch::Committed => Ok(()),
            Batch::Aborted => Err("write batch aborted after a storage error".to_owned()),
            Batch::Failed(cause) => {
                // The database is poisoned (fjall refuses every later write on it): it is
                // closed and reopened, never retried.
                shared.fail(&cause);
                start_reopening(shared);
                Err(cause)
            }
        };
        embedded::answer(took, completions, &outcome);
    }
}

/// What became of a batch.
enum Batch {
    /// Committed and synced.
    Committed,
    /// Not committed: an operation failed with a storage error.
    Aborted,
    /// The commit failed (the database is poisoned).
    Failed(String),
}

/// Applies a batch in one write transaction and commits it with one journal `fdatasync`;
/// returns the outcome and each operation's completion.
fn apply(db: &Db, ops: Vec<Op>) -> (Batch, Vec<Completion>) {
    let mut txn = Tx {
        tx: db.db.write_tx().durability(Some(PersistMode::SyncData)),
        ks: &db.ks,
    };
    let mut completions = Vec::with_capacity(ops.len());
    let mut fatal = false;
    for op in ops {
        let (f, c) = op(&mut txn);
        fatal |= f;
        completions.push(c);
    }
    let batch = if fatal {
        txn.tx.rollback();
        Batch::Aborted
    } else {
        match txn.tx.commit() {
            Ok(()) => Batch::Committed,
            Err(e) => Batch::Failed(e.to_string()),
        }
    };
    (batch, completions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_does_not_compress() {
        let probe = noise(PROBE_BYTES);
        assert_eq!(probe.len(), PROBE_BYTES);
        let distinct: std::collections::HashSet<&[u8]> = probe.chunks(8).collect();
        assert!(
            distinct.len() > PROBE_BYTES / 8 - 8,
            "the probe repeats itself"
        );
    }
}
