//! Whole `ampd` providers in this process on `127.0.0.1`, agents on them, signed messages,
//! and a real DNS server on a loopback port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amp_proto::SecretKey;
use amp_proto::signing::{SignedFields, sign_message};
use amp_runtime::Shutdown;
use federation::StaticPeer;
use hickory_server::ServerFuture;
use hickory_server::authority::{Catalog, ZoneType};
use hickory_server::proto::rr::rdata::{SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryAuthority;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::{TcpListener, UdpSocket};

/// A provider's identity, fixed before it starts so peers can be configured with it.
pub(crate) struct Provider {
    pub(crate) domain: String,
    pub(crate) key: SecretKey,
    pub(crate) addr: SocketAddr,
    pub(crate) dir: tempfile::TempDir,
    /// The port's listener, held from [`Provider::new`] until the first start takes it (a
    /// released port can be taken by another socket before it is bound again).
    reserved: std::sync::Mutex<Option<std::net::TcpListener>>,
}

impl Provider {
    /// A provider for `domain` on a free loopback port, held until its first start.
    pub(crate) async fn new(domain: &str) -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        Self {
            domain: domain.to_owned(),
            key: SecretKey::generate(),
            addr,
            reserved: std::sync::Mutex::new(Some(l)),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("{}/v1", self.url())
    }

    pub(crate) fn fingerprint(&self) -> String {
        self.key.public().fingerprint()
    }

    /// This provider as a static peer, key pinned.
    pub(crate) fn as_peer(&self) -> StaticPeer {
        StaticPeer {
            domain: self.domain.clone(),
            endpoint: self.endpoint(),
            public_key: Some(self.key.public().to_pem()),
            fingerprint: None,
        }
    }

    fn key_file(&self) -> PathBuf {
        self.dir.path().join("provider-key.pem")
    }

    /// Starts `ampd` with federation on (test timings) and `tweak` applied.
    pub(crate) async fn start(&self, tweak: impl FnOnce(&mut federation::Config)) -> Node {
        self.start_with(|c| tweak(&mut c.federation)).await
    }

    /// Starts `ampd` with federation on (test timings) and `tweak` applied to its whole
    /// configuration.
    pub(crate) async fn start_with(&self, tweak: impl FnOnce(&mut ampd::Config)) -> Node {
        if !self.key_file().exists() {
            std::fs::write(self.key_file(), self.key.to_pkcs8_pem()).expect("key file");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(self.key_file(), std::fs::Permissions::from_mode(0o600))
                    .expect("chmod");
            }
        }
        let mut config = ampd::Config::default();
        config.server.domain = self.domain.clone();
        config.server.data_dir = self.dir.path().to_owned();
        config.server.shutdown_grace_secs = 1;
        config.provider.key_file = Some(self.key_file());
        config.ingest.registration.per_ip_per_minute = 100_000;
        let limits = &mut config.ingest.limits;
        limits.api_requests_per_minute = 100_000;
        limits.tenant_requests_per_minute = 100_000;
        limits.messages_per_minute = 100_000;
        limits.pending_per_minute = 100_000;
        limits.mailbox_quota = 100_000;
        let f = &mut config.federation;
        f.enabled = true;
        f.allow_insecure_http = true;
        f.retry_initial_ms = 50;
        f.retry_max_ms = 400;
        f.poll_interval_ms = 20;
        f.request_timeout_ms = 3_000;
        f.connect_timeout_ms = 1_000;
        f.inbound_per_provider_per_minute = 100_000;
        f.inbound_per_recipient_per_minute = 100_000;
        f.inbound_total_per_minute = 100_000;
        tweak(&mut config);
        let held = self.reserved.lock().ok().and_then(|mut r| r.take());
        let listener = match held {
            Some(l) => {
                l.set_nonblocking(true).expect("nonblocking");
                TcpListener::from_std(l).expect("the reserved listener")
            }
            // A restart: the port was released when the provider stopped.
            None => TcpListener::bind(self.addr).await.expect("bind again"),
        };
        let shutdown = Shutdown::new();
        let task = tokio::spawn(ampd::run(config, listener, shutdown.clone()));
        let node = Node {
            url: self.url(),
            http: reqwest::Client::new(),
            shutdown,
            task,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = node.http.get(format!("{}/readyz", node.url)).send().await
                && r.status() == StatusCode::OK
            {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("ampd for {} did not become ready", self.domain);
    }
}

/// A running provider.
pub(crate) struct Node {
    pub(crate) url: String,
    pub(crate) http: reqwest::Client,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A registered agent.
pub(crate) struct Agent {
    pub(crate) address: String,
    pub(crate) api_key: String,
    pub(crate) key: SecretKey,
}

/// An HTTP answer with its body as text.
pub(crate) struct Resp {
    pub(crate) status: StatusCode,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) text: String,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }
}

impl Node {
    pub(crate) async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("run returns after shutdown")
            .expect("join")
            .expect("run succeeds");
    }

    pub(crate) async fn register(&self, tenant: &str, name: &str) -> Agent {
        let key = SecretKey::generate();
        let body = json!({
            "tenant": tenant,
            "name": name,
            "public_key": key.public().to_pem(),
            "key_algorithm": "Ed25519",
        });
        let r = self
            .http
            .post(format!("{}/v1/register", self.url))
            .json(&body)
            .send()
            .await
            .expect("register");
        let status = r.status();
        let v: Value = r.json().await.expect("json");
        assert!(status.is_success(), "register {name}: {status} {v}");
        Agent {
            address: v["address"].as_str().expect("address").to_owned(),
            api_key: v["api_key"].as_str().expect("api_key").to_owned(),
            key,
        }
    }

    /// `POST /v1/route` of `payload` (raw JSON text) from `from` to `to`, signed.
    pub(crate) async fn send(
        &self,
        from: &Agent,
        to: &str,
        subject: &str,
        payload: &str,
        in_reply_to: Option<&str>,
    ) -> Resp {
        let sig = sign(from, to, subject, payload, in_reply_to);
        let mut head = json!({ "to": to, "subject": subject, "signature": sig });
        if let Some(r) = in_reply_to {
            head["in_reply_to"] = json!(r);
        }
        let head = head.to_string();
        let body = format!(
            r#"{},"payload":{payload}}}"#,
            head.strip_suffix('}').expect("object")
        );
        let r = self
            .http
            .post(format!("{}/v1/route", self.url))
            .bearer_auth(&from.api_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("route");
        resp(r).await
    }

    /// The pending page of `who` (body text kept for byte comparisons).
    pub(crate) async fn pending(&self, who: &Agent) -> (Value, String) {
        let r = self
            .http
            .get(format!("{}/v1/messages/pending?limit=1000", self.url))
            .bearer_auth(&who.api_key)
            .send()
            .await
            .expect("pending");
        let r = resp(r).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        (r.json(), r.text)
    }

    pub(crate) async fn pending_count(&self, who: &Agent) -> usize {
        self.pending(who).await.0["messages"]
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Waits until `who` has at least `n` pending messages; returns the page.
    pub(crate) async fn wait_pending(&self, who: &Agent, n: usize) -> (Value, String) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (v, text) = self.pending(who).await;
            if v["messages"].as_array().map_or(0, Vec::len) >= n {
                return (v, text);
            }
            assert!(
                Instant::now() < deadline,
                "{} has not received {n} messages: {text}",
                who.address
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn info(&self) -> Value {
        self.http
            .get(format!("{}/v1/info", self.url))
            .send()
            .await
            .expect("info")
            .json()
            .await
            .expect("json")
    }

    /// A raw `POST /v1/federation/deliver`.
    pub(crate) async fn deliver_raw(&self, headers: &[(&str, String)], body: &str) -> Resp {
        let mut req = self
            .http
            .post(format!("{}/v1/federation/deliver", self.url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        resp(req.send().await.expect("deliver")).await
    }
}

pub(crate) async fn resp(r: reqwest::Response) -> Resp {
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    Resp {
        status,
        headers,
        text,
    }
}

/// The client signature of a message.
pub(crate) fn sign(
    from: &Agent,
    to: &str,
    subject: &str,
    payload: &str,
    in_reply_to: Option<&str>,
) -> String {
    sign_message(
        &from.key,
        &SignedFields {
            from: &from.address,
            to,
            subject,
            priority: "normal",
            in_reply_to: in_reply_to.unwrap_or(""),
        },
        payload,
    )
    .expect("payload is JSON")
}

/// `{"type":"notification","message":<text>}` with `text` JSON-escaped, and a number
/// literal serde would rewrite, to prove the bytes travel untouched.
pub(crate) fn payload_with(text: &str) -> String {
    format!(
        r#"{{"type":"notification",  "message":{},"context":{{"n":1.50,"z":"ü"}}}}"#,
        serde_json::to_string(text).expect("string")
    )
}

/// The item with `id` in a pending page.
pub(crate) fn find<'a>(page: &'a Value, id: &str) -> &'a Value {
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no message {id} in {page}"))
}

/// A DNS server on a loopback UDP port answering `_amp._tcp.<domain>` TXT records.
pub(crate) struct Dns {
    pub(crate) addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a DNS server with one zone per `(domain, txt)`.
pub(crate) async fn dns_server(records: &[(&str, String)]) -> Dns {
    let mut catalog = Catalog::new();
    for (domain, txt) in records {
        let origin = Name::from_ascii(format!("{domain}.")).expect("name");
        let mut zone = InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false);
        let soa = SOA::new(
            Name::from_ascii(format!("ns.{domain}.")).expect("name"),
            Name::from_ascii(format!("admin.{domain}.")).expect("name"),
            1,
            3600,
            600,
            86_400,
            60,
        );
        zone.upsert_mut(Record::from_rdata(origin.clone(), 3600, RData::SOA(soa)), 1);
        let name = Name::from_ascii(format!("_amp._tcp.{domain}.")).expect("name");
        zone.upsert_mut(
            Record::from_rdata(name, 300, RData::TXT(TXT::new(vec![txt.clone()]))),
            1,
        );
        catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
    }
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    let addr = socket.local_addr().expect("addr");
    let mut server = ServerFuture::new(catalog);
    server.register_socket(socket);
    let task = tokio::spawn(async move {
        let _ = server.block_until_done().await;
    });
    Dns { addr, task }
}

/// The TXT record of a provider.
pub(crate) fn txt_of(p: &Provider) -> String {
    format!(
        "v=AMP1; endpoint={}; pubkey={}; capabilities=federation",
        p.endpoint(),
        p.fingerprint()
    )
}
