//! Storage for the AMP provider: the traits every backend implements, the embedded backend,
//! and the conformance suite every backend's tests run.
//!
//! - [`types`]: the records (agents, API keys, owners, mailbox entries, receipts, jobs).
//! - The traits: [`Registry`] (agents, names, keys, owners), [`Mailboxes`] (durable per-agent
//!   mailboxes with idempotent enqueue, cursors, acks, expiry), [`Receipts`] (retained for
//!   senders), [`Jobs`] (durable timers for retries), [`Presence`] (live sessions with
//!   leases), [`Kv`] (small provider state), [`Records`] (the operator plane's documents;
//!   typed in [`operator`]: tenants, operator tokens, owner keys, invites, audit),
//!   [`Attachments`] (uploaded attachments' metadata, compare-and-set), [`Purge`] (everything
//!   about an agent, removed for good: tenant deletion). A backend
//!   implements [`StoreBackend`], all of them; services hold a [`Store`], a cheap clone.
//! - [`blob`]: [`blob::Blobs`], where attachment bytes live (a directory for `ampd`, the
//!   JetStream object store for the cluster), behind its own small trait.
//! - [`quarantine`]: messages held for review (spec-next 07), typed over [`Records`].
//! - [`risk`]: risk counters (spec-next 07) per agent, hour and process, typed over [`Records`].
//! - [`suspension`]: agent suspensions (spec-next 07), typed over [`Records`].
//! - [`list_cost`]: what an agent listing reads, counted for the tests that bound it.
//! - [`usage`]: usage metering's rows (per tenant, period and replica; summed at read).
//! - [`revocation`]: the key revocation list (spec-next 07), on [`Kv`] and [`Records`].
//! - [`deletion`]: tenant deletion, a resumable job over the traits (its state a record).
//! - [`composed`]: [`Composed`], a store with one backend per concern (mailboxes in
//!   ScyllaDB, presence in JetStream, …).
//! - [`redb`] (feature `redb`, default): the embedded single-node backend with group commit.
//! - [`fjall`] (feature `fjall`, default): the same on fjall, an LSM tree (one journal append
//!   and `fdatasync` per group commit).
//! - [`migrate`] (features `redb` and `fjall`): an embedded redb store copied into a new
//!   fjall one, every row of every table.
//! - [`jetstream`] (feature `jetstream`, default): the NATS JetStream backend shared by cluster processes.
//! - [`cql`] (feature `cql`, default): the CQL backend (ScyllaDB; Apache Cassandra in tests),
//!   the cluster's store at scale.
//! - [`s3`] (feature `s3`): attachment bytes in S3-compatible object storage, the cluster's
//!   alternative to the JetStream object store.
//! - [`testing`] (feature `testing`): `testing::conformance`, the suite every backend passes.
//!
//! Every write returns only after it is durable (committed and fsynced, or acknowledged by a
//! replicated store); a caller may answer 2xx on the strength of it.

use std::sync::Arc;

use async_trait::async_trait;

pub mod blob;
pub mod composed;
pub mod deletion;
pub mod list_cost;
pub mod operator;
pub mod quarantine;
pub mod revocation;
pub mod risk;
pub mod suspension;
pub mod types;
pub mod usage;

#[cfg(feature = "cql")]
pub mod cql;
#[cfg(any(feature = "redb", feature = "fjall"))]
mod embedded;
#[cfg(feature = "fjall")]
pub mod fjall;
#[cfg(feature = "jetstream")]
pub mod jetstream;
#[cfg(any(feature = "redb", feature = "fjall"))]
mod mailbox_row;
#[cfg(all(feature = "redb", feature = "fjall"))]
pub mod migrate;
#[cfg(feature = "redb")]
pub mod redb;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "testing")]
pub mod testing;

pub use composed::Composed;
pub use types::*;

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The (tenant, name) is taken or held after a deregistration.
    #[error("name is taken")]
    NameTaken,
    /// The record to change does not exist.
    #[error("not found")]
    NotFound,
    /// The backend is unreachable or failing; the caller may retry (503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back (a bug or corruption).
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// Store result.
pub type Result<T> = std::result::Result<T, Error>;

/// Agents, their names, API keys and owners.
#[async_trait]
pub trait Registry: Send + Sync {
    /// Creates an agent with its first API key, atomically: the (tenant, name) must be free
    /// (not held by an active agent, nor within `name_hold_until` of a deregistered one).
    ///
    /// Fails with [`Error::NameTaken`].
    async fn create_agent(&self, agent: AgentRecord, api_key: KeyHash, now: Millis) -> Result<()>;

