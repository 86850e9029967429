//! The public shell client (the Claude Code plugin's scripts) against the built `ampd`: the
//! exact HTTP calls, bodies and signing steps of SPEC-CHECKLIST Part 3, replayed by
//! `tests/shell/client-flow.sh` with curl, openssl and jq.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

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

#[tokio::test]
async fn plugin_flow_against_ampd() {
    require_tools();
    let data = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let ampd = amp_testkit::ampd::AmpdProcess::start(data.path(), &[]).await;
    let base = ampd.url().to_owned();

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
    ampd.stop().await;
}
