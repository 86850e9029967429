//! The conformance checks of agent suspensions ([`crate::suspension`]);
//! [`super::conformance::run_all`] and [`super::conformance::run_two_writers`] call them.

use crate::suspension::{AgentSuspension, Suspensions};
use crate::testing::{now_ms, unique};
use crate::*;

fn suspension(agent_id: &str, now: Millis, expires_at: Option<Millis>) -> AgentSuspension {
    AgentSuspension {
        agent_id: agent_id.to_owned(),
        suspended_at: now,
        reason: "admin_action".into(),
        suspended_by: "opt_test".into(),
        expires_at,
    }
}

/// spec_next: suspend, read back, replace, lift; an expiry is kept and judged by the reader;
/// one agent's suspension says nothing about another's.
pub async fn spec_next_suspensions_round_trip(store: &Store) {
    let now = now_ms();
    let (a, b) = (unique("agt_"), unique("agt_"));
    assert_eq!(store.suspension(&a).await.expect("read"), None);
    assert!(!store.clear_suspension(&a).await.expect("lift nothing"));

    let s = suspension(&a, now, None);
    store.put_suspension(&s).await.expect("suspend");
    assert_eq!(store.suspension(&a).await.expect("read"), Some(s.clone()));
    assert_eq!(store.suspension(&b).await.expect("other"), None);
    assert!(s.active_at(now + 365 * 24 * 3_600_000), "indefinite");

    // Suspended again with a duration: the new record replaces the old.
    let timed = suspension(&a, now + 1, Some(now + 3_600_000));
    store.put_suspension(&timed).await.expect("replace");
    let read = store.suspension(&a).await.expect("read").expect("kept");
    assert_eq!(read, timed);
    assert!(read.active_at(now + 3_599_999));
    assert!(
        !read.active_at(now + 3_600_000),
        "lifted by itself at expires_at"
    );

    assert!(store.clear_suspension(&a).await.expect("lift"));
    assert_eq!(store.suspension(&a).await.expect("read"), None);
    assert!(!store.clear_suspension(&a).await.expect("lift twice"));
}

/// spec_next: a suspension written through one handle is read through the other (two
/// replicas), and so is its lifting.
pub async fn spec_next_suspension_seen_by_another_writer(a: &Store, b: &Store) {
    let now = now_ms();
    let agent = unique("agt_");
    a.put_suspension(&suspension(&agent, now, None))
        .await
        .expect("suspend on a");
    assert!(b.suspension(&agent).await.expect("read on b").is_some());
    assert!(b.clear_suspension(&agent).await.expect("lift on b"));
    assert_eq!(a.suspension(&agent).await.expect("read on a"), None);
}
