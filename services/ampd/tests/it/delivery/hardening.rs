//! WebSocket limits, with the connection limits of `crate::hardening`: the auth deadline, the
//! bounded send queue (a client that never reads is disconnected) and the frame size cap.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// A socket that never sends its `auth` frame is closed at the deadline (1 s here), 4008.
#[tokio::test]
async fn hardening_ws_without_an_auth_frame_is_closed_at_the_deadline() {
    let s = start().await;
    let mut ws = connect(&s.ws_url("/v1/ws")).await;
    let started = Instant::now();
    let (_, code, _) = expect_close(&mut ws, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert_eq!(code, 4008);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "closed after {waited:?} for a 1 s deadline"
    );
    s.stop().await;
}

/// A client that never reads is disconnected once its send queue is full (1008, "slow
/// consumer"), and every message stays in the mailbox.
#[tokio::test]
async fn hardening_ws_client_that_never_reads_is_disconnected() {
    let (s, mut ws, answers, bob) =
        super::ws::flood_a_socket_that_never_reads(super::ws::FLOOD).await;
    let (_, code, reason) = expect_close(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("slow consumer"), "{reason}");
    let count = s.get(&bob, "/v1/messages/pending/count").await.ok();
    assert_eq!(count["count"], answers.len(), "{count}");
    s.stop().await;
}

/// A frame over `max_frame_bytes` is refused: the socket is closed (1009, message too big)
/// without the frame being read whole.
#[tokio::test]
async fn hardening_ws_oversized_frame_is_refused() {
    let s = start_with(|c| c.delivery.max_frame_bytes = 16 * 1024).await;
    let alice = s.register("acme", "alice").await;
    let (mut ws, _) = s.connect(&alice).await;
    // Within the cap: answered.
    send_text(
        &mut ws,
        json!({ "type": "ping", "pad": "x".repeat(8_000) }).to_string(),
    )
    .await;
    let pong = recv(&mut ws).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    // Over it.
    let big = json!({ "type": "ping", "pad": "x".repeat(64 * 1024) }).to_string();
    let _ = ws.send(Message::text(big)).await;
    let (_, code, reason) = expect_close(&mut ws, FRAME_WAIT).await;
    assert_eq!(code, 1009, "{reason}");
    s.stop().await;
}
