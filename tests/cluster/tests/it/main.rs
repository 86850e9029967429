//! The cluster topology with real processes: `cargo test -p cluster-tests`.
//! `cargo test --workspace chaos` runs the chaos tests alone; `… federation` the federation one.

mod chaos;
mod common;
mod config;
mod exchange;
mod federation_cluster;
