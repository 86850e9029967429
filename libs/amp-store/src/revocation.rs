//! The key revocation list (spec-next 07): fingerprints of public keys that no longer sign
//! anything, each kept for the provider's retention period (at least 90 days by the spec).
//!
//! Built on two calls every backend already passes the conformance suite with, so no
//! backend has code of its own for it:
//! - the lookup, by fingerprint, is a [`Kv`](crate::Kv) value with an expiry (the end of the
//!   retention): `revoked/<fingerprint>` for this provider's own revocations,
//!   `revoked-by/<provider>/<fingerprint>` for what a federation peer reported
//!   (`X-AMP-Key-Revoked`), so a peer can only ever revoke keys for messages it sends itself,
//!   never a key of ours;
//! - the feed of this provider's recent revocations, newest first, which outbound federation
//!   announces to its peers, is a [`Records`](crate::Records) collection whose ids sort by
//!   inverted time; entries past the retention are removed as new ones are written.
//!
//! A tenant purge leaves both alone (they are keyed by key, not by agent): the spec forbids
//! removing an entry within its retention, even after the agent is gone.

use serde::{Deserialize, Serialize};

use crate::{Millis, PutMode, Result, Store};

/// The spec's minimum retention (07: "at least 90 days"), the default.
pub const DEFAULT_RETENTION_SECS: u64 = 90 * 24 * 3600;

/// The [`Records`](crate::Records) collection of the feed.
pub const FEED: &str = "key-revocations";

/// Most feed entries past their retention removed per new revocation (the rest go with the
/// next ones).
const PRUNE_BATCH: usize = 64;

/// Why a key was revoked (spec-next 07's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// `DELETE /v1/auth/revoke-key`.
    KeyCompromise,
    /// `POST /v1/auth/rotate-keys`: superseded by a new key.
    KeyRotation,
    /// The agent was deregistered.
    AgentDeregistered,
    /// An operator revoked it.
    AdminAction,
}

/// One entry of the list (spec-next 07's revocation record, times in unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// `SHA256:<base64>` of the revoked key.
    pub fingerprint: String,
    /// The agent whose key it was (empty when a peer reported it: the header names none).
    #[serde(default)]
    pub agent_address: String,
    /// When it was revoked (or, for a peer's report, when it was received).
    pub revoked_at: Millis,
    /// Why.
    pub reason: Reason,
    /// The replacing key's fingerprint, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// The peer provider that reported it; `None` for this provider's own revocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_by: Option<String>,
}

fn own_key(fingerprint: &str) -> String {
    format!("revoked/{fingerprint}")
}

fn reported_key(provider: &str, fingerprint: &str) -> String {
    format!("revoked-by/{provider}/{fingerprint}")
}

/// A feed id: the inverted revocation time (so ids sort newest first), then the fingerprint
/// in the characters a record id may hold.
fn feed_id(revoked_at: Millis, fingerprint: &str) -> String {
    let fp: String = fingerprint
        .trim_start_matches("SHA256:")
        .chars()
        .filter_map(|c| match c {
            '+' => Some('-'),
            '/' => Some('_'),
            c if c.is_ascii_alphanumeric() => Some(c),
            _ => None,
        })
        .take(64)
        .collect();
    format!("{:019}.{fp}", inverted(revoked_at))
}

fn inverted(t: Millis) -> i64 {
    i64::MAX - t.max(0)
}

fn decode(bytes: &[u8]) -> Result<Revocation> {
    serde_json::from_slice(bytes)
        .map_err(|e| crate::Error::Corrupt(format!("revocation entry: {e}")))
}

fn encode(r: &Revocation) -> Vec<u8> {
    // Plain strings, numbers and an enum: serialising cannot fail.
    serde_json::to_vec(r).unwrap_or_default()
}

/// A configured retention or window in seconds as [`Millis`], saturating at the largest
/// (any `u64` a config file holds is accepted).
pub fn secs_to_millis(secs: u64) -> Millis {
    i64::try_from(secs)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

/// Adds `entry` to the list until `revoked_at + retention_ms`. This provider's own entries
/// (`reported_by: None`) also go into the feed; a peer's report is kept apart and never
/// replaces one of ours. Idempotent: revoking a key again restarts its retention.
pub async fn revoke(store: &Store, entry: &Revocation, retention_ms: Millis) -> Result<()> {
    let until = entry.revoked_at.saturating_add(retention_ms);
    let value = encode(entry);
    match &entry.reported_by {
        Some(peer) => {
            store
                .put(&reported_key(peer, &entry.fingerprint), value, Some(until))
                .await
        }
        None => {
            // The feed first: a lookup that finds the key revoked implies peers will hear
            // of it.
            store
                .record_put(
                    FEED,
                    &feed_id(entry.revoked_at, &entry.fingerprint),
                    value.clone(),
                    PutMode::Replace,
                )
                .await?;
            store
                .put(&own_key(&entry.fingerprint), value, Some(until))
                .await?;
            prune_feed(store, entry.revoked_at - retention_ms).await
        }
    }
}

/// Removes feed entries revoked before `cutoff` (their retention is over), a batch at most.
async fn prune_feed(store: &Store, cutoff: Millis) -> Result<()> {
    // Ids sort newest first: every id after the cutoff's is older.
    let after = format!("{:019}/", inverted(cutoff));
    for (id, _) in store.record_list(FEED, Some(&after), PRUNE_BATCH).await? {
        store.record_take(FEED, &id).await?;
    }
    Ok(())
}

/// This provider's own entry for `fingerprint`, while its retention lasts.
pub async fn revoked(store: &Store, fingerprint: &str) -> Result<Option<Revocation>> {
    match store.get(&own_key(fingerprint)).await? {
        Some(v) => decode(&v).map(Some),
        None => Ok(None),
    }
}

/// The entry that refuses `fingerprint` in a message federated by `provider`: ours, or one
/// that provider reported.
pub async fn revoked_for_peer(
    store: &Store,
    provider: &str,
    fingerprint: &str,
) -> Result<Option<Revocation>> {
    if let Some(r) = revoked(store, fingerprint).await? {
        return Ok(Some(r));
    }
    match store.get(&reported_key(provider, fingerprint)).await? {
        Some(v) => decode(&v).map(Some),
        None => Ok(None),
    }
}

/// This provider's own revocations made at `since` or later, newest first, at most `limit`.
pub async fn recent(store: &Store, since: Millis, limit: usize) -> Result<Vec<Revocation>> {
    let mut out = Vec::new();
    for (_, v) in store.record_list(FEED, None, limit).await? {
        let r = decode(&v)?;
        if r.revoked_at < since {
            break;
        }
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_ids_sort_newest_first_and_are_valid_record_ids() {
        let a = feed_id(1_000, "SHA256:ab+c/d=");
        let b = feed_id(2_000, "SHA256:zz");
        assert!(b < a, "{b} sorts before {a}");
        assert!(a.len() <= 128);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{a}"
        );
        assert!(a.ends_with(".ab-c_d"), "{a}");
        // The prune bound sorts after the ids of its own instant and before older ones.
        let bound = format!("{:019}/", inverted(1_000));
        assert!(a < bound && bound < feed_id(999, "SHA256:x"));
    }
}
