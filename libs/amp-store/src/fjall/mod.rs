//! The embedded backend on fjall, an LSM tree: one database directory in the data
//! directory, written through a single group-commit writer thread ([`writer`]) so many
//! operations share one journal `fdatasync`; reads run on snapshots (never blocked by the
//! writer). The same tables, keys and semantics as the redb backend ([`crate::redb`]); a
//! redb table is a keyspace here, its tuple keys byte strings that sort alike ([`keys`]).
//!
//! Layout (all values JSON unless noted; `(a, b)` is a [`keys`] tuple):
//! - `agents` (id) → [`AgentRecord`]; `names` (tenant, name) → holder; `tenant_active`
//!   (tenant) → u64; `owned` (owner, agent) → empty;
//! - `api_keys` hash → [`ApiKeyRecord`]; `agent_keys` (agent, hash) → empty;
//! - `owners` (id) → [`OwnerRecord`]; `owner_keys` hash → owner id;
//! - `mailbox` (agent, seq) → the mailbox row ([`crate::mailbox_row`]); `msg_index`
//!   (agent, message id) → index entry (kept after an ack as a tombstone until the
//!   message's expiry); `mbox_meta` (agent) → head, count, floor; `expiry` (expires_at,
//!   agent, seq) → message id, which drives bulk purging;
//! - `receipts` (agent, seq) → [`Receipt`]; `receipt_head` (agent) → u64;
//! - `jobs` (due_at, id) → [`Job`]; `job_ids` (id) → i64; `kv` (key) → bytes;
//!   `kv_expires` (key) → i64; `kv_expiry` (expires_at, key) → empty;
//! - `presence` (agent, session) → i64; `records` (collection, id) → bytes
//!   ([`records`]); `attachments` (id) → revision and [`AttachmentRecord`]
//!   ([`attachments`]).
//!
//! Integers in values are 8 bytes big-endian. Files: [`registry`], [`mailboxes`],
//! [`receipts`], [`jobs`], [`kv`] (with presence), [`records`], [`attachments`], [`purge`]
//! (with [`FjallStore::scan_rows`]); `import` (with feature `redb`) fills an empty store
//! from a redb one ([`crate::migrate`]).

mod attachments;
#[cfg(feature = "redb")]
pub(crate) mod import;
mod jobs;
mod keys;
mod kv;
mod mailboxes;
mod purge;
mod receipts;
mod records;
mod registry;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::fjall::{
    Iter, KeyspaceCreateOptions, Readable, SingleWriterTxDatabase, SingleWriterTxKeyspace, Slice,
    Snapshot,
};
use async_trait::async_trait;

use crate::embedded::{from_json, st, to_json};
use crate::*;
use writer::Writer;

/// The store's directory in a data directory ([`FjallConfig::in_dir`]).
pub const DIR: &str = "amp.fjall";

/// Options of the embedded fjall store.
#[derive(Debug, Clone)]
pub struct FjallConfig {
    /// The database directory.
    pub path: PathBuf,
    /// Share one fsync between all writes queued while the previous commit ran.
    pub group_commit: bool,
    /// Most operations in one commit.
    pub max_batch: usize,
    /// Bytes of fjall's block cache (shared by every keyspace).
    pub cache_bytes: u64,
    /// Most bytes of journal kept: past it fjall flushes the memtables that hold the oldest
    /// journal's writes and drops that journal. Opening after a crash replays what is kept,
    /// so this bounds recovery (about 14 ms per MiB on the development machine); at least
    /// [`MIN_JOURNAL_BYTES`].
    pub journal_bytes: u64,
    /// Threads that flush memtables and compact in the background; 0 for half the cores
    /// (1 to 4). fjall's own default, every core up to 4, left a 2-core machine's requests
    /// queued behind a flush and its compaction: p99 at 2,500 routes/s 207-230 ms with 2,
    /// 33-49 ms with 1.
    pub workers: usize,
}

/// The least journal fjall accepts (64 MiB).
pub const MIN_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// What [`Db::open`] sizes: the block cache, the journal and the background threads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    cache_bytes: u64,
    journal_bytes: u64,
    workers: usize,
}

impl Sizes {
    /// The background threads: as configured, or half the cores (1 to 4).
    fn workers(self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get() / 2)
                .clamp(1, 4),
            n => n,
        }
    }
}

impl FjallConfig {
    /// Group commit on, up to 1024 operations per commit, a 64 MiB cache, at most 64 MiB
    /// of journal, the directory `amp.fjall` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join(DIR),
            group_commit: true,
            max_batch: 1024,
            cache_bytes: 64 * 1024 * 1024,
            journal_bytes: MIN_JOURNAL_BYTES,
            workers: 0,
        }
    }
}

