//! The harness: the ingest service as the provider runs it, inside the kit's in-process `ampd`
//! ([`Ampd`]: redb in a temp dir, the in-process bus, the hardened router) with this suite's
//! `[ingest]` section and a provider key fixed in advance, a reqwest client and helpers that
//! return the kit's [`Resp`] (status, headers, body text).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use amp_proto::{PublicKey, SecretKey};
use amp_testkit::ampd::{Ampd, AmpdHome};
pub(crate) use amp_testkit::http::Resp;
use base64::Engine as _;
use ingest::Config;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The provider domain every test server uses.
pub(crate) const DOMAIN: &str = "example.test";
/// The body limit the composing binary hardens the router with (512 KiB + 8 KiB).
pub(crate) const BODY_LIMIT: usize = 532_480;

/// A name no other test uses: `prefix-<n>` (valid as a name and as a tenant).
pub(crate) fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The default config with the per-IP registration limit raised, so that tests registering
/// several agents (and sending failing registrations) are not throttled.
pub(crate) fn test_config() -> Config {
    let mut config = Config::default();
    config.registration.per_ip_per_minute = 10_000;
    config
}

/// `SHA256:` + base64(SHA-256(raw 32-byte key)), computed here independently.
pub(crate) fn fingerprint_of(key: &PublicKey) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(key.to_bytes()))
    )
}

/// Whether `s` is an RFC 3339 timestamp.
pub(crate) fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| amp_proto::Timestamp::parse(s).is_some())
}

/// Unix seconds of an RFC 3339 value (panics when it is not one).
pub(crate) fn unix_secs(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    amp_proto::Timestamp::parse(s)
        .unwrap_or_else(|| panic!("not RFC 3339: {s}"))
        .unix_secs()
}

/// Whether `key` matches `^amp_(live|test)_sk_[A-Za-z0-9_-]+$`.
pub(crate) fn is_api_key(key: &str) -> bool {
    let rest = key
        .strip_prefix("amp_live_sk_")
        .or_else(|| key.strip_prefix("amp_test_sk_"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// A registered agent.
pub(crate) struct Registered {
    pub(crate) api_key: String,
    pub(crate) address: String,
    pub(crate) agent_id: String,
    pub(crate) key: SecretKey,
    pub(crate) body: Value,
}

/// A running provider (the kit's [`Ampd`]) with this suite's ingest configuration; shut
/// down on drop.
pub(crate) struct TestServer {
    pub(crate) client: reqwest::Client,
    pub(crate) provider_key: PublicKey,
    ampd: Ampd,
}

impl TestServer {
    /// A server with [`test_config`].
    pub(crate) async fn start() -> Self {
        Self::with_config(test_config()).await
    }

    /// A server whose `[ingest]` section is exactly this config, on [`DOMAIN`].
    pub(crate) async fn with_config(config: Config) -> Self {
        let provider_key = SecretKey::generate();
        let provider_public = provider_key.public();
        let ampd = AmpdHome::new()
            .with_key(provider_key)
            .start_with(|c| {
                c.server.domain = DOMAIN.into();
                c.ingest = config;
            })
            .await;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Self {
            client,
            provider_key: provider_public,
            ampd,
        }
    }

    /// `http://127.0.0.1:port`.
    pub(crate) fn base(&self) -> String {
        self.ampd.url().to_owned()
    }

    /// `base + path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// Sends a request and collects the answer.
    pub(crate) async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        amp_testkit::http::send(req).await
    }

    fn with_auth(req: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
        match key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    /// `GET path` with an optional bearer token.
    pub(crate) async fn get(&self, path: &str, key: Option<&str>) -> Resp {
        let req = self.client.get(self.url(path));
        self.send(Self::with_auth(req, key)).await
    }

    /// `POST path` with a JSON body and an optional bearer token.
    pub(crate) async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Resp {
        let req = self.client.post(self.url(path)).json(body);
        self.send(Self::with_auth(req, key)).await
    }

    /// `POST path` with no body.
    pub(crate) async fn post_empty(&self, path: &str, key: Option<&str>) -> Resp {
        let req = self.client.post(self.url(path));
        self.send(Self::with_auth(req, key)).await
    }

    /// `PATCH path` with a JSON body.
    pub(crate) async fn patch(&self, path: &str, key: Option<&str>, body: &Value) -> Resp {
        let req = self.client.patch(self.url(path)).json(body);
        self.send(Self::with_auth(req, key)).await
    }

    /// `DELETE path`.
    pub(crate) async fn delete(&self, path: &str, key: Option<&str>) -> Resp {
        let req = self.client.delete(self.url(path));
        self.send(Self::with_auth(req, key)).await
    }

    /// `POST /v1/register` with this body (and optionally `Bearer uk_…`).
    pub(crate) async fn register_raw(&self, body: &Value, user_key: Option<&str>) -> Resp {
        self.post("/v1/register", user_key, body).await
    }

    /// Registers `name` in `tenant` with a fresh Ed25519 key; panics unless 201.
    pub(crate) async fn register(&self, tenant: &str, name: &str) -> Registered {
        self.register_with(json!({"tenant": tenant, "name": name}), None)
            .await
    }

    /// Registers with `fields` (plus a fresh key and `key_algorithm` unless given);
    /// panics unless 201.
    pub(crate) async fn register_with(&self, fields: Value, user_key: Option<&str>) -> Registered {
        let key = SecretKey::generate();
        let mut body = fields;
        let obj = body.as_object_mut().expect("fields is an object");
        obj.entry("public_key")
            .or_insert_with(|| Value::from(key.public().to_pem()));
        obj.entry("key_algorithm")
            .or_insert_with(|| Value::from("Ed25519"));
        let res = self.register_raw(&body, user_key).await;
        let body = res.json_with(201);
        Registered {
            api_key: body["api_key"].as_str().expect("api_key string").to_owned(),
            address: body["address"].as_str().expect("address string").to_owned(),
            agent_id: body["agent_id"]
                .as_str()
                .expect("agent_id string")
                .to_owned(),
            key,
            body,
        }
    }
}

/// A registration body for `name` in `tenant` with a fresh Ed25519 key.
pub(crate) fn reg_body(tenant: &str, name: &str) -> Value {
    json!({
        "tenant": tenant,
        "name": name,
        "public_key": SecretKey::generate().public().to_pem(),
        "key_algorithm": "Ed25519",
    })
}

/// A 2048-bit RSA SPKI public key (generated with openssl for these tests).
pub(crate) const RSA_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxr71mHWG0gb/13KlOIRG
bqNkdqlpPLfGmCI6sCk7WVhFv5GlhtjAG9lMbubT5I/tDX36DVq2o6BEn2txN/Sd
lM9LGAFnuonqEqsO7lX0LTrB4fKcJngL/j9aMvej2tx45khwu9ohgbZgsBkUSr4Y
eifygGUUzptzX+RJsGkSZffnyb1tT96nEUg7ai50KoRi6uPTcwMpjAp2UDyf9BV8
7L9UDqyCNlsKeGWR6z69d9/4fS2wX6zrTa8VZkYMpx8FulnjsY4wg2YcSxBf/LI6
Um09BgRv89IF1ivs/Qg1iYnMTYPLgQC/9VB8C1UyOkAldg9ETPVFZCRnHyyTrDxw
oQIDAQAB
-----END PUBLIC KEY-----
";
