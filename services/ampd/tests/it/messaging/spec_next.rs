//! The newest spec over HTTP (issue 18): the Agent Card (spec 02, 08), registration
//! `capabilities` and `communication_policy` (spec 03, 08), the JSON profile's no-`null` rule
//! (spec 04), the 1 MB body rule (spec 08) and `/v1/info` advertising them.

use amp_proto::card;

use super::*;

/// A card for `who` as spec 02 lays it out, signed with `signer`'s key.
fn card_of(address: &str, key: &SecretKey, signer: &SecretKey, expires_at: &str) -> Value {
    let public = key.public();
    let mut c = json!({
        "amp_agent_card": "1.0",
        "id": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
        "address": address,
        "alias": "Card Holder",
        "public_key": public.to_pem(),
        "key_algorithm": "Ed25519",
        "fingerprint": public.fingerprint(),
        "provider_endpoint": "http://127.0.0.1/v1",
        "capabilities": ["threading", "github:code_review"],
        "issued_at": "2026-01-01T00:00:00Z",
        "expires_at": expires_at,
    });
    card::sign(&mut c, signer).expect("sign");
    c
}

const LATER: &str = "2099-01-01T00:00:00Z";

/// What the spec-next tests do through an [`Ampd`].
trait SpecNextExt {
    /// `PATCH /v1/agents/me` as `who`.
    async fn patch_me(&self, who: &Agent, body: Value) -> Resp;
    /// Registers with `key` and `extra` members added to the body; returns the raw answer.
    async fn register_keyed(&self, tenant: &str, name: &str, key: &SecretKey, extra: Value)
    -> Resp;
}

impl SpecNextExt for Ampd {
    async fn patch_me(&self, who: &Agent, body: Value) -> Resp {
        self.call(
            Method::PATCH,
            "/v1/agents/me",
            Some(&who.api_key),
            Some(body.to_string()),
        )
        .await
    }

