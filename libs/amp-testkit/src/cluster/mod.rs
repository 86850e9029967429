//! The cluster topology under test (feature `cluster`): the `ingest`, `router`, `delivery` and
//! `federation` binaries, built by cargo and started as separate processes over real
//! `nats-server` nodes, each replica on its own loopback port, any of them killable with
//! SIGKILL, stoppable with SIGSTOP and restartable on the same port.
//!
//! - [`binaries`] and [`binary`]: build the four binaries (and `ampd` for the tests that run
//!   it) once per test run, a no-op when fresh, and say where they are, so a test never runs
//!   a stale build.
//! - [`Service`]: one process: start, wait until `/readyz`, kill -9, restart, pause, resume.
//! - [`Deployment`]: N replicas of each service sharing one provider identity (key and
//!   pepper files) and one NATS prefix; several deployments can share one NATS.
//! - [`proxy`]: nginx in front of a provider, as a hosted deployment runs it.
//! - [`parity`]: what the parity suite starts: the single binary `ampd` or the cluster, each
//!   behind that nginx, seen by a client as one base URL.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

mod deployment;
pub mod parity;
pub mod proxy;
mod service;

pub use deployment::{Deployment, Topology};
pub use service::Service;

/// How long a process may take to start and become ready on a loaded CI machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The four cluster services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The public HTTP API.
    Ingest,
    /// Consumes the ingress stream, writes mailboxes.
    Router,
    /// WebSockets and webhooks.
    Delivery,
    /// Provider-to-provider delivery.
    Federation,
    /// The single binary: every service in one process (the parity suite's reference).
    Ampd,
}

impl Kind {
    /// The binary (and package) name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Router => "router",
            Self::Delivery => "delivery",
            Self::Federation => "federation",
            Self::Ampd => "ampd",
        }
    }
}
/// A free loopback port (bound then released: a tiny race, fine for tests).
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    crate::process::free_port()
}

/// Serialises the heavy cluster tests: each starts many processes, and two at once on
/// a 2-core machine would measure the machine, not the cluster.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The directory holding the freshly built service binaries.
///
/// # Panics
/// When cargo cannot build them.
pub fn binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| crate::build::build(&["ingest", "router", "delivery", "federation"]))
}

/// The path of `kind`'s freshly built binary; `ampd` is built only by the tests that run it.
///
/// # Panics
/// When cargo cannot build it.
pub fn binary(kind: Kind) -> PathBuf {
    match kind {
        Kind::Ampd => crate::build::ampd_binary(),
        _ => binaries().join(kind.name()),
    }
}
