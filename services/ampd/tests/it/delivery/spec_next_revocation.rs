//! Spec-next 07 "Key Revocation" and "Replay Protection" against `ampd`, over REST and
//! WebSocket `route` frames: a rotated-out or revoked public key signs nothing (`403
//! key_revoked`) and registers nowhere for the retention, then it is free again; a timestamp
//! more than 60 s ahead is `400 timestamp_future`; a replayed signed message is stored and
//! delivered once, and never again after its acknowledgement.

use std::time::Duration;

use amp_proto::{SecretKey, Timestamp};
use reqwest::Method;
use serde_json::{Value, json};

use super::{
    Agent, Ampd, DeliveryExt, payload_with, recv_type, send_text, signed_body, start, start_with,
};

/// `POST /v1/register` of `key` as `name` in `tenant`; the answer as it came.
async fn register_key(s: &Ampd, tenant: &str, name: &str, key: &SecretKey) -> super::Resp {
    let body = json!({
        "tenant": tenant,
        "name": name,
        "public_key": key.public().to_pem(),
        "key_algorithm": "Ed25519",
    });
    s.call(Method::POST, "/v1/register", None, Some(body.to_string()))
        .await
}

/// Rotates `who`'s keypair to a new key (proof signed by the old one); returns the new key.
async fn rotate_keys(s: &Ampd, who: &Agent) -> SecretKey {
    let new_key = SecretKey::generate();
    let pem = new_key.public().to_pem();
    let proof = who.key.sign_b64(pem.as_bytes());
    let v = s
        .post(
            who,
            "/v1/auth/rotate-keys",
            Some(json!({ "new_public_key": pem, "proof": proof }).to_string()),
        )
        .await
        .ok();
    assert_eq!(v["fingerprint"], new_key.public().fingerprint(), "{v}");
    new_key
}

/// `who` signing with `key` instead of its own.
fn signing_with(who: &Agent, key: &SecretKey) -> Agent {
    Agent {
        address: who.address.clone(),
        api_key: who.api_key.clone(),
        key: key.clone(),
    }
}

#[tokio::test]
async fn spec_next_rotated_out_key_is_revoked_on_rest_websocket_and_registration() {
    let s = start().await;
    let alice = s.register("revrot", "alice").await;
    let bob = s.register("revrot", "bob").await;
    let old = signing_with(&alice, &alice.key);
    let new_key = rotate_keys(&s, &alice).await;
    let alice = signing_with(&alice, &new_key);

    // REST: the old key is revoked, the new one routes.
    let payload = payload_with("signed with the old key");
    let r = s.route(&old, &bob.address, &payload, json!({})).await;
    r.assert_error(403, "key_revoked");
    assert_eq!(r.json()["field"], "signature", "{}", r.text);
    assert!(
        r.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains(&old.key.public().fingerprint())),
        "{}",
        r.text
    );
    let sent = s
        .send(&alice, &bob.address, "signed with the new key")
        .await;
    // A key that never was the agent's is still `signature_invalid`, not `key_revoked`.
    let stranger = signing_with(&alice, &SecretKey::generate());
    s.route(&stranger, &bob.address, &payload, json!({}))
        .await
        .assert_error(400, "signature_invalid");

    // WebSocket `route` frames: the same acceptance.
    let (mut ws, _) = s.connect(&alice).await;
    let body = signed_body(&old, &bob.address, "ws old key", &payload, json!({}));
    send_text(
        &mut ws,
        format!(r#"{{"type":"route","ref":"r-old","data":{body}}}"#),
    )
    .await;
    let err = recv_type(&mut ws, "error").await;
    assert_eq!(err["error"], "key_revoked", "{err}");
    assert_eq!(err["ref"], "r-old", "{err}");
    let body = signed_body(&alice, &bob.address, "ws new key", &payload, json!({}));
    send_text(
        &mut ws,
        format!(r#"{{"type":"route","ref":"r-new","data":{body}}}"#),
    )
    .await;
    let result = recv_type(&mut ws, "route.result").await;
    assert_eq!(result["ref"], "r-new", "{result}");

    // Registration with the revoked key, under any name, is refused (07 over 03), and a
    // rotation back to it too.
    let r = register_key(&s, "revrot", "alice-again", &old.key).await;
    r.assert_error(403, "key_revoked");
    assert_eq!(r.json()["field"], "public_key", "{}", r.text);
    let pem = old.key.public().to_pem();
    let proof = alice.key.sign_b64(pem.as_bytes());
    s.post(
        &alice,
        "/v1/auth/rotate-keys",
        Some(json!({ "new_public_key": pem, "proof": proof }).to_string()),
    )
    .await
    .assert_error(403, "key_revoked");

    // Bob has exactly the two messages signed with the new key.
    let ids = s.pending_ids(&bob).await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&sent["id"].as_str().expect("id").to_owned()));
    s.stop().await;
}

