//! What a client sees before and around sending: discovery, registration and its
//! refusals, the agent's own profile and resolution of others.

use amp_proto::{PublicKey, SecretKey, Timestamp};
use amp_testkit::cluster::parity::{DOMAIN, LIMIT, Target};
use reqwest::Method;
use serde_json::json;

use crate::parity::http::{Http, tenant};

/// The capabilities every deployment without federation advertises (attachments: provider
/// storage and AFP references, spec-next 08).
const CAPABILITIES: [&str; 11] = [
    "registration",
    "relay-queue",
    "websockets",
    "webhooks",
    "notify:v1",
    "notify:longpoll",
    "attachments:afp",
    "agent-capabilities",
    "communication-policy",
    "agent-card",
    "attachments",
];

/// Health, info and the well-known document, through the proxy, on both prefixes.
pub(crate) async fn discovery(t: &Target) {
    let h = Http::new(&t.base);
    for prefix in ["/v1", "/api/v1"] {
        let v = h
            .call(Method::GET, &format!("{prefix}/health"), None, None)
            .await
            .ok();
        assert_eq!(v["status"], "healthy", "{v}");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{v}");
        assert_eq!(v["provider"], DOMAIN, "{v}");
        assert_eq!(v["federation"], false, "{v}");
        assert!(v["agents_online"].is_u64(), "{v}");
        assert!(v["uptime_seconds"].is_u64(), "{v}");

        let v = h
            .call(Method::GET, &format!("{prefix}/info"), None, None)
            .await
            .ok();
        assert_eq!(v["provider"], DOMAIN, "{v}");
        assert_eq!(v["version"], "amp/0.1", "{v}");
        let pem = v["public_key"].as_str().expect("public_key");
        assert_eq!(PublicKey::parse(pem).expect("pem"), t.provider_key);
        assert_eq!(v["fingerprint"], t.provider_key.fingerprint(), "{v}");
        assert_eq!(v["capabilities"], json!(CAPABILITIES), "{v}");
        assert!(
            v["registration_modes"]
                .as_array()
                .is_some_and(|m| m.contains(&json!("open"))),
            "{v}"
        );
        assert_eq!(v["rate_limits"]["messages_per_minute"], LIMIT, "{v}");
        assert_eq!(v["rate_limits"]["api_requests_per_minute"], LIMIT, "{v}");
    }
    let r = h
        .call(Method::GET, "/.well-known/agent-messaging.json", None, None)
        .await;
    let v = r.ok();
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(ct.contains("application/json"), "{ct}");
    assert_eq!(v["version"], "AMP1", "{v}");
    assert_eq!(v["endpoint"], format!("{}/v1", t.base), "{v}");
    assert_eq!(v["provider"], DOMAIN, "{v}");
    assert_eq!(v["fingerprint"], t.provider_key.fingerprint(), "{v}");
    assert_eq!(v["capabilities"], json!(CAPABILITIES), "{v}");
}

