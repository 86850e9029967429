//! The router: consumes accepted messages from the ingress stream, resolves each recipient,
//! classifies its content (spec 07), writes the recipient's durable mailbox (idempotent on
//! message id) and emits a notify event. It acks a message only once its effect is durable.
//!
//! - [`config`]: the router's [`Config`].
//! - [`service`]: [`RouterService`], the work loop.
//! - [`security`]: trust classification, content wrapping and prompt-injection flags.

pub mod config;
pub mod security;
pub mod service;

pub use config::Config;
pub use service::{RouterService, StartError};
