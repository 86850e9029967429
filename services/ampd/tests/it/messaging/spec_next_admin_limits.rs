//! Spec-next 08's rate limits of the admin and security endpoints against a whole `ampd`,
//! with their defaults: `GET /v1/quarantine` 30/min, `POST /v1/quarantine/{id}/*` 20/min,
//! `POST /v1/agents/{id}/suspend` 10/min, `GET /v1/agents/{id}/risk` 30/min, per caller,
//! with the `X-RateLimit-*` headers; the other operator endpoints at 100/min.

use reqwest::Method;

use super::operator::{BOOTSTRAP, admin, start_admin, token};
use super::*;

/// The answer's `X-RateLimit-Limit` and `X-RateLimit-Remaining`.
fn limit_of(r: &Resp) -> (u64, u64) {
    let h = |n: &str| {
        r.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{n} missing: {:?} {}", r.headers, r.text))
    };
    (h("x-ratelimit-limit"), h("x-ratelimit-remaining"))
}

/// Calls `path` with `token` `limit` times (each answered `ok` with the limit's headers
/// counting down), then once more: `429 rate_limited` with `Retry-After`.
async fn exhaust(
    s: &Ampd,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
    limit: u64,
    ok: u16,
) {
    for i in 0..limit {
        let r = s
            .call(
                method.clone(),
                path,
                Some(token),
                body.as_ref().map(Value::to_string),
            )
            .await;
        assert_eq!(r.status.as_u16(), ok, "{method} {path} #{i}: {}", r.text);
        assert_eq!(limit_of(&r), (limit, limit - 1 - i), "{method} {path} #{i}");
    }
    let r = s
        .call(
            method.clone(),
            path,
            Some(token),
            body.as_ref().map(Value::to_string),
        )
        .await;
    r.assert_error(429, "rate_limited");
    assert_eq!(limit_of(&r), (limit, 0), "{method} {path}");
    assert!(r.headers.contains_key("retry-after"), "{method} {path}");
}

#[tokio::test]
async fn spec_next_admin_endpoint_rate_limits() {
    // The spec's 100/min of the other endpoints (the test server's default is higher).
    let (s, base) = start_admin(|c| c.ingest.limits.api_requests_per_minute = 100).await;
    let alice = s.register("lim-a", "alice").await;
    let alice_id = s.get(&alice, "/v1/agents/me").await.ok()["agent_id"]
        .as_str()
        .expect("agent_id")
        .to_owned();
    let (_, t1) = token(&s, &base, "tenant_admin").await;
    let (_, t2) = token(&s, &base, "tenant_admin").await;

    exhaust(&s, Method::GET, "/v1/quarantine", &t1, None, 30, 200).await;
    // Per caller: another token has its own budget; the entry's route is "other" (100).
    let r = s.call(Method::GET, "/v1/quarantine", Some(&t2), None).await;
    assert_eq!(limit_of(&r), (30, 29));
    let r = s
        .call(
            Method::GET,
            "/v1/quarantine/qtn_0000000000000000",
            Some(&t1),
            None,
        )
        .await;
    r.assert_error(404, "not_found");
    assert_eq!(limit_of(&r).0, 100);
    // The same budget under /admin/v1.
    let r = admin(&s.http, &base, Some(&t1), Method::GET, "/quarantine", None).await;
    r.assert_error(429, "rate_limited");

    // Decisions, approve and reject together (an unknown entry still counts).
    exhaust(
        &s,
        Method::POST,
        "/v1/quarantine/qtn_0000000000000000/approve",
        &t1,
        None,
        20,
        404,
    )
    .await;
    s.call(
        Method::POST,
        "/v1/quarantine/qtn_0000000000000000/reject",
        Some(&t1),
        None,
    )
    .await
    .assert_error(429, "rate_limited");

    let suspend = format!("/v1/agents/{alice_id}/suspend");
    let body = json!({"reason": "limits"});
    exhaust(&s, Method::POST, &suspend, &t1, Some(body.clone()), 10, 200).await;
    // The admin API's agent suspension shares the budget; unsuspension is "other".
    admin(
        &s.http,
        &base,
        Some(&t1),
        Method::POST,
        "/tenants/lim-a/agents/alice/suspend",
        Some(body),
    )
    .await
    .assert_error(429, "rate_limited");
    let r = s
        .call(
            Method::POST,
            &format!("/v1/agents/{alice_id}/unsuspend"),
            Some(&t1),
            None,
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert_eq!(limit_of(&r).0, 100);

    // Risk: per operator token and per agent.
    let risk = format!("/v1/agents/{alice_id}/risk");
    exhaust(&s, Method::GET, &risk, &t1, None, 30, 200).await;
    exhaust(&s, Method::GET, &risk, &alice.api_key, None, 30, 200).await;
    let r = s.call(Method::GET, &risk, Some(BOOTSTRAP), None).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert_eq!(limit_of(&r), (30, 29));
}

/// The limits come from `[ingest.limits]`.
#[tokio::test]
async fn spec_next_admin_endpoint_rate_limits_are_configurable() {
    let (s, base) = start_admin(|c| {
        c.ingest.limits.quarantine_list_per_minute = 2;
        c.ingest.limits.risk_per_minute = 3;
    })
    .await;
    let alice = s.register("lim-c", "alice").await;
    let alice_id = s.get(&alice, "/v1/agents/me").await.ok()["agent_id"]
        .as_str()
        .expect("agent_id")
        .to_owned();
    let (_, t) = token(&s, &base, "read").await;
    exhaust(&s, Method::GET, "/v1/quarantine", &t, None, 2, 200).await;
    let risk = format!("/v1/agents/{alice_id}/risk");
    exhaust(&s, Method::GET, &risk, &t, None, 3, 200).await;
}
