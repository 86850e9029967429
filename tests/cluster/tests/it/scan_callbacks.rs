//! Spec-next 08's scan callbacks in the cluster: the upload is confirmed through one ingest
//! replica, which runs the scan and schedules the callback in the shared store; delivery
//! POSTs it, signed with the uploader's webhook secret, and retries a 5xx.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amp_proto::attachment::Digest;
use amp_testkit::NatsServer;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use cluster_tests::{Deployment, HEAVY, Topology};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::agent;

const SECRET: &str = "whsec_cluster_scan_callback";

#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<(HeaderMap, Bytes)>>,
    answers: Mutex<VecDeque<u16>>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.got.lock().expect("lock").push((headers, body));
    let code = r.answers.lock().expect("lock").pop_front().unwrap_or(200);
    StatusCode::from_u16(code).expect("status")
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name}: {h:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_cluster_scan_callback_signed_and_retried() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let mut topology = Topology::new("scancb.test", nats.url(), 1);
    topology.replicas = [2, 1, 1, 0];
    topology.extra_toml = "[ingest.outbound]\nallow_private = true\n\n\
                           [delivery.outbound]\nallow_private = true\n\n\
                           [delivery.webhook]\npoll_interval_ms = 50\nretry_delays_ms = [0, 200, 400]\n"
        .to_owned();
    let d = Deployment::start(&topology).await;
    let (u1, u2) = (d.ingest[0].url(), d.ingest[1].url());

    let receiver = Arc::new(Receiver::default());
    receiver.answers.lock().expect("lock").push_back(503);
    let app = axum::Router::new()
        .route("/cb", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/cb", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let alice = agent(&u1, "scb", "alice").await;
    let http = reqwest::Client::new();
    let r = http
        .patch(format!("{u2}/v1/agents/me"))
        .bearer_auth(alice.api_key())
        .json(&json!({"delivery": {"webhook_url": url, "webhook_secret": SECRET}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());

    let file = b"cluster scan callback\n";
    let v: Value = http
        .post(format!("{u1}/v1/attachments/upload"))
        .bearer_auth(alice.api_key())
        .json(&json!({
            "filename": "cb.txt", "content_type": "text/plain", "size": file.len(),
            "digest": Digest::of(file).wire(), "scan_callback_url": url,
        }))
        .send()
        .await
        .expect("init")
        .json()
        .await
        .expect("json");
    let id = v["attachment_id"].as_str().unwrap_or_else(|| panic!("{v}"));
    let put = http
        .put(v["upload_url"].as_str().expect("upload_url"))
        .body(file.to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 200);
    // Confirmed (and scanned) through the other replica.
    let c: Value = http
        .post(format!("{u2}/v1/attachments/{id}/confirm"))
        .bearer_auth(alice.api_key())
        .send()
        .await
        .expect("confirm")
        .json()
        .await
        .expect("json");
    let status = c["scan_status"].as_str().expect("scan_status").to_owned();
    assert_ne!(status, "pending", "{c}");

    let start = Instant::now();
    while receiver.got.lock().expect("lock").len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "callback not delivered twice (a 503, then 200)\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = receiver.got.lock().expect("lock").clone();
    assert_eq!(got.len(), 2, "nothing after the 2xx");
    let (h, body) = &got[1];
    assert_eq!(header(h, "x-amp-attachment-id"), id);
    assert_eq!(header(h, "x-amp-delivery-attempt"), "2");
    let v: Value = serde_json::from_slice(body).expect("json");
    assert_eq!(v, json!({"attachment_id": id, "scan_status": status}));
    let ts = header(h, "x-amp-timestamp");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    assert_eq!(
        header(h, "x-amp-signature"),
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    server.abort();
}
