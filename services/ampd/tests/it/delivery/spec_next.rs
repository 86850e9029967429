//! The newest spec over WebSocket (issue 18): the `amp.v1` subprotocol (spec 08), the
//! communication policy on `route` frames (spec 03) and no `null` in pushed messages (spec 04
//! JSON profile).

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::*;
use crate::messaging::spec_next::nulls;

/// Spec 08: a client that offers `amp.v1` gets it confirmed in the upgrade answer; a client
/// that offers none is still served (without a subprotocol).
#[tokio::test]
async fn spec_next_ws_subprotocol_amp_v1_is_confirmed_when_offered() {
    let s = start().await;
    let alice = s.register("subproto", "alice").await;

    let mut req = s.ws_url("/v1/ws").into_client_request().expect("request");
    req.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("amp.v1"));
    let (mut ws, answer) = tokio::time::timeout(FRAME_WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("connect in time")
        .expect("upgrade accepted");
    assert_eq!(
        answer
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("amp.v1"),
        "{:?}",
        answer.headers()
    );
    auth(&mut ws, &alice.api_key).await;
    ping_pong(&mut ws).await;

    // No subprotocol offered: accepted as before, none confirmed.
    let (mut plain, answer) = tokio::time::timeout(
        FRAME_WAIT,
        tokio_tungstenite::connect_async(s.ws_url("/v1/ws")),
    )
    .await
    .expect("connect in time")
    .expect("upgrade accepted");
    assert!(
        answer.headers().get("sec-websocket-protocol").is_none(),
        "{:?}",
        answer.headers()
    );
    auth(&mut plain, &alice.api_key).await;
    ping_pong(&mut plain).await;
    s.stop().await;
}

/// Spec 03 on the WebSocket path: a `route` frame to a recipient the sender's `restricted`
/// policy does not list is refused with `recipient_not_allowed` and its `ref`; a listed one
/// is delivered, and the pushed `message.new` (spec 04 JSON profile) holds no `null`, the
/// absent `in_reply_to` omitted.
#[tokio::test]
async fn spec_next_ws_route_frames_obey_the_policy_and_pushes_hold_no_null() {
    let s = start().await;
    let alice = s.register("wspolicy", "alice").await;
    let bob = s.register("wspolicy", "bob").await;
    let eve = s.register("wspolicy", "eve").await;
    let policy = json!({ "communication_policy": {
        "mode": "restricted",
        "allowed_recipients": [bob.address],
    }});
    s.call(
        Method::PATCH,
        "/v1/agents/me",
        Some(&alice.api_key),
        Some(policy.to_string()),
    )
    .await
    .ok();
    let (mut wa, _) = s.connect(&alice).await;
    let (mut wb, _) = s.connect(&bob).await;

    let payload = payload_with("policy over the socket");
    let body = signed_body(&alice, &eve.address, "to eve", &payload, json!({}));
    send_text(
        &mut wa,
        format!(r#"{{"type":"route","ref":"r-eve","data":{body}}}"#),
    )
    .await;
    let err = recv_type(&mut wa, "error").await;
    assert_eq!(err["error"], "recipient_not_allowed", "{err}");
    assert_eq!(err["ref"], "r-eve", "{err}");
    assert!(s.pending_ids(&eve).await.is_empty(), "eve got a message");

    let body = signed_body(&alice, &bob.address, "to bob", &payload, json!({}));
    send_text(
        &mut wa,
        format!(r#"{{"type":"route","ref":"r-bob","data":{body}}}"#),
    )
    .await;
    let result = recv_type(&mut wa, "route.result").await;
    assert_eq!(result["ref"], "r-bob", "{result}");
    let pushed = recv_type(&mut wb, "message.new").await;
    assert_eq!(pushed["data"]["envelope"]["subject"], "to bob", "{pushed}");
    assert!(
        pushed["data"]["envelope"]
            .as_object()
            .is_some_and(|e| !e.contains_key("in_reply_to")),
        "{pushed}"
    );
    let mut found = Vec::new();
    nulls(&pushed, "$", &mut found);
    assert!(found.is_empty(), "nulls at {found:?} in {pushed}");
    s.stop().await;
}
