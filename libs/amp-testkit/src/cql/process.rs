//! One `node.sh run` process (the script `exec`s into the JVM, so the child *is* Cassandra):
//! spawn, readiness wait, kill, logs.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::script::node_script;
use crate::process::free_port;

/// How long a node may take to accept CQL clients: about 5 s on an idle 2-core machine, much
/// more while a workspace build competes for the cores.
const READY_DEADLINE: Duration = Duration::from_secs(180);

/// What Cassandra logs once the native transport listens.
const READY_LINE: &str = "Starting listening for CQL clients";

/// Why a start failed.
pub(super) enum StartFailure {
    /// The process exited before it was ready (a port taken between probe and bind, say); worth
    /// retrying on other ports.
    Exited(String),
    /// Not ready at the deadline (the process was killed).
    TimedOut(String),
}

impl StartFailure {
    pub(super) fn into_message(self) -> String {
        match self {
            Self::Exited(message) | Self::TimedOut(message) => message,
        }
    }
}

/// A node's ports and directory, fixed for its life so a restart finds its data.
pub(super) struct NodeProcess {
    dir: PathBuf,
    pub(super) native_port: u16,
    storage_port: u16,
    /// The process whose end makes `node.sh`'s watchdog kill the JVM: this one.
    parent_pid: u32,
    /// Certificates made by `node.sh certs`: the native port serves TLS too.
    pub(super) tls_dir: Option<PathBuf>,
    child: Option<Child>,
}

impl NodeProcess {
    /// A node that will live in `dir` (created by `node.sh`) on two fresh loopback ports.
    pub(super) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            native_port: free_port(),
            storage_port: free_port(),
            parent_pid: std::process::id(),
            tls_dir: None,
            child: None,
        }
    }

    /// Spawns the node and waits until it accepts CQL clients.
    pub(super) fn start(&mut self) -> Result<(), StartFailure> {
        let log_offset = self.log_len();
        self.spawn().map_err(StartFailure::Exited)?;
        self.wait_ready(log_offset)
    }

    fn spawn(&mut self) -> Result<(), String> {
        assert!(
            self.child.is_none(),
            "the Cassandra node is already running"
        );
        fs::create_dir_all(&self.dir).map_err(|e| format!("create {}: {e}", self.dir.display()))?;
        let out = File::options()
            .create(true)
            .append(true)
            .open(self.out_path())
            .map_err(|e| format!("open {}: {e}", self.out_path().display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("clone the output handle: {e}"))?;
        // --parent-pid: node.sh's watchdog kills the JVM once this test process is gone, even
        // after a kill -9 that runs no Drop.
        let mut command = Command::new("bash");
        command
            .arg(node_script())
            .arg("run")
            .arg("--dir")
            .arg(&self.dir)
            .args(["--native-port", &self.native_port.to_string()])
            .args(["--storage-port", &self.storage_port.to_string()])
            .args(["--parent-pid", &self.parent_pid.to_string()]);
        if let Some(tls_dir) = &self.tls_dir {
            command.arg("--tls-dir").arg(tls_dir);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn bash {}: {e}", node_script().display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Ready means the native port accepts a connection and the log written since
    /// `log_offset` (this start's, not a previous run's) says CQL clients are being served.
    fn wait_ready(&mut self, log_offset: u64) -> Result<(), StartFailure> {
        let deadline = Instant::now() + READY_DEADLINE;
        let native: SocketAddr = ([127, 0, 0, 1], self.native_port).into();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(StartFailure::Exited(format!(
                    "Cassandra exited with {status} while starting\n{}",
                    self.log_tail()
                )));
            }
            if TcpStream::connect_timeout(&native, Duration::from_millis(200)).is_ok()
                && self.log_since(log_offset).contains(READY_LINE)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(StartFailure::TimedOut(format!(
                    "Cassandra did not accept CQL clients on {native} within \
                     {READY_DEADLINE:?}\n{}",
                    self.log_tail()
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL to the JVM (the script `exec`ed into it), then reap.
    pub(super) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: the point is that it is not running.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(super) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Cassandra's `system.log` so far.
    pub(super) fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("system.log")
    }

    /// The script's and the JVM's own stdout and stderr (JVM option errors, crashes).
    fn out_path(&self) -> PathBuf {
        self.dir.join("node.out")
    }

    fn log_len(&self) -> u64 {
        fs::metadata(self.log_path()).map_or(0, |m| m.len())
    }

    fn log_since(&self, offset: u64) -> String {
        let mut text = Vec::new();
        if let Ok(mut file) = File::open(self.log_path())
            && file.seek(SeekFrom::Start(offset)).is_ok()
        {
            let _ = file.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// The end of `system.log` and of `node.out`, for failure messages.
    fn log_tail(&self) -> String {
        format!(
            "--- tail of {}:\n{}\n--- tail of {}:\n{}",
            self.log_path().display(),
            tail(&self.log_path(), 60),
            self.out_path().display(),
            tail(&self.out_path(), 30),
        )
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cql::{script, target};

    #[test]
    fn cql_watchdog_kills_the_node_when_its_parent_dies() {
        if let Err(reason) = script::prepare() {
            target::skip_or_fail("the watchdog test needs a Cassandra node", &reason);
            return;
        }
        let dir = tempfile::Builder::new()
            .prefix("amp-cql-watchdog-")
            .tempdir()
            .expect("create a temp dir");
        // A stand-in for a test process, killed with SIGKILL as a crashing test would be.
        let mut parent = Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep");
        let mut node = NodeProcess::new(dir.path().join("node"));
        node.parent_pid = parent.id();
        if let Err(failure) = node.start() {
            let _ = parent.kill();
            panic!("{}", failure.into_message());
        }
        parent.kill().expect("kill the parent");
        parent.wait().expect("reap the parent");

        // The watchdog polls every second.
        let deadline = Instant::now() + Duration::from_secs(20);
        let child = node.child.as_mut().expect("the node runs");
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the JVM outlived its parent by 20 s"
            );
            thread::sleep(Duration::from_millis(100));
        };
        node.child = None;
        assert!(!status.success(), "killed, not a clean exit: {status}");
    }
}
