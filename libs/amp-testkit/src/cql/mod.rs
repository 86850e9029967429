//! A real Apache Cassandra node for the CQL store's tests.
//!
//! No package registry ships a ScyllaDB server; Apache Cassandra 5.0 speaks the same CQL
//! (TTLs, lightweight transactions, batches, `USING TIMESTAMP`) and `cassandra-all` is on
//! Maven Central. `deploy/cassandra/node.sh` fetches it with Maven (`node.sh fetch`, cached in
//! `~/.cache/amp-cassandra/<version>`) and runs one node in the foreground (`node.sh run`) on
//! loopback, with `commitlog_sync: batch` so an acknowledged write survives a `kill -9`, and a
//! watchdog that kills the JVM when the test process is gone, however it died.
//!
//! Which node a test talks to:
//! - [`cql_target`]: `AMP_TEST_CQL=host:port` when set (an existing node, a real ScyllaDB say),
//!   else one node shared by the whole test process, started on first use;
//! - [`CqlNode::start_or_skip`]: a node of the test's own, for tests that kill or restart it;
//! - [`cql_tls_target`]: a node that also serves TLS on its native port (`optional: true`,
//!   so plain clients share it), with the certificates a client needs ([`TlsFiles`]): the
//!   shared node, which every start gives TLS (the certificates cost a second), or, under
//!   `AMP_TEST_CQL`, a node of its own;
//! - [`unique_keyspace`]: a fresh keyspace name per test, so tests sharing a node never meet.
//!
//! Without Java or Maven (or when the node does not start) a CQL test is skipped with a loud
//! line on stderr; with `AMP_REQUIRE_CQL=1` (CI) it fails instead.
//!
//! # Modules
//! - `script`: locating `node.sh`, checking for Java, `node.sh fetch`.
//! - `process`: one node process (spawn, readiness wait, kill, logs).
//! - `target`: [`cql_target`], [`unique_keyspace`] and the skip-or-fail rule.

mod process;
mod script;
mod target;

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use process::{NodeProcess, StartFailure};
pub use target::{CqlTlsTarget, cql_target, cql_tls_target, unique_keyspace};

/// How many times a start that exits early is retried on fresh ports.
const START_ATTEMPTS: u32 = 3;

/// The certificates of a node's throwaway PKI (`node.sh certs`), PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the node's certificate (and the client's).
    pub ca_file: PathBuf,
    /// A client certificate signed by the CA, for mutual TLS.
    pub client_cert_file: PathBuf,
    /// The client certificate's private key.
    pub client_key_file: PathBuf,
    /// An unrelated CA: a client trusting only it must fail the handshake.
    pub other_ca_file: PathBuf,
    /// A DNS name the node's certificate is valid for (besides `127.0.0.1` and `localhost`).
    pub server_name: String,
}

impl TlsFiles {
    fn in_dir(dir: &Path) -> Self {
        Self {
            ca_file: dir.join("ca.pem"),
            client_cert_file: dir.join("client.pem"),
            client_key_file: dir.join("client.key"),
            other_ca_file: dir.join("other-ca.pem"),
            server_name: "cassandra.amp.test".to_owned(),
        }
    }
}

/// One Cassandra node (a JVM run by `deploy/cassandra/node.sh`) on free loopback ports, with
/// its data, config and `system.log` in a temporary directory. Killed on drop (the directory
/// is removed after); if the test process dies without dropping it, `node.sh`'s watchdog
/// kills the JVM.
pub struct CqlNode {
    // Field order matters: the process is killed before its directory is removed.
    node: NodeProcess,
    tls: TlsFiles,
    dir: TempDir,
}

impl CqlNode {
    /// Fetches Cassandra if needed, starts a node and waits until it accepts CQL clients.
    ///
    /// # Panics
    /// When Java or Maven is missing, the fetch fails, or the node is not ready in time (the
    /// panic carries the end of its log). Use [`start_or_skip`](Self::start_or_skip) in tests
    /// that should skip where no Cassandra can run.
    pub fn start() -> Self {
        Self::try_start("amp-cql-").unwrap_or_else(|reason| panic!("{reason}"))
    }

    /// [`start`](Self::start), or `None` (with a loud line on stderr) when no node can be
    /// started here.
    ///
    /// # Panics
    /// Instead of returning `None` when `AMP_REQUIRE_CQL=1` is set.
    pub fn start_or_skip() -> Option<Self> {
        match Self::try_start("amp-cql-") {
            Ok(node) => Some(node),
            Err(reason) => {
                target::skip_or_fail("this test needs its own Cassandra node", &reason);
                None
            }
        }
    }

    /// Starts a node in a new temporary directory named `prefix…`.
    fn try_start(prefix: &str) -> Result<Self, String> {
        script::prepare()?;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(|e| format!("create a temp dir: {e}"))?;
        let node_dir = dir.path().join("node");
        // Every node serves TLS as well as plain CQL on its port: the certificates take about
        // a second, and the TLS tests then need no JVM of their own.
        let tls_dir = dir.path().join("tls");
        script::make_certs(&tls_dir)?;
        let tls = TlsFiles::in_dir(&tls_dir);
        // A free port can be taken by another process between our probe and Cassandra's bind:
        // a start that exits early is retried, from scratch, on fresh ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let _ = std::fs::remove_dir_all(&node_dir);
            let mut node = NodeProcess::new(node_dir.clone());
            node.tls_dir = Some(tls_dir.clone());
            match node.start() {
                Ok(()) => {
                    tracing::debug!(port = node.native_port, "cassandra node started");
                    return Ok(Self { node, tls, dir });
                }
                Err(StartFailure::Exited(e)) if attempt < START_ATTEMPTS => {
                    tracing::warn!(error = %e, "cassandra did not start; retrying on other ports");
                }
                Err(failure) => return Err(failure.into_message()),
            }
        }
    }

    /// The address a CQL driver connects to, `127.0.0.1:<native port>`.
    pub fn contact_point(&self) -> String {
        format!("127.0.0.1:{}", self.node.native_port)
    }

    /// The certificates of the node's TLS (served on the native port next to plain CQL).
    pub fn tls(&self) -> &TlsFiles {
        &self.tls
    }

    /// The native (CQL) port.
    pub fn native_port(&self) -> u16 {
        self.node.native_port
    }

    /// Kills the node with SIGKILL: no drain, no final commit log sync (writes it acknowledged
    /// are already synced: `commitlog_sync: batch`).
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Whether the process is running (not killed).
    pub fn is_running(&self) -> bool {
        self.node.is_running()
    }

    /// Starts the node again on the same ports and directory (killing it first if it still
    /// runs) and waits until it accepts CQL clients; it replays its commit log on the way.
    ///
    /// # Panics
    /// When the node is not ready in time (the panic carries the end of its log).
    pub fn restart(&mut self) {
        self.node.kill();
        if let Err(failure) = self.node.start() {
            panic!("{}", failure.into_message());
        }
    }

    /// Cassandra's `system.log` so far (all runs of this node).
    pub fn log(&self) -> String {
        self.node.log()
    }

    /// The temporary directory; the node's files (`conf/`, `data/`, `commitlog/`,
    /// `system.log`) are in its `node/` subdirectory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl std::fmt::Debug for CqlNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqlNode")
            .field("contact_point", &self.contact_point())
            .field("running", &self.is_running())
            .finish()
    }
}
