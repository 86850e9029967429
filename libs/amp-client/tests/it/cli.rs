//! The built `amp` binary against the in-process provider (and the WebSocket mock for
//! `amp tail`), each agent with its own `AMP_CONFIG_DIR`.

use std::path::Path;
use std::time::Duration;

use amp_proto::SecretKey;
use serde_json::Value;

use crate::common::{Ampd, ClientExt, DOMAIN, tenant};

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn json(&self) -> Value {
        assert!(self.ok, "failed: {}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

async fn amp(dir: &Path, args: &[&str]) -> Run {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_amp"))
            .args(args)
            .env("AMP_CONFIG_DIR", dir)
            .env_remove("AMP_PROVIDER")
            .env_remove("AMP_USER_KEY")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("amp finishes")
    .expect("amp runs");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).expect("meta").permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_register_send_inbox_ack() {
    let p = Ampd::start().await;
    let t = tenant("cli");
    let alice_dir = tempfile::tempdir().expect("tempdir");
    let bob_dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (alice_dir.path(), bob_dir.path());

    // Not initialised yet: a clear error, non-zero exit.
    let r = amp(
        a,
        &[
            "register",
            "--provider",
            p.url(),
            "--tenant",
            &t,
            "--name",
            "alice",
        ],
    )
    .await;
    assert!(!r.ok);
    assert!(r.stderr.contains("amp init"), "{}", r.stderr);

    for (dir, name) in [(a, "alice"), (b, "bob")] {
        let init = amp(dir, &["init", "--json"]).await.json();
        assert_eq!(init["created"], true);
        #[cfg(unix)]
        assert_eq!(mode(&dir.join("key.pem")), 0o600);
        let reg = amp(
            dir,
            &[
                "register",
                "--provider",
                p.url(),
                "--tenant",
                &t,
                "--name",
                name,
                "--json",
            ],
        )
        .await
        .json();
        assert_eq!(reg["address"], format!("{name}@{t}.{DOMAIN}"));
        #[cfg(unix)]
        assert_eq!(mode(&dir.join("identity.json")), 0o600);
    }
    // A second init keeps the key the registration was made with.
    let again = amp(a, &["init", "--json"]).await.json();
    assert_eq!(again["created"], false);

    let bob_addr = format!("bob@{t}.{DOMAIN}");
    // The provider is remembered from registration: no --provider from here on.
    let sent = amp(
        a,
        &[
            "send",
            &bob_addr,
            "status report",
            "all green",
            "--type",
            "request",
            "--context",
            r#"{"build":42,"ratio":1.0}"#,
            "--priority",
            "high",
            "--json",
        ],
    )
    .await
    .json();
    let id = sent["id"].as_str().expect("id").to_owned();

    let inbox = amp(b, &["inbox", "--json"]).await.json();
    let m = &inbox["messages"][0];
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["envelope"]["subject"], "status report");
    assert_eq!(m["payload"]["message"], "all green");
    assert_eq!(m["payload"]["type"], "request");
    assert!(
        inbox.to_string().contains(r#""ratio":1.0"#),
        "context bytes kept: {inbox}"
    );

    let human = amp(b, &["inbox"]).await;
    assert!(human.ok, "{}", human.stderr);
    assert!(
        human.stdout.contains(&id) && human.stdout.contains("signed"),
        "{}",
        human.stdout
    );

    let read = amp(b, &["read", &id, "--json"]).await.json();
    assert_eq!(read["read_receipt_sent"], true);
    let receipts = amp(a, &["receipts", "--json"]).await.json();
    assert_eq!(receipts["receipts"][0]["data"]["id"], id.as_str());

    let ack = amp(b, &["ack", &id, "--json"]).await.json();
    assert_eq!(ack["acknowledged"], true);
    let empty = amp(b, &["inbox", "--json"]).await.json();
    assert_eq!(empty["messages"].as_array().map(Vec::len), Some(0));

    // Provider errors: `error: <code>: <message>` on stderr, non-zero exit.
    let r = amp(a, &["send", &format!("nobody@{t}.{DOMAIN}"), "s", "m"]).await;
    assert!(!r.ok);
    assert!(r.stderr.starts_with("error: not_found: "), "{}", r.stderr);
    let r = amp(b, &["ack", "msg_1_abc"]).await;
    assert!(!r.ok);
    assert!(r.stderr.starts_with("error: not_found: "), "{}", r.stderr);
    let r = amp(a, &["send", &bob_addr, "s", "m", "--context", "{oops"]).await;
    assert!(!r.ok && r.stderr.contains("--context"), "{}", r.stderr);

    let info = amp(a, &["info", "--json"]).await.json();
    assert_eq!(info["info"]["provider"], DOMAIN);
    assert_eq!(info["agent"]["address"], format!("alice@{t}.{DOMAIN}"));
    let human = amp(a, &["info"]).await;
    assert!(
        human.ok && human.stdout.contains("healthy"),
        "{}",
        human.stdout
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_and_acks_then_stops_on_a_refusal() {
    let key = SecretKey::generate();
    let (url, mut events) = crate::ws::start_mock(key.public()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let me = crate::ws::identity(key, crate::ws::GOOD_TOKEN);
    me.save(
        &dir.path().join("identity.json"),
        &dir.path().join("key.pem"),
    )
    .expect("save");

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_amp"))
        .args(["tail", "--json", "--provider", &url])
        .env("AMP_CONFIG_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    // The replayed message is printed, then acked over the socket.
    let acked = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("ack in time");
    assert_eq!(acked, Some(format!("ack:{}", crate::ws::REPLAY_ID)));
    child.start_kill().expect("kill");
    let out = child.wait_with_output().await.expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first: Value = serde_json::from_str(stdout.lines().next().expect("a line")).expect("json");
    assert_eq!(first["type"], "message.new");
    assert_eq!(first["data"]["id"], crate::ws::REPLAY_ID);
    assert_eq!(first["data"]["replay"], true);

    // A refused key ends `tail` with the provider's error.
    let mut reg = me.registration().clone();
    reg.api_key = "amp_live_sk_wrong".into();
    amp_client::Identity::new(me.key().clone(), reg)
        .expect("id")
        .save(
            &dir.path().join("identity.json"),
            &dir.path().join("key.pem"),
        )
        .expect("save");
    let r = amp(dir.path(), &["tail", "--provider", &url]).await;
    assert!(!r.ok);
    assert!(
        r.stderr.starts_with("error: unauthorized: "),
        "{}",
        r.stderr
    );
}

/// `amp admin tenants notify-set/-remove/-test` manage the tenant's notification webhook;
/// `amp admin tenants delete --wait` deletes a tenant and waits for the purge; `amp admin
/// tenants deletion` shows it done; the tenant's agent is refused; a second delete fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_tenant_delete_with_amp_admin() {
    const TOKEN: &str = "amp_op_cli-test-bootstrap-token-0123456789abcdef";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let p = Ampd::start_with(|c| {
        c.ingest.admin.listen = Some(([127, 0, 0, 1], port).into());
        c.ingest.admin.bootstrap_token = Some(amp_runtime::config::Secret::new(TOKEN));
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let admin_url = format!("http://127.0.0.1:{port}");
    let t = tenant("del");
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "--admin-url", &admin_url, "--token", TOKEN];
        all.extend_from_slice(args);
        all.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let dir = dir.path().to_owned();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            amp(&dir, &refs).await
        }
    };
    let created = run(admin(&[
        "--json",
        "tenants",
        "create",
        &t,
        "--registration",
        "open",
    ]))
    .await
    .json();
    assert_eq!(created["status"], "active", "{created}");
    let agent = p
        .client()
        .register(Some(&t), "alice", &SecretKey::generate(), None)
        .await
        .expect("register");
    let listed = run(admin(&["tenants", "agents", &t])).await;
    assert!(listed.ok, "{}", listed.stderr);
    assert!(
        listed.stdout.starts_with("ADDRESS") && listed.stdout.contains(agent.address()),
        "{}",
        listed.stdout
    );
    let listed = run(admin(&["--json", "tenants", "agents", &t, "--limit", "5"]))
        .await
        .json();
    assert_eq!(listed["total"], 1, "{listed}");
    assert!(
        !listed.to_string().contains(agent.api_key()),
        "a listing shows no key: {listed}"
    );

    // The tenant's notification webhook: the secret printed once, apart from the table;
    // removed, a test event is refused.
    let set = run(admin(&[
        "tenants",
        "notify-set",
        &t,
        "--url",
        "https://hooks.example.com/amp",
    ]))
    .await;
    assert!(set.ok, "{}", set.stderr);
    assert!(
        set.stdout.starts_with("URL") && set.stdout.contains("https://hooks.example.com/amp"),
        "{}",
        set.stdout
    );
    assert!(set.stdout.contains("whsec_"), "{}", set.stdout);
    let again = run(admin(&[
        "--json",
        "tenants",
        "notify-set",
        &t,
        "--url",
        "https://hooks.example.com/amp2",
    ]))
    .await
    .json();
    assert!(again.get("secret").is_none(), "{again}");
    let shown = run(admin(&["--json", "tenants", "show", &t])).await.json();
    assert_eq!(
        shown["notify"]["url"], "https://hooks.example.com/amp2",
        "{shown}"
    );
    let refused = run(admin(&[
        "tenants",
        "notify-set",
        &t,
        "--url",
        "ftp://x.example",
    ]))
    .await;
    assert!(
        !refused.ok && refused.stderr.contains("invalid_field"),
        "{}",
        refused.stderr
    );
    let removed = run(admin(&["tenants", "notify-remove", &t])).await;
    assert!(removed.ok, "{}", removed.stderr);
    let tested = run(admin(&["tenants", "notify-test", &t])).await;
    assert!(
        !tested.ok && tested.stderr.contains("not_found"),
        "{}",
        tested.stderr
    );

    let done = run(admin(&["--json", "tenants", "delete", &t, "--wait"]))
        .await
        .json();
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["purged"]["agents"], 1, "{done}");
    let shown = run(admin(&["tenants", "deletion", &t])).await;
    assert!(shown.ok, "{}", shown.stderr);
    assert!(
        shown.stdout.contains("done") && shown.stdout.contains("agents=1"),
        "{}",
        shown.stdout
    );
    let err = p
        .client()
        .count(&agent)
        .await
        .expect_err("the deleted tenant's key is refused");
    assert_eq!(err.code(), "unauthorized");
    let again = run(admin(&["tenants", "delete", &t])).await;
    assert!(!again.ok);
    assert!(
        again.stderr.contains("not_found") || again.stderr.contains("no tenant"),
        "{}",
        again.stderr
    );
    p.stop().await;
}

/// `amp admin agents suspend` (spec-next 07) refuses the agent until `amp admin agents
/// resume`; the table names the agent and its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_amp_admin_agents_suspend_and_resume() {
    const TOKEN: &str = "amp_op_cli-test-bootstrap-token-0123456789abcdef";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let p = Ampd::start_with(|c| {
        c.ingest.admin.listen = Some(([127, 0, 0, 1], port).into());
        c.ingest.admin.bootstrap_token = Some(amp_runtime::config::Secret::new(TOKEN));
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let admin_url = format!("http://127.0.0.1:{port}");
    let t = tenant("susp");
    let agent = p
        .client()
        .register(Some(&t), "alice", &SecretKey::generate(), None)
        .await
        .expect("register");
    let args = |more: &[&str]| {
        let mut all = vec!["admin", "--admin-url", admin_url.as_str(), "--token", TOKEN];
        all.extend_from_slice(more);
        all.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        let dir = dir.path().to_owned();
        async move {
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            amp(&dir, &refs).await
        }
    };
    let shown = run(args(&[
        "agents", "suspend", &t, "alice", "--reason", "abuse", "--hours", "2",
    ]))
    .await;
    assert!(shown.ok, "{}", shown.stderr);
    assert!(
        shown.stdout.contains(agent.address()) && shown.stdout.contains("true"),
        "{}",
        shown.stdout
    );
    let err = p.client().count(&agent).await.expect_err("suspended");
    assert_eq!(err.code(), "agent_suspended");
    let resumed = run(args(&["--json", "agents", "resume", &t, "alice"]))
        .await
        .json();
    assert_eq!(resumed["suspended"], false, "{resumed}");
    p.client().count(&agent).await.expect("served again");
}