    /// An agent by id, active or not.
    async fn agent(&self, id: &str) -> Result<Option<AgentRecord>>;

    /// The active agent holding `(tenant, name)`.
    async fn agent_by_name(&self, tenant: &str, name: &str) -> Result<Option<AgentRecord>>;

    /// The agent an API key hash belongs to, with the key's record. Keys of deregistered
    /// agents are gone.
    async fn agent_by_api_key(&self, key: &KeyHash) -> Result<Option<(AgentRecord, ApiKeyRecord)>>;

    /// Replaces an active agent's record (same id; name, tenant and address unchanged).
    ///
    /// Fails with [`Error::NotFound`] when no such agent exists or it was deregistered (a
    /// deregistration is never undone by a write based on an older read).
    async fn update_agent(&self, agent: AgentRecord) -> Result<()>;

    /// Sets `last_seen_at` of an active agent, atomically (no read-modify-write race with
    /// other updates); does nothing for an unknown or deregistered agent.
    async fn touch_agent(&self, id: &str, now: Millis) -> Result<()>;

    /// Issues `new_key` for the agent and limits every other key of it to `old_valid_until`.
    ///
    /// Fails with [`Error::NotFound`] when the agent does not exist or is not active.
    async fn rotate_api_key(
        &self,
        agent_id: &str,
        new_key: KeyHash,
        now: Millis,
        old_valid_until: Millis,
    ) -> Result<()>;

    /// Deletes every API key of the agent, at once.
    async fn revoke_api_keys(&self, agent_id: &str) -> Result<()>;

    /// Marks the agent deregistered, deletes its keys and its mailbox, and holds its name
    /// until `name_hold_until`.
    ///
    /// Fails with [`Error::NotFound`] when the agent does not exist or is not active.
    async fn deregister_agent(
        &self,
        agent_id: &str,
        now: Millis,
        name_hold_until: Millis,
    ) -> Result<AgentRecord>;

    /// Active agents of a tenant, by name, after the name `after`, whose name, address or
    /// alias contains `search` (case-insensitive); returns the page and the total matching.
    ///
    /// Without `search` a call reads the page's agent records only (at most `limit` plus the
    /// few a concurrent change hides), never every agent of the tenant. `search` filters the
    /// tenant and so reads it; its total is the number of matches.
    async fn list_agents(
        &self,
        tenant: &str,
        search: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AgentRecord>, u64)>;

    /// Creates or replaces an owner and the hash of its user key.
    async fn put_owner(&self, owner: OwnerRecord, user_key: KeyHash) -> Result<()>;

    /// The owner a user key hash belongs to.
    async fn owner_by_user_key(&self, key: &KeyHash) -> Result<Option<OwnerRecord>>;

    /// How many active agents an owner has.
    async fn count_owned_agents(&self, owner_id: &str) -> Result<u64>;
}

/// Durable per-agent mailboxes (the truth of spec 12.1).
#[async_trait]
pub trait Mailboxes: Send + Sync {
    /// Adds a message, idempotent on (recipient, message id): a repeat by the same sender
    /// with the same signature is [`Enqueued::Duplicate`]; with another signature,
    /// [`Enqueued::Conflict`]. (Another sender's message with a colliding id for the same
    /// recipient is also a conflict; the caller assigns a fresh id to avoid it.)
    async fn enqueue(&self, entry: NewMailboxEntry) -> Result<Enqueued>;

    /// The state of one message at `now`, if the agent's mailbox has it queued and
    /// unexpired, or had it and it was acknowledged.
    async fn entry(
        &self,
        agent_id: &str,
        message_id: &str,
        now: Millis,
    ) -> Result<Option<EntryState>>;

    /// Queued, unexpired entries with `seq > after`, oldest first, at most `limit`.
    async fn fetch(
        &self,
        agent_id: &str,
        after: Option<u64>,
        limit: usize,
        now: Millis,
    ) -> Result<MailboxPage>;

    /// Queued, unexpired entries, without bodies.
    async fn count(&self, agent_id: &str, now: Millis) -> Result<MailboxCount>;

    /// Acknowledges ids of the agent's mailbox: one idempotent transition per id. Returns,
    /// in the order asked, each id's outcome with the entry it removed from the queue (for
    /// the ids this call acknowledged), read by the acknowledgement itself.
    async fn ack(&self, agent_id: &str, message_ids: &[String], now: Millis) -> Result<Vec<Acked>>;

