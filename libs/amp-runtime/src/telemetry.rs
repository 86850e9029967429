//! Logs and traces: a `tracing` subscriber writing to stderr (JSON lines or human-readable)
//! and, when an OTLP endpoint is configured, OpenTelemetry traces exported to a collector.
//!
//! One message is one trace across services: ingest starts it (`amp.route`), every bus
//! publish carries its W3C `traceparent`/`tracestate` ([`trace_headers`]), and the router,
//! delivery and federation make their spans children of it ([`set_parent`]). Without an
//! endpoint no OpenTelemetry layer is installed: no exporter, no background thread, and the
//! message spans (level `DEBUG`, target [`TRACE_TARGET`]) are disabled callsites.
//!
//! - `otel`: the OTLP exporter, the tracer provider and the trace layer.
//! - `propagation`: W3C Trace Context in and out of message headers.

mod otel;
mod propagation;

use std::io::IsTerminal;
use std::sync::Once;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

pub use otel::{TRACE_TARGET, flush, trace_layer};
pub use propagation::{TRACEPARENT, TRACESTATE, set_parent, trace_headers};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `pretty` when stderr is a terminal, else `json`.
    #[default]
    Auto,
    /// One JSON object per line (for collectors).
    Json,
    /// Human-readable lines (for terminals).
    Pretty,
}

/// The `[log]` section of a service's config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// An `EnvFilter` directive such as `info` or `info,amp_store=debug`; `RUST_LOG`, when
    /// set, wins.
    pub filter: String,
    /// The line format.
    pub format: LogFormat,
    /// Base URL of an OTLP/HTTP trace collector, e.g. `http://otel-collector:4318` (traces
    /// go to `<url>/v1/traces`). Unset: the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` env var if set, else tracing is off.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of exported spans. Unset: `OTEL_SERVICE_NAME` if set, else the
    /// executable's name (`ampd`, `ingest`, `router`, ...).
    pub service_name: Option<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Auto,
            otlp_endpoint: None,
            service_name: None,
        }
    }
}

impl LogFormat {
    /// `Json` or `Pretty`, deciding `Auto` by whether stderr is a terminal.
    pub fn resolve(self) -> LogFormat {
        match self {
            LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Pretty,
            LogFormat::Auto => LogFormat::Json,
            other => other,
        }
    }
}

static INIT: Once = Once::new();

/// Installs the global log subscriber (stderr) and, when an OTLP endpoint is configured
/// (see [`LogConfig::otlp_endpoint`]), the OpenTelemetry trace layer with a batch exporter.
/// Only the first call in a process does anything; later calls, or a subscriber installed by
/// someone else, make it a no-op. Call [`flush`] before exiting to send the last spans.
///
/// An invalid filter falls back to `info`, and an exporter that cannot be built leaves
/// tracing off, each with a warning, rather than failing start-up.
pub fn init(cfg: &LogConfig) {
    INIT.call_once(|| {
        let (filter, bad_filter) = filter(cfg);
        let mut warnings = Vec::new();
        if let Some((directive, error)) = bad_filter {
            warnings.push(format!(
                "invalid log filter {directive:?}, using info: {error}"
            ));
        }
        let tracing = match otel::Endpoint::resolve(cfg.otlp_endpoint.as_deref()) {
            Some(endpoint) => match otel::install(&endpoint, &otel::service_name(cfg)) {
                Ok(provider) => Some(provider),
                Err(e) => {
                    warnings.push(format!("OTLP trace exporter not started: {e}"));
                    None
                }
            },
            None => None,
        };
        let installed: bool = match tracing {
            // Tracing off: the plain subscriber with one global filter, so the DEBUG-level
            // message spans are disabled callsites and cost nothing.
            None => {
                let builder = tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_writer(BoxMakeWriter::new(std::io::stderr));
                match cfg.format.resolve() {
                    LogFormat::Json => builder
                        .json()
                        .flatten_event(true)
                        .with_current_span(true)
                        .with_span_list(false)
                        .try_init()
                        .is_ok(),
                    _ => builder.try_init().is_ok(),
                }
            }
            // Tracing on: per-layer filters, so the log filter does not decide which spans
            // are exported.
            Some(provider) => otel::init_with_traces(cfg.format.resolve(), filter, &provider),
        };
        if installed {
            for warning in warnings {
                tracing::warn!("{warning}");
            }
        }
    });
}

/// The filter from `RUST_LOG` if set, else `cfg.filter`; `info` if that does not parse.
/// Always [`without_secrets`].
fn filter(cfg: &LogConfig) -> (EnvFilter, Option<(String, String)>) {
    let directive = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| cfg.filter.clone());
    match EnvFilter::try_new(&directive) {
        Ok(f) => (without_secrets(f), None),
        Err(e) => (
            without_secrets(EnvFilter::new("info")),
            Some((directive, e.to_string())),
        ),
    }
}

/// `filter` capped where a dependency logs secrets: async-nats traces the whole `CONNECT`
/// line, password included, at `TRACE` in `async_nats::connection`, so that target is held
/// at `DEBUG` whatever `RUST_LOG` says. Public so tests log exactly as the binaries do.
pub fn without_secrets(filter: EnvFilter) -> EnvFilter {
    filter.add_directive(
        "async_nats::connection=debug"
            .parse()
            .expect("a constant, valid directive"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_strictness() {
        let cfg: LogConfig = serde_json::from_str("{}").expect("defaults");
        assert_eq!(cfg, LogConfig::default());
        let cfg: LogConfig =
            serde_json::from_str(r#"{"format":"json","filter":"debug"}"#).expect("parse");
        assert_eq!(cfg.format, LogFormat::Json);
        assert!(serde_json::from_str::<LogConfig>(r#"{"level":"x"}"#).is_err());
        let cfg: LogConfig = serde_json::from_str(
            r#"{"otlp_endpoint":"http://collector:4318","service_name":"router"}"#,
        )
        .expect("parse");
        assert_eq!(cfg.otlp_endpoint.as_deref(), Some("http://collector:4318"));
        assert_eq!(cfg.service_name.as_deref(), Some("router"));
        assert_ne!(LogFormat::Auto.resolve(), LogFormat::Auto);
    }

    #[test]
    fn init_twice_is_a_no_op() {
        let cfg = LogConfig {
            filter: "not a [valid filter".into(),
            format: LogFormat::Json,
            ..LogConfig::default()
        };
        init(&cfg);
        init(&LogConfig::default());
        tracing::info!("still logging");
    }
}
