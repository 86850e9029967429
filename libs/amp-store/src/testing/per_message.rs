//! Per-message values ([`crate::PER_MESSAGE_VALUES`]): route's idempotency records, kept in
//! [`crate::Kv`] with an expiry on every backend.

use super::{now_ms, unique};
use crate::Store;

const DAY: i64 = 86_400_000;

/// An idempotency record is read back until its expiry (7 days: the spec's SHOULD; at least
/// the MUST's 24 hours), replaced by a later write (the last answer wins), and gone once
/// expired, purge or not.
pub async fn idempotency_records_expire(store: &Store) {
    let key = unique("idem/");
    let now = now_ms();
    store
        .put(
            &key,
            br#"{"fp":"a","status":200}"#.to_vec(),
            Some(now + 7 * DAY),
        )
        .await
        .expect("put");
    store
        .put(
            &key,
            br#"{"fp":"a","status":202}"#.to_vec(),
            Some(now + 7 * DAY),
        )
        .await
        .expect("put");
    assert_eq!(
        store.get(&key).await.expect("get").as_deref(),
        Some(&br#"{"fp":"a","status":202}"#[..])
    );
    let old = unique("idem/");
    store
        .put(&old, b"{}".to_vec(), Some(now - 1))
        .await
        .expect("put");
    assert!(store.get(&old).await.expect("get").is_none(), "expired");
    store.purge_expired(now_ms(), 100_000).await.expect("purge");
    assert!(store.get(&old).await.expect("get").is_none());
    assert!(store.get(&key).await.expect("get").is_some(), "kept");
    store.delete(&key).await.expect("delete");
}
