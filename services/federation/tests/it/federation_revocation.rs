//! Spec-next 07 across providers: the provider that revoked a key announces it with
//! `X-AMP-Key-Revoked` on its following federation requests, and the receiving provider then
//! refuses that key in the announcing provider's messages (`403 key_revoked`), never in
//! anyone else's; federated timestamps more than 60 s ahead are `400 timestamp_future`; a
//! federated message replayed under a fresh provider signature is stored and delivered once.

use amp_proto::{SecretKey, Timestamp};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Agent, Ampd, FederationExt, Provider, Resp, payload_with, sign};

/// A federation request body from `from` (signed with its key) to `to`.
fn body(from: &Agent, to: &str, id: &str, subject: &str, timestamp: Timestamp) -> String {
    let payload = payload_with("across");
    let envelope = json!({
        "version": "amp/0.1",
        "id": id,
        "from": from.address,
        "to": to,
        "subject": subject,
        "priority": "normal",
        "timestamp": timestamp.to_rfc3339(),
        "signature": sign(from, to, subject, &payload, None),
        "thread_id": id,
    });
    format!(
        r#"{{"envelope":{envelope},"payload":{payload},"sender_public_key":{}}}"#,
        json!(from.key.public().to_pem())
    )
}

/// The headers of `provider` signing `body` with `key`, plus `extra`.
fn headers(
    provider: &str,
    key: &SecretKey,
    body: &str,
    extra: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let ts = Timestamp::now().unix_secs().to_string();
    let sig = federation::signature::sign(key, &ts, body.as_bytes());
    let mut h = vec![
        ("X-AMP-Provider", provider.to_owned()),
        ("X-AMP-Timestamp", ts),
        ("X-AMP-Signature", sig),
    ];
    h.extend_from_slice(extra);
    h
}

fn id(n: u64) -> String {
    format!("msg_{}_{n:016x}", Timestamp::now().unix_millis())
}

/// Rotates `who`'s keypair on `node`; returns the new key.
async fn rotate_keys(node: &Ampd, who: &Agent) -> SecretKey {
    let new_key = SecretKey::generate();
    let pem = new_key.public().to_pem();
    let r = node
        .http
        .post(format!("{}/v1/auth/rotate-keys", node.url()))
        .bearer_auth(&who.api_key)
        .json(&json!({ "new_public_key": pem, "proof": who.key.sign_b64(pem.as_bytes()) }))
        .send()
        .await
        .expect("rotate-keys");
    let r = Resp::read(r).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    new_key
}

/// Alice rotates her key on alpha; alpha's next federation request to beta announces the old
/// key; beta then refuses a message of alpha's signed with it (and still takes the new key).
/// What alpha announces about a key of beta's own agent changes nothing for that agent.
#[tokio::test]
async fn spec_next_federation_key_revoked_header_is_announced_and_honoured() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    let a = pa.start(|f| f.peers = vec![pb.as_peer()]).await;
    let b = pb.start(|f| f.peers = vec![pa.as_peer()]).await;
    let alice = a.register("acme", "alice").await;
    let bob = b.register("team", "bob").await;
    let carol = b.register("team", "carol").await;

    // Before any revocation beta takes alice's key.
    let first = body(&alice, &bob.address, &id(1), "before", Timestamp::now());
    let r = b
        .deliver_raw(&headers("alpha.test", &pa.key, &first, &[]), &first)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let new_key = rotate_keys(&a, &alice).await;
    let old = Agent {
        address: alice.address.clone(),
        api_key: alice.api_key.clone(),
        key: alice.key.clone(),
    };
    let alice = Agent {
        key: new_key,
        ..alice
    };
    // Alpha's own route already refuses the old key.
    let r = a
        .send(&old, &bob.address, "old", &payload_with("x"), None)
        .await;
    assert_eq!(r.status.as_u16(), 403, "{}", r.text);
    // A message with the new key goes to beta, on a request that announces the old one.
    let r = a
        .send(&alice, &bob.address, "new", &payload_with("x"), None)
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    b.wait_pending(&bob, 2).await;

    // Beta learned it from that request alone: alpha's message signed with the old key is
    // refused, one with the new key is taken.
    let stale = body(&old, &bob.address, &id(2), "stale", Timestamp::now());
    let r = b
        .deliver_raw(&headers("alpha.test", &pa.key, &stale, &[]), &stale)
        .await;
    assert_eq!(r.status.as_u16(), 403, "{}", r.text);
    let v = r.json();
    assert_eq!(v["error"], "key_revoked", "{v}");
    assert_eq!(v["accepted"], false, "{v}");
    let fresh = body(&alice, &bob.address, &id(3), "fresh", Timestamp::now());
    let r = b
        .deliver_raw(&headers("alpha.test", &pa.key, &fresh, &[]), &fresh)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(b.pending_count(&bob).await, 3);

    // Alpha announcing the key of beta's own agent carol (and garbage) is recorded as
    // alpha's report only: carol still signs on beta.
    let announce = body(&alice, &bob.address, &id(4), "announce", Timestamp::now());
    let extra = [(
        "X-AMP-Key-Revoked",
        format!("{}, not-a-fingerprint", carol.key.public().fingerprint()),
    )];
    let r = b
        .deliver_raw(
            &headers("alpha.test", &pa.key, &announce, &extra),
            &announce,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = b
        .send(&carol, &bob.address, "still mine", &payload_with("y"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    a.stop().await;
    b.stop().await;
}

/// Beta refuses a federated timestamp more than 60 s ahead, takes one within the tolerance,
/// and stores a message replayed under a fresh provider signature once, and not again after
/// its acknowledgement.
#[tokio::test]
async fn spec_next_federation_future_timestamps_refused_and_replays_stored_once() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    let b = pb.start(|f| f.peers = vec![pa.as_peer()]).await;
    let bob = b.register("team", "bob").await;
    let alice = Agent {
        address: "alice@team.alpha.test".to_owned(),
        api_key: String::new(),
        key: SecretKey::generate(),
    };

    let ahead = body(
        &alice,
        &bob.address,
        &id(1),
        "ahead",
        Timestamp::now().plus_secs(120),
    );
    let r = b
        .deliver_raw(&headers("alpha.test", &pa.key, &ahead, &[]), &ahead)
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.text);
    assert_eq!(r.json()["error"], "timestamp_future", "{}", r.text);
    assert_eq!(r.json()["accepted"], false, "{}", r.text);

    let skewed = body(
        &alice,
        &bob.address,
        &id(2),
        "skewed",
        Timestamp::now().plus_secs(30),
    );
    let r = b
        .deliver_raw(&headers("alpha.test", &pa.key, &skewed, &[]), &skewed)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // The same message again under a new provider signature (a later X-AMP-Timestamp):
    // answered, one copy.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let r = b
        .deliver_raw(&headers("alpha.test", &pa.key, &skewed, &[]), &skewed)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (page, _) = b.pending(&bob).await;
    let messages = page["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{page}");
    let delivered = messages[0]["envelope"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let r = b
        .http
        .delete(format!("{}/v1/messages/pending/{delivered}", b.url()))
        .bearer_auth(&bob.api_key)
        .send()
        .await
        .expect("ack");
    assert!(r.status().is_success());
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let r = b
        .deliver_raw(&headers("alpha.test", &pa.key, &skewed, &[]), &skewed)
        .await;
    assert!(
        r.status.is_success() || r.status.as_u16() == 409,
        "{} {}",
        r.status,
        r.text
    );
    assert_eq!(
        b.pending_count(&bob).await,
        0,
        "delivered again after its ack"
    );
    b.stop().await;
}
