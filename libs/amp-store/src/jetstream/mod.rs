//! The JetStream backend: the whole store in NATS, so a cluster needs nothing else and any
//! number of processes share it. Every write returns once JetStream acknowledged it (a
//! `PubAck` or KV revision), which with the server's `sync_interval: always` survives a kill
//! -9 of the server; with `replicas: 3` it survives the loss of a node.
//!
//! # Layout (names under [`JetStreamStoreConfig::prefix`])
//! - Stream `AMP_MAILBOX`, subjects `amp.mbox.<agent>.q.<message id>`: one message per queued
//!   entry (body = the stored data; header `Amp-Entry` with id, sender, signature, queued and
//!   expiry times; `Nats-TTL` so the server drops it after its expiry), and
//!   `amp.mbox.<agent>.a.<message id>`: its acknowledgement tombstone. The **stream sequence
//!   is the entry's `seq`**: increasing per agent (gaps are fine for cursors). With
//!   `mailbox_partitions` N above 1, partition k of 1..N is stream `AMP_MAILBOX_<k>` with
//!   subjects `amp.mboxp.<k>.<agent>…`, and an agent's mailbox lives whole in partition
//!   `fnv1a(agent id) mod N` (0 is `AMP_MAILBOX`); N is recorded as `layout.mailbox_partitions`
//!   in `amp_mailbox_index` when the store is first created and never changes.
//! - Stream `AMP_RECEIPTS`, subjects `amp.rcpt.<agent>`: one message per receipt, `seq` = the
//!   stream sequence, `Nats-TTL` from `expires_at`.
//! - Bucket `amp_registry` (KV layout): `agent.<id>` → the agent with its API keys (the one
//!   record every registry decision reads), `name.<tenant>.<name>` → holder, `key.<hash>` →
//!   agent id (the O(1) lookup), `owner.<id>`, `ownerkey.<hash>` → owner id,
//!   `owned.<owner>.<agent>`.
//! - Bucket `amp_mailbox_index`: `meta.<agent>` → head and floor (the positions that must not
//!   move back when the server drops what expired).
//! - Bucket `amp_state`: `job.<id>`, `pres.<agent>.<session>` (TTL = lease), `kv.<key>`,
//!   `att.<id>` (attachment metadata; its KV revision is the compare-and-set revision).
//!
//! Keys and subject tokens are the strings themselves when made of letters, digits, `-` and
//! `_`, else `=` and their hex (see `conn::tok`).
//!
//! # Atomicity
//! NATS has no multi-key transactions. Each trait method makes one write its **commit point**
//! (a compare-and-set, `Nats-Expected-Last-Subject-Sequence`) and orders the others so a crash
//! between any two leaves a state the readers already treat correctly; see `registry` and
//! `mailboxes` for each method. Retrying a method whose call failed is always safe.
//!
//! # Modules
//! `config` ([`JetStreamStoreConfig`]), `conn` (NATS primitives: buckets, compare-and-set,
//! batched direct gets), `registry`, `mailboxes`, `state` (receipts, jobs, presence, kv),
//! `attachments`, `purge` ([`Purge`]: everything about an agent, for tenant deletion).

mod attachments;
mod blobs;
mod config;
mod conn;
mod mailboxes;
mod purge;
mod records;
mod registry;
mod state;

use async_trait::async_trait;

pub use self::blobs::JetStreamBlobs;
use self::config::MAX_MAILBOX_PARTITIONS;
pub use self::config::{DEFAULT_MAILBOX_PARTITIONS, JetStreamStoreConfig};
use self::conn::Conn;
use crate::{Millis, Result, StoreBackend};

/// Bucket and stream names (before the prefix).
const REGISTRY: &str = "amp_registry";
const INDEX: &str = "amp_mailbox_index";
const STATE: &str = "amp_state";
const MAILBOX: &str = "AMP_MAILBOX";
const RECEIPTS: &str = "AMP_RECEIPTS";

