//! WebSocket sessions: auth, replay, live pushes, acks, client frames, route answers, slow
//! consumers, credential changes, discovery.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::*;

// ---------------------------------------------------------------------------------------
// authentication (RT-05, RT-06, RT-07, API-19, §4.8)

/// RT-07(a), §4.8: no frame within the auth timeout → `error` unauthorized, close 4008.
#[tokio::test]
async fn no_auth_frame_in_time_closes_with_4008() {
    let s = start().await;
    let mut ws = connect(&s.ws_url("/v1/ws")).await;
    let started = Instant::now();
    let (frames, code, _reason) = expect_close(&mut ws, Duration::from_secs(6)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before the 1 s auth timeout"
    );
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "error", "{frames:?}");
    assert_eq!(frames[0]["error"], "unauthorized", "{frames:?}");
    assert!(frames[0]["message"].is_string(), "{frames:?}");
    assert_eq!(code, 4008);
    s.stop().await;
}

/// RT-06, RT-07(b): an invalid key → `error` unauthorized, close 4001.
#[tokio::test]
async fn a_bad_key_closes_with_4001() {
    let s = start().await;
    let alice = s.register("acme", "alice").await;
    // A well-formed key that is not issued, a revoked-looking key, and garbage.
    let forged = format!("{}x", alice.api_key);
    for token in [
        forged.as_str(),
        "amp_live_sk_0000",
        "not-a-key",
        "uk_user_key",
    ] {
        let mut ws = connect(&s.ws_url("/v1/ws")).await;
        send_text(
            &mut ws,
            json!({ "type": "auth", "token": token }).to_string(),
        )
        .await;
        let (frames, code, _) = expect_close(&mut ws, FRAME_WAIT).await;
        assert_eq!(frames.len(), 1, "{token}: {frames:?}");
        assert_eq!(frames[0]["type"], "error", "{token}: {frames:?}");
        assert_eq!(frames[0]["error"], "unauthorized", "{token}: {frames:?}");
        assert_eq!(code, 4001, "{token}");
    }
    s.stop().await;
}

/// RT-07(c), §4.8: a first frame that is not `auth` → close 1008 (never a pong).
#[tokio::test]
async fn a_first_frame_other_than_auth_closes_with_1008() {
    let s = start().await;
    let alice = s.register("acme", "alice").await;
    let firsts = [
        r#"{"type":"ping"}"#.to_owned(),
        "this is not json".to_owned(),
        // Right key, wrong frame type.
        json!({ "type": "hello", "token": alice.api_key }).to_string(),
    ];
    for first in &firsts {
        let mut ws = connect(&s.ws_url("/v1/ws")).await;
        send_text(&mut ws, first.clone()).await;
        let (frames, code, _) = expect_close(&mut ws, FRAME_WAIT).await;
        assert!(
            frames.iter().all(|f| f["type"] == "error"),
            "{first}: only an error frame may precede the close: {frames:?}"
        );
        assert_eq!(code, 1008, "{first}");
    }
    // A binary first frame too.
    let mut ws = connect(&s.ws_url("/v1/ws")).await;
    ws.send(Message::binary(b"\x00\x01".to_vec()))
        .await
        .expect("send");
    let (frames, code, _) = expect_close(&mut ws, FRAME_WAIT).await;
    assert!(frames.iter().all(|f| f["type"] == "error"), "{frames:?}");
    assert_eq!(code, 1008);
    s.stop().await;
}

/// RT-05, API-19: a key in the query string does not authenticate; the auth frame is still
/// required (and the connection times out without it).
#[tokio::test]
async fn a_key_in_the_url_does_not_authenticate() {
    let s = start().await;
    let alice = s.register("acme", "alice").await;
    for q in ["token", "api_key"] {
        let mut ws = connect(&s.ws_url(&format!("/v1/ws?{q}={}", alice.api_key))).await;
        let (frames, code, _) = expect_close(&mut ws, Duration::from_secs(6)).await;
        assert!(
            frames.iter().all(|f| f["type"] != "connected"),
            "?{q}= authenticated: {frames:?}"
        );
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0]["error"], "unauthorized", "{frames:?}");
        assert_eq!(code, 4008, "?{q}=");
    }
    // With the key in the URL, the auth frame still works (the URL is simply ignored).
    let mut ws = connect(&s.ws_url(&format!("/v1/ws?token={}", alice.api_key))).await;
    auth(&mut ws, &alice.api_key).await;
    s.stop().await;
}

