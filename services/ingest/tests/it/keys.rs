//! API-key rotation and revocation, public-key rotation (spec 03, 07, 08; checklist REG-19,
//! REG-20, REG-22, decisions 4.18 and 4.20).

use amp_proto::{PublicKey, SecretKey, Timestamp};
use base64::Engine as _;
use serde_json::json;

use crate::common::{TestServer, fingerprint_of, is_api_key, is_rfc3339, unique, unix_secs};

#[tokio::test]
async fn rotate_key_issues_a_new_key_and_keeps_the_old_one_for_24h() {
    let server = TestServer::start().await;
    let r = server.register(&unique("t"), "rotator").await;
    let before = Timestamp::now().unix_secs();
    let res = server
        .post_empty("/v1/auth/rotate-key", Some(&r.api_key))
        .await;
    res.expect_status(200);
    let new_key = res.json_or_null()["api_key"]
        .as_str()
        .expect("api_key")
        .to_owned();
    assert!(is_api_key(&new_key), "{new_key}");
    assert_ne!(new_key, r.api_key);
    // The new key does not expire: `expires_at` is omitted, never `null` (spec-next 04's
    // JSON profile; the README's "Protocol decisions").
    assert!(
        res.json_or_null().get("expires_at").is_none(),
        "{}",
        res.text
    );
    let until = unix_secs(&res.json_or_null()["previous_key_valid_until"]);
    let day = 24 * 3600;
    assert!(
        (before + day - 300..=before + day + 300).contains(&until),
        "previous_key_valid_until {} is not now + 24 h",
        res.json_or_null()["previous_key_valid_until"]
    );

    for key in [&r.api_key, &new_key] {
        let me = server.get("/v1/agents/me", Some(key)).await;
        me.expect_status(200);
        assert_eq!(me.json_or_null()["address"], r.address);
    }
    // The new key never shows up elsewhere.
    let me = server.get("/v1/agents/me", Some(&new_key)).await;
    assert!(!me.text.contains(&new_key));
}

#[tokio::test]
async fn revoke_key_is_immediate_for_current_and_rotated_out_keys() {
    let server = TestServer::start().await;
    let r = server.register(&unique("t"), "revoker").await;
    let rotated = server
        .post_empty("/v1/auth/rotate-key", Some(&r.api_key))
        .await;
    rotated.expect_status(200);
    let new_key = rotated.json_or_null()["api_key"]
        .as_str()
        .expect("api_key")
        .to_owned();

    let res = server.delete("/v1/auth/revoke-key", Some(&new_key)).await;
    res.expect_status(200);
    assert_eq!(res.json_or_null()["revoked"], true, "{}", res.text);
    assert!(
        is_rfc3339(&res.json_or_null()["revoked_at"]),
        "{}",
        res.text
    );

    for key in [&new_key, &r.api_key] {
        server
            .get("/v1/agents/me", Some(key))
            .await
            .expect_error(401, "unauthorized");
        server
            .post_empty("/v1/auth/rotate-key", Some(key))
            .await
            .expect_error(401, "unauthorized");
    }
}

