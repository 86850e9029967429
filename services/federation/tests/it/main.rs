//! Federation between whole `ampd` providers running in this process on `127.0.0.1`.
//! Every test name starts with `federation_`, so `cargo test --workspace federation` runs them.

mod common;
mod federation_attachments;
mod federation_delivery;
mod federation_idempotency;
mod federation_loopback_perf;
mod federation_refusals;
mod federation_revocation;
mod federation_security;
