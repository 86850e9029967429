//! The REST half of the SDK against the real provider.

use std::time::Duration;

use amp_client::{ClientError, Identity, RouteOptions};
use amp_proto::{Priority, SecretKey};

use crate::common::{Ampd, ClientExt, DOMAIN, register, tenant};

/// Numbers that a parse-and-reserialise would change: the bytes must survive.
const PAYLOAD: &str = r#"{"type":"request","message":"hello bob","context":{"n":1.0,"big":123456789012345678901234567890,"e":1E3,"s":"caf\u00e9"}}"#;

#[tokio::test]
async fn register_route_pickup_read_and_ack() {
    let p = Ampd::start().await;
    let client = p.client();
    let t = tenant("sdk");
    let alice = register(&client, &t, "alice").await;
    let bob = register(&client, &t, "bob").await;
    assert_eq!(alice.address(), format!("alice@{t}.{DOMAIN}"));
    assert!(alice.api_key().starts_with("amp_"));
    assert!(
        alice.route_url().ends_with("/v1/route"),
        "{}",
        alice.route_url()
    );

    // Signed over exactly the `to` sent: here the short form, resolved in the tenant.
    let sent = client
        .route(
            &alice,
            &format!("bob@{t}.{DOMAIN}"),
            "greetings",
            PAYLOAD,
            &RouteOptions {
                priority: Some(Priority::High),
                receipt: true,
                ..RouteOptions::default()
            },
        )
        .await
        .expect("route");
    assert!(amp_proto::MessageId::is_valid(&sent.id), "{}", sent.id);
    assert_eq!(sent.status, "queued");
    assert_eq!(sent.receipt.as_deref(), Some("retained"));

    assert_eq!(client.count(&bob).await.expect("count").count, 1);
    let page = client
        .pending(&bob, None, None, None)
        .await
        .expect("pending");
    assert_eq!(page.count, 1);
    let m = &page.messages[0];
    assert_eq!(m.id(), sent.id);
    assert_eq!(m.payload.get(), PAYLOAD, "payload bytes changed");
    assert_eq!(m.envelope.from, alice.address());
    assert_eq!(m.envelope.priority.as_deref(), Some("high"));
    m.verify(Some(&alice.key().public()))
        .expect("verifies with alice's key");
    m.verify(None)
        .expect("verifies with the delivered sender key");

    // A reply, signed with in_reply_to, lands in alice's mailbox in the same thread.
    let reply = client
        .route(
            &bob,
            alice.address(),
            "re: greetings",
            r#"{"type":"response","message":"hi"}"#,
            &RouteOptions {
                in_reply_to: Some(&sent.id),
                ..RouteOptions::default()
            },
        )
        .await
        .expect("reply");
    assert_eq!(reply.thread_id, sent.thread_id);

    // Read receipt: retained for the sender, the message stays pending.
    let r = client.read(&bob, &sent.id).await.expect("read");
    assert!(r.read_receipt_sent);
    assert_eq!(client.count(&bob).await.expect("count").count, 1);
    let receipts = client.receipts(&alice, None, None).await.expect("receipts");
    let read = receipts
        .receipts
        .iter()
        .find(|r| r.kind == "message.read")
        .expect("a read receipt");
    assert_eq!(read.message_id(), Some(sent.id.as_str()));
    client
        .ack_receipts(&alice, receipts.next_after.expect("seq"))
        .await
        .expect("ack receipts");
    assert!(
        client
            .receipts(&alice, None, None)
            .await
            .expect("receipts")
            .receipts
            .iter()
            .all(|r| r.kind != "message.read")
    );

    // Batch ack, then the single ack is idempotent.
    let acked = client
        .ack(&bob, &[&sent.id, "msg_1_dead"])
        .await
        .expect("ack");
    assert_eq!(acked.acknowledged, 1);
    assert_eq!(acked.not_found, vec!["msg_1_dead".to_owned()]);
    let again = client.ack_one(&bob, &sent.id).await.expect("ack again");
    assert!(again.already_acked);
    assert!(
        client
            .pending(&bob, None, None, None)
            .await
            .expect("pending")
            .messages
            .is_empty()
    );

    // Alice got the reply; a client-chosen id is kept and a retry is idempotent.
    let page = client
        .pending(&alice, Some(10), None, None)
        .await
        .expect("pending");
    assert_eq!(page.messages.len(), 1);
    assert_eq!(
        page.messages[0].envelope.in_reply_to.as_deref(),
        Some(sent.id.as_str())
    );
    let opts = RouteOptions {
        id: Some("msg_1700000000000_00ff"),
        ..RouteOptions::default()
    };
    let first = client
        .route(
            &alice,
            bob.address(),
            "s",
            r#"{"type":"notification","message":"x"}"#,
            &opts,
        )
        .await
        .expect("route with id");
    assert_eq!(first.id, "msg_1700000000000_00ff");
    p.stop().await;
}

