//! `amp-nats` against a real `nats-server` (test kit).

mod batch;
