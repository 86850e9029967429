//! The OpenAPI documents: what ampd serves at `GET /v1/openapi.json` is the committed
//! `docs/openapi.json`, and every public route of the router is in it (and nothing else); the
//! same for the admin API's (`GET /admin/v1/openapi.json` on the admin listener,
//! `docs/admin-openapi.json`), whose documented scopes are also the enforced ones.
//!
//! Regenerate the committed copy after changing an endpoint:
//! `AMP_UPDATE_OPENAPI=1 cargo test -p ampd --test it openapi`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use amp_testkit::ampd::Ampd;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// ampd with every optional public surface on (attachments, federation).
async fn start() -> Ampd {
    Ampd::start_with(|c| {
        c.ingest.attachments.enabled = true;
        c.federation.enabled = true;
    })
    .await
}

#[tokio::test]
async fn openapi_document_served_is_the_committed_copy() {
    let s = start().await;
    let url = s.url().to_owned();
    let served = reqwest::get(format!("{url}/v1/openapi.json"))
        .await
        .expect("openapi.json");
    assert_eq!(served.status(), 200);
    assert_eq!(
        served.headers()["content-type"].to_str().ok(),
        Some("application/json")
    );
    let served = served.text().await.expect("body");
    let alias = reqwest::get(format!("{url}/api/v1/openapi.json"))
        .await
        .expect("alias")
        .text()
        .await
        .expect("body");
    s.stop().await;
    assert_eq!(served, alias, "/api/v1/openapi.json differs from /v1's");
    let doc: serde_json::Value = serde_json::from_str(&served).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(served, ingest::openapi::document_json());

    let committed_path = workspace().join("docs/openapi.json");
    if std::env::var_os("AMP_UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed_path, &served).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == served,
        "docs/openapi.json differs from the document ampd serves; regenerate it with \
         `AMP_UPDATE_OPENAPI=1 cargo test -p ampd --test it openapi` and commit it"
    );
}

/// The `.route("…"` paths of a router source file.
fn routed_paths(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(workspace().join(file)).expect("router source");
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        let Some(open) = rest.find('"') else { break };
        let after = &rest[open + 1..];
        let Some(close) = after.find('"') else { break };
        out.push(after[..close].to_owned());
        rest = &after[close..];
    }
    assert!(!out.is_empty(), "no routes found in {file}");
    out
}

/// Every public path the composed router serves, from the routers' sources: the ingest
/// routes under `/v1` (the root ones as they are), the delivery and federation ones as
/// written (their `/api/v1` copies are aliases, checked below).
fn public_paths() -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let ingest = [
        "services/ingest/src/routes/mod.rs",
        "services/ingest/src/admin/quarantine.rs",
    ];
    for p in ingest.iter().flat_map(|f| routed_paths(f)) {
        if p.starts_with("/.well-known") {
            paths.insert(p);
        } else {
            paths.insert(format!("/v1{p}"));
        }
    }
    for file in [
        "services/delivery/src/lib.rs",
        "services/federation/src/lib.rs",
    ] {
        for p in routed_paths(file) {
            if p.starts_with("/v1/") {
                paths.insert(p);
            }
        }
    }
    paths
}

fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in template.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("x1");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// The methods `path` answers on (anything but 405), unauthenticated.
async fn served_methods(client: &reqwest::Client, url: &str, path: &str) -> BTreeMap<String, u16> {
    let mut out = BTreeMap::new();
    for m in METHODS {
        let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).expect("method");
        let status = client
            .request(method, format!("{url}{}", concrete(path)))
            .send()
            .await
            .expect("request")
            .status()
            .as_u16();
        if status != 405 {
            out.insert(m.to_owned(), status);
        }
    }
    out
}

