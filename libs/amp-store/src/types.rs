//! The records the store keeps. Only our own types: no backend type leaks out.
//!
//! Times are unix milliseconds (`i64`) so every backend stores them the same way.

use serde::{Deserialize, Serialize};

/// Unix milliseconds.
pub type Millis = i64;

/// A 32-byte keyed hash of an API key or user key (the store never sees the secret).
pub type KeyHash = [u8; 32];

/// An agent's delivery preferences.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryPrefs {
    /// Webhook URL, if the agent has one.
    pub webhook_url: Option<String>,
    /// Webhook HMAC secret (only ever returned to the delivery service).
    pub webhook_secret: Option<String>,
    /// Try the WebSocket before the webhook (default true).
    pub prefer_websocket: bool,
}

/// Whether an agent can still send and receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AgentStatus {
    /// Registered and usable.
    Active,
    /// Deregistered at this time; its name is held for a while afterwards.
    Deregistered {
        /// When.
        at: Millis,
    },
}

/// A public key the agent used before a key rotation, kept so verification history stays
/// explainable (`verified_at` of queued messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastKey {
    /// Raw 32-byte Ed25519 key, hex.
    pub public_key_hex: String,
    /// When it stopped being the agent's key.
    pub replaced_at: Millis,
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// `agt_<hex>`.
    pub id: String,
    /// Full address, lowercase.
    pub address: String,
    /// The tenant (rightmost scope label).
    pub tenant: String,
    /// The agent name (local part).
    pub name: String,
    /// The full scope (`repo.platform.tenant`).
    pub scope: String,
    /// Display name.
    pub alias: Option<String>,
    /// Raw 32-byte Ed25519 public key, hex.
    pub public_key_hex: String,
    /// `Ed25519`.
    pub key_algorithm: String,
    /// `SHA256:…`.
    pub fingerprint: String,
    /// Keys replaced by rotation, oldest first.
    #[serde(default)]
    pub past_keys: Vec<PastKey>,
    /// Delivery preferences.
    pub delivery: DeliveryPrefs,
    /// Arbitrary metadata as JSON text, unvalidated.
    pub metadata: Option<String>,
    /// The owner who registered it with a user key.
    pub owner_id: Option<String>,
    /// Registration time.
    pub registered_at: Millis,
    /// Last authenticated request, coarse.
    pub last_seen_at: Option<Millis>,
    /// Active or deregistered.
    pub status: AgentStatus,
    /// Capabilities as the agent declared them (spec 08), kept verbatim and in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Whom the agent may message (spec 03); `None` is `open`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communication_policy: Option<CommunicationPolicy>,
    /// The Agent Card the agent signed (spec 02), compact JSON as verified on submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_card: Option<String>,
}

/// An agent's communication policy (spec 03): with `restricted`, the only recipients it may
/// message are those matching an entry of `allowed_recipients`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommunicationPolicy {
    /// `open` or `restricted`.
    pub mode: PolicyMode,
    /// `name@domain` patterns; `*` as the name, and `*.` leading the domain, are wildcards.
    #[serde(default)]
    pub allowed_recipients: Vec<String>,
}

/// The mode of a [`CommunicationPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Any recipient.
    Open,
    /// Only `allowed_recipients`.
    Restricted,
}

impl AgentRecord {
    /// Whether the agent is active.
    pub fn is_active(&self) -> bool {
        self.status == AgentStatus::Active
    }
}

/// What an API key hash maps to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// The agent the key belongs to.
    pub agent_id: String,
    /// When the key was issued.
    pub created_at: Millis,
    /// `None` for the current key; the end of the grace period for a rotated-out key.
    pub valid_until: Option<Millis>,
}

impl ApiKeyRecord {
    /// Whether the key is usable at `now`.
    pub fn is_valid_at(&self, now: Millis) -> bool {
        self.valid_until.is_none_or(|t| now < t)
    }
}

