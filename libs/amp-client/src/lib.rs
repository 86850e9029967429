//! The Rust client of an Agent Messaging Protocol provider, and the `amp` CLI built on it.
//!
//! A [`Client`] talks to one provider over one pooled HTTP client; an [`Identity`] (an
//! Ed25519 key plus what registration answered) is passed to every call, so one client
//! serves any number of agents, as a load generator needs.
//!
//! ```no_run
//! # async fn demo() -> amp_client::Result<()> {
//! use amp_client::{Client, RouteOptions};
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let key = amp_proto::SecretKey::generate();
//! let me = client.register(Some("acme"), "alice", &key, None).await?;
//! let payload = r#"{"type":"notification","message":"hello"}"#;
//! client.route(&me, "bob@acme.amp.test", "hi", payload, &RouteOptions::default()).await?;
//! for m in client.pending(&me, None, None, None).await?.messages {
//!     client.ack_one(&me, m.id()).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! - [`client`]: [`Client`], every REST call (register, route with signing, pending, count,
//!   acks, read receipts, receipts, info, health).
//! - [`ws`]: [`Client::subscribe`], a [`Subscription`] stream of [`Frame`]s that also acks,
//!   pings and routes.
//! - [`identity`]: [`Identity`] and its 0600 files (registration JSON, PKCS#8 PEM key).
//! - [`types`]: the answers, with payloads kept as raw JSON text.
//! - [`error`]: [`ClientError`] and [`Result`].
//! - [`admin`]: [`AdminClient`], the admin API (operator plane) with an operator token.

pub mod admin;
pub mod client;
pub mod error;
pub mod identity;
pub mod types;
pub mod ws;

pub use admin::AdminClient;
pub use client::Client;
pub use error::{ClientError, Result};
pub use identity::Identity;
pub use types::{
    AckResult, BatchAckResult, Health, Message, MessageEnvelope, PendingCount, PendingPage,
    ProviderInfo, ProviderRef, ReadResult, Receipt, Receipts, Registration, RouteOptions,
    RouteResult,
};
pub use ws::{Connected, DeliveredReceipt, Frame, ReadReceipt, SubscribeOptions, Subscription};
