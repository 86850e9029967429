//! The CQL backend: the store in ScyllaDB (production) or Apache Cassandra (the test node;
//! the same CQL), through the `scylla` driver. For a cluster at scale: every table is
//! partitioned so no partition grows without bound, every per-message row expires by TTL,
//! and no request reads more than one mailbox's live window.
//!
//! # Data model (the full reasoning: `deploy/scylla/README.md`; the schema:
//! `migrations/*.cql`, concatenated in `deploy/scylla/schema.cql`)
//! - **Mailboxes**: `mailbox_entries ((agent, bucket), seq)` with `bucket = seq / 1024` and a
//!   static `head`; an append is one conditional batch (`INSERT` the entry, `UPDATE head = N
//!   IF head = N-1`), so a position is assigned and written atomically and no reader ever
//!   sees N+1 before N, whichever router writes. The same batch claims the message id in
//!   that partition (`IF NOT EXISTS` on a row keyed by a hash of the id): of two routers
//!   storing the same id, one wins and the other reads `Duplicate` or `Conflict`, with one
//!   Paxos round per append. `mailbox_ids ((agent, message_id))` is the id's lookup row,
//!   written plainly around the batch (see `mailboxes`). Acknowledging sets `acked`
//!   (an update, no tombstone); `mailbox_meta.floor` moves past leading acknowledged and
//!   expired rows, and every read starts above it, so pickup cost does not grow with what
//!   was acknowledged. Rows carry the message's TTL.
//! - **Registry**: `agents`, `agent_names ((tenant), name)` (claimed with a lightweight
//!   transaction, listed as one slice), `api_keys`, `owners`, `owner_keys`, `owned_agents`.
//! - **State**: `receipts ((agent), seq)`, `jobs` + `jobs_due ((kind, shard), due_at, id)`,
//!   `presence` (TTL = lease) + `presence_online` (16 shards), `kv`.
//!
//! Lightweight transactions (Paxos) are used where a race must have one winner: name
//! claims, the position of an append (which claims the message id in the same round), job
//! leases, receipt positions. Everything else is a plain write at the configured consistency.
//!
//! # Modules
//! `config` ([`CqlStoreConfig`]), `tls` ([`CqlTlsConfig`]: TLS to the cluster), `schema` (keyspace and versioned migrations), `conn`
//! (session, prepared statements, row helpers), `registry`, `mailboxes`, `state`, `purge`
//! ([`Purge`]: every row of an agent, for tenant deletion).

mod attachments;
mod config;
mod conn;
mod mailboxes;
mod purge;
mod records;
mod registry;
mod schema;
mod state;
mod tls;

use async_trait::async_trait;

pub use self::config::{CqlConsistency, CqlStoreConfig, CqlTlsConfig};
use self::conn::Conn;
pub use self::schema::{MIGRATIONS, schema_cql, statements};
use crate::{Millis, Result, StoreBackend};

/// The CQL store. Holds one driver session (a pool per node); wrap it in a
/// [`crate::Store`] to share.
pub struct CqlStore {
    conn: Conn,
    /// Enqueues to one mailbox are serialised in this process (by a stripe of the agent
    /// id): the append's compare-and-set then only races other processes, instead of every
    /// router worker retrying against the others.
    mailbox_locks: Box<[tokio::sync::Mutex<()>]>,
    /// The last head, bucket and floor this process saw per mailbox: appends go there
    /// without a read, checked by their condition.
    heads: mailboxes::HeadCache,
}

impl CqlStore {
    /// Connects, creates the keyspace and applies pending migrations when
    /// `migrate_on_start` is set, and prepares every statement.
    ///
    /// Fails with [`crate::Error::Unavailable`] naming the cause when the config is invalid,
    /// no contact point answers ("cannot reach 10.0.0.5:9042: …"), the keyspace is missing
    /// and may not be created, or the schema is older than this build and may not be
    /// migrated.
    pub async fn connect(config: CqlStoreConfig) -> Result<Self> {
        config.validate()?;
        let conn = Conn::connect(&config).await?;
        Ok(Self {
            conn,
            mailbox_locks: (0..256).map(|_| tokio::sync::Mutex::new(())).collect(),
            heads: mailboxes::HeadCache::default(),
        })
    }

    /// Creates the keyspace if needed and applies every pending migration, then returns
    /// the schema version. What the `migrate` command of the binaries runs.
    ///
    /// Fails when the cluster cannot be reached or a statement is refused.
    pub async fn migrate(config: &CqlStoreConfig) -> Result<u32> {
        config.validate()?;
        let session = conn::open_session(config).await?;
        schema::migrate(&session, config).await
    }

    /// The schema version recorded in the keyspace (0 when none).
    ///
    /// Fails when the store cannot be read.
    pub async fn schema_version(&self) -> Result<u32> {
        schema::current_version(&self.conn.session).await
    }

    fn mailbox_lock(&self, agent_id: &str) -> &tokio::sync::Mutex<()> {
        let h = agent_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        &self.mailbox_locks[(h % self.mailbox_locks.len() as u64) as usize]
    }
}

#[async_trait]
impl StoreBackend for CqlStore {
    async fn ready(&self) -> bool {
        self.conn.ping().await
    }

    async fn close(&self) -> Result<()> {
        // Every write is acknowledged by the cluster before it returns: nothing to flush.
        Ok(())
    }
}

/// The wall clock in unix milliseconds (TTLs are relative to it).
pub(crate) fn wall_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
