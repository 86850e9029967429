//! Issue 16: credential changes reach open sockets, and one agent cannot hold unbounded
//! sockets. Rotating the API key closes the sockets opened with the old key when its grace
//! ends (rotate-key used to tell nobody, and sessions never re-checked their key); sockets on
//! the new key stay; an agent's sockets per process are capped with a clear close reason.
//! Test names start with `security_` (`cargo test --workspace security`).

use std::time::{Duration, Instant};

use serde_json::json;

use super::{DeliveryExt, Ws, auth, connect, expect_close, ping_pong, recv, send_text, start_with};

/// The socket closes with an `unauthorized` error frame and 4001, within `within`.
async fn assert_closed_unauthorized_within(ws: &mut Ws, within: Duration) {
    let (frames, code, _) = expect_close(ws, within).await;
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "error" && f["error"] == "unauthorized"),
        "{frames:?}"
    );
    assert_eq!(code, 4001, "{frames:?}");
}

#[tokio::test]
async fn security_revocation_rotate_key_closes_old_key_sockets_when_grace_ends() {
    let s = start_with(|c| {
        c.ingest.key_rotation_grace_secs = 2;
        // Longer than the test: the close must come from the rotation, not the fallback.
        c.delivery.reauth_secs = 600;
    })
    .await;
    let bob = s.register("sec-rot", "bob").await;
    let (mut old, _) = s.connect(&bob).await;
    let rotated = s.post(&bob, "/v1/auth/rotate-key", None).await.ok();
    let new_key = rotated["api_key"].as_str().expect("new key").to_owned();
    let started = Instant::now();
    // Within the grace the old socket still works.
    ping_pong(&mut old).await;
    // A socket on the new key.
    let mut fresh = connect(&s.ws_url("/v1/ws")).await;
    let connected = auth(&mut fresh, &new_key).await;
    assert_eq!(connected["type"], "connected", "{connected}");
    assert_closed_unauthorized_within(&mut old, Duration::from_secs(8)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1_500),
        "closed before the grace ended: {took:?}"
    );
    // The socket on the new key is unaffected.
    ping_pong(&mut fresh).await;
    s.stop().await;
}

#[tokio::test]
async fn security_revocation_closes_every_socket_of_the_agent_at_once() {
    let s = start_with(|c| c.delivery.reauth_secs = 600).await;
    let bob = s.register("sec-rev", "bob").await;
    let carol = s.register("sec-rev", "carol").await;
    let (mut b1, _) = s.connect(&bob).await;
    let (mut b2, _) = s.connect(&bob).await;
    let (mut c1, _) = s.connect(&carol).await;
    s.delete(&bob, "/v1/auth/revoke-key").await.ok();
    assert_closed_unauthorized_within(&mut b1, Duration::from_secs(3)).await;
    assert_closed_unauthorized_within(&mut b2, Duration::from_secs(3)).await;
    ping_pong(&mut c1).await;
    s.stop().await;
}

#[tokio::test]
async fn security_socket_cap_per_agent_refuses_with_a_clear_reason() {
    let s = start_with(|c| c.delivery.max_sockets_per_agent = 2).await;
    let bob = s.register("sec-cap", "bob").await;
    let carol = s.register("sec-cap", "carol").await;
    let (mut b1, _) = s.connect(&bob).await;
    let (_b2, _) = s.connect(&bob).await;
    // The third is refused: an error frame that says why, then 1008.
    let mut b3 = connect(&s.ws_url("/v1/ws")).await;
    send_text(
        &mut b3,
        json!({ "type": "auth", "token": bob.api_key }).to_string(),
    )
    .await;
    let (frames, code, reason) = expect_close(&mut b3, Duration::from_secs(5)).await;
    assert_eq!(code, 1008, "{frames:?}");
    assert!(reason.contains("too many sockets"), "{reason}");
    assert!(
        frames.iter().any(|f| f["type"] == "error"
            && f["message"]
                .as_str()
                .is_some_and(|m| m.contains("2 open sockets"))),
        "{frames:?}"
    );
    // Another agent is not held back; the first sockets still work.
    let (mut c1, _) = s.connect(&carol).await;
    ping_pong(&mut c1).await;
    ping_pong(&mut b1).await;
    // Closing one makes room.
    drop(b1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut ws = connect(&s.ws_url("/v1/ws")).await;
        send_text(
            &mut ws,
            json!({ "type": "auth", "token": bob.api_key }).to_string(),
        )
        .await;
        let first = recv(&mut ws).await;
        if first["type"] == "connected" {
            break;
        }
        assert!(Instant::now() < deadline, "no room after a close");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

/// One message budget per agent for `POST /v1/route` and the WebSocket `route` frame: with 3
/// a minute, two REST sends leave one frame, and the next is refused (each path used to
/// have its own budget, twice the limit per agent).
#[tokio::test]
async fn security_route_budget_is_shared_by_rest_and_websocket() {
    use super::{payload_with, recv_type, signed_body};

    let s = start_with(|c| c.ingest.limits.messages_per_minute = 3).await;
    let alice = s.register("sec-budget", "alice").await;
    let bob = s.register("sec-budget", "bob").await;
    s.send(&alice, &bob.address, "rest one").await;
    s.send(&alice, &bob.address, "rest two").await;
    let (mut ws, _) = s.connect(&alice).await;
    let frame = |n: u32| {
        let body = signed_body(
            &alice,
            &bob.address,
            "budget",
            &payload_with(&format!("frame {n}")),
            json!({}),
        );
        format!(r#"{{"type":"route","ref":"r-{n}","data":{body}}}"#)
    };
    send_text(&mut ws, frame(1)).await;
    let ok = recv_type(&mut ws, "route.result").await;
    assert_eq!(ok["ref"], "r-1", "{ok}");
    send_text(&mut ws, frame(2)).await;
    let refused = recv_type(&mut ws, "error").await;
    assert_eq!(refused["error"], "rate_limited", "{refused}");
    assert_eq!(refused["ref"], "r-2", "{refused}");
    // And REST is out of budget too.
    let r = s
        .route(&alice, &bob.address, &payload_with("rest three"), json!({}))
        .await;
    assert_eq!(r.status.as_u16(), 429, "{}", r.text);
    s.stop().await;
}
