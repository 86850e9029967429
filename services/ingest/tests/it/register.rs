//! `POST /v1/register` (spec 03; checklist ID-01..05, REG-01..09, REG-13, REG-18).

use amp_proto::{PublicKey, SecretKey};
use serde_json::{Value, json};

use crate::common::{
    DOMAIN, RSA_PEM, TestServer, fingerprint_of, is_api_key, is_rfc3339, reg_body, unique,
};

/// Whether `name` is a valid agent name (`^[A-Za-z0-9_-]{1,63}$`).
fn is_valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[tokio::test]
async fn register_returns_every_field_of_spec_03() {
    let server = TestServer::start().await;
    let tenant = unique("ACME");
    let key = SecretKey::generate();
    let res = server
        .register_raw(
            &json!({
                "tenant": tenant,
                "name": "Alice",
                "public_key": key.public().to_pem(),
                "key_algorithm": "Ed25519",
                "alias": "Alice A.",
            }),
            None,
        )
        .await;
    res.expect_status(201);
    let b = &res.json_or_null();
    let tenant_lc = tenant.to_ascii_lowercase();
    let address = format!("alice@{tenant_lc}.{DOMAIN}");
    assert_eq!(b["address"], address, "{b}");
    assert_eq!(b["short_address"], address, "{b}");
    assert_eq!(b["local_name"], "alice", "{b}");
    let agent_id = b["agent_id"].as_str().expect("agent_id");
    assert!(agent_id.starts_with("agt_") && agent_id.len() > 4, "{b}");
    assert_eq!(b["agentId"], b["agent_id"], "{b}");
    assert_eq!(b["tenant"], tenant_lc, "{b}");
    assert!(
        b["tenant_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{b}"
    );
    let api_key = b["api_key"].as_str().expect("api_key");
    assert!(is_api_key(api_key), "api_key {api_key:?}");
    assert_eq!(b["apiKey"], b["api_key"], "{b}");
    let endpoint = format!("{}/v1", server.base());
    assert_eq!(b["provider"]["name"], DOMAIN, "{b}");
    assert_eq!(b["provider"]["endpoint"], endpoint, "{b}");
    assert_eq!(
        b["provider"]["route_url"],
        format!("{endpoint}/route"),
        "{b}"
    );
    assert_eq!(b["fingerprint"], fingerprint_of(&key.public()), "{b}");
    assert!(is_rfc3339(&b["registered_at"]), "{b}");
    assert!(b.get("owner_id").is_none_or(Value::is_null), "{b}");

    // The key works at once.
    server
        .get("/v1/agents/me", Some(api_key))
        .await
        .expect_status(200);
}

#[tokio::test]
async fn register_via_api_v1_advertises_the_api_v1_endpoint() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    let res = server
        .post("/api/v1/register", None, &reg_body(&tenant, "bob"))
        .await;
    res.expect_status(201);
    let endpoint = format!("{}/api/v1", server.base());
    assert_eq!(
        res.json_or_null()["provider"]["endpoint"],
        endpoint,
        "{}",
        res.text
    );
    assert_eq!(
        res.json_or_null()["provider"]["route_url"],
        format!("{endpoint}/route"),
        "{}",
        res.text
    );
    let res_json = res.json_or_null();
    let key = res_json["api_key"].as_str().expect("api_key");
    let me = server.get("/api/v1/agents/me", Some(key)).await;
    me.expect_status(200);
    assert_eq!(
        me.json_or_null()["address"],
        format!("bob@{tenant}.{DOMAIN}")
    );
}

#[tokio::test]
async fn scoped_registration_gets_full_and_short_address() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    let r = server
        .register_with(
            json!({"tenant": tenant, "name": "builder", "scope": {"platform": "GitHub", "repo": "web"}}),
            None,
        )
        .await;
    assert_eq!(r.address, format!("builder@web.github.{tenant}.{DOMAIN}"));
    assert_eq!(
        r.body["short_address"],
        format!("builder@{tenant}.{DOMAIN}")
    );
    assert_eq!(r.body["local_name"], "builder");
    assert_eq!(r.body["tenant"], tenant.as_str());
}

