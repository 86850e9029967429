//! Federation in the cluster topology: two providers, each its own ingest, router and
//! federation processes (on one NATS, under different prefixes), converse both ways.

use std::time::Duration;

use amp_client::Identity;
use amp_proto::SecretKey;
use amp_testkit::NatsServer;
use amp_testkit::cluster::{Deployment, HEAVY, Topology, free_port};

use crate::common::{agent, client, message_id, send};

pub(crate) fn topology(
    domain: &str,
    nats: &NatsServer,
    key: &SecretKey,
    port: u16,
    peer: (&str, &SecretKey, u16),
) -> Topology {
    let mut t = Topology::new(domain, nats.url(), 1);
    t.prefix = domain.replace('.', "_");
    t.replicas = [1, 1, 0, 1];
    t.provider_key = Some(key.clone());
    t.federation_ports = vec![port];
    let (peer_domain, peer_key, peer_port) = peer;
    t.federation_toml = format!(
        "allow_insecure_http = true\nallow_private_targets = true\npoll_interval_ms = 100\n\
         retry_initial_ms = 200\n\n[[federation.peers]]\ndomain = {peer_domain:?}\n\
         endpoint = \"http://127.0.0.1:{peer_port}/v1\"\npublic_key = {pem:?}\n",
        pem = peer_key.public().to_pem(),
    );
    t
}

/// Waits for one message from `from` in `who`'s mailbox.
pub(crate) async fn receive(
    url: &str,
    who: &Identity,
    id: &str,
    d: &Deployment,
    peer: &Deployment,
) -> amp_client::Message {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = client(url)
            .pending(who, Some(100), None, None)
            .await
            .expect("pending");
        if let Some(m) = page.messages.into_iter().find(|m| m.id() == id) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never reached {}\n{}\n{}",
            who.address(),
            peer.logs(),
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_cluster_round_trip() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let (alpha_key, beta_key) = (SecretKey::generate(), SecretKey::generate());
    let (alpha_port, beta_port) = (free_port(), free_port());
    let alpha = Deployment::start(&topology(
        "alpha.test",
        &nats,
        &alpha_key,
        alpha_port,
        ("beta.test", &beta_key, beta_port),
    ))
    .await;
    let beta = Deployment::start(&topology(
        "beta.test",
        &nats,
        &beta_key,
        beta_port,
        ("alpha.test", &alpha_key, alpha_port),
    ))
    .await;
    let (a, b) = (alpha.ingest[0].url(), beta.ingest[0].url());
    let info = client(&a).info().await.expect("info");
    assert!(
        info.capabilities.iter().any(|c| c == "federation"),
        "{:?}",
        info.capabilities
    );

    let alice = agent(&a, "acme", "alice").await;
    let bob = agent(&b, "acme", "bob").await;

    let id = message_id();
    let answer = send(&client(&a), &alice, bob.address(), &id, "hello from alpha")
        .await
        .expect("route to another provider");
    assert_eq!(answer.id, id);
    let got = receive(&b, &bob, &id, &beta, &alpha).await;
    assert_eq!(got.envelope.from, alice.address());
    got.verify(None)
        .expect("the sender's signature survives federation");
    let security = got.local.clone().expect("local.security annotation");
    assert_eq!(security["security"]["trust"], "external", "{security}");

    let reply = message_id();
    send(
        &client(&b),
        &bob,
        alice.address(),
        &reply,
        "hello back from beta",
    )
    .await
    .expect("reply");
    let back = receive(&a, &alice, &reply, &alpha, &beta).await;
    assert_eq!(back.envelope.from, bob.address());
    back.verify(None).expect("the reply verifies");
}
