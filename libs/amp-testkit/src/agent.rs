//! Registered agents: [`Agent`] (address, API key and the Ed25519 key it signs with) and
//! [`register`], which registers one over HTTP with a fresh key as a client does.

use reqwest::Method;
use serde_json::{Value, json};

use amp_proto::SecretKey;

use crate::http::{Resp, call};

/// A registered agent.
#[derive(Clone)]
pub struct Agent {
    /// `name@tenant.domain`.
    pub address: String,
    /// Its bearer key.
    pub api_key: String,
    /// The key it signs messages with (its registered public key's pair).
    pub key: SecretKey,
}

/// Registers `name` in `tenant` at `url` with a fresh Ed25519 key; the members of `extra`
/// (an object: `scope`, `delivery`, …) are added to the body, replacing any of the same
/// name. Returns the agent and the whole answer.
///
/// # Panics
/// Unless the answer is `201` with an `address` and an `api_key`.
pub async fn register_answer(
    http: &reqwest::Client,
    url: &str,
    tenant: &str,
    name: &str,
    extra: Option<Value>,
) -> (Agent, Resp) {
    let key = SecretKey::generate();
    let mut body = json!({
        "tenant": tenant,
        "name": name,
        "public_key": key.public().to_pem(),
        "key_algorithm": "Ed25519",
    });
    if let Some(Value::Object(members)) = extra {
        for (k, v) in members {
            body[k] = v;
        }
    }
    let r = call(
        http,
        url,
        Method::POST,
        "/v1/register",
        None,
        Some(body.to_string()),
    )
    .await;
    assert_eq!(r.status, 201, "register {name}@{tenant}: {}", r.text);
    let v = r.json();
    let agent = Agent {
        address: v["address"].as_str().expect("address").to_owned(),
        api_key: v["api_key"].as_str().expect("api_key").to_owned(),
        key,
    };
    (agent, r)
}

/// [`register_answer`], the agent alone.
///
/// # Panics
/// As [`register_answer`].
pub async fn register(
    http: &reqwest::Client,
    url: &str,
    tenant: &str,
    name: &str,
    extra: Option<Value>,
) -> Agent {
    register_answer(http, url, tenant, name, extra).await.0
}
