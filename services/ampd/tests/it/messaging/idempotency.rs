//! Idempotency on `POST /v1/route` (spec-next 04 "Idempotency", 08 route; issue 18): an
//! `idempotency_key` names one message of its sender for 7 days; an older client's
//! `envelope.id` is replaced by the provider's (spec-next 04) but still names the message.

use super::*;

/// A key of the spec's suggested form, unique per call.
fn fresh_key() -> String {
    format!("idk_{:032x}", rand::random::<u128>())
}

/// The same key and body: the first answer again (status and body), one copy stored and
/// delivered, also after the recipient acknowledged it; another body under the key: `409
/// duplicate_idempotency_key`; the key travels in the delivered envelope; the key is the
/// sender's own (another sender's same key is another message); the envelope's key and the
/// top-level one are one key (the envelope's wins when both are given).
#[tokio::test]
async fn spec_next_idempotency_key_replays_the_first_answer_and_stores_one_copy() {
    let s = Ampd::start().await;
    let alice = s.register("idem", "alice").await;
    let bob = s.register("idem", "bob").await;
    let carol = s.register("idem", "carol").await;
    let key = fresh_key();
    let m = Msg::new(&bob.address, "once")
        .payload(&payload_with("hello"))
        .key(&key);
    let body = m.flat(Some(&m.sign(&alice)));
    let first = s.route(&alice, body.clone()).await;
    let first_body = first.ok();
    let id = first_body["id"].as_str().expect("id").to_owned();
    assert_server_id(&id);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = s.route(&alice, body.clone()).await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.json(), first_body, "the first answer, unchanged");
    // The same message in the envelope form, the key inside the envelope: the same request.
    let env_form = s
        .route(&alice, m.envelope(&alice.address, Some(&m.sign(&alice))))
        .await;
    assert_eq!(env_form.json(), first_body);
    assert_eq!(
        s.pending_ids(&bob).await,
        std::slice::from_ref(&id),
        "one copy"
    );
    let (page, _) = s.pending(&bob, "").await;
    let item = find(&page, &id);
    assert_eq!(item["envelope"]["idempotency_key"], key.as_str(), "{item}");
    assert_recipient_can_verify(item, &payload_with("hello"));

    // Another body under the key: refused, nothing stored.
    let other = Msg::new(&bob.address, "twice")
        .payload(&payload_with("hello"))
        .key(&key);
    s.route(&alice, other.flat(Some(&other.sign(&alice))))
        .await
        .assert_error_field(409, "duplicate_idempotency_key", "idempotency_key");
    // Another recipient is another body too.
    let elsewhere = Msg::new(&carol.address, "once")
        .payload(&payload_with("hello"))
        .key(&key);
    s.route(&alice, elsewhere.flat(Some(&elsewhere.sign(&alice))))
        .await
        .assert_error_field(409, "duplicate_idempotency_key", "idempotency_key");
    assert_eq!(s.pending_ids(&bob).await, std::slice::from_ref(&id));
    assert!(s.pending_ids(&carol).await.is_empty());

    // Acknowledged: the key still names it; nothing is delivered again.
    s.delete(&bob, &format!("/v1/messages/pending/{id}"))
        .await
        .ok();
    assert_eq!(s.route(&alice, body.clone()).await.json(), first_body);
    assert!(s.pending_ids(&bob).await.is_empty(), "not delivered twice");
    s.route(&alice, other.flat(Some(&other.sign(&alice))))
        .await
        .assert_error_field(409, "duplicate_idempotency_key", "idempotency_key");

    // The key is alice's: carol's message under the same key is carol's own.
    let from_carol = Msg::new(&bob.address, "once")
        .payload(&payload_with("hello"))
        .key(&key);
    let c = s
        .route(&carol, from_carol.flat(Some(&from_carol.sign(&carol))))
        .await
        .ok();
    assert_ne!(c["id"], id.as_str(), "{c}");
    assert_eq!(s.pending_ids(&bob).await, [c["id"].as_str().expect("id")]);

    // Both places given: the envelope's key is the one (spec-next 04 migration note).
    let k2 = fresh_key();
    let m2 = Msg::new(&bob.address, "both").key(&k2);
    let raw = m2.envelope(&alice.address, Some(&m2.sign(&alice)));
    let mut both: Value = serde_json::from_str(&raw).expect("json");
    both["idempotency_key"] = json!(fresh_key());
    let a = s.route(&alice, both.to_string()).await.ok();
    let b = s.route(&alice, m2.flat(Some(&m2.sign(&alice)))).await;
    assert_eq!(b.json(), a, "the envelope's key named the first");
    s.stop().await;
}

