//! [`AdminClient`]: the provider's admin API (`/admin/v1`, the operator plane) on its own
//! listener, with an operator token: tenants, owner keys, invite codes, operator tokens and
//! the audit log. Answers are the API's JSON as it is (the shapes are documented with the
//! endpoints in the ingest service's `admin` module).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::client::api_error;
use crate::error::{ClientError, Result};

/// A client of one provider's admin API, authenticated with one operator token.
#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("AdminClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client of the admin API at `base_url` (`http://127.0.0.1:8081`) with `token`
    /// (`amp_op_…`).
    ///
    /// Fails when the URL is not http(s).
    pub fn new(base_url: &str, token: &str) -> Result<Self> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Invalid(format!(
                "admin URL {base:?} must be an http:// or https:// URL"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(ClientError::transport)?;
        Ok(Self {
            http,
            base,
            token: token.to_owned(),
        })
    }

    /// One call: `method` on `/admin/v1<path>` with an optional JSON body.
    ///
    /// Fails with [`ClientError::Api`] on a non-2xx answer, or when the API is unreachable.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}/admin/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(ClientError::transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(ClientError::transport)?;
        if !status.is_success() {
            return Err(api_error(status, None, &bytes));
        }
        if bytes.is_empty() {
            // `204 No Content`.
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            what: "admin answer",
            source: e,
        })
    }

    /// One call answered with text (CSV): `GET /admin/v1<path>`.
    ///
    /// Fails with [`ClientError::Api`] on a non-2xx answer, or when the API is unreachable.
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let resp = self
            .http
            .get(format!("{}/admin/v1{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(ClientError::transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(ClientError::transport)?;
        if !status.is_success() {
            return Err(api_error(status, None, &bytes));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Replaces a tenant's own plan limits (`{}`: the default plan's).
    pub async fn set_plan(&self, name: &str, plan: Value) -> Result<Value> {
        self.call(
            Method::PATCH,
            &format!("/tenants/{}", enc(name)),
            Some(json!({ "plan": plan })),
        )
        .await
    }

    /// A tenant's usage per `period` (`hour` or `day`) from `from` to `to` (RFC 3339; the
    /// API's defaults when `None`).
    pub async fn usage(
        &self,
        tenant: &str,
        period: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Value> {
        let path = format!(
            "/tenants/{}/usage{}",
            enc(tenant),
            usage_query(period, from, to)
        );
        self.call(Method::GET, &path, None).await
    }

    /// Usage as CSV: of one tenant, or of every tenant when `None`.
    pub async fn usage_csv(
        &self,
        tenant: Option<&str>,
        period: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<String> {
        let q = usage_query(period, from, to);
        let path = match tenant {
            Some(t) => format!("/tenants/{}/usage.csv{q}", enc(t)),
            None => format!("/usage.csv{q}"),
        };
        self.get_text(&path).await
    }

    /// Creates a tenant (`registration`: `open`, `owner_key` or `invite`).
    pub async fn create_tenant(&self, name: &str, registration: Option<&str>) -> Result<Value> {
        let mut body = json!({ "name": name });
        if let Some(r) = registration {
            body["registration"] = json!(r);
        }
        self.call(Method::POST, "/tenants", Some(body)).await
    }

    /// A page of tenants, by name, after `after`, optionally of one `status`.
    pub async fn list_tenants(
        &self,
        after: Option<&str>,
        limit: Option<usize>,
        status: Option<&str>,
    ) -> Result<Value> {
        let limit = limit.map(|l| l.to_string());
        let query = query(&[
            ("after", after),
            ("limit", limit.as_deref()),
            ("status", status),
        ]);
        self.call(Method::GET, &format!("/tenants{query}"), None)
            .await
    }

    /// One tenant.
    pub async fn tenant(&self, name: &str) -> Result<Value> {
        self.call(Method::GET, &format!("/tenants/{}", enc(name)), None)
            .await
    }

    /// Changes a tenant's registration mode.
    pub async fn update_tenant(&self, name: &str, registration: &str) -> Result<Value> {
        let body = json!({ "registration": registration });
        self.call(
            Method::PATCH,
            &format!("/tenants/{}", enc(name)),
            Some(body),
        )
        .await
    }

    /// Sets a tenant's notification webhook (risk level changes and automatic suspensions
    /// of its agents); the answer has the signing secret when it was made (the first time,
    /// or with `rotate_secret`).
    pub async fn set_notify(&self, name: &str, url: &str, rotate_secret: bool) -> Result<Value> {
        let mut body = json!({ "url": url });
        if rotate_secret {
            body["rotate_secret"] = json!(true);
        }
        self.call(
            Method::PUT,
            &format!("/tenants/{}/notify", enc(name)),
            Some(body),
        )
        .await
    }

    /// Removes a tenant's notification webhook.
    pub async fn remove_notify(&self, name: &str) -> Result<Value> {
        self.call(
            Method::DELETE,
            &format!("/tenants/{}/notify", enc(name)),
            None,
        )
        .await
    }

    /// Sends a `ping` event to a tenant's notification webhook; the answer has its
    /// `event_id`.
    pub async fn test_notify(&self, name: &str) -> Result<Value> {
        self.call(
            Method::POST,
            &format!("/tenants/{}/notify/test", enc(name)),
            None,
        )
        .await
    }

    /// Suspends a tenant.
    pub async fn suspend(&self, name: &str, reason: Option<&str>) -> Result<Value> {
        let body = reason.map(|r| json!({ "reason": r }));
        self.call(
            Method::POST,
            &format!("/tenants/{}/suspend", enc(name)),
            body,
        )
        .await
    }

    /// Resumes a suspended tenant.
    pub async fn resume(&self, name: &str) -> Result<Value> {
        self.call(
            Method::POST,
            &format!("/tenants/{}/resume", enc(name)),
            None,
        )
        .await
    }

    /// Suspends one agent of a tenant (by name or `agt_…` id) for `hours` (`None`: until
    /// resumed), spec-next 07.
    pub async fn suspend_agent(
        &self,
        tenant: &str,
        agent: &str,
        reason: &str,
        hours: Option<u64>,
    ) -> Result<Value> {
        let mut body = json!({ "reason": reason });
        if let Some(h) = hours {
            body["duration_hours"] = json!(h);
        }
        self.call(
            Method::POST,
            &format!("/tenants/{}/agents/{}/suspend", enc(tenant), enc(agent)),
            Some(body),
        )
        .await
    }

    /// Lifts an agent's suspension.
    pub async fn resume_agent(&self, tenant: &str, agent: &str) -> Result<Value> {
        self.call(
            Method::POST,
            &format!("/tenants/{}/agents/{}/resume", enc(tenant), enc(agent)),
            None,
        )
        .await
    }

    /// Deletes a tenant: suspended at once, purged in the background; the answer is the
    /// deletion's status (see [`tenant_deletion`](Self::tenant_deletion)).
    pub async fn delete_tenant(&self, name: &str) -> Result<Value> {
        self.call(Method::DELETE, &format!("/tenants/{}", enc(name)), None)
            .await
    }

    /// The status of a tenant's deletion: `status` (`pending`, `running`, `done`,
    /// `failed`), `purged` counts per kind, times, `error`.
    pub async fn tenant_deletion(&self, name: &str) -> Result<Value> {
        self.call(
            Method::GET,
            &format!("/tenants/{}/deletion", enc(name)),
            None,
        )
        .await
    }

    /// Polls a tenant's deletion every `every` until it is `done` or `failed`, and returns
    /// that status.
    ///
    /// Fails when the API fails.
    pub async fn wait_tenant_deletion(&self, name: &str, every: Duration) -> Result<Value> {
        loop {
            let d = self.tenant_deletion(name).await?;
            if matches!(d["status"].as_str(), Some("done" | "failed")) {
                return Ok(d);
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Issues an owner key (the answer's `key` is shown this once).
    pub async fn issue_owner_key(&self, tenant: &str, options: Value) -> Result<Value> {
        let path = format!("/tenants/{}/owner-keys", enc(tenant));
        self.call(Method::POST, &path, Some(options)).await
    }

    /// A page of a tenant's agents (addresses and metadata, never a key), after the cursor
    /// `after`.
    pub async fn tenant_agents(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Value> {
        let limit = limit.map(|l| l.to_string());
        let query = query(&[("after", after), ("limit", limit.as_deref())]);
        let path = format!("/tenants/{}/agents{query}", enc(tenant));
        self.call(Method::GET, &path, None).await
    }

    /// A tenant's owner keys (prefixes and metadata).
    pub async fn owner_keys(&self, tenant: &str) -> Result<Value> {
        let path = format!("/tenants/{}/owner-keys", enc(tenant));
        self.call(Method::GET, &path, None).await
    }

    /// Rotates an owner key; the old one keeps working for `overlap_secs`.
    pub async fn rotate_owner_key(
        &self,
        tenant: &str,
        id: &str,
        overlap_secs: Option<u64>,
    ) -> Result<Value> {
        let path = format!("/tenants/{}/owner-keys/{}/rotate", enc(tenant), enc(id));
        let body = overlap_secs.map(|s| json!({ "overlap_secs": s }));
        self.call(Method::POST, &path, body).await
    }

    /// Revokes an owner key.
    pub async fn revoke_owner_key(&self, tenant: &str, id: &str) -> Result<Value> {
        let path = format!("/tenants/{}/owner-keys/{}/revoke", enc(tenant), enc(id));
        self.call(Method::POST, &path, None).await
    }

    /// Creates a single-use invite code.
    pub async fn create_invite(&self, tenant: &str, expires_in_secs: Option<u64>) -> Result<Value> {
        let path = format!("/tenants/{}/invites", enc(tenant));
        let body = expires_in_secs.map(|s| json!({ "expires_in_secs": s }));
        self.call(Method::POST, &path, body).await
    }

    /// Every operator token (metadata).
    pub async fn tokens(&self) -> Result<Value> {
        self.call(Method::GET, "/tokens", None).await
    }

    /// Creates an operator token (the answer's `token` is shown this once).
    pub async fn create_token(&self, name: &str, scope: &str) -> Result<Value> {
        self.create_token_for(name, scope, None).await
    }

    /// Creates an operator token limited to `tenant` (`None`: the whole provider); the
    /// answer carries the token, shown once.
    pub async fn create_token_for(
        &self,
        name: &str,
        scope: &str,
        tenant: Option<&str>,
    ) -> Result<Value> {
        let mut body = json!({ "name": name, "scope": scope });
        if let Some(t) = tenant {
            body["tenant"] = json!(t);
        }
        self.call(Method::POST, "/tokens", Some(body)).await
    }

    /// Revokes an operator token.
    pub async fn revoke_token(&self, id: &str) -> Result<Value> {
        self.call(Method::POST, &format!("/tokens/{}/revoke", enc(id)), None)
            .await
    }

    /// A page of the audit log, oldest first, after the entry `after`.
    pub async fn audit(&self, after: Option<&str>, limit: Option<usize>) -> Result<Value> {
        let limit = limit.map(|l| l.to_string());
        let query = query(&[("after", after), ("limit", limit.as_deref())]);
        self.call(Method::GET, &format!("/audit{query}"), None)
            .await
    }
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `?period=…&from=…&to=…` of the usage endpoints, with what is given.
fn usage_query(period: Option<&str>, from: Option<&str>, to: Option<&str>) -> String {
    query(&[("period", period), ("from", from), ("to", to)])
}

/// `?k=v&…` of the parameters given (in order, values URL-encoded); empty when none is.
fn query(params: &[(&str, Option<&str>)]) -> String {
    let q: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", enc(v))))
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}