/// An owner account (spec 03 owner authentication).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// `usr_…`.
    pub id: String,
    /// The tenant the owner's agents go into.
    pub tenant: String,
    /// Most agents the owner may have.
    pub agent_limit: u32,
    /// A suspended owner's user keys stop working.
    pub suspended: bool,
}

/// A message to add to a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMailboxEntry {
    /// The recipient agent.
    pub agent_id: String,
    /// `envelope.id`.
    pub message_id: String,
    /// The sender's address: with `message_id`, the key that makes retries idempotent.
    pub sender: String,
    /// The sender's signature, to tell a retry from a different message with the same id.
    pub signature: String,
    /// The stored message (JSON: envelope, payload, annotations), opaque to the store.
    pub data: String,
    /// When it was accepted.
    pub queued_at: Millis,
    /// When it expires.
    pub expires_at: Millis,
    /// Refuse the message when the mailbox already holds this many queued entries.
    #[serde(default)]
    pub max_queued: Option<u64>,
}

/// A message in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxEntry {
    /// Position in the agent's mailbox, increasing (the cursor).
    pub seq: u64,
    /// `envelope.id`.
    pub message_id: String,
    /// The sender's address.
    pub sender: String,
    /// The stored message, as given to [`NewMailboxEntry::data`].
    pub data: String,
    /// When it was accepted.
    pub queued_at: Millis,
    /// When it expires.
    pub expires_at: Millis,
}

/// What [`crate::Mailboxes::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Added at this sequence number.
    New {
        /// The new entry's position.
        seq: u64,
    },
    /// The same sender, id and signature were already accepted: nothing added.
    Duplicate {
        /// The earlier entry's position.
        seq: u64,
    },
    /// The same sender and id were accepted with another signature: refused.
    Conflict,
    /// The mailbox holds `max_queued` entries already: refused, nothing dropped.
    Full,
}

/// One page of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxPage {
    /// Queued entries, oldest first.
    pub entries: Vec<MailboxEntry>,
    /// Queued entries after the last one returned.
    pub remaining: u64,
    /// The newest position assigned so far (the cursor of "now").
    pub head: u64,
}

/// Counts of a mailbox without bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxCount {
    /// Queued, unexpired entries.
    pub count: u64,
    /// When the oldest of them was queued.
    pub oldest_queued_at: Option<Millis>,
    /// The newest position assigned so far.
    pub head: u64,
    /// Positions at or below this were purged; a cursor below it is no longer recognised.
    pub floor: u64,
}

/// The outcome of acknowledging one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Moved from queued to acknowledged now.
    Acked,
    /// Was already acknowledged.
    AlreadyAcked,
    /// Not in this agent's mailbox (never was, expired and purged, or another agent's).
    NotFound,
}

/// What [`crate::Mailboxes::ack`] did with one id: the outcome and, when this call moved the
/// message out of the queue, the entry that left it. The caller learns the entry's size,
/// expiry and stored message (does it want a delivery receipt?) from the acknowledgement's
/// own read, instead of reading every id again before acknowledging it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// What happened to the id.
    pub outcome: AckOutcome,
    /// The entry that left the mailbox: `Some` exactly when `outcome` is
    /// [`AckOutcome::Acked`] (an id repeated within one call is removed by its first
    /// occurrence only).
    pub removed: Option<MailboxEntry>,
}

impl Acked {
    /// An id this call acknowledged: `entry` left the mailbox.
    pub fn newly(entry: MailboxEntry) -> Self {
        Self {
            outcome: AckOutcome::Acked,
            removed: Some(entry),
        }
    }

    /// An id acknowledged before this call (or earlier in it).
    pub fn already_acked() -> Self {
        Self {
            outcome: AckOutcome::AlreadyAcked,
            removed: None,
        }
    }

    /// An id not in the mailbox.
    pub fn not_found() -> Self {
        Self {
            outcome: AckOutcome::NotFound,
            removed: None,
        }
    }
}

/// The state of one message in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryState {
    /// Waiting for pickup.
    Queued(MailboxEntry),
    /// Acknowledged by the recipient.
    Acked {
        /// The sender's address.
        sender: String,
    },
}

