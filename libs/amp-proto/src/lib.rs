//! The Agent Messaging Protocol, as types and pure functions: no I/O, no async.
//!
//! Every other crate of the provider builds on this one.
//!
//! - [`attachment`]: attachment ids, the `sha256:` digest, filename sanitising, scan
//!   statuses and a payload's `attachments` array (spec 04, 08).
//! - [`card`]: the Agent Card (spec 02), its RFC 8785 canonical form, signing and
//!   verification.
//! - [`address`]: agent addresses (spec 02), parsing, normalisation, short forms, and the
//!   rule that tells the provider domain from the scope.
//! - [`message`]: message ids, priorities, timestamps, the envelope, the raw payload and the
//!   size limits of spec 04.
//! - [`json`]: a raw-JSON tree and the canonical serialisations senders hash.
//! - [`signing`]: the canonical signing string, the payload hash and signature verification
//!   with the documented fallbacks.
//! - [`keys`]: Ed25519 public and secret keys, PEM and hex forms, fingerprints.
//! - [`error`]: the spec's error codes and error body.
//! - [`relay`]: the internal hand-off records between services (accepted message, router
//!   outcome, stored message).

pub mod address;
pub mod attachment;
pub mod card;
pub mod error;
pub mod json;
pub mod keys;
pub mod message;
pub mod relay;
pub mod signing;

pub use address::{Address, AddressContext, AddressError, AddressParts};
pub use error::{ApiError, ErrorCode};
pub use keys::{KeyError, PublicKey, SecretKey};
pub use message::{Envelope, MessageId, Priority, RawPayload, Timestamp, ValidationError};
pub use signing::{SignedFields, Verified, VerifyError};
