//! Attachments between providers (spec-next 06): forwarded with their signed URLs untouched
//! to a provider that takes them (the recipient downloads from the sender's provider without
//! an account there); refused whole, with a bounce to the sender, for a provider that does
//! not advertise `attachments`.

use amp_proto::attachment::Digest;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Agent, Ampd, FederationExt, Provider};

/// Uploads `bytes` on `node` as `who` and returns the status body (with its signed `url`).
async fn attach(node: &Ampd, who: &Agent, name: &str, bytes: &[u8]) -> Value {
    let init: Value = node
        .http
        .post(format!("{}/v1/attachments/upload", node.url()))
        .bearer_auth(&who.api_key)
        .json(
            &json!({"filename": name, "content_type": "text/plain", "size": bytes.len(),
                      "digest": Digest::of(bytes).wire()}),
        )
        .send()
        .await
        .expect("init")
        .json()
        .await
        .expect("json");
    let id = init["attachment_id"].as_str().expect("id");
    let put = node
        .http
        .put(init["upload_url"].as_str().expect("upload_url"))
        .body(bytes.to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), StatusCode::OK);
    let confirm = node
        .http
        .post(format!("{}/v1/attachments/{id}/confirm", node.url()))
        .bearer_auth(&who.api_key)
        .send()
        .await
        .expect("confirm");
    assert_eq!(confirm.status(), StatusCode::OK);
    node.http
        .get(format!("{}/v1/attachments/{id}", node.url()))
        .bearer_auth(&who.api_key)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json")
}

fn payload(status: &Value) -> String {
    json!({"type": "notification", "message": "the file", "attachments": [{
        "id": status["attachment_id"], "filename": status["filename"],
        "content_type": status["content_type"], "size": status["size"],
        "digest": status["digest"], "url": status["url"], "scan_status": status["scan_status"],
        "uploaded_at": status["uploaded_at"], "expires_at": status["expires_at"],
    }]})
    .to_string()
}

#[tokio::test]
async fn spec_next_federated_attachment_round_trip() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    let a = pa.start(|f| f.peers = vec![pb.as_peer()]).await;
    let b = pb.start(|f| f.peers = vec![pa.as_peer()]).await;
    let alice = a.register("acme", "alice").await;
    let bob = b.register("team", "bob").await;

    let bytes: Vec<u8> = (0..100_000u32)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let status = attach(&a, &alice, "numbers.txt", &bytes).await;
    let raw = payload(&status);
    let r = a.send(&alice, &bob.address, "numbers", &raw, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Bob's provider delivers the payload as signed, URL and all.
    let (_, text) = b.wait_pending(&bob, 1).await;
    assert!(text.contains(&raw), "payload verbatim: {text}");
    // Bob downloads from alpha by the signed URL, with no account there.
    let url = status["url"].as_str().expect("url");
    assert!(url.starts_with(a.url()), "{url}");
    let got = reqwest::get(url).await.expect("download");
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.expect("body").as_ref(), bytes.as_slice());
    assert_eq!(a.pending_count(&alice).await, 0, "no bounce");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn spec_next_federated_attachment_to_a_provider_without_attachments_bounces() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    let a = pa.start(|f| f.peers = vec![pb.as_peer()]).await;
    let b = pb
        .start_with(|c| {
            c.federation.peers = vec![pa.as_peer()];
            c.ingest.attachments.enabled = false;
        })
        .await;
    let info = b.info().await;
    assert!(
        !info["capabilities"]
            .as_array()
            .expect("capabilities")
            .contains(&json!("attachments")),
        "{info}"
    );
    assert!(info.get("attachment_limits").is_none(), "{info}");
    let alice = a.register("acme", "alice").await;
    let bob = b.register("team", "bob").await;

    let status = attach(&a, &alice, "a.txt", b"hello").await;
    let r = a
        .send(&alice, &bob.address, "file", &payload(&status), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json()["id"].as_str().expect("id").to_owned();

    let (page, _) = a.wait_pending(&alice, 1).await;
    let bounce = &page["messages"][0];
    assert_eq!(bounce["payload"]["type"], "system", "{bounce}");
    assert_eq!(
        bounce["payload"]["context"],
        json!({ "original_id": id, "recipient": bob.address, "error": "attachments_not_supported" })
    );
    // Never delivered with the attachment stripped.
    assert_eq!(b.pending_count(&bob).await, 0);
    a.stop().await;
    b.stop().await;
}
