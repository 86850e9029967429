//! `amp load` against the in-process provider: a bounded route run, agents reused by the
//! next run, and a pickup that drains what the first one sent.

use std::time::Duration;

use serde_json::Value;

use crate::common::Ampd;

async fn load(args: &[&str]) -> (bool, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_amp"))
            .arg("load")
            .args(args)
            .env_remove("AMP_PROVIDER")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("amp load finishes")
    .expect("amp load runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("json file")).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_count_then_pickup_with_reused_agents() {
    let p = Ampd::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = dir.path().join("agents.json");
    let summary = dir.path().join("route.json");
    let (ok, stdout, stderr) = load(&[
        "--provider",
        p.url(),
        "--agents",
        "4",
        "--tenants",
        "2",
        "--reuse",
        agents.to_str().expect("utf-8"),
        "--mix",
        "route",
        "--concurrency",
        "8",
        "--count",
        "50",
        "--json",
        summary.to_str().expect("utf-8"),
    ])
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("route"), "{stdout}");
    let r = read_json(&summary);
    assert_eq!(r["mix"], "route");
    assert_eq!(r["agents"], 4);
    assert_eq!(r["tenants"], 2);
    assert_eq!(r["ops"]["route"]["ok"], 50, "{r}");
    assert_eq!(r["ops"]["route"]["errors"], 0, "{r}");
    assert!(
        r["ops"]["route"]["latency"]["p99_ms"].as_f64().is_some(),
        "{r}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&agents)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let saved: Value = read_json(&agents);
    let first = saved["agents"][0]["registration"]["address"].clone();

    // The same agents pick up and ack the 50 messages (pages of 10 to see several pages).
    let summary = dir.path().join("pickup.json");
    let (ok, stdout, stderr) = load(&[
        "--provider",
        p.url(),
        "--agents",
        "4",
        "--reuse",
        agents.to_str().expect("utf-8"),
        "--mix",
        "pickup",
        "--page",
        "10",
        "--duration",
        "20",
        "--json",
        summary.to_str().expect("utf-8"),
    ])
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    let r = read_json(&summary);
    assert_eq!(r["ops"]["page"]["errors"], 0, "{r}");
    assert!(
        r["rates"]["acked_messages_per_second"].as_f64().is_some(),
        "{r}"
    );
    let acked = r["rates"]["acked_messages_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        * r["elapsed_seconds"].as_f64().unwrap_or(0.0);
    assert!((acked - 50.0).abs() < 0.5, "{r}");
    // Reused, not registered again.
    assert_eq!(
        read_json(&agents)["agents"][0]["registration"]["address"],
        first
    );
    assert_eq!(
        read_json(&agents)["agents"].as_array().map(Vec::len),
        Some(4)
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_sockets_receive_pushes() {
    let p = Ampd::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = dir.path().join("ws.json");
    let (ok, stdout, stderr) = load(&[
        "--provider",
        p.url(),
        "--agents",
        "3",
        "--mix",
        "ws",
        "--sockets",
        "6",
        "--per-source",
        "4",
        "--count",
        "20",
        "--concurrency",
        "2",
        "--json",
        summary.to_str().expect("utf-8"),
    ])
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    let r = read_json(&summary);
    assert_eq!(r["sockets"]["opened"], 6, "{r}");
    assert_eq!(r["sockets"]["held"], 6, "{r}");
    assert_eq!(
        r["sockets"]["source_addresses"].as_array().map(Vec::len),
        Some(2),
        "{r}"
    );
    assert_eq!(r["ops"]["route"]["ok"], 20, "{r}");
    assert_eq!(r["ops"]["push"]["ok"], 20, "{r}");
    assert_eq!(r["sockets"]["pushes_missing"], 0, "{r}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_requests_need_no_agents() {
    let p = Ampd::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = dir.path().join("health.json");
    let agents = dir.path().join("agents.json");
    let (ok, stdout, stderr) = load(&[
        "--provider",
        p.url(),
        "--reuse",
        agents.to_str().expect("utf-8"),
        "--mix",
        "health",
        "--concurrency",
        "4",
        "--count",
        "40",
        "--json",
        summary.to_str().expect("utf-8"),
    ])
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    let r = read_json(&summary);
    assert_eq!(r["primary"], "health", "{r}");
    assert_eq!(r["ops"]["health"]["ok"], 40, "{r}");
    assert_eq!(r["ops"]["health"]["errors"], 0, "{r}");
    assert_eq!(r["agents"], 0, "{r}");
    assert!(
        !agents.exists(),
        "no agent is registered for health requests"
    );
    p.stop().await;
}

#[tokio::test]
async fn remote_providers_are_refused() {
    let (ok, _, stderr) = load(&[
        "--provider",
        "http://192.0.2.1:8080",
        "--mix",
        "route",
        "--count",
        "1",
    ])
    .await;
    assert!(!ok);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}
