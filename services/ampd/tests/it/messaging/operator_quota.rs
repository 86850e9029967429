//! Issue 17's plans, quotas and usage metering against a whole `ampd`: a tenant's plan set
//! through the admin API (over the configuration's default plan) is enforced on the public
//! API with the spec's errors, and usage after a known traffic pattern reads back per hour
//! and per day, as JSON and as CSV. Every test name starts with `operator_`.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::operator::{BOOTSTRAP, admin, start_admin, tenant};
use super::{Ampd, MessagingExt, Msg, payload_with};

/// PATCHes `name`'s plan and returns the tenant as the API shows it.
async fn set_plan(s: &Ampd, base: &str, name: &str, plan: Value) -> Value {
    let r = admin(
        &s.http,
        base,
        Some(BOOTSTRAP),
        Method::PATCH,
        &format!("/tenants/{name}"),
        Some(json!({ "plan": plan })),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()
}

#[tokio::test]
async fn operator_plan_quotas_are_enforced_with_spec_errors() {
    let (s, base) = start_admin(|c| {
        // The default plan: every tenant without its own limit has these.
        c.ingest.plan.messages_per_day = Some(4);
        c.federation.enabled = true;
    })
    .await;
    tenant(&s, &base, "quota", "open").await;
    let t = set_plan(
        &s,
        &base,
        "quota",
        json!({"agents": 2, "messages_per_minute": 3, "messages_per_day": 1000}),
    )
    .await;
    assert_eq!(t["plan"]["agents"], 2, "{t}");
    assert_eq!(t["limits"]["messages_per_minute"], 3, "{t}");
    assert_eq!(
        t["limits"]["messages_per_day"], 1000,
        "the tenant's own, over the default"
    );
    let shown = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::GET,
        "/tenants/quota",
        None,
    )
    .await;
    assert_eq!(shown.json()["limits"], t["limits"]);

    // Agents: the third registration is refused.
    let alice = s.register("quota", "alice").await;
    let bob = s.register("quota", "bob").await;
    let key = amp_proto::SecretKey::generate();
    let third = s
        .call(
            Method::POST,
            "/v1/register",
            None,
            Some(
                json!({"tenant": "quota", "name": "carol", "public_key": key.public().to_pem(),
                       "key_algorithm": "Ed25519"})
                .to_string(),
            ),
        )
        .await;
    third.assert_error(403, "forbidden");

    // Messages per minute: three go, the fourth is 429 with Retry-After.
    for i in 0..3 {
        s.send_text(&alice, &bob.address, &format!("m{i}")).await;
    }
    let m = Msg::new(&bob.address, "s").payload(&payload_with("over"));
    let r = s.route(&alice, m.flat(Some(&m.sign(&alice)))).await;
    r.assert_error(429, "rate_limited");
    let retry: u64 = r
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.json()["retry_after"], retry);

    // Message size: 413 request_too_large above the plan's, whatever the rate.
    set_plan(
        &s,
        &base,
        "quota",
        json!({"messages_per_minute": 1000, "messages_per_day": 1000, "message_bytes": 900,
               "federation": false}),
    )
    .await;
    // The minute's bucket the old rate filled stays full under the new one, which frees a
    // message every 60 ms (1000 per minute): one such interval on.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let small = Msg::new(&bob.address, "s").payload(&payload_with("small"));
    assert_eq!(
        s.route(&alice, small.flat(Some(&small.sign(&alice))))
            .await
            .status,
        StatusCode::OK
    );
    let big = Msg::new(&bob.address, "s").payload(&payload_with(&"x".repeat(2000)));
    s.route(&alice, big.flat(Some(&big.sign(&alice))))
        .await
        .assert_error(413, "request_too_large");

    // Federation not in the plan: a recipient on another provider is 403 forbidden.
    let remote = Msg::new("zed@acme.elsewhere.example", "s").payload(&payload_with("out"));
    s.route(&alice, remote.flat(Some(&remote.sign(&alice))))
        .await
        .assert_error_field(403, "forbidden", "to");
    // Allowed again: accepted (queued for federation).
    set_plan(
        &s,
        &base,
        "quota",
        json!({"messages_per_day": 1000, "federation": true}),
    )
    .await;
    let r = s
        .route(&alice, remote.flat(Some(&remote.sign(&alice))))
        .await;
    assert!(r.status.is_success(), "{} {}", r.status, r.text);

    // A tenant without a record has the default plan: 4 messages a day.
    let dan = s.register("plain", "dan").await;
    let eve = s.register("plain", "eve").await;
    for i in 0..4 {
        s.send_text(&dan, &eve.address, &format!("d{i}")).await;
    }
    let m = Msg::new(&eve.address, "s").payload(&payload_with("fifth"));
    let r = s.route(&dan, m.flat(Some(&m.sign(&dan)))).await;
    r.assert_error(429, "rate_limited");
    assert!(
        r.json()["message"]
            .as_str()
            .is_some_and(|t| t.contains("per day")),
        "{}",
        r.text
    );
    // The other tenant's budget is its own.
    s.send_text(&alice, &bob.address, "still fine").await;

    // Bad plans get spec errors.
    let r = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::PATCH,
        "/tenants/quota",
        Some(json!({"plan": {"messages_per_minute": -1}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.json()["error"].is_string(), "{}", r.text);
    let r = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::PATCH,
        "/tenants/quota",
        Some(json!({"plan": {"bananas": 1}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    s.stop().await;
}

/// GET `path` on the admin API with the bootstrap token, as JSON, expecting 200.
async fn get_json(s: &Ampd, base: &str, path: &str) -> Value {
    let r = admin(&s.http, base, Some(BOOTSTRAP), Method::GET, path, None).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
    r.json()
}

/// The sum of `field` over the rows of a usage answer.
fn total(usage: &Value, field: &str) -> u64 {
    usage["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r[field].as_u64().expect("a count"))
        .sum()
}

#[tokio::test]
async fn operator_usage_counts_a_known_traffic_pattern() {
    let (s, base) = start_admin(|c| c.ingest.messaging.usage_flush_ms = 100).await;
    let alice = s.register("meter-a", "alice").await;
    let carol = s.register("meter-a", "carol").await;
    let bob = s.register("meter-b", "bob").await;
    // A socket of bob's, open while the counts are flushed.
    let ws_url = format!("{}/v1/ws", s.url().replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("connect");
    ws.send(Message::text(
        json!({"type": "auth", "token": bob.api_key}).to_string(),
    ))
    .await
    .expect("auth");
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;

    // meter-a sends 3 to meter-b and 2 within itself; meter-b sends 1 to meter-a.
    for i in 0..3 {
        s.send_text(&alice, &bob.address, &format!("a{i}")).await;
    }
    for i in 0..2 {
        s.send_text(&alice, &carol.address, &format!("c{i}")).await;
    }
    s.send_text(&bob, &alice.address, "back").await;

    // Counted in memory, flushed every 100 ms, row after row: wait until every row shows
    // it all (the flush is not atomic across rows, the numbers are exact once written).
    let start = Instant::now();
    let (hourly, b, daily) = loop {
        let a = get_json(&s, &base, "/tenants/meter-a/usage").await;
        let b = get_json(&s, &base, "/tenants/meter-b/usage").await;
        let d = get_json(&s, &base, "/tenants/meter-a/usage?period=day").await;
        let db = get_json(&s, &base, "/tenants/meter-b/usage?period=day").await;
        if total(&db, "messages_in") == 1
            && total(&a, "messages_in") == 5
            && total(&a, "messages_out") == 3
            && total(&b, "messages_in") == 1
            && total(&b, "connections") >= 1
            && total(&d, "messages_in") == 5
        {
            break (a, b, d);
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "usage never showed the traffic: {a}\n{b}\n{d}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(hourly["tenant"], "meter-a");
    assert_eq!(hourly["period"], "hour");
    let rows = hourly["rows"].as_array().expect("rows");
    // The last 24 hours, hour by hour, in time order, zeros where there was nothing.
    assert!((24..=25).contains(&rows.len()), "{}", rows.len());
    let starts: Vec<&str> = rows
        .iter()
        .map(|r| r["start"].as_str().expect("start"))
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");
    assert!(starts.iter().all(|s| s.ends_with(":00:00Z")), "{starts:?}");
    let last = rows.last().expect("a row");
    assert_eq!(last["messages_in"], 5, "{last}");
    assert_eq!(last["messages_out"], 3, "{last}");
    assert_eq!(last["federated_out"], 0, "{last}");
    assert!(
        last["bytes_stored"].as_u64().is_some_and(|b| b > 3 * 100),
        "{last}"
    );
    assert_eq!(last["agents"], 2, "{last}");
    // Nothing was acknowledged: meter-a's mailboxes hold its three messages.
    assert!(
        last["bytes_held"].as_u64().is_some_and(|b| b > 3 * 100),
        "{last}"
    );
    assert_eq!(
        (total(&b, "messages_in"), total(&b, "messages_out")),
        (1, 3)
    );
    assert_eq!(total(&b, "agents"), 1);

    // Per day: today's row holds the same numbers.
    assert_eq!(daily["period"], "day");
    let days = daily["rows"].as_array().expect("rows");
    assert!(!days.is_empty() && days.len() <= 2, "{daily}");
    assert!(days.iter().all(|r| {
        r["start"]
            .as_str()
            .is_some_and(|s| s.ends_with("T00:00:00Z"))
    }));
    assert_eq!(total(&daily, "messages_in"), 5);
    assert_eq!(total(&daily, "messages_out"), 3);

    // CSV of every tenant: a header, then one line per tenant per period, 10 columns.
    let r = s
        .http
        .get(format!("{base}/admin/v1/usage.csv?period=day"))
        .bearer_auth(BOOTSTRAP)
        .send()
        .await
        .expect("csv");
    assert_eq!(r.status(), StatusCode::OK);
    let ctype = r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    let text = r.text().await.expect("body");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    assert_eq!(
        header,
        [
            "tenant",
            "period",
            "start",
            "messages_in",
            "messages_out",
            "federated_in",
            "federated_out",
            "bytes_stored",
            "agents",
            "connections",
            "bytes_held"
        ]
    );
    let mut in_by_tenant = std::collections::BTreeMap::<String, u64>::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{line}");
        assert_eq!(cells[1], "day");
        assert!(amp_proto::Timestamp::parse(cells[2]).is_some(), "{line}");
        *in_by_tenant.entry(cells[0].to_owned()).or_default() +=
            cells[3].parse::<u64>().expect("a number");
    }
    assert_eq!(in_by_tenant.get("meter-a"), Some(&5), "{text}");
    assert_eq!(in_by_tenant.get("meter-b"), Some(&1), "{text}");

    // One tenant's CSV, per hour, over an explicit range.
    let now = amp_proto::Timestamp::now();
    let from = amp_proto::Timestamp::from_unix_millis(now.unix_millis() - 2 * 3_600_000)
        .expect("time")
        .to_rfc3339();
    let r = s
        .http
        .get(format!("{base}/admin/v1/tenants/meter-b/usage.csv"))
        .query(&[("from", from.as_str()), ("to", now.to_rfc3339().as_str())])
        .bearer_auth(BOOTSTRAP)
        .send()
        .await
        .expect("csv");
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.expect("body");
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert!((2..=3).contains(&rows.len()), "{text}");
    assert!(
        rows.iter().all(|l| l.starts_with("meter-b,hour,")),
        "{text}"
    );

    // Bad input: spec errors.
    for (q, field) in [
        ("period=week", "period"),
        ("from=yesterday", "from"),
        ("from=2026-12-06T12:00:00Z&to=2026-12-06T11:00:00Z", "to"),
        ("from=2025-01-01T00:00:00Z&to=2026-12-01T00:00:00Z", "to"),
    ] {
        let r = admin(
            &s.http,
            &base,
            Some(BOOTSTRAP),
            Method::GET,
            &format!("/tenants/meter-a/usage?{q}"),
            None,
        )
        .await;
        r.assert_error_field(400, "invalid_field", field);
    }
    let r = admin(&s.http, &base, None, Method::GET, "/usage.csv", None).await;
    r.assert_error(401, "unauthorized");
    drop(ws);
    s.stop().await;
}

/// Opens a WebSocket for `api_key` and returns it with its first frame (the answer to auth).
async fn ws_open(
    s: &Ampd,
    api_key: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
) {
    let ws_url = format!("{}/v1/ws", s.url().replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("connect");
    ws.send(Message::text(
        json!({"type": "auth", "token": api_key}).to_string(),
    ))
    .await
    .expect("auth");
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an answer within 5 s")
        .expect("a frame")
        .expect("not an error");
    (ws, first)
}

#[tokio::test]
async fn operator_plan_connections_are_enforced_on_websockets() {
    let (s, base) = start_admin(|_| {}).await;
    tenant(&s, &base, "sockets", "open").await;
    set_plan(&s, &base, "sockets", json!({"connections": 2})).await;
    let alice = s.register("sockets", "alice").await;
    let bob = s.register("sockets", "bob").await;
    let (mut first, hello) = ws_open(&s, &alice.api_key).await;
    assert!(
        hello.to_text().is_ok_and(|t| t.contains("connected")),
        "{hello:?}"
    );
    let (_second, hello) = ws_open(&s, &bob.api_key).await;
    assert!(
        hello.to_text().is_ok_and(|t| t.contains("connected")),
        "{hello:?}"
    );

    // The third of the tenant's sockets: an error frame, then a policy close.
    let (mut third, refused) = ws_open(&s, &alice.api_key).await;
    let text = refused.to_text().expect("a text frame").to_owned();
    assert!(
        text.contains("rate_limited") && text.contains("connections"),
        "{text}"
    );
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(m)) = third.next().await {
            if let Message::Close(Some(f)) = m {
                return Some(u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("closed within 2 s");
    assert_eq!(closed, Some(1008));

    // Another tenant is not affected; one closed socket makes room again.
    let other = s.register("sockets-other", "carol").await;
    let (_o, hello) = ws_open(&s, &other.api_key).await;
    assert!(
        hello.to_text().is_ok_and(|t| t.contains("connected")),
        "{hello:?}"
    );
    first.close(None).await.expect("close");
    drop(first);
    let start = Instant::now();
    loop {
        let (_again, hello) = ws_open(&s, &alice.api_key).await;
        if hello.to_text().is_ok_and(|t| t.contains("connected")) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "no room after a close: {hello:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}

/// Routes ~3 KB messages from `from` to `to` until the recipient's tenant is at its
/// `stored_bytes`; returns how many were accepted and the refusal.
async fn fill(s: &Ampd, from: &super::Agent, to: &str) -> (usize, super::Resp) {
    let text = "x".repeat(2500);
    for accepted in 0..20 {
        let m = Msg::new(to, "s").payload(&payload_with(&text));
        let r = s.route(from, m.flat(Some(&m.sign(from)))).await;
        if r.status.as_u16() == 507 {
            return (accepted, r);
        }
        r.ok();
    }
    panic!("20 messages of 3 KB fit in 12 KB");
}

/// Issue 17: a tenant's `stored_bytes` (the bytes its agents' mailboxes hold) is enforced on
/// route with `507 storage_quota_exceeded`, whoever sends, for every mailbox of the tenant;
/// acknowledged messages and a deleted mailbox leave the count, and routes are accepted
/// again.
#[tokio::test]
async fn operator_plan_stored_bytes_is_enforced_with_507() {
    let (s, base) = start_admin(|_| {}).await;
    tenant(&s, &base, "hold", "open").await;
    let alice = s.register("hold", "alice").await;
    let bob = s.register("hold", "bob").await;
    let carol = s.register("hold", "carol").await;
    let dan = s.register("roomy", "dan").await;
    let t = set_plan(&s, &base, "hold", json!({"stored_bytes": 12_000})).await;
    assert_eq!(t["limits"]["stored_bytes"], 12_000, "{t}");

    let (accepted, refusal) = fill(&s, &alice, &bob.address).await;
    assert!(
        (2..=4).contains(&accepted),
        "{accepted} messages of 3 KB in 12 KB"
    );
    refusal.assert_error_field(507, "storage_quota_exceeded", "to");
    // The recipient's tenant's quota, whoever sends; every mailbox of the tenant.
    // (A message as large as those that filled it: a small one may still fit.)
    let big = "z".repeat(2500);
    let m = Msg::new(&bob.address, "s").payload(&payload_with(&big));
    s.route(&dan, m.flat(Some(&m.sign(&dan))))
        .await
        .assert_error_field(507, "storage_quota_exceeded", "to");
    let m = Msg::new(&carol.address, "s").payload(&payload_with(&big));
    s.route(&alice, m.flat(Some(&m.sign(&alice))))
        .await
        .assert_error_field(507, "storage_quota_exceeded", "to");
    // A full tenant still sends to others.
    s.send_text(&alice, &dan.address, "out is fine").await;
    // Nothing refused was stored.
    let ids = s.pending_ids(&bob).await;
    assert_eq!(ids.len(), accepted);
    assert!(s.pending_ids(&carol).await.is_empty());

    // Acknowledged: the bytes leave, routes are accepted again.
    let body = json!({ "ids": ids }).to_string();
    let v = s
        .post(&bob, "/v1/messages/pending/ack", Some(body))
        .await
        .ok();
    assert_eq!(v["acknowledged"], accepted, "{v}");
    s.send_text(&alice, &carol.address, "room again").await;
    let (refilled, refusal) = fill(&s, &alice, &bob.address).await;
    refusal.assert_error_field(507, "storage_quota_exceeded", "to");
    assert!(refilled + 1 >= accepted, "{refilled} after {accepted}");

    // A deleted mailbox (the agent deregistered) leaves the count with it.
    s.delete(&bob, "/v1/agents/me").await.ok();
    s.send_text(&alice, &carol.address, "bob's bytes are gone")
        .await;

    // Without a limit, the plan costs nothing: a large mailbox is fine.
    set_plan(&s, &base, "hold", json!({})).await;
    for i in 0..6 {
        s.send_text(&alice, &carol.address, &"y".repeat(2500 + i))
            .await;
    }
    s.stop().await;
}