#[tokio::test]
async fn revoke_key_without_rotation() {
    let server = TestServer::start().await;
    let r = server.register(&unique("t"), "plain").await;
    let res = server
        .delete("/api/v1/auth/revoke-key", Some(&r.api_key))
        .await;
    res.expect_status(200);
    assert_eq!(res.json_or_null()["revoked"], true);
    server
        .get("/v1/agents/me", Some(&r.api_key))
        .await
        .expect_error(401, "unauthorized");
    server
        .delete("/v1/auth/revoke-key", Some(&r.api_key))
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn key_endpoints_require_auth() {
    let server = TestServer::start().await;
    server
        .post_empty("/v1/auth/rotate-key", None)
        .await
        .expect_error(401, "unauthorized");
    server
        .delete("/v1/auth/revoke-key", None)
        .await
        .expect_error(401, "unauthorized");
    let new = SecretKey::generate().public().to_pem();
    server
        .post(
            "/v1/auth/rotate-keys",
            None,
            &json!({"new_public_key": new, "key_algorithm": "Ed25519", "proof": "AAAA"}),
        )
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn rotate_keys_with_a_proof_from_the_old_key() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    let r = server.register(&tenant, "keyholder").await;
    let peer = server.register(&tenant, "peer").await;
    let new = SecretKey::generate();
    let new_pem = new.public().to_pem();
    let proof = r.key.sign_b64(new_pem.as_bytes());
    let res = server
        .post(
            "/v1/auth/rotate-keys",
            Some(&r.api_key),
            &json!({"new_public_key": new_pem, "key_algorithm": "Ed25519", "proof": proof}),
        )
        .await;
    res.expect_status(200);
    assert_eq!(res.json_or_null()["rotated"], true, "{}", res.text);
    assert_eq!(
        res.json_or_null()["fingerprint"],
        fingerprint_of(&new.public())
    );

    let resolved = server
        .get(
            &format!("/v1/agents/resolve/{}", r.address),
            Some(&peer.api_key),
        )
        .await;
    resolved.expect_status(200);
    let resolved_json = resolved.json_or_null();
    let pem = resolved_json["public_key"].as_str().expect("public_key");
    assert_eq!(PublicKey::parse(pem).expect("pem"), new.public());
    assert_eq!(
        resolved.json_or_null()["fingerprint"],
        fingerprint_of(&new.public())
    );
    let me = server.get("/v1/agents/me", Some(&r.api_key)).await;
    assert_eq!(
        me.json_or_null()["fingerprint"],
        fingerprint_of(&new.public())
    );

    // The API key is unaffected by a public-key rotation.
    me.expect_status(200);
}

#[tokio::test]
async fn rotate_keys_rejects_a_bad_proof() {
    let server = TestServer::start().await;
    let tenant = unique("t");
    let r = server.register(&tenant, "careful").await;
    let new = SecretKey::generate();
    let new_pem = new.public().to_pem();
    let b64 = base64::engine::general_purpose::STANDARD;
    let proofs = [
        // Signed by the new key, not the old one.
        new.sign_b64(new_pem.as_bytes()),
        // Signed by the old key, but over other bytes.
        r.key.sign_b64(b"something else"),
        // Not a signature at all.
        "garbage!!".to_owned(),
        b64.encode([0u8; 64]),
        b64.encode([1u8; 10]),
        String::new(),
    ];
    for proof in proofs {
        let res = server
            .post(
                "/v1/auth/rotate-keys",
                Some(&r.api_key),
                &json!({"new_public_key": new_pem, "key_algorithm": "Ed25519", "proof": proof}),
            )
            .await;
        res.expect_error(400, "invalid_field").expect_field("proof");
    }
    let me = server.get("/v1/agents/me", Some(&r.api_key)).await;
    assert_eq!(
        me.json_or_null()["fingerprint"],
        fingerprint_of(&r.key.public())
    );
}

#[tokio::test]
async fn rotate_keys_validates_the_new_key() {
    let server = TestServer::start().await;
    let r = server.register(&unique("t"), "picky").await;
    let garbage = "not a key";
    let res = server
        .post(
            "/v1/auth/rotate-keys",
            Some(&r.api_key),
            &json!({"new_public_key": garbage, "key_algorithm": "Ed25519", "proof": r.key.sign_b64(garbage.as_bytes())}),
        )
        .await;
    res.expect_status(400)
        .expect_error_shape()
        .expect_field("new_public_key");

    let new_pem = SecretKey::generate().public().to_pem();
    let res = server
        .post(
            "/v1/auth/rotate-keys",
            Some(&r.api_key),
            &json!({"new_public_key": new_pem, "key_algorithm": "RSA", "proof": r.key.sign_b64(new_pem.as_bytes())}),
        )
        .await;
    res.expect_error(400, "invalid_field")
        .expect_field("key_algorithm");

    let res = server
        .post(
            "/v1/auth/rotate-keys",
            Some(&r.api_key),
            &json!({"new_public_key": new_pem, "key_algorithm": "Ed25519"}),
        )
        .await;
    res.expect_error(400, "missing_field").expect_field("proof");
}
