//! The key revocation list ([`crate::revocation`]) on a backend: lookups by fingerprint, a
//! peer's reports kept apart from ours, the feed of recent revocations, and expiry at the end
//! of the retention.

use super::{now_ms, unique};
use crate::Store;
use crate::revocation::{self, Reason, Revocation};

const DAY: i64 = 86_400_000;

fn entry(fingerprint: &str, revoked_at: i64, reason: Reason) -> Revocation {
    Revocation {
        fingerprint: fingerprint.to_owned(),
        agent_address: "alice@t.example.test".into(),
        revoked_at,
        reason,
        superseded_by: Some("SHA256:new".into()),
        reported_by: None,
    }
}

/// What spec-next 07 asks of the list, on this backend.
pub async fn spec_next_revocation_list(store: &Store) {
    let now = now_ms();
    // Fingerprints hold `+`, `/` and `=`, which keys and record ids must survive.
    let fp = format!("SHA256:{}+a/b=", unique("k"));
    assert!(
        revocation::revoked(store, &fp)
            .await
            .expect("get")
            .is_none()
    );
    let ours = entry(&fp, now, Reason::KeyRotation);
    revocation::revoke(store, &ours, 90 * DAY)
        .await
        .expect("revoke");
    assert_eq!(
        revocation::revoked(store, &fp).await.expect("get"),
        Some(ours.clone())
    );
    // Ours refuses the key from any peer too.
    assert!(
        revocation::revoked_for_peer(store, "peer.test", &fp)
            .await
            .expect("get")
            .is_some()
    );
    let feed = revocation::recent(store, now - 1_000, 1_000)
        .await
        .expect("feed");
    assert!(feed.contains(&ours), "{feed:?}");

    // A peer's report refuses the key only in that peer's messages, is not in our feed, and
    // never replaces our own entry.
    let theirs_fp = format!("SHA256:{}", unique("p"));
    let mut theirs = entry(&theirs_fp, now, Reason::KeyCompromise);
    theirs.agent_address = String::new();
    theirs.superseded_by = None;
    theirs.reported_by = Some("peer.test".into());
    revocation::revoke(store, &theirs, 90 * DAY)
        .await
        .expect("report");
    assert!(
        revocation::revoked(store, &theirs_fp)
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(
        revocation::revoked_for_peer(store, "peer.test", &theirs_fp)
            .await
            .expect("get"),
        Some(theirs.clone())
    );
    assert!(
        revocation::revoked_for_peer(store, "other.test", &theirs_fp)
            .await
            .expect("get")
            .is_none()
    );
    let mut report_of_ours = theirs.clone();
    report_of_ours.fingerprint = fp.clone();
    revocation::revoke(store, &report_of_ours, 90 * DAY)
        .await
        .expect("report");
    assert_eq!(
        revocation::revoked(store, &fp).await.expect("get"),
        Some(ours.clone())
    );
    let feed = revocation::recent(store, now - 1_000, 1_000)
        .await
        .expect("feed");
    assert!(
        !feed.iter().any(|r| r.reported_by.is_some()),
        "reports are not ours to announce: {feed:?}"
    );

    // Past its retention an entry is gone from the lookup, and from the feed once a later
    // revocation prunes it.
    let old_fp = format!("SHA256:{}", unique("o"));
    let old = entry(&old_fp, now - 3 * DAY, Reason::KeyCompromise);
    revocation::revoke(store, &old, DAY).await.expect("old");
    assert!(
        revocation::revoked(store, &old_fp)
            .await
            .expect("get")
            .is_none(),
        "expired"
    );
    let fresh_fp = format!("SHA256:{}", unique("f"));
    revocation::revoke(store, &entry(&fresh_fp, now, Reason::AdminAction), DAY)
        .await
        .expect("fresh");
    let all = revocation::recent(store, 0, 100_000).await.expect("feed");
    assert!(!all.iter().any(|r| r.fingerprint == old_fp), "pruned");
    assert!(all.iter().any(|r| r.fingerprint == fresh_fp));
    // Newest first.
    let times: Vec<i64> = all.iter().map(|r| r.revoked_at).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    // A short retention ends on the backend's clock.
    let short_fp = format!("SHA256:{}", unique("s"));
    revocation::revoke(
        store,
        &entry(&short_fp, now_ms(), Reason::KeyCompromise),
        1_500,
    )
    .await
    .expect("short");
    assert!(
        revocation::revoked(store, &short_fp)
            .await
            .expect("get")
            .is_some()
    );
    tokio::time::sleep(std::time::Duration::from_millis(2_000)).await;
    assert!(
        revocation::revoked(store, &short_fp)
            .await
            .expect("get")
            .is_none(),
        "gone after its retention"
    );
}
