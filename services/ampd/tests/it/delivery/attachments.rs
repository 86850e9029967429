//! Attachments on the delivery side of a whole `ampd` (spec-next 07, 08): the direct upload
//! endpoint (multipart, upload and confirm in one step) with its errors, the per-attachment
//! `local.security.attachments` block on every delivery path (pickup, WebSocket push,
//! webhook), and the attachment quotas per agent and per tenant.

use amp_proto::attachment::Digest;

use super::*;

const BOUNDARY: &str = "----AMPtestBoundary7MA4YWxkTrZu0gW";

/// The multipart body of spec 08's example: a `metadata` JSON part, then a `file` part.
fn multipart(metadata: &Value, filename: &str, content_type: &str, file: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\
             Content-Type: application/json\r\n\r\n{metadata}\r\n--{BOUNDARY}\r\n\
             Content-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: {content_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// What the delivery attachment tests do through an [`Ampd`].
trait AttachmentsExt {
    /// `POST {path}` with a raw body and content type.
    async fn post_raw(&self, who: Option<&Agent>, path: &str, ct: &str, body: Vec<u8>) -> Resp;
    /// A direct upload with the metadata describing `file` exactly.
    async fn direct(&self, who: &Agent, filename: &str, ct: &str, file: &[u8]) -> Resp;
    /// A direct upload with `meta` as its metadata part.
    async fn direct_with(&self, who: &Agent, meta: &Value, file: &[u8]) -> Resp;
    /// Uploads directly, expects 201 and the scan's end; returns the status body.
    async fn uploaded(&self, who: &Agent, filename: &str, file: &[u8]) -> Value;
    /// `POST /v1/attachments/upload` (the upload URL flow's first step).
    async fn init_upload(&self, who: &Agent, size: usize) -> Resp;
}

impl AttachmentsExt for Ampd {
    async fn post_raw(&self, who: Option<&Agent>, path: &str, ct: &str, body: Vec<u8>) -> Resp {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url()))
            .header("content-type", ct)
            .body(body);
        if let Some(a) = who {
            req = req.bearer_auth(&a.api_key);
        }
        amp_testkit::http::send(req).await
    }

    async fn direct(&self, who: &Agent, filename: &str, ct: &str, file: &[u8]) -> Resp {
        let meta = json!({
            "filename": filename,
            "content_type": ct,
            "size": file.len(),
            "digest": Digest::of(file).wire(),
        });
        self.direct_with(who, &meta, file).await
    }

    async fn direct_with(&self, who: &Agent, meta: &Value, file: &[u8]) -> Resp {
        self.post_raw(
            Some(who),
            "/v1/attachments/upload/direct",
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            multipart(meta, "f.txt", "text/plain", file),
        )
        .await
    }

    async fn uploaded(&self, who: &Agent, filename: &str, file: &[u8]) -> Value {
        let r = self.direct(who, filename, "text/plain", file).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let v = r.json();
        let id = v["attachment_id"].as_str().expect("attachment_id");
        let status = self.get(who, &format!("/v1/attachments/{id}")).await.ok();
        assert_eq!(status["scan_status"], v["scan_status"], "{status}");
        status
    }

    async fn init_upload(&self, who: &Agent, size: usize) -> Resp {
        let body = json!({
            "filename": "q.txt",
            "content_type": "text/plain",
            "size": size,
            "digest": Digest::of(b"q").wire(),
        });
        self.post(who, "/v1/attachments/upload", Some(body.to_string()))
            .await
    }
}

