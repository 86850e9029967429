//! Idempotency keys on WebSocket `route` frames (spec-next 04, 08): the same acceptance as
//! `POST /v1/route`, one key space for both paths.

use super::*;

/// A `route` frame with an `idempotency_key`, sent twice: the second `route.result` carries
/// the first answer (its own `ref`), the recipient is pushed one copy; the same request over
/// REST gets the same answer; another request under the key is an `error` frame `409
/// duplicate_idempotency_key` with its `ref`, and the socket stays open.
#[tokio::test]
async fn spec_next_ws_route_frames_apply_idempotency_keys() {
    let s = start().await;
    let alice = s.register("wsidem", "alice").await;
    let bob = s.register("wsidem", "bob").await;
    let (mut wa, _) = s.connect(&alice).await;
    let (mut wb, _) = s.connect(&bob).await;

    let payload = payload_with("once over the socket");
    let key = json!({ "idempotency_key": "idk_ws-0001" });
    let body = signed_body(&alice, &bob.address, "delivery test", &payload, key.clone());
    send_text(
        &mut wa,
        format!(r#"{{"type":"route","ref":"r-1","data":{body}}}"#),
    )
    .await;
    let first = recv_type(&mut wa, "route.result").await;
    assert_eq!(first["ref"], "r-1", "{first}");
    let id = id_of(&first["data"]);
    let f = recv(&mut wb).await;
    assert_message_new(&f, &id, false);
    assert_eq!(
        f["data"]["envelope"]["idempotency_key"], "idk_ws-0001",
        "{f}"
    );

    send_text(
        &mut wa,
        format!(r#"{{"type":"route","ref":"r-2","data":{body}}}"#),
    )
    .await;
    let again = recv_type(&mut wa, "route.result").await;
    assert_eq!(again["ref"], "r-2", "{again}");
    assert_eq!(again["data"], first["data"], "the first answer");
    // The same request over REST: the same key, the same answer.
    let rest = s
        .route(&alice, &bob.address, &payload, key.clone())
        .await
        .ok();
    assert_eq!(rest, first["data"]);
    let more = frames_within(&mut wb, Duration::from_millis(400)).await;
    assert!(
        more.iter().all(|f| f["data"]["id"] != id.as_str()),
        "pushed twice: {more:?}"
    );
    assert_eq!(
        s.pending_ids(&bob).await,
        std::slice::from_ref(&id),
        "one copy"
    );

    let other = signed_body(&alice, &bob.address, "another", &payload, key);
    send_text(
        &mut wa,
        format!(r#"{{"type":"route","ref":"r-3","data":{other}}}"#),
    )
    .await;
    let err = recv_type(&mut wa, "error").await;
    assert_eq!(err["error"], "duplicate_idempotency_key", "{err}");
    assert_eq!(err["ref"], "r-3", "{err}");
    ping_pong(&mut wa).await;
    assert_eq!(s.pending_ids(&bob).await, [id]);
    s.stop().await;
}
