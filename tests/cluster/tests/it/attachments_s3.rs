//! The cluster with its attachment bytes in S3-compatible storage (`[store.blobs] backend =
//! "s3"`) on a real S3 server (`s3s-fs` on 127.0.0.1, SigV4 credentials from a secret file):
//! an upload URL flow across two ingest replicas, a direct upload, the objects in the bucket
//! under the configured prefix, a rejected attachment's bytes deleted, downloads on either
//! replica and by the signed URL, and `local.security.attachments` in the recipient's pickup.

use std::time::{Duration, Instant};

use amp_proto::attachment::Digest;
use amp_testkit::cluster::{Deployment, HEAVY, Topology};
use amp_testkit::{NatsServer, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server};
use serde_json::{Value, json};

use crate::parity::http::{Http, Msg, tenant};

const BUCKET: &str = "amp-cluster";
const PREFIX: &str = "blobs";
const BOUNDARY: &str = "----AMPclusterBoundary";

fn multipart(metadata: &Value, file: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\
         Content-Type: application/json\r\n\r\n{metadata}\r\n--{BOUNDARY}\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn meta(name: &str, ct: &str, bytes: &[u8]) -> Value {
    json!({"filename": name, "content_type": ct, "size": bytes.len(),
           "digest": Digest::of(bytes).wire()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_cluster_attachments_in_s3_storage() {
    let Some(s3) = S3Server::start(&[BUCKET]) else {
        return;
    };
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let secrets = tempfile::tempdir().expect("tempdir");
    let secret_file = secrets.path().join("s3-secret");
    std::fs::write(&secret_file, S3_SECRET_KEY).expect("secret file");
    let mut topology = Topology::new("s3.test", nats.url(), 1);
    topology.replicas = [2, 1, 1, 0];
    topology.store_toml = format!(
        "[store.blobs]\nbackend = \"s3\"\n\n[store.blobs.s3]\nbucket = {BUCKET:?}\n\
         prefix = {PREFIX:?}\nendpoint = {endpoint:?}\nallow_http = true\npath_style = true\n\
         access_key_id = {S3_ACCESS_KEY:?}\nsecret_access_key_file = {secret:?}\n\n",
        endpoint = s3.endpoint(),
        secret = secret_file.display().to_string(),
    );
    let d = Deployment::start(&topology).await;
    let a = Http::new(&d.ingest[0].url());
    let b = Http::new(&d.ingest[1].url());
    let tn = tenant("s3");
    let alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;
    let object = |digest: &Digest, id: &str| {
        s3.bucket_dir(BUCKET)
            .join(PREFIX)
            .join(format!("{}.{id}", digest.hex()))
    };

    // The upload URL flow: init on one replica, PUT, confirm on the other.
    let bytes: Vec<u8> = (0..300_000).map(|i| b"0123456789\n"[i % 11]).collect();
    let v = a
        .post(
            &alice,
            "/v1/attachments/upload",
            Some(meta("big.log", "text/plain", &bytes).to_string()),
        )
        .await
        .json_with(201);
    let id = v["attachment_id"].as_str().expect("id").to_owned();
    let put = a
        .send(
            reqwest::Client::new()
                .put(v["upload_url"].as_str().expect("upload_url"))
                .body(bytes.clone()),
        )
        .await;
    assert_eq!(put.status, 200, "{}\n{}", put.text, d.logs());
    let stored = object(&Digest::of(&bytes), &id);
    assert_eq!(
        std::fs::read(&stored).unwrap_or_else(|e| panic!(
            "object {} in the bucket: {e}\n{}",
            stored.display(),
            s3.log()
        )),
        bytes,
        "the bytes are in the S3 bucket under the prefix"
    );
    let c = b
        .post(&alice, &format!("/v1/attachments/{id}/confirm"), None)
        .await
        .ok();
    assert_eq!(c["scan_status"], "basic_clean", "{c}");
    let status = b.get(&alice, &format!("/v1/attachments/{id}")).await.ok();

    // A direct upload on the other replica.
    let small = b"direct bytes".to_vec();
    let r = b
        .send(
            b.request(reqwest::Method::POST, "/v1/attachments/upload/direct")
                .bearer_auth(&alice.api_key)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(multipart(&meta("d.txt", "text/plain", &small), &small)),
        )
        .await;
    let direct = r.json_with(201);
    assert_eq!(direct["scan_status"], "basic_clean", "{direct}");
    let direct_id = direct["attachment_id"].as_str().expect("id");
    assert_eq!(
        std::fs::read(object(&Digest::of(&small), direct_id)).expect("direct object"),
        small
    );
    // A rejected one's bytes are deleted from the bucket.
    let elf = [&b"\x7fELF\x02\x01\x01"[..], &[0u8; 32]].concat();
    let r = a
        .send(
            a.request(reqwest::Method::POST, "/v1/attachments/upload/direct")
                .bearer_auth(&alice.api_key)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(multipart(&meta("tool", "text/plain", &elf), &elf)),
        )
        .await;
    let rejected = r.json_with(201);
    assert_eq!(rejected["scan_status"], "rejected", "{rejected}");
    let rejected_id = rejected["attachment_id"].as_str().expect("id");
    assert!(
        !object(&Digest::of(&elf), rejected_id).exists(),
        "a rejected attachment's bytes are deleted"
    );

    // Routed to bob: the pickup carries the scan result; bob downloads on either replica and
    // by the signed URL.
    let obj = json!({
        "id": status["attachment_id"], "filename": status["filename"],
        "content_type": status["content_type"], "size": status["size"],
        "digest": status["digest"], "url": status["url"],
        "scan_status": status["scan_status"], "uploaded_at": status["uploaded_at"],
        "expires_at": status["expires_at"],
    });
    let payload =
        json!({"type": "notification", "message": "logs", "attachments": [obj]}).to_string();
    let m = Msg::new(&bob.address, "logs").payload(&payload);
    a.send_msg(&alice, &m).await.ok();
    let deadline = Instant::now() + d.drain_timeout;
    let item = loop {
        let (page, _) = b.pending(&bob, "").await;
        if let Some(item) = page["messages"].as_array().and_then(|l| l.first()) {
            break item.clone();
        }
        assert!(Instant::now() < deadline, "not delivered\n{}", d.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let sec = &item["local"]["security"]["attachments"][0];
    assert_eq!(sec["id"], id.as_str(), "{item}");
    assert_eq!(sec["scan_status"], "basic_clean", "{item}");
    assert_eq!(sec["digest_verified"], true, "{item}");
    for on in [&a, &b] {
        let (code, got) = on
            .client_get(&format!("/v1/attachments/{id}/download"), &bob.api_key)
            .await;
        assert_eq!(code, 200);
        assert_eq!(got, bytes);
    }
    let r = reqwest::get(status["url"].as_str().expect("url"))
        .await
        .expect("signed url");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("body").as_ref(), bytes.as_slice());
}