/// A receipt retained for a sender (spec 12.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Position in the sender's receipt queue (set by the store).
    pub seq: u64,
    /// The frame as it will be sent (`{"type":"message.read","data":{…}}`), opaque.
    pub data: String,
    /// When it was retained.
    pub created_at: Millis,
    /// When it may be dropped.
    pub expires_at: Millis,
}

/// A durable timer: work due at a time (webhook retries, federation retries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id; scheduling the same id again replaces the job.
    pub id: String,
    /// What kind of work (`webhook`, `federation`).
    pub kind: String,
    /// When it is due.
    pub due_at: Millis,
    /// Attempts made so far.
    pub attempt: u32,
    /// The work, opaque.
    pub data: String,
}

/// An uploaded attachment's metadata (spec 04 "Attachments", 08 "Attachments"). The bytes
/// live in a blob store under [`ReceivedBlob::blob`]; this record is the truth about them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// `att_<unix seconds>_<hex>`.
    pub id: String,
    /// The uploader's tenant.
    pub tenant: String,
    /// The uploading agent's id: the only sender who may reference it.
    pub owner_id: String,
    /// The uploading agent's address.
    pub owner_address: String,
    /// The sanitised filename.
    pub filename: String,
    /// The declared MIME type.
    pub content_type: String,
    /// The declared size in bytes.
    pub size: u64,
    /// The declared digest, `sha256:<hex>`.
    pub digest: String,
    /// When the upload was requested.
    pub created_at: Millis,
    /// Hex SHA-256 of the single-use upload token; `None` once the upload URL was used.
    pub upload_token_sha256: Option<String>,
    /// When the upload URL stops working.
    pub upload_expires_at: Millis,
    /// The bytes as received, once they were.
    pub received: Option<ReceivedBlob>,
    /// When the upload was confirmed (the 2 h bound of spec 04 runs from here).
    pub confirmed_at: Option<Millis>,
    /// `pending`, `clean`, `basic_clean`, `suspicious` or `rejected`.
    pub scan_status: String,
    /// When the scan finished.
    pub scanned_at: Option<Millis>,
    /// Why the scan flagged or rejected it (check names), for `local.security`.
    pub scan_flags: Vec<String>,
    /// The message that references it, once one was routed.
    pub used_by: Option<AttachmentUse>,
    /// When the record and its bytes are deleted.
    pub expires_at: Millis,
    /// Where to POST the scan's outcome (spec-next 08's `scan_callback_url`), if asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_callback_url: Option<String>,
}

/// The bytes of an attachment as the provider received them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedBlob {
    /// The blob's name in the blob store.
    pub blob: String,
    /// Bytes received.
    pub size: u64,
    /// `sha256:<hex>` of the bytes received.
    pub digest: String,
    /// When.
    pub at: Millis,
}

/// The one routed message that references an attachment (spec 04: at most one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentUse {
    /// What identifies the message across retries (a hash of its signature and payload):
    /// a retry of the same route is not a second use.
    pub fingerprint: String,
    /// The recipient's address: the other agent who may read the attachment.
    pub recipient: String,
    /// When it was routed (the 7-day TTL runs from here).
    pub routed_at: Millis,
}

/// A record with the revision a compare-and-set needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The record.
    pub value: T,
    /// Its revision: changes with every write.
    pub revision: u64,
}

/// What [`crate::Purge::purge_agent`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPurge {
    /// Mailbox entries, queued or acknowledged (acknowledgement records included).
    pub messages: u64,
    /// Receipts retained for the agent.
    pub receipts: u64,
}

/// One row of a backend's whole-store scan (`scan_rows` of the redb, JetStream and CQL
/// stores): what tests that must prove something is gone look through, rather than asking
/// the API.
#[derive(Debug, Clone)]
pub struct ScannedRow {
    /// The table, bucket or stream.
    pub table: String,
    /// The key or subject, as text (escaped tokens decoded).
    pub key: String,
    /// The value as text (JSON values as they are).
    pub value: String,
}
