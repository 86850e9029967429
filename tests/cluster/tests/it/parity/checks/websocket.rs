//! The WebSocket through the proxy, with the Rust SDK as the client.

use std::time::Duration;

use amp_client::{Client, Frame};
use amp_testkit::cluster::parity::{DOMAIN, Target};
use futures::StreamExt;
use serde_json::json;

use crate::parity::http::{Agent, Http, Msg, assert_mailbox_written, payload_with, tenant};

/// A WebSocket through the proxy: upgrade, auth, a replay of what was queued, then a live
/// push of a message routed through the proxy, answered as delivered over the socket.
pub(crate) async fn websocket_push(t: &Target) {
    let h = Http::new(&t.base);
    let tn = tenant("ws");
    let alice = h.register(&tn, "alice").await;
    let bob = h.register(&tn, "bob").await;
    let queued = assert_mailbox_written(&h.send_msg(&alice, &Msg::new(&bob.address, "q")).await);
    let bob_identity = identity(&bob, &t.base);
    for root in [format!("{}/v1", t.base), format!("{}/api/v1", t.base)] {
        let client = Client::new(&root).expect("client");
        let mut socket = client.subscribe(&bob_identity).await.expect("subscribe");
        assert_eq!(socket.connected().address, bob.address, "{root}");
        assert_eq!(socket.connected().pending_count, 1, "{root}");
        let replay = next_message(&mut socket).await;
        assert_eq!(replay.id(), queued["id"].as_str().expect("id"));
        assert!(replay.replay, "queued before the socket: a replay");
        let m = Msg::new(&bob.address, "live").payload(&payload_with(&root));
        let v = h.send_msg(&alice, &m).await.ok();
        assert_eq!(v["status"], "delivered", "{v}");
        assert_eq!(v["method"], "websocket", "{v}");
        assert_eq!(v["basis"], "socket_written", "{v}");
        assert!(v["delivered_at"].is_string(), "{v}");
        let live = next_message(&mut socket).await;
        assert_eq!(live.id(), v["id"].as_str().expect("id"));
        assert!(!live.replay, "a live push is not a replay");
        assert_eq!(live.envelope.from, alice.address);
        socket.ack(live.id()).await.expect("ack over the socket");
        // The ack is durable once answered; the next socket (another connection, served
        // concurrently) counts what is pending.
        acked(&mut socket, live.id()).await;
        socket.close().await.expect("close");
    }
}

/// Waits for the `message.acked` answer to the ack of `id`.
async fn acked(socket: &mut amp_client::Subscription, id: &str) {
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                Some(Ok(Frame::Other { kind, text })) if kind == "message.acked" => {
                    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON frame");
                    assert_eq!(v["data"]["id"], id, "{text}");
                    return;
                }
                Some(Ok(_)) => {}
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await;
    answered.expect("a message.acked frame within 10 s");
}

/// The next `message.new` on `socket` (a push, not a poll: it arrives or the check fails).
async fn next_message(socket: &mut amp_client::Subscription) -> amp_client::Message {
    let frame = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                Some(Ok(Frame::Message(m))) => return *m,
                Some(Ok(_)) => {}
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await;
    frame.expect("a message.new frame within 10 s")
}

/// An SDK identity for a raw-registered agent (for the WebSocket client).
fn identity(agent: &Agent, base: &str) -> amp_client::Identity {
    let registration: amp_client::Registration = serde_json::from_value(json!({
        "address": agent.address,
        "api_key": agent.api_key,
        "agent_id": "agt_unknown",
        "provider": { "name": DOMAIN, "endpoint": format!("{base}/v1") },
    }))
    .expect("registration");
    amp_client::Identity::new(agent.key.clone(), registration).expect("identity")
}
