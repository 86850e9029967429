//! [`Service`]: one service binary as a child process, on a loopback port it keeps across
//! restarts, its stderr in a log file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{Kind, START_TIMEOUT, binary};

/// One service process.
pub struct Service {
    /// What it is.
    pub kind: Kind,
    /// A name for messages (`ingest-1`).
    pub name: String,
    config: PathBuf,
    log: PathBuf,
    addr: SocketAddr,
    /// Extra environment (`AMP__…` overrides of the shared file, as a Deployment's env).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Service {
    /// Starts `kind` with `config` (TOML), listening on `listen` (port 0: any), and waits
    /// until it answers `/readyz`; its stderr goes to `log`.
    ///
    /// # Panics
    /// When it does not start or become ready in time (the panic carries its log).
    pub async fn start(
        kind: Kind,
        name: String,
        config: PathBuf,
        log: PathBuf,
        listen: SocketAddr,
    ) -> Self {
        Self::start_with_env(kind, name, config, log, listen, Vec::new()).await
    }

    /// [`start`](Self::start) with extra environment variables (kept across restarts).
    ///
    /// # Panics
    /// Like [`start`](Self::start).
    pub async fn start_with_env(
        kind: Kind,
        name: String,
        config: PathBuf,
        log: PathBuf,
        listen: SocketAddr,
        env: Vec<(String, String)>,
    ) -> Self {
        let mut service = Self {
            kind,
            name,
            config,
            log,
            addr: listen,
            env,
            child: None,
        };
        service.spawn().await;
        service
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the service log");
        let mut child = Command::new(binary(self.kind))
            .arg("--config")
            .arg(&self.config)
            .arg("--listen")
            .arg(self.addr.to_string())
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn a service binary");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let addr = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return addr.parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(addr) = addr else {
            panic!("{} did not start; its log:\n{}", self.name, self.log());
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.addr = addr;
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Waits until `/readyz` answers 200.
    ///
    /// # Panics
    /// When it does not in time.
    pub async fn wait_ready(&self) {
        let (url, log) = (self.url(), || self.log());
        crate::ready::wait_ready(&url, START_TIMEOUT, Duration::from_secs(2), &self.name, log)
            .await;
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sets an environment variable for its next start ([`restart`](Self::restart)), e.g.
    /// `AMP__NATS__URLS` to reach NATS through a [`crate::Link`].
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Kills it with SIGKILL and reaps it.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts it again on the same port and waits until it is ready.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.spawn().await;
    }

    /// Sends SIGSTOP (the process hangs: connections stay open, nothing is answered).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Sends SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("the process runs");
        let status = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
