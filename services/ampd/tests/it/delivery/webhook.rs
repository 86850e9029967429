//! Webhooks (RT-11, RT-12, RT-13, NTF-12, NTF-14, SEC-03, §4.17): signed POSTs, retries on
//! the (shortened) schedule, no retry on 4xx, ack between attempts, SSRF refusals.

use std::time::Duration;

use amp_proto::Timestamp;
use serde_json::{Value, json};

use super::*;

/// A payload with spacing and number literals a re-serialisation would change.
const ODD_PAYLOAD: &str = r#"{ "type" : "notification",  "message":"caf\u00e9 \ud83d\ude00", "n": 1.50, "big": 12345678901234567890, "e": 1E3 }"#;

/// RT-11, SEC-03, NTF-14: the receiver recomputes `X-AMP-Signature` from `X-AMP-Timestamp`
/// and the raw body; `X-AMP-Message-Id` is the id, `X-AMP-Delivery-Attempt` is 1, the body
/// is `{envelope, payload}` with the payload byte-identical; the message stays pending
/// after the 2xx until acked (NTF-12).
#[tokio::test]
async fn a_webhook_is_signed_and_carries_the_message_byte_for_byte() {
    let s = start().await;
    let hook = start_hook(&[], 200).await;
    let alice = s.register("acme", "alice").await;
    let carol = s.register_hooked("acme", "carol", &hook.url).await;

    let v = s
        .route(&alice, &carol.address, ODD_PAYLOAD, json!({}))
        .await
        .ok();
    let id = id_of(&v);
    assert_eq!(v["method"], "webhook", "{v}");
    assert_eq!(v["basis"], "webhook_2xx", "{v}");

    let got = hook.wait_for(1, FRAME_WAIT).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let r = &got[0];
    assert!(
        r.header("content-type").starts_with("application/json"),
        "{:?}",
        r.headers
    );
    let ts = r.header("x-amp-timestamp");
    let secs: i64 = ts.parse().expect("unix seconds");
    let now = Timestamp::now().unix_secs();
    assert!((now - secs).abs() <= 300, "timestamp {secs} vs now {now}");
    assert_eq!(
        r.header("x-amp-signature"),
        expected_signature(SECRET, ts, &r.body),
        "signature does not verify with the spec's formula"
    );
    // The header is lowercase hex.
    assert!(
        r.header("x-amp-signature")
            .trim_start_matches("sha256=")
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    );
    assert_eq!(r.message_id(), id);
    assert_eq!(r.attempt(), 1);

    let body_text = std::str::from_utf8(&r.body).expect("utf-8 body");
    let body: Value = serde_json::from_str(body_text).expect("JSON body");
    let obj = body.as_object().expect("object body");
    assert!(
        obj.contains_key("envelope") && obj.contains_key("payload"),
        "{body}"
    );
    let env = &body["envelope"];
    assert_eq!(env["id"], id.as_str(), "{env}");
    assert_eq!(env["from"], alice.address.as_str(), "{env}");
    assert_eq!(env["to"], carol.address.as_str(), "{env}");
    assert!(env["signature"].is_string(), "{env}");
    assert!(
        body_text.contains(&format!(r#""payload":{ODD_PAYLOAD}"#)),
        "payload bytes changed: {body_text}"
    );

    // A wrong secret would not verify (the check is not vacuous).
    assert_ne!(
        r.header("x-amp-signature"),
        expected_signature("whsec_other", ts, &r.body)
    );

    // Still pending after the 2xx, until acked; no further attempt.
    assert_eq!(s.pending_ids(&carol).await, [id.as_str()]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(hook.requests().len(), 1, "attempts after a 2xx");
    s.ack(&carol, &id).await;
    assert!(s.pending_ids(&carol).await.is_empty());
    s.stop().await;
}

/// RT-12, RT-13, NTF-14: 5xx, 5xx, 2xx → three attempts with the same message id and
/// attempts 1, 2, 3, spaced by the configured delays; none after the 2xx.
#[tokio::test]
async fn webhook_5xx_is_retried_with_the_same_id_and_increasing_attempts() {
    let s = start().await;
    let hook = start_hook(&[500, 503], 200).await;
    let alice = s.register("acme", "alice").await;
    let carol = s.register_hooked("acme", "carol", &hook.url).await;
    let v = s.send(&alice, &carol.address, "retry me").await;
    let id = id_of(&v);

    let got = hook.wait_for(3, Duration::from_secs(8)).await;
    let attempts: Vec<u32> = got.iter().map(HookRequest::attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    for r in &got {
        assert_eq!(r.message_id(), id);
        let ts = r.header("x-amp-timestamp");
        assert_eq!(
            r.header("x-amp-signature"),
            expected_signature(SECRET, ts, &r.body)
        );
    }
    // Bodies are the same message each time.
    let first: Value = serde_json::from_slice(&got[0].body).expect("json");
    let last: Value = serde_json::from_slice(&got[2].body).expect("json");
    assert_eq!(first, last);
    // The configured schedule (0, 300 ms, 600 ms) is kept, give or take the 50 ms poll.
    let gap1 = got[1].at.duration_since(got[0].at);
    let gap2 = got[2].at.duration_since(got[1].at);
    eprintln!("webhook retry gaps: {gap1:?}, {gap2:?}");
    assert!(gap1 >= Duration::from_millis(280), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(580), "{gap2:?}");

    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(hook.requests().len(), 3, "attempt after the 2xx");
    // Whatever the pushes did, the message waits for its ack (spec 12.4).
    assert_eq!(s.pending_ids(&carol).await, [id]);
    s.stop().await;
}

/// RT-12: 4xx is not retried: exactly one attempt.
#[tokio::test]
async fn webhook_4xx_is_not_retried() {
    let s = start().await;
    let hook = start_hook(&[], 404).await;
    let alice = s.register("acme", "alice").await;
    let carol = s.register_hooked("acme", "carol", &hook.url).await;
    let v = s.send(&alice, &carol.address, "not found").await;
    assert_eq!(v["basis"], "mailbox_written", "{v}");
    hook.wait_for(1, FRAME_WAIT).await;
    // Longer than the whole retry schedule.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let got = hook.requests();
    assert_eq!(got.len(), 1, "4xx retried: {got:?}");
    assert_eq!(got[0].attempt(), 1);
    assert_eq!(s.pending_ids(&carol).await, [id_of(&v)]);
    s.stop().await;
}

/// NTF-14: an ack between attempts stops the retries.
#[tokio::test]
async fn an_ack_between_attempts_stops_the_retries() {
    let s = start_with(|c| {
        c.delivery.webhook.retry_delays_ms = vec![0, 1_000, 1_000];
        // The route answer must not wait for the webhook: the test acks right after attempt 1.
        c.ingest.messaging.webhook_wait_ms = 100;
    })
    .await;
    let hook = start_hook(&[], 500).await;
    let alice = s.register("acme", "alice").await;
    let carol = s.register_hooked("acme", "carol", &hook.url).await;
    let v = s.send(&alice, &carol.address, "ack me").await;
    let id = id_of(&v);
    let got = hook.wait_for(1, FRAME_WAIT).await;
    let acked_after = got[0].at.elapsed();
    s.ack(&carol, &id).await;
    assert!(
        acked_after < Duration::from_millis(900),
        "the test acked too late ({acked_after:?}) to prove anything"
    );
    // Past both retry times.
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    let got = hook.requests();
    assert_eq!(got.len(), 1, "attempts after the ack: {got:?}");
    s.stop().await;
}

/// RT-12: a refused connection is retried, and each attempt re-reads the agent's current
/// webhook: after a PATCH to a live receiver, the retry (attempt 2) arrives there.
#[tokio::test]
async fn refused_connections_are_retried() {
    // A port with nothing listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let s = start_with(|c| {
        c.delivery.webhook.retry_delays_ms = vec![0, 2_500];
        c.ingest.messaging.webhook_wait_ms = 100;
    })
    .await;
    let hook = start_hook(&[], 200).await;
    let alice = s.register("acme", "alice").await;
    let carol = s
        .register_hooked("acme", "carol", &format!("http://127.0.0.1:{closed}/hook"))
        .await;
    let v = s.send(&alice, &carol.address, "nobody home").await;
    assert_eq!(v["basis"], "mailbox_written", "{v}");
    // Move the webhook to the live receiver before the retries: the next attempt (2) goes
    // there, re-reading the agent's current webhook.
    let patch = json!({ "delivery": { "webhook_url": hook.url, "webhook_secret": SECRET } });
    let r = s
        .call(
            reqwest::Method::PATCH,
            "/v1/agents/me",
            Some(&carol.api_key),
            Some(patch.to_string()),
        )
        .await;
    r.ok();
    let got = hook.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].message_id(), id_of(&v));
    assert_eq!(got[0].attempt(), 2, "attempt 1 went to the closed port");
    s.stop().await;
}

