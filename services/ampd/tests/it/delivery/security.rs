//! Issue 16 on the delivery side: a socket's send queue and its replay are bounded in bytes,
//! not only in frames. Test names start with `security_` (`cargo test --workspace security`).

use std::time::{Duration, Instant};

use serde_json::json;

use super::{assert_message_new, expect_close, frames_within, id_of, start_with};

/// A payload of about 300 KB: a 60 KB message and a 240 KB context (every field within its
/// limit, the whole within the spec's 512 KiB).
fn big_payload(i: usize) -> String {
    format!(
        r#"{{"type":"notification","message":"{i:05} {}","context":{{"blob":"{}"}}}}"#,
        "x".repeat(60_000),
        "y".repeat(240_000)
    )
}

/// A client that stops reading is disconnected once its queue holds `send_queue_bytes`,
/// although the queue still has room in frames (1024 by default): a thousand queued frames
/// of 300 KB would be 300 MB held for one socket.
#[tokio::test]
async fn security_send_queue_is_bounded_in_bytes_not_only_frames() {
    let s = start_with(|c| {
        c.delivery.send_queue_bytes = 1024 * 1024;
        c.ingest.messaging.push_wait_ms = 200;
    })
    .await;
    let alice = s.register("sec-queue", "alice").await;
    let bob = s.register("sec-queue", "bob").await;
    let (mut ws, _) = s.connect(&bob).await;
    // From here on the client does not poll the socket: about 6.6 MB, past what loopback's
    // socket buffers (a few MB) and a 1 MiB queue hold together, and far below 1024 frames.
    // (Not more: the client must read before the server's 10 s write timeout gives up on
    // the blocked socket without writing its close frame.)
    let started = Instant::now();
    let n = 22;
    for chunk in (0..n).collect::<Vec<_>>().chunks(4) {
        let sends = chunk.iter().map(|&i| {
            let (s, alice, to) = (&s, &alice, bob.address.clone());
            async move { s.route(alice, &to, &big_payload(i), json!({})).await.ok() }
        });
        futures::future::join_all(sends).await;
    }
    eprintln!("routed {n} messages of ~300 KB in {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (frames, code, reason) = expect_close(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("slow consumer"), "{reason}");
    assert!(frames.len() < n, "{} frames", frames.len());
    // The mailbox is the truth: nothing was lost.
    let count = s.get(&bob, "/v1/messages/pending/count").await.ok();
    assert_eq!(count["count"], n, "{count}");
    s.stop().await;
}

/// Replay reads the mailbox a byte-bounded page at a time and waits for a reading client:
/// a mailbox many times the queue's budget is replayed whole, in order, to a client that
/// reads.
#[tokio::test]
async fn security_replay_is_paged_by_bytes_and_complete() {
    let s = start_with(|c| {
        c.delivery.send_queue_bytes = 512 * 1024;
    })
    .await;
    let alice = s.register("sec-replay", "alice").await;
    let bob = s.register("sec-replay", "bob").await;
    let mut sent = Vec::new();
    for i in 0..12 {
        let v = s
            .route(&alice, &bob.address, &big_payload(i), json!({}))
            .await
            .ok();
        sent.push(id_of(&v));
    }
    let (mut ws, connected) = s.connect(&bob).await;
    assert_eq!(connected["data"]["pending_count"], 12, "{connected}");
    let frames = frames_within(&mut ws, Duration::from_secs(3)).await;
    let replayed: Vec<_> = frames
        .iter()
        .filter(|f| f["type"] == "message.new")
        .collect();
    assert_eq!(replayed.len(), sent.len(), "every message replayed once");
    for (f, id) in replayed.iter().zip(&sent) {
        assert_message_new(f, id, true);
    }
    s.stop().await;
}
