//! [`AmpdProcess`]: the built `ampd` binary as a child process, in an environment holding only
//! what the test sets; its stderr (the logs) goes to a file it can read back.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::READY_TIMEOUT;
use crate::build::ampd_binary;

/// The grace period a spawned `ampd` gets (`AMP__SERVER__SHUTDOWN_GRACE_SECS`), and so the
/// longest a clean exit may take.
pub const GRACE_SECS: u64 = 5;

/// `ampd` (the built binary) with an empty environment but for
/// `AMP__SERVER__SHUTDOWN_GRACE_SECS` and an embedded `AMP__STORE__BACKEND` the caller set
/// ([`super::embedded_backend`]; no other stray `AMP__…` or `RUST_LOG` from the caller), stdin
/// closed, stdout and stderr piped, killed if dropped.
///
/// # Panics
/// When cargo cannot build the binary.
pub fn ampd_command() -> Command {
    let mut cmd = Command::new(ampd_binary());
    cmd.env_clear()
        .env("AMP__SERVER__SHUTDOWN_GRACE_SECS", GRACE_SECS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if super::embedded_backend().is_some()
        && let Ok(backend) = std::env::var("AMP__STORE__BACKEND")
    {
        cmd.env("AMP__STORE__BACKEND", backend);
    }
    cmd
}

/// A running `ampd` binary; killed if dropped.
pub struct AmpdProcess {
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    addr: SocketAddr,
    url: String,
    // Last: the process is killed before its log goes.
    logs: TempDir,
}

impl AmpdProcess {
    /// Starts `ampd` on `127.0.0.1:0` with the data in `data_dir`, the domain `example.test`,
    /// JSON logs and `env` added to the otherwise empty environment, and waits until
    /// `/readyz` answers.
    ///
    /// # Panics
    /// When it does not start or become ready in time (the panic carries its log).
    pub async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_in(
            data_dir,
            &["--domain".as_ref(), "example.test".as_ref()],
            env,
        )
        .await
    }

    /// Starts `ampd` on `127.0.0.1:0` with the data in `data_dir`, JSON logs, `extra`
    /// arguments (a `--config` file, a domain) and `env` added to the otherwise empty
    /// environment, and waits until `/readyz` answers.
    ///
    /// # Panics
    /// When it does not start or become ready in time (the panic carries its log).
    pub async fn start_in(data_dir: &Path, extra: &[&OsStr], env: &[(&str, &str)]) -> Self {
        let mut args: Vec<&OsStr> = vec![
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--log-format".as_ref(),
            "json".as_ref(),
            "--data-dir".as_ref(),
            data_dir.as_ref(),
        ];
        args.extend_from_slice(extra);
        Self::start_with_args(&args, env).await
    }

    /// Starts `ampd` with exactly `args` and `env` added to the otherwise empty environment
    /// (the arguments must make it listen somewhere: `--listen`, or a config file), and waits
    /// until `/readyz` answers.
    ///
    /// # Panics
    /// When it does not start or become ready in time (the panic carries its log).
    pub async fn start_with_args(args: &[&OsStr], env: &[(&str, &str)]) -> Self {
        let mut process = Self {
            args: args.iter().map(|a| a.to_os_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
            addr: ([127, 0, 0, 1], 0).into(),
            url: String::new(),
            logs: tempfile::Builder::new()
                .prefix("amp-ampd-log-")
                .tempdir()
                .expect("temp dir"),
        };
        process.spawn().await;
        process
    }

    /// Spawns the binary, reads its address from the first line it prints, and waits until
    /// it is ready.
    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the ampd log");
        let mut child = ampd_command()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(&self.args)
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn ampd");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(READY_TIMEOUT, lines.next_line()).await;
        let addr = match first {
            Ok(Ok(Some(line))) => line
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
                .parse::<SocketAddr>()
                .expect("address"),
            Ok(Ok(None)) => {
                let status = child.wait().await.expect("wait");
                panic!("ampd exited ({status}) before listening: {}", self.log())
            }
            Ok(Err(e)) => panic!("read ampd's stdout: {e}"),
            Err(_) => panic!("ampd did not print its address in time: {}", self.log()),
        };
        // Keep draining stdout so later prints never block the child.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.addr = addr;
        self.url = format!("http://{addr}");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Waits until `/readyz` answers 200, at most [`READY_TIMEOUT`].
    async fn wait_ready(&self) {
        let log = || self.log();
        crate::ready::wait_ready(
            &self.url,
            READY_TIMEOUT,
            Duration::from_secs(5),
            "ampd",
            log,
        )
        .await;
    }

    /// `http://<ip>:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    ///
    /// # Panics
    /// When it is not running.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("ampd is running")
    }

    /// Kills it with SIGKILL and reaps it (nothing when it is not running).
    ///
    /// # Panics
    /// When it cannot be killed.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill -9 ampd");
        }
    }

    /// Kills it with SIGKILL if it runs, then starts it again with the same arguments and
    /// environment (so on the same data); a `--listen` port 0 gives a new port, so read
    /// [`url`](Self::url) again.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.spawn().await;
    }

    /// Sends SIGTERM and waits for the exit, at most the grace period and 5 s; returns the
    /// exit status and the logs.
    ///
    /// # Panics
    /// When it is not running, cannot be signalled, or does not exit in time.
    pub async fn terminate(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("ampd is running");
        let pid = child.id().expect("ampd is running");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        let status = tokio::time::timeout(Duration::from_secs(GRACE_SECS + 5), child.wait())
            .await
            .expect("ampd exits within the grace period")
            .expect("wait");
        (status, self.log())
    }

    /// SIGTERM, then expects a clean exit in time.
    ///
    /// # Panics
    /// When it does not exit cleanly in time (the panic carries its log).
    pub async fn stop(self) {
        let (status, log) = self.terminate().await;
        assert!(status.success(), "ampd exit {status}; its log:\n{log}");
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.logs.path().join("ampd.log")
    }

    /// Its stderr (the logs) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}
