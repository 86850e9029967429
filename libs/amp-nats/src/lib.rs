//! How AMP's JetStream bus (`amp-bus`) and store (`amp-store`) connect to NATS, so both use
//! the same credentials and TLS settings and report a refused connection the same way, and
//! how both publish: in group-committed batches.
//!
//! [`NatsSecurity`] is the `auth` and `tls` of a NATS section (`[nats.auth]`, `[nats.tls]`
//! in the cluster binaries). It holds paths only: passwords, nkey seeds and `.creds` are read
//! from files (mounted Secrets) when connecting, handed to the client and never kept, logged
//! or put in an error. [`connect`] applies them and turns a refusal into a message that says
//! what to check ("NATS refused the credentials …") without echoing any secret.
//!
//! Credentials in a server URL (`nats://user:pass@host`) are refused: URLs are logged and
//! sit in ConfigMaps.
//!
//! # Modules
//! - `security`: [`NatsSecurity`], [`NatsAuth`], [`NatsTls`] and their checks.
//! - `connect`: [`connect`] and the description of connection errors.
//! - `batch`: [`BatchPublisher`], group commit of JetStream publishes over atomic batches.
//! - [`space`]: whether JetStream refuses writes for lack of space, as every publish saw it.
//! - `setup`: [`patiently`], stream setup retried while JetStream elects a leader.

mod batch;
mod connect;
mod security;
mod setup;
pub mod space;

pub use batch::{
    BatchPublisher, BatchStats, PublishError, Published, SERVER_MAX_BATCH, StreamQueues,
    publish_one,
};
pub use connect::{connect, install_crypto_provider};
pub use security::{NatsAuth, NatsSecurity, NatsTls, check_urls};
pub use setup::{SETUP_PATIENCE, patiently};

/// Why a NATS connection could not be set up. The messages name the setting or the file at
/// fault, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings contradict each other, or a URL carries credentials.
    #[error("invalid NATS settings: {0}")]
    Config(String),
    /// A credentials or certificate file cannot be read.
    #[error("cannot read {setting} {path}: {source}")]
    File {
        /// The setting naming the file (`auth.password_file`, …).
        setting: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// NATS refused the credentials (authorization violation) or they could not be used.
    #[error("{0}")]
    Auth(String),
    /// The TLS handshake failed (wrong CA, wrong name, the server has no TLS, …).
    #[error("{0}")]
    Tls(String),
    /// No server could be reached.
    #[error("{0}")]
    Unreachable(String),
}

/// The result of this crate's functions.
pub type Result<T> = std::result::Result<T, Error>;
