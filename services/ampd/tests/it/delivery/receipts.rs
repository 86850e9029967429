//! Delivery and read receipts (RT-20, RT-21, NTF-02, NTF-03, NTF-04, §4.30).

use std::time::Duration;

use amp_proto::Timestamp;
use serde_json::{Value, json};

use super::*;

/// `options.receipt: true`.
fn with_receipt() -> Value {
    json!({ "options": { "receipt": true } })
}

#[track_caller]
fn assert_delivered_receipt(f: &Value, id: &str, to: &str, method: &str, basis: &str) {
    assert_eq!(f["type"], "message.delivered", "{f}");
    let d = &f["data"];
    assert_eq!(d["id"], id, "{f}");
    assert_eq!(d["to"], to, "{f}");
    assert_eq!(d["method"], method, "{f}");
    assert_eq!(d["basis"], basis, "{f}");
    assert!(
        d["delivered_at"]
            .as_str()
            .and_then(Timestamp::parse)
            .is_some(),
        "{f}"
    );
}

/// RT-20, §4.30: a sender with an open socket gets `message.delivered {id, to, delivered_at,
/// method, basis}` when the message is pushed to the recipient's socket; the route answer
/// says `receipt: "websocket"`. Without `options.receipt` there is no receipt.
#[tokio::test]
async fn a_delivery_receipt_reaches_the_senders_socket() {
    let s = start().await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;
    let (mut wa, _) = s.connect(&alice).await;
    let (mut wb, _) = s.connect(&bob).await;

    let v = s
        .route(
            &alice,
            &bob.address,
            &payload_with("receipt please"),
            with_receipt(),
        )
        .await
        .ok();
    assert_eq!(v["receipt"], "websocket", "{v}");
    assert_eq!(v["basis"], "socket_written", "{v}");
    let id = id_of(&v);
    assert_message_new(&recv(&mut wb).await, &id, false);
    let r = recv(&mut wa).await;
    assert_delivered_receipt(&r, &id, &bob.address, "websocket", "socket_written");

    // No receipt asked for: none comes, and the answer has no `receipt`.
    let v = s.send(&alice, &bob.address, "no receipt").await;
    assert!(v.get("receipt").is_none(), "{v}");
    assert_message_new(&recv(&mut wb).await, &id_of(&v), false);
    let extra = frames_within(&mut wa, Duration::from_millis(400)).await;
    assert!(extra.is_empty(), "unasked receipt: {extra:?}");
    // Once only: the recipient's ack adds no second `message.delivered`.
    send_text(&mut wb, json!({ "type": "ack", "id": id }).to_string()).await;
    recv_type(&mut wb, "message.acked").await;
    let extra = frames_within(&mut wa, Duration::from_millis(400)).await;
    assert!(extra.is_empty(), "second receipt: {extra:?}");
    s.stop().await;
}

/// NTF-04, §4.30: with no sender socket the receipt is retained (route answer `receipt:
/// "retained"`), retrievable with `GET /v1/messages/receipts`, and pushed right after
/// `connected` on the sender's next connection.
#[tokio::test]
async fn a_receipt_without_a_sender_socket_is_retained_and_pushed_on_connect() {
    let s = start().await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;
    let (mut wb, _) = s.connect(&bob).await;

    let v = s
        .route(
            &alice,
            &bob.address,
            &payload_with("while you were out"),
            with_receipt(),
        )
        .await
        .ok();
    assert_eq!(v["receipt"], "retained", "{v}");
    let id = id_of(&v);
    assert_message_new(&recv(&mut wb).await, &id, false);

    // Retrievable before the sender connects.
    let mut list = Vec::new();
    for _ in 0..50 {
        let r = s.get(&alice, "/v1/messages/receipts").await.ok();
        list = r["receipts"].as_array().expect("receipts").clone();
        if !list.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(list.len(), 1, "{list:?}");
    assert_delivered_receipt(&list[0], &id, &bob.address, "websocket", "socket_written");

    // Pushed right after `connected`.
    let (mut wa, connected) = s.connect(&alice).await;
    assert_eq!(connected["data"]["pending_count"], 0, "{connected}");
    let r = recv(&mut wa).await;
    assert_delivered_receipt(&r, &id, &bob.address, "websocket", "socket_written");
    s.stop().await;
}

/// A receipt established by the recipient's REST ack (relay delivery) is retained for an
/// offline sender too, with `method: relay`.
#[tokio::test]
async fn a_relay_delivery_receipt_comes_with_the_ack() {
    let s = start().await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;
    let v = s
        .route(
            &alice,
            &bob.address,
            &payload_with("pick me up"),
            with_receipt(),
        )
        .await
        .ok();
    assert_eq!(v["receipt"], "retained", "{v}");
    assert_eq!(v["basis"], "mailbox_written", "{v}");
    let id = id_of(&v);
    let (mut wa, _) = s.connect(&alice).await;
    let early = frames_within(&mut wa, Duration::from_millis(300)).await;
    assert!(
        early.is_empty(),
        "delivered before anyone picked it up: {early:?}"
    );
    s.ack(&bob, &id).await;
    let r = recv(&mut wa).await;
    assert_eq!(r["type"], "message.delivered", "{r}");
    assert_eq!(r["data"]["id"], id.as_str(), "{r}");
    assert_eq!(r["data"]["method"], "relay", "{r}");
    let basis = r["data"]["basis"].as_str().unwrap_or_default();
    assert!(
        ["mailbox_written", "queued"].contains(&basis),
        "relay basis: {r}"
    );
    s.stop().await;
}

/// RT-21, NTF-03: `POST /v1/messages/{id}/read` by the recipient reaches the sender's socket
/// as `message.read {id, read_at}`; nothing is reported read before that.
#[tokio::test]
async fn a_read_receipt_reaches_the_senders_socket() {
    let s = start().await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;
    let (mut wa, _) = s.connect(&alice).await;
    let (mut wb, _) = s.connect(&bob).await;
    let id = id_of(&s.send(&alice, &bob.address, "read me").await);
    assert_message_new(&recv(&mut wb).await, &id, false);
    let early = frames_within(&mut wa, Duration::from_millis(300)).await;
    assert!(
        early.iter().all(|f| f["type"] != "message.read"),
        "read before /read: {early:?}"
    );

    let v = s
        .post(&bob, &format!("/v1/messages/{id}/read"), None)
        .await
        .ok();
    assert_eq!(v["read_receipt_sent"], true, "{v}");
    let r = recv(&mut wa).await;
    assert_eq!(r["type"], "message.read", "{r}");
    assert_eq!(r["data"]["id"], id.as_str(), "{r}");
    assert!(
        r["data"]["read_at"]
            .as_str()
            .and_then(Timestamp::parse)
            .is_some(),
        "{r}"
    );
    // Read is not an ack (NTF-11).
    assert_eq!(s.pending_ids(&bob).await, [id]);
    s.stop().await;
}