/// §4.17: with the default outbound policy, webhook URLs to loopback, private, link-local
/// and metadata addresses, and plain `http`, are refused with 400 at registration and
/// PATCH; a URL without a secret is refused too.
#[tokio::test]
async fn ssrf_targets_and_missing_secrets_are_refused() {
    let s = start_with(|c| c.ingest.outbound = Default::default()).await;
    let bad = [
        "https://127.0.0.1/hook",
        "https://127.0.0.1:8443/hook",
        "https://10.0.0.5/hook",
        "https://10.1.2.3:443/x",
        "https://192.168.1.1/hook",
        "https://172.16.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://localhost/hook",
        "https://metadata.google.internal/computeMetadata/v1/",
        "http://example.com/hook",
        "ftp://example.com/hook",
    ];
    for (i, url) in bad.iter().enumerate() {
        let key = amp_proto::SecretKey::generate();
        let body = json!({
            "tenant": "acme",
            "name": format!("ssrf{i}"),
            "public_key": key.public().to_pem(),
            "key_algorithm": "Ed25519",
            "delivery": { "webhook_url": url, "webhook_secret": SECRET },
        });
        let r = s
            .call(
                reqwest::Method::POST,
                "/v1/register",
                None,
                Some(body.to_string()),
            )
            .await;
        assert_eq!(r.status.as_u16(), 400, "register with {url}: {}", r.text);
    }
    // A URL without a secret.
    let key = amp_proto::SecretKey::generate();
    let body = json!({
        "tenant": "acme",
        "name": "nosecret",
        "public_key": key.public().to_pem(),
        "key_algorithm": "Ed25519",
        "delivery": { "webhook_url": "https://example.com/hook" },
    });
    s.call(
        reqwest::Method::POST,
        "/v1/register",
        None,
        Some(body.to_string()),
    )
    .await
    .assert_error(400, "missing_field");

    // PATCH: same refusals; a public https URL with a secret is accepted.
    let carol = s.register("acme", "carol").await;
    let patch = |d: Value| {
        let key = carol.api_key.clone();
        let s = &s;
        async move {
            s.call(
                reqwest::Method::PATCH,
                "/v1/agents/me",
                Some(&key),
                Some(json!({ "delivery": d }).to_string()),
            )
            .await
        }
    };
    for url in bad {
        let r = patch(json!({ "webhook_url": url, "webhook_secret": SECRET })).await;
        assert_eq!(r.status.as_u16(), 400, "PATCH {url}: {}", r.text);
    }
    patch(json!({ "webhook_url": "https://example.com/hook" }))
        .await
        .assert_error(400, "missing_field");
    let r =
        patch(json!({ "webhook_url": "https://example.com/hook", "webhook_secret": SECRET })).await;
    r.ok();
    let me = s.get(&carol, "/v1/agents/me").await.ok();
    assert_eq!(
        me["delivery"]["webhook_url"], "https://example.com/hook",
        "{me}"
    );
    assert!(
        !me.to_string().contains(SECRET),
        "the webhook secret is echoed back: {me}"
    );
    s.stop().await;
}

