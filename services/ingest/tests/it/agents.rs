//! `/v1/agents/me`, `GET /v1/agents` and resolution (spec 02, 03, 08; checklist ID-08, ID-11,
//! REG-05, REG-21, REG-23, API-06..10, decisions 4.31, 4.33).

use std::collections::HashSet;

use amp_proto::PublicKey;
use serde_json::{Value, json};

use crate::common::{DOMAIN, TestServer, fingerprint_of, is_rfc3339, reg_body, unique};

/// A public IP literal, so that webhook checks need no DNS.
const WEBHOOK_URL: &str = "https://93.184.215.14/amp-hook";

#[tokio::test]
async fn me_returns_the_profile_and_no_secrets() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    let r = server
        .register_with(
            json!({"tenant": tenant, "name": "alice", "alias": "Alice", "delivery": {"prefer_websocket": true}}),
            None,
        )
        .await;
    let res = server.get("/v1/agents/me", Some(&r.api_key)).await;
    res.expect_status(200);
    let b = &res.json_or_null();
    assert_eq!(b["address"], r.address);
    assert_eq!(b["alias"], "Alice");
    assert!(b["delivery"].is_object(), "{b}");
    // No webhook: the field is omitted, never `null` (spec-next 04's JSON profile).
    assert!(b["delivery"].get("webhook_url").is_none(), "{b}");
    assert_eq!(b["delivery"]["prefer_websocket"], true, "{b}");
    assert_eq!(b["fingerprint"], fingerprint_of(&r.key.public()));
    assert_eq!(b["registered_at"], r.body["registered_at"]);
    assert!(is_rfc3339(&b["registered_at"]), "{b}");
    // API-06's `last_seen_at`: a time once the agent was seen, omitted before (never
    // `null`, spec-next 04's JSON profile).
    assert!(
        b.get("last_seen_at").is_none_or(is_rfc3339),
        "API-06 last_seen_at: {b}"
    );
    assert!(!res.text.contains("api_key"), "{}", res.text);
    assert!(!res.text.contains(&r.api_key), "{}", res.text);
    assert!(!res.text.contains("webhook_secret"), "{}", res.text);
}

#[tokio::test]
async fn me_never_reveals_the_webhook_secret() {
    let server = TestServer::start().await;
    let secret = "whsec_do-not-echo-0123456789";
    let r = server
        .register_with(
            json!({"tenant": unique("t"), "name": "hooked",
                   "delivery": {"webhook_url": WEBHOOK_URL, "webhook_secret": secret}}),
            None,
        )
        .await;
    let res = server.get("/v1/agents/me", Some(&r.api_key)).await;
    res.expect_status(200);
    assert_eq!(res.json_or_null()["delivery"]["webhook_url"], WEBHOOK_URL);
    assert!(!res.text.contains(secret), "{}", res.text);
    assert!(!res.text.contains("webhook_secret"), "{}", res.text);
    assert!(!res.text.contains("api_key"), "{}", res.text);
}

#[tokio::test]
async fn me_requires_a_valid_api_key() {
    let server = TestServer::start().await;
    let r = server.register(&unique("t"), "bob").await;
    let unknown = format!("amp_live_sk_{}", "A".repeat(43));
    for key in [
        None,
        Some(unknown.as_str()),
        Some("garbage"),
        Some("amp_live_sk_"),
        Some("uk_abc"),
    ] {
        server
            .get("/v1/agents/me", key)
            .await
            .expect_error(401, "unauthorized");
    }
    // Other schemes and a key in the URL are not credentials.
    let req = server
        .client
        .get(server.url("/v1/agents/me"))
        .header("authorization", format!("Basic {}", r.api_key));
    server.send(req).await.expect_error(401, "unauthorized");
    server
        .get(&format!("/v1/agents/me?api_key={}", r.api_key), None)
        .await
        .expect_error(401, "unauthorized");
    // Scheme is case-insensitive.
    let req = server
        .client
        .get(server.url("/v1/agents/me"))
        .header("authorization", format!("bearer {}", r.api_key));
    server.send(req).await.expect_status(200);
}

