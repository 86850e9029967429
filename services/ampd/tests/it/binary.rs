//! The built `ampd` binary: flags, endpoints, signals, restarts, start-up failures.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How long start-up may take on a loaded CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The grace period the tests configure, and so the longest a clean exit may take.
const GRACE_SECS: u64 = 5;

fn ampd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ampd"));
    // Only what the test sets: no stray AMP__… or RUST_LOG from the caller.
    cmd.env_clear()
        .env("AMP__SERVER__SHUTDOWN_GRACE_SECS", GRACE_SECS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A running `ampd`, killed if dropped before [`Running::stop`].
struct Running {
    child: Child,
    addr: SocketAddr,
    stderr: JoinHandle<String>,
}

/// Collects a pipe's output in the background so the child never blocks on a full pipe.
fn collect(mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text).await;
        text
    })
}

impl Running {
    /// Starts `ampd` on a free port with `data_dir`, and waits until `/healthz` answers.
    async fn start(data_dir: &Path) -> Running {
        let mut child = ampd()
            .args([
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--data-dir",
            ])
            .arg(data_dir)
            .spawn()
            .expect("spawn ampd");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = collect(child.stderr.take().expect("stderr"));
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .expect("ampd prints its address in time")
            .expect("read stdout");
        let Some(first) = first else {
            let status = child.wait().await.expect("wait");
            panic!(
                "ampd exited ({status}) before listening: {}",
                stderr.await.expect("join")
            );
        };
        let addr: SocketAddr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .expect("address");
        // Keep draining stdout so later prints never block the child.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let running = Running {
            child,
            addr,
            stderr,
        };
        running.wait_healthy().await;
        running
    }

    async fn wait_healthy(&self) {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = reqwest::get(self.url("/healthz")).await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ampd never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(self.url(path)).await.expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Sends SIGTERM and waits for the exit (at most the grace period plus slack).
    async fn stop(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().expect("still running");
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(GRACE_SECS + 5), self.child.wait())
            .await
            .expect("ampd exits within the grace period")
            .expect("wait");
        (status, self.stderr.await.expect("join"))
    }
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
    let output = ampd().arg("--help").output().await.expect("run ampd");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--domain",
        "--public-url",
        "--data-dir",
        "--config",
        "--log-format",
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
    let ampd = Running::start(dir.path()).await;

    assert_eq!(ampd.get_json("/healthz").await["status"], "ok");
    assert_eq!(ampd.get_json("/readyz").await["status"], "ready");
    let (status, metrics) = ampd.get("/metrics").await;
    assert_eq!(status, 200, "{metrics}");

    let health = ampd.get_json("/v1/health").await;
    assert_eq!(health["provider"], "amp.test", "{health}");
    let info = ampd.get_json("/v1/info").await;
    assert!(
        info["public_key"]
            .as_str()
            .is_some_and(|k| k.contains("BEGIN PUBLIC KEY")),
        "{info}"
    );
    assert!(info["fingerprint"].is_string(), "{info}");

    // Unknown routes get the spec's JSON error body.
    let (status, body) = ampd.get("/no/such/route").await;
    assert_eq!(status, 404);
    assert!(body.contains("\"error\""), "{body}");

    let (status, logs) = ampd.stop().await;
    assert!(status.success(), "exit {status}; logs:\n{logs}");
    assert!(logs.contains("ampd listening"), "{logs}");
}

#[tokio::test]
async fn identity_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Running::start(dir.path()).await;
    let fingerprint = first.get_json("/v1/info").await["fingerprint"].clone();
    assert!(fingerprint.is_string(), "{fingerprint}");
    let (status, logs) = first.stop().await;
    assert!(status.success(), "{logs}");
    let pepper = std::fs::read_to_string(dir.path().join("key-pepper")).expect("pepper");

    let second = Running::start(dir.path()).await;
    assert_eq!(
        second.get_json("/v1/info").await["fingerprint"],
        fingerprint
    );
    let (status, logs) = second.stop().await;
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
        ampd()
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
        ampd()
            .env("AMP__STORE__MAX_BATCH", "lots")
            .arg("--data-dir")
            .arg(dir.path()),
    )
    .await;
    assert!(stderr.contains("AMP__STORE__MAX_BATCH"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let stderr = start_fails(
        ampd()
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
        ampd()
            .args(["--listen", &addr, "--data-dir"])
            .arg(dir.path()),
    )
    .await;
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}
