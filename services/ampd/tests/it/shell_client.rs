//! The public shell client (the Claude Code plugin's scripts) against the built `ampd`: the
//! exact HTTP calls, bodies and signing steps of SPEC-CHECKLIST Part 3, replayed by
//! `tests/shell/client-flow.sh` with curl, openssl and jq.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long start-up may take on a loaded CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The whole script: a few dozen curl and openssl calls.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// The tools the script needs. A missing one is a failure, never a skip.
const TOOLS: [&str; 4] = ["bash", "curl", "openssl", "jq"];

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/shell/client-flow.sh")
}

fn require_tools() {
    for tool in TOOLS {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "`{tool}` is not installed, but the shell-client test needs it \
             (install curl, jq and openssl, e.g. `apt-get install -y curl jq openssl`)"
        );
    }
}

/// Starts `ampd` on a free port; returns the child and its base URL.
async fn start_ampd(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ampd"))
        .env_clear()
        .env("AMP__SERVER__SHUTDOWN_GRACE_SECS", "5")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--domain",
            "example.test",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ampd");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(START_TIMEOUT, lines.next_line())
        .await
        .expect("ampd prints its address in time")
        .expect("read stdout")
        .expect("ampd exited before listening");
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let base = format!("http://{addr}");
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ampd never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}

/// SIGTERM, then wait for the exit.
async fn stop(mut child: Child) {
    let pid = child.id().expect("still running");
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("ampd exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "ampd exit {status}");
}

#[tokio::test]
async fn plugin_flow_against_ampd() {
    require_tools();
    let data = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let (ampd, base) = start_ampd(data.path()).await;

    let mut run = Command::new("bash")
        .arg(script())
        .arg(&base)
        .arg(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run bash");
    let (mut out, mut err) = (String::new(), String::new());
    let mut stdout = run.stdout.take().expect("stdout");
    let mut stderr = run.stderr.take().expect("stderr");
    let status = tokio::time::timeout(SCRIPT_TIMEOUT, async {
        let (a, b) = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        a.expect("read stdout");
        b.expect("read stderr");
        run.wait().await.expect("wait for bash")
    })
    .await
    .expect("client-flow.sh finishes in time");

    assert!(
        status.success() && out.lines().any(|l| l == "OK"),
        "client-flow.sh failed ({status})\n--- stdout\n{out}\n--- stderr\n{err}"
    );
    stop(ampd).await;
}
