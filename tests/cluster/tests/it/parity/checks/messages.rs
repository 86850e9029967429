//! `POST /v1/route`: both body forms with `ampd`'s exact answers, the duplicate rule,
//! refusals and size limits, each followed by the pickup that proves what was stored.

use amp_testkit::cluster::parity::{DOMAIN, Target};
use reqwest::Method;

use crate::parity::http::{
    BODY_LIMIT, CLIENT_TIMESTAMP, Http, Msg, assert_mailbox_written, assert_payload_verbatim,
    assert_recipient_can_verify, assert_server_id, find, fresh_id, ids_of, payload_with, tenant,
};

/// Both body forms on both prefixes, with `ampd`'s exact answers, then every message in the
/// mailbox as sent, read through the proxy right after the last answer.
pub(crate) async fn route_answers(t: &Target) {
    let h = Http::new(&t.base);
    let tn = tenant("route");
    let alice = h.register(&tn, "alice").await;
    let bob = h.register(&tn, "bob").await;
    let mut sent = Vec::new();
    for (i, prefix) in ["/v1", "/api/v1"].into_iter().enumerate() {
        let m = Msg::new(&bob.address, &format!("flat {i}"))
            .priority("high")
            .payload(&payload_with(&format!("flat via {prefix}")));
        let r = h
            .post(
                &alice,
                &format!("{prefix}/route"),
                Some(m.flat(Some(&m.sign(&alice)))),
            )
            .await;
        let v = assert_mailbox_written(&r);
        let id = v["id"].as_str().expect("id").to_owned();
        assert_server_id(&id);
        assert_eq!(v["thread_id"], id.as_str(), "{v}");
        sent.push((id, m));

        let client_id = fresh_id();
        let m = Msg::new(&bob.address, &format!("envelope {i}"))
            .id(&client_id)
            .payload(&payload_with(&format!("envelope via {prefix}")));
        let r = h
            .post(
                &alice,
                &format!("{prefix}/route"),
                Some(m.envelope(&alice.address, Some(&m.sign(&alice)))),
            )
            .await;
        let v = assert_mailbox_written(&r);
        assert_eq!(v["id"], client_id.as_str(), "client id kept: {v}");
        assert_eq!(v["thread_id"], client_id.as_str(), "{v}");
        sent.push((client_id, m));
    }
    let (page, text) = h.pending(&bob, "").await;
    assert_eq!(page["count"], 4, "{page}");
    assert_eq!(
        ids_of(&page),
        sent.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        "FIFO"
    );
    for (id, m) in &sent {
        let item = find(&page, id);
        let env = &item["envelope"];
        assert_eq!(env["from"], alice.address.as_str(), "{item}");
        assert_eq!(env["to"], m.to.as_str(), "{item}");
        assert_eq!(env["subject"], m.subject.as_str(), "{item}");
        assert_ne!(env["timestamp"], CLIENT_TIMESTAMP, "{item}");
        assert_eq!(item["local"]["security"]["trust"], "verified", "{item}");
        assert_payload_verbatim(&text, &m.payload);
        assert_recipient_can_verify(item, &m.payload);
    }
}

/// The duplicate rule: the same id and signature again is answered like the first; the same
/// id with another signature is 409 `duplicate_message`, sequentially and across replicas.
pub(crate) async fn duplicates(t: &Target) {
    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    let tn = tenant("dup");
    let alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;
    let id = fresh_id();
    let m = Msg::new(&bob.address, "once").id(&id);
    let body = m.envelope(&alice.address, Some(&m.sign(&alice)));
    let first = assert_mailbox_written(&a.route(&alice, body.clone()).await);
    // The retry on the other replica.
    let again = assert_mailbox_written(&b.route(&alice, body.clone()).await);
    assert_eq!(first["id"], id.as_str(), "{first}");
    assert_eq!(again["id"], id.as_str(), "{again}");
    assert_eq!(again["queued_at"], first["queued_at"], "{first} vs {again}");
    assert_eq!(again["thread_id"], first["thread_id"], "{first} vs {again}");
    // Same id, another subject, re-signed: on either replica.
    let mut other = m.clone();
    other.subject = "twice".into();
    let other_body = other.envelope(&alice.address, Some(&other.sign(&alice)));
    for h in [&a, &b] {
        h.route(&alice, other_body.clone())
            .await
            .assert_error(409, "duplicate_message");
    }
    let (page, _) = b.pending(&bob, "").await;
    assert_eq!(ids_of(&page), [id], "one mailbox entry: {page}");
    assert_eq!(page["messages"][0]["envelope"]["subject"], "once", "{page}");
}

