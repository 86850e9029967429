//! The duplicate rule and read-your-writes under concurrency, across the two ingest replicas
//! (on `ampd`, twice the same process): the outcome is in the answer, with no waiting.

use amp_testkit::cluster::parity::Target;
use serde_json::Value;

use super::http::{Http, Msg, assert_mailbox_written, fresh_id, tenant};

/// Rounds of the simultaneous duplicate.
const DUPLICATE_ROUNDS: usize = 20;
/// Route-then-pickup pairs.
const RYW_ROUNDS: usize = 50;

/// Two sends of the same id with different content at the same moment, one through each
/// ingest replica: exactly one 200 and one 409 `duplicate_message`, every round, and the
/// mailbox holds each id once, with the content of the send that got the 200.
pub(crate) async fn simultaneous_duplicates(t: &Target) {
    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    let tn = tenant("race");
    let alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;
    let mut winners = Vec::new();
    for round in 0..DUPLICATE_ROUNDS {
        let id = fresh_id();
        let ma = Msg::new(&bob.address, &format!("via A {round}")).id(&id);
        let mb = Msg::new(&bob.address, &format!("via B {round}")).id(&id);
        let body_a = ma.envelope(&alice.address, Some(&ma.sign(&alice)));
        let body_b = mb.envelope(&alice.address, Some(&mb.sign(&alice)));
        // Two tasks, so that on a multi-thread runtime the requests really leave together.
        let (ha, hb, sender) = (a.clone(), b.clone(), alice.clone());
        let ta = tokio::spawn(async move { ha.route(&sender, body_a).await });
        let sender = alice.clone();
        let tb = tokio::spawn(async move { hb.route(&sender, body_b).await });
        let (ra, rb) = (ta.await.expect("join"), tb.await.expect("join"));
        let statuses = [ra.status.as_u16(), rb.status.as_u16()];
        let (won, lost, subject) = match statuses {
            [200, 409] => (&ra, &rb, ma.subject.clone()),
            [409, 200] => (&rb, &ra, mb.subject.clone()),
            _ => panic!(
                "round {round}: expected one 200 and one 409, got A {} {} and B {} {}",
                ra.status, ra.text, rb.status, rb.text
            ),
        };
        let v = assert_mailbox_written(won);
        assert_eq!(v["id"], id.as_str(), "round {round}: {v}");
        lost.assert_error(409, "duplicate_message");
        winners.push((id, subject));
    }
    let (page, _) = b.pending(&bob, "?limit=1000").await;
    let got: Vec<(String, String)> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m: &Value| {
            (
                m["id"].as_str().expect("id").to_owned(),
                m["envelope"]["subject"]
                    .as_str()
                    .expect("subject")
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(got, winners, "each id once, with the accepted content");
}

/// A route on replica A answered 2xx, then at once a pickup on replica B: the message is
/// there, every time.
pub(crate) async fn route_then_pickup_elsewhere(t: &Target) {
    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    let tn = tenant("ryw50");
    let alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;
    let mut missing = Vec::new();
    for round in 0..RYW_ROUNDS {
        let m = Msg::new(&bob.address, &format!("ryw {round}"));
        let v = assert_mailbox_written(&a.send_msg(&alice, &m).await);
        let id = v["id"].as_str().expect("id").to_owned();
        // Acknowledge on B what B sees, so each pickup is one small page.
        let seen = b.pending_ids(&bob).await;
        if !seen.contains(&id) {
            missing.push(round);
        }
        for s in &seen {
            b.delete(&bob, &format!("/v1/messages/pending/{s}"))
                .await
                .ok();
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {RYW_ROUNDS} messages answered 2xx on {} were not in the pickup on {} right \
         after: rounds {missing:?}",
        missing.len(),
        t.ingest[0],
        t.ingest[1]
    );
}

/// Spec-next 04/08 idempotency keys, one send through each ingest replica at the same moment:
/// with the same body, both are answered 200 with the one message's id, `queued_at` and
/// thread (the status may differ: one of them may have seen the push) and one copy is
/// stored; with different bodies, exactly one 200 and one 409 `duplicate_idempotency_key`.
/// Afterwards a retry on either replica gets the first answer, a different body the 409.
pub(crate) async fn spec_next_simultaneous_idempotency_keys(t: &Target) {
    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    let tn = tenant("idemrace");
    let alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;
    let mut expected = Vec::new();
    for round in 0..DUPLICATE_ROUNDS {
        let key = format!("idk_{}", fresh_id());
        let same = round % 2 == 0;
        let ma = Msg::new(&bob.address, &format!("via A {round}")).key(&key);
        let mb = if same {
            ma.clone()
        } else {
            Msg::new(&bob.address, &format!("via B {round}")).key(&key)
        };
        let body_a = ma.flat(Some(&ma.sign(&alice)));
        let body_b = mb.flat(Some(&mb.sign(&alice)));
        let (ha, hb, sender) = (a.clone(), b.clone(), alice.clone());
        let ta = tokio::spawn(async move { ha.route(&sender, body_a).await });
        let sender = alice.clone();
        let tb = tokio::spawn(async move { hb.route(&sender, body_b).await });
        let (ra, rb) = (ta.await.expect("join"), tb.await.expect("join"));
        let (first, body, other) = if same {
            let (va, vb) = (assert_mailbox_written(&ra), assert_mailbox_written(&rb));
            for field in ["id", "queued_at", "thread_id", "expires_at"] {
                assert_eq!(va[field], vb[field], "round {round}: {va} vs {vb}");
            }
            let other = Msg::new(&bob.address, &format!("other {round}")).key(&key);
            (va, ma.flat(Some(&ma.sign(&alice))), other)
        } else {
            let (won, lost, m, other) = match [ra.status.as_u16(), rb.status.as_u16()] {
                [200, 409] => (&ra, &rb, &ma, &mb),
                [409, 200] => (&rb, &ra, &mb, &ma),
                _ => panic!(
                    "round {round}: expected one 200 and one 409, got A {} {} and B {} {}",
                    ra.status, ra.text, rb.status, rb.text
                ),
            };
            lost.assert_error_field(409, "duplicate_idempotency_key", "idempotency_key");
            (
                assert_mailbox_written(won),
                m.flat(Some(&m.sign(&alice))),
                other.clone(),
            )
        };
        expected.push(first["id"].as_str().expect("id").to_owned());
        // Later retries, on either replica: the recorded answer, or the 409.
        for h in [&a, &b] {
            let again = h.route(&alice, body.clone()).await;
            assert_eq!(again.status, 200, "round {round}: {}", again.text);
            let v: Value = serde_json::from_str(&again.text).expect("json");
            assert_eq!(v["id"], first["id"], "round {round}: {v} vs {first}");
            h.route(&alice, other.flat(Some(&other.sign(&alice))))
                .await
                .assert_error_field(409, "duplicate_idempotency_key", "idempotency_key");
        }
    }
    let (page, _) = b.pending(&bob, "?limit=1000").await;
    let got: Vec<String> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m: &Value| m["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(got, expected, "one copy per key");
}