/// Every keyspace of the store (one per redb table; the module's layout says what each
/// holds).
pub(crate) struct Keyspaces {
    pub(crate) agents: SingleWriterTxKeyspace,
    pub(crate) names: SingleWriterTxKeyspace,
    /// Active (not held) names per tenant, kept with `names` in the same transactions, so a
    /// listing's total costs one row (issue 16).
    pub(crate) tenant_active: SingleWriterTxKeyspace,
    pub(crate) owned: SingleWriterTxKeyspace,
    pub(crate) api_keys: SingleWriterTxKeyspace,
    pub(crate) agent_keys: SingleWriterTxKeyspace,
    pub(crate) owners: SingleWriterTxKeyspace,
    pub(crate) owner_keys: SingleWriterTxKeyspace,
    pub(crate) mailbox: SingleWriterTxKeyspace,
    pub(crate) msg_index: SingleWriterTxKeyspace,
    pub(crate) mbox_meta: SingleWriterTxKeyspace,
    pub(crate) expiry: SingleWriterTxKeyspace,
    pub(crate) receipts: SingleWriterTxKeyspace,
    pub(crate) receipt_head: SingleWriterTxKeyspace,
    pub(crate) jobs: SingleWriterTxKeyspace,
    pub(crate) job_ids: SingleWriterTxKeyspace,
    pub(crate) kv: SingleWriterTxKeyspace,
    /// Expiry of the kv entries that have one, and the same by time for the purge.
    pub(crate) kv_expires: SingleWriterTxKeyspace,
    pub(crate) kv_expiry: SingleWriterTxKeyspace,
    pub(crate) presence: SingleWriterTxKeyspace,
    pub(crate) records: SingleWriterTxKeyspace,
    pub(crate) attachments: SingleWriterTxKeyspace,
}

impl Keyspaces {
    /// Every keyspace with its name, for scans.
    fn all(&self) -> [(&'static str, &SingleWriterTxKeyspace); 22] {
        [
            ("agents", &self.agents),
            ("names", &self.names),
            ("tenant_active", &self.tenant_active),
            ("owned", &self.owned),
            ("api_keys", &self.api_keys),
            ("agent_keys", &self.agent_keys),
            ("owners", &self.owners),
            ("owner_keys", &self.owner_keys),
            ("mailbox", &self.mailbox),
            ("msg_index", &self.msg_index),
            ("mbox_meta", &self.mbox_meta),
            ("expiry", &self.expiry),
            ("receipts", &self.receipts),
            ("receipt_head", &self.receipt_head),
            ("jobs", &self.jobs),
            ("job_ids", &self.job_ids),
            ("kv", &self.kv),
            ("kv_expires", &self.kv_expires),
            ("kv_expiry", &self.kv_expiry),
            ("presence", &self.presence),
            ("records", &self.records),
            ("attachments", &self.attachments),
        ]
    }
}

/// An open database and its keyspaces.
pub(crate) struct Db {
    /// The database.
    pub(crate) db: SingleWriterTxDatabase,
    /// Its keyspaces.
    pub(crate) ks: Keyspaces,
}

impl Db {
    /// Opens (creating if needed) the database directory and every keyspace.
    fn open(path: &Path, sizes: Sizes) -> ::fjall::Result<Self> {
        // Every write syncs its own batch (the writer's durability), so nothing relies on
        // fjall's own journal syncing.
        let db = SingleWriterTxDatabase::builder(path)
            .cache_size(sizes.cache_bytes)
            .max_journaling_size(sizes.journal_bytes.max(MIN_JOURNAL_BYTES))
            .worker_threads(sizes.workers())
            .open()?;
        let open = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        let ks = Keyspaces {
            agents: open("agents")?,
            names: open("names")?,
            tenant_active: open("tenant_active")?,
            owned: open("owned")?,
            api_keys: open("api_keys")?,
            agent_keys: open("agent_keys")?,
            owners: open("owners")?,
            owner_keys: open("owner_keys")?,
            mailbox: open("mailbox")?,
            msg_index: open("msg_index")?,
            mbox_meta: open("mbox_meta")?,
            expiry: open("expiry")?,
            receipts: open("receipts")?,
            receipt_head: open("receipt_head")?,
            jobs: open("jobs")?,
            job_ids: open("job_ids")?,
            kv: open("kv")?,
            kv_expires: open("kv_expires")?,
            kv_expiry: open("kv_expiry")?,
            presence: open("presence")?,
            records: open("records")?,
            attachments: open("attachments")?,
        };
        Ok(Self { db, ks })
    }
}

/// The embedded fjall store.
pub struct FjallStore {
    /// The open database (none while it is reopened after a storage failure).
    db: Arc<writer::Shared>,
    /// The group-commit writer thread.
    writer: Writer,
}

/// Reading, the same on a snapshot ([`Snap`]) and inside the writer's transaction
/// ([`writer::Tx`], which sees its own writes).
pub(crate) trait Reads {
    /// The keyspaces.
    fn ks(&self) -> &Keyspaces;
    /// The value under `key`.
    fn get(&self, ks: &SingleWriterTxKeyspace, key: &[u8]) -> Result<Option<Slice>>;
    /// Rows with keys in `range`, in key order.
    fn range<R: std::ops::RangeBounds<Vec<u8>>>(
        &self,
        ks: &SingleWriterTxKeyspace,
        range: R,
    ) -> Iter;
    /// Rows whose key starts with `prefix`, in key order.
    fn prefix(&self, ks: &SingleWriterTxKeyspace, prefix: &[u8]) -> Iter;
}

impl Reads for writer::Tx<'_> {
    fn ks(&self) -> &Keyspaces {
        self.ks
    }
    fn get(&self, ks: &SingleWriterTxKeyspace, key: &[u8]) -> Result<Option<Slice>> {
        writer::Tx::get(self, ks, key)
    }
    fn range<R: std::ops::RangeBounds<Vec<u8>>>(
        &self,
        ks: &SingleWriterTxKeyspace,
        range: R,
    ) -> Iter {
        writer::Tx::range(self, ks, range)
    }
    fn prefix(&self, ks: &SingleWriterTxKeyspace, prefix: &[u8]) -> Iter {
        writer::Tx::prefix(self, ks, prefix)
    }
}

