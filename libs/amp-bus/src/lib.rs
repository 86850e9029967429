//! The narrow message-bus contract between AMP services.
//!
//! Services talk to each other through three things only: a durable, deduplicated publish to a
//! work-queue stream ([`BusBackend::publish`]), a shared pull consumer on that stream with
//! ack / nak(delay) / term ([`BusBackend::consume`], [`Delivery`]), and a best-effort subject
//! fan-out for hints ([`BusBackend::notify`], [`BusBackend::subscribe`]). In a cluster the
//! backend is NATS JetStream; in the single-process binary `ampd` it is the in-process backend
//! in this crate. Service code holds a [`Bus`] and never knows which one it has.
//!
//! The one semantic difference callers must respect is [`Acceptance`]: a broker answers a
//! publish once the message is stored ([`Acceptance::Persisted`]); the in-process bus, which
//! keeps messages in memory only, answers once a consumer has acked it
//! ([`Acceptance::Processed`]). Either way an `Ok` from `publish` means the message will not
//! be lost.
//!
//! # Modules
//! - [`error`]: the crate's [`Error`] and [`Result`].
//! - [`message`]: [`StreamName`], [`BusMessage`] (with its W3C trace-context headers),
//!   [`PublishAck`], [`Acceptance`].
//! - [`backend`]: the [`BusBackend`], [`Consumer`] and [`Subscription`] traits, and
//!   [`Delivery`] with its [`Acker`].
//! - [`bus`]: [`Bus`], the cheap-clone handle services hold.
//! - [`subjects`]: subject names and token sanitising, and NATS-style wildcard matching.
//! - [`in_process`] (feature `in-process`, default): the in-memory backend.
//! - [`jetstream`] (feature `jetstream`, default): the NATS JetStream backend.
//! - [`testing`] (feature `testing`): the conformance suite every backend runs.

pub mod backend;
pub mod bus;
pub mod error;
#[cfg(feature = "in-process")]
pub mod in_process;
#[cfg(feature = "jetstream")]
pub mod jetstream;
pub mod message;
pub mod subjects;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use backend::{Acker, BusBackend, Consumer, Delivery, Settlement, Subscription};
pub use bus::Bus;
pub use error::{Error, Result};
#[cfg(feature = "in-process")]
pub use in_process::{InProcessBus, InProcessConfig};
#[cfg(feature = "jetstream")]
pub use jetstream::{JetStreamBus, JetStreamConfig};
pub use message::{Acceptance, BusMessage, PublishAck, StreamName, TRACE_CONTEXT_HEADERS};