/// Registration's answer and its refusals, through the proxy.
pub(crate) async fn registration(t: &Target) {
    let h = Http::new(&t.base);
    let tn = tenant("Reg");
    let lc = tn.to_ascii_lowercase();
    let key = SecretKey::generate();
    let body = json!({
        "tenant": tn,
        "name": "Alice",
        "public_key": key.public().to_pem(),
        "key_algorithm": "Ed25519",
        "alias": "Alice A.",
    });
    let v = h.register_raw(&body).await.json_with(201);
    let address = format!("alice@{lc}.{DOMAIN}");
    assert_eq!(v["address"], address, "{v}");
    assert_eq!(v["short_address"], address, "{v}");
    assert_eq!(v["local_name"], "alice", "{v}");
    assert_eq!(v["tenant"], lc, "{v}");
    assert!(
        v["agent_id"]
            .as_str()
            .is_some_and(|a| a.starts_with("agt_")),
        "{v}"
    );
    let api_key = v["api_key"].as_str().expect("api_key").to_owned();
    assert!(api_key.starts_with("amp_live_sk_"), "{v}");
    assert_eq!(v["provider"]["name"], DOMAIN, "{v}");
    assert_eq!(v["provider"]["endpoint"], format!("{}/v1", t.base), "{v}");
    assert_eq!(
        v["provider"]["route_url"],
        format!("{}/v1/route", t.base),
        "{v}"
    );
    assert_eq!(v["fingerprint"], key.public().fingerprint(), "{v}");
    assert!(
        v["registered_at"]
            .as_str()
            .and_then(Timestamp::parse)
            .is_some(),
        "{v}"
    );

    // The /api/v1 prefix advertises itself.
    let body = json!({
        "tenant": tn, "name": "bob",
        "public_key": SecretKey::generate().public().to_pem(), "key_algorithm": "Ed25519",
    });
    let v = h
        .call(
            Method::POST,
            "/api/v1/register",
            None,
            Some(body.to_string()),
        )
        .await
        .json_with(201);
    assert_eq!(
        v["provider"]["endpoint"],
        format!("{}/api/v1", t.base),
        "{v}"
    );

    // Refusals, each the spec error body.
    for field in ["name", "public_key", "key_algorithm", "tenant"] {
        let mut body = json!({
            "tenant": tn, "name": "carol",
            "public_key": SecretKey::generate().public().to_pem(), "key_algorithm": "Ed25519",
        });
        body.as_object_mut().expect("object").remove(field);
        h.register_raw(&body)
            .await
            .assert_error_field(400, "missing_field", field);
    }
    let bad_name = json!({
        "tenant": tn, "name": "bad name",
        "public_key": SecretKey::generate().public().to_pem(), "key_algorithm": "Ed25519",
    });
    h.register_raw(&bad_name)
        .await
        .assert_error_field(400, "invalid_field", "name");
    let rsa = json!({
        "tenant": tn, "name": "dave",
        "public_key": SecretKey::generate().public().to_pem(), "key_algorithm": "RSA",
    });
    h.register_raw(&rsa)
        .await
        .assert_error_field(400, "invalid_field", "key_algorithm");
    // Taken, in another case: 409 with suggestions, whichever replica answers.
    for _ in 0..2 {
        let taken = json!({
            "tenant": tn, "name": "ALICE",
            "public_key": SecretKey::generate().public().to_pem(), "key_algorithm": "Ed25519",
        });
        let v = h.register_raw(&taken).await.assert_error(409, "name_taken");
        let suggestions = v["suggestions"].as_array().expect("suggestions");
        assert!(!suggestions.is_empty(), "{v}");
    }
    h.call(
        Method::POST,
        "/v1/register",
        None,
        Some(r#"{"tenant": "x", "#.to_owned()),
    )
    .await
    .assert_error(400, "invalid_request");
    let no_type = h
        .send(
            h.request(Method::POST, "/v1/register")
                .body(bad_name.to_string()),
        )
        .await;
    assert_eq!(no_type.status, 415, "{}", no_type.text);
    assert!(no_type.json()["error"].is_string(), "{}", no_type.text);
    // Unknown paths and wrong methods.
    h.call(Method::GET, "/v1/nope", None, None)
        .await
        .assert_error(404, "not_found");
    h.call(Method::GET, "/v1/register", None, None)
        .await
        .assert_error(405, "method_not_allowed");
    h.call(Method::DELETE, "/v1/health", None, None)
        .await
        .assert_error(405, "method_not_allowed");
}

/// `/v1/agents/me` and resolution, registered on one replica, read on the other.
pub(crate) async fn agents_me_and_resolve(t: &Target) {
    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    let tn = tenant("me");
    let alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;
    let r = b.get(&alice, "/v1/agents/me").await;
    let v = r.ok();
    assert_eq!(v["address"], alice.address.as_str(), "{v}");
    assert_eq!(v["fingerprint"], alice.key.public().fingerprint(), "{v}");
    assert!(!r.text.contains(&alice.api_key), "{}", r.text);
    assert!(!r.text.contains("api_key"), "{}", r.text);
    let v = b
        .get(&bob, &format!("/v1/agents/resolve/{}", alice.address))
        .await
        .ok();
    let pem = v["public_key"].as_str().expect("public_key");
    assert_eq!(PublicKey::parse(pem).expect("pem"), alice.key.public());
    assert_eq!(v["fingerprint"], alice.key.public().fingerprint(), "{v}");
    b.get(&bob, &format!("/v1/agents/resolve/nobody@{tn}.{DOMAIN}"))
        .await
        .assert_error(404, "not_found");
    for key in [None, Some("garbage"), Some("amp_live_sk_AAAAAAAAAAAAAAAA")] {
        b.call(Method::GET, "/v1/agents/me", key, None)
            .await
            .assert_error(401, "unauthorized");
    }
}
