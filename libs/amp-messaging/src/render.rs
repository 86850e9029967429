//! A mailbox entry as agents receive it, in a pickup page or a WebSocket `message.new` frame:
//! serialised straight from the stored text, so payloads (and their number literals) are
//! copied byte for byte, never re-parsed into a `serde_json::Value`.

use amp_proto::relay::StoredMessage;
use amp_proto::{Envelope, Timestamp};
use amp_store::MailboxEntry;
use serde::Serialize;
use serde_json::value::RawValue;

/// One message as delivered (spec 05 pickup item, spec 08 `message.new` data).
#[derive(Serialize)]
pub struct Item<'a> {
    /// The message id.
    pub id: &'a str,
    /// The envelope.
    pub envelope: &'a Envelope,
    /// The payload, byte for byte.
    pub payload: &'a RawValue,
    /// When it was queued.
    pub queued_at: String,
    /// When it expires.
    pub expires_at: String,
    /// The sender's key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_public_key: Option<&'a str>,
    /// The mailbox cursor of this message.
    pub cursor: String,
    /// Provider annotations (spec 07 `local.security`).
    pub local: Local<'a>,
    /// Set on WebSocket pushes: whether this is a replay (spec 12.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<bool>,
}

/// Provider annotations.
#[derive(Serialize)]
pub struct Local<'a> {
    /// The content-security decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security: Option<&'a RawValue>,
}

impl<'a> Item<'a> {
    /// The item of a stored entry.
    pub fn new(entry: &MailboxEntry, message: &'a StoredMessage, replay: Option<bool>) -> Self {
        Item {
            id: message.envelope.id.as_str(),
            envelope: &message.envelope,
            payload: message.payload.as_raw(),
            queued_at: rfc3339(entry.queued_at),
            expires_at: rfc3339(entry.expires_at),
            sender_public_key: message.sender_public_key.as_deref(),
            cursor: cursor(entry.seq),
            local: Local {
                security: message.security.as_deref(),
            },
            replay,
        }
    }
}

/// The opaque cursor of a mailbox position (SPEC-CHECKLIST §4.37).
pub fn cursor(seq: u64) -> String {
    format!("c_{seq}")
}

/// Unix milliseconds as RFC 3339 (empty when out of range).
pub fn rfc3339(ms: i64) -> String {
    Timestamp::from_unix_millis(ms).map_or_else(String::new, Timestamp::to_rfc3339)
}