/// Part 2.2: `/api/v1/ws` is the same endpoint.
#[tokio::test]
async fn the_api_alias_works() {
    let s = start().await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;
    let mut ws = connect(&s.ws_url("/api/v1/ws")).await;
    let connected = auth(&mut ws, &bob.api_key).await;
    assert_eq!(connected["data"]["address"], bob.address.as_str());
    assert_eq!(connected["data"]["pending_count"], 0);
    let id = id_of(&s.send(&alice, &bob.address, "via the alias").await);
    let f = recv(&mut ws).await;
    assert_message_new(&f, &id, false);
    ping_pong(&mut ws).await;
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// replay and live pushes (RT-08, NTF-12, NTF-13)

/// RT-06, RT-08, NTF-13: `connected {address, pending_count}`, then every queued message
/// oldest first with `replay: true`, then live messages with `replay: false`; acked
/// messages (REST or WS) are never pushed again.
#[tokio::test]
async fn replay_after_reconnect_then_live_and_acked_never_again() {
    let s = start().await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;

    // Queued while Bob is offline.
    let mut queued = Vec::new();
    for i in 0..3 {
        let v = s.send(&alice, &bob.address, &format!("offline {i}")).await;
        assert_eq!(v["basis"], "mailbox_written", "{v}");
        queued.push(id_of(&v));
    }

    let (mut ws, connected) = s.connect(&bob).await;
    assert_eq!(connected["data"]["pending_count"], 3, "{connected}");
    for id in &queued {
        let f = recv(&mut ws).await;
        assert_message_new(&f, id, true);
        assert_eq!(f["data"]["envelope"]["from"], alice.address.as_str(), "{f}");
        assert_eq!(f["data"]["envelope"]["to"], bob.address.as_str(), "{f}");
    }
    // Live.
    let live = id_of(&s.send(&alice, &bob.address, "live").await);
    let f = recv(&mut ws).await;
    assert_message_new(&f, &live, false);
    assert_eq!(f["data"]["payload"]["message"], "live", "{f}");

    // Ack the first over REST and the second over WS.
    s.ack(&bob, &queued[0]).await;
    send_text(
        &mut ws,
        json!({ "type": "ack", "id": queued[1] }).to_string(),
    )
    .await;
    let acked = recv_type(&mut ws, "message.acked").await;
    assert_eq!(acked["data"]["id"], queued[1].as_str(), "{acked}");
    // Nothing else arrives on this socket: no duplicate of anything already pushed.
    let extra = frames_within(&mut ws, Duration::from_millis(400)).await;
    assert!(extra.is_empty(), "unexpected frames: {extra:?}");
    ws.close(None).await.expect("close");
    drop(ws);

    // Reconnect: only the two still unacknowledged come back, as replays, oldest first.
    let (mut ws, connected) = s.connect(&bob).await;
    assert_eq!(connected["data"]["pending_count"], 2, "{connected}");
    let f = recv(&mut ws).await;
    assert_message_new(&f, &queued[2], true);
    let f = recv(&mut ws).await;
    assert_message_new(&f, &live, true);
    let extra = frames_within(&mut ws, Duration::from_millis(400)).await;
    assert!(
        extra.is_empty(),
        "acked messages replayed or duplicates: {extra:?}"
    );
    s.stop().await;
}

/// The same id is never pushed twice on one socket: not for a client retry of the same
/// message (same id and signature), not after the replay that already carried it.
#[tokio::test]
async fn the_same_id_is_never_pushed_twice_on_one_socket() {
    let s = start().await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;
    let (mut ws, _) = s.connect(&bob).await;

    let payload = payload_with("retry me");
    let extra = json!({ "id": "msg_1700000000000_0123456789abcdef" });
    let first = s
        .route(&alice, &bob.address, &payload, extra.clone())
        .await
        .ok();
    let id = id_of(&first);
    let f = recv(&mut ws).await;
    assert_message_new(&f, &id, false);
    // The client retries (it did not see the answer): same id, same signature.
    let again = s.route(&alice, &bob.address, &payload, extra).await.ok();
    assert_eq!(id_of(&again), id, "{again}");
    let more = frames_within(&mut ws, Duration::from_millis(600)).await;
    assert!(
        more.iter().all(|f| f["data"]["id"] != id.as_str()),
        "pushed twice: {more:?}"
    );
    s.stop().await;
}

/// Several sockets for one agent all get live pushes; `ack` and `message.ack` both ack, the
/// REST view agrees, and a second ack is idempotent (NTF-10, RT-09).
#[tokio::test]
async fn two_sockets_both_get_pushes_and_ws_acks_are_seen_by_rest() {
    let s = start().await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;
    let (mut ws1, _) = s.connect(&bob).await;
    let (mut ws2, _) = s.connect(&bob).await;

    let a = id_of(&s.send(&alice, &bob.address, "one").await);
    let b = id_of(&s.send(&alice, &bob.address, "two").await);
    for ws in [&mut ws1, &mut ws2] {
        assert_message_new(&recv(ws).await, &a, false);
        assert_message_new(&recv(ws).await, &b, false);
    }
    assert_eq!(s.pending_ids(&bob).await, [a.as_str(), b.as_str()]);

    // `ack` (spec 08) on one socket, `message.ack` (spec 05) on the other.
    send_text(&mut ws1, json!({ "type": "ack", "id": a }).to_string()).await;
    let f = recv_type(&mut ws1, "message.acked").await;
    assert_eq!(f["data"]["id"], a.as_str(), "{f}");
    assert_eq!(s.pending_ids(&bob).await, [b.as_str()]);
    send_text(
        &mut ws2,
        json!({ "type": "message.ack", "id": b }).to_string(),
    )
    .await;
    let f = recv_type(&mut ws2, "message.acked").await;
    assert_eq!(f["data"]["id"], b.as_str(), "{f}");
    assert!(s.pending_ids(&bob).await.is_empty());

    // Idempotent: a second ack of the same id succeeds and says so.
    send_text(
        &mut ws1,
        json!({ "type": "message.ack", "id": b }).to_string(),
    )
    .await;
    let f = recv_type(&mut ws1, "message.acked").await;
    assert_eq!(f["data"]["id"], b.as_str(), "{f}");
    assert_eq!(f["data"]["already_acked"], true, "{f}");
    // An id that was never there is an error frame, and the socket stays open.
    send_text(&mut ws1, r#"{"type":"ack","id":"msg_1_nosuch"}"#).await;
    let f = recv_type(&mut ws1, "error").await;
    assert!(f["error"].is_string(), "{f}");
    ping_pong(&mut ws1).await;
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// client frames (RT-10, §4.8)

/// `ping` → `pong` with a timestamp; malformed JSON, unknown types, non-object JSON and
/// binary frames get `error` frames and the socket stays open.
#[tokio::test]
async fn ping_and_bad_frames_keep_the_socket_open() {
    let s = start().await;
    let bob = s.register("acme", "bob").await;
    let (mut ws, _) = s.connect(&bob).await;
    ping_pong(&mut ws).await;

    for bad in [
        "{not json",
        r#"{"type":"teleport"}"#,
        r#"{"no_type":true}"#,
        "[1,2,3]",
        r#"{"type":"auth","token":"amp_again"}"#,
    ] {
        send_text(&mut ws, bad).await;
        let f = recv_type(&mut ws, "error").await;
        assert!(
            f["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{bad}: {f}"
        );
        assert!(f["message"].is_string(), "{bad}: {f}");
        ping_pong(&mut ws).await;
    }
    ws.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send binary");
    let f = recv_type(&mut ws, "error").await;
    assert!(f["error"].is_string(), "{f}");
    ping_pong(&mut ws).await;
    s.stop().await;
}

/// §4.8: a `route` frame is answered with `route.result` carrying the client's `ref`, the
/// recipient gets the message; an unknown recipient gives `error` `invalid_recipient` with
/// the same `ref`.
#[tokio::test]
async fn route_frames_are_answered_with_their_ref() {
    let s = start().await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;
    let (mut wa, _) = s.connect(&alice).await;
    let (mut wb, _) = s.connect(&bob).await;

    let payload = payload_with("over the socket");
    let body = signed_body(&alice, &bob.address, "ws route", &payload, json!({}));
    send_text(
        &mut wa,
        format!(r#"{{"type":"route","ref":"r-1","data":{body}}}"#),
    )
    .await;
    let result = recv_type(&mut wa, "route.result").await;
    assert_eq!(result["ref"], "r-1", "{result}");
    let id = id_of(&result["data"]);
    assert_eq!(result["data"]["status"], "delivered", "{result}");
    assert_eq!(result["data"]["basis"], "socket_written", "{result}");
    let f = recv(&mut wb).await;
    assert_message_new(&f, &id, false);
    assert_eq!(f["data"]["envelope"]["subject"], "ws route", "{f}");
    assert_eq!(f["data"]["envelope"]["from"], alice.address.as_str(), "{f}");
    assert!(s.pending_ids(&bob).await.contains(&id));

    // Unknown recipient.
    let nobody = "nobody@acme.amp.test";
    let body = signed_body(&alice, nobody, "ws route", &payload, json!({}));
    send_text(
        &mut wa,
        format!(r#"{{"type":"route","ref":"r-2","data":{body}}}"#),
    )
    .await;
    let err = recv_type(&mut wa, "error").await;
    assert_eq!(err["error"], "invalid_recipient", "{err}");
    assert_eq!(err["ref"], "r-2", "{err}");

    // A bad signature is refused with the ref, the socket stays open.
    let forged = signed_body(&bob, &bob.address, "ws route", &payload, json!({}));
    send_text(
        &mut wa,
        format!(r#"{{"type":"route","ref":7,"data":{forged}}}"#),
    )
    .await;
    let err = recv_type(&mut wa, "error").await;
    assert_eq!(err["error"], "signature_invalid", "{err}");
    assert_eq!(err["ref"], 7, "{err}");
    ping_pong(&mut wa).await;
    let extra = frames_within(&mut wb, Duration::from_millis(300)).await;
    assert!(extra.is_empty(), "refused messages delivered: {extra:?}");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// route answers (NTF-02, §4.29)

/// `status`, `method` and `basis` tell the truth: offline and no webhook →
/// `mailbox_written`/`relay`; an open socket → `delivered`/`websocket`/`socket_written`; a
/// webhook answering 2xx and no socket → `webhook`/`webhook_2xx`.
#[tokio::test]
async fn route_answers_tell_the_truth() {
    let s = start().await;
    let hook = start_hook(&[], 200).await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;
    let carol = s.register_hooked("acme", "carol", &hook.url).await;

    let v = s.send(&alice, &bob.address, "offline").await;
    assert_eq!(v["status"], "queued", "{v}");
    assert_eq!(v["method"], "relay", "{v}");
    assert_eq!(v["basis"], "mailbox_written", "{v}");

    let (mut ws, _) = s.connect(&bob).await;
    // The replay of the first.
    assert_message_new(&recv(&mut ws).await, &id_of(&v), true);
    let v = s.send(&alice, &bob.address, "online").await;
    assert_eq!(v["status"], "delivered", "{v}");
    assert_eq!(v["method"], "websocket", "{v}");
    assert_eq!(v["basis"], "socket_written", "{v}");
    assert!(v["delivered_at"].is_string(), "{v}");
    // The claim is true: the frame is there.
    assert_message_new(&recv(&mut ws).await, &id_of(&v), false);

    let v = s.send(&alice, &carol.address, "hooked").await;
    assert_eq!(v["status"], "delivered", "{v}");
    assert_eq!(v["method"], "webhook", "{v}");
    assert_eq!(v["basis"], "webhook_2xx", "{v}");
    let got = hook.requests();
    assert_eq!(got.len(), 1, "the 2xx happened before the answer: {got:?}");
    assert_eq!(got[0].message_id(), id_of(&v));
    s.stop().await;
}

/// A webhook that refuses (5xx) must not be reported as delivered; the answer falls back
/// to `mailbox_written`.
#[tokio::test]
async fn a_failing_webhook_is_not_reported_as_delivered() {
    let s = start_with(|c| c.delivery.webhook.retry_delays_ms = vec![0]).await;
    let hook = start_hook(&[], 500).await;
    let alice = s.register("acme", "alice").await;
    let carol = s.register_hooked("acme", "carol", &hook.url).await;
    let v = s.send(&alice, &carol.address, "refused").await;
    assert_eq!(v["status"], "queued", "{v}");
    assert_eq!(v["method"], "relay", "{v}");
    assert_eq!(v["basis"], "mailbox_written", "{v}");
    hook.wait_for(1, FRAME_WAIT).await;
    assert_eq!(s.pending_ids(&carol).await, [id_of(&v)]);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// slow consumers

/// A payload of about 300 KB: a 60 KB message and a 240 KB context.
fn big_payload(i: usize) -> String {
    format!(
        r#"{{"type":"notification","message":"{i:05} {}","context":{{"blob":"{}"}}}}"#,
        "x".repeat(60_000),
        "y".repeat(240_000)
    )
}

/// How many messages the flood sends: about 8 MB, well past what the kernel's socket
/// buffers on loopback (a few MB) and the 4-frame queue hold together.
pub(super) const FLOOD: usize = 22;

/// Starts a server with a 4-frame send queue, connects Bob and stops reading; then sends
/// `n` messages of 300 KB (4 at a time). Returns the route answers.
pub(super) async fn flood_a_socket_that_never_reads(n: usize) -> (Ampd, Ws, Vec<Value>, Agent) {
    let s = start_with(|c| {
        c.delivery.send_queue_frames = 4;
        // Answers for a socket that is gone must not each wait the default second.
        c.ingest.messaging.push_wait_ms = 200;
    })
    .await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;
    let (ws, _) = s.connect(&bob).await;
    // From here on the client does not poll the socket.
    let mut answers = Vec::new();
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(4) {
        let sends = chunk.iter().map(|&i| {
            let (s, alice, to) = (&s, &alice, bob.address.clone());
            async move { s.route(alice, &to, &big_payload(i), json!({})).await.ok() }
        });
        answers.extend(futures::future::join_all(sends).await);
    }
    let written = answers
        .iter()
        .filter(|a| a["basis"] == "socket_written")
        .count();
    eprintln!(
        "slow consumer: routed {n} messages of ~300 KB in {:?}; {written} answered socket_written",
        started.elapsed()
    );
    (s, ws, answers, bob)
}

/// A client that stops reading is disconnected (1008, "slow consumer") instead of the
/// server queueing without bound; every message stays in the mailbox.
#[tokio::test]
async fn a_slow_consumer_is_disconnected() {
    let (s, mut ws, answers, bob) = flood_a_socket_that_never_reads(FLOOD).await;
    // Give the server a moment, then read what it sent: the close must come quickly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (frames, code, reason) = expect_close(&mut ws, Duration::from_secs(5)).await;
    eprintln!(
        "slow consumer: {} frames before the close {code} {reason:?}",
        frames.len()
    );
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("slow consumer"), "{reason}");
    assert!(
        frames.len() < answers.len(),
        "everything was delivered; the consumer was not slow"
    );
    // The mailbox is the truth: nothing was lost.
    let count = s.get(&bob, "/v1/messages/pending/count").await.ok();
    assert_eq!(count["count"], answers.len(), "{count}");
    s.stop().await;
}

/// After a slow-consumer close, two things must hold:
///
/// - NTF-02, §4.29: `socket_written` was only claimed for frames really written to the
///   socket: every message whose route answer said so is among the frames the client can
///   read before the close.
/// - A client that never reads again is really dropped: the server does not keep the session
///   (and its presence) alive waiting to write to it. Seen through `/v1/health`: the agent
///   is no longer online within 3 s of the burst, before the client reads anything.
#[tokio::test]
async fn after_a_slow_consumer_close_no_claim_was_false_and_the_agent_is_offline() {
    let (s, mut ws, answers, _bob) = flood_a_socket_that_never_reads(FLOOD).await;

    // Without reading: is the agent still online?
    let online = || async {
        s.call(reqwest::Method::GET, "/v1/health", None, None)
            .await
            .ok()["agents_online"]
            .as_u64()
            .expect("agents_online")
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut still_online = online().await;
    while still_online != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        still_online = online().await;
    }

    // Now read everything the server wrote.
    let (frames, code, _) = expect_close(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(code, 1008);
    let received: HashSet<String> = frames
        .iter()
        .filter(|f| f["type"] == "message.new")
        .map(|f| id_of(&f["data"]))
        .collect();
    let claimed: Vec<String> = answers
        .iter()
        .filter(|a| a["basis"] == "socket_written")
        .map(id_of)
        .collect();
    let false_claims: Vec<&String> = claimed
        .iter()
        .filter(|id| !received.contains(*id))
        .collect();
    eprintln!(
        "slow consumer: socket_written claimed {} times, {} frames received, {} claims never \
         reached the socket; agents_online 3 s after the burst: {still_online}",
        claimed.len(),
        received.len(),
        false_claims.len()
    );
    let mut failures = Vec::new();
    if !false_claims.is_empty() {
        failures.push(format!(
            "route answers said socket_written for {} messages whose frames were never written \
             (dropped from the send queue at the slow-consumer close): {false_claims:?}",
            false_claims.len()
        ));
    }
    if still_online != 0 {
        failures.push(
            "the slow consumer was still counted online 3 s after the burst: its session stays \
             blocked writing to a socket nobody reads (presence is only cleared after the \
             writer finishes)"
                .to_owned(),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    s.stop().await;
}

/// A client that reads as fast as it can is not a slow consumer: replaying a mailbox larger
/// than the send queue on connect must not close the socket (the replay is the server's own
/// burst; it should wait for room in the queue, not count it as the client's fault).
/// Otherwise an agent with more pending messages than `send_queue_frames` could never
/// connect at all: every reconnect replays, overflows and closes again.
#[tokio::test]
async fn a_replay_larger_than_the_send_queue_does_not_disconnect_a_reading_client() {
    let s = start_with(|c| c.delivery.send_queue_frames = 8).await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(id_of(
            &s.send(&alice, &bob.address, &format!("backlog {i}")).await,
        ));
    }
    let mut ws = connect(&s.ws_url("/v1/ws")).await;
    send_text(
        &mut ws,
        json!({ "type": "auth", "token": bob.api_key }).to_string(),
    )
    .await;
    let mut frames = Vec::new();
    let mut closed = None;
    while frames.len() < ids.len() + 1 {
        match next_frame(&mut ws, FRAME_WAIT).await {
            Some(Frame::Json(v)) => frames.push(v),
            Some(Frame::Close(c)) => {
                closed = Some(c);
                break;
            }
            other => panic!("unexpected {other:?} after {}", brief(&frames)),
        }
    }
    assert!(
        closed.is_none(),
        "a reading client was closed during the replay of {} messages with close {closed:?} \
         after {}",
        ids.len(),
        brief(&frames)
    );
    assert_eq!(frames[0]["type"], "connected");
    for (f, id) in frames[1..].iter().zip(&ids) {
        assert_message_new(f, id, true);
    }
    ping_pong(&mut ws).await;
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// credential changes

async fn assert_closed_unauthorized(ws: &mut Ws) {
    let (frames, code, _) = expect_close(ws, FRAME_WAIT).await;
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "error" && f["error"] == "unauthorized"),
        "{frames:?}"
    );
    assert_eq!(code, 4001);
}

/// Deregistration closes the agent's open sockets (error unauthorized, close 4001), and
/// nobody else's.
#[tokio::test]
async fn deregistration_closes_the_agents_sockets() {
    let s = start().await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;
    let (mut b1, _) = s.connect(&bob).await;
    let (mut b2, _) = s.connect(&bob).await;
    let (mut a1, _) = s.connect(&alice).await;
    s.delete(&bob, "/v1/agents/me").await.ok();
    assert_closed_unauthorized(&mut b1).await;
    assert_closed_unauthorized(&mut b2).await;
    ping_pong(&mut a1).await;
    // And the key no longer opens a socket.
    let mut ws = connect(&s.ws_url("/v1/ws")).await;
    send_text(
        &mut ws,
        json!({ "type": "auth", "token": bob.api_key }).to_string(),
    )
    .await;
    let (_, code, _) = expect_close(&mut ws, FRAME_WAIT).await;
    assert_eq!(code, 4001);
    s.stop().await;
}

/// Key revocation closes the agent's open sockets (error unauthorized, close 4001).
#[tokio::test]
async fn key_revocation_closes_the_agents_sockets() {
    let s = start().await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;
    let (mut b1, _) = s.connect(&bob).await;
    let (mut a1, _) = s.connect(&alice).await;
    s.delete(&bob, "/v1/auth/revoke-key").await.ok();
    assert_closed_unauthorized(&mut b1).await;
    ping_pong(&mut a1).await;
    let mut ws = connect(&s.ws_url("/v1/ws")).await;
    send_text(
        &mut ws,
        json!({ "type": "auth", "token": bob.api_key }).to_string(),
    )
    .await;
    let (_, code, _) = expect_close(&mut ws, FRAME_WAIT).await;
    assert_eq!(code, 4001);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// discovery (NTF-01)

/// `/v1/info` advertises what delivery does; `/v1/health` counts an agent with a socket.
#[tokio::test]
async fn info_capabilities_and_health_agents_online() {
    let s = start().await;
    let info = s
        .call(reqwest::Method::GET, "/v1/info", None, None)
        .await
        .ok();
    let caps: Vec<&str> = info["capabilities"]
        .as_array()
        .expect("capabilities")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for c in ["websockets", "webhooks", "notify:v1", "notify:longpoll"] {
        assert!(caps.contains(&c), "{c} missing from {caps:?}");
    }
    let health = || async {
        s.call(reqwest::Method::GET, "/v1/health", None, None)
            .await
            .ok()["agents_online"]
            .as_u64()
            .expect("agents_online")
    };
    // `/v1/health` reads the store at most once a second: the count is right within that.
    let settles_at = |want: u64| {
        let health = &health;
        async move {
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut got = health().await;
            while got != want && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                got = health().await;
            }
            got
        }
    };
    assert_eq!(settles_at(0).await, 0);
    let bob = s.register("acme", "bob").await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(health().await, 0, "registered is not online");
    let (mut ws, _) = s.connect(&bob).await;
    assert_eq!(settles_at(1).await, 1);
    // A second socket of the same agent is still one agent online.
    let (ws2, _) = s.connect(&bob).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(health().await, 1);
    drop(ws2);
    ws.close(None).await.expect("close");
    drop(ws);
    // Going offline is seen soon after the socket closes.
    let deadline = Instant::now() + Duration::from_secs(3);
    while health().await != 0 {
        assert!(
            Instant::now() < deadline,
            "agent still online after closing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}
