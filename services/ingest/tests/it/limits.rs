//! Per-agent API rate limits and the `X-RateLimit-*` headers (spec 08 Rate Limits; checklist
//! API-21).

use crate::common::{TestServer, test_config, unique};

#[tokio::test]
async fn authenticated_responses_carry_rate_limit_headers() {
    let server = TestServer::start().await;
    let r = server.register(&unique("t"), "counted").await;
    let first = server.get("/v1/agents/me", Some(&r.api_key)).await;
    first.expect_status(200).expect_rate_headers();
    assert_eq!(first.header("x-ratelimit-limit"), Some("100"));
    let second = server.get("/v1/agents", Some(&r.api_key)).await;
    second.expect_status(200).expect_rate_headers();
    let remaining = |res: &crate::common::Resp| -> u64 {
        res.header("x-ratelimit-remaining")
            .and_then(|v| v.parse().ok())
            .expect("remaining")
    };
    assert!(remaining(&second) < remaining(&first));
    assert!(remaining(&first) < 100);
    let reset: u64 = first
        .header("x-ratelimit-reset")
        .and_then(|v| v.parse().ok())
        .expect("reset");
    let now = amp_proto::Timestamp::now().unix_secs() as u64;
    assert!(
        (now..=now + 61).contains(&reset),
        "reset {reset} is unix seconds within a minute of {now}"
    );
}

#[tokio::test]
async fn sixth_request_in_a_minute_is_429_for_that_agent_only() {
    let mut config = test_config();
    config.limits.api_requests_per_minute = 5;
    let server = TestServer::with_config(config).await;
    let tenant = unique("t");
    let busy = server.register(&tenant, "busy").await;
    let calm = server.register(&tenant, "calm").await;
    for i in 0..5 {
        let path = if i % 2 == 0 {
            "/v1/agents/me"
        } else {
            "/v1/agents"
        };
        let res = server.get(path, Some(&busy.api_key)).await;
        assert_eq!(res.status, 200, "request {i}: {}", res.text);
        res.expect_rate_headers();
        assert_eq!(res.header("x-ratelimit-limit"), Some("5"));
    }
    let res = server.get("/v1/agents/me", Some(&busy.api_key)).await;
    res.expect_error(429, "rate_limited").expect_rate_headers();
    assert_eq!(res.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = res
        .header("retry-after")
        .unwrap_or_else(|| panic!("Retry-After missing: {:?}", res.headers))
        .parse()
        .expect("Retry-After seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");

    // Writes count too, and stay limited.
    server
        .post_empty("/v1/auth/rotate-key", Some(&busy.api_key))
        .await
        .expect_error(429, "rate_limited");

    // Another agent is unaffected.
    let res = server.get("/v1/agents/me", Some(&calm.api_key)).await;
    res.expect_status(200).expect_rate_headers();
    assert_eq!(res.json_or_null()["address"], calm.address);

    // Unauthenticated discovery is not charged to the agent.
    server.get("/v1/health", None).await.expect_status(200);
}