    async fn register_keyed(
        &self,
        tenant: &str,
        name: &str,
        key: &SecretKey,
        extra: Value,
    ) -> Resp {
        let mut body = json!({
            "tenant": tenant,
            "name": name,
            "public_key": key.public().to_pem(),
            "key_algorithm": "Ed25519",
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        self.call(Method::POST, "/v1/register", None, Some(body.to_string()))
            .await
    }
}

fn agent_of(r: &Resp, key: SecretKey) -> Agent {
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    Agent {
        address: v["address"].as_str().expect("address").to_owned(),
        api_key: v["api_key"].as_str().expect("api_key").to_owned(),
        key,
    }
}

/// Spec 02 / 08: the card an agent signs (canonical JSON behind `amp-agent-card-v1\n`) is
/// verified before it is stored — a card signed with another key, naming another address,
/// tampered with, expired or oversized is refused with `400 invalid_field` — and
/// `GET /v1/agents/me/card` serves it as signed, the agent's signature verifying under the
/// agent's key; the provider's signature travels separately (a header) and verifies under
/// the key of `/v1/info`, never as the card's `signature`.
#[tokio::test]
async fn spec_next_agent_card_is_the_agents_own_and_verified_before_it_is_stored() {
    let s = Ampd::start().await;
    let tenant = "cards";
    let key = SecretKey::generate();
    let address = format!("carol@{tenant}.{DOMAIN}");

    // Refused at registration: signed by another key, another address, expired, tampered.
    let other = SecretKey::generate();
    let mut tampered = card_of(&address, &key, &key, LATER);
    tampered["capabilities"] = json!(["attachments"]);
    for bad in [
        card_of(&address, &key, &other, LATER),
        card_of(&address, &other, &other, LATER),
        card_of(&format!("mallory@{tenant}.{DOMAIN}"), &key, &key, LATER),
        card_of(&address, &key, &key, "2020-01-01T00:00:00Z"),
        tampered,
        json!("not a card"),
    ] {
        let r = s
            .register_keyed(tenant, "carol", &key, json!({ "agent_card": bad }))
            .await;
        r.assert_error_field(400, "invalid_field", "agent_card");
    }

    // Accepted with a good card; served as signed.
    let good = card_of(&address, &key, &key, LATER);
    let r = s
        .register_keyed(tenant, "carol", &key, json!({ "agent_card": good }))
        .await;
    let carol = agent_of(&r, key);
    let r = s.get(&carol, "/v1/agents/me/card").await;
    let served = r.ok();
    assert_eq!(served, good, "the card as the agent signed it");
    let sig = served["signature"].as_str().expect("signature");
    carol
        .key
        .public()
        .verify_b64(&card::signing_input(&served).expect("input"), sig)
        .expect("the agent's signature verifies under the agent's key");

    // The provider vouches beside the card, under its own key and domain separator.
    let info = s.call(Method::GET, "/v1/info", None, None).await.ok();
    let provider =
        PublicKey::parse(info["public_key"].as_str().expect("provider key")).expect("provider key");
    let attestation = r
        .headers
        .get("x-amp-provider-signature")
        .and_then(|v| v.to_str().ok())
        .expect("provider signature header");
    assert_ne!(
        attestation, sig,
        "the provider's signature is not the card's"
    );
    provider
        .verify_b64(
            &card::attestation_input(&served).expect("input"),
            attestation,
        )
        .expect("the provider's attestation verifies");
    assert!(
        provider
            .verify_b64(&card::signing_input(&served).expect("input"), sig)
            .is_err(),
        "the card's signature is not the provider's"
    );
    assert_eq!(
        r.headers
            .get("x-amp-provider-fingerprint")
            .and_then(|v| v.to_str().ok()),
        info["fingerprint"].as_str()
    );

    // No card submitted: none served, nothing made up in the agent's name.
    let dave = s.register(tenant, "dave").await;
    s.get(&dave, "/v1/agents/me/card")
        .await
        .assert_error(404, "not_found");

    // PATCH: a bad card is refused (and the old one kept), a good one replaces it.
    let forged = card_of(&dave.address, &dave.key, &other, LATER);
    s.patch_me(&dave, json!({ "agent_card": forged }))
        .await
        .assert_error_field(400, "invalid_field", "agent_card");
    let mut big = card_of(&dave.address, &dave.key, &dave.key, LATER);
    big["alias"] = json!("x".repeat(card::MAX_CARD_BYTES));
    card::sign(&mut big, &dave.key).expect("sign");
    s.patch_me(&dave, json!({ "agent_card": big }))
        .await
        .assert_error_field(400, "invalid_field", "agent_card");
    s.get(&dave, "/v1/agents/me/card")
        .await
        .assert_error(404, "not_found");
    let dave_card = card_of(&dave.address, &dave.key, &dave.key, LATER);
    s.patch_me(&dave, json!({ "agent_card": dave_card }))
        .await
        .ok();
    assert_eq!(s.get(&dave, "/v1/agents/me/card").await.ok(), dave_card);

    // A key rotation retires the card signed with the old key.
    let new_pem = SecretKey::generate().public().to_pem();
    let proof = dave.key.sign_b64(new_pem.as_bytes());
    s.post(
        &dave,
        "/v1/auth/rotate-keys",
        Some(json!({ "new_public_key": new_pem, "proof": proof }).to_string()),
    )
    .await
    .ok();
    s.get(&dave, "/v1/agents/me/card")
        .await
        .assert_error(404, "not_found");
    s.stop().await;
}

/// Spec 08: `capabilities` declared at registration or update are kept as declared and
/// returned on resolve; malformed ones are `400 invalid_field`.
#[tokio::test]
async fn spec_next_capabilities_are_kept_as_declared_and_resolved() {
    let s = Ampd::start().await;
    let key = SecretKey::generate();
    let caps = json!(["attachments", "threading", "github:code_review"]);
    let r = s
        .register_keyed("caps", "erin", &key, json!({ "capabilities": caps }))
        .await;
    let erin = agent_of(&r, key);
    let frank = s.register("caps", "frank").await;
    let resolved = s
        .get(&frank, &format!("/v1/agents/resolve/{}", erin.address))
        .await
        .ok();
    assert_eq!(resolved["capabilities"], caps, "{resolved}");
    let me = s.get(&erin, "/v1/agents/me").await.ok();
    assert_eq!(me["capabilities"], caps, "{me}");

    let updated = json!(["priority", "websocket"]);
    s.patch_me(&erin, json!({ "capabilities": updated }))
        .await
        .ok();
    let resolved = s
        .get(&frank, &format!("/v1/agents/resolve/{}", erin.address))
        .await
        .ok();
    assert_eq!(resolved["capabilities"], updated, "{resolved}");

    for bad in [
        json!("attachments"),
        json!([1]),
        json!(["has space"]),
        json!(["dup", "dup"]),
        json!(vec!["c"; 33]),
        json!(["x".repeat(65)]),
    ] {
        s.patch_me(&erin, json!({ "capabilities": bad }))
            .await
            .assert_error_field(400, "invalid_field", "capabilities");
        let r = s
            .register_keyed(
                "caps",
                "ghost",
                &SecretKey::generate(),
                json!({ "capabilities": bad }),
            )
            .await;
        r.assert_error_field(400, "invalid_field", "capabilities");
    }
    s.stop().await;
}

/// Spec 03: with a `restricted` policy the provider refuses a recipient no entry matches
/// with `403 recipient_not_allowed` (nothing delivered); exact and wildcard entries allow;
/// `open` (by PATCH) allows everyone again; malformed policies are `400 invalid_field`.
#[tokio::test]
async fn spec_next_communication_policy_is_enforced_on_route() {
    let s = Ampd::start().await;
    let key = SecretKey::generate();
    let policy = json!({ "communication_policy": {
        "mode": "restricted",
        "allowed_recipients": [format!("bob@polw.{DOMAIN}"), format!("*@polx.{DOMAIN}")],
    }});
    let r = s.register_keyed("polw", "alice", &key, policy).await;
    let alice = agent_of(&r, key);
    let bob = s.register("polw", "bob").await;
    let eve = s.register("polw", "eve").await;
    let xavier = s.register("polx", "xavier").await;

    let me = s.get(&alice, "/v1/agents/me").await.ok();
    assert_eq!(me["communication_policy"]["mode"], "restricted", "{me}");

    s.send_text(&alice, &bob.address, "allowed by name").await;
    s.send_text(&alice, &xavier.address, "allowed by wildcard")
        .await;
    let m = Msg::new(&eve.address, "not allowed").payload(PLAIN);
    s.route(&alice, m.flat(Some(&m.sign(&alice))))
        .await
        .assert_error_field(403, "recipient_not_allowed", "to");
    assert!(s.pending_ids(&eve).await.is_empty());
    // The policy binds the sender only: eve may still write to alice.
    s.send_text(&eve, &alice.address, "inbound is not restricted")
        .await;

    s.patch_me(
        &alice,
        json!({ "communication_policy": { "mode": "open" } }),
    )
    .await
    .ok();
    s.send_text(&alice, &eve.address, "open again").await;
    assert_eq!(s.pending_ids(&eve).await.len(), 1);

    for bad in [
        json!({ "mode": "closed" }),
        json!({ "mode": "restricted", "allowed_recipients": ["no-at-sign"] }),
        json!({ "mode": "restricted", "allowed_recipients": "bob@x.com" }),
        json!({ "mode": "restricted", "unknown": true }),
    ] {
        s.patch_me(&alice, json!({ "communication_policy": bad }))
            .await
            .assert_error_field(400, "invalid_field", "communication_policy");
    }
    s.stop().await;
}

/// Every `null` anywhere in `v`, by JSON path.
pub(crate) fn nulls(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Null => out.push(path.to_owned()),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                nulls(x, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                nulls(x, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Spec 04 JSON profile: a delivered message holds no `null`; an absent `in_reply_to` is
/// omitted, a present one kept.
#[tokio::test]
async fn spec_next_delivered_messages_hold_no_null() {
    let s = Ampd::start().await;
    let alice = s.register("nonull", "alice").await;
    let bob = s.register("nonull", "bob").await;
    let first = s.send_text(&alice, &bob.address, "first").await;
    let m = Msg::new(&bob.address, "reply")
        .payload(PLAIN)
        .reply_to(&first);
    s.send(&alice, &m).await;
    let (page, _) = s.pending(&bob, "?limit=10").await;
    let items = page["messages"].as_array().expect("messages");
    assert_eq!(items.len(), 2, "{page}");
    for item in items {
        let mut found = Vec::new();
        nulls(item, "$", &mut found);
        assert!(found.is_empty(), "nulls at {found:?} in {item}");
    }
    let original = find(&page, &first);
    assert!(
        original["envelope"]
            .as_object()
            .is_some_and(|e| !e.contains_key("in_reply_to")),
        "{original}"
    );
    assert!(
        items
            .iter()
            .any(|i| i["envelope"]["in_reply_to"] == first.as_str()),
        "{page}"
    );
    s.stop().await;
}

/// Spec 08: a body over the limit (at most 1 MB) is `413 request_too_large`, on route and on
/// registration, in the spec's error body.
#[tokio::test]
async fn spec_next_bodies_over_one_megabyte_are_request_too_large() {
    let s = Ampd::start().await;
    let alice = s.register("big", "alice").await;
    let bob = s.register("big", "bob").await;
    let m = Msg::new(&bob.address, "huge").payload(&format!(
        r#"{{"type":"notification","message":"x","context":{{"a":"{}"}}}}"#,
        "a".repeat(1_100_000)
    ));
    s.route(&alice, m.flat(Some(&m.sign(&alice))))
        .await
        .assert_error(413, "request_too_large");
    let body = json!({ "tenant": "big", "name": "carl", "alias": "y".repeat(1_100_000) });
    s.call(Method::POST, "/v1/register", None, Some(body.to_string()))
        .await
        .assert_error(413, "request_too_large");
    assert!(s.pending_ids(&bob).await.is_empty());
    s.stop().await;
}

/// `/v1/info` advertises what this provider implements of the newest spec.
#[tokio::test]
async fn spec_next_info_advertises_cards_capabilities_and_policy() {
    let s = Ampd::start().await;
    let info = s.call(Method::GET, "/v1/info", None, None).await.ok();
    let caps = info["capabilities"].as_array().expect("capabilities");
    for token in ["agent-card", "agent-capabilities", "communication-policy"] {
        assert!(caps.iter().any(|c| c == token), "{token} missing: {info}");
    }
    s.stop().await;
}
