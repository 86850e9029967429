//! One message is one trace: `POST /v1/route` on an in-process `ampd` (ingest, the
//! in-process bus and the router in one process) yields an `amp.route` span and a router
//! span in the same trace, the router's a child continued from the bus headers.

use amp_runtime::telemetry::trace_layer;
use amp_testkit::ampd::Ampd;
use amp_testkit::message::Msg;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;

const PAYLOAD: &str = r#"{"type":"notification","message":"secret-ish payload text"}"#;

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

// Current-thread: the test's subscriber is the thread's default, and ampd's tasks (the
// router's consumers included) all run on this thread.
#[tokio::test(flavor = "current_thread")]
async fn a_routed_message_is_one_trace_from_ingest_to_router() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let _default = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(trace_layer(&provider)),
    );

    let s = Ampd::start().await;
    let alice = s.register("tracing", "alice").await;
    let bob = s.register("tracing", "bob").await;
    let m = Msg::new(&bob.address, "traced").payload(PAYLOAD);
    let signature = m.sign(&alice);
    let r = s
        .post(&alice, "/v1/route", Some(m.flat(Some(&signature))))
        .await;
    let answer = r.ok();
    let id = answer["id"].as_str().expect("id").to_owned();

    s.stop().await;
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().expect("finished spans");
    let named =
        |name: &str| -> Vec<&SpanData> { spans.iter().filter(|s| s.name == name).collect() };
    let routes = named("amp.route");
    let routers = named("amp.router.route");
    assert_eq!(routes.len(), 1, "one amp.route span: {spans:#?}");
    assert_eq!(routers.len(), 1, "one router span: {spans:#?}");
    let (route, router) = (routes[0], routers[0]);

    assert_eq!(
        router.span_context.trace_id(),
        route.span_context.trace_id(),
        "the router's span is in the message's trace"
    );
    assert_eq!(
        router.parent_span_id,
        route.span_context.span_id(),
        "the router's span is a child of amp.route"
    );
    assert!(
        router.parent_span_is_remote,
        "continued from the bus headers"
    );
    assert_eq!(attr(route, "message.id").as_deref(), Some(id.as_str()));
    assert_eq!(attr(route, "tenant").as_deref(), Some("tracing"));
    assert_eq!(attr(router, "message.id").as_deref(), Some(id.as_str()));
    // Nothing secret or private becomes an attribute.
    for span in [route, router] {
        for kv in &span.attributes {
            let value = kv.value.to_string();
            assert!(
                !value.contains("secret-ish") && !value.contains(&signature),
                "{} leaks into {}: {value}",
                kv.key,
                span.name
            );
        }
    }
}
