//! `ampd`'s integration tests: one binary, a module per area.

mod binary;
mod config;
mod in_process;
