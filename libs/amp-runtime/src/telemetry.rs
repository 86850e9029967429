//! Logging setup: a `tracing` subscriber writing to stderr, JSON lines or human-readable.

use std::io::IsTerminal;
use std::sync::Once;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

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
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Auto,
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

/// Installs the global log subscriber (stderr). Only the first call in a process does
/// anything; later calls, or a subscriber installed by someone else, make it a no-op.
///
/// An invalid filter falls back to `info` with a warning rather than failing start-up.
pub fn init(cfg: &LogConfig) {
    INIT.call_once(|| {
        let (filter, bad_filter) = filter(cfg);
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(BoxMakeWriter::new(std::io::stderr));
        let installed = match cfg.format.resolve() {
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .try_init(),
            _ => builder.try_init(),
        };
        if installed.is_ok() {
            if let Some((directive, error)) = bad_filter {
                tracing::warn!(filter = %directive, error = %error, "invalid log filter, using info");
            }
        }
    });
}

/// The filter from `RUST_LOG` if set, else `cfg.filter`; `info` if that does not parse.
fn filter(cfg: &LogConfig) -> (EnvFilter, Option<(String, String)>) {
    let directive = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| cfg.filter.clone());
    match EnvFilter::try_new(&directive) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some((directive, e.to_string()))),
    }
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
        assert_ne!(LogFormat::Auto.resolve(), LogFormat::Auto);
    }

    #[test]
    fn init_twice_is_a_no_op() {
        let cfg = LogConfig {
            filter: "not a [valid filter".into(),
            format: LogFormat::Json,
        };
        init(&cfg);
        init(&LogConfig::default());
        tracing::info!("still logging");
    }
}
