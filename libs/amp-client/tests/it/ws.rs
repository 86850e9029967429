//! The WebSocket client against a small axum server speaking the frames of SPEC-CHECKLIST
//! Part 2.2 and §4.8: first-frame auth, `connected`, replays with `replay:true`,
//! `message.ack`, `ping`/`pong`, `route` → `route.result` with `ref`, receipts, close codes.

use std::sync::Arc;
use std::time::Duration;

use amp_client::{Client, ClientError, Frame, Identity, ProviderRef, Registration, RouteOptions};
use amp_proto::signing::{SignedFields, verify_message};
use amp_proto::{PublicKey, SecretKey};
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub(crate) const GOOD_TOKEN: &str = "amp_live_sk_good";
pub(crate) const ADDRESS: &str = "alice@acme.amp.test";
/// The replayed message's payload, with a number a re-serialisation would change.
pub(crate) const REPLAY_PAYLOAD: &str =
    r#"{"type":"notification","message":"queued before","n":1.50}"#;
pub(crate) const REPLAY_ID: &str = "msg_1700000000000_0a";

struct Mock {
    key: PublicKey,
    events: mpsc::UnboundedSender<String>,
}

/// Starts the mock on a free port; returns its base URL and the events it saw
/// (`ack:<id>`, `route:<ref>:<valid>`).
pub(crate) async fn start_mock(key: PublicKey) -> (String, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(Mock { key, events: tx });
    let app = Router::new()
        .route("/v1/ws", get(upgrade))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

async fn upgrade(State(mock): State<Arc<Mock>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| session(mock, socket))
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

async fn recv_json(socket: &mut WebSocket) -> Option<Value> {
    loop {
        match socket.recv().await? {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

async fn session(mock: Arc<Mock>, mut socket: WebSocket) {
    let Some(auth) = recv_json(&mut socket).await else {
        return;
    };
    if auth["type"] != "auth" {
        let _ = socket.send(close(1008, "first frame must be auth")).await;
        return;
    }
    match auth["token"].as_str() {
        Some(GOOD_TOKEN) => {}
        Some("amp_live_sk_silent") => {
            let _ = socket.send(close(4001, "unauthorized")).await;
            return;
        }
        _ => {
            let _ = socket
                .send(text(
                    json!({"type":"error","error":"unauthorized","message":"invalid API key"}),
                ))
                .await;
            let _ = socket.send(close(4001, "unauthorized")).await;
            return;
        }
    }
    let _ = socket
        .send(text(
            json!({"type":"connected","data":{"address":ADDRESS,"pending_count":1}}),
        ))
        .await;
    let replay = format!(
        r#"{{"type":"message.new","replay":true,"data":{{"id":"{REPLAY_ID}","replay":true,"envelope":{{"version":"amp/0.1","id":"{REPLAY_ID}","from":"bob@acme.amp.test","to":"{ADDRESS}","subject":"earlier","priority":"normal","timestamp":"2025-01-01T00:00:00Z","signature":"","thread_id":"{REPLAY_ID}"}},"payload":{REPLAY_PAYLOAD}}}}}"#
    );
    let _ = socket.send(Message::Text(replay.into())).await;
    while let Some(frame) = recv_json(&mut socket).await {
        match frame["type"].as_str() {
            Some("message.ack" | "ack") => {
                let id = frame["id"].as_str().unwrap_or("").to_owned();
                let _ = mock.events.send(format!("ack:{id}"));
                let _ = socket
                    .send(text(json!({"type":"message.read","data":{"id":id,"read_at":"2025-01-01T00:00:01Z"}})))
                    .await;
            }
            Some("ping") => {
                let _ = socket
                    .send(text(
                        json!({"type":"pong","timestamp":"2025-01-01T00:00:02Z"}),
                    ))
                    .await;
            }
            Some("route") => {
                let d = &frame["data"];
                let s = |k: &str| d[k].as_str().unwrap_or("").to_owned();
                let payload = d["payload"].to_string();
                let fields = SignedFields {
                    from: ADDRESS,
                    to: &s("to"),
                    subject: &s("subject"),
                    priority: &s("priority"),
                    in_reply_to: &s("in_reply_to"),
                };
                let valid = verify_message(&mock.key, &fields, &payload, &s("signature")).is_ok();
                let reference = frame["ref"].clone();
                let _ = mock.events.send(format!(
                    "route:{}:{valid}",
                    reference.as_str().unwrap_or("")
                ));
                if s("to").starts_with("nobody") {
                    let _ = socket
                        .send(text(json!({"type":"error","error":"invalid_recipient","message":"no such agent","ref":reference})))
                        .await;
                } else {
                    let _ = socket
                        .send(text(json!({"type":"route.result","ref":reference,"data":{"id":"msg_1700000000001_0b","status":"queued","method":"relay","basis":"mailbox_written"}})))
                        .await;
                    let _ = socket
                        .send(text(json!({"type":"message.delivered","data":{"id":"msg_1700000000001_0b","to":s("to"),"delivered_at":"2025-01-01T00:00:03Z","method":"relay","basis":"mailbox_written"}})))
                        .await;
                }
            }
            Some("bye") => {
                let _ = socket.send(close(1001, "idle")).await;
                return;
            }
            _ => {
                let _ = socket
                    .send(text(
                        json!({"type":"error","error":"invalid_request","message":"unknown frame"}),
                    ))
                    .await;
            }
        }
    }
}

pub(crate) fn identity(key: SecretKey, token: &str) -> Identity {
    Identity::new(
        key,
        Registration {
            address: ADDRESS.into(),
            short_address: None,
            agent_id: "agt_1".into(),
            tenant: Some("acme".into()),
            api_key: token.into(),
            fingerprint: None,
            provider: ProviderRef::default(),
        },
    )
    .expect("identity")
}

async fn next(sub: &mut amp_client::Subscription) -> Frame {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a frame in time")
        .expect("stream open")
        .expect("a frame")
}

#[tokio::test]
async fn subscribe_replay_ack_ping_route_and_close() {
    let key = SecretKey::generate();
    let (url, mut events) = start_mock(key.public()).await;
    let client = Client::new(&url).expect("client");
    let me = identity(key, GOOD_TOKEN);
    let mut sub = client.subscribe(&me).await.expect("subscribe");
    assert_eq!(sub.connected().address, ADDRESS);
    assert_eq!(sub.connected().pending_count, 1);

    let Frame::Message(m) = next(&mut sub).await else {
        panic!("expected message.new")
    };
    assert!(m.replay);
    assert_eq!(m.id(), REPLAY_ID);
    assert_eq!(m.payload.get(), REPLAY_PAYLOAD);

    sub.ack(m.id()).await.expect("ack");
    assert_eq!(
        events.recv().await.as_deref(),
        Some(format!("ack:{REPLAY_ID}").as_str())
    );
    let Frame::Read(r) = next(&mut sub).await else {
        panic!("expected message.read")
    };
    assert_eq!(r.id, REPLAY_ID);

    sub.ping().await.expect("ping");
    assert!(matches!(
        next(&mut sub).await,
        Frame::Pong { timestamp: Some(_) }
    ));

    let opts = RouteOptions {
        receipt: true,
        ..RouteOptions::default()
    };
    sub.route(
        &me,
        "bob@acme.amp.test",
        "over ws",
        r#"{"type":"notification","message":"hi","x":2.0}"#,
        &opts,
        "r1",
    )
    .await
    .expect("route");
    assert_eq!(
        events.recv().await.as_deref(),
        Some("route:r1:true"),
        "signature verifies"
    );
    match next(&mut sub).await {
        Frame::RouteResult { reference, result } => {
            assert_eq!(reference.as_deref(), Some("r1"));
            assert_eq!(result.id, "msg_1700000000001_0b");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(next(&mut sub).await, Frame::Delivered(d) if d.basis.as_deref() == Some("mailbox_written"))
    );

    sub.route(
        &me,
        "nobody@acme.amp.test",
        "s",
        r#"{"type":"notification","message":"x"}"#,
        &RouteOptions::default(),
        "r2",
    )
    .await
    .expect("route");
    match next(&mut sub).await {
        Frame::Error {
            error, reference, ..
        } => {
            assert_eq!(error, "invalid_recipient");
            assert_eq!(reference.as_deref(), Some("r2"));
        }
        other => panic!("{other:?}"),
    }

    // An idle close (1001) is reported once, then the stream ends.
    sub.send_raw(r#"{"type":"bye"}"#).await.expect("bye");
    match tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("in time")
    {
        Some(Err(ClientError::Closed { code, reason })) => {
            assert_eq!(code, Some(1001));
            assert_eq!(reason, "idle");
        }
        other => panic!("{other:?}"),
    }
    assert!(sub.next().await.is_none());
}

#[tokio::test]
async fn refused_auth_is_an_error() {
    let key = SecretKey::generate();
    let (url, _events) = start_mock(key.public()).await;
    let client = Client::new(&url).expect("client");

    let err = client
        .subscribe(&identity(key.clone(), "amp_live_sk_wrong"))
        .await
        .expect_err("refused");
    match err {
        ClientError::Socket { error, .. } => assert_eq!(error, "unauthorized"),
        other => panic!("{other:?}"),
    }
    let err = client
        .subscribe(&identity(key, "amp_live_sk_silent"))
        .await
        .expect_err("closed");
    assert!(
        matches!(
            err,
            ClientError::Closed {
                code: Some(4001),
                ..
            }
        ),
        "{err:?}"
    );

    // No WebSocket endpoint at all: the refused upgrade is an API error with its status.
    let p = crate::common::Ampd::start().await;
    let err = Client::new(&format!("{}/nothing-here", p.url()))
        .expect("client")
        .subscribe(&identity(SecretKey::generate(), GOOD_TOKEN))
        .await
        .expect_err("no endpoint");
    assert_eq!(err.status(), Some(404), "{err:?}");
    p.stop().await;
}
