//! Registration with a user key (`Authorization: Bearer uk_…`; spec 03 owner authentication,
//! checklist REG-10, REG-12, REG-14, decisions 4.19 and 4.21).

use amp_runtime::config::Secret;
use ingest::config::{OwnerConfig, RegistrationMode};
use serde_json::{Value, json};

use crate::common::{DOMAIN, TestServer, reg_body, test_config, unique};

const USER_KEY: &str = "uk_test_dXNyX3Rlc3Q_s3cr3t-value-0123456789";
const SUSPENDED_KEY: &str = "uk_test_c3VzcGVuZGVk_another-secret-9876543210";

/// A server whose config has an owner `usr_test` (tenant `tenant`, agent limit 2) and a
/// suspended owner.
async fn owner_server(tenant: &str, mode: RegistrationMode) -> TestServer {
    let mut config = test_config();
    config.registration.mode = mode;
    config.owners = vec![
        OwnerConfig {
            id: "usr_test".into(),
            tenant: tenant.into(),
            user_key: Secret::new(USER_KEY),
            agent_limit: 2,
            suspended: false,
        },
        OwnerConfig {
            id: "usr_suspended".into(),
            tenant: tenant.into(),
            user_key: Secret::new(SUSPENDED_KEY),
            agent_limit: 10,
            suspended: true,
        },
    ];
    TestServer::with_config(config).await
}

/// A registration body without a tenant.
fn body_without_tenant(name: &str) -> Value {
    let mut body = reg_body("unused", name);
    body.as_object_mut().expect("object").remove("tenant");
    body
}

#[tokio::test]
async fn user_key_registers_into_the_owners_tenant_up_to_the_limit() {
    let tenant = unique("owned");
    let server = owner_server(&tenant, RegistrationMode::Open).await;

    let res = server
        .register_raw(&body_without_tenant("first"), Some(USER_KEY))
        .await;
    res.expect_status(201);
    assert_eq!(
        res.json_or_null()["address"],
        format!("first@{tenant}.{DOMAIN}")
    );
    assert_eq!(res.json_or_null()["tenant"], tenant.as_str());
    assert_eq!(res.json_or_null()["owner_id"], "usr_test", "{}", res.text);
    let res_json = res.json_or_null();
    let api_key = res_json["api_key"].as_str().expect("api_key");
    assert!(!api_key.starts_with("uk_"));
    assert_ne!(api_key, USER_KEY);

    // Naming the owner's own tenant is fine.
    let res = server
        .register_raw(&reg_body(&tenant, "second"), Some(USER_KEY))
        .await;
    res.expect_status(201);
    assert_eq!(res.json_or_null()["owner_id"], "usr_test");

    // Over the agent limit (2).
    let res = server
        .register_raw(&body_without_tenant("third"), Some(USER_KEY))
        .await;
    res.expect_status(403).expect_error_shape();
}

#[tokio::test]
async fn user_key_with_another_tenant_is_denied() {
    let tenant = unique("owned");
    let server = owner_server(&tenant, RegistrationMode::Open).await;
    let res = server
        .register_raw(&reg_body(&unique("other"), "intruder"), Some(USER_KEY))
        .await;
    res.expect_error(403, "tenant_access_denied");
}

#[tokio::test]
async fn unknown_or_suspended_user_key_is_401() {
    let tenant = unique("owned");
    let server = owner_server(&tenant, RegistrationMode::Open).await;
    for key in [
        "uk_dXNyX25vYm9keQ",
        "uk_test_unknown_key_123",
        SUSPENDED_KEY,
    ] {
        let res = server
            .register_raw(&body_without_tenant("someone"), Some(key))
            .await;
        res.expect_error(401, "unauthorized");
    }
}

#[tokio::test]
async fn user_key_is_not_an_api_key() {
    let tenant = unique("owned");
    let server = owner_server(&tenant, RegistrationMode::Open).await;
    for path in ["/v1/agents/me", "/v1/agents", "/api/v1/agents/me"] {
        server
            .get(path, Some(USER_KEY))
            .await
            .expect_error(401, "unauthorized");
    }
    server
        .post_empty("/v1/auth/rotate-key", Some(USER_KEY))
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn owner_mode_requires_a_user_key() {
    let tenant = unique("owned");
    let server = owner_server(&tenant, RegistrationMode::Owner).await;
    let res = server.register_raw(&reg_body(&tenant, "anon"), None).await;
    res.expect_error(401, "unauthorized");
    let res = server
        .register_raw(&body_without_tenant("named"), Some(USER_KEY))
        .await;
    res.expect_status(201);
    assert_eq!(
        res.json_or_null()["address"],
        format!("named@{tenant}.{DOMAIN}")
    );
}

#[tokio::test]
async fn spec_next_revoked_agent_gets_a_new_key_only_through_its_owner() {
    // Decision 4.21, with spec-next 07 over 03 (issue 18): the revoked public key cannot
    // register again, not even for its owner; the owner re-registers the name with a new
    // key (201, a new API key); anyone else → 409.
    let tenant = unique("owned");
    let server = owner_server(&tenant, RegistrationMode::Open).await;
    let body = body_without_tenant("phoenix");
    let res = server.register_raw(&body, Some(USER_KEY)).await;
    res.expect_status(201);
    let old_key = res.json_or_null()["api_key"]
        .as_str()
        .expect("api_key")
        .to_owned();
    server
        .delete("/v1/auth/revoke-key", Some(&old_key))
        .await
        .expect_status(200);

    // Without the user key nobody registers into the owner's tenant at all.
    let mut anon = body.clone();
    anon["tenant"] = Value::from(tenant.as_str());
    server
        .register_raw(&anon, None)
        .await
        .expect_error(401, "unauthorized");

    // The revoked key: refused, for its owner too, under any name.
    server
        .register_raw(&body, Some(USER_KEY))
        .await
        .expect_error(403, "key_revoked");
    let mut renamed = body.clone();
    renamed["name"] = Value::from("phoenix-two");
    server
        .register_raw(&renamed, Some(USER_KEY))
        .await
        .expect_error(403, "key_revoked");

    // A new key: the owner's agent again, with a new API key.
    let fresh = amp_proto::SecretKey::generate();
    let mut rekeyed = body.clone();
    rekeyed["public_key"] = Value::from(fresh.public().to_pem());
    let res = server.register_raw(&rekeyed, Some(USER_KEY)).await;
    res.expect_status(201);
    assert_eq!(
        res.json_or_null()["fingerprint"],
        fresh.public().fingerprint()
    );
    let res_json = res.json_or_null();
    let new_key = res_json["api_key"].as_str().expect("api_key");
    assert_ne!(new_key, old_key);
    let me = server.get("/v1/agents/me", Some(new_key)).await;
    me.expect_status(200);
    assert_eq!(
        me.json_or_null()["fingerprint"],
        fresh.public().fingerprint()
    );
    server
        .get("/v1/agents/me", Some(&old_key))
        .await
        .expect_error(401, "unauthorized");

    // Now that its key is valid, another key for the same name is not the same agent.
    let res = server
        .register_raw(&json!({"name": "phoenix", "public_key": amp_proto::SecretKey::generate().public().to_pem(), "key_algorithm": "Ed25519"}), Some(USER_KEY))
        .await;
    res.expect_error(409, "name_taken");
}