#[tokio::test]
async fn patch_updates_alias_and_metadata() {
    let server = TestServer::start().await;
    let r = server.register(&unique("t"), "carol").await;
    let res = server
        .patch(
            "/v1/agents/me",
            Some(&r.api_key),
            &json!({"alias": "Carol C.", "metadata": {"description": "tests things"}, "delivery": {"prefer_websocket": false}}),
        )
        .await;
    res.expect_status(200);
    assert_eq!(res.json_or_null()["updated"], true, "{}", res.text);
    assert_eq!(res.json_or_null()["address"], r.address);
    let me = server.get("/v1/agents/me", Some(&r.api_key)).await;
    me.expect_status(200);
    assert_eq!(me.json_or_null()["alias"], "Carol C.");
    assert_eq!(me.json_or_null()["delivery"]["prefer_websocket"], false);
    // The alias is public: resolution shows it too.
    let resolved = server
        .get(
            &format!("/v1/agents/resolve/{}", r.address),
            Some(&r.api_key),
        )
        .await;
    assert_eq!(resolved.json_or_null()["alias"], "Carol C.");
}

#[tokio::test]
async fn patch_rejects_non_updatable_fields() {
    let server = TestServer::start().await;
    let r = server.register(&unique("t"), "dave").await;
    let pem = amp_proto::SecretKey::generate().public().to_pem();
    for (field, value) in [
        ("name", Value::from("mallory")),
        ("public_key", Value::from(pem)),
        ("tenant", Value::from("other")),
    ] {
        let mut body = json!({"alias": "x"});
        body[field] = value;
        let res = server.patch("/v1/agents/me", Some(&r.api_key), &body).await;
        res.expect_error(400, "invalid_field").expect_field(field);
    }
    // Nothing changed, not even the alias sent alongside.
    let me = server.get("/v1/agents/me", Some(&r.api_key)).await;
    assert_eq!(me.json_or_null()["address"], r.address);
    assert_ne!(me.json_or_null()["alias"], "x");
    assert_eq!(
        me.json_or_null()["fingerprint"],
        fingerprint_of(&r.key.public())
    );
}

#[tokio::test]
async fn patch_webhook_url_without_a_secret_is_rejected() {
    let server = TestServer::start().await;
    let r = server.register(&unique("t"), "erin").await;
    let res = server
        .patch(
            "/v1/agents/me",
            Some(&r.api_key),
            &json!({"delivery": {"webhook_url": WEBHOOK_URL}}),
        )
        .await;
    res.expect_error(400, "missing_field");
    let res_json = res.json_or_null();
    let field = res_json["field"].as_str().unwrap_or_default();
    assert!(field.ends_with("webhook_secret"), "field {field:?}");

    // With a secret it is accepted; afterwards the URL alone may change.
    let res = server
        .patch(
            "/v1/agents/me",
            Some(&r.api_key),
            &json!({"delivery": {"webhook_url": WEBHOOK_URL, "webhook_secret": "whsec_abc123"}}),
        )
        .await;
    res.expect_status(200);
    let me = server.get("/v1/agents/me", Some(&r.api_key)).await;
    assert_eq!(me.json_or_null()["delivery"]["webhook_url"], WEBHOOK_URL);
}

#[tokio::test]
async fn patch_rejects_a_non_https_webhook() {
    let server = TestServer::start().await;
    let r = server.register(&unique("t"), "fred").await;
    for url in [
        "http://93.184.215.14/hook",
        "ftp://93.184.215.14/hook",
        "not a url",
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/hook",
    ] {
        let res = server
            .patch(
                "/v1/agents/me",
                Some(&r.api_key),
                &json!({"delivery": {"webhook_url": url, "webhook_secret": "whsec_abc123"}}),
            )
            .await;
        res.expect_error(400, "invalid_field");
        let res_json = res.json_or_null();
        let field = res_json["field"].as_str().unwrap_or_default();
        assert!(field.ends_with("webhook_url"), "{url}: field {field:?}");
    }
}

