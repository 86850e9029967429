//! HTTP integration tests of the ingest service: the service as the provider runs it, in the
//! test kit's in-process `ampd` on `127.0.0.1` (a redb store in a temp dir, the in-process
//! bus) with this suite's `[ingest]` section, driven with reqwest.
//!
//! - `common`: the suite's view of the kit's server ([`common::TestServer`]) and assertion
//!   helpers; answers are the kit's `Resp` with its `expect_*` checks.
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
