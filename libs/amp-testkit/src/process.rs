//! One `nats-server` process: its config file, spawn, health wait, kill and restart.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to become healthy.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A free loopback port (bound and released; the small race with other processes is accepted
/// in tests).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("no free loopback port")
}

/// The ports and paths of one node; fixed for its life so a restart reuses them.
#[derive(Debug, Clone)]
pub(crate) struct NodeSpec {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) monitor_port: u16,
    pub(crate) store_dir: PathBuf,
    pub(crate) config_path: PathBuf,
    pub(crate) log_path: PathBuf,
    /// `/healthz` query: `?js-enabled-only=true` for a single node; a cluster node waits for
    /// the full check (it has found the meta leader).
    pub(crate) health_query: &'static str,
    /// Lines inside the config's `jetstream { .. }` block (after `sync_interval`), such as
    /// `max_file_store: 16MB`.
    pub(crate) jetstream: String,
}

impl NodeSpec {
    /// Writes the config file. `extra` is appended: a `cluster { .. }` block, or
    /// `authorization { .. }` and `tls { .. }`.
    pub(crate) fn write_config(&self, extra: Option<&str>) {
        fs::create_dir_all(&self.store_dir).expect("create the store dir");
        // The store dir comes from `-sd` on the command line (the server refuses it twice).
        // sync_interval: always fsyncs every write before the ack: the default (every 2 min)
        // loses acknowledged messages on power loss, and the tests prove acks survive kill -9.
        let config = format!(
            "server_name: {name}\n\
             listen: 127.0.0.1:{port}\n\
             http: 127.0.0.1:{monitor}\n\
             jetstream {{\n  sync_interval: always\n  {jetstream}\n}}\n\
             {extra}\n",
            name = self.name,
            port = self.port,
            monitor = self.monitor_port,
            jetstream = self.jetstream,
            extra = extra.unwrap_or(""),
        );
        fs::write(&self.config_path, config).expect("write the nats-server config");
    }
}

/// A running (or killed) server process.
pub(crate) struct Node {
    pub(crate) spec: NodeSpec,
    binary: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub(crate) fn new(binary: PathBuf, spec: NodeSpec) -> Self {
        Self {
            spec,
            binary,
            child: None,
        }
    }

    /// Spawns the process; does not wait for health.
    pub(crate) fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "{} is already running",
            self.spec.name
        );
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.spec.log_path)
            .expect("open the server log");
        let log_err = log.try_clone().expect("clone the log handle");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.spec.config_path)
            .arg("-js")
            .arg("-sd")
            .arg(&self.spec.store_dir)
            .args(["-a", "127.0.0.1", "-p", &self.spec.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// Waits until the client port accepts and `/healthz` answers 200.
    ///
    /// # Panics
    /// At the deadline, or if the process exits, with the server's log.
    pub(crate) fn wait_healthy(&mut self) {
        if let Err(e) = self.try_wait_healthy() {
            panic!("{e}");
        }
    }

    /// [`wait_healthy`](Self::wait_healthy) that reports an early exit instead of panicking
    /// (the caller may retry on other ports).
    ///
    /// # Panics
    /// At the deadline, with the server's log.
    pub(crate) fn try_wait_healthy(&mut self) -> Result<(), String> {
        self.wait_healthy_until(Instant::now() + START_DEADLINE, true)
    }

    /// Waits until healthy or `deadline`: an early exit is an `Err`, and so is the deadline
    /// unless `panic_at_deadline` (then it panics with the server's log).
    pub(crate) fn wait_healthy_until(
        &mut self,
        deadline: Instant,
        panic_at_deadline: bool,
    ) -> Result<(), String> {
        let client: SocketAddr = ([127, 0, 0, 1], self.spec.port).into();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "nats-server {} exited with {status} while starting; log:\n{}",
                    self.spec.name,
                    self.log()
                ));
            }
            let port_open = TcpStream::connect_timeout(&client, Duration::from_millis(200)).is_ok();
            if port_open && self.healthz() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let message = format!(
                    "nats-server {} not healthy in time; log:\n{}",
                    self.spec.name,
                    self.log()
                );
                assert!(!panic_at_deadline, "{message}");
                return Err(message);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn healthz(&self) -> bool {
        http_get_status(
            self.spec.monitor_port,
            &format!("/healthz{}", self.spec.health_query),
        ) == Some(200)
    }

    /// SIGKILL, then reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: the point is that it is not running.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGHUP: the server reloads its config file.
    pub(crate) fn reload(&self) {
        let child = self.child.as_ref().expect("the server is not running");
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .expect("run kill -HUP");
        assert!(status.success(), "kill -HUP failed");
    }

    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's log so far.
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.spec.log_path).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A bare HTTP/1.0 GET on loopback; the status code, or `None` if it failed.
fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0_u8; 32];
    let n = stream.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The spec of a node whose files live under `dir`.
pub(crate) fn node_spec(dir: &Path, name: &str, health_query: &'static str) -> NodeSpec {
    NodeSpec {
        name: name.to_owned(),
        port: free_port(),
        monitor_port: free_port(),
        store_dir: dir.join(format!("{name}-store")),
        config_path: dir.join(format!("{name}.conf")),
        log_path: dir.join(format!("{name}.log")),
        health_query,
        jetstream: String::new(),
    }
}
