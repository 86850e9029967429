//! The cluster topology with real processes: `cargo test -p cluster-tests`.
//! `cargo test --workspace chaos` runs the chaos tests alone; `… federation` the federation one;
//! `… parity` the parity suite (`ampd` and the cluster behind nginx, the same checks);
//! `… security` the NATS login test; `… operator` the operator plane across ingest replicas.

mod chaos;
mod common;
mod config;
mod exchange;
mod federation_cluster;
mod operator;
mod parity;
mod security;
