//! Spec-next 07 "Key Revocation" from the operator's side (issue 18) against a whole `ampd`:
//! an operator revokes an agent's current key on the admin API (audited, operator tokens of
//! scope `tenant_admin` only), after which every message it signs is `403 key_revoked`, it
//! cannot rotate away from the key nor register it again; deregistration, by the agent or by
//! the operator, puts the agent's key on the list too.

use reqwest::Method;

use super::operator::{BOOTSTRAP, admin, start_admin, token};
use super::*;

/// `POST /v1/register` of `key` as `name` in `tenant`; the answer as it came.
async fn register_key(s: &Ampd, tenant: &str, name: &str, key: &SecretKey) -> Resp {
    let body = json!({
        "tenant": tenant,
        "name": name,
        "public_key": key.public().to_pem(),
        "key_algorithm": "Ed25519",
    });
    s.call(Method::POST, "/v1/register", None, Some(body.to_string()))
        .await
}

/// The audit log's actions on `target`.
async fn audited(s: &Ampd, base: &str, target: &str) -> Vec<String> {
    let log = admin(
        &s.http,
        base,
        Some(BOOTSTRAP),
        Method::GET,
        "/audit?limit=500",
        None,
    )
    .await
    .ok();
    log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["target"] == target)
        .filter_map(|e| e["action"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn spec_next_operator_revokes_an_agents_key() {
    let (s, base) = start_admin(|_| {}).await;
    let alice = s.register("oprev", "alice").await;
    let bob = s.register("oprev", "bob").await;
    let erin = s.register("oprev2", "erin").await;
    // Routed before: the "not revoked" answer is cached, and must not outlive the revocation.
    let before = s.send_text(&alice, &bob.address, "before").await;

    let path = "/tenants/oprev/agents/alice/revoke-key";
    let (_, reader) = token(&s, &base, "read").await;
    let (_, tenant_admin) = token(&s, &base, "tenant_admin").await;
    let call = |t: Option<String>, path: String, body: Option<Value>| {
        let (http, base) = (s.http.clone(), base.clone());
        async move { admin(&http, &base, t.as_deref(), Method::POST, &path, body).await }
    };
    call(None, path.into(), None)
        .await
        .assert_error(401, "unauthorized");
    call(Some(alice.api_key.clone()), path.into(), None)
        .await
        .assert_error(401, "unauthorized");
    call(Some(reader), path.into(), None)
        .await
        .assert_error(403, "forbidden");
    // Another tenant's agent is unknown here; a reason too long is refused.
    call(
        Some(tenant_admin.clone()),
        "/tenants/oprev/agents/erin/revoke-key".into(),
        None,
    )
    .await
    .assert_error(404, "not_found");
    call(
        Some(tenant_admin.clone()),
        path.into(),
        Some(json!({"reason": "x".repeat(501)})),
    )
    .await
    .assert_error_field(400, "invalid_field", "reason");
    s.send_text(&alice, &bob.address, "still trusted").await;

    let v = call(
        Some(tenant_admin.clone()),
        path.into(),
        Some(json!({"reason": "key leaked in a log"})),
    )
    .await
    .ok();
    let fingerprint = alice.key.public().fingerprint();
    assert_eq!(v["revoked"], true, "{v}");
    assert_eq!(v["fingerprint"], fingerprint.as_str(), "{v}");
    assert_eq!(v["reason"], "admin_action", "{v}");
    assert!(v["revoked_at"].is_string(), "{v}");

    // Everything the key signs is refused, naming the key.
    let m = Msg::new(&bob.address, "after");
    let r = s.route(&alice, m.flat(Some(&m.sign(&alice)))).await;
    r.assert_error_field(403, "key_revoked", "signature");
    assert!(r.text.contains(&fingerprint), "{}", r.text);
    // The agent still reads its mailbox (its API key is its own, not revoked).
    s.get(&alice, "/v1/messages/pending").await.ok();
    // It cannot rotate away from the revoked key, nor register it anywhere.
    let new_key = SecretKey::generate();
    let pem = new_key.public().to_pem();
    s.post(
        &alice,
        "/v1/auth/rotate-keys",
        Some(
            json!({ "new_public_key": pem, "proof": alice.key.sign_b64(pem.as_bytes()) })
                .to_string(),
        ),
    )
    .await
    .assert_error_field(403, "key_revoked", "proof");
    register_key(&s, "oprev", "alice-again", &alice.key)
        .await
        .assert_error_field(403, "key_revoked", "public_key");
    // Others are untouched.
    s.send_text(&bob, &alice.address, "to alice").await;
    s.send_text(&erin, &bob.address, "from elsewhere").await;

    // Bob has the two messages signed before the revocation, and Erin's.
    let ids = s.pending_ids(&bob).await;
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.contains(&before), "{ids:?}");
    assert!(
        audited(&s, &base, &alice.address)
            .await
            .contains(&"agent.revoke_key".to_owned())
    );
    s.stop().await;
}

#[tokio::test]
async fn spec_next_deregistration_revokes_the_key() {
    let (s, base) = start_admin(|_| {}).await;
    // By the agent itself.
    let carol_key = SecretKey::generate();
    let r = register_key(&s, "dereg", "carol", &carol_key).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let carol = Agent {
        address: r.json()["address"].as_str().expect("address").to_owned(),
        api_key: r.json()["api_key"].as_str().expect("api_key").to_owned(),
        key: carol_key.clone(),
    };
    let v = s.delete(&carol, "/v1/agents/me").await.ok();
    assert_eq!(v["deregistered"], true, "{v}");
    for (tenant, name) in [("dereg", "carol-two"), ("dereg-other", "carol")] {
        register_key(&s, tenant, name, &carol_key)
            .await
            .assert_error_field(403, "key_revoked", "public_key");
    }

    // By the operator: by name, its tenant's only.
    let dave = s.register("dereg", "dave").await;
    let frank = s.register("dereg", "frank").await;
    let erin = s.register("dereg2", "erin").await;
    let (_, reader) = token(&s, &base, "read").await;
    let (_, tenant_admin) = token(&s, &base, "tenant_admin").await;
    let del = |t: &str, path: &str| {
        let (http, base, t, path) = (s.http.clone(), base.clone(), t.to_owned(), path.to_owned());
        async move { admin(&http, &base, Some(&t), Method::DELETE, &path, None).await }
    };
    del(&reader, "/tenants/dereg/agents/dave")
        .await
        .assert_error(403, "forbidden");
    del(&tenant_admin, "/tenants/dereg/agents/erin")
        .await
        .assert_error(404, "not_found");
    s.get(&erin, "/v1/agents/me").await.ok();
    let v = del(&tenant_admin, "/tenants/dereg/agents/dave").await.ok();
    assert_eq!(v["deregistered"], true, "{v}");
    assert_eq!(v["address"], dave.address.as_str(), "{v}");
    // Gone: its API key, its address, and its key registers nowhere.
    s.get(&dave, "/v1/agents/me")
        .await
        .assert_error(401, "unauthorized");
    let m = Msg::new(&dave.address, "to a deregistered agent");
    assert_ne!(
        s.route(&frank, m.flat(Some(&m.sign(&frank)))).await.status,
        StatusCode::OK
    );
    register_key(&s, "dereg", "dave-two", &dave.key)
        .await
        .assert_error_field(403, "key_revoked", "public_key");
    del(&tenant_admin, "/tenants/dereg/agents/dave")
        .await
        .assert_error(404, "not_found");
    assert!(
        audited(&s, &base, &dave.address)
            .await
            .contains(&"agent.deregister".to_owned())
    );
    // A new key registers as usual.
    s.register("dereg", "dave-new").await;
    s.stop().await;
}
