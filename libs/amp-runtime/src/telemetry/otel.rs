//! The OpenTelemetry side of [`super::init`]: where spans go (OTLP over HTTP), the tracer
//! provider with its batch exporter, and the trace layer with its own filter.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use super::{LogConfig, LogFormat};

/// The `tracing` target of the per-message spans (`amp.route`, `amp.router.route`, ...).
/// They are `DEBUG` spans under this target so that, with tracing off, the usual `info` log
/// filter disables them outright; the trace layer always takes them.
pub const TRACE_TARGET: &str = "amp_trace";

/// How long [`flush`] waits for the last spans to be exported.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The provider [`super::init`] installed, kept for [`flush`].
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Where traces go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// The configured base URL; `/v1/traces` is appended unless already there.
    Configured(String),
    /// Only the standard `OTEL_EXPORTER_OTLP_*` env vars name one: the exporter reads them.
    FromEnv,
}

impl Endpoint {
    /// The endpoint in force: `configured` if set and not blank, else the standard env vars;
    /// `None` (tracing off) when neither names one.
    pub(super) fn resolve(configured: Option<&str>) -> Option<Endpoint> {
        Self::resolve_with(configured, |name| std::env::var(name).ok())
    }

    fn resolve_with(
        configured: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<Endpoint> {
        if let Some(url) = configured.map(str::trim).filter(|u| !u.is_empty()) {
            return Some(Endpoint::Configured(traces_url(url)));
        }
        let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
        (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .then_some(Endpoint::FromEnv)
    }
}

/// `base` with the OTLP/HTTP traces path, as `OTEL_EXPORTER_OTLP_ENDPOINT` is read.
fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// `service.name`: the configured one, else `OTEL_SERVICE_NAME`, else the executable's name.
pub(super) fn service_name(cfg: &LogConfig) -> String {
    cfg.service_name
        .clone()
        .or_else(|| std::env::var("OTEL_SERVICE_NAME").ok())
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            std::env::current_exe()
                .ok()?
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "amp".to_owned())
}

/// Builds the OTLP exporter and the provider (whose batch processor runs on its own thread),
/// and makes W3C Trace Context the global propagator.
///
/// Fails when the exporter cannot be built (e.g. an unparsable endpoint URL).
pub(super) fn install(endpoint: &Endpoint, service: &str) -> Result<SdkTracerProvider, String> {
    let builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    let builder = match endpoint {
        Endpoint::Configured(url) => builder.with_endpoint(url.clone()),
        Endpoint::FromEnv => builder,
    };
    let exporter = builder.build().map_err(|e| e.to_string())?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let _ = PROVIDER.set(provider.clone());
    Ok(provider)
}

/// Installs fmt (filtered by `filter`) and the trace layer as the global subscriber.
pub(super) fn init_with_traces(
    format: LogFormat,
    filter: EnvFilter,
    provider: &SdkTracerProvider,
) -> bool {
    let fmt = tracing_subscriber::fmt::layer().with_writer(BoxMakeWriter::new(std::io::stderr));
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
        _ => fmt.with_filter(filter).boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(trace_layer(provider))
        .try_init()
        .is_ok()
}

/// The layer that turns `tracing` spans into OpenTelemetry spans of `provider`: the message
/// spans ([`TRACE_TARGET`], any level) and other spans at `INFO` or above. Public so tests
/// can run it over an in-memory exporter exactly as [`super::init`] runs it over OTLP.
pub fn trace_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let filter = Targets::new()
        .with_target(TRACE_TARGET, LevelFilter::TRACE)
        .with_default(LevelFilter::INFO);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("amp"))
        .with_filter(filter)
}

/// Exports the spans still buffered and stops the exporter (waiting up to 5 s, on a
/// blocking thread). A no-op when tracing is off; call it once, when the process stops.
pub async fn flush() {
    let Some(provider) = PROVIDER.get().cloned() else {
        return;
    };
    let done =
        tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT)).await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("trace export at shutdown failed: {e}"),
        Err(e) => eprintln!("trace export at shutdown failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_resolution() {
        let none = |_: &str| None;
        assert_eq!(Endpoint::resolve_with(None, none), None);
        assert_eq!(Endpoint::resolve_with(Some("  "), none), None);
        assert_eq!(
            Endpoint::resolve_with(Some("http://c:4318/"), none),
            Some(Endpoint::Configured("http://c:4318/v1/traces".into()))
        );
        assert_eq!(
            Endpoint::resolve_with(Some("http://c:4318/v1/traces"), none),
            Some(Endpoint::Configured("http://c:4318/v1/traces".into()))
        );
        let env = |name: &str| (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://e".into());
        assert_eq!(Endpoint::resolve_with(None, env), Some(Endpoint::FromEnv));
        let blank = |_: &str| Some(String::new());
        assert_eq!(Endpoint::resolve_with(None, blank), None);
    }

    #[test]
    fn service_name_defaults_to_the_executable() {
        let cfg = LogConfig {
            service_name: Some("router".into()),
            ..LogConfig::default()
        };
        assert_eq!(service_name(&cfg), "router");
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            assert!(!service_name(&LogConfig::default()).is_empty());
        }
    }
}
