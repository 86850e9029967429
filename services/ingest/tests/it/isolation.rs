//! Tenant isolation: an agent of tenant A can neither see B's directory nor manage B's
//! agents (decision 4.31; STYLE "another tenant's resource → 404").

use serde_json::json;

use crate::common::{TestServer, fingerprint_of, unique};

#[tokio::test]
async fn tenant_isolation() {
    let server = TestServer::start().await;
    let ta = unique("tenant-a");
    let tb = unique("tenant-b");
    let a = server
        .register_with(
            json!({"tenant": ta, "name": "shared-alpha", "alias": "A"}),
            None,
        )
        .await;
    let b = server
        .register_with(
            json!({"tenant": tb, "name": "shared-beta", "alias": "B"}),
            None,
        )
        .await;
    let b2 = server.register(&tb, "shared-gamma").await;

    // Listing: A cannot list B, and B's agents never appear in A's listing or search.
    server
        .get(&format!("/v1/agents?tenant={tb}"), Some(&a.api_key))
        .await
        .expect_error(403, "forbidden");
    server
        .get(
            &format!("/v1/agents?tenant={}", tb.to_ascii_uppercase()),
            Some(&a.api_key),
        )
        .await
        .expect_error(403, "forbidden");
    for query in [
        "",
        "?search=shared",
        "?search=beta",
        "?search=B",
        "?limit=100",
    ] {
        let res = server
            .get(&format!("/v1/agents{query}"), Some(&a.api_key))
            .await;
        res.expect_status(200);
        assert!(!res.text.contains(&b.address), "{query}: {}", res.text);
        assert!(!res.text.contains(&b2.address), "{query}: {}", res.text);
        assert!(!res.text.contains(&tb), "{query}: {}", res.text);
    }
    let res = server
        .get("/v1/agents?search=shared", Some(&a.api_key))
        .await;
    assert_eq!(res.json_or_null()["total"], 1, "{}", res.text);

    // Management: no endpoint takes another agent's address or id.
    let b_targets = [
        format!("/v1/agents/{}", b.address),
        format!("/v1/agents/{}", b.agent_id),
        format!("/v1/agents/resolve/{}", b.address),
        format!("/v1/agents/owned/{}", b.agent_id),
        format!("/api/v1/agents/{}", b.address),
    ];
    for path in &b_targets {
        let res = server
            .patch(path, Some(&a.api_key), &json!({"alias": "pwned"}))
            .await;
        assert!(
            (400..500).contains(&res.status.as_u16()),
            "PATCH {path}: {} {}",
            res.status,
            res.text
        );
        res.expect_error_shape();
        let res = server.delete(path, Some(&a.api_key)).await;
        assert!(
            (400..500).contains(&res.status.as_u16()),
            "DELETE {path}: {} {}",
            res.status,
            res.text
        );
        res.expect_error_shape();
    }
    // Query parameters naming B do not redirect "me".
    let res = server
        .patch(
            &format!(
                "/v1/agents/me?address={}&agent_id={}",
                b.address, b.agent_id
            ),
            Some(&a.api_key),
            &json!({"alias": "A2"}),
        )
        .await;
    assert!(res.status == 200 || res.status == 400, "{}", res.text);

    // A's own PATCH, rotation and deregistration touch only A.
    server
        .patch("/v1/agents/me", Some(&a.api_key), &json!({"alias": "A3"}))
        .await
        .expect_status(200);
    server
        .post_empty("/v1/auth/rotate-key", Some(&a.api_key))
        .await
        .expect_status(200);
    server
        .delete("/v1/agents/me", Some(&a.api_key))
        .await
        .expect_status(200);

    let me = server.get("/v1/agents/me", Some(&b.api_key)).await;
    me.expect_status(200);
    assert_eq!(me.json_or_null()["address"], b.address);
    assert_eq!(me.json_or_null()["alias"], "B");
    assert_eq!(
        me.json_or_null()["fingerprint"],
        fingerprint_of(&b.key.public())
    );
    let res = server.get("/v1/agents", Some(&b.api_key)).await;
    res.expect_status(200);
    assert_eq!(res.json_or_null()["total"], 2, "{}", res.text);
    assert!(!res.text.contains(&a.address));
    server
        .get("/v1/agents/me", Some(&b2.api_key))
        .await
        .expect_status(200);
}

#[tokio::test]
async fn same_name_in_two_tenants_are_two_agents() {
    let server = TestServer::start().await;
    let a = server.register(&unique("ta"), "twin").await;
    let b = server.register(&unique("tb"), "twin").await;
    assert_ne!(a.address, b.address);
    assert_ne!(a.agent_id, b.agent_id);
    server
        .patch(
            "/v1/agents/me",
            Some(&a.api_key),
            &json!({"alias": "Twin A"}),
        )
        .await
        .expect_status(200);
    server
        .delete("/v1/agents/me", Some(&a.api_key))
        .await
        .expect_status(200);
    let me = server.get("/v1/agents/me", Some(&b.api_key)).await;
    me.expect_status(200);
    assert_eq!(me.json_or_null()["address"], b.address);
    assert_ne!(me.json_or_null()["alias"], "Twin A");
}