    /// Purges up to `max` expired entries and acknowledgement tombstones across all
    /// mailboxes, in bulk; returns how many were removed. A backend whose rows expire by
    /// themselves (TTL) has nothing to do and returns 0; either way, expired entries are
    /// never served, counted or acknowledged.
    async fn purge_expired(&self, now: Millis, max: usize) -> Result<usize>;

    /// Deletes a whole mailbox, with the [`message_marker`]s of every id it knows.
    async fn delete_mailbox(&self, agent_id: &str) -> Result<()>;
}

/// Receipts retained for senders who could not be told at once (spec 12.2).
#[async_trait]
pub trait Receipts: Send + Sync {
    /// Retains a receipt for `agent_id`; the store assigns its `seq`.
    async fn put_receipt(&self, agent_id: &str, receipt: Receipt) -> Result<u64>;

    /// Unexpired receipts with `seq > after`, oldest first.
    async fn receipts(
        &self,
        agent_id: &str,
        after: Option<u64>,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<Receipt>>;

    /// Drops receipts up to and including `upto` (they were delivered).
    async fn drop_receipts(&self, agent_id: &str, upto: u64) -> Result<()>;
}

/// Durable timers.
#[async_trait]
pub trait Jobs: Send + Sync {
    /// Schedules a job, replacing any job with the same id.
    async fn schedule(&self, job: Job) -> Result<()>;

    /// Jobs of `kind` due at `now`, earliest first.
    async fn due_jobs(&self, kind: &str, now: Millis, limit: usize) -> Result<Vec<Job>>;

    /// Leases a job read from [`due_jobs`](Self::due_jobs): moves it to `until` if it is still
    /// stored exactly as read (same due time and attempt), so that of several replicas
    /// scanning the same jobs one alone runs it. `false`: another replica claimed it first,
    /// or it was completed or rescheduled meanwhile.
    async fn claim(&self, job: &Job, until: Millis) -> Result<bool>;

    /// Removes a job (done or abandoned).
    async fn complete(&self, id: &str) -> Result<()>;
}

/// Who is connected: WebSocket sessions per agent, each with a lease the session renews, so
/// a session of a crashed process expires on its own.
#[async_trait]
pub trait Presence: Send + Sync {
    /// Records or renews a session of `agent_id` until `until`.
    async fn presence_set(&self, agent_id: &str, session: &str, until: Millis) -> Result<()>;
    /// Removes a session.
    async fn presence_clear(&self, agent_id: &str, session: &str) -> Result<()>;
    /// Live sessions of an agent at `now`.
    async fn presence_count(&self, agent_id: &str, now: Millis) -> Result<u32>;
    /// Agents with at least one live session at `now`. May read every live session (a scan
    /// on the cluster's stores): callers on a request path cache it (`/v1/health` reads it at
    /// most once a second).
    async fn agents_online(&self, now: Millis) -> Result<u64>;
}

/// Small named values (provider state, pinned peer keys).
#[async_trait]
pub trait Kv: Send + Sync {
    /// The value under `key`, unless it expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Sets `key`, until `expires_at` (wall-clock unix milliseconds) or for good (`None`).
    /// Per-message markers always pass an expiry, so nothing per message outlives it.
    async fn put(&self, key: &str, value: Vec<u8>, expires_at: Option<Millis>) -> Result<()>;
    /// Deletes `key`.
    async fn delete(&self, key: &str) -> Result<()>;
}

/// Kinds of per-message marker an agent's messages leave in [`Kv`] (a read receipt sent, a
/// delivery receipt sent), under [`message_marker`]: a [`Purge`] removes them with the
/// mailbox.
pub const MESSAGE_MARKERS: &[&str] = &["read", "receipt-sent"];

/// Prefixes (before a `/`) of other [`Kv`] values written once per message and expiring on
/// their own (the idempotency records of route, `idem/…`): kept where the mailboxes are
/// (see [`Composed`]), not with the small provider state. Not keyed by a mailbox's ids, so
/// a [`Purge`] leaves them to expire.
pub const PER_MESSAGE_VALUES: &[&str] = &["idem"];

/// The [`Kv`] key of a per-message marker of `kind` (one of [`MESSAGE_MARKERS`]) for the
/// message `message_id` in the mailbox of `agent_id`.
pub fn message_marker(kind: &str, agent_id: &str, message_id: &str) -> String {
    format!("{kind}/{agent_id}/{message_id}")
}

/// How [`Records::record_put`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Only if no record has the id (of concurrent creators, exactly one succeeds).
    Create,
    /// Whether or not a record has the id.
    Replace,
}

