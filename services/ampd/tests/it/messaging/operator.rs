//! Issue 17, the operator plane, against a whole `ampd`: the admin API on its own listener,
//! operator-token scopes, owner keys and invites in registration, suspension on the public
//! API and on sockets, the audit log. Every test name starts with `operator_`, so `cargo
//! test --workspace operator` runs them.

use std::time::{Duration, Instant};

use amp_proto::SecretKey;
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{Ampd, MessagingExt, Msg, Resp};

/// The bootstrap token every test's server imports (scope `full`).
pub(super) const BOOTSTRAP: &str = "amp_op_bootstrap-token-for-the-operator-tests-0123456789";

/// A free loopback port for the admin listener.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An ampd with an admin listener and the bootstrap token; returns it with the admin URL.
/// The admin port is chosen free and bound by `ampd` a moment later; another test may take it
/// in between, so a start that fails is tried again on another port.
pub(super) async fn start_admin(tweak: impl Fn(&mut ampd::Config)) -> (Ampd, String) {
    let mut why = String::new();
    for _ in 0..5 {
        let port = free_port();
        match Ampd::try_start_with(|c| {
            c.ingest.admin.listen = Some(([127, 0, 0, 1], port).into());
            c.ingest.admin.bootstrap_token = Some(amp_runtime::config::Secret::new(BOOTSTRAP));
            tweak(c);
        })
        .await
        {
            Ok(server) => return (server, format!("http://127.0.0.1:{port}")),
            Err(e) => why = e,
        }
    }
    panic!("ampd with an admin listener did not start: {why}")
}

