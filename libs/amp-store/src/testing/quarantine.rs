//! The conformance check of quarantine entries ([`crate::quarantine`]);
//! [`super::conformance::run_all`] calls it.

use crate::quarantine::{Quarantine as _, QuarantineDecision, QuarantineEntry};
use crate::testing::{now_ms, unique};
use crate::*;

/// spec_next: an entry is held once (a second put of its id writes nothing), read back,
/// listed in id order after a cursor; the first decision wins and the second is refused.
pub async fn spec_next_quarantine_held_once_and_decided_once(store: &Store) {
    let now = now_ms();
    let tag = unique("");
    let entry = |n: u32| QuarantineEntry {
        quarantine_id: format!("qtn_{:010}_{tag}{n}", now / 1000),
        from: "eve@a.example.test".into(),
        to: "bob@b.example.test".into(),
        recipient_id: "agt_bob".into(),
        tenant: format!("t{tag}"),
        subject: "s".into(),
        reason: "injection_detected".into(),
        rules_triggered: vec!["instruction_override".into()],
        severity: "high".into(),
        quarantined_at: now,
        expires_at: now + 72 * 3_600_000,
        message_id: format!("msg_{n}"),
        data: "{}".into(),
        mailbox_expires_at: now + 1000,
        max_queued: None,
        signature: "sig".into(),
    };
    let (a, b) = (entry(1), entry(2));
    assert!(store.put_quarantine(&a).await.expect("hold a"));
    assert!(store.put_quarantine(&b).await.expect("hold b"));
    let mut again = a.clone();
    again.subject = "other".into();
    assert!(
        !store.put_quarantine(&again).await.expect("again"),
        "held once"
    );
    assert_eq!(
        store.quarantine(&a.quarantine_id).await.expect("get"),
        Some(a.clone())
    );
    let before = format!("qtn_{:010}_{tag}", now / 1000);
    let page = store
        .quarantine_page(Some(&before), 10)
        .await
        .expect("page");
    let ids: Vec<&str> = page
        .iter()
        .map(|e| e.quarantine_id.as_str())
        .filter(|id| id.contains(&tag))
        .collect();
    assert_eq!(ids, [a.quarantine_id.as_str(), b.quarantine_id.as_str()]);
    let page = store
        .quarantine_page(Some(&a.quarantine_id), 1)
        .await
        .expect("after a");
    assert_eq!(
        page.first().map(|e| e.quarantine_id.clone()),
        Some(b.quarantine_id.clone())
    );

    let d = |status: &str| QuarantineDecision {
        status: status.into(),
        by: "opt_test".into(),
        at: now,
    };
    assert_eq!(
        store
            .quarantine_decision(&a.quarantine_id)
            .await
            .expect("none"),
        None
    );
    assert!(
        store
            .decide_quarantine(&a.quarantine_id, &d("approved"))
            .await
            .expect("first")
    );
    assert!(
        !store
            .decide_quarantine(&a.quarantine_id, &d("rejected"))
            .await
            .expect("second")
    );
    assert_eq!(
        store
            .quarantine_decision(&a.quarantine_id)
            .await
            .expect("read"),
        Some(d("approved"))
    );
}

/// spec_next: the purge deletes the entries that expired before its cutoff (decided or
/// not, their decisions with them) and reports them; an older entry with a longer time to
/// live, and newer ones, stay.
pub async fn spec_next_quarantine_purge_deletes_expired_entries(store: &Store) {
    let now = now_ms();
    let day = 24 * 3_600_000;
    let tag = unique("");
    let entry = |n: u32, held: i64, expires: i64| QuarantineEntry {
        quarantine_id: format!("qtn_{:010}_{tag}{n}", held / 1000),
        from: "eve@a.example.test".into(),
        to: "bob@b.example.test".into(),
        recipient_id: "agt_bob".into(),
        tenant: format!("t{tag}"),
        subject: "s".into(),
        reason: "injection_detected".into(),
        rules_triggered: vec![],
        severity: "high".into(),
        quarantined_at: held,
        expires_at: expires,
        message_id: format!("msg_{n}"),
        data: "{}".into(),
        mailbox_expires_at: expires,
        max_queued: None,
        signature: "sig".into(),
    };
    let unreviewed = entry(1, now - 10 * day, now - 7 * day);
    let decided = entry(2, now - 10 * day, now - 7 * day);
    let long_lived = entry(3, now - 10 * day, now + day);
    let fresh = entry(4, now, now + 3 * day);
    for e in [&unreviewed, &decided, &long_lived, &fresh] {
        assert!(store.put_quarantine(e).await.expect("hold"));
    }
    let rejected = QuarantineDecision {
        status: "rejected".into(),
        by: "opt_test".into(),
        at: now - 9 * day,
    };
    assert!(
        store
            .decide_quarantine(&decided.quarantine_id, &rejected)
            .await
            .expect("decide")
    );
    let gone = store
        .purge_quarantine(now - day, 100_000)
        .await
        .expect("purge");
    let ours: Vec<_> = gone
        .iter()
        .filter(|(e, _)| e.quarantine_id.contains(&tag))
        .map(|(e, d)| (e.quarantine_id.clone(), d.clone()))
        .collect();
    assert_eq!(
        ours,
        vec![
            (unreviewed.quarantine_id.clone(), None),
            (decided.quarantine_id.clone(), Some(rejected)),
        ]
    );
    for e in [&unreviewed, &decided] {
        assert_eq!(store.quarantine(&e.quarantine_id).await.expect("get"), None);
        assert_eq!(
            store
                .quarantine_decision(&e.quarantine_id)
                .await
                .expect("get"),
            None
        );
    }
    for e in [&long_lived, &fresh] {
        assert!(
            store
                .quarantine(&e.quarantine_id)
                .await
                .expect("get")
                .is_some()
        );
    }
    // Again: nothing more to do.
    let again = store
        .purge_quarantine(now - day, 100_000)
        .await
        .expect("purge");
    assert!(again.iter().all(|(e, _)| !e.quarantine_id.contains(&tag)));
}