/// Unknown recipients, sender forgery and signatures: `ampd`'s status and code for each,
/// nothing stored.
pub(crate) async fn refusals(t: &Target) {
    let h = Http::new(&t.base);
    let tn = tenant("refuse");
    let alice = h.register(&tn, "alice").await;
    let bob = h.register(&tn, "bob").await;
    let mallory = h.register(&tn, "mallory").await;

    let m = Msg::new(&format!("nobody@{tn}.{DOMAIN}"), "hi");
    h.send_msg(&alice, &m)
        .await
        .assert_error_field(404, "not_found", "to");

    let m = Msg::new(&bob.address, "subject")
        .payload(r#"{"type":"notification","message":"pay 10","context":{"amount":10}}"#);
    let sig = m.sign(&alice);
    let forged = m.sign_with(&alice.key, &mallory.address);
    h.route(&alice, m.envelope(&mallory.address, Some(&forged)))
        .await
        .assert_error(403, "forbidden");
    h.route(&alice, m.flat(None))
        .await
        .assert_error(400, "signature_missing");
    h.route(&alice, m.flat(Some("")))
        .await
        .assert_error(400, "signature_missing");
    h.route(&alice, m.flat(Some("not a signature!")))
        .await
        .assert_error(400, "signature_invalid");
    let other_key = m.sign_with(&mallory.key, &alice.address);
    h.route(&alice, m.flat(Some(&other_key)))
        .await
        .assert_error(400, "signature_invalid");
    let mut tampered = m.clone();
    tampered.subject = "Subject".into();
    h.route(&alice, tampered.flat(Some(&sig)))
        .await
        .assert_error(400, "signature_invalid");
    let m2 = m
        .clone()
        .payload(r#"{"type":"notification","message":"pay 10","context":{"amount":1000}}"#);
    h.route(&alice, m2.flat(Some(&sig)))
        .await
        .assert_error(400, "signature_invalid");
    // No key, and a key that is not an agent's.
    h.call(Method::POST, "/v1/route", None, Some(m.flat(Some(&sig))))
        .await
        .assert_error(401, "unauthorized");
    h.call(
        Method::POST,
        "/v1/route",
        Some("uk_abcdefgh_secret"),
        Some(m.flat(Some(&sig))),
    )
    .await
    .assert_error(401, "unauthorized");
    // Another provider's address: not implemented, nothing stored.
    let far = Msg::new("x@t.other.test", "far away");
    h.send_msg(&alice, &far)
        .await
        .assert_error_field(501, "not_implemented", "to");
    h.route(&alice, r#"{"to": "bob", "subject": "#.to_owned())
        .await
        .assert_error(400, "invalid_request");
    assert_eq!(
        h.pending_ids(&bob).await,
        Vec::<String>::new(),
        "refused, not stored"
    );
    assert_eq!(h.pending_ids(&mallory).await, Vec::<String>::new());
    // The untampered message goes through, and is there at once.
    let v = assert_mailbox_written(&h.route(&alice, m.flat(Some(&sig))).await);
    assert_eq!(
        h.pending_ids(&bob).await,
        [v["id"].as_str().expect("id")],
        "the one message answered 2xx, in the pickup right after"
    );
}

/// Size limits: a field one byte over, and a whole body over the limit (which the proxy
/// passes on, so the provider answers).
pub(crate) async fn size_limits(t: &Target) {
    let h = Http::new(&t.base);
    let tn = tenant("size");
    let alice = h.register(&tn, "alice").await;
    let bob = h.register(&tn, "bob").await;
    let m = Msg::new(&bob.address, "big").payload(&payload_with(&"a".repeat(65_536)));
    let v = assert_mailbox_written(&h.send_msg(&alice, &m).await);
    let accepted = v["id"].as_str().expect("id").to_owned();
    let m = Msg::new(&bob.address, "big").payload(&payload_with(&"a".repeat(65_537)));
    h.send_msg(&alice, &m)
        .await
        .assert_error_field(400, "invalid_field", "payload.message");
    let m = Msg::new(&bob.address, "huge").payload(&format!(
        r#"{{"type":"notification","message":"x","context":{{"a":"{}","b":"{}"}}}}"#,
        "a".repeat(270_000),
        "b".repeat(270_000)
    ));
    let body = m.flat(Some(&m.sign(&alice)));
    assert!(body.len() > BODY_LIMIT);
    h.route(&alice, body)
        .await
        .assert_error(413, "request_too_large");
    assert_eq!(
        h.pending_ids(&bob).await,
        [accepted],
        "only the message at the limit, in the pickup right after"
    );
}