#[tokio::test]
async fn openapi_document_has_every_public_route_and_no_other() {
    let doc = ingest::openapi::document();
    let documented: BTreeMap<String, BTreeSet<String>> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(p, item)| {
            let methods = METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (*m).to_owned())
                .collect();
            (p.clone(), methods)
        })
        .collect();

    let s = start().await;
    let url = s.url().to_owned();
    let client = reqwest::Client::new();
    let mut missing = Vec::new();
    let routed = public_paths();
    for path in &routed {
        let served = served_methods(&client, &url, path).await;
        // A routed path answers 405 to the methods it lacks; an unrouted one 404 to all.
        assert!(
            served.len() < METHODS.len() || served.values().any(|s| *s != 404),
            "{path} is not served at all (every method 404): is its feature on in this test?"
        );
        let in_doc = documented.get(path).cloned().unwrap_or_default();
        for m in served.keys() {
            if !in_doc.contains(m) {
                missing.push(format!("{} {path}", m.to_uppercase()));
            }
        }
        // The `/api/v1` alias answers as `/v1` does.
        if let Some(rest) = path.strip_prefix("/v1/") {
            let alias = served_methods(&client, &url, &format!("/api/v1/{rest}")).await;
            assert_eq!(alias, served, "/api/v1/{rest} does not answer as {path}");
        }
    }
    // And nothing documented that the router does not serve (an authenticated operation
    // answers 401 without a key; any other is routed when it does not answer 405).
    let mut extra = Vec::new();
    for (path, methods) in &documented {
        if !routed.contains(path) {
            extra.push(path.clone());
            continue;
        }
        let served = served_methods(&client, &url, path).await;
        for m in methods {
            let secured = doc["paths"][path][m]["security"].is_array();
            match served.get(m) {
                None => extra.push(format!("{} {path}", m.to_uppercase())),
                Some(s) if secured && *s != 401 => extra.push(format!(
                    "{} {path} (answers {s} without a key)",
                    m.to_uppercase()
                )),
                Some(_) => {}
            }
        }
    }
    s.stop().await;
    assert!(
        missing.is_empty(),
        "routes served but not in the OpenAPI document (add #[utoipa::path] to the handler and \
         its name to ApiDoc's paths in services/ingest/src/routes/openapi.rs): {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented but not served as documented: {extra:?}"
    );
}

// The admin API's document (`GET /admin/v1/openapi.json` on the admin listener).

/// The bootstrap token of the admin tests (scope `full`).
const BOOTSTRAP: &str = "amp_op_bootstrap-token-for-the-openapi-tests-0123456789";
const SCOPES: [&str; 3] = ["read", "tenant_admin", "full"];

/// ampd with its admin listener and the bootstrap token; returns it and the admin
/// listener's URL once the admin document answers there.
async fn start_admin() -> (Ampd, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let s = Ampd::start_with(|c| {
        c.ingest.admin.listen = Some(([127, 0, 0, 1], port).into());
        c.ingest.admin.bootstrap_token = Some(amp_runtime::config::Secret::new(BOOTSTRAP));
    })
    .await;
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/admin/v1/openapi.json"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (s, url)
}

#[tokio::test]
async fn openapi_admin_document_served_is_the_committed_copy() {
    let (s, url) = start_admin().await;
    // No token: the document holds no data.
    let served = reqwest::get(format!("{url}/admin/v1/openapi.json"))
        .await
        .expect("openapi.json");
    s.stop().await;
    assert_eq!(served.status(), 200);
    assert_eq!(
        served.headers()["content-type"].to_str().ok(),
        Some("application/json")
    );
    let served = served.text().await.expect("body");
    let doc: serde_json::Value = serde_json::from_str(&served).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(served, ingest::admin_openapi::document_json());

    let committed_path = workspace().join("docs/admin-openapi.json");
    if std::env::var_os("AMP_UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed_path, &served).expect("write docs/admin-openapi.json");
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == served,
        "docs/admin-openapi.json differs from the document ampd's admin listener serves; \
         regenerate it with `AMP_UPDATE_OPENAPI=1 cargo test -p ampd --test it openapi` and \
         commit it"
    );
}

/// Every path the admin router serves under `/admin/v1`, from the sources of
/// `services/ingest/src/admin/` (all but the console's page, which is outside `/admin/v1`).
fn admin_paths() -> BTreeSet<String> {
    let dir = workspace().join("services/ingest/src/admin");
    let mut paths = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("admin sources") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.ends_with(".rs") || name == "console.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source");
        if !text.contains(".route(") {
            continue;
        }
        let file = format!("services/ingest/src/admin/{name}");
        for p in routed_paths(&file) {
            paths.insert(format!("/admin/v1{p}"));
        }
    }
    assert!(paths.len() > 20, "too few admin routes found: {paths:?}");
    paths
}

fn documented_methods(doc: &serde_json::Value) -> BTreeMap<String, BTreeSet<String>> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(p, item)| {
            let methods = METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (*m).to_owned())
                .collect();
            (p.clone(), methods)
        })
        .collect()
}

