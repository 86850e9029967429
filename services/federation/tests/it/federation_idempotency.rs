//! Idempotency keys across federation (spec-next 04 "Idempotency"): the sending provider
//! keeps the key in the envelope it forwards, and the receiving provider applies it on its
//! side: a second message of the sender under the key (whatever its id) gets the first
//! answer and is not delivered again; another message under it is `409
//! duplicate_idempotency_key`.

use std::time::Duration;

use amp_proto::{SecretKey, Timestamp};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Agent, FederationExt, Provider, Resp, payload_with, sign};

/// A federation request body whose envelope carries `key`.
fn keyed_body(from: &Agent, to: &str, id: &str, subject: &str, key: &str) -> String {
    let payload = payload_with("hello bob");
    let envelope = json!({
        "version": "amp/0.1",
        "id": id,
        "from": from.address,
        "to": to,
        "subject": subject,
        "priority": "normal",
        "timestamp": Timestamp::now().to_rfc3339(),
        "signature": sign(from, to, subject, &payload, None),
        "thread_id": id,
        "idempotency_key": key,
    });
    format!(
        r#"{{"envelope":{envelope},"payload":{payload},"sender_public_key":{}}}"#,
        json!(from.key.public().to_pem())
    )
}

fn headers(provider: &str, key: &SecretKey, body: &str) -> Vec<(&'static str, String)> {
    let ts = Timestamp::now().unix_secs().to_string();
    let sig = federation::signature::sign(key, &ts, body.as_bytes());
    vec![
        ("X-AMP-Provider", provider.to_owned()),
        ("X-AMP-Timestamp", ts),
        ("X-AMP-Signature", sig),
    ]
}

/// `POST /v1/route` with the flat body and `idempotency_key`.
async fn route_keyed(
    node: &crate::common::Ampd,
    from: &Agent,
    to: &str,
    subject: &str,
    key: &str,
) -> Resp {
    let payload = payload_with("across");
    let head = json!({
        "to": to, "subject": subject, "idempotency_key": key,
        "signature": sign(from, to, subject, &payload, None),
    })
    .to_string();
    let body = format!(
        r#"{},"payload":{payload}}}"#,
        head.strip_suffix('}').expect("object")
    );
    let r = node
        .http
        .post(format!("{}/v1/route", node.url()))
        .bearer_auth(&from.api_key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("route");
    Resp::read(r).await
}

/// Alice on alpha sends to Bob on beta with a key, and retries: one answer, one copy on
/// beta, whose envelope carries the key as Alice gave it; another message under the key is
/// refused on alpha.
#[tokio::test]
async fn spec_next_federated_message_keeps_its_idempotency_key() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    let a = pa.start(|f| f.peers = vec![pb.as_peer()]).await;
    let b = pb.start(|f| f.peers = vec![pa.as_peer()]).await;
    let alice = a.register("acme", "alice").await;
    let bob = b.register("team", "bob").await;
    let key = "idk_550e8400-e29b-41d4-a716-446655440000";

    let first = route_keyed(&a, &alice, &bob.address, "across", key).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let again = route_keyed(&a, &alice, &bob.address, "across", key).await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.json(), first.json());
    let id = first.json()["id"].as_str().expect("id").to_owned();

    let (page, _) = b.wait_pending(&bob, 1).await;
    let item = &page["messages"][0];
    assert_eq!(item["envelope"]["id"], id.as_str(), "{item}");
    assert_eq!(item["envelope"]["idempotency_key"], key, "{item}");
    // Nothing more arrives (the federation queue is drained well within this).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.pending_count(&bob).await, 1, "one copy");

    let other = route_keyed(&a, &alice, &bob.address, "another", key).await;
    assert_eq!(other.status.as_u16(), 409, "{}", other.text);
    assert_eq!(other.json()["error"], "duplicate_idempotency_key");
    a.stop().await;
    b.stop().await;
}

/// Beta applies the key alpha forwarded: a second message of the same sender with the same
/// key and content, under another id (a sending provider that did not deduplicate), is
/// answered as the first was and not delivered; a different message under the key is `409
/// duplicate_idempotency_key` with `accepted: false`; another sender's same key is its own.
#[tokio::test]
async fn spec_next_federation_inbound_applies_the_senders_idempotency_key() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    let b = pb.start(|f| f.peers = vec![pa.as_peer()]).await;
    let bob = b.register("team", "bob").await;
    let alice = Agent {
        address: "alice@team.alpha.test".to_owned(),
        api_key: String::new(),
        key: SecretKey::generate(),
    };
    let key = "idk_7d0c2f0e-7c1a-4d5e-9f3b-1a2b3c4d5e6f";

    let good = keyed_body(&alice, &bob.address, "msg_1700000000000_0a", "hello", key);
    let r = b
        .deliver_raw(&headers("alpha.test", &pa.key, &good), &good)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let first: Value = r.json();
    assert_eq!(first["id"], "msg_1700000000000_0a", "the peer's id is kept");

    let same = keyed_body(&alice, &bob.address, "msg_1700000000001_0b", "hello", key);
    let r = b
        .deliver_raw(&headers("alpha.test", &pa.key, &same), &same)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json(), first, "the first answer");
    assert_eq!(b.pending_count(&bob).await, 1, "not delivered twice");

    let other = keyed_body(&alice, &bob.address, "msg_1700000000002_0c", "other", key);
    let r = b
        .deliver_raw(&headers("alpha.test", &pa.key, &other), &other)
        .await;
    assert_eq!(r.status.as_u16(), 409, "{}", r.text);
    let v = r.json();
    assert_eq!(v["error"], "duplicate_idempotency_key", "{v}");
    assert_eq!(v["accepted"], false, "{v}");
    assert_eq!(b.pending_count(&bob).await, 1);

    let carol = Agent {
        address: "carol@team.alpha.test".to_owned(),
        api_key: String::new(),
        key: SecretKey::generate(),
    };
    let hers = keyed_body(&carol, &bob.address, "msg_1700000000003_0d", "hello", key);
    let r = b
        .deliver_raw(&headers("alpha.test", &pa.key, &hers), &hers)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        b.pending_count(&bob).await,
        2,
        "another sender's key is its own"
    );
    b.stop().await;
}
