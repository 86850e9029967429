//! `ampd`'s integration tests: one binary, a module per area.

mod binary;
mod config;
mod crash;
mod delivery;
mod hardening;
mod in_process;
mod messaging;
mod migrate_store;
mod openapi;
mod plugin_attachments;
mod shell_client;
mod traces;