#[tokio::test]
async fn openapi_admin_document_has_every_admin_route_and_no_other() {
    let doc = ingest::admin_openapi::document();
    let documented = documented_methods(&doc);
    let (s, url) = start_admin().await;
    let client = reqwest::Client::new();
    let routed = admin_paths();
    let mut missing = Vec::new();
    for path in &routed {
        let served = served_methods(&client, &url, path).await;
        assert!(
            served.len() < METHODS.len() || served.values().any(|s| *s != 404),
            "{path} is not served at all (every method 404)"
        );
        let in_doc = documented.get(path).cloned().unwrap_or_default();
        for m in served.keys() {
            if !in_doc.contains(m) {
                missing.push(format!("{} {path}", m.to_uppercase()));
            }
        }
    }
    // Nothing documented that is not served as documented: without a token, an operation
    // with a security requirement answers 401, one without (this document) 200.
    let mut extra = Vec::new();
    for (path, methods) in &documented {
        if !routed.contains(path) {
            extra.push(path.clone());
            continue;
        }
        let served = served_methods(&client, &url, path).await;
        for m in methods {
            let secured = doc["paths"][path][m]["security"].is_array();
            match served.get(m) {
                None => extra.push(format!("{} {path}", m.to_uppercase())),
                Some(s) if secured && *s != 401 => extra.push(format!(
                    "{} {path} (answers {s} without a token)",
                    m.to_uppercase()
                )),
                Some(s) if !secured && *s != 200 => extra.push(format!(
                    "{} {path} (no security requirement, but answers {s} without a token)",
                    m.to_uppercase()
                )),
                Some(_) => {}
            }
        }
    }
    s.stop().await;
    assert!(
        missing.is_empty(),
        "admin routes served but not in the admin OpenAPI document (add #[utoipa::path] to the \
         handler and its name to AdminApiDoc's paths in services/ingest/src/admin/openapi.rs): \
         {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented but not served as documented: {extra:?}"
    );
}

/// Each operation's documented scope is the one the server enforces: a token of the scope
/// below is `403 forbidden`, a token of the scope itself gets past the check.
#[tokio::test]
async fn openapi_admin_scopes_are_the_ones_enforced() {
    let doc = ingest::admin_openapi::document();
    let (s, url) = start_admin().await;
    let client = reqwest::Client::new();
    let mut tokens = BTreeMap::new();
    tokens.insert("full", BOOTSTRAP.to_owned());
    for scope in ["read", "tenant_admin"] {
        let r = client
            .post(format!("{url}/admin/v1/tokens"))
            .bearer_auth(BOOTSTRAP)
            .json(&serde_json::json!({"name": format!("{scope} openapi"), "scope": scope}))
            .send()
            .await
            .expect("create token");
        assert_eq!(r.status(), 201);
        let v: serde_json::Value = r.json().await.expect("token");
        tokens.insert(scope, v["token"].as_str().expect("token").to_owned());
    }
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (path, methods) in documented_methods(&doc) {
        for m in methods {
            let op = &doc["paths"][&path][&m];
            let Some(security) = op["security"].as_array() else {
                continue;
            };
            let scopes: Vec<&str> = security
                .iter()
                .filter_map(|r| r["operator_token"].as_array())
                .flatten()
                .filter_map(|s| s.as_str())
                .collect();
            let [scope] = scopes[..] else {
                wrong.push(format!("{m} {path}: not exactly one scope: {scopes:?}"));
                continue;
            };
            let Some(rank) = SCOPES.iter().position(|s| *s == scope) else {
                wrong.push(format!("{m} {path}: unknown scope {scope}"));
                continue;
            };
            if !op["description"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("scope `{scope}`")))
            {
                wrong.push(format!("{m} {path}: the description does not name {scope}"));
            }
            let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).expect("method");
            for (i, s) in SCOPES.iter().enumerate() {
                let status = client
                    .request(method.clone(), format!("{url}{}", concrete(&path)))
                    .bearer_auth(&tokens[s])
                    .send()
                    .await
                    .expect("request")
                    .status()
                    .as_u16();
                let refused = status == 403 || status == 401;
                if i < rank && status != 403 {
                    wrong.push(format!("{m} {path} with a {s} token: {status}, not 403"));
                }
                if i >= rank && refused {
                    wrong.push(format!("{m} {path} with a {s} token: refused ({status})"));
                }
            }
            checked += 1;
        }
    }
    s.stop().await;
    assert!(checked > 20, "only {checked} operations checked");
    assert!(
        wrong.is_empty(),
        "documented scopes differ from the enforced ones: {wrong:#?}"
    );
}
