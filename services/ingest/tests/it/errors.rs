//! Failures are always the spec error body (`{error, message, field?}`, spec 08; checklist
//! API-20), never plain text and never a 5xx, including for hostile input.

use serde_json::{Value, json};

use crate::common::{BODY_LIMIT, Resp, TestServer, reg_body, unique};

/// A 4xx with the spec error shape and a body that does not echo large input.
#[track_caller]
fn assert_clean_4xx(what: &str, res: &Resp) {
    assert!(
        (400..500).contains(&res.status.as_u16()),
        "{what}: status {} body {}",
        res.status,
        res.text
    );
    res.expect_error_shape();
    assert!(
        res.text.len() < 4096,
        "{what}: error body of {} bytes echoes input",
        res.text.len()
    );
}

#[tokio::test]
async fn unknown_path_is_json_404() {
    let server = TestServer::start().await;
    for path in [
        "/v1/nope",
        "/nope",
        "/api/v2/health",
        "/v1/agents/me/extra/x",
    ] {
        server.get(path, None).await.expect_error(404, "not_found");
    }
    server
        .post("/v1/nope", None, &json!({}))
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn wrong_method_is_json_405() {
    let server = TestServer::start().await;
    let req = server
        .client
        .put(server.url("/v1/register"))
        .json(&json!({}));
    server
        .send(req)
        .await
        .expect_error(405, "method_not_allowed");
    let req = server.client.get(server.url("/v1/register"));
    server
        .send(req)
        .await
        .expect_error(405, "method_not_allowed");
    let req = server.client.delete(server.url("/v1/health"));
    server
        .send(req)
        .await
        .expect_error(405, "method_not_allowed");
    let req = server.client.post(server.url("/api/v1/info"));
    server
        .send(req)
        .await
        .expect_error(405, "method_not_allowed");
}

#[tokio::test]
async fn oversize_body_is_json_413() {
    let server = TestServer::start().await;
    let mut body = reg_body(&unique("t"), "big");
    body["metadata"] = json!({"blob": "x".repeat(BODY_LIMIT)});
    let res = server.register_raw(&body, None).await;
    res.expect_status(413).expect_error_shape();

    let r = server.register(&unique("t"), "patcher").await;
    let res = server
        .patch(
            "/v1/agents/me",
            Some(&r.api_key),
            &json!({"metadata": {"blob": "y".repeat(BODY_LIMIT)}}),
        )
        .await;
    res.expect_status(413).expect_error_shape();
}

#[tokio::test]
async fn hostile_registration_bodies_get_clean_4xx() {
    let server = TestServer::start().await;
    let tenant = unique("t");

    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let base = |f: &dyn Fn(&mut Value)| {
        let mut b = reg_body(&tenant, "hostile");
        f(&mut b);
        serde_json::to_vec(&b).expect("json")
    };
    let deep_body = {
        let b = reg_body(&tenant, "deep");
        let text = serde_json::to_string(&b).expect("json");
        format!(
            "{},\"metadata\":{{\"x\":{deep}}}}}",
            text.trim_end_matches('}')
        )
        .into_bytes()
    };
    cases.push(("deeply nested metadata", deep_body));
    cases.push(("deeply nested body", deep.clone().into_bytes()));
    cases.push((
        "huge name",
        base(&|b| b["name"] = Value::from("n".repeat(200_000))),
    ));
    cases.push((
        "huge tenant",
        base(&|b| b["tenant"] = Value::from("t".repeat(200_000))),
    ));
    cases.push((
        "huge alias",
        base(&|b| b["alias"] = Value::from("a".repeat(200_000))),
    ));
    cases.push(("NUL in name", base(&|b| b["name"] = Value::from("a\u{0}b"))));
    cases.push((
        "NUL in tenant",
        base(&|b| b["tenant"] = Value::from("t\u{0}")),
    ));
    cases.push((
        "NUL in public key",
        base(&|b| {
            let pem = b["public_key"]
                .as_str()
                .unwrap_or_default()
                .replace('\n', "\n\u{0}");
            b["public_key"] = Value::from(pem);
        }),
    ));
    cases.push(("name is a number", base(&|b| b["name"] = json!(42))));
    cases.push(("name is null", base(&|b| b["name"] = Value::Null)));
    cases.push((
        "scope is a string",
        base(&|b| b["scope"] = json!("github/web")),
    ));
    cases.push((
        "delivery is an array",
        base(&|b| b["delivery"] = json!([1, 2])),
    ));
    cases.push((
        "metadata is a string",
        base(&|b| b["metadata"] = json!("x")),
    ));
    let mut invalid_utf8 = b"{\"tenant\":\"".to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    invalid_utf8.extend_from_slice(
        b"\",\"name\":\"x\",\"public_key\":\"k\",\"key_algorithm\":\"Ed25519\"}",
    );
    cases.push(("invalid UTF-8", invalid_utf8));
    cases.push(("empty body", Vec::new()));
    cases.push((
        "lone surrogate escape",
        br#"{"tenant":"\ud800","name":"x","public_key":"k","key_algorithm":"Ed25519"}"#.to_vec(),
    ));
    cases.push((
        "duplicate keys",
        br#"{"tenant":"a","tenant":"b","name":"x","public_key":"k","key_algorithm":"Ed25519"}"#
            .to_vec(),
    ));

    for (what, bytes) in cases {
        let req = server
            .client
            .post(server.url("/v1/register"))
            .header("content-type", "application/json")
            .body(bytes);
        let res = server.send(req).await;
        assert_clean_4xx(what, &res);
    }
    // The server is still fine.
    server.register(&tenant, "survivor").await;
}

#[tokio::test]
async fn hostile_addresses_in_resolve_get_clean_4xx() {
    let server = TestServer::start().await;
    let r = server.register(&unique("t"), "resolver").await;
    let long = "a".repeat(10_000);
    let paths = [
        "/v1/agents/resolve/..%2Fx".to_owned(),
        "/v1/agents/resolve/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/v1/agents/resolve/%00".to_owned(),
        "/v1/agents/resolve/a%00b@x.example.test".to_owned(),
        "/v1/agents/resolve/%ff%fe".to_owned(),
        "/v1/agents/resolve/a@b@c".to_owned(),
        "/v1/agents/resolve/@".to_owned(),
        "/v1/agents/resolve/%E2%80%AE@x.example.test".to_owned(),
        format!("/v1/agents/resolve/{long}@x.example.test"),
        "/v1/agents/..%2F..%2Fx".to_owned(),
        "/v1/agents/x@..".to_owned(),
        "/v1/agents/resolve/".to_owned(),
    ];
    for path in &paths {
        let res = server.get(path, Some(&r.api_key)).await;
        assert_clean_4xx(path, &res);
    }
}

#[tokio::test]
async fn hostile_authorization_headers_get_401() {
    let server = TestServer::start().await;
    let long = format!("amp_live_sk_{}", "A".repeat(20_000));
    for value in [
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer amp_live_sk_\u{1}".replace('\u{1}', "%00"),
        format!("Bearer {long}"),
        "Bearer amp_live_sk_a b c".to_owned(),
        "Token amp_live_sk_abc".to_owned(),
    ] {
        let req = server
            .client
            .get(server.url("/v1/agents/me"))
            .header("authorization", value.as_str());
        let res = server.send(req).await;
        assert_eq!(res.status, 401, "{value:.40}: {}", res.text);
        assert_clean_4xx(&value[..value.len().min(40)], &res);
    }
    // Non-UTF-8 header bytes.
    let value = reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("header value");
    let req = server
        .client
        .get(server.url("/v1/agents/me"))
        .header("authorization", value);
    let res = server.send(req).await;
    assert_eq!(res.status, 401, "{}", res.text);
    res.expect_error_shape();
}
