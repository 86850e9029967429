//! Whole `ampd` providers in this process on `127.0.0.1` (the kit's [`Ampd`], each in an
//! [`AmpdHome`] whose port and key are fixed before it starts, so peers can be configured
//! with them), agents on them, signed messages, and a real DNS server on a loopback port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amp_proto::SecretKey;
pub(crate) use amp_testkit::agent::Agent;
pub(crate) use amp_testkit::ampd::{Ampd, AmpdHome, Config};
pub(crate) use amp_testkit::http::Resp;
pub(crate) use amp_testkit::message::{Msg, find};
use federation::StaticPeer;
use hickory_server::ServerFuture;
use hickory_server::authority::{Catalog, ZoneType};
use hickory_server::proto::rr::rdata::{SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryAuthority;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::UdpSocket;

/// A provider's identity, fixed before it starts so peers can be configured with it.
pub(crate) struct Provider {
    pub(crate) domain: String,
    pub(crate) key: SecretKey,
    /// Its port (held until the first start) and data directory, kept across restarts.
    home: AmpdHome,
}

impl Provider {
    /// A provider for `domain` on a free loopback port, held until its first start.
    pub(crate) async fn new(domain: &str) -> Self {
        let key = SecretKey::generate();
        Self {
            domain: domain.to_owned(),
            key: key.clone(),
            home: AmpdHome::new().with_key(key),
        }
    }

    pub(crate) fn url(&self) -> String {
        self.home.url()
    }

    /// Its data directory.
    pub(crate) fn data_dir(&self) -> &std::path::Path {
        self.home.data_dir()
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

    /// Starts `ampd` with federation on (test timings) and `tweak` applied.
    pub(crate) async fn start(&self, tweak: impl FnOnce(&mut federation::Config)) -> Ampd {
        self.start_with(|c| tweak(&mut c.federation)).await
    }

    /// Starts `ampd` (the kit's test configuration) with this domain, federation on (test
    /// timings) and `tweak` applied to its whole configuration.
    pub(crate) async fn start_with(&self, tweak: impl FnOnce(&mut Config)) -> Ampd {
        self.home
            .start_with(|config| {
                config.server.domain = self.domain.clone();
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
                tweak(config);
            })
            .await
    }
}

/// What the federation tests do through an [`Ampd`], on top of the kit's requests.
pub(crate) trait FederationExt {
    /// `POST /v1/route` of `payload` (raw JSON text) from `from` to `to`, signed.
    async fn send(
        &self,
        from: &Agent,
        to: &str,
        subject: &str,
        payload: &str,
        in_reply_to: Option<&str>,
    ) -> Resp;
    /// The pending page of `who` (body text kept for byte comparisons).
    async fn pending(&self, who: &Agent) -> (Value, String);
    /// How many messages `who` has pending (at most 1000).
    async fn pending_count(&self, who: &Agent) -> usize;
    /// Waits until `who` has at least `n` pending messages; returns the page.
    async fn wait_pending(&self, who: &Agent, n: usize) -> (Value, String);
    /// `GET /v1/info`.
    async fn info(&self) -> Value;
    /// A raw `POST /v1/federation/deliver`.
    async fn deliver_raw(&self, headers: &[(&str, String)], body: &str) -> Resp;
}

impl FederationExt for Ampd {
    async fn send(
        &self,
        from: &Agent,
        to: &str,
        subject: &str,
        payload: &str,
        in_reply_to: Option<&str>,
    ) -> Resp {
        let mut m = Msg::new(to, subject).payload(payload);
        if let Some(r) = in_reply_to {
            m = m.reply_to(r);
        }
        self.post(from, "/v1/route", Some(m.flat(Some(&m.sign(from)))))
            .await
    }

    async fn pending(&self, who: &Agent) -> (Value, String) {
        let r = self.get(who, "/v1/messages/pending?limit=1000").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        (r.json(), r.text)
    }

    async fn pending_count(&self, who: &Agent) -> usize {
        self.pending(who).await.0["messages"]
            .as_array()
            .map_or(0, Vec::len)
    }

    async fn wait_pending(&self, who: &Agent, n: usize) -> (Value, String) {
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

    async fn info(&self) -> Value {
        self.http
            .get(format!("{}/v1/info", self.url()))
            .send()
            .await
            .expect("info")
            .json()
            .await
            .expect("json")
    }

    async fn deliver_raw(&self, headers: &[(&str, String)], body: &str) -> Resp {
        let mut req = self
            .http
            .post(format!("{}/v1/federation/deliver", self.url()))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        amp_testkit::http::send(req).await
    }
}

/// The client signature of a message (the kit's [`Msg`] signing).
pub(crate) fn sign(
    from: &Agent,
    to: &str,
    subject: &str,
    payload: &str,
    in_reply_to: Option<&str>,
) -> String {
    let mut m = Msg::new(to, subject).payload(payload);
    if let Some(r) = in_reply_to {
        m = m.reply_to(r);
    }
    m.sign(from)
}

/// `{"type":"notification","message":<text>}` with `text` JSON-escaped, and a number
/// literal serde would rewrite, to prove the bytes travel untouched.
pub(crate) fn payload_with(text: &str) -> String {
    format!(
        r#"{{"type":"notification",  "message":{},"context":{{"n":1.50,"z":"ü"}}}}"#,
        serde_json::to_string(text).expect("string")
    )
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
