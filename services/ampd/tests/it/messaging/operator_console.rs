//! Issue 17's web console against a whole `ampd`: the page and its security headers on the
//! admin listener (and not on the public one), the agents listing it shows, and the console
//! end to end in a real headless Chromium (`tests/console/e2e.mjs`, playwright-core): create
//! a tenant and suspend it by clicking, the effect checked through the public API. Every test
//! name starts with `operator_console`/`operator_tenant_agents`, so `cargo test --workspace
//! operator` runs them.
//!
//! The browser test needs `/usr/bin/chromium` (Debian's `chromium`), `node` and
//! `tests/console/node_modules` (`npm ci` there); `deploy/test.sh` sets them up. Without them
//! it says `BROWSER TEST SKIPPED` loudly, and with `AMP_REQUIRE_BROWSER=1` (CI) it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use amp_proto::SecretKey;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::Agent;
use super::operator::{BOOTSTRAP, admin, start_admin, tenant, token};

/// The console's page, script and style: served with the strict headers, to anyone (they
/// hold no data); not on the public listener.
#[tokio::test]
async fn operator_console_assets_with_strict_headers() {
    let (s, base) = start_admin(|_| {}).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for (path, kind, needle) in [
        ("/console/", "text/html", "<script src=\"app.js\""),
        ("/console/app.js", "text/javascript", "sessionStorage"),
        ("/console/app.css", "text/css", ".badge"),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{path}: no {name}: {:?}", r.headers()))
                .to_owned()
        };
        assert!(h("content-type").starts_with(kind), "{path}");
        let csp = h("content-security-policy");
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(h("x-frame-options"), "DENY");
        assert_eq!(h("x-content-type-options"), "nosniff");
        assert_eq!(h("referrer-policy"), "no-referrer");
        assert_eq!(h("cache-control"), "no-cache");
        let body = r.text().await.expect("body");
        assert!(body.contains(needle), "{path}");
    }
    // `/console` leads to the page; an unknown asset is the API's 404.
    let r = http
        .get(format!("{base}/console"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers()["location"], "/console/");
    let r = http
        .get(format!("{base}/console/secrets.json"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let v: Value = r.json().await.expect("spec error body");
    assert_eq!(v["error"], "not_found", "{v}");
    // The public listener has no console.
    let r = s.call(Method::GET, "/console/", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    s.stop().await;
}

/// `GET /admin/v1/tenants/{name}/agents`: paged by name, what an operator needs and no key;
/// scope `read`; spec errors for a bad name, limit or parameter, and an unknown tenant.
#[tokio::test]
async fn operator_tenant_agents_listing() {
    let (s, base) = start_admin(|_| {}).await;
    tenant(&s, &base, "crowd", "open").await;
    let mut addresses = Vec::new();
    for name in ["delta", "alpha", "charlie", "bravo", "echo"] {
        addresses.push(s.register("crowd", name).await.address);
    }
    // Another tenant's agents never show.
    s.register("other", "alpha").await;
    let (_, read) = token(&s, &base, "read").await;
    // With a token of the lowest scope: listing is reading.
    let get =
        async |path: String| admin(&s.http, &base, Some(&read), Method::GET, &path, None).await;

    let v = get("/tenants/crowd/agents?limit=2".into()).await.ok();
    assert_eq!(v["tenant"], "crowd");
    assert_eq!(v["total"], 5, "{v}");
    let names: Vec<_> = v["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(names, ["alpha", "bravo"]);
    let a = &v["agents"][0];
    assert_eq!(a["address"], addresses[1].as_str(), "{a}");
    assert_eq!(a["status"], "active", "{a}");
    assert!(a["created_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    // Only these members (the optional ones omitted when unset, spec-next 04): nothing
    // secret, no key or hash.
    let keys: Vec<_> = a.as_object().expect("object").keys().cloned().collect();
    let allowed = [
        "address",
        "alias",
        "created_at",
        "last_seen_at",
        "name",
        "owner_id",
        "status",
    ];
    assert!(keys.iter().all(|k| allowed.contains(&k.as_str())), "{a}");
    for k in ["address", "created_at", "name", "status"] {
        assert!(keys.iter().any(|x| x == k), "{k} missing: {a}");
    }
    let cursor = v["next_cursor"].as_str().expect("cursor").to_owned();
    let v = get(format!("/tenants/crowd/agents?after={cursor}&limit=10"))
        .await
        .ok();
    let names: Vec<_> = v["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(names, ["charlie", "delta", "echo"]);
    assert_eq!(v["next_cursor"], Value::Null, "{v}");

    // A tenant of open registration that has agents and no record is listed too.
    let v = get("/tenants/other/agents".into()).await.ok();
    assert_eq!(v["total"], 1, "{v}");
    // A tenant that has a record and no agents: an empty page.
    tenant(&s, &base, "quiet", "owner_key").await;
    let v = get("/tenants/quiet/agents".into()).await.ok();
    assert_eq!(v["agents"], json!([]), "{v}");

    get("/tenants/nobody/agents".into())
        .await
        .assert_error(404, "not_found");
    get("/tenants/Bad_Name!/agents".into())
        .await
        .assert_error_field(400, "invalid_field", "name");
    get("/tenants/crowd/agents?limit=0".into())
        .await
        .assert_error_field(400, "invalid_field", "limit");
    get("/tenants/crowd/agents?limit=501".into())
        .await
        .assert_error_field(400, "invalid_field", "limit");
    let r = get("/tenants/crowd/agents?colour=red".into()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    admin(
        &s.http,
        &base,
        None,
        Method::GET,
        "/tenants/crowd/agents",
        None,
    )
    .await
    .assert_error(401, "unauthorized");
    admin(
        &s.http,
        &base,
        Some("amp_op_unknown"),
        Method::GET,
        "/tenants/crowd/agents",
        None,
    )
    .await
    .assert_error(401, "unauthorized");
    // Deregistered agents leave the listing.
    let gone = s.register("crowd", "foxtrot").await;
    s.delete(&gone, "/v1/agents/me").await.ok();
    let v = get("/tenants/crowd/agents".into()).await.ok();
    assert_eq!(v["total"], 5, "{v}");
    s.stop().await;
}

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Why the browser test cannot run here, if it cannot.
fn browser_missing(chromium: &Path, console_dir: &Path) -> Option<String> {
    if !chromium.is_file() {
        return Some(format!(
            "no {} (apt-get install chromium)",
            chromium.display()
        ));
    }
    if !console_dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return Some(format!(
            "no playwright-core in {}/node_modules (npm ci there)",
            console_dir.display()
        ));
    }
    match std::process::Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("no node on PATH".to_owned()),
    }
}

/// The console in a real headless Chromium: sign in, create a tenant through the form, issue
/// an owner key; an agent registered with that key through the public API; suspend the
/// tenant by clicking and see the agent refused with `agent_suspended`; resume by clicking
/// and see it served again; the audit log shows it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_console_in_a_headless_browser() {
    let chromium = std::env::var_os("AMP_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let console_dir = repo().join("tests/console");
    if let Some(why) = browser_missing(&chromium, &console_dir) {
        assert!(
            std::env::var("AMP_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "AMP_REQUIRE_BROWSER=1 and the browser test cannot run: {why}"
        );
        eprintln!("BROWSER TEST SKIPPED (operator_console_in_a_headless_browser): {why}");
        return;
    }

    let (s, base) = start_admin(|_| {}).await;
    // Some tenants beside the one the browser creates, so the list has something to show.
    tenant(&s, &base, "acme", "open").await;
    let alice = s.register("acme", "alice").await;
    s.register("acme", "bob").await;
    tenant(&s, &base, "globex", "owner_key").await;
    admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::POST,
        "/tenants/globex/suspend",
        Some(json!({"reason": "unpaid invoice"})),
    )
    .await
    .ok();
    tenant(&s, &base, "initech", "invite").await;
    let tenant_name = "crabworks".to_owned();
    // Chromium's profile and the screenshots in directories removed when the test ends (the
    // screenshots go to $AMP_CONSOLE_SCREENSHOTS instead when set: docs/console).
    let scratch = tempfile::tempdir().expect("tempdir");
    let profile = scratch.path().join("chromium-profile");
    std::fs::create_dir(&profile).expect("profile dir");
    let shots = std::env::var_os("AMP_CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| scratch.path().join("screenshots"));
    let mut child = tokio::process::Command::new("node")
        .arg(console_dir.join("e2e.mjs"))
        .args([base.as_str(), BOOTSTRAP, s.url(), tenant_name.as_str()])
        .current_dir(&console_dir)
        .env("AMP_CHROMIUM", &chromium)
        .env("AMP_CHROMIUM_PROFILE", &profile)
        .env("AMP_CONSOLE_SCREENSHOTS", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // The script's next event; its other output is passed through.
    let mut next_event = async || -> Value {
        let deadline = Duration::from_secs(90);
        tokio::time::timeout(deadline, async {
            loop {
                let line = out
                    .next_line()
                    .await
                    .expect("read the script's output")
                    .expect("the script ended before its next event (see its output above)");
                if let Some(ev) = line.strip_prefix("E2E ") {
                    return serde_json::from_str::<Value>(ev).expect("event JSON");
                }
                println!("e2e: {line}");
            }
        })
        .await
        .expect("the script's next event within 90 s")
    };

    // 1. The tenant was created through the form and an owner key issued by clicking.
    let ev = next_event().await;
    assert_eq!(ev["event"], "owner_key", "{ev}");
    let key = ev["key"].as_str().expect("key").to_owned();
    let t = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::GET,
        &format!("/tenants/{tenant_name}"),
        None,
    )
    .await
    .ok();
    assert_eq!(t["status"], "active", "{t}");
    assert_eq!(t["registration"], "owner_key", "{t}");
    // Registration into it needs that key: refused without, accepted with.
    let sk = SecretKey::generate();
    let body = json!({
        "tenant": tenant_name,
        "name": "clicker",
        "public_key": sk.public().to_pem(),
        "key_algorithm": "Ed25519",
    })
    .to_string();
    s.call(Method::POST, "/v1/register", None, Some(body.clone()))
        .await
        .assert_error(401, "unauthorized");
    let r = s
        .call(Method::POST, "/v1/register", Some(&key), Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    let agent = Agent {
        address: v["address"].as_str().expect("address").to_owned(),
        api_key: v["api_key"].as_str().expect("api_key").to_owned(),
        key: sk,
    };
    s.get(&agent, "/v1/agents/me").await.ok();
    send(
        &mut stdin,
        json!({
            "agent": agent.address,
            "other": { "tenant": "acme", "agent": alice.address },
        }),
    )
    .await;

    // 2. Suspended by clicking: the agent is refused on the public API within a second.
    let ev = next_event().await;
    assert_eq!(ev["event"], "suspended", "{ev}");
    let started = Instant::now();
    loop {
        let r = s.get(&agent, "/v1/agents/me").await;
        if r.status == StatusCode::FORBIDDEN {
            r.assert_error(403, "agent_suspended");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still served: {} {}",
            r.status,
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.get(&agent, "/v1/messages/pending")
        .await
        .assert_error(403, "agent_suspended");
    let t = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::GET,
        &format!("/tenants/{tenant_name}"),
        None,
    )
    .await
    .ok();
    assert_eq!(t["status"], "suspended", "{t}");
    assert_eq!(t["suspended_reason"], "e2e: abuse report", "{t}");
    send(&mut stdin, json!({ "checked": true })).await;

    // 3. Resumed by clicking; the script checked the list and the audit log.
    let ev = next_event().await;
    assert_eq!(ev["event"], "resumed", "{ev}");
    assert_eq!(ev["screenshots"], shots.to_string_lossy().as_ref(), "{ev}");
    for page in ["tenants", "tenant", "audit", "usage"] {
        let png = std::fs::read(shots.join(format!("{page}.png"))).expect("screenshot");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the script exits")
        .expect("wait");
    assert!(status.success(), "e2e.mjs failed: {status}");
    s.get(&agent, "/v1/agents/me").await.ok();
    // What the console did is the audit log's, under the bootstrap token.
    let log = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::GET,
        "/audit?limit=500",
        None,
    )
    .await
    .ok();
    let actions: Vec<_> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["target"] == tenant_name.as_str())
        .map(|e| e["action"].as_str().expect("action").to_owned())
        .collect();
    for a in [
        "tenant.create",
        "owner_key.issue",
        "tenant.suspend",
        "tenant.resume",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
    s.stop().await;
}

/// One line of JSON to the script's stdin.
async fn send(stdin: &mut tokio::process::ChildStdin, v: Value) {
    stdin
        .write_all(format!("{v}\n").as_bytes())
        .await
        .expect("write to the script");
    stdin.flush().await.expect("flush");
}