#[tokio::test]
async fn public_key_forms_are_accepted() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    type Render = fn(&PublicKey) -> String;
    let cases: [(&str, Render); 4] = [
        ("pem", |k| k.to_pem()),
        ("no-newline", |k| k.to_pem().trim_end().to_owned()),
        ("crlf", |k| k.to_pem().replace('\n', "\r\n")),
        ("hex", |k| hex::encode(k.to_bytes())),
    ];
    for (name, render) in cases {
        let key = SecretKey::generate();
        let res = server
            .register_raw(
                &json!({"tenant": tenant, "name": name, "public_key": render(&key.public()), "key_algorithm": "Ed25519"}),
                None,
            )
            .await;
        assert_eq!(res.status, 201, "{name}: {}", res.text);
        assert_eq!(
            res.json_or_null()["fingerprint"],
            fingerprint_of(&key.public()),
            "{name}"
        );
        // Resolution always answers PEM, whatever form came in.
        let res_json = res.json_or_null();
        let api_key = res_json["api_key"].as_str().expect("api_key");
        let addr = res_json["address"].as_str().expect("address");
        let resolved = server
            .get(&format!("/v1/agents/resolve/{addr}"), Some(api_key))
            .await;
        resolved.expect_status(200);
        let resolved_json = resolved.json_or_null();
        let pem = resolved_json["public_key"].as_str().expect("public_key");
        assert!(
            pem.starts_with("-----BEGIN PUBLIC KEY-----"),
            "{name}: {pem}"
        );
        assert_eq!(
            PublicKey::parse(pem).expect("PEM parses"),
            key.public(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn missing_required_fields_are_named() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    for field in ["name", "public_key", "key_algorithm", "tenant"] {
        let mut body = reg_body(&tenant, "carol");
        body.as_object_mut().expect("object").remove(field);
        let res = server.register_raw(&body, None).await;
        res.expect_error(400, "missing_field").expect_field(field);
    }
}

#[tokio::test]
async fn invalid_names_are_rejected() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    let long = "a".repeat(64);
    for name in ["bad name", long.as_str(), "a.b", "a@b", "ålice", "a/b"] {
        let res = server.register_raw(&reg_body(&tenant, name), None).await;
        res.expect_error(400, "invalid_field").expect_field("name");
    }
    // An empty name is either missing or invalid, but always names `name`.
    let res = server.register_raw(&reg_body(&tenant, ""), None).await;
    res.expect_status(400)
        .expect_error_shape()
        .expect_field("name");
    // The boundary: 63 characters, digits, `_` and `-` are fine.
    let ok = "b".repeat(63);
    for name in [ok.as_str(), "a_b-9"] {
        let res = server.register_raw(&reg_body(&tenant, name), None).await;
        assert_eq!(res.status, 201, "{name}: {}", res.text);
    }
}

#[tokio::test]
async fn invalid_tenants_are_rejected() {
    let server = TestServer::start().await;
    let long = "t".repeat(64);
    for tenant in ["bad tenant", "a.b", "a_b", long.as_str(), "ténant"] {
        let res = server.register_raw(&reg_body(tenant, "dave"), None).await;
        res.expect_error(400, "invalid_field")
            .expect_field("tenant");
    }
    // An empty tenant is either missing or invalid, but always names `tenant`.
    let res = server.register_raw(&reg_body("", "dave"), None).await;
    res.expect_status(400)
        .expect_error_shape()
        .expect_field("tenant");
}

#[tokio::test]
async fn invalid_scope_segments_are_rejected() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    for (platform, repo) in [("git hub", "web"), ("github", "a.b"), ("github", "a_b")] {
        let mut body = reg_body(&tenant, "erin");
        body["scope"] = json!({"platform": platform, "repo": repo});
        let res = server.register_raw(&body, None).await;
        res.expect_status(400).expect_error_shape();
        let res_json = res.json_or_null();
        let field = res_json["field"].as_str().unwrap_or_default();
        assert!(
            field.contains("scope") || field == "platform" || field == "repo",
            "{platform}/{repo}: field {field:?} in {}",
            res.text
        );
    }
}

#[tokio::test]
async fn address_over_254_characters_is_rejected() {
    let server = TestServer::start().await;
    let seg = |c: char| c.to_string().repeat(63);
    let mut body = reg_body(&seg('t'), &seg('n'));
    body["scope"] = json!({"platform": seg('p'), "repo": seg('r')});
    // 63+1+63+1+63+1+63+1+12 = 268 characters.
    let res = server.register_raw(&body, None).await;
    res.expect_status(400).expect_error_shape();
}

#[tokio::test]
async fn garbage_public_key_is_rejected() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    let bad_pem = "-----BEGIN PUBLIC KEY-----\nnot base64!!\n-----END PUBLIC KEY-----\n";
    for key in [
        "garbage",
        "",
        bad_pem,
        &"ab".repeat(31),
        &"zz".repeat(32),
        &"0".repeat(64 * 100),
    ] {
        let mut body = reg_body(&tenant, "frank");
        body["public_key"] = Value::from(key);
        let res = server.register_raw(&body, None).await;
        res.expect_status(400)
            .expect_error_shape()
            .expect_field("public_key");
        let res_json = res.json_or_null();
        let code = res_json["error"].as_str().unwrap_or_default();
        // An empty key may also count as missing.
        assert!(
            code == "invalid_field"
                || code == "invalid_request"
                || (key.is_empty() && code == "missing_field"),
            "{key:.40}: code {code}"
        );
    }
}

