//! The built `ampd` binary: flags, endpoints, signals, restarts, start-up failures.

use std::path::Path;
use std::time::Duration;

use amp_testkit::ampd::{AmpdProcess, ampd_command};
use serde_json::Value;
use tokio::process::Command;

/// How long start-up may take on a loaded CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `ampd` on a free port with `data_dir` and JSON logs, and waits until it is ready.
async fn start(data_dir: &Path) -> AmpdProcess {
    AmpdProcess::start_in(data_dir, &[], &[]).await
}

/// `GET path`: the status and the body.
async fn get(ampd: &AmpdProcess, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("{}{path}", ampd.url()))
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// `GET path`, expecting 200 and JSON.
async fn get_json(ampd: &AmpdProcess, path: &str) -> Value {
    let (status, body) = get(ampd, path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Runs `ampd` expecting it to fail at start; returns its stderr.
async fn start_fails(cmd: &mut Command) -> String {
    let output = tokio::time::timeout(START_TIMEOUT, cmd.output())
        .await
        .expect("ampd exits in time")
        .expect("run ampd");
    assert!(
        !output.status.success(),
        "ampd should have failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn help_explains_every_flag() {
    let output = ampd_command()
        .arg("--help")
        .output()
        .await
        .expect("run ampd");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--domain",
        "--public-url",
        "--data-dir",
        "--config",
        "--log-format",
        "--migrate-store",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    for source in ["server.listen", "AMP__SERVER__LISTEN", "AMP__LOG__FORMAT"] {
        assert!(help.contains(source), "{source} missing from:\n{help}");
    }
}

#[tokio::test]
async fn serves_api_and_ops_endpoints_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ampd = start(dir.path()).await;

    assert_eq!(get_json(&ampd, "/healthz").await["status"], "ok");
    assert_eq!(get_json(&ampd, "/readyz").await["status"], "ready");
    let (status, metrics) = get(&ampd, "/metrics").await;
    assert_eq!(status, 200, "{metrics}");

    let health = get_json(&ampd, "/v1/health").await;
    assert_eq!(health["provider"], "amp.test", "{health}");
    let info = get_json(&ampd, "/v1/info").await;
    assert!(
        info["public_key"]
            .as_str()
            .is_some_and(|k| k.contains("BEGIN PUBLIC KEY")),
        "{info}"
    );
    assert!(info["fingerprint"].is_string(), "{info}");

    // Unknown routes get the spec's JSON error body.
    let (status, body) = get(&ampd, "/no/such/route").await;
    assert_eq!(status, 404);
    assert!(body.contains("\"error\""), "{body}");

    let (status, logs) = ampd.terminate().await;
    assert!(status.success(), "exit {status}; logs:\n{logs}");
    assert!(logs.contains("ampd listening"), "{logs}");
}

#[tokio::test]
async fn identity_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = start(dir.path()).await;
    let fingerprint = get_json(&first, "/v1/info").await["fingerprint"].clone();
    assert!(fingerprint.is_string(), "{fingerprint}");
    let (status, logs) = first.terminate().await;
    assert!(status.success(), "{logs}");
    let pepper = std::fs::read_to_string(dir.path().join("key-pepper")).expect("pepper");

    let second = start(dir.path()).await;
    assert_eq!(
        get_json(&second, "/v1/info").await["fingerprint"],
        fingerprint
    );
    let (status, logs) = second.terminate().await;
    assert!(status.success(), "{logs}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("key-pepper")).expect("pepper"),
        pepper
    );
}

#[tokio::test]
async fn corrupt_key_file_stops_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("provider-key.pem");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\ngarbage\n").expect("write");
    let stderr = start_fails(
        ampd_command()
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path()),
    )
    .await;
    assert!(
        stderr.contains("provider key file") && stderr.contains("provider-key.pem"),
        "{stderr}"
    );
    // Never silently replaced.
    assert_eq!(
        std::fs::read_to_string(&key).expect("read"),
        "-----BEGIN PRIVATE KEY-----\ngarbage\n"
    );
}

#[tokio::test]
async fn bad_config_and_busy_port_fail_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stderr = start_fails(
        ampd_command()
            .env("AMP__STORE__MAX_BATCH", "lots")
            .arg("--data-dir")
            .arg(dir.path()),
    )
    .await;
    assert!(stderr.contains("AMP__STORE__MAX_BATCH"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let stderr = start_fails(
        ampd_command()
            .args([
                "--listen",
                "127.0.0.1:0",
                "--domain",
                "localhost",
                "--data-dir",
            ])
            .arg(dir.path()),
    )
    .await;
    assert!(stderr.contains("server.domain"), "{stderr}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let stderr = start_fails(
        ampd_command()
            .args(["--listen", &addr, "--data-dir"])
            .arg(dir.path()),
    )
    .await;
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}
