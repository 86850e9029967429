//! Spec-next 07's checks on a message's signer and clock, shared by every acceptance path
//! (REST, WebSocket `route` frames, federation inbound):
//!
//! - a message signed with a revoked key is `403 key_revoked` ([`refuse_revoked_signer`] for
//!   a local sender's earlier key, [`refuse_revoked_current`] for its current one, revoked
//!   by an operator or by itself, [`refuse_revoked_key`] for a federated one);
//! - a message whose timestamp is more than [`MAX_FUTURE_SECS`] ahead of our clock is `400
//!   timestamp_future` ([`refuse_future`]).
//!
//! The list itself lives in the store ([`amp_store::revocation`]).

use amp_proto::signing::{SignedFields, verify_message};
use amp_proto::{ApiError, ErrorCode, PublicKey, Timestamp};
use amp_store::revocation::{self, Revocation};
use amp_store::{AgentRecord, Store};

/// The clock skew tolerated ahead of ours (07: "more than 60 seconds in the future").
pub const MAX_FUTURE_SECS: i64 = 60;

/// Past keys of an agent tried against a failed signature, newest first: rotations are rare,
/// and this bounds the work a forged signature can cause.
const MAX_PAST_KEYS: usize = 16;

/// `400 timestamp_future` when `timestamp` is more than [`MAX_FUTURE_SECS`] after `now`.
pub fn refuse_future(timestamp: Timestamp, now: Timestamp) -> Result<(), ApiError> {
    if timestamp > now.plus_secs(MAX_FUTURE_SECS) {
        return Err(ApiError::new(
            ErrorCode::TimestampFuture,
            format!(
                "timestamp is more than {MAX_FUTURE_SECS} s ahead of this provider's clock (now {now})"
            ),
        )
        .with_field("timestamp"));
    }
    Ok(())
}

/// [`refuse_future`] for the timestamp a local client sent, if it sent one. The provider
/// assigns the message's timestamp anyway (spec-next 04); one the client's clock put far in
/// the future is still refused (07), and one that does not parse is ignored, as before.
pub fn refuse_future_client_timestamp(text: Option<&str>, now: Timestamp) -> Result<(), ApiError> {
    match text.and_then(Timestamp::parse) {
        Some(t) => refuse_future(t, now),
        None => Ok(()),
    }
}

fn key_revoked(entry: &Revocation) -> ApiError {
    ApiError::new(
        ErrorCode::KeyRevoked,
        format!(
            "the message is signed with a revoked public key ({})",
            entry.fingerprint
        ),
    )
    .with_field("signature")
}

/// For a signature that did not verify against `sender`'s current key: `403 key_revoked`
/// when it verifies against one of the agent's earlier keys that is on the revocation list
/// (a rotation or a revocation made it so), else nothing (the caller's `signature_invalid`
/// stands). Reads the agent's record afresh: a rotation made on another replica may not
/// have reached this one's cache. Only runs on a failed signature, so an accepted message
/// costs no read.
///
/// Fails with `503` when the store does not answer.
pub async fn refuse_revoked_signer(
    store: &Store,
    sender: &AgentRecord,
    fields: &SignedFields<'_>,
    payload: &str,
    signature: &str,
) -> Result<(), ApiError> {
    let fresh = store
        .agent(&sender.id)
        .await
        .map_err(crate::store_err)?
        .unwrap_or_else(|| sender.clone());
    let current = std::iter::once(fresh.public_key_hex.as_str());
    let past = fresh
        .past_keys
        .iter()
        .rev()
        .take(MAX_PAST_KEYS)
        .map(|k| k.public_key_hex.as_str());
    for hex in current.chain(past) {
        let Ok(key) = PublicKey::parse(hex) else {
            continue;
        };
        if verify_message(&key, fields, payload, signature).is_ok() {
            return match revocation::revoked(store, &key.fingerprint())
                .await
                .map_err(crate::store_err)?
            {
                Some(entry) => Err(key_revoked(&entry)),
                None => Ok(()),
            };
        }
    }
    Ok(())
}

/// `403 key_revoked` when `fingerprint`, the current key of the agent `agent_id` that just
/// verified a message's signature, is on the revocation list: an operator revoked it
/// without replacing it (`admin_action`), or the agent revoked it itself. Read through the
/// [`RegistryCache`](crate::RegistryCache) (the revocation's event drops the cached "no"),
/// so an accepted message costs no store read while the answer is cached.
///
/// Fails with `503` when the store does not answer.
pub async fn refuse_revoked_current(
    cache: &crate::RegistryCache,
    agent_id: &str,
    fingerprint: &str,
) -> Result<(), ApiError> {
    match cache
        .current_key_revocation(agent_id, fingerprint)
        .await
        .map_err(crate::store_err)?
    {
        Some(entry) => Err(key_revoked(&entry)),
        None => Ok(()),
    }
}

/// `403 key_revoked` when `key`, which signed a message federated by `provider`, is on our
/// revocation list or on what that provider reported (`X-AMP-Key-Revoked`).
///
/// Fails with `503` when the store does not answer.
pub async fn refuse_revoked_key(
    store: &Store,
    provider: &str,
    key: &PublicKey,
) -> Result<(), ApiError> {
    match revocation::revoked_for_peer(store, provider, &key.fingerprint())
        .await
        .map_err(crate::store_err)?
    {
        Some(entry) => Err(key_revoked(&entry)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_next_future_timestamps_beyond_60_s_are_refused() {
        let now = Timestamp::now();
        assert!(refuse_future(now.plus_secs(60), now).is_ok());
        let e = refuse_future(now.plus_secs(61), now).expect_err("refused");
        assert_eq!(e.code, ErrorCode::TimestampFuture);
        assert_eq!(e.code.status(), 400);
        assert!(refuse_future(now.plus_secs(-3600), now).is_ok());
        assert!(refuse_future_client_timestamp(Some("not a time"), now).is_ok());
        assert!(refuse_future_client_timestamp(None, now).is_ok());
        let far = now.plus_secs(120).to_rfc3339();
        assert!(refuse_future_client_timestamp(Some(&far), now).is_err());
    }
}
