//! HTTP integration tests of the ingest service: real servers on `127.0.0.1:0`, a redb store
//! in a temp dir and the in-process bus, driven with reqwest.
//!
//! - `common`: the harness ([`common::TestServer`]) and assertion helpers.
//! - `register`: `POST /v1/register` (spec 03), open mode and its per-IP limit.
//! - `owner`: registration with user keys (owner mode).
//! - `agents`: `/v1/agents/me`, listing and resolution.
//! - `keys`: API-key rotation and revocation, public-key rotation.
//! - `meta`: health, info, well-known.
//! - `errors`: 404/405/413/415 and hostile inputs, always JSON, never 5xx.
//! - `isolation`: tenant isolation.
//! - `limits`: per-agent API rate limits.
//! - `races`: writes made by an agent's first requests stick.

mod agents;
mod common;
mod errors;
mod isolation;
mod keys;
mod limits;
mod meta;
mod owner;
mod races;
mod register;
