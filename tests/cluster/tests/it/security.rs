//! The cluster's processes on a NATS that requires users (deploy/nats/auth.conf): each binary
//! logs in as its own user from a password file, a message crosses every service, and a
//! binary without credentials stops at start, saying why.

use amp_testkit::{NATS_SERVICES, NatsServer, nats_auth_config};
use cluster_tests::{Deployment, HEAVY, Topology};

use crate::common::{agent, client, mailbox_ids, message_id, send};

fn password(service: &str) -> String {
    format!("pw-{service}-c41d07e2aa")
}

/// `deploy/nats/auth.conf` with these tests' passwords.
fn auth_config() -> String {
    nats_auth_config(password)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_cluster_services_log_in_to_nats_with_their_own_users() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start_with(&auth_config());
    let secrets = tempfile::tempdir().expect("temp dir");
    for s in NATS_SERVICES {
        std::fs::write(
            secrets.path().join(format!("{s}.password")),
            password(s) + "\n",
        )
        .expect("write a password file");
    }
    let mut topology = Topology::new("secure.test", nats.url(), 1);
    topology.replicas = [1, 1, 1, 0];
    topology.nats_passwords = Some(secrets.path().to_owned());
    let d = Deployment::start(&topology).await;
    let url = d.ingest[0].url();
    let alice = agent(&url, "acme", "alice").await;
    let bob = agent(&url, "acme", "bob").await;
    let id = message_id();
    send(&client(&url), &alice, bob.address(), &id, "behind a login")
        .await
        .unwrap_or_else(|e| panic!("route: {e}\n{}", d.logs()));
    let deadline = tokio::time::Instant::now() + d.drain_timeout;
    while mailbox_ids(&url, &bob).await != [id.clone()] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered\n{}",
            d.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let logs = d.logs();
    for s in NATS_SERVICES {
        assert!(!logs.contains(&password(s)), "a password was logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_cluster_binary_without_credentials_stops_and_says_why() {
    let nats = NatsServer::start_with(&auth_config());
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nkey_file = {:?}\npepper_file = {:?}\n[nats]\nurls = {:?}\n",
            dir.path().join("key.pem"),
            dir.path().join("pepper"),
            nats.url()
        ),
    )
    .expect("write the config");
    let out = tokio::process::Command::new(cluster_tests::binary(cluster_tests::Kind::Router))
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("run router");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("requires authentication") && stderr.contains("nats.auth"),
        "{stderr}"
    );
}