#[tokio::test]
async fn delete_me_deregisters() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    let r = server.register(&tenant, "gone").await;
    let res = server.delete("/v1/agents/me", Some(&r.api_key)).await;
    res.expect_status(200);
    assert_eq!(res.json_or_null()["deregistered"], true, "{}", res.text);
    assert_eq!(res.json_or_null()["address"], r.address);
    assert!(
        is_rfc3339(&res.json_or_null()["deregistered_at"]),
        "{}",
        res.text
    );

    server
        .get("/v1/agents/me", Some(&r.api_key))
        .await
        .expect_error(401, "unauthorized");
    server
        .delete("/v1/agents/me", Some(&r.api_key))
        .await
        .expect_error(401, "unauthorized");
    // The name is held (30 days).
    server
        .register_raw(&reg_body(&tenant, "gone"), None)
        .await
        .expect_error(409, "name_taken");
    // And it no longer resolves or lists.
    let other = server.register(&tenant, "witness").await;
    server
        .get(
            &format!("/v1/agents/resolve/{}", r.address),
            Some(&other.api_key),
        )
        .await
        .expect_error(404, "not_found");
    let list = server.get("/v1/agents", Some(&other.api_key)).await;
    assert!(!list.text.contains(&r.address), "{}", list.text);
}

#[tokio::test]
async fn list_shows_only_the_callers_tenant() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    let other = unique("u");
    let a = server.register(&tenant, "list-a").await;
    let b = server
        .register_with(
            json!({"tenant": tenant, "name": "list-b", "alias": "Bee"}),
            None,
        )
        .await;
    let x = server.register(&other, "list-x").await;

    let res = server.get("/v1/agents", Some(&a.api_key)).await;
    res.expect_status(200);
    let res_json = res.json_or_null();
    let agents = res_json["agents"].as_array().expect("agents array");
    let addresses: HashSet<&str> = agents
        .iter()
        .map(|a| a["address"].as_str().expect("address"))
        .collect();
    assert_eq!(
        addresses,
        HashSet::from([a.address.as_str(), b.address.as_str()])
    );
    for agent in agents {
        // An alias when the agent has one, omitted otherwise, never `null`.
        assert!(
            agent.get("alias").is_none_or(serde_json::Value::is_string),
            "{agent}"
        );
        assert!(agent["online"].is_boolean(), "{agent}");
        assert!(agent.get("api_key").is_none(), "{agent}");
    }
    let bee = agents
        .iter()
        .find(|a| a["address"] == b.address)
        .expect("b listed");
    assert_eq!(bee["alias"], "Bee");
    assert_eq!(res.json_or_null()["total"], 2, "{}", res.text);
    assert_eq!(res.json_or_null()["has_more"], false, "{}", res.text);
    assert!(!res.text.contains(&x.address));

    // The own tenant by name is fine; another tenant is forbidden (4.31).
    let res = server
        .get(&format!("/v1/agents?tenant={tenant}"), Some(&a.api_key))
        .await;
    res.expect_status(200);
    assert_eq!(res.json_or_null()["total"], 2);
    server
        .get(&format!("/v1/agents?tenant={other}"), Some(&a.api_key))
        .await
        .expect_error(403, "forbidden");
    server
        .get("/v1/agents", None)
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn list_search_filters() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    let a = server.register(&tenant, "backend-architect").await;
    let b = server.register(&tenant, "backend-api").await;
    server.register(&tenant, "frontend").await;
    let res = server
        .get("/v1/agents?search=backend", Some(&a.api_key))
        .await;
    res.expect_status(200);
    let res_json = res.json_or_null();
    let got: HashSet<&str> = res_json["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a["address"].as_str().expect("address"))
        .collect();
    assert_eq!(got, HashSet::from([a.address.as_str(), b.address.as_str()]));
    assert_eq!(res.json_or_null()["total"], 2, "{}", res.text);

    let res = server
        .get("/v1/agents?search=nothing-matches", Some(&a.api_key))
        .await;
    res.expect_status(200);
    assert_eq!(res.json_or_null()["agents"], json!([]));
    assert_eq!(res.json_or_null()["total"], 0);
    assert_eq!(res.json_or_null()["has_more"], false);
}

