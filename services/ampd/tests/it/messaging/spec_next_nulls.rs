//! Spec-next 04 JSON profile, applied to every answer we build: a short session of an agent's
//! whole API, and no `null` anywhere in any answer.

use super::spec_next::nulls;
use super::*;

/// Registers, reads and changes its profile, lists and resolves agents, sends, picks up,
/// counts, marks read, acknowledges, reads receipts, rotates its key, reads the provider's
/// documents: every JSON answer is walked, and any `null` fails the test with its path.
#[tokio::test]
async fn spec_next_no_answer_of_a_session_holds_null() {
    let s = Ampd::start().await;
    let alice = s.register("nulls", "alice").await;
    let bob = s.register("nulls", "bob").await;
    let _carol = s.register("nulls", "carol").await;
    let mut answers: Vec<(String, Resp)> = Vec::new();
    macro_rules! call {
        ($what:expr, $resp:expr) => {{
            let r = $resp;
            assert!(r.status.is_success(), "{}: {} {}", $what, r.status, r.text);
            answers.push(($what.to_owned(), r));
        }};
    }
    let key = SecretKey::generate();
    let reg = json!({
        "tenant": "nulls", "name": "dave",
        "public_key": key.public().to_pem(), "key_algorithm": "Ed25519",
    });
    call!(
        "POST /v1/register",
        s.call(Method::POST, "/v1/register", None, Some(reg.to_string()))
            .await
    );
    // Alias and metadata never set: absent, not null. Empty mailbox and receipts.
    call!("GET /v1/agents/me", s.get(&alice, "/v1/agents/me").await);
    call!(
        "GET /v1/messages/pending (empty)",
        s.get(&bob, "/v1/messages/pending").await
    );
    call!(
        "GET /v1/messages/pending/count (empty)",
        s.get(&bob, "/v1/messages/pending/count").await
    );
    call!(
        "GET /v1/messages/receipts (empty)",
        s.get(&alice, "/v1/messages/receipts").await
    );
    call!(
        "GET /v1/agents?limit=1",
        s.get(&alice, "/v1/agents?limit=1").await
    );
    call!("GET /v1/agents", s.get(&alice, "/v1/agents").await);
    call!(
        "GET /v1/agents/resolve",
        s.get(&alice, &format!("/v1/agents/resolve/{}", bob.address))
            .await
    );
    call!(
        "PATCH /v1/agents/me",
        s.call(
            Method::PATCH,
            "/v1/agents/me",
            Some(&alice.api_key),
            Some(json!({ "alias": "Alice" }).to_string()),
        )
        .await
    );
    call!(
        "GET /v1/agents/me (alias)",
        s.get(&alice, "/v1/agents/me").await
    );
    let m = Msg::new(&bob.address, "hello").key("idk_nulls-1");
    let first = s.route(&alice, m.flat(Some(&m.sign(&alice)))).await;
    let id = first.json()["id"].as_str().expect("id").to_owned();
    call!("POST /v1/route", first);
    call!(
        "POST /v1/route (replayed)",
        s.route(&alice, m.flat(Some(&m.sign(&alice)))).await
    );
    let reply = Msg::new(&alice.address, "re").reply_to(&id);
    call!(
        "POST /v1/route (reply)",
        s.route(&bob, reply.flat(Some(&reply.sign(&bob)))).await
    );
    call!(
        "GET /v1/messages/pending",
        s.get(&bob, "/v1/messages/pending").await
    );
    call!(
        "GET /v1/messages/pending?limit=1",
        s.get(&bob, "/v1/messages/pending?limit=1").await
    );
    call!(
        "GET /v1/messages/pending/count",
        s.get(&bob, "/v1/messages/pending/count").await
    );
    call!("GET /v1/inbox", s.get(&bob, "/v1/inbox").await);
    call!(
        "POST /v1/messages/{id}/read",
        s.post(&bob, &format!("/v1/messages/{id}/read"), None).await
    );
    call!(
        "DELETE /v1/messages/pending/{id}",
        s.delete(&bob, &format!("/v1/messages/pending/{id}")).await
    );
    call!(
        "POST /v1/messages/pending/ack",
        s.post(
            &alice,
            "/v1/messages/pending/ack",
            Some(json!({ "ids": ["msg_1_ab"] }).to_string())
        )
        .await
    );
    call!(
        "GET /v1/messages/receipts",
        s.get(&alice, "/v1/messages/receipts").await
    );
    call!(
        "POST /v1/auth/rotate-key",
        s.post(&bob, "/v1/auth/rotate-key", None).await
    );
    call!(
        "GET /v1/info",
        s.call(Method::GET, "/v1/info", None, None).await
    );
    call!(
        "GET /v1/health",
        s.call(Method::GET, "/v1/health", None, None).await
    );
    call!(
        "GET /.well-known/agent-messaging.json",
        s.call(Method::GET, "/.well-known/agent-messaging.json", None, None)
            .await
    );
    let mut found = Vec::new();
    for (what, r) in &answers {
        nulls(&r.json(), what, &mut found);
    }
    assert!(found.is_empty(), "null in answers: {found:?}");
    s.stop().await;
}
