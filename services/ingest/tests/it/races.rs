//! Writes made by an agent's first authenticated requests must stick. (The authentication
//! layer records `last_seen_at`; doing that as a read-modify-write of the whole record off
//! the request path can overwrite a concurrent PATCH, key rotation or deregistration.)

use std::time::Duration;

use amp_proto::{PublicKey, SecretKey};
use serde_json::json;

use crate::common::{TestServer, unique};

/// Agents tried per test: the race is timing dependent, so try several.
const ROUNDS: usize = 10;
/// Long enough for any background write started by a request to finish.
const SETTLE: Duration = Duration::from_millis(100);

#[tokio::test]
async fn patch_as_first_request_is_not_lost() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    let mut lost = Vec::new();
    for i in 0..ROUNDS {
        let r = server.register(&tenant, &format!("patch-{i}")).await;
        let alias = format!("alias-{i}");
        server
            .patch("/v1/agents/me", Some(&r.api_key), &json!({"alias": alias}))
            .await
            .expect_status(200);
        tokio::time::sleep(SETTLE).await;
        let me = server.get("/v1/agents/me", Some(&r.api_key)).await;
        if me.json_or_null()["alias"] != alias.as_str() {
            lost.push(format!(
                "{}: alias {}",
                r.address,
                me.json_or_null()["alias"]
            ));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {ROUNDS} PATCHes lost: {lost:?}",
        lost.len()
    );
}

#[tokio::test]
async fn deregistration_as_first_request_is_not_undone() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    let witness = server.register(&tenant, "witness").await;
    let mut resurrected = Vec::new();
    for i in 0..ROUNDS {
        let r = server.register(&tenant, &format!("gone-{i}")).await;
        server
            .delete("/v1/agents/me", Some(&r.api_key))
            .await
            .expect_status(200);
        tokio::time::sleep(SETTLE).await;
        let res = server
            .get(
                &format!("/v1/agents/resolve/{}", r.address),
                Some(&witness.api_key),
            )
            .await;
        if res.status != 404 {
            resurrected.push(format!("{} resolves with {}", r.address, res.status));
        }
    }
    assert!(
        resurrected.is_empty(),
        "{} of {ROUNDS} deregistered agents are active again: {resurrected:?}",
        resurrected.len()
    );
}

#[tokio::test]
async fn key_rotation_as_first_request_is_not_lost() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    let witness = server.register(&tenant, "witness").await;
    let mut lost = Vec::new();
    for i in 0..ROUNDS {
        let r = server.register(&tenant, &format!("rot-{i}")).await;
        let new = SecretKey::generate();
        let pem = new.public().to_pem();
        server
            .post(
                "/v1/auth/rotate-keys",
                Some(&r.api_key),
                &json!({"new_public_key": pem, "key_algorithm": "Ed25519", "proof": r.key.sign_b64(pem.as_bytes())}),
            )
            .await
            .expect_status(200);
        tokio::time::sleep(SETTLE).await;
        let res = server
            .get(
                &format!("/v1/agents/resolve/{}", r.address),
                Some(&witness.api_key),
            )
            .await;
        let key = res.json_or_null()["public_key"]
            .as_str()
            .and_then(|p| PublicKey::parse(p).ok());
        if key != Some(new.public()) {
            lost.push(r.address);
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {ROUNDS} public-key rotations lost: {lost:?}",
        lost.len()
    );
}
