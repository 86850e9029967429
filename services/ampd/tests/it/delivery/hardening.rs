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

/// The server pings every socket (WebSocket ping frames, `ping_interval_secs`): a client that
/// reads answers them (its library does) and stays connected well past the ping timeout.
#[tokio::test]
async fn hardening_ws_server_pings_keep_a_reading_client_connected() {
    // A 3 s timeout: room for a loaded machine to schedule the client's pong.
    let s = start_with(|c| {
        c.delivery.ping_interval_secs = 1;
        c.delivery.ping_timeout_secs = 3;
    })
    .await;
    let alice = s.register("acme", "alice").await;
    let (mut ws, _) = s.connect(&alice).await;
    // Read (and so answer pings) for 4 s: about 4 pings, each answered within its timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut ws)).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Close(c)))) => panic!("closed while answering pings: {c:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("socket ended: {other:?}"),
        }
    }
    assert!(pings >= 3, "{pings} server pings in 4 s at a 1 s interval");
    // Still open and served.
    send_text(&mut ws, json!({ "type": "ping" }).to_string()).await;
    let pong = recv(&mut ws).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    s.stop().await;
}

/// A peer that stops answering (here: a client that reads nothing, so its library sends no
/// pong) is closed at the ping timeout, 1001 `ping timeout`, long before the idle timeout.
/// The frames are read from the TCP stream itself: a WebSocket library would answer the
/// pings while reading its way to the close.
#[tokio::test]
async fn hardening_ws_peer_that_stops_answering_pings_is_closed() {
    use tokio::io::AsyncReadExt;
    let s = start_with(|c| {
        c.delivery.ping_interval_secs = 1;
        c.delivery.ping_timeout_secs = 1;
        c.delivery.idle_timeout_secs = 300;
    })
    .await;
    let alice = s.register("acme", "alice").await;
    let (mut ws, _) = s.connect(&alice).await;
    let started = Instant::now();
    let tcp = match ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(t) => t,
        _ => panic!("a plain TCP stream was expected"),
    };
    // Everything the server sends until it closes the connection (a ping at 1 s, unanswered
    // and due at 2 s, then the close).
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "the server kept the connection open for 10 s");
    let took = started.elapsed();
    // Ampd frames are unmasked and small here: [0x80 | opcode, length, payload...].
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 2 <= raw.len() {
        let (opcode, len) = (raw[at] & 0x0f, usize::from(raw[at + 1] & 0x7f));
        assert!(
            len < 126 && at + 2 + len <= raw.len(),
            "unexpected frame bytes {raw:?}"
        );
        frames.push((opcode, raw[at + 2..at + 2 + len].to_vec()));
        at += 2 + len;
    }
    assert!(
        frames.iter().any(|(op, _)| *op == 0x9),
        "no ping before the close: {frames:?}"
    );
    let (op, close) = frames.last().expect("a close frame");
    assert_eq!(*op, 0x8, "the last frame is not a close: {frames:?}");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1001);
    assert_eq!(&close[2..], b"ping timeout");
    assert!(
        took >= Duration::from_millis(1_500) && took < Duration::from_secs(8),
        "closed after {took:?} (ping at 1 s, due at 2 s)"
    );
    s.stop().await;
}