/// Small, rarely written documents in named collections, listed in id order: the operator
/// plane's tenants, tokens, owner keys, invite codes and audit log ([`operator`] gives them
/// their types). Kept this generic so every backend implements four calls; `collection` and
/// `id` are 1-128 characters of `a-z A-Z 0-9 - _ .` (the caller's contract).
#[async_trait]
pub trait Records: Send + Sync {
    /// Writes `value` under `(collection, id)`. Returns `false` when `mode` is
    /// [`PutMode::Create`] and the id is taken (nothing written).
    async fn record_put(
        &self,
        collection: &str,
        id: &str,
        value: Vec<u8>,
        mode: PutMode,
    ) -> Result<bool>;

    /// The record under `(collection, id)`.
    async fn record_get(&self, collection: &str, id: &str) -> Result<Option<Vec<u8>>>;

    /// Records of `collection` with an id greater than `after`, in id order (bytewise), at
    /// most `limit`.
    async fn record_list(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>>;

    /// Deletes `(collection, id)`; `true` when it existed. Of concurrent takers of one record,
    /// exactly one sees `true` (single-use invite codes rest on it).
    async fn record_take(&self, collection: &str, id: &str) -> Result<bool>;
}

/// Attachment metadata (spec 04, 08): one record per attachment id, changed only by
/// compare-and-set, so concurrent uploads, confirms, scans and routes agree on one outcome
/// (one message per attachment, a scan status that only moves forward).
#[async_trait]
pub trait Attachments: Send + Sync {
    /// Stores a new record; `false` when the id exists already.
    async fn attachment_create(&self, record: &AttachmentRecord) -> Result<bool>;
    /// The record and its revision.
    async fn attachment(&self, id: &str) -> Result<Option<Versioned<AttachmentRecord>>>;
    /// Replaces the record if it is still at `revision`; `false` when another write (or a
    /// delete) came first.
    async fn attachment_replace(&self, record: &AttachmentRecord, revision: u64) -> Result<bool>;
    /// Deletes the record (nothing when it is gone already).
    async fn attachment_delete(&self, id: &str) -> Result<()>;
}

/// Removal of everything stored about agents, for good (tenant deletion, [`deletion`]).
/// Unlike a deregistration, nothing is held or kept: no name hold, no tombstone, no record.
#[async_trait]
pub trait Purge: Send + Sync {
    /// Ids of the agents of `tenant` still in the registry (active or deregistered), in id
    /// order, at most `limit`. A purged agent is no longer listed, so a caller walks a whole
    /// tenant by purging the first page and asking again, which also resumes a walk that
    /// stopped half-way.
    async fn tenant_agents(&self, tenant: &str, limit: usize) -> Result<Vec<String>>;

    /// Deletes everything this backend holds about the agent: its record, name, API keys and
    /// owner link; its mailbox (entries, acknowledgement records, id index, positions) and
    /// the [`message_marker`]s of every id the mailbox knows; its receipts; its presence
    /// sessions. Jobs are not included (their data is the caller's
    /// format: [`deletion`] removes them by kind). Idempotent: a purge that stopped
    /// half-way is finished by the next call; the agent record goes last, so the agent is
    /// listed by [`tenant_agents`](Self::tenant_agents) until its purge is complete.
    async fn purge_agent(&self, agent_id: &str) -> Result<AgentPurge>;
}

/// A whole backend.
#[async_trait]
pub trait StoreBackend:
    Registry + Mailboxes + Receipts + Jobs + Kv + Presence + Records + Attachments + Purge + 'static
{
    /// Whether the backend can serve requests (for `/readyz`).
    async fn ready(&self) -> bool;
    /// Finishes pending writes and releases resources (graceful shutdown).
    async fn close(&self) -> Result<()>;
}

/// The store services hold: a cheap clone around the backend.
#[derive(Clone)]
pub struct Store(Arc<dyn StoreBackend>);

impl Store {
    /// Wraps a backend.
    pub fn new(backend: impl StoreBackend) -> Self {
        Self(Arc::new(backend))
    }

    /// Drops this handle once it is the last one, waiting at most `within` for the others
    /// (a task finishing its last write after shutdown) to go. Dropping the last handle
    /// releases the backend: for the embedded store, its file lock, so the next process can
    /// open the data directory. Returns `false` when other handles were still alive at the
    /// deadline (this one is dropped anyway).
    pub async fn release(self, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while Arc::strong_count(&self.0) > 1 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }
}

impl std::ops::Deref for Store {
    type Target = dyn StoreBackend;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}
