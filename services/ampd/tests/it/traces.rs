//! One message is one trace: `POST /v1/route` on an in-process `ampd` (ingest, the
//! in-process bus and the router in one process) yields an `amp.route` span and a router
//! span in the same trace, the router's a child continued from the bus headers.

use std::time::Duration;

use amp_proto::SecretKey;
use amp_proto::signing::{SignedFields, sign_message};
use amp_runtime::Shutdown;
use amp_runtime::telemetry::trace_layer;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt as _;

const PAYLOAD: &str = r#"{"type":"notification","message":"secret-ish payload text"}"#;

async fn register(http: &reqwest::Client, url: &str, name: &str) -> (Value, SecretKey) {
    let key = SecretKey::generate();
    let body = json!({
        "tenant": "tracing",
        "name": name,
        "public_key": key.public().to_pem(),
        "key_algorithm": "Ed25519",
    });
    let r = http
        .post(format!("{url}/v1/register"))
        .json(&body)
        .send()
        .await
        .expect("register");
    assert!(r.status().is_success(), "register {name}: {}", r.status());
    (r.json().await.expect("register json"), key)
}

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

    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ampd::Config::default();
    config.server.data_dir = dir.path().to_owned();
    config.server.shutdown_grace_secs = 1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = Shutdown::new();
    let task = tokio::spawn(ampd::run(config, listener, shutdown.clone()));
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await
            && r.status() == StatusCode::OK
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "ampd did not become ready");

    let (alice, alice_key) = register(&http, &url, "alice").await;
    let (bob, _) = register(&http, &url, "bob").await;
    let from = alice["address"].as_str().expect("address");
    let to = bob["address"].as_str().expect("address");
    let signature = sign_message(
        &alice_key,
        &SignedFields {
            from,
            to,
            subject: "traced",
            priority: "normal",
            in_reply_to: "",
        },
        PAYLOAD,
    )
    .expect("sign");
    let body = format!(
        r#"{{"to":{},"subject":"traced","signature":{},"payload":{PAYLOAD}}}"#,
        json!(to),
        json!(signature)
    );
    let r = http
        .post(format!("{url}/v1/route"))
        .bearer_auth(alice["api_key"].as_str().expect("api_key"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("route");
    assert_eq!(r.status(), StatusCode::OK);
    let answer: Value = r.json().await.expect("route json");
    let id = answer["id"].as_str().expect("id").to_owned();

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run returns after shutdown")
        .expect("join")
        .expect("run succeeds");
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