#[tokio::test]
async fn long_poll_returns_a_message_routed_while_waiting() {
    let p = Ampd::start().await;
    let client = p.client();
    let t = tenant("poll");
    let alice = register(&client, &t, "alice").await;
    let bob = register(&client, &t, "bob").await;
    let head = client
        .count(&bob)
        .await
        .expect("count")
        .cursor
        .expect("cursor");
    let sender = client.clone();
    let to = bob.address().to_owned();
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sender
            .route(
                &alice,
                &to,
                "late",
                r#"{"type":"notification","message":"late"}"#,
                &RouteOptions::default(),
            )
            .await
            .expect("route")
    });
    let page = client
        .pending(&bob, None, Some(&head), Some(Duration::from_secs(10)))
        .await
        .expect("long poll");
    let sent = send.await.expect("join");
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].id(), sent.id);
    p.stop().await;
}

#[tokio::test]
async fn provider_errors_map_to_api_errors() {
    let p = Ampd::start().await;
    let client = p.client();
    let t = tenant("err");
    let alice = register(&client, &t, "alice").await;

    let err = client
        .route(
            &alice,
            &format!("nobody@{t}.{DOMAIN}"),
            "s",
            r#"{"type":"notification","message":"x"}"#,
            &RouteOptions::default(),
        )
        .await
        .expect_err("unknown recipient");
    match &err {
        ClientError::Api {
            status,
            error,
            message,
            field,
            ..
        } => {
            assert_eq!(*status, 404);
            assert_eq!(error, "not_found");
            assert!(!message.is_empty());
            assert_eq!(field.as_deref(), Some("to"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.code(), "not_found");

    let taken = client
        .register(Some(&t), "alice", &SecretKey::generate(), None)
        .await
        .expect_err("name taken");
    assert_eq!((taken.status(), taken.code()), (Some(409), "name_taken"));

    let bad = client
        .register(Some(&t), "Not A Name!", &SecretKey::generate(), None)
        .await
        .expect_err("bad name");
    assert_eq!(bad.code(), "invalid_field");

    // A forged identity: right address, wrong key → the signature is refused.
    let forged = Identity::new(SecretKey::generate(), alice.registration().clone()).expect("id");
    let sig = client
        .route(
            &forged,
            alice.address(),
            "s",
            r#"{"type":"notification","message":"x"}"#,
            &RouteOptions::default(),
        )
        .await
        .expect_err("bad signature");
    assert_eq!((sig.status(), sig.code()), (Some(400), "signature_invalid"));

    let mut reg = alice.registration().clone();
    reg.api_key = "amp_live_sk_not_a_key".into();
    let stranger = Identity::new(SecretKey::generate(), reg).expect("id");
    let unauth = client.count(&stranger).await.expect_err("bad key");
    assert_eq!(
        (unauth.status(), unauth.code()),
        (Some(401), "unauthorized")
    );

    let missing = client
        .ack_one(&alice, "msg_1_abc")
        .await
        .expect_err("unknown id");
    assert_eq!((missing.status(), missing.code()), (Some(404), "not_found"));

    // Refused before sending.
    let invalid = client
        .route(
            &alice,
            alice.address(),
            "s",
            "{not json",
            &RouteOptions::default(),
        )
        .await
        .expect_err("payload not JSON");
    assert!(matches!(invalid, ClientError::Invalid(_)), "{invalid:?}");

    // Nobody listening: a transport error.
    let dead = amp_client::Client::new("http://127.0.0.1:9").expect("client");
    let e = dead.info().await.expect_err("refused");
    assert_eq!(e.code(), "transport");

    let info = client.info().await.expect("info");
    assert_eq!(info.provider, DOMAIN);
    assert_eq!(client.health().await.expect("health").status, "healthy");
    p.stop().await;
}