/// The key is bounded (128 bytes of printable ASCII without spaces); anything else is `400
/// invalid_field` naming it, before anything is stored.
#[tokio::test]
async fn spec_next_idempotency_key_is_bounded() {
    let s = Ampd::start().await;
    let alice = s.register("idemsize", "alice").await;
    let bob = s.register("idemsize", "bob").await;
    for bad in ["", "has space", "tab\there", "é", &"k".repeat(129)] {
        let m = Msg::new(&bob.address, "s").key(bad);
        s.route(&alice, m.flat(Some(&m.sign(&alice))))
            .await
            .assert_error_field(400, "invalid_field", "idempotency_key");
    }
    let m = Msg::new(&bob.address, "s").key(&"k".repeat(128));
    s.route(&alice, m.flat(Some(&m.sign(&alice)))).await.ok();
    assert_eq!(s.pending_ids(&bob).await.len(), 1);
    s.stop().await;
}

/// Spec-next 04 with `keep_client_ids = false`: the provider assigns `envelope.id` (and
/// `timestamp`), overwriting the client's; for clients built on the older text the id they
/// chose still names the message: a retry gets the first answer and leaves one copy, another
/// message under it is `409 duplicate_message`. A thread the client named by its own id is
/// the message's thread under the provider's id, and the sender's signature still verifies
/// (ids are not signed).
#[tokio::test]
async fn spec_next_client_ids_are_replaced_but_name_the_message() {
    let s = Ampd::start_with(|c| c.ingest.messaging.keep_client_ids = false).await;
    let alice = s.register("ids", "alice").await;
    let bob = s.register("ids", "bob").await;
    let client_id = "msg_1700000000000_deadbeef";
    let mut m = Msg::new(&bob.address, "once").id(client_id);
    m.thread_id = Some(client_id.to_owned());
    let body = m.envelope(&alice.address, Some(&m.sign(&alice)));
    let first = s.route(&alice, body.clone()).await.ok();
    let id = first["id"].as_str().expect("id").to_owned();
    assert_ne!(id, client_id, "the provider's id, not the client's");
    assert!(id.starts_with("msg_1700000000000_"), "{id}");
    assert_server_id(&id);
    assert_eq!(first["thread_id"], id.as_str(), "{first}");
    let again = s.route(&alice, body).await.ok();
    assert_eq!(again, first);
    assert_eq!(s.pending_ids(&bob).await, std::slice::from_ref(&id));
    let (page, _) = s.pending(&bob, "").await;
    let item = find(&page, &id);
    assert_eq!(item["envelope"]["id"], id.as_str());
    assert_eq!(item["envelope"]["thread_id"], id.as_str());
    assert_ne!(item["envelope"]["timestamp"], CLIENT_TIMESTAMP);
    assert!(
        item["envelope"].get("idempotency_key").is_none(),
        "an implicit key is not the sender's idempotency_key: {item}"
    );
    assert_recipient_can_verify(item, PLAIN);

    let mut other = m.clone();
    other.subject = "twice".into();
    s.route(
        &alice,
        other.envelope(&alice.address, Some(&other.sign(&alice))),
    )
    .await
    .assert_error_field(409, "duplicate_message", "id");
    assert_eq!(s.pending_ids(&bob).await, std::slice::from_ref(&id));

    // Bob replies by the id he received; the reply threads under it.
    let reply = Msg::new(&alice.address, "re: once").reply_to(&id);
    let r = s.send(&bob, &reply).await;
    assert_eq!(r["thread_id"], id.as_str(), "{r}");
    s.stop().await;
}