/// The payload attachment object built from a status body, as the plugin builds it.
fn payload_of(text: &str, status: &Value) -> String {
    let obj = json!({
        "id": status["attachment_id"],
        "filename": status["filename"],
        "content_type": status["content_type"],
        "size": status["size"],
        "digest": status["digest"],
        "url": status["url"],
        "scan_status": status["scan_status"],
        "uploaded_at": status["uploaded_at"],
        "expires_at": status["expires_at"],
    });
    json!({"type": "notification", "message": text, "attachments": [obj]}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_attachment_direct_upload_stores_scans_and_serves() {
    let s = start().await;
    let alice = s.register("direct1", "alice").await;
    let bob = s.register("direct1", "bob").await;

    let info = s.call(Method::GET, "/v1/info", None, None).await.ok();
    assert_eq!(info["attachment_limits"]["direct_upload"], true, "{info}");

    // Upload and confirm in one step: 201 with the id and the scan's result.
    let bytes = b"2026-12-06 12:00:00 puma: worker booted\n".repeat(40);
    let r = s.direct(&alice, "puma.log", "text/plain", &bytes).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    let id = v["attachment_id"].as_str().expect("id").to_owned();
    assert!(amp_proto::attachment::is_valid_id(&id), "{v}");
    assert_eq!(v["scan_status"], "basic_clean", "{v}");
    let status = s.get(&alice, &format!("/v1/attachments/{id}")).await.ok();
    assert_eq!(status["size"], bytes.len(), "{status}");
    assert_eq!(status["digest"], Digest::of(&bytes).wire(), "{status}");
    assert_eq!(status["filename"], "puma.log", "{status}");
    assert!(status["url"].is_string(), "{status}");
    // It routes and downloads like an attachment uploaded through the upload URL.
    let payload = payload_of("the log", &status);
    s.route(&alice, &bob.address, &payload, json!({}))
        .await
        .ok();
    let d = s
        .http
        .get(format!("{}/v1/attachments/{id}/download", s.url()))
        .bearer_auth(&bob.api_key)
        .send()
        .await
        .expect("download");
    assert_eq!(d.status(), StatusCode::OK);
    assert_eq!(
        d.headers()
            .get("content-disposition")
            .and_then(|h| h.to_str().ok()),
        Some("attachment; filename=\"puma.log\"")
    );
    assert_eq!(d.bytes().await.expect("bytes").as_ref(), bytes.as_slice());

    // The plugin's path form, without /v1, serves it too; an executable declared as text is
    // stored and then rejected by the same scan as the upload URL flow.
    let elf = [&b"\x7fELF\x02\x01\x01"[..], &[0u8; 64]].concat();
    let meta = json!({
        "filename": "tool",
        "content_type": "text/plain",
        "size": elf.len(),
        "digest": Digest::of(&elf).wire(),
    });
    let r = s
        .post_raw(
            Some(&alice),
            "/attachments/upload/direct",
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            multipart(&meta, "tool", "text/plain", &elf),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["scan_status"], "rejected", "{}", r.text);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_attachment_direct_upload_checks_digest_size_and_limits() {
    let s = start_with(|c| c.ingest.attachments.max_attachment_size = 1000).await;
    let alice = s.register("direct2", "alice").await;
    let bytes = b"exactly these bytes".to_vec();
    let good = |size: usize, digest: String| json!({"filename": "a.txt", "content_type": "text/plain", "size": size, "digest": digest});

    // The file must be what the metadata declares: size, then SHA-256 (nothing is stored).
    let r = s
        .direct_with(
            &alice,
            &good(bytes.len() + 1, Digest::of(&bytes).wire()),
            &bytes,
        )
        .await;
    r.assert_error(400, "invalid_field");
    assert_eq!(r.json()["field"], "file", "{}", r.text);
    let r = s
        .direct_with(
            &alice,
            &good(bytes.len(), Digest::of(b"other").wire()),
            &bytes,
        )
        .await;
    r.assert_error(400, "invalid_field");
    assert_eq!(r.json()["field"], "file", "{}", r.text);
    // The metadata's own rules, as for the upload URL flow.
    let md5 = format!("md5:{}", "0".repeat(32));
    s.direct_with(&alice, &good(bytes.len(), md5), &bytes)
        .await
        .assert_error(422, "invalid_digest_algorithm");
    s.direct_with(&alice, &good(2000, Digest::of(&bytes).wire()), &bytes)
        .await
        .assert_error(413, "attachment_too_large");
    // A body far past the limit is cut off while it is read.
    let huge = vec![b'x'; 200_000];
    s.direct_with(&alice, &good(10, Digest::of(&huge).wire()), &huge)
        .await
        .assert_error(413, "attachment_too_large");
    // Parts: both are needed, once each; anything else is refused.
    let only_meta = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{}\r\n--{BOUNDARY}--\r\n",
        good(bytes.len(), Digest::of(&bytes).wire())
    );
    let r = s
        .post_raw(
            Some(&alice),
            "/v1/attachments/upload/direct",
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            only_meta.into_bytes(),
        )
        .await;
    r.assert_error(400, "missing_field");
    assert_eq!(r.json()["field"], "file", "{}", r.text);
    // JSON instead of multipart.
    s.post_raw(
        Some(&alice),
        "/v1/attachments/upload/direct",
        "application/json",
        good(1, Digest::of(b"x").wire()).to_string().into_bytes(),
    )
    .await
    .assert_error(400, "invalid_request");
    // No API key.
    s.post_raw(
        None,
        "/v1/attachments/upload/direct",
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        multipart(
            &good(bytes.len(), Digest::of(&bytes).wire()),
            "a",
            "text/plain",
            &bytes,
        ),
    )
    .await
    .assert_error(401, "unauthorized");
    // And the well-formed one is accepted.
    let r = s.direct(&alice, "a.txt", "text/plain", &bytes).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    s.stop().await;
}

/// One entry of `local.security.attachments`, checked against what the scan recorded.
#[track_caller]
fn assert_attachment_security(security: &Value, id: &str, scan_status: &str) {
    let list = security["attachments"]
        .as_array()
        .unwrap_or_else(|| panic!("no attachments in local.security: {security}"));
    assert_eq!(list.len(), 1, "{security}");
    let a = &list[0];
    assert_eq!(a["id"], id, "{security}");
    assert_eq!(a["scan_status"], scan_status, "{security}");
    assert_eq!(a["digest_verified"], true, "{security}");
    assert_eq!(a["injection_flags"], json!([]), "{security}");
    assert!(
        a["scanned_at"]
            .as_str()
            .and_then(Timestamp::parse)
            .is_some(),
        "{security}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_attachment_local_security_on_pickup_websocket_and_webhook() {
    // An operator's scanner that flags files containing SUSPICIOUS (exit 10).
    let s = start_with(|c| {
        c.ingest.attachments.scan_command = vec![
            "sh".into(),
            "-c".into(),
            "if grep -q SUSPICIOUS; then exit 10; fi; exit 0".into(),
        ];
    })
    .await;
    let hook = start_hook(&[], 200).await;
    let alice = s.register("attsec", "alice").await;
    let bob = s.register("attsec", "bob").await;
    let carol = s.register("attsec", "carol").await;
    let dave = s.register_hooked("attsec", "dave", &hook.url).await;

    // Pickup: a suspicious attachment, with the stage's finding.
    let st = s.uploaded(&alice, "notes.txt", b"SUSPICIOUS content").await;
    assert_eq!(st["scan_status"], "suspicious", "{st}");
    let id = st["attachment_id"].as_str().expect("id").to_owned();
    let answer = s
        .route(&alice, &bob.address, &payload_of("to bob", &st), json!({}))
        .await
        .ok();
    assert_eq!(
        answer["warnings"],
        json!(["attachment_suspicious"]),
        "{answer}"
    );
    let page = s.get(&bob, "/v1/messages/pending").await.ok();
    let item = &page["messages"][0];
    let security = &item["local"]["security"];
    assert_attachment_security(security, &id, "suspicious");
    assert_eq!(
        security["attachments"][0]["scan_flags"],
        json!(["command:flagged"]),
        "{security}"
    );
    // The payload is untouched: scan details live in local.security only (spec 04).
    assert_eq!(
        item["payload"]["attachments"][0]["id"],
        id.as_str(),
        "{item}"
    );
    assert!(
        item["payload"]["attachments"][0]
            .get("digest_verified")
            .is_none(),
        "{item}"
    );

    // WebSocket push.
    let (mut ws, _) = s.connect(&carol).await;
    let st = s.uploaded(&alice, "plain.txt", b"plain content").await;
    assert_eq!(st["scan_status"], "basic_clean", "{st}");
    let id = st["attachment_id"].as_str().expect("id").to_owned();
    let sent = s
        .route(
            &alice,
            &carol.address,
            &payload_of("to carol", &st),
            json!({}),
        )
        .await
        .ok();
    let f = recv_type(&mut ws, "message.new").await;
    assert_eq!(f["data"]["id"], sent["id"], "{f}");
    let security = &f["data"]["local"]["security"];
    assert_attachment_security(security, &id, "basic_clean");
    assert!(
        security["attachments"][0].get("scan_flags").is_none(),
        "no extra findings: {security}"
    );

    // Webhook.
    let st = s.uploaded(&alice, "hook.txt", b"webhook content").await;
    let id = st["attachment_id"].as_str().expect("id").to_owned();
    s.route(
        &alice,
        &dave.address,
        &payload_of("to dave", &st),
        json!({}),
    )
    .await
    .ok();
    let got = hook.wait_for(1, FRAME_WAIT).await;
    let body: Value = serde_json::from_slice(&got[0].body).expect("JSON body");
    assert_attachment_security(&body["local"]["security"], &id, "basic_clean");

    // A message without attachments has no such block.
    let plain = s.send(&alice, &bob.address, "no files").await;
    let page = s.get(&bob, "/v1/messages/pending").await.ok();
    let item = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["id"] == plain["id"])
        .expect("the plain message")
        .clone();
    assert!(item["local"]["security"].is_object(), "{item}");
    assert!(
        item["local"]["security"].get("attachments").is_none(),
        "{item}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_attachment_quotas_per_agent_and_tenant() {
    let s = start_with(|c| {
        let a = &mut c.ingest.attachments;
        a.agent_max_attachments = 2;
        a.agent_max_bytes = 100;
        a.tenant_max_attachments = 3;
        a.tenant_max_bytes = 150;
    })
    .await;
    let alice = s.register("quota1", "alice").await;
    let bob = s.register("quota1", "bob").await;
    let carol = s.register("quota1", "carol").await;
    let other = s.register("quota2", "dan").await;

    // Per agent, by bytes.
    let r = s.init_upload(&bob, 90).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = s.init_upload(&bob, 20).await;
    r.assert_error(413, "attachment_too_large");
    assert_eq!(r.json()["quota"], "agent_bytes", "{}", r.text);

    // Per agent, by count: two held, the third refused (upload URL and direct alike).
    for _ in 0..2 {
        let r = s.init_upload(&alice, 10).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let r = s.init_upload(&alice, 10).await;
    r.assert_error(403, "forbidden");
    assert_eq!(r.json()["quota"], "agent_attachments", "{}", r.text);
    let r = s.direct(&alice, "d.txt", "text/plain", b"direct").await;
    r.assert_error(403, "forbidden");
    assert_eq!(r.json()["quota"], "agent_attachments", "{}", r.text);

    // Per tenant: 3 held (alice 2, bob 1), so carol gets none; by bytes, 110 of 150 held.
    let r = s.init_upload(&carol, 10).await;
    r.assert_error(403, "forbidden");
    assert_eq!(r.json()["quota"], "tenant_attachments", "{}", r.text);

    // Another tenant is not affected.
    let r = s.direct(&other, "x.txt", "text/plain", b"x").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // A rejected attachment stops counting: dan's second, an executable, frees its place.
    let elf = [&b"\x7fELF\x02\x01\x01"[..], &[0u8; 16]].concat();
    let r = s.direct(&other, "tool", "text/plain", &elf).await;
    assert_eq!(r.json()["scan_status"], "rejected", "{}", r.text);
    let r = s.direct(&other, "y.txt", "text/plain", b"y").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = s.direct(&other, "z.txt", "text/plain", b"z").await;
    r.assert_error(403, "forbidden");
    assert_eq!(r.json()["quota"], "agent_attachments", "{}", r.text);

    // Tenant bytes: a tenant with room by count but not by bytes.
    s.stop().await;
    let s = start_with(|c| {
        let a = &mut c.ingest.attachments;
        a.agent_max_bytes = 0;
        a.tenant_max_bytes = 100;
    })
    .await;
    let erin = s.register("quota3", "erin").await;
    let fred = s.register("quota3", "fred").await;
    let r = s.init_upload(&erin, 80).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = s.init_upload(&fred, 30).await;
    r.assert_error(413, "attachment_too_large");
    assert_eq!(r.json()["quota"], "tenant_bytes", "{}", r.text);
    s.stop().await;
}

/// Spec-next 08 "Scan Notification Alternatives": `/v1/info` advertises `scan_callbacks`;
/// an upload with a `scan_callback_url` gets `{"attachment_id", "scan_status"}` POSTed to
/// it when the scan ends, signed with the uploader's webhook secret (and unsigned for an
/// uploader without one), a 5xx answer retried; a URL the outbound policy refuses, or an
/// overlong one, is `400 invalid_field` at upload time; without the field nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_attachment_scan_callbacks() {
    let s = start().await;
    let info = s.call(Method::GET, "/v1/info", None, None).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.text);
    let info = info.json();
    assert_eq!(info["attachment_limits"]["scan_callbacks"], true, "{info}");
    let hook = start_hook(&[503], 200).await;
    let alice = s.register_hooked("scb", "alice", &hook.url).await;
    let carol = s.register("scb", "carol").await;

    // Direct upload (scanned within the request), with a callback: told, signed, retried
    // after the 503.
    let file = b"a plain text file\n";
    let meta = json!({
        "filename": "notes.txt",
        "content_type": "text/plain",
        "size": file.len(),
        "digest": Digest::of(file).wire(),
        "scan_callback_url": hook.url,
    });
    let r = s.direct_with(&alice, &meta, file).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let up: Value = serde_json::from_str(&r.text).expect("json");
    let id = up["attachment_id"].as_str().expect("id").to_owned();
    let got = hook.wait_for(2, Duration::from_secs(10)).await;
    let last = &got[1];
    assert_eq!(last.attempt(), 2, "{got:?}");
    assert_eq!(last.header("x-amp-attachment-id"), id);
    let body: Value = serde_json::from_slice(&last.body).expect("json body");
    assert_eq!(
        body,
        json!({"attachment_id": id, "scan_status": up["scan_status"]})
    );
    assert_ne!(body["scan_status"], "pending");
    let ts = last.header("x-amp-timestamp");
    assert_eq!(
        last.header("x-amp-signature"),
        expected_signature(SECRET, ts, &last.body)
    );

    // Upload URL, PUT, confirm, for an uploader without a webhook: unsigned.
    let file = b"another file\n";
    let r = s
        .post(
            &carol,
            "/v1/attachments/upload",
            Some(
                json!({
                    "filename": "b.txt",
                    "content_type": "text/plain",
                    "size": file.len(),
                    "digest": Digest::of(file).wire(),
                    "scan_callback_url": hook.url,
                })
                .to_string(),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v: Value = serde_json::from_str(&r.text).expect("json");
    let id2 = v["attachment_id"].as_str().expect("id").to_owned();
    let put = s
        .http
        .put(v["upload_url"].as_str().expect("url"))
        .body(file.to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), StatusCode::OK);
    let c = s
        .post(&carol, &format!("/v1/attachments/{id2}/confirm"), None)
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text);
    let got = hook.wait_for(3, Duration::from_secs(10)).await;
    let third = &got[2];
    assert_eq!(third.header("x-amp-attachment-id"), id2);
    assert!(third.headers.get("x-amp-signature").is_none(), "{third:?}");
    let body: Value = serde_json::from_slice(&third.body).expect("json body");
    assert_eq!(body["attachment_id"], id2.as_str());

    // Refused at upload time: not http(s), credentials in it, too long.
    for bad in [
        "ftp://example.com/cb".to_owned(),
        "https://user:pw@example.com/cb".to_owned(),
        format!("https://example.com/{}", "a".repeat(2100)),
    ] {
        let r = s
            .post(
                &alice,
                "/v1/attachments/upload",
                Some(
                    json!({
                        "filename": "c.txt",
                        "content_type": "text/plain",
                        "size": 3,
                        "digest": Digest::of(b"abc").wire(),
                        "scan_callback_url": bad,
                    })
                    .to_string(),
                ),
            )
            .await;
        r.assert_error(400, "invalid_field");
        assert_eq!(r.json()["field"], "scan_callback_url", "{}", r.text);
    }

    // Without the field: nothing more is sent.
    let r = s.direct(&alice, "d.txt", "text/plain", b"plain\n").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.requests().len(), 3);
    s.stop().await;
}