#[tokio::test]
async fn list_pages_with_a_cursor() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    let mut expected = HashSet::new();
    let mut key = String::new();
    for i in 0..5 {
        let r = server.register(&tenant, &format!("page-{i}")).await;
        expected.insert(r.address);
        key = r.api_key;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _round in 0..10 {
        let mut req = server
            .client
            .get(server.url("/v1/agents"))
            .bearer_auth(&key)
            .query(&[("limit", "2")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c.as_str())]);
        }
        let res = server.send(req).await;
        res.expect_status(200);
        let res_json = res.json_or_null();
        let page = res_json["agents"].as_array().expect("agents");
        assert!(page.len() <= 2, "{}", res.text);
        assert_eq!(res.json_or_null()["total"], 5, "{}", res.text);
        seen.extend(
            page.iter()
                .map(|a| a["address"].as_str().expect("address").to_owned()),
        );
        if res.json_or_null()["has_more"] == false {
            break;
        }
        assert_eq!(res.json_or_null()["has_more"], true, "{}", res.text);
        cursor = Some(
            res.json_or_null()["cursor"]
                .as_str()
                .unwrap_or_else(|| panic!("cursor while has_more: {}", res.text))
                .to_owned(),
        );
    }
    let unique_seen: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), 5, "each agent once: {seen:?}");
    assert_eq!(unique_seen, expected);

    // A garbage cursor or limit is a 400, not a 500.
    for query in ["cursor=%00%ff garbage", "limit=-1", "limit=abc"] {
        let res = server.get(&format!("/v1/agents?{query}"), Some(&key)).await;
        res.expect_status(400).expect_error_shape();
    }
}

#[tokio::test]
async fn resolve_returns_the_public_key_on_both_paths() {
    let server = TestServer::start().await;
    let me = server.register(&unique("t"), "asker").await;
    // Resolution works across tenants: public keys are public (4.31).
    let target = server
        .register_with(
            json!({"tenant": unique("u"), "name": "target", "alias": "The Target"}),
            None,
        )
        .await;
    for path in [
        format!("/v1/agents/resolve/{}", target.address),
        format!("/v1/agents/{}", target.address),
        format!("/api/v1/agents/resolve/{}", target.address),
        format!("/api/v1/agents/{}", target.address),
        format!("/v1/agents/resolve/{}", target.address.to_ascii_uppercase()),
    ] {
        let res = server.get(&path, Some(&me.api_key)).await;
        res.expect_status(200);
        let b = &res.json_or_null();
        assert_eq!(b["address"], target.address, "{path}");
        assert_eq!(b["alias"], "The Target", "{path}");
        let pem = b["public_key"].as_str().expect("public_key");
        assert_eq!(
            PublicKey::parse(pem).expect("pem"),
            target.key.public(),
            "{path}"
        );
        assert_eq!(b["key_algorithm"], "Ed25519", "{path}");
        assert_eq!(b["fingerprint"], fingerprint_of(&target.key.public()));
        assert!(b["online"].is_boolean(), "{path}: {b}");
        assert!(b.get("api_key").is_none(), "{path}: {b}");
    }
    let unknown = format!("nobody@{}.{DOMAIN}", unique("t"));
    for path in [
        format!("/v1/agents/resolve/{unknown}"),
        format!("/v1/agents/{unknown}"),
    ] {
        server
            .get(&path, Some(&me.api_key))
            .await
            .expect_error(404, "not_found");
    }
    server
        .get(&format!("/v1/agents/resolve/{}", target.address), None)
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn scoped_agent_resolves_by_its_short_address() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    let me = server.register(&tenant, "asker").await;
    let scoped = server
        .register_with(
            json!({"tenant": tenant, "name": "scoped", "scope": {"platform": "github", "repo": "web"}}),
            None,
        )
        .await;
    let short = format!("scoped@{tenant}.{DOMAIN}");
    for address in [&scoped.address, &short] {
        let res = server
            .get(&format!("/v1/agents/resolve/{address}"), Some(&me.api_key))
            .await;
        res.expect_status(200);
        assert_eq!(res.json_or_null()["address"], scoped.address);
        assert_eq!(
            res.json_or_null()["fingerprint"],
            fingerprint_of(&scoped.key.public())
        );
    }
}

#[tokio::test]
async fn agents_me_is_not_an_address() {
    let server = TestServer::start().await;
    let r = server.register(&unique("t"), "myself").await;
    for path in ["/v1/agents/me", "/api/v1/agents/me"] {
        let res = server.get(path, Some(&r.api_key)).await;
        res.expect_status(200);
        assert_eq!(res.json_or_null()["address"], r.address);
        assert!(res.json_or_null().get("delivery").is_some(), "{}", res.text);
    }
}