/// With loopback allowed (tests), a URL without a secret is still refused.
#[tokio::test]
async fn a_webhook_url_needs_a_secret_even_when_loopback_is_allowed() {
    let s = start().await;
    let key = amp_proto::SecretKey::generate();
    let body = json!({
        "tenant": "acme",
        "name": "nosecret",
        "public_key": key.public().to_pem(),
        "key_algorithm": "Ed25519",
        "delivery": { "webhook_url": "http://127.0.0.1:9/hook" },
    });
    s.call(
        reqwest::Method::POST,
        "/v1/register",
        None,
        Some(body.to_string()),
    )
    .await
    .assert_error(400, "missing_field");
    s.stop().await;
}

/// Issue 17: a suspended tenant's webhooks stop (spec-next 07: skipped, the message stays in
/// the mailbox). The first attempt fails; the tenant is suspended before the retries are
/// due; none is made, then or after the resumption, and the message waits for pickup.
#[tokio::test]
async fn operator_suspended_tenant_webhooks_stop() {
    const TOKEN: &str = "amp_op_webhook-test-bootstrap-token-0123456789";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let s = start_with(|c| {
        c.ingest.admin.listen = Some(([127, 0, 0, 1], port).into());
        c.ingest.admin.bootstrap_token = Some(amp_runtime::config::Secret::new(TOKEN));
        c.delivery.webhook.retry_delays_ms = vec![0, 800, 800];
        // The route answers at once (not after the failed push): the test suspends before
        // the first retry is due.
        c.ingest.messaging.webhook_wait_ms = 0;
    })
    .await;
    let admin = |path: &str, body: Value| {
        s.http
            .post(format!("http://127.0.0.1:{port}/admin/v1{path}"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let created = admin(
        "/tenants",
        json!({"name": "hooked", "registration": "open"}),
    );
    assert_eq!(created.await.expect("create").status(), 201);
    let hook = start_hook(&[500], 500).await;
    let alice = s.register("acme", "alice").await;
    let carol = s.register_hooked("hooked", "carol", &hook.url).await;
    let v = s
        .route(&alice, &carol.address, ODD_PAYLOAD, json!({}))
        .await
        .ok();
    let id = id_of(&v);
    assert_eq!(hook.wait_for(1, Duration::from_secs(5)).await.len(), 1);
    let r = admin("/tenants/hooked/suspend", json!({}))
        .await
        .expect("suspend");
    assert_eq!(r.status(), 200);
    // Past both retries' due times: nothing more arrived.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        hook.requests().len(),
        1,
        "a webhook reached a suspended tenant"
    );
    let r = admin("/tenants/hooked/resume", json!({}))
        .await
        .expect("resume");
    assert_eq!(r.status(), 200);
    assert_eq!(s.pending_ids(&carol).await, [id]);
    s.stop().await;
}
