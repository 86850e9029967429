//! Discovery: health, info and the well-known document (spec 06, 08; checklist API-01,
//! API-03, API-04, decision 4.32).

use amp_proto::PublicKey;

use crate::common::{DOMAIN, TestServer, fingerprint_of};

#[tokio::test]
async fn health_without_auth() {
    let server = TestServer::start().await;
    for prefix in ["/v1", "/api/v1"] {
        let res = server.get(&format!("{prefix}/health"), None).await;
        res.expect_status(200);
        let b = &res.json_or_null();
        assert_eq!(b["status"], "healthy", "{b}");
        assert_eq!(b["version"], "0.1.0", "{b}");
        assert_eq!(b["provider"], DOMAIN, "{b}");
        assert!(b["federation"].is_boolean(), "{b}");
        assert!(b["agents_online"].is_u64(), "{b}");
        assert!(b["uptime_seconds"].is_u64(), "{b}");
    }
}

#[tokio::test]
async fn info_without_auth() {
    let server = TestServer::start().await;
    for prefix in ["/v1", "/api/v1"] {
        let res = server.get(&format!("{prefix}/info"), None).await;
        res.expect_status(200);
        let b = &res.json_or_null();
        assert_eq!(b["provider"], DOMAIN, "{b}");
        assert_eq!(b["version"], "amp/0.1", "{b}");
        let pem = b["public_key"].as_str().expect("public_key");
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
        assert_eq!(PublicKey::parse(pem).expect("pem"), server.provider_key);
        assert_eq!(b["fingerprint"], fingerprint_of(&server.provider_key));
        assert!(b["capabilities"].is_array(), "{b}");
        let modes = b["registration_modes"].as_array().expect("modes");
        assert!(modes.iter().any(|m| m == "open"), "{b}");
        assert_eq!(b["rate_limits"]["messages_per_minute"], 60, "{b}");
        assert_eq!(b["rate_limits"]["api_requests_per_minute"], 100, "{b}");
    }
}

#[tokio::test]
async fn info_reflects_configured_limits() {
    let mut config = crate::common::test_config();
    config.limits.messages_per_minute = 7;
    config.limits.api_requests_per_minute = 11;
    let server = TestServer::with_config(config).await;
    let res = server.get("/v1/info", None).await;
    res.expect_status(200);
    assert_eq!(res.json_or_null()["rate_limits"]["messages_per_minute"], 7);
    assert_eq!(
        res.json_or_null()["rate_limits"]["api_requests_per_minute"],
        11
    );
}

#[tokio::test]
async fn well_known_document() {
    let server = TestServer::start().await;
    let res = server.get("/.well-known/agent-messaging.json", None).await;
    res.expect_status(200);
    let ct = res.header("content-type").unwrap_or_default();
    assert!(ct.contains("application/json"), "{ct}");
    let b = &res.json_or_null();
    assert_eq!(b["version"], "AMP1", "{b}");
    assert_eq!(b["endpoint"], format!("{}/v1", server.base()), "{b}");
    assert_eq!(b["provider"], DOMAIN, "{b}");
    let pem = b["public_key"].as_str().expect("public_key");
    assert_eq!(PublicKey::parse(pem).expect("pem"), server.provider_key);
    assert_eq!(b["fingerprint"], fingerprint_of(&server.provider_key));
    assert!(b["capabilities"].is_array(), "{b}");
}

#[tokio::test]
async fn health_counts_no_agents_online_at_start() {
    let server = TestServer::start().await;
    server.register(&crate::common::unique("t"), "idle").await;
    let res = server.get("/v1/health", None).await;
    // Registered but never connected: not online.
    assert_eq!(res.json_or_null()["agents_online"], 0, "{}", res.text);
}
