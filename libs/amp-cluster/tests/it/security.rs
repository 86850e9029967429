//! The NATS of the cluster with users and TLS: the services connect with their own
//! credentials and the permissions of `deploy/nats/auth.conf`; anyone else is refused, with
//! an error that names what to check and never holds a secret.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amp_bus::{BusMessage, StreamName};
use amp_cluster::{NatsConfig, StoreConfig, connect};
use amp_testkit::{NATS_SERVICES, NatsServer, TestPki, nats_auth_config};

/// A password per service, unlike any other string in the logs.
fn password(service: &str) -> String {
    format!("pw-{service}-7f3c9a1e5b")
}

/// `deploy/nats/auth.conf` with these tests' passwords.
fn auth_config() -> String {
    nats_auth_config(password)
}

/// A password file in `dir`.
fn password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{password}\n")).expect("write the password file");
    path
}

fn nats(url: String) -> NatsConfig {
    NatsConfig {
        urls: url,
        ..NatsConfig::default()
    }
}

/// Everything logged while the guard lives (on this thread: the tests run on a
/// current-thread runtime, so the clients' tasks log here too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                // Everything, as `RUST_LOG=trace` would give it, through the binaries' cap.
                .with_env_filter(amp_runtime::telemetry::without_secrets(
                    tracing_subscriber::EnvFilter::new("trace"),
                ))
                .with_ansi(false)
                .with_writer(move || logs.clone())
                .finish(),
        )
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The error of a connect that must fail, as `main` would print it.
async fn refused(nats: &NatsConfig) -> String {
    match connect(nats, &StoreConfig::default()).await {
        Ok(_) => panic!("connected without the right credentials"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn security_nats_services_connect_with_their_own_credentials() {
    let server = NatsServer::start_with(&auth_config());
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = Logs::default();
    let _guard = logs.capture();
    for service in NATS_SERVICES {
        let mut cfg = nats(server.url());
        cfg.auth.user = Some(service.to_owned());
        cfg.auth.password_file = Some(password_file(dir.path(), service, &password(service)));
        let (bus, store) = connect(&cfg, &StoreConfig::default())
            .await
            .unwrap_or_else(|e| panic!("{service} connects: {e:#}\n{}", server.log()));
        // The store (KV and JetStream API) and the bus (stream, consumer, fan-out) work
        // within the permissions of auth.conf.
        assert!(store.ready().await, "{service}: store ready");
        let key = format!("security-{service}");
        store
            .put(&key, b"v".to_vec(), None)
            .await
            .expect("store put");
        assert_eq!(store.get(&key).await.expect("get"), Some(b"v".to_vec()));
        let mut sub = bus
            .subscribe(&format!("amp.notify.security.{service}"))
            .await
            .expect("subscribe");
        bus.notify(
            &format!("amp.notify.security.{service}"),
            bytes::Bytes::from_static(b"hint"),
        )
        .await
        .expect("notify");
        let hint = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("hint in time");
        assert!(hint.is_some(), "{service}: hint");
        // The router consumes the ingress stream but may not feed it (below).
        if service != "router" {
            bus.publish(
                StreamName::Ingress,
                &format!("security-{service}"),
                BusMessage::new(format!("amp.ingress.security.{service}"), "m"),
            )
            .await
            .expect("publish");
            let mut consumer = bus
                .consume(StreamName::Ingress, "router")
                .await
                .expect("consume");
            let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next())
                .await
                .expect("delivery in time")
                .expect("delivery");
            delivery.ack().await.expect("ack");
        }
        bus.shutdown().await;
        let _ = store.close().await;
    }
    let logs = logs.text();
    for service in NATS_SERVICES {
        assert!(!logs.contains(&password(service)), "a password was logged");
    }
}

#[tokio::test]
async fn security_nats_requires_credentials() {
    let server = NatsServer::start_with(&auth_config());
    let error = refused(&nats(server.url())).await;
    assert!(
        error.contains("requires authentication") && error.contains("nats.auth"),
        "{error}"
    );
}

#[tokio::test]
async fn security_nats_wrong_password_is_named_and_never_echoed() {
    let server = NatsServer::start_with(&auth_config());
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = Logs::default();
    let _guard = logs.capture();
    let wrong = "wrong-pw-4d2b8e6a9c";
    let mut cfg = nats(server.url());
    cfg.auth.user = Some("router".into());
    cfg.auth.password_file = Some(password_file(dir.path(), "router", wrong));
    let error = refused(&cfg).await;
    assert!(
        error.contains("refused the credentials") && error.contains("authorization violation"),
        "{error}"
    );
    // Another service's password is another service's: it does not open this user.
    cfg.auth.password_file = Some(password_file(dir.path(), "ingest", &password("ingest")));
    let error2 = refused(&cfg).await;
    let logs = logs.text();
    for text in [&error, &error2, &logs] {
        assert!(
            !text.contains(wrong) && !text.contains(&password("ingest")),
            "{text}"
        );
    }
}

#[tokio::test]
async fn security_nats_missing_password_file_is_named() {
    let mut cfg = nats("nats://127.0.0.1:1".into());
    cfg.auth.user = Some("router".into());
    cfg.auth.password_file = Some("/nonexistent/amp/nats-password".into());
    let error = refused(&cfg).await;
    assert!(
        error.contains("cannot read nats auth.password_file /nonexistent/amp/nats-password"),
        "{error}"
    );
}

#[tokio::test]
async fn security_nats_url_with_credentials_is_refused() {
    let error = refused(&nats("nats://router:hunter2secret@127.0.0.1:4222".into())).await;
    assert!(error.contains("carries credentials"), "{error}");
    assert!(!error.contains("hunter2secret"), "{error}");
}

#[tokio::test]
async fn security_nats_nkey_user_connects_with_its_seed_file() {
    let user = nkeys::KeyPair::new_user();
    let server = NatsServer::start_with(&format!(
        "authorization {{\n  users = [ {{ nkey: {} }} ]\n}}\n",
        user.public_key()
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let seed = user.seed().expect("seed");
    let seed_file = password_file(dir.path(), "seed", &seed);
    let mut cfg = nats(server.url());
    cfg.auth.nkey_seed_file = Some(seed_file);
    let logs = Logs::default();
    let _guard = logs.capture();
    let (bus, store) = connect(&cfg, &StoreConfig::default())
        .await
        .unwrap_or_else(|e| panic!("connects with the nkey: {e:#}\n{}", server.log()));
    assert!(store.ready().await);
    bus.shutdown().await;
    let _ = store.close().await;
    // Another key is refused.
    let other = nkeys::KeyPair::new_user().seed().expect("seed");
    cfg.auth.nkey_seed_file = Some(password_file(dir.path(), "other", &other));
    let error = refused(&cfg).await;
    assert!(error.contains("refused the credentials"), "{error}");
    let logs = logs.text();
    for text in [&error, &logs] {
        assert!(
            !text.contains(&seed) && !text.contains(&other),
            "a seed leaked"
        );
    }
}

/// The server `tls { .. }` of `pki`, with the users of auth.conf.
fn tls_config(pki: &TestPki, verify: bool) -> String {
    auth_config() + &pki.server_block(verify)
}

/// The router's credentials in `dir`.
fn router(url: String, dir: &Path) -> NatsConfig {
    let mut cfg = nats(url);
    cfg.auth.user = Some("router".into());
    cfg.auth.password_file = Some(password_file(dir, "router", &password("router")));
    cfg
}

#[tokio::test]
async fn security_nats_tls_verifies_the_server_against_the_ca() {
    let pki = TestPki::generate();
    let server = NatsServer::start_with(&tls_config(&pki, false));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = router(server.url(), dir.path());
    cfg.tls.ca_file = Some(pki.ca());
    let (bus, store) = connect(&cfg, &StoreConfig::default())
        .await
        .unwrap_or_else(|e| panic!("connects over TLS: {e:#}\n{}", server.log()));
    assert!(store.ready().await);
    bus.shutdown().await;
    let _ = store.close().await;

    // A server whose certificate does not chain to the configured CA is refused.
    let other = TestPki::generate();
    cfg.tls.ca_file = Some(other.ca());
    let error = refused(&cfg).await;
    assert!(error.contains("TLS with NATS"), "{error}");
}

#[tokio::test]
async fn security_nats_tls_client_certificate_when_the_server_verifies() {
    let pki = TestPki::generate();
    let server = NatsServer::start_with(&tls_config(&pki, true));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = router(server.url(), dir.path());
    cfg.tls.ca_file = Some(pki.ca());
    // Without a client certificate the server closes the handshake.
    let error = refused(&cfg).await;
    assert!(!error.contains(&password("router")), "{error}");
    cfg.tls.cert_file = Some(pki.client_cert());
    cfg.tls.key_file = Some(pki.client_key());
    let (bus, store) = connect(&cfg, &StoreConfig::default())
        .await
        .unwrap_or_else(|e| panic!("connects with a client certificate: {e:#}"));
    assert!(store.ready().await);
    bus.shutdown().await;
    let _ = store.close().await;
}

#[tokio::test]
async fn security_nats_tls_required_refuses_a_plain_server() {
    let server = NatsServer::start_with(&auth_config());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = router(server.url(), dir.path());
    cfg.tls.required = true;
    let error = refused(&cfg).await;
    assert!(error.contains("TLS"), "{error}");
}

/// Each service publishes only into the streams it feeds (deploy/nats/auth.conf): the router
/// consumes the ingress stream but cannot put a message into it (a record marked
/// `signature_valid`, delivered as verified), and only the router feeds the federation
/// stream.
#[tokio::test]
async fn security_cluster_services_publish_only_into_their_own_streams() {
    let server = NatsServer::start_with(&auth_config());
    let dir = tempfile::tempdir().expect("temp dir");
    let as_service = |service: &str| {
        let mut cfg = nats(server.url());
        cfg.auth.user = Some(service.to_owned());
        cfg.auth.password_file = Some(password_file(dir.path(), service, &password(service)));
        cfg
    };
    let publish = |bus: &amp_bus::Bus, stream: StreamName, subject: String| {
        let bus = bus.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                bus.publish(stream, &subject, BusMessage::new(subject.clone(), "m")),
            )
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false)
        }
    };
    let mut opened = Vec::new();
    for service in NATS_SERVICES {
        let (bus, store) = connect(&as_service(service), &StoreConfig::default())
            .await
            .unwrap_or_else(|e| panic!("{service} connects: {e:#}"));
        let ingress = publish(
            &bus,
            StreamName::Ingress,
            format!("amp.ingress.sec.{service}"),
        )
        .await;
        let federation = publish(
            &bus,
            StreamName::Federation,
            format!("amp.federation.sec.{service}"),
        )
        .await;
        assert_eq!(
            ingress,
            service != "router",
            "{service} publishing into the ingress stream\n{}",
            server.log()
        );
        assert_eq!(
            federation,
            service == "router",
            "{service} publishing into the federation stream\n{}",
            server.log()
        );
        opened.push((bus, store));
    }
    // The router still consumes what the others fed.
    let router = &opened[NATS_SERVICES
        .iter()
        .position(|s| *s == "router")
        .expect("router")]
    .0;
    let mut consumer = router
        .consume(StreamName::Ingress, "router")
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("delivery in time")
        .expect("delivery");
    delivery.ack().await.expect("ack");
    for (bus, store) in opened {
        bus.shutdown().await;
        let _ = store.close().await;
    }
}
