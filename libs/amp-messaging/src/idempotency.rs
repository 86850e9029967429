//! Idempotency of `/v1/route` (spec-next 04 "Idempotency", 08 route): a sender's key, or the
//! message id an older client chose, names one message for 7 days.
//!
//! - [`Key`]: what names the message (an explicit `idempotency_key`, or the client's id), in
//!   its scope (the sending agent), and the id the provider gives the message for it:
//!   derived from scope and key, so every retry, on any replica, lands on the same mailbox
//!   key and the mailbox's duplicate rule (`Mailboxes::enqueue` on (recipient, id)) keeps
//!   one copy even when two attempts race past the record below.
//! - [`Record`]: the first answer (status and body) and the request's fingerprint, kept in the
//!   store's expiring values ([`amp_store::Kv`], all three backends) under [`Key::store_key`]
//!   for [`RETENTION_MS`]. A retry with the same fingerprint gets the answer again without
//!   being routed; another request with the key is `409`.
//! - [`fingerprint`]: what "the same request" means: every field the sender chose except the
//!   ones the provider overwrites (`id`, `timestamp`) and the key itself.

use amp_proto::{ApiError, ErrorCode, MessageId};
use amp_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How long a key names its message: the spec's SHOULD (7 days, the relay lifetime; the MUST
/// is 24 hours).
pub const RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// The prefix of every record's store key (the composed store keeps these beside the
/// mailboxes: one per keyed message).
pub const STORE_PREFIX: &str = "idem/";

/// What names a message across retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The `idempotency_key` of spec-next 04/08.
    Explicit,
    /// The `envelope.id` of a client built on the older text, which the provider replaces
    /// but still honours as the message's name.
    ClientId,
}

/// A key in its scope.
#[derive(Debug, Clone)]
pub struct Key {
    kind: Kind,
    digest: [u8; 32],
    /// The digits of a client id (its creation time), kept in the derived id.
    time: String,
}

impl Key {
    /// `key` of `kind` for messages from `scope` (the sending agent's id, or a federated
    /// sender's address).
    pub fn new(kind: Kind, scope: &str, key: &str) -> Self {
        let tag = match kind {
            Kind::Explicit => "key",
            Kind::ClientId => "id",
        };
        let digest: [u8; 32] = Sha256::new()
            .chain_update(b"amp-idempotency-v1\n")
            .chain_update(scope.as_bytes())
            .chain_update(b"\n")
            .chain_update(tag.as_bytes())
            .chain_update(b"\n")
            .chain_update(key.as_bytes())
            .finalize()
            .into();
        // A client id's time part survives in the derived id (`msg_<its millis>_<ours>`) when
        // it is of a sane length; an explicit key carries no time, and the id must not depend
        // on the moment of the attempt (two racing attempts must derive the same id).
        let time = match kind {
            Kind::ClientId => key
                .strip_prefix("msg_")
                .and_then(|r| r.split_once('_'))
                .map(|(t, _)| t)
                .filter(|t| (1..=16).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()))
                .unwrap_or("0")
                .to_owned(),
            Kind::Explicit => "0".to_owned(),
        };
        Self { kind, digest, time }
    }

    /// Which kind of key this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The id the provider gives the message: `msg_<time>_<16 hex>`, the same for every
    /// attempt with this key in this scope.
    pub fn message_id(&self) -> MessageId {
        MessageId::from_trusted(format!(
            "msg_{}_{}",
            self.time,
            hex::encode(&self.digest[..8])
        ))
    }

    /// Where the [`Record`] lives in the store's expiring values.
    pub fn store_key(&self) -> String {
        format!("{STORE_PREFIX}{}", hex::encode(&self.digest[8..24]))
    }

    /// The error a request gets when the key was used for another request.
    pub fn conflict(&self) -> ApiError {
        match self.kind {
            Kind::Explicit => ApiError::new(
                ErrorCode::DuplicateIdempotencyKey,
                "this idempotency_key was already used with a different request",
            )
            .with_field("idempotency_key"),
            Kind::ClientId => ApiError::new(
                ErrorCode::DuplicateMessage,
                "a different message with this id was already sent",
            )
            .with_field("id"),
        }
    }
}

/// The first answer to a keyed request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// [`fingerprint`] of the request.
    pub fp: String,
    /// The HTTP status it got (200, or 202 when the outcome was not known yet).
    pub status: u16,
    /// The body it got.
    pub body: Value,
}

/// What makes two requests "the same": the given fields (empty for absent ones), each
/// length-prefixed so no two lists collide.
pub fn fingerprint(fields: &[&str]) -> String {
    let mut h = Sha256::new();
    for f in fields {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// The record of `key`, if one is kept.
///
/// Fails like the store.
pub async fn lookup(store: &Store, key: &Key) -> Result<Option<Record>, amp_store::Error> {
    match store.get(&key.store_key()).await? {
        // An unreadable record (a format from a later version) names nothing we can replay.
        Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        None => Ok(None),
    }
}

/// Keeps `record` under `key` for [`RETENTION_MS`] from `now`. A failure is logged and
/// otherwise ignored: the message is accepted already, and a retry still lands on the same
/// id (the mailbox keeps one copy).
pub async fn remember(store: &Store, key: &Key, record: &Record, now: amp_store::Millis) {
    let Ok(bytes) = serde_json::to_vec(record) else {
        return;
    };
    if let Err(e) = store
        .put(
            &key.store_key(),
            bytes,
            Some(now.saturating_add(RETENTION_MS)),
        )
        .await
    {
        tracing::warn!(error = %e, "idempotency record not written");
    }
}

/// The replayed answer, or the conflict, for a request with fingerprint `fp` whose key has
/// `record`.
pub fn replay(key: &Key, record: Record, fp: &str) -> Result<Record, ApiError> {
    if record.fp == fp {
        Ok(record)
    } else {
        Err(key.conflict())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_depend_on_scope_kind_and_key_only() {
        let a = Key::new(Kind::Explicit, "agt_a", "idk_1").message_id();
        assert_eq!(a, Key::new(Kind::Explicit, "agt_a", "idk_1").message_id());
        assert!(MessageId::is_valid(a.as_str()), "{a:?}");
        assert!(a.as_str().starts_with("msg_0_"), "{a:?}");
        assert_ne!(a, Key::new(Kind::Explicit, "agt_b", "idk_1").message_id());
        assert_ne!(a, Key::new(Kind::Explicit, "agt_a", "idk_2").message_id());
        assert_ne!(a, Key::new(Kind::ClientId, "agt_a", "idk_1").message_id());
        let c = Key::new(Kind::ClientId, "agt_a", "msg_1700000000000_deadbeef").message_id();
        assert!(c.as_str().starts_with("msg_1700000000000_"), "{c:?}");
        assert_ne!(c.as_str(), "msg_1700000000000_deadbeef");
        let long = format!("msg_{}_ab", "1".repeat(40));
        let l = Key::new(Kind::ClientId, "agt_a", &long).message_id();
        assert!(l.as_str().starts_with("msg_0_"), "{l:?}");
    }

    #[test]
    fn fingerprints_tell_field_boundaries_apart() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
        assert_eq!(fingerprint(&["a", ""]), fingerprint(&["a", ""]));
    }
}