/// Two attempts with one key at the same moment (ampd: one process, two connections): one
/// copy, and both answers name it; with different bodies, exactly one is accepted and the
/// other is `409 duplicate_idempotency_key`, every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_idempotency_key_races_leave_one_copy() {
    let s = std::sync::Arc::new(Ampd::start().await);
    let alice = std::sync::Arc::new(s.register("idemrace", "alice").await);
    let bob = s.register("idemrace", "bob").await;
    let mut expected = Vec::new();
    for round in 0..10 {
        let key = fresh_key();
        let same = round % 2 == 0;
        let ma = Msg::new(&bob.address, &format!("a {round}")).key(&key);
        let mb = if same {
            ma.clone()
        } else {
            Msg::new(&bob.address, &format!("b {round}")).key(&key)
        };
        let (ba, bb) = (
            ma.flat(Some(&ma.sign(&alice))),
            mb.flat(Some(&mb.sign(&alice))),
        );
        let (s1, s2, a1, a2) = (s.clone(), s.clone(), alice.clone(), alice.clone());
        let t1 = tokio::spawn(async move { s1.route(&a1, ba).await });
        let t2 = tokio::spawn(async move { s2.route(&a2, bb).await });
        let (r1, r2) = (t1.await.expect("join"), t2.await.expect("join"));
        if same {
            let (v1, v2) = (r1.ok(), r2.ok());
            assert_eq!(v1["id"], v2["id"], "{v1} vs {v2}");
            assert_eq!(v1["queued_at"], v2["queued_at"], "{v1} vs {v2}");
            expected.push(v1["id"].as_str().expect("id").to_owned());
        } else {
            let (won, lost) = match (r1.status.as_u16(), r2.status.as_u16()) {
                (200, 409) => (&r1, &r2),
                (409, 200) => (&r2, &r1),
                other => panic!("round {round}: {other:?}: {} / {}", r1.text, r2.text),
            };
            lost.assert_error_field(409, "duplicate_idempotency_key", "idempotency_key");
            expected.push(won.json()["id"].as_str().expect("id").to_owned());
        }
    }
    assert_eq!(s.pending_ids(&bob).await, expected, "one copy per key");
    match std::sync::Arc::try_unwrap(s) {
        Ok(s) => s.stop().await,
        Err(_) => panic!("server still shared"),
    }
}

/// The default (`keep_client_ids`, for the Claude Code plugin, which names its messages by
/// the id it chose): a well-formed client id is the message's id, also beside an
/// `idempotency_key`; the key still names the message (the first answer again, one copy, and
/// `409 duplicate_idempotency_key` for another request under it). Without a client id the
/// provider's id is derived from the key.
#[tokio::test]
async fn spec_next_kept_client_ids_and_idempotency_keys_together() {
    let s = Ampd::start().await;
    let alice = s.register("keepids", "alice").await;
    let bob = s.register("keepids", "bob").await;
    let key = fresh_key();
    let client_id = "msg_1700000000000_00c0ffee";
    let m = Msg::new(&bob.address, "kept").id(client_id).key(&key);
    let body = m.envelope(&alice.address, Some(&m.sign(&alice)));
    let first = s.route(&alice, body.clone()).await.ok();
    assert_eq!(first["id"], client_id, "{first}");
    assert_eq!(s.route(&alice, body).await.ok(), first);
    assert_eq!(s.pending_ids(&bob).await, [client_id]);
    let mut other = m.clone();
    other.subject = "another".into();
    s.route(
        &alice,
        other.envelope(&alice.address, Some(&other.sign(&alice))),
    )
    .await
    .assert_error_field(409, "duplicate_idempotency_key", "idempotency_key");
    // The kept id with another key and other content: the id's conflict, as before.
    let mut reused = other.clone();
    reused.idempotency_key = Some(fresh_key());
    s.route(
        &alice,
        reused.envelope(&alice.address, Some(&reused.sign(&alice))),
    )
    .await
    .assert_error(409, "duplicate_message");

    let keyed = Msg::new(&bob.address, "no id").key(&fresh_key());
    let v = s
        .route(&alice, keyed.flat(Some(&keyed.sign(&alice))))
        .await
        .ok();
    let id = v["id"].as_str().expect("id");
    assert!(id.starts_with("msg_0_"), "derived from the key: {v}");
    assert_eq!(s.pending_ids(&bob).await, [client_id, id]);
    s.stop().await;
}
