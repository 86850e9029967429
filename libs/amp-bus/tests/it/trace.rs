//! One trace across a real broker: a span's W3C context rides a JetStream publish and a core
//! NATS notify as headers, and the consumer's span on another connection (as in another
//! process) becomes its child.

use std::time::Duration;

use amp_bus::subjects::{ingress_subject, notify_subject};
use amp_bus::{BusMessage, JetStreamBus, JetStreamConfig, StreamName};
use amp_runtime::telemetry::{TRACE_TARGET, set_parent, trace_headers, trace_layer};
use amp_testkit::NatsServer;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio::time::timeout;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

const WAIT: Duration = Duration::from_secs(10);

fn span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name} among {:?}", names(spans)))
}

fn names(spans: &[SpanData]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_ref()).collect()
}

// Current-thread: the test's subscriber is the thread's default, and every task runs here.
#[tokio::test(flavor = "current_thread")]
async fn trace_context_crosses_jetstream_and_notify() {
    let server = NatsServer::start();
    let config = JetStreamConfig {
        urls: vec![server.url()],
        prefix: "trace".to_owned(),
        ..JetStreamConfig::default()
    };
    // Two connections, as the ingest and router processes have.
    let publisher = JetStreamBus::connect_bus(config.clone())
        .await
        .expect("connect publisher");
    let receiver = JetStreamBus::connect_bus(config)
        .await
        .expect("connect receiver");

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let _default = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(trace_layer(&provider)),
    );

    let mut consumer = receiver
        .consume(StreamName::Ingress, "router")
        .await
        .expect("consume");
    let hint_subject = notify_subject("trace", "agent-1");
    let mut hints = receiver.subscribe(&hint_subject).await.expect("subscribe");

    let producer = tracing::debug_span!(target: TRACE_TARGET, "producer");
    async {
        let headers = trace_headers(&tracing::Span::current());
        assert!(!headers.is_empty(), "a traced span yields a traceparent");
        let msg = BusMessage::new(ingress_subject("trace"), "work")
            .with_header("Amp-Id", "m-1")
            .with_trace_context(headers.clone());
        publisher
            .publish(StreamName::Ingress, "m-1", msg)
            .await
            .expect("publish");
        let hint = BusMessage::new(hint_subject.clone(), "hint").with_trace_context(headers);
        publisher.notify_message(hint).await.expect("notify");
    }
    .instrument(producer.clone())
    .await;
    drop(producer);

    let delivery = timeout(WAIT, consumer.next())
        .await
        .expect("delivery in time")
        .expect("delivery");
    let consumed = tracing::debug_span!(target: TRACE_TARGET, "consumer");
    set_parent(&consumed, delivery.message().trace_context());
    async { delivery.ack().await.expect("ack") }
        .instrument(consumed)
        .await;

    let hint = timeout(WAIT, hints.next())
        .await
        .expect("hint in time")
        .expect("hint");
    let pushed = tracing::debug_span!(target: TRACE_TARGET, "push");
    set_parent(&pushed, hint.trace_context());
    pushed.in_scope(|| {});
    drop(pushed);

    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().expect("finished spans");
    let producer = span(&spans, "producer");
    let trace_id = producer.span_context.trace_id();
    for name in ["consumer", "push"] {
        let child = span(&spans, name);
        assert_eq!(
            child.span_context.trace_id(),
            trace_id,
            "{name} is not in the producer's trace"
        );
        assert_eq!(
            child.parent_span_id,
            producer.span_context.span_id(),
            "{name}'s parent is not the producer"
        );
    }
    publisher.shutdown().await;
    receiver.shutdown().await;
}