#[tokio::test]
async fn spec_next_revoked_key_stays_refused_for_the_retention_then_expires() {
    // A short retention for the test (the default is the spec's 90 days).
    let s = start_with(|c| c.ingest.key_revocation_retention_secs = 3).await;
    let key = SecretKey::generate();
    let r = register_key(&s, "revexp", "carol", &key).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let carol = Agent {
        address: r.json()["address"].as_str().expect("address").to_owned(),
        api_key: r.json()["api_key"].as_str().expect("api_key").to_owned(),
        key: key.clone(),
    };
    let v = s.delete(&carol, "/v1/auth/revoke-key").await.ok();
    assert_eq!(v["revoked"], true, "{v}");
    let revoked_at = std::time::Instant::now();
    // The API key is gone at once; the public key is on the list.
    s.get(&carol, "/v1/agents/me")
        .await
        .assert_error(401, "unauthorized");
    register_key(&s, "revexp", "carol-two", &key)
        .await
        .assert_error(403, "key_revoked");
    register_key(&s, "otherten", "carol", &key)
        .await
        .assert_error(403, "key_revoked");
    // Another key is not affected.
    let dave = s.register("revexp", "dave").await;

    // Past the retention the key is free again: it registers, and what it signs routes.
    let left = Duration::from_millis(3_300).saturating_sub(revoked_at.elapsed());
    tokio::time::sleep(left).await;
    let r = register_key(&s, "revexp", "carol-three", &key).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let carol3 = Agent {
        address: r.json()["address"].as_str().expect("address").to_owned(),
        api_key: r.json()["api_key"].as_str().expect("api_key").to_owned(),
        key,
    };
    s.send(&carol3, &dave.address, "after the retention").await;
    assert_eq!(s.pending_ids(&dave).await.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn spec_next_timestamps_over_60_s_ahead_are_refused_on_rest_and_websocket() {
    let s = start().await;
    let alice = s.register("future", "alice").await;
    let bob = s.register("future", "bob").await;
    let payload = payload_with("from the future");
    let ahead = |secs: i64| Timestamp::now().plus_secs(secs).to_rfc3339();

    // Flat body and envelope body.
    let r = s
        .route(
            &alice,
            &bob.address,
            &payload,
            json!({ "timestamp": ahead(120) }),
        )
        .await;
    r.assert_error(400, "timestamp_future");
    assert_eq!(r.json()["field"], "timestamp", "{}", r.text);
    let flat: Value = serde_json::from_str(&signed_body(
        &alice,
        &bob.address,
        "delivery test",
        &payload,
        json!({}),
    ))
    .expect("json");
    let enveloped = json!({
        "envelope": {
            "from": alice.address, "to": bob.address, "subject": "delivery test",
            "priority": "normal", "timestamp": ahead(3600), "signature": flat["signature"],
        },
        "payload": flat["payload"],
    });
    s.post(&alice, "/v1/route", Some(enveloped.to_string()))
        .await
        .assert_error(400, "timestamp_future");

    // Within the 60 s tolerance, or in the past: accepted, with the provider's timestamp.
    let ok = s
        .route(
            &alice,
            &bob.address,
            &payload,
            json!({ "timestamp": ahead(30) }),
        )
        .await
        .ok();
    assert!(ok["id"].is_string(), "{ok}");
    s.route(
        &alice,
        &bob.address,
        &payload,
        json!({ "timestamp": ahead(-7200) }),
    )
    .await
    .ok();
    // A timestamp that is not RFC 3339 text is ignored, as before (ours replaces it).
    s.route(
        &alice,
        &bob.address,
        &payload,
        json!({ "timestamp": 99_999_999_999_u64 }),
    )
    .await
    .ok();

    // WebSocket `route` frame.
    let (mut ws, _) = s.connect(&alice).await;
    let body = signed_body(
        &alice,
        &bob.address,
        "ws future",
        &payload,
        json!({ "timestamp": ahead(90) }),
    );
    send_text(
        &mut ws,
        format!(r#"{{"type":"route","ref":"r-future","data":{body}}}"#),
    )
    .await;
    let err = recv_type(&mut ws, "error").await;
    assert_eq!(err["error"], "timestamp_future", "{err}");
    assert_eq!(err["ref"], "r-future", "{err}");

    let page = s.get(&bob, "/v1/messages/pending?limit=100").await.ok();
    let messages = page["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 3, "{page}");
    let now = Timestamp::now();
    for m in messages {
        let ts = Timestamp::parse(m["envelope"]["timestamp"].as_str().expect("timestamp"))
            .expect("rfc 3339");
        assert!(ts <= now, "the provider's clock, not the client's: {m}");
    }
    s.stop().await;
}

#[tokio::test]
async fn spec_next_replayed_signed_message_is_delivered_once_and_never_after_its_ack() {
    let s = start().await;
    let alice = s.register("replay", "alice").await;
    let bob = s.register("replay", "bob").await;
    let payload = payload_with("say it once");
    // One signed request, captured and sent again and again (a client id the provider
    // keeps, as the plugin sends).
    let id = format!("msg_{}_00c0ffee00c0ffee", Timestamp::now().unix_millis());
    let body = signed_body(
        &alice,
        &bob.address,
        "delivery test",
        &payload,
        json!({ "id": id }),
    );
    let first = s.post(&alice, "/v1/route", Some(body.clone())).await.ok();
    let again = s.post(&alice, "/v1/route", Some(body.clone())).await.ok();
    assert_eq!(first["id"], again["id"], "{first} {again}");
    // Over the socket as well.
    let (mut ws, _) = s.connect(&alice).await;
    send_text(
        &mut ws,
        format!(r#"{{"type":"route","ref":"r-replay","data":{body}}}"#),
    )
    .await;
    let result = recv_type(&mut ws, "route.result").await;
    assert_eq!(result["data"]["id"], first["id"], "{result}");

    // Bob's socket gets it once: the replay on connect, nothing more.
    let (mut wb, connected) = s.connect(&bob).await;
    assert_eq!(connected["data"]["pending_count"], 1, "{connected}");
    let pushed = recv_type(&mut wb, "message.new").await;
    let delivered_id = pushed["data"]["envelope"]["id"].clone();
    assert_eq!(delivered_id, first["id"], "{pushed}");
    assert_eq!(s.pending_ids(&bob).await.len(), 1, "one copy");
    s.ack(&bob, delivered_id.as_str().expect("id")).await;

    // Replayed after the acknowledgement: answered, never stored or pushed again.
    let after = s.post(&alice, "/v1/route", Some(body)).await;
    assert!(
        after.status.is_success() || after.status.as_u16() == 409,
        "{} {}",
        after.status,
        after.text
    );
    assert!(s.pending_ids(&bob).await.is_empty(), "delivered again");
    let more = super::next_frame(&mut wb, Duration::from_millis(700)).await;
    assert!(
        !matches!(&more, Some(super::Frame::Json(v)) if v["type"] == "message.new"),
        "pushed again: {more:?}"
    );
    s.stop().await;
}