/// The JetStream store. Holds one NATS connection; wrap it in a [`crate::Store`] to share.
pub struct JetStreamStore {
    conn: Conn,
    config: JetStreamStoreConfig,
    registry: String,
    index: String,
    state: String,
    /// The mailbox streams (`mailbox_partitions` of them).
    mailboxes: Box<[MailboxPart]>,
    receipts: String,
    /// Enqueues to one mailbox with a quota are serialised in this process (by a stripe of
    /// the agent id): the quota's compare-and-set then only races other processes, instead
    /// of hundreds of router workers retrying against each other.
    mailbox_locks: Box<[tokio::sync::Mutex<()>]>,
    /// Mailbox counts this process read recently, plus its own writes since (see
    /// `mailboxes::CountHints`): far from a quota, a recent count spares the read.
    counts: mailboxes::CountHints,
}

impl JetStreamStore {
    /// Connects and creates or updates the streams and buckets (idempotent; every process
    /// of a cluster does it at startup). Must be called within a tokio runtime.
    ///
    /// Fails with [`crate::Error::Unavailable`] when the config is invalid, no server
    /// answers within `connect_timeout`, or a stream cannot be created or updated (JetStream
    /// off, a server older than 2.11 without per-message TTL, or an incompatible existing
    /// stream).
    pub async fn connect(config: JetStreamStoreConfig) -> Result<Self> {
        config.validate()?;
        let conn = Conn::connect(&config).await?;
        // The streams and buckets, patiently: a process that starts while JetStream elects
        // a leader (a NATS node just restarted) waits for it rather than exit.
        let transient = |e: &crate::Error| matches!(e, crate::Error::Unavailable(_));
        let partitions = amp_nats::patiently("the store's streams and buckets", transient, || {
            Self::set_up(&conn, &config)
        })
        .await?;
        if let Some(n) = config.mailbox_partitions
            && n != partitions
        {
            return Err(crate::Error::Unavailable(format!(
                "mailbox_partitions is {n}, but this store was created with {partitions}; \
                 it cannot change: set mailbox_partitions = {partitions} (or leave it unset)"
            )));
        }
        let store = Self {
            registry: conn.name(REGISTRY),
            index: conn.name(INDEX),
            state: conn.name(STATE),
            mailboxes: (0..partitions)
                .map(|k| MailboxPart::new(&conn, k))
                .collect(),
            receipts: conn.name(RECEIPTS),
            mailbox_locks: (0..MAILBOX_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            counts: mailboxes::CountHints::default(),
            conn,
            config,
        };
        tracing::info!(
            urls = ?store.config.urls,
            prefix = %store.config.prefix,
            replicas = store.config.replicas,
            mailbox_partitions = partitions,
            "JetStream store connected"
        );
        Ok(store)
    }

    /// Creates or updates every bucket and stream (idempotent); the number of mailbox
    /// streams the store has.
    async fn set_up(conn: &Conn, config: &JetStreamStoreConfig) -> Result<usize> {
        let r = config.replicas;
        let index = conn.name(INDEX);
        conn.ensure_bucket(&index, r, "AMP mailbox index (idempotency, acks)")
            .await?;
        let partitions = layout(conn, &index, config.mailbox_partitions).await?;
        conn.ensure_bucket(
            &conn.name(REGISTRY),
            r,
            "AMP agents, names, API keys, owners",
        )
        .await?;
        conn.ensure_bucket(&conn.name(STATE), r, "AMP jobs, presence, small values")
            .await?;
        for k in 0..partitions {
            let part = MailboxPart::new(conn, k);
            conn.ensure_stream(
                &part.stream,
                &format!("{}.>", part.root),
                r,
                "AMP mailboxes: one subject per message and acknowledgement",
            )
            .await?;
        }
        conn.ensure_stream(
            &conn.name(RECEIPTS),
            &conn.subject("amp.rcpt.>"),
            r,
            "AMP read receipts retained for senders",
        )
        .await?;
        Ok(partitions)
    }

    /// The mailbox stream that holds `agent_id`'s mailbox.
    fn part(&self, agent_id: &str) -> &MailboxPart {
        // `connect` made at least one (the layout is 1 to 64).
        let k = fnv1a(agent_id.as_bytes()) % self.mailboxes.len() as u64;
        &self.mailboxes[k as usize]
    }

    /// How many streams the mailboxes are spread over (the store's, see
    /// [`JetStreamStoreConfig::mailbox_partitions`]).
    pub fn mailbox_partitions(&self) -> usize {
        self.mailboxes.len()
    }

    /// The settings in force.
    pub fn config(&self) -> &JetStreamStoreConfig {
        &self.config
    }

    /// `amp.rcpt.<agent>` under the prefix.
    fn receipt_subject(&self, agent_id: &str) -> String {
        self.conn
            .subject(&format!("amp.rcpt.{}", conn::tok(agent_id)))
    }
}

impl std::fmt::Debug for JetStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The number of mailbox streams of the store: recorded when the store is new (`wanted`, or
/// [`DEFAULT_MAILBOX_PARTITIONS`]); a store from before partitions (its `AMP_MAILBOX` stream
/// exists, nothing recorded) has one. The caller refuses a `wanted` that differs from it:
/// every agent's mailbox would be looked for in another stream.
async fn layout(conn: &Conn, index: &str, wanted: Option<usize>) -> Result<usize> {
    let (recorded, _) = conn.kv_get_json::<u64>(index, LAYOUT_PARTITIONS).await?;
    let recorded = match recorded {
        Some(n) => n,
        None => {
            let first = if conn.stream_exists(&conn.name(MAILBOX)).await? {
                1
            } else {
                wanted.unwrap_or(DEFAULT_MAILBOX_PARTITIONS) as u64
            };
            match conn
                .kv_put_json(
                    index,
                    LAYOUT_PARTITIONS,
                    &first,
                    conn::Expect::Revision(0),
                    None,
                )
                .await?
            {
                Ok(_) => first,
                // Another process recorded it first: its value stands.
                Err(conn::Conflict) => conn
                    .kv_get_json::<u64>(index, LAYOUT_PARTITIONS)
                    .await?
                    .0
                    .unwrap_or(first),
            }
        }
    };
    let recorded = usize::try_from(recorded)
        .ok()
        .filter(|n| (1..=MAX_MAILBOX_PARTITIONS).contains(n))
        .ok_or_else(|| {
            crate::Error::Corrupt(format!(
                "{LAYOUT_PARTITIONS} is {recorded}, not 1 to {MAX_MAILBOX_PARTITIONS}"
            ))
        })?;
    Ok(recorded)
}

/// Where the number of mailbox partitions is recorded (bucket `amp_mailbox_index`).
const LAYOUT_PARTITIONS: &str = "layout.mailbox_partitions";

/// One mailbox stream: its name and its subjects' root (under the prefix).
#[derive(Debug)]
struct MailboxPart {
    stream: String,
    root: String,
}

impl MailboxPart {
    /// Partition `k`: `AMP_MAILBOX` / `amp.mbox` for 0 (the layout from before partitions),
    /// `AMP_MAILBOX_<k>` / `amp.mboxp.<k>` after.
    fn new(conn: &Conn, k: usize) -> Self {
        if k == 0 {
            Self {
                stream: conn.name(MAILBOX),
                root: conn.subject("amp.mbox"),
            }
        } else {
            Self {
                stream: conn.name(&format!("{MAILBOX}_{k}")),
                root: conn.subject(&format!("amp.mboxp.{k}")),
            }
        }
    }
}

/// 64-bit FNV-1a: the stable hash that places an agent's mailbox (it must never change).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Stripes of the per-mailbox enqueue lock.
const MAILBOX_LOCK_STRIPES: usize = 256;

/// A short random pause before retrying a lost compare-and-set: 1 ms to `2 × attempt` ms
/// (at most 50), so racing writers spread out instead of colliding again.
async fn backoff(attempt: usize) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    let cap = (2 * attempt).clamp(1, 50);
    let ms = 1 + nanos % cap;
    tokio::time::sleep(std::time::Duration::from_millis(ms as u64)).await;
}

/// Unix milliseconds by the wall clock (for TTLs only; decisions use the caller's `now`).
fn wall_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

#[async_trait]
impl StoreBackend for JetStreamStore {
    async fn ready(&self) -> bool {
        if !self.conn.ping().await {
            return false;
        }
        // JetStream refused a write of this process for lack of space: not ready until a
        // write of its own shows there is room again (a raised `max_file_store`, acks that
        // freed space), so nothing is routed here meanwhile and it recovers by itself.
        if amp_nats::space::out_of_space() {
            return self.conn.probe_space(&self.state, "amp-space-probe").await;
        }
        true
    }

    async fn close(&self) -> Result<()> {
        // Nothing is buffered: every write already waited for its ack.
        self.conn.close().await;
        Ok(())
    }
}
