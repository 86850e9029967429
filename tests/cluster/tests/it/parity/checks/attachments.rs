//! Attachments (spec-next 04, 05, 08) across replicas: upload init on one ingest, the PUT
//! through the proxy, confirm on the other; a direct upload through the proxy; route-time checks; both download forms. On the
//! cluster the bytes are in the JetStream object store, so every replica serves them.

use amp_proto::attachment::Digest;
use amp_testkit::cluster::parity::Target;
use reqwest::Method;
use serde_json::{Value, json};

use crate::parity::http::{Agent, Http, Msg, fresh_id, tenant};

/// Init on `on`, PUT to the upload URL (the public URL: through the proxy), and the
/// second PUT refused; returns the id.
async fn upload(
    on: &Http,
    proxy: &Http,
    who: &Agent,
    name: &str,
    ct: &str,
    bytes: &[u8],
) -> String {
    let v = on
        .post(
            who,
            "/v1/attachments/upload",
            Some(
                json!({"filename": name, "content_type": ct, "size": bytes.len(),
                       "digest": Digest::of(bytes).wire()})
                .to_string(),
            ),
        )
        .await
        .json_with(201);
    let id = v["attachment_id"].as_str().expect("id").to_owned();
    let url = v["upload_url"].as_str().expect("upload_url");
    assert!(
        url.starts_with(&proxy.base),
        "upload URL on the public URL: {url}"
    );
    let put = proxy
        .send(reqwest::Client::new().put(url).body(bytes.to_vec()))
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    proxy
        .send(reqwest::Client::new().put(url).body(bytes.to_vec()))
        .await
        .assert_error(409, "conflict");
    id
}

fn object(status: &Value) -> Value {
    json!({
        "id": status["attachment_id"], "filename": status["filename"],
        "content_type": status["content_type"], "size": status["size"],
        "digest": status["digest"], "url": status["url"],
        "scan_status": status["scan_status"], "uploaded_at": status["uploaded_at"],
        "expires_at": status["expires_at"],
    })
}

fn payload(list: &[Value]) -> String {
    json!({"type": "notification", "message": "files", "attachments": list}).to_string()
}

pub(crate) async fn attachments(t: &Target) {
    let proxy = Http::new(&t.base);
    let a = Http::new(&t.ingest[0]);
    let b = Http::new(&t.ingest[1]);
    let tn = tenant("att");
    let alice = proxy.register(&tn, "alice").await;
    let bob = proxy.register(&tn, "bob").await;

    let info = proxy.call(Method::GET, "/v1/info", None, None).await.ok();
    assert!(
        info["capabilities"].as_array().is_some_and(
            |c| c.contains(&json!("attachments")) && c.contains(&json!("attachments:afp"))
        ),
        "{info}"
    );
    assert_eq!(
        info["attachment_limits"]["max_attachment_size"], 26_214_400,
        "{info}"
    );
    proxy
        .post(
            &alice,
            "/v1/attachments/upload",
            Some(
                json!({"filename": "a", "content_type": "text/plain", "size": 1,
                        "digest": format!("md5:{}", "ab".repeat(16))})
                .to_string(),
            ),
        )
        .await
        .assert_error_field(422, "invalid_digest_algorithm", "digest");

    // 2 MiB: more than one object-store chunk, and more than the proxy's JSON body limit.
    let bytes: Vec<u8> = (0..2 * 1024 * 1024)
        .map(|i| b"abcdefghij\n"[i % 11])
        .collect();
    let id = upload(&a, &proxy, &alice, "big.log", "text/plain", &bytes).await;
    let c = b
        .post(&alice, &format!("/v1/attachments/{id}/confirm"), None)
        .await
        .ok();
    assert_eq!(c["scan_status"], "basic_clean", "{c}");
    let status = a.get(&alice, &format!("/v1/attachments/{id}")).await.ok();
    assert_eq!(status["scan_status"], "basic_clean", "{status}");

    let m = Msg::new(&bob.address, "logs")
        .payload(&payload(&[object(&status)]))
        .id(&fresh_id());
    let body = m.flat(Some(&m.sign(&alice)));
    proxy.route(&alice, body.clone()).await.ok();
    proxy.route(&alice, body).await.ok();
    let again = Msg::new(&bob.address, "again").payload(&payload(&[object(&status)]));
    proxy.send_msg(&alice, &again).await.assert_error_field(
        409,
        "attachment_already_used",
        "payload.attachments[0].id",
    );

    // Bob downloads on either replica, with the plugin's path form, and by the signed URL.
    for (on, path) in [
        (&a, format!("/v1/attachments/{id}/download")),
        (&b, format!("/attachments/{id}/download")),
    ] {
        let r = on.client_get(&path, &bob.api_key).await;
        assert_eq!(r.0, 200, "{path}");
        assert_eq!(r.1, bytes, "{path}: the bytes sent");
    }
    let url = status["url"].as_str().expect("url");
    let r = reqwest::get(url).await.expect("signed url");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("content-disposition")
            .and_then(|v| v.to_str().ok()),
        Some("attachment; filename=\"big.log\"")
    );
    assert_eq!(r.bytes().await.expect("body").as_ref(), bytes.as_slice());

    // The direct upload (multipart, upload and confirm in one) of the same 2 MiB through the
    // proxy, which passes it on like the upload URL; the status on the other replica.
    let boundary = "----AMPparityBoundary";
    let meta = json!({"filename": "direct.log", "content_type": "text/plain",
                      "size": bytes.len(), "digest": Digest::of(&bytes).wire()});
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{meta}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"direct.log\"\r\n\
         Content-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let direct = proxy
        .send(
            proxy
                .request(Method::POST, "/v1/attachments/upload/direct")
                .bearer_auth(&alice.api_key)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body),
        )
        .await
        .json_with(201);
    assert_eq!(direct["scan_status"], "basic_clean", "{direct}");
    let direct_id = direct["attachment_id"].as_str().expect("id");
    let (code, got) = b
        .client_get(
            &format!("/v1/attachments/{direct_id}/download"),
            &alice.api_key,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(got, bytes, "the directly uploaded bytes");

    // Rejected and pending are refused on route.
    let png = b"\x89PNG\r\n\x1a\nnope";
    let bad = upload(&b, &proxy, &alice, "x.txt", "text/plain", png).await;
    let c = a
        .post(&alice, &format!("/v1/attachments/{bad}/confirm"), None)
        .await
        .ok();
    assert_eq!(c["scan_status"], "rejected", "{c}");
    let mut obj = object(&a.get(&alice, &format!("/v1/attachments/{bad}")).await.ok());
    obj["scan_status"] = json!("clean");
    obj["url"] = json!("https://example.invalid/x");
    obj["uploaded_at"] = json!("2026-01-01T00:00:00Z");
    obj["expires_at"] = json!("2026-01-08T00:00:00Z");
    proxy
        .send_msg(
            &alice,
            &Msg::new(&bob.address, "bad").payload(&payload(&[obj.clone()])),
        )
        .await
        .assert_error_field(422, "attachment_rejected", "payload.attachments[0].id");
    let waiting = upload(&a, &proxy, &alice, "w.txt", "text/plain", b"wait").await;
    obj["id"] = json!(waiting);
    obj["size"] = json!(4);
    obj["digest"] = json!(Digest::of(b"wait").wire());
    proxy
        .send_msg(
            &alice,
            &Msg::new(&bob.address, "wait").payload(&payload(&[obj])),
        )
        .await
        .assert_error_field(409, "attachment_pending", "payload.attachments[0].id");
}
