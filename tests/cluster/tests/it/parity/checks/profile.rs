//! What an agent declares about itself (issue 18, spec-next 02, 03, 08): the Agent Card it
//! signed, its capabilities and its communication policy, across replicas; and the JSON
//! profile's omitted `in_reply_to`.

use amp_proto::{PublicKey, SecretKey, card};
use amp_testkit::cluster::parity::{DOMAIN, Target};
use reqwest::Method;
use serde_json::{Value, json};

use crate::parity::http::{Http, Msg, find, payload_with, tenant};

/// Registration with a signed card, capabilities and a restricted policy; the card served
/// as signed with the provider's attestation beside it; a forged card refused; resolve
/// returning the capabilities; a recipient outside the policy refused with
/// `403 recipient_not_allowed`; a delivered envelope without `in_reply_to` or any `null`.
pub(crate) async fn agent_profile(t: &Target) {
    let h = Http::new(&t.base);
    let tn = tenant("card");
    let bob = h.register(&tn, "bob").await;
    let eve = h.register(&tn, "eve").await;

    let key = SecretKey::generate();
    let address = format!("carol@{tn}.{DOMAIN}");
    let make_card = |signer: &SecretKey| {
        let public = key.public();
        let mut c = json!({
            "amp_agent_card": "1.0",
            "address": address,
            "public_key": public.to_pem(),
            "key_algorithm": "Ed25519",
            "fingerprint": public.fingerprint(),
            "capabilities": ["threading"],
            "issued_at": "2026-01-01T00:00:00Z",
            "expires_at": "2099-01-01T00:00:00Z",
        });
        card::sign(&mut c, signer).expect("sign");
        c
    };
    let capabilities = json!(["threading", "github:code_review"]);
    let body = |c: Value| {
        json!({
            "tenant": tn,
            "name": "carol",
            "public_key": key.public().to_pem(),
            "key_algorithm": "Ed25519",
            "capabilities": capabilities,
            "communication_policy": { "mode": "restricted", "allowed_recipients": [bob.address] },
            "agent_card": c,
        })
    };
    h.register_raw(&body(make_card(&SecretKey::generate())))
        .await
        .assert_error_field(400, "invalid_field", "agent_card");
    let good = make_card(&key);
    let v = h.register_raw(&body(good.clone())).await.json_with(201);
    let api_key = v["api_key"].as_str().expect("api_key").to_owned();

    let r = h
        .call(Method::GET, "/v1/agents/me/card", Some(&api_key), None)
        .await;
    assert_eq!(r.ok(), good, "the card as signed");
    let info = h.call(Method::GET, "/v1/info", None, None).await.ok();
    let provider =
        PublicKey::parse(info["public_key"].as_str().expect("provider key")).expect("key");
    let attestation = r
        .headers
        .get("x-amp-provider-signature")
        .and_then(|v| v.to_str().ok())
        .expect("attestation header");
    provider
        .verify_b64(&card::attestation_input(&good).expect("input"), attestation)
        .expect("the provider's attestation verifies");

    let resolved = h
        .get(&bob, &format!("/v1/agents/resolve/{address}"))
        .await
        .ok();
    assert_eq!(resolved["capabilities"], capabilities, "{resolved}");

    let carol = crate::parity::http::Agent {
        address: address.clone(),
        api_key,
        key,
    };
    let m = Msg::new(&eve.address, "not allowed").payload(&payload_with("no"));
    h.send_msg(&carol, &m)
        .await
        .assert_error_field(403, "recipient_not_allowed", "to");
    let m = Msg::new(&bob.address, "allowed").payload(&payload_with("yes"));
    let v = h.send_msg(&carol, &m).await.ok();
    let id = v["id"].as_str().expect("id").to_owned();
    let (page, _) = h.pending(&bob, "?limit=10").await;
    let item = find(&page, &id);
    assert!(
        item["envelope"]
            .as_object()
            .is_some_and(|e| !e.contains_key("in_reply_to")),
        "{item}"
    );
    assert!(
        !item.to_string().contains("null"),
        "a delivered item holds null: {item}"
    );
    assert!(h.pending_ids(&eve).await.is_empty());
}
