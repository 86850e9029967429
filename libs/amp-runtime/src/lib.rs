//! Shared plumbing for every AMP service: the parts of a server that are not about messages.
//!
//! A service's `main` reads its config with [`config::load`], starts logs with
//! [`telemetry::init`], builds its `Router`, wraps it with [`http::harden`], merges
//! [`ops::ops_router`] and hands it to [`shutdown::serve`] with a [`Shutdown`] that
//! [`Shutdown::listen_for_signals`] triggers.
//!
//! Modules:
//! - [`config`]: layered configuration (defaults < TOML file < `AMP__…` env < flags) and
//!   the redacting [`config::Secret`].
//! - [`telemetry`]: `tracing` subscriber setup (JSON or pretty logs, `EnvFilter`), and
//!   OpenTelemetry traces over OTLP with W3C context in message headers.
//! - [`identity`]: the provider key and API-key pepper files, created once and never
//!   silently replaced.
//! - [`metrics`]: the process-wide Prometheus recorder.
//! - [`ops`]: `/healthz`, `/readyz` (named async checks, fails once shutdown begins) and
//!   `/metrics`.
//! - [`shutdown`]: the [`Shutdown`] signal and [`shutdown::serve`], the HTTP server with a
//!   bounded graceful drain.
//! - [`listener`]: the connection limits every listener serves with
//!   ([`listener::ConnectionLimits`]: header, body and idle timeouts, connection caps).
//! - [`http`]: the spec error body for every failure — [`http::HttpError`], the
//!   [`http::ApiJson`] / [`http::ApiQuery`] / [`http::ApiPath`] extractors, JSON 404/405/413/500
//!   via [`http::harden`], and [`http::bearer_token`].
//! - [`client_addr`]: the client's address behind trusted reverse proxies (rightmost
//!   untrusted hop of `X-Forwarded-For` or `Forwarded`).
//! - [`outbound`]: the SSRF guard for webhook and federation URLs.
//! - [`slots`]: concurrency bounded per key inside a shared pool (one slow destination
//!   cannot take every slot).
//! - [`ratelimit`]: a keyed, memory-bounded GCRA limiter whose [`ratelimit::Decision`]
//!   renders the `X-RateLimit-*` headers and the 429 body.

pub mod client_addr;
pub mod config;
pub mod http;
pub mod identity;
pub mod listener;
pub mod metrics;
pub mod ops;
pub mod outbound;
pub mod ratelimit;
pub mod shutdown;
pub mod slots;
pub mod telemetry;

pub use http::{ApiJson, ApiPath, ApiQuery, ApiResult, HttpError};
pub use shutdown::Shutdown;
