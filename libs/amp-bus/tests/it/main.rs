//! Integration tests of amp-bus: the conformance suite on the in-process and JetStream
//! backends, and each backend's own semantics (JetStream against real nats-server processes).

mod conformance;
mod in_process;
#[cfg(feature = "jetstream")]
mod jetstream;
mod recorder;
#[cfg(feature = "jetstream")]
mod trace;
