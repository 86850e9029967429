//! Spec-next 08's scan callbacks in the cluster: the upload is confirmed through one ingest
//! replica, which runs the scan and schedules the callback in the shared store; delivery
//! POSTs it, signed with the uploader's webhook secret, and retries a 5xx.

use std::time::Duration;

use amp_proto::attachment::Digest;
use amp_testkit::NatsServer;
use amp_testkit::cluster::{Deployment, HEAVY, Topology};
use serde_json::{Value, json};

use crate::common::{Receiver, agent, header, signed_with};

const SECRET: &str = "whsec_cluster_scan_callback";

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

    let receiver = Receiver::start(&[503]).await;
    let url = receiver.url.clone();

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

    receiver
        .wait_for(2, Duration::from_secs(15), || d.logs())
        .await;
    let got = receiver.got();
    assert_eq!(got.len(), 2, "nothing after the 2xx");
    let (h, body) = &got[1];
    assert_eq!(header(h, "x-amp-attachment-id"), id);
    assert_eq!(header(h, "x-amp-delivery-attempt"), "2");
    let v: Value = serde_json::from_slice(body).expect("json");
    assert_eq!(v, json!({"attachment_id": id, "scan_status": status}));
    assert!(signed_with(SECRET, h, body), "{h:?}");
}