/// A call to the admin API.
pub(super) async fn admin(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Resp {
    let mut req = http.request(method, format!("{base}/admin/v1{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    amp_testkit::http::send(req).await
}

/// Creates an operator token of `scope` with the bootstrap token; returns (id, token).
pub(super) async fn token(s: &Ampd, base: &str, scope: &str) -> (String, String) {
    let r = admin(
        &s.http,
        base,
        Some(BOOTSTRAP),
        Method::POST,
        "/tokens",
        Some(json!({"name": format!("{scope} test"), "scope": scope})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    (
        v["id"].as_str().expect("id").to_owned(),
        v["token"].as_str().expect("token").to_owned(),
    )
}

/// Creates a tenant in `mode`.
pub(super) async fn tenant(s: &Ampd, base: &str, name: &str, mode: &str) {
    let r = admin(
        &s.http,
        base,
        Some(BOOTSTRAP),
        Method::POST,
        "/tenants",
        Some(json!({"name": name, "registration": mode})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

/// Issues an owner key for `tenant`; returns (key id, key).
pub(super) async fn owner_key(s: &Ampd, base: &str, tenant: &str) -> (String, String) {
    let r = admin(
        &s.http,
        base,
        Some(BOOTSTRAP),
        Method::POST,
        &format!("/tenants/{tenant}/owner-keys"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    (
        v["id"].as_str().expect("id").to_owned(),
        v["key"].as_str().expect("key").to_owned(),
    )
}

/// `POST /v1/register` with an optional owner key and extra body members.
async fn register(s: &Ampd, tenant: &str, name: &str, key: Option<&str>, extra: Value) -> Resp {
    let sk = SecretKey::generate();
    let mut body = json!({
        "tenant": tenant,
        "name": name,
        "public_key": sk.public().to_pem(),
        "key_algorithm": "Ed25519",
    });
    if let (Some(o), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    s.call(Method::POST, "/v1/register", key, Some(body.to_string()))
        .await
}

/// Every admin endpoint against every kind of token: none, unknown, each scope, revoked.
#[tokio::test]
async fn operator_token_scopes_matrix() {
    let (s, base) = start_admin(|_| {}).await;
    let (_, read) = token(&s, &base, "read").await;
    let (_, tadmin) = token(&s, &base, "tenant_admin").await;
    let (_, full) = token(&s, &base, "full").await;
    let (revoked_id, revoked) = token(&s, &base, "full").await;
    let r = admin(
        &s.http,
        &base,
        Some(&full),
        Method::POST,
        &format!("/tokens/{revoked_id}/revoke"),
        None,
    )
    .await;
    r.ok();
    tenant(&s, &base, "matrix", "owner_key").await;
    let (key_id, _) = owner_key(&s, &base, "matrix").await;

    // (method, path, body, least scope): 0 read, 1 tenant_admin, 2 full.
    let mut n = 0;
    let mut endpoints = |m: Method, p: String, b: Option<Value>, least: u8| {
        n += 1;
        (m, p, b, least, n)
    };
    let cases = vec![
        endpoints(Method::GET, "/tenants".into(), None, 0),
        endpoints(Method::GET, "/tenants/matrix".into(), None, 0),
        endpoints(Method::GET, "/tenants/matrix/owner-keys".into(), None, 0),
        endpoints(Method::GET, "/audit".into(), None, 0),
        endpoints(
            Method::POST,
            "/tenants".into(),
            Some(json!({"name": "NAME", "registration": "open"})),
            1,
        ),
        endpoints(
            Method::PATCH,
            "/tenants/matrix".into(),
            Some(json!({"registration": "owner_key"})),
            1,
        ),
        endpoints(
            Method::POST,
            "/tenants/matrix/suspend".into(),
            Some(json!({"reason": "test"})),
            1,
        ),
        endpoints(Method::POST, "/tenants/matrix/resume".into(), None, 1),
        endpoints(Method::POST, "/tenants/matrix/owner-keys".into(), None, 1),
        endpoints(
            Method::POST,
            format!("/tenants/matrix/owner-keys/{key_id}/rotate"),
            Some(json!({"overlap_secs": 60})),
            1,
        ),
        endpoints(Method::POST, "/tenants/matrix/invites".into(), None, 1),
        endpoints(Method::GET, "/tokens".into(), None, 2),
        endpoints(
            Method::POST,
            "/tokens".into(),
            Some(json!({"name": "x", "scope": "read"})),
            2,
        ),
        endpoints(
            Method::POST,
            "/tokens/opt_0000000000000000/revoke".into(),
            None,
            2,
        ),
        endpoints(Method::GET, "/tenants/matrix/deletion".into(), None, 0),
        endpoints(Method::GET, "/tenants/matrix/agents".into(), None, 0),
        // Last: it deletes the tenant the cases above use.
        endpoints(Method::DELETE, "/tenants/matrix".into(), None, 2),
    ];
    let scoped = [
        (0u8, read.as_str()),
        (1, tadmin.as_str()),
        (2, full.as_str()),
    ];
    for (method, path, body, least, i) in cases {
        let fill = |b: &Option<Value>, who: u8| {
            b.as_ref().map(|v| {
                serde_json::from_str::<Value>(
                    &v.to_string().replace("NAME", &format!("m{i}x{who}")),
                )
                .expect("json")
            })
        };
        for (label, tok) in [
            ("none", None),
            ("unknown", Some("amp_op_not-a-token")),
            ("revoked", Some(revoked.as_str())),
            ("agent key", Some("amp_live_sk_x")),
        ] {
            let r = admin(&s.http, &base, tok, method.clone(), &path, fill(&body, 9)).await;
            r.assert_error(401, "unauthorized");
            let _ = label;
        }
        for (scope, tok) in scoped {
            let r = admin(
                &s.http,
                &base,
                Some(tok),
                method.clone(),
                &path,
                fill(&body, scope),
            )
            .await;
            if scope >= least {
                // A token allowed in gets past authorisation (the revoke of an unknown id is
                // 404, and so is the deletion status of a tenant not being deleted).
                assert!(
                    r.status.is_success()
                        || (r.status == StatusCode::NOT_FOUND
                            && (path.ends_with("revoke") || path.ends_with("deletion"))),
                    "{method} {path} with scope {scope}: {} {}",
                    r.status,
                    r.text
                );
            } else {
                r.assert_error(403, "forbidden");
            }
        }
    }

    // The admin API is not on the public port, and the public API is not on the admin port.
    let r = s
        .call(Method::GET, "/admin/v1/tenants", Some(&full), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = s
        .http
        .get(format!("{base}/v1/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}

/// Bad input gets the spec's error body on every admin endpoint that takes input.
#[tokio::test]
async fn operator_bad_input_gets_spec_errors() {
    let (s, base) = start_admin(|_| {}).await;
    let t = Some(BOOTSTRAP);
    let post = |p: &'static str, b: Value| admin(&s.http, &base, t, Method::POST, p, Some(b));
    post("/tenants", json!({"name": "Bad Name!"}))
        .await
        .assert_error_field(400, "invalid_field", "name");
    post("/tenants", json!({}))
        .await
        .assert_error_field(400, "missing_field", "name");
    post("/tenants", json!({"name": "system"}))
        .await
        .assert_error_field(400, "invalid_field", "name");
    post(
        "/tenants",
        json!({"name": "ok", "registration": "sometimes"}),
    )
    .await
    .assert_error_field(400, "invalid_field", "registration");
    post("/tenants", json!({"name": "ok", "colour": "red"}))
        .await
        .assert_error_field(400, "invalid_field", "colour");
    post("/tenants", json!({"name": "dup"})).await;
    post("/tenants", json!({"name": "dup"}))
        .await
        .assert_error_field(409, "name_taken", "name");
    // A plan is an object: serde's derive would also read a struct from an array.
    let r = post(
        "/tenants",
        json!({"name": "arrayplan", "plan": [null, null]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = admin(
        &s.http,
        &base,
        t,
        Method::PATCH,
        "/tenants/dup",
        Some(json!({"plan": []})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    post("/tokens", json!({"name": "x", "scope": "root"}))
        .await
        .assert_error_field(400, "invalid_field", "scope");
    post("/tokens", json!({"name": "", "scope": "read"}))
        .await
        .assert_error_field(400, "invalid_field", "name");
    let get = |p: &'static str| admin(&s.http, &base, t, Method::GET, p, None);
    get("/tenants/nope").await.assert_error(404, "not_found");
    get("/tenants?limit=0")
        .await
        .assert_error_field(400, "invalid_field", "limit");
    get("/audit?limit=100000")
        .await
        .assert_error_field(400, "invalid_field", "limit");
    get("/nothing-here").await.assert_error(404, "not_found");
    let r = admin(
        &s.http,
        &base,
        t,
        Method::POST,
        "/tenants/dup/owner-keys/ok_nope/revoke",
        None,
    )
    .await;
    r.assert_error(404, "not_found");
    let r = admin(
        &s.http,
        &base,
        t,
        Method::POST,
        "/tenants/dup/owner-keys",
        Some(json!({"expires_in_secs": 0})),
    )
    .await;
    r.assert_error_field(400, "invalid_field", "expires_in_secs");
    let r = admin(
        &s.http,
        &base,
        t,
        Method::POST,
        "/tenants/dup/owner-keys",
        Some(json!({"expires_in_secs": "soon"})),
    )
    .await;
    r.assert_error_field(400, "invalid_field", "expires_in_secs");
    let r = s
        .http
        .post(format!("{base}/admin/v1/tenants/dup/suspend"))
        .bearer_auth(BOOTSTRAP)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "invalid_request");

    // Paging: tenants in name order, a cursor, no repeats.
    for i in 0..5 {
        post("/tenants", json!({"name": format!("page-{i}")})).await;
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let path = format!("/tenants?limit=2{after}");
        let r = admin(&s.http, &base, t, Method::GET, &path, None).await;
        let v = r.ok();
        for x in v["tenants"].as_array().expect("tenants") {
            seen.push(x["name"].as_str().expect("name").to_owned());
        }
        match v["next_cursor"].as_str() {
            Some(c) => after = format!("&after={c}"),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "ordered, no repeats");
    assert!(
        ["page-0", "page-4", "dup"]
            .iter()
            .all(|n| seen.iter().any(|x| x == n))
    );
    s.stop().await;
}

/// A tenant's owner key registers into it and no other; rotation keeps the old key for the
/// overlap only; a revoked key is refused; each use is in the audit log.
#[tokio::test]
async fn security_operator_owner_keys_isolated_rotated_and_revoked() {
    let (s, base) = start_admin(|_| {}).await;
    tenant(&s, &base, "acme", "owner_key").await;
    tenant(&s, &base, "globex", "owner_key").await;
    let (acme_id, acme) = owner_key(&s, &base, "acme").await;
    let (_, globex) = owner_key(&s, &base, "globex").await;

    let r = register(&s, "acme", "alice", Some(&acme), json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    register(&s, "globex", "alice", Some(&acme), json!({}))
        .await
        .assert_error(403, "tenant_access_denied");
    register(&s, "acme", "mallory", Some(&globex), json!({}))
        .await
        .assert_error(403, "tenant_access_denied");
    register(&s, "acme", "mallory", None, json!({}))
        .await
        .assert_error(401, "unauthorized");
    register(&s, "acme", "mallory", Some("uk_made-up"), json!({}))
        .await
        .assert_error(401, "unauthorized");

    // The key list shows prefixes, never keys.
    let r = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::GET,
        "/tenants/acme/owner-keys",
        None,
    )
    .await;
    let text = r.text.clone();
    let v = r.ok();
    assert!(!text.contains(&acme), "a listed key leaks: {text}");
    assert_eq!(v["owner_keys"].as_array().map(Vec::len), Some(1));

    // Rotation: both keys work during the overlap, then only the new one.
    let r = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::POST,
        &format!("/tenants/acme/owner-keys/{acme_id}/rotate"),
        Some(json!({"overlap_secs": 1})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    let (new_id, new_key) = (
        v["id"].as_str().expect("id").to_owned(),
        v["key"].as_str().expect("key").to_owned(),
    );
    assert_eq!(v["previous"]["replaced_by"], new_id.as_str());
    let r = register(&s, "acme", "bob", Some(&acme), json!({})).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "old key within the overlap: {}",
        r.text
    );
    // The owner stays the same across the rotation.
    let owner = r.json()["owner_id"].clone();
    let r = register(&s, "acme", "carol", Some(&new_key), json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["owner_id"], owner);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    register(&s, "acme", "dave", Some(&acme), json!({}))
        .await
        .assert_error(401, "unauthorized");

    // Revocation takes effect at once.
    let r = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::POST,
        &format!("/tenants/acme/owner-keys/{new_id}/revoke"),
        None,
    )
    .await;
    r.ok();
    register(&s, "acme", "erin", Some(&new_key), json!({}))
        .await
        .assert_error(401, "unauthorized");
    // Another tenant's key id is as unknown as a made-up one.
    let r = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::POST,
        &format!("/tenants/globex/owner-keys/{new_id}/revoke"),
        None,
    )
    .await;
    r.assert_error(404, "not_found");

    // The audit log has every action and every key use, in order.
    let r = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::GET,
        "/audit?limit=500",
        None,
    )
    .await;
    let v = r.ok();
    let actions: Vec<(String, String)> = v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_owned(),
                e["target"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let acme_actions: Vec<&str> = actions
        .iter()
        .filter(|(_, t)| t == "acme")
        .map(|(a, _)| a.as_str())
        .collect();
    assert_eq!(
        acme_actions,
        [
            "tenant.create",
            "owner_key.issue",
            "owner_key.use",
            "owner_key.rotate",
            "owner_key.use",
            "owner_key.use",
            "owner_key.revoke"
        ],
        "{actions:?}"
    );
    assert!(!r.text.contains(&acme) && !r.text.contains(&new_key) && !r.text.contains(BOOTSTRAP));
    s.stop().await;
}

/// Invite mode: a code registers one agent, once, in its tenant only, until it expires.
#[tokio::test]
async fn operator_invite_codes_are_single_use() {
    let (s, base) = start_admin(|_| {}).await;
    tenant(&s, &base, "club", "invite").await;
    tenant(&s, &base, "other", "invite").await;
    let code = |tenant: &'static str, secs: u64| {
        let s = &s;
        let base = &base;
        async move {
            let r = admin(
                &s.http,
                base,
                Some(BOOTSTRAP),
                Method::POST,
                &format!("/tenants/{tenant}/invites"),
                Some(json!({"expires_in_secs": secs})),
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            r.json()["code"].as_str().expect("code").to_owned()
        }
    };
    register(&s, "club", "a", None, json!({}))
        .await
        .assert_error(401, "unauthorized");
    let c = code("club", 600).await;
    register(&s, "other", "a", None, json!({"invite_code": c}))
        .await
        .assert_error_field(403, "tenant_access_denied", "invite_code");
    let r = register(&s, "club", "a", None, json!({"invite_code": c})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    register(&s, "club", "b", None, json!({"invite_code": c}))
        .await
        .assert_error_field(403, "tenant_access_denied", "invite_code");
    // A registration that fails (name taken) does not use the code up.
    let c2 = code("club", 600).await;
    let r = register(&s, "club", "a", None, json!({"invite_code": c2})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = register(&s, "club", "b", None, json!({"invite_code": c2})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Expired.
    let c3 = code("club", 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    register(&s, "club", "c", None, json!({"invite_code": c3}))
        .await
        .assert_error_field(403, "tenant_access_denied", "invite_code");
    // Of concurrent registrations with one code, one succeeds.
    let c4 = code("club", 600).await;
    let names: Vec<String> = (0..6).map(|i| format!("race{i}")).collect();
    let tries = names
        .iter()
        .map(|n| register(&s, "club", n, None, json!({"invite_code": c4})));
    let results = futures::future::join_all(tries).await;
    let created = results
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(
        created,
        1,
        "{:?}",
        results.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    s.stop().await;
}

/// Waits until `check` holds, at most `within`; returns how long it took.
pub(super) async fn within<F, Fut>(within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A suspended tenant on every public endpoint: its agents' requests and routes are refused
/// (`agent_suspended`), routes to them too (`recipient_suspended`), its sockets closed with
/// 4003, registration into it refused; all within a second; resumed, all works again.
#[tokio::test]
async fn operator_suspended_tenant_on_the_public_api() {
    let (s, base) = start_admin(|_| {}).await;
    tenant(&s, &base, "bad", "open").await;
    let bad = s.register("bad", "eve").await;
    let bad2 = s.register("bad", "eve2").await;
    let good = s.register("good", "gus").await;
    s.send_text(&good, &bad.address, "before").await;

    // A socket of the tenant's agent, open before the suspension.
    let ws_url = format!("{}/v1/ws", s.url().replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("connect");
    ws.send(Message::text(
        json!({"type": "auth", "token": bad.api_key}).to_string(),
    ))
    .await
    .expect("auth");
    // The auth answer and the replayed message.
    let mut got_ok = false;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if m.to_text().is_ok_and(|t| t.contains("\"message\""))
            || m.to_text().is_ok_and(|t| t.contains("connected"))
        {
            got_ok = true;
            break;
        }
    }
    assert!(got_ok, "the socket authenticated");

    let r = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::POST,
        "/tenants/bad/suspend",
        Some(json!({"reason": "abuse"})),
    )
    .await;
    assert_eq!(r.json()["status"], "suspended", "{}", r.text);
    let suspended_at = Instant::now();

    // The socket closes with 4003 `agent_suspended`.
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(Some(f)) = m {
                return Some((u16::from(f.code), f.reason.to_string()));
            }
        }
        None
    })
    .await
    .expect("socket closed within 2 s");
    assert_eq!(closed, Some((4003, "agent_suspended".to_owned())));
    assert!(
        suspended_at.elapsed() < Duration::from_millis(1500),
        "{:?}",
        suspended_at.elapsed()
    );

    let took = within(Duration::from_secs(1), || async {
        s.get(&bad, "/v1/agents/me").await.status == StatusCode::FORBIDDEN
    })
    .await;
    assert!(took < Duration::from_secs(1));
    s.get(&bad, "/v1/agents/me")
        .await
        .assert_error(403, "agent_suspended");
    s.get(&bad, "/v1/messages/pending")
        .await
        .assert_error(403, "agent_suspended");
    s.get(&bad, "/v1/agents")
        .await
        .assert_error(403, "agent_suspended");
    let m = Msg::new(&good.address, "s");
    s.route(&bad, m.flat(Some(&m.sign(&bad))))
        .await
        .assert_error(403, "agent_suspended");
    let m = Msg::new(&bad2.address, "s");
    s.route(&good, m.flat(Some(&m.sign(&good))))
        .await
        .assert_error(403, "recipient_suspended");
    register(&s, "bad", "newcomer", None, json!({}))
        .await
        .assert_error_field(403, "tenant_access_denied", "tenant");
    // A new socket is refused at auth.
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("connect");
    ws.send(Message::text(
        json!({"type": "auth", "token": bad2.api_key}).to_string(),
    ))
    .await
    .expect("auth");
    let mut code = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
        if let Message::Close(Some(f)) = m {
            code = Some(u16::from(f.code));
            break;
        }
    }
    assert_eq!(code, Some(4003));
    // Other tenants are untouched.
    s.get(&good, "/v1/agents/me").await.ok();

    // Resumed: everything works again, the held message is still there.
    let r = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::POST,
        "/tenants/bad/resume",
        None,
    )
    .await;
    assert_eq!(r.json()["status"], "active", "{}", r.text);
    within(Duration::from_secs(1), || async {
        s.get(&bad, "/v1/agents/me").await.status == StatusCode::OK
    })
    .await;
    assert_eq!(s.pending_ids(&bad).await.len(), 1);
    s.send_text(&good, &bad.address, "after").await;

    let r = admin(&s.http, &base, Some(BOOTSTRAP), Method::GET, "/audit", None).await;
    let text = r.ok().to_string();
    assert!(
        text.contains("tenant.suspend") && text.contains("tenant.resume") && text.contains("abuse")
    );
    s.stop().await;
}

/// `[[ingest.owners]]` is a seed: imported at start, then owned by the admin API (its key
/// revocable there); restarted on the same data, the revocation holds.
#[tokio::test]
async fn security_operator_configured_owner_is_a_seed() {
    const KEY: &str = "uk_seeded-owner-key-0123456789";
    let dir = tempfile::tempdir().expect("tempdir");
    let seeded = |c: &mut ampd::Config| {
        c.server.data_dir = dir.path().to_owned();
        c.ingest.owners.push(ingest::config::OwnerConfig {
            id: "usr_seed".into(),
            tenant: "seeded".into(),
            user_key: amp_runtime::config::Secret::new(KEY),
            agent_limit: 5,
            suspended: false,
        });
    };
    let (s, base) = start_admin(&seeded).await;
    let r = register(&s, "seeded", "one", Some(KEY), json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["owner_id"], "usr_seed");
    register(&s, "seeded", "two", None, json!({}))
        .await
        .assert_error(401, "unauthorized");
    let v = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::GET,
        "/tenants/seeded/owner-keys",
        None,
    )
    .await
    .ok();
    let id = v["owner_keys"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(v["owner_keys"][0]["agent_limit"], 5);
    admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::POST,
        &format!("/tenants/seeded/owner-keys/{id}/revoke"),
        None,
    )
    .await
    .ok();
    register(&s, "seeded", "three", Some(KEY), json!({}))
        .await
        .assert_error(401, "unauthorized");
    s.stop().await;

    // The same configuration again: the key is not re-imported.
    let (s, _) = start_admin(&seeded).await;
    register(&s, "seeded", "four", Some(KEY), json!({}))
        .await
        .assert_error(401, "unauthorized");
    s.stop().await;
}
