//! The cluster's processes on a NATS that requires users (deploy/nats/auth.conf): each binary
//! logs in as its own user from a password file, a message crosses every service, and a
//! binary without credentials stops at start, saying why.

use amp_testkit::cluster::{Deployment, HEAVY, Topology};
use amp_testkit::{NATS_SERVICES, NatsServer, nats_auth_config};

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
    let out = tokio::process::Command::new(amp_testkit::cluster::binary(
        amp_testkit::cluster::Kind::Router,
    ))
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

/// The close code a subscription ends with, within `within` (`None`: still open).
async fn closed_with(
    sub: &mut amp_client::ws::Subscription,
    within: std::time::Duration,
) -> Option<u16> {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Err(_) => return None,
            Ok(None) => return Some(1000),
            Ok(Some(Err(amp_client::ClientError::Closed { code, .. }))) => return code,
            Ok(Some(_)) => {}
        }
    }
}

/// Revoking the API key through one ingest replica closes the agent's sockets on every
/// delivery replica (each process relays the registry change to its own sockets), and
/// nobody else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_revocation_closes_sockets_on_every_delivery_replica() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let mut topology = Topology::new("revoke.test", nats.url(), 1);
    topology.replicas = [1, 1, 2, 0];
    let d = Deployment::start(&topology).await;
    let url = d.ingest[0].url();
    let bob = agent(&url, "acme", "bob").await;
    let carol = agent(&url, "acme", "carol").await;
    let mut bobs = Vec::new();
    for replica in &d.delivery {
        let sub = client(&replica.url())
            .subscribe(&bob)
            .await
            .unwrap_or_else(|e| panic!("subscribe: {e}\n{}", d.logs()));
        bobs.push(sub);
    }
    let mut carols = client(&d.delivery[1].url())
        .subscribe(&carol)
        .await
        .expect("subscribe carol");
    let r = reqwest::Client::new()
        .delete(format!("{url}/v1/auth/revoke-key"))
        .bearer_auth(bob.api_key())
        .send()
        .await
        .expect("revoke");
    assert!(r.status().is_success(), "{}", r.status());
    for (i, sub) in bobs.iter_mut().enumerate() {
        assert_eq!(
            closed_with(sub, std::time::Duration::from_secs(5)).await,
            Some(4001),
            "bob's socket on delivery {i}\n{}",
            d.logs()
        );
    }
    assert_eq!(
        closed_with(&mut carols, std::time::Duration::from_millis(500)).await,
        None,
        "carol's socket stays open"
    );
}

/// A registry event lost on the way still ends the sockets of a revoked key: here ingest may
/// not publish `amp.registry.>`, so NATS drops every change it announces; the delivery
/// replica's socket stays open past the moment an event would have closed it, then closes
/// at its periodic re-check (`reauth_secs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_revocation_reaches_sockets_whose_event_was_lost() {
    let _heavy = HEAVY.lock().await;
    let allowed = r#"deny = ["amp.federation.>"]"#;
    let config = auth_config();
    // The first user of auth.conf is ingest's.
    assert!(
        config.find(allowed) < config.find("user = router"),
        "{config}"
    );
    let lossy = config.replacen(
        allowed,
        r#"deny = ["amp.federation.>", "amp.registry.>"]"#,
        1,
    );
    let nats = NatsServer::start_with(&lossy);
    let secrets = tempfile::tempdir().expect("temp dir");
    for s in NATS_SERVICES {
        std::fs::write(
            secrets.path().join(format!("{s}.password")),
            password(s) + "\n",
        )
        .expect("write a password file");
    }
    let mut topology = Topology::new("lost.test", nats.url(), 1);
    topology.replicas = [1, 1, 1, 0];
    topology.nats_passwords = Some(secrets.path().to_owned());
    topology.reauth_secs = Some(4);
    let d = Deployment::start(&topology).await;
    let url = d.ingest[0].url();
    let bob = agent(&url, "acme", "bob").await;
    let mut sub = client(&d.delivery[0].url())
        .subscribe(&bob)
        .await
        .unwrap_or_else(|e| panic!("subscribe: {e}\n{}", d.logs()));
    let r = reqwest::Client::new()
        .delete(format!("{url}/v1/auth/revoke-key"))
        .bearer_auth(bob.api_key())
        .send()
        .await
        .expect("revoke");
    assert!(r.status().is_success(), "{}", r.status());
    // No event arrives: an announced revocation closes sockets within milliseconds.
    assert_eq!(
        closed_with(&mut sub, std::time::Duration::from_millis(1_500)).await,
        None,
        "closed at once: the event was not lost\n{}",
        d.logs()
    );
    // The periodic re-check finds the key revoked.
    assert_eq!(
        closed_with(&mut sub, std::time::Duration::from_secs(8)).await,
        Some(4001),
        "the socket of a revoked key stayed open\n{}",
        d.logs()
    );
}

/// Federation both ways with every process logged in as its restricted user
/// (deploy/nats/auth.conf): the router feeds the federation stream, federation consumes it
/// and feeds the ingress stream with inbound messages. One NATS per provider, so no prefix
/// (the permissions are written for the default, empty one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_cluster_federation_works_with_restricted_users() {
    use crate::federation_cluster::{receive, topology};
    use amp_proto::SecretKey;
    use amp_testkit::cluster::free_port;

    let _heavy = HEAVY.lock().await;
    let secrets = tempfile::tempdir().expect("temp dir");
    for s in NATS_SERVICES {
        std::fs::write(
            secrets.path().join(format!("{s}.password")),
            password(s) + "\n",
        )
        .expect("write a password file");
    }
    let (nats_a, nats_b) = (
        NatsServer::start_with(&auth_config()),
        NatsServer::start_with(&auth_config()),
    );
    let (alpha_key, beta_key) = (SecretKey::generate(), SecretKey::generate());
    let (alpha_port, beta_port) = (free_port(), free_port());
    let mut ta = topology(
        "alpha.test",
        &nats_a,
        &alpha_key,
        alpha_port,
        ("beta.test", &beta_key, beta_port),
    );
    let mut tb = topology(
        "beta.test",
        &nats_b,
        &beta_key,
        beta_port,
        ("alpha.test", &alpha_key, alpha_port),
    );
    for t in [&mut ta, &mut tb] {
        t.prefix = String::new();
        t.nats_passwords = Some(secrets.path().to_owned());
    }
    let alpha = Deployment::start(&ta).await;
    let beta = Deployment::start(&tb).await;
    let (a, b) = (alpha.ingest[0].url(), beta.ingest[0].url());
    let alice = agent(&a, "acme", "alice").await;
    let bob = agent(&b, "acme", "bob").await;
    let id = message_id();
    send(&client(&a), &alice, bob.address(), &id, "across, logged in")
        .await
        .unwrap_or_else(|e| panic!("route: {e}\n{}", alpha.logs()));
    receive(&b, &bob, &id, &beta, &alpha).await;
    let reply = message_id();
    send(&client(&b), &bob, alice.address(), &reply, "and back")
        .await
        .unwrap_or_else(|e| panic!("reply: {e}\n{}", beta.logs()));
    receive(&a, &alice, &reply, &alpha, &beta).await;
    for d in [&alpha, &beta] {
        assert!(
            !d.logs().to_lowercase().contains("permissions violation"),
            "{}",
            d.logs()
        );
    }
}
