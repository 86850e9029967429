//! The CQL store over TLS, against a real node serving TLS on its native port (the test
//! kit's node: `client_encryption_options` with `optional: true`, certificates made by
//! `node.sh certs`, client certificates required): a store that connects over mutual TLS
//! works and really is encrypted, and a client that does not trust the node's CA, expects
//! another name, or has no certificate, fails with an error that names the host and says
//! why.

use amp_store::cql::{CqlStore, CqlStoreConfig, CqlTlsConfig};
use amp_store::testing::{entry, now_ms, unique};
use amp_store::{Enqueued, Error, Store};
use amp_testkit::cql::{CqlTlsTarget, cql_tls_target, unique_keyspace};

const DAY: i64 = 24 * 3600 * 1000;

fn config(target: &CqlTlsTarget, tls: CqlTlsConfig) -> CqlStoreConfig {
    CqlStoreConfig {
        connect_timeout_ms: 5_000,
        tls,
        ..CqlStoreConfig::for_test(&target.contact_point, &unique_keyspace("amp_tls"))
    }
}

/// The TLS connections the node has open right now (`system_views.clients`), seen through
/// a plain session of the test's own.
async fn tls_clients(contact_point: &str) -> usize {
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_node(contact_point)
        .build()
        .await
        .expect("plain session");
    let rows = session
        .query_unpaged("SELECT ssl_enabled FROM system_views.clients", ())
        .await
        .expect("read system_views.clients")
        .into_rows_result()
        .expect("rows");
    rows.rows::<(Option<bool>,)>()
        .expect("typed rows")
        .filter(|r| matches!(r, Ok((Some(true),))))
        .count()
}

/// Over mutual TLS (the CA and a client certificate, the name checked two ways): the store
/// migrates its keyspace, queues and serves a message, and the node counts TLS clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_tls_connects_and_stores_over_tls() {
    let Some(t) = cql_tls_target() else { return };
    let before = tls_clients(&t.contact_point).await;
    let tls = CqlTlsConfig {
        enabled: true,
        ca_file: Some(t.files.ca_file.clone()),
        cert_file: Some(t.files.client_cert_file.clone()),
        key_file: Some(t.files.client_key_file.clone()),
        ..CqlTlsConfig::default()
    };
    let store = Store::new(
        CqlStore::connect(config(&t, tls.clone()))
            .await
            .expect("connect over TLS"),
    );
    assert!(store.ready().await);
    let agent_id = unique("agt_");
    let now = now_ms();
    let r = store
        .enqueue(entry(&agent_id, "msg_tls", "s@t.example.test", now, DAY))
        .await
        .expect("enqueue over TLS");
    assert!(matches!(r, Enqueued::New { .. }), "{r:?}");
    let page = store.fetch(&agent_id, None, 10, now).await.expect("fetch");
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].message_id, "msg_tls");
    let during = tls_clients(&t.contact_point).await;
    assert!(
        during > before,
        "the node sees no more TLS clients with the store connected ({before} before, {during} now)"
    );

    // Certificates that name the cluster, not each node's address: checked by server_name.
    let by_name = CqlTlsConfig {
        server_name: Some(t.files.server_name.clone()),
        ..tls
    };
    let named = CqlStore::connect(config(&t, by_name))
        .await
        .expect("connect over TLS, certificate checked for its DNS name");
    assert!(Store::new(named).ready().await);
}

/// A client that trusts another CA, expects another name, or has no certificate is refused
/// at the handshake, and the error names the host, TLS, and what to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_tls_wrong_ca_or_name_fails_clearly() {
    let Some(t) = cql_tls_target() else { return };
    let wrong_ca = CqlTlsConfig {
        enabled: true,
        ca_file: Some(t.files.other_ca_file.clone()),
        cert_file: Some(t.files.client_cert_file.clone()),
        key_file: Some(t.files.client_key_file.clone()),
        ..CqlTlsConfig::default()
    };
    let err = CqlStore::connect(config(&t, wrong_ca))
        .await
        .err()
        .expect("a node signed by another CA is refused");
    assert!(matches!(err, Error::Unavailable(_)));
    let msg = err.to_string();
    eprintln!("with another CA: {msg}");
    for needle in [
        "over TLS",
        t.contact_point.as_str(),
        "not signed by a CA in ca_file",
        "other-ca.pem",
    ] {
        assert!(msg.contains(needle), "`{needle}` missing from: {msg}");
    }

    let wrong_name = CqlTlsConfig {
        enabled: true,
        ca_file: Some(t.files.ca_file.clone()),
        cert_file: Some(t.files.client_cert_file.clone()),
        key_file: Some(t.files.client_key_file.clone()),
        server_name: Some("not-the-cluster.example".into()),
        ..CqlTlsConfig::default()
    };
    let err = CqlStore::connect(config(&t, wrong_name))
        .await
        .err()
        .expect("a certificate for another name is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("over TLS") && msg.contains("not-the-cluster.example"),
        "{msg}"
    );

    let no_certificate = CqlTlsConfig {
        enabled: true,
        ca_file: Some(t.files.ca_file.clone()),
        ..CqlTlsConfig::default()
    };
    let err = CqlStore::connect(config(&t, no_certificate))
        .await
        .err()
        .expect("a TLS client without a certificate is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("over TLS")
            && msg.contains(t.contact_point.as_str())
            && msg.contains("set cert_file and key_file"),
        "{msg}"
    );
}