/// A consistent snapshot of the database, for reads.
pub(crate) struct Snap {
    /// The database read (kept open while the snapshot lives).
    db: Arc<Db>,
    /// The snapshot.
    snap: Snapshot,
}

impl Reads for Snap {
    fn ks(&self) -> &Keyspaces {
        &self.db.ks
    }
    fn get(&self, ks: &SingleWriterTxKeyspace, key: &[u8]) -> Result<Option<Slice>> {
        self.snap.get(ks, key).map_err(st)
    }
    fn range<R: std::ops::RangeBounds<Vec<u8>>>(
        &self,
        ks: &SingleWriterTxKeyspace,
        range: R,
    ) -> Iter {
        self.snap.range(ks, range)
    }
    fn prefix(&self, ks: &SingleWriterTxKeyspace, prefix: &[u8]) -> Iter {
        self.snap.prefix(ks, prefix)
    }
}

/// The key and value of an iterated row.
fn row(g: ::fjall::Guard) -> Result<(Slice, Slice)> {
    g.into_inner().map_err(st)
}

impl FjallStore {
    /// Opens (creating if needed) the database directory and starts the writer thread.
    ///
    /// Fails when the directory cannot be created or opened, holds something other than a
    /// fjall database, or is already open (in this process or another).
    pub fn open(cfg: &FjallConfig) -> Result<Self> {
        std::fs::create_dir_all(&cfg.path).map_err(st)?;
        let sizes = Sizes {
            cache_bytes: cfg.cache_bytes,
            journal_bytes: cfg.journal_bytes,
            workers: cfg.workers,
        };
        let db = Db::open(&cfg.path, sizes).map_err(st)?;
        let db = Arc::new(writer::Shared::new(db, cfg.path.clone(), sizes));
        let writer = Writer::start(db.clone(), cfg.group_commit, cfg.max_batch);
        Ok(Self { db, writer })
    }

    /// A snapshot to read from.
    ///
    /// Fails while the database is reopened after a storage failure.
    fn read(&self) -> Result<Snap> {
        let db = self.db.current()?;
        let snap = db.db.read_tx();
        Ok(Snap { db, snap })
    }
}

impl Drop for FjallStore {
    fn drop(&mut self) {
        self.writer.close();
    }
}

#[async_trait]
impl StoreBackend for FjallStore {
    async fn ready(&self) -> bool {
        // Not ready while writes cannot commit (a full disk), even though reads may.
        if !self.db.writable() {
            return false;
        }
        let Ok(r) = self.read() else {
            return false;
        };
        r.get(&r.ks().kv, &keys::one("")).is_ok()
    }

    async fn close(&self) -> Result<()> {
        self.writer.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_threads_default_to_half_the_cores() {
        let sizes = |workers| Sizes {
            cache_bytes: 0,
            journal_bytes: MIN_JOURNAL_BYTES,
            workers,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(sizes(0).workers(), (cores / 2).clamp(1, 4));
        assert_eq!(sizes(3).workers(), 3, "as configured");
    }
}
