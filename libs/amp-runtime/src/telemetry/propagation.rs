//! W3C Trace Context in and out of message headers (bus messages, HTTP requests): the
//! header pairs are plain `(name, value)` strings, so callers need no OpenTelemetry types.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C `traceparent` header: version, trace id, parent span id, flags.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` header: vendor-specific trace data.
pub const TRACESTATE: &str = "tracestate";

struct Out<'a>(&'a mut Vec<(String, String)>);

impl Injector for Out<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` says nothing; leaving it out keeps messages small.
        if !value.is_empty() {
            self.0.push((key.to_owned(), value));
        }
    }
}

struct In<'a>(Vec<(&'a str, &'a str)>);

impl Extractor for In<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| *value)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| *name).collect()
    }
}

/// The `traceparent` (and `tracestate`, when there is one) headers naming `span` as the
/// parent of whatever receives them. Empty when `span` is not traced (tracing off, or the
/// span disabled), so carrying them costs nothing then.
pub fn trace_headers(span: &Span) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    if span.is_disabled() {
        return headers;
    }
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut Out(&mut headers));
    }
    headers
}

/// Makes `span` a child of the trace context in `headers` (`traceparent`, `tracestate`; names
/// compare case-insensitively, other headers are ignored). Call it before `span` is first
/// entered. Does nothing when `span` is not traced or the headers carry no valid context
/// (a malformed `traceparent` is ignored: `span` then starts its own trace).
pub fn set_parent<'a>(span: &Span, headers: impl IntoIterator<Item = (&'a str, &'a str)>) {
    if span.is_disabled() {
        return;
    }
    let carrier = In(headers.into_iter().collect());
    if carrier.get(TRACEPARENT).is_none() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_remote() {
        let _ = span.set_parent(cx);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::telemetry::{TRACE_TARGET, trace_layer};

    fn pairs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
        headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn context_travels_through_headers() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(trace_layer(&provider));
        let headers = tracing::subscriber::with_default(subscriber, || {
            let producer = tracing::debug_span!(target: TRACE_TARGET, "producer");
            let headers = trace_headers(&producer);
            let consumer = tracing::debug_span!(target: TRACE_TARGET, "consumer");
            set_parent(&consumer, pairs(&headers));
            consumer.in_scope(|| {});
            drop(consumer);
            drop(producer);
            // A header set with no valid traceparent leaves a span its own root.
            let orphan = tracing::debug_span!(target: TRACE_TARGET, "orphan");
            set_parent(&orphan, [(TRACEPARENT, "00-garbage")]);
            drop(orphan);
            headers
        });
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().expect("spans");
        let find = |name: &str| {
            spans
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("no span {name} in {spans:?}"))
        };
        let (producer, consumer, orphan) = (find("producer"), find("consumer"), find("orphan"));
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers[0].0, TRACEPARENT);
        assert!(
            headers[0]
                .1
                .contains(&producer.span_context.trace_id().to_string())
        );
        assert_ne!(producer.span_context.trace_id(), TraceId::INVALID);
        assert_eq!(
            consumer.span_context.trace_id(),
            producer.span_context.trace_id()
        );
        assert_eq!(consumer.parent_span_id, producer.span_context.span_id());
        assert_ne!(
            orphan.span_context.trace_id(),
            producer.span_context.trace_id()
        );
        assert_eq!(orphan.parent_span_id, SpanId::INVALID);
    }

    #[test]
    fn untraced_spans_carry_nothing() {
        // No trace layer: nothing to inject, and extraction is a no-op.
        let span = tracing::debug_span!(target: TRACE_TARGET, "off");
        assert!(trace_headers(&span).is_empty());
        set_parent(
            &span,
            [(
                TRACEPARENT,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )],
        );
    }
}