#[tokio::test]
async fn non_ed25519_algorithms_are_rejected() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    // Decision 4.2: Ed25519 only; RSA/ECDSA and unknown algorithms name `key_algorithm`.
    for (alg, key) in [
        ("RSA", RSA_PEM.to_owned()),
        ("ECDSA", String::new()),
        ("DSA", String::new()),
    ] {
        let mut body = reg_body(&tenant, "gina");
        body["key_algorithm"] = Value::from(alg);
        if !key.is_empty() {
            body["public_key"] = Value::from(key);
        }
        let res = server.register_raw(&body, None).await;
        res.expect_error(400, "invalid_field")
            .expect_field("key_algorithm");
    }
}

#[tokio::test]
async fn rsa_key_declared_as_ed25519_is_rejected() {
    let server = TestServer::start().await;
    let mut body = reg_body(&unique("t"), "hank");
    body["public_key"] = Value::from(RSA_PEM);
    let res = server.register_raw(&body, None).await;
    res.expect_status(400)
        .expect_error_shape()
        .expect_field("public_key");
}

#[tokio::test]
async fn unknown_body_field_is_rejected() {
    let server = TestServer::start().await;
    let mut body = reg_body(&unique("t"), "ivan");
    body["is_admin"] = Value::from(true);
    let res = server.register_raw(&body, None).await;
    res.expect_status(400).expect_error_shape();
}

#[tokio::test]
async fn taken_name_gets_409_with_free_suggestions() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    server.register(&tenant, "jane").await;

    // Same name, different case, and with a scope: all the same name in this tenant (4.3).
    let mut scoped = reg_body(&tenant, "jane");
    scoped["scope"] = json!({"platform": "github", "repo": "web"});
    for body in [reg_body(&tenant, "jane"), reg_body(&tenant, "JANE"), scoped] {
        let res = server.register_raw(&body, None).await;
        res.expect_error(409, "name_taken");
        let res_json = res.json_or_null();
        let suggestions = res_json["suggestions"]
            .as_array()
            .unwrap_or_else(|| panic!("suggestions array in {}", res.text));
        assert!(!suggestions.is_empty(), "{}", res.text);
        for s in suggestions {
            let s = s.as_str().expect("suggestion is a string");
            assert!(is_valid_name(s), "invalid suggestion {s:?}");
            assert_ne!(s.to_ascii_lowercase(), "jane");
        }
    }

    // The first suggestion is really free.
    let res = server.register_raw(&reg_body(&tenant, "jane"), None).await;
    let suggestion = res.json_or_null()["suggestions"][0]
        .as_str()
        .expect("suggestion")
        .to_owned();
    let taken = server.register(&tenant, &suggestion).await;
    assert_eq!(
        taken.address,
        format!("{}@{tenant}.{DOMAIN}", suggestion.to_ascii_lowercase())
    );

    // The same name in another tenant is fine.
    let other = unique("t");
    let r = server.register(&other, "jane").await;
    assert_eq!(r.address, format!("jane@{other}.{DOMAIN}"));
}

#[tokio::test]
async fn malformed_json_is_invalid_request() {
    let server = TestServer::start().await;
    for raw in [
        "{\"tenant\": \"x\", ",
        "not json",
        "[]",
        "{\"name\": \"a\"} trailing",
    ] {
        let req = server
            .client
            .post(server.url("/v1/register"))
            .header("content-type", "application/json")
            .body(raw);
        let res = server.send(req).await;
        res.expect_status(400).expect_error_shape();
        if raw != "[]" {
            assert_eq!(
                res.json_or_null()["error"],
                "invalid_request",
                "{raw}: {}",
                res.text
            );
        }
    }
}

#[tokio::test]
async fn missing_content_type_is_415() {
    let server = TestServer::start().await;
    let body = serde_json::to_vec(&reg_body(&unique("t"), "kate")).expect("json");
    let req = server
        .client
        .post(server.url("/v1/register"))
        .body(body.clone());
    server
        .send(req)
        .await
        .expect_status(415)
        .expect_error_shape();
    let req = server
        .client
        .post(server.url("/v1/register"))
        .header("content-type", "text/plain")
        .body(body);
    server
        .send(req)
        .await
        .expect_status(415)
        .expect_error_shape();
}

#[tokio::test]
async fn eleventh_registration_from_one_ip_in_a_minute_is_rate_limited() {
    // The default config: 10 registrations per IP per minute (REG-13).
    let server = TestServer::with_config(ingest::Config::default()).await;
    let tenant = unique("t");
    for i in 0..10 {
        let res = server
            .register_raw(&reg_body(&tenant, &format!("agent-{i}")), None)
            .await;
        assert_eq!(res.status, 201, "registration {i}: {}", res.text);
    }
    let res = server
        .register_raw(&reg_body(&tenant, "agent-10"), None)
        .await;
    res.expect_error(429, "rate_limited").expect_rate_headers();
    assert_eq!(res.header("x-ratelimit-limit"), Some("10"));
    assert_eq!(res.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = res
        .header("retry-after")
        .unwrap_or_else(|| panic!("Retry-After missing: {:?}", res.headers))
        .parse()
        .expect("Retry-After seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
}
