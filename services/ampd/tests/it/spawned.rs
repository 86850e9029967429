//! Running the built `ampd` binary in tests: start it on a port, wait until it is ready,
//! stop it with SIGTERM and expect a clean exit.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long start-up may take on a loaded CI machine.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `ampd` on `listen` (e.g. `127.0.0.1:0`) with the data in `data_dir`, the domain
/// `example.test` and `env` added to an otherwise empty environment; returns the child and its
/// base URL once `/readyz` answers.
pub(crate) async fn start(data_dir: &Path, listen: &str, env: &[(&str, &str)]) -> (Child, String) {
    let args: [&OsStr; 8] = [
        "--listen".as_ref(),
        listen.as_ref(),
        "--domain".as_ref(),
        "example.test".as_ref(),
        "--log-format".as_ref(),
        "json".as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_ref(),
    ];
    start_with_args(&args, env).await
}

/// Starts `ampd` with exactly `args` and `env` added to an otherwise empty environment; the
/// arguments must make it listen somewhere (`--listen`, or a config file). Returns the child
/// and its base URL once `/readyz` answers.
pub(crate) async fn start_with_args(args: &[&OsStr], env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ampd"))
        .env_clear()
        .env("AMP__SERVER__SHUTDOWN_GRACE_SECS", "5")
        .envs(env.iter().copied())
        .args(args)
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
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ampd never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}

/// SIGTERM, then wait for a clean exit.
pub(crate) async fn stop(mut child: Child) {
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
