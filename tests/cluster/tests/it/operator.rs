//! Issue 17 in the cluster: the operator plane's state is in the shared store, so what one
//! ingest replica's admin API does, the other enforces. Two ingest replicas, each with its
//! own admin listener: a suspension made through one is enforced by the other within a
//! second; an owner key issued through one registers through the other; a revocation through
//! the other is refused at once through the first. Every test name starts with `operator_`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use amp_client::{AdminClient, Identity};
use amp_proto::SecretKey;
use amp_testkit::NatsServer;
use amp_testkit::cluster::{Deployment, HEAVY, Kind, Service, Topology, free_port};

use crate::common::{agent, client, mailbox_ids, message_id, send};

pub(crate) const BOOTSTRAP: &str = "amp_op_cluster-bootstrap-token-0123456789abcdefghij";

/// An ingest replica with its admin API on `admin_port`, on the deployment's shared config;
/// it writes its usage counts every 200 ms (so a test sees them soon).
pub(crate) async fn ingest_with_admin(d: &Deployment, n: usize, admin_port: u16) -> Service {
    let name = format!("ingest-admin-{n}");
    Service::start_with_env(
        Kind::Ingest,
        name.clone(),
        d.dir().join("cluster.toml"),
        d.dir().join(format!("{name}.log")),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        vec![
            (
                "AMP__INGEST__ADMIN__LISTEN".into(),
                format!("127.0.0.1:{admin_port}"),
            ),
            (
                "AMP__INGEST__ADMIN__BOOTSTRAP_TOKEN".into(),
                BOOTSTRAP.into(),
            ),
            (
                "AMP__INGEST__MESSAGING__USAGE_FLUSH_MS".into(),
                "200".into(),
            ),
        ],
    )
    .await
}

/// `GET /v1/agents/me` through `url`: the status and the `error` code.
async fn me(url: &str, who: &Identity) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("{url}/v1/agents/me"))
        .bearer_auth(who.api_key())
        .send()
        .await
        .expect("agents/me");
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (status, body["error"].as_str().unwrap_or("").to_owned())
}

/// How long until `me` through `url` answers `status`; panics past `limit`.
async fn until_me(url: &str, who: &Identity, status: u16, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if me(url, who).await.0 == status {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{url} never answered {status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_cluster_admin_state_is_shared_by_ingest_replicas() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let mut topology = Topology::new("ops.test", nats.url(), 1);
    topology.replicas = [0, 1, 1, 0];
    let d = Deployment::start(&topology).await;
    let (p1, p2) = (free_port(), free_port());
    let i1 = ingest_with_admin(&d, 1, p1).await;
    let i2 = ingest_with_admin(&d, 2, p2).await;
    let (u1, u2) = (i1.url(), i2.url());
    let a1 = AdminClient::new(&format!("http://127.0.0.1:{p1}"), BOOTSTRAP).expect("admin 1");
    let a2 = AdminClient::new(&format!("http://127.0.0.1:{p2}"), BOOTSTRAP).expect("admin 2");

    // A tenant and an owner key made through replica 1 work through replica 2.
    a1.create_tenant("orbit", Some("owner_key"))
        .await
        .expect("create tenant");
    let issued = a1
        .issue_owner_key("orbit", serde_json::json!({}))
        .await
        .expect("issue");
    let key = issued["key"].as_str().expect("key").to_owned();
    let key_id = issued["id"].as_str().expect("id").to_owned();
    let alice = client(&u2)
        .register(None, "alice", &SecretKey::generate(), Some(&key))
        .await
        .unwrap_or_else(|e| panic!("register through replica 2: {e}\n{}", d.logs()));
    let bob = client(&u1)
        .register(None, "bob", &SecretKey::generate(), Some(&key))
        .await
        .expect("register through replica 1");
    assert!(alice.address().starts_with("alice@orbit."));
    // The agents listing and the web console are the admin listener's in the cluster too: both
    // agents, registered through two replicas, listed by one; the page served by the other.
    let http = reqwest::Client::new();
    let listed: serde_json::Value = http
        .get(format!(
            "http://127.0.0.1:{p2}/admin/v1/tenants/orbit/agents"
        ))
        .bearer_auth(BOOTSTRAP)
        .send()
        .await
        .expect("agents")
        .json()
        .await
        .expect("agents JSON");
    let names: Vec<&str> = listed["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["alice", "bob"], "{listed}");
    let page = http
        .get(format!("http://127.0.0.1:{p1}/console/"))
        .send()
        .await
        .expect("console");
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap_or_default();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    send(&client(&u2), &alice, bob.address(), &message_id(), "hello")
        .await
        .unwrap_or_else(|e| panic!("route: {e}\n{}", d.logs()));
    // Replica 2's gate has read the tenant as active just now: the suspension must get past
    // its cache.
    assert_eq!(me(&u2, &alice).await.0, 200);

    // Suspended through replica 1: replica 2 refuses within a second.
    a1.suspend("orbit", Some("cluster test"))
        .await
        .expect("suspend");
    let took = until_me(&u2, &alice, 403, Duration::from_secs(3)).await;
    eprintln!("suspension through replica 1 enforced by replica 2 after {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "replica 2 enforced after {took:?}"
    );
    assert_eq!(me(&u2, &alice).await.1, "agent_suspended");
    let refused = send(&client(&u2), &alice, bob.address(), &message_id(), "x").await;
    assert_eq!(refused.err().as_deref(), Some("agent_suspended"));
    assert_eq!(me(&u1, &bob).await, (403, "agent_suspended".to_owned()));

    // Resumed through replica 2: replica 1 serves again within a second.
    a2.resume("orbit").await.expect("resume");
    let took = until_me(&u1, &bob, 200, Duration::from_secs(3)).await;
    eprintln!("resumption through replica 2 seen by replica 1 after {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "replica 1 resumed after {took:?}"
    );

    // Revoked through replica 2: refused through replica 1 at once (keys are read per use).
    a2.revoke_owner_key("orbit", &key_id).await.expect("revoke");
    let err = client(&u1)
        .register(None, "carol", &SecretKey::generate(), Some(&key))
        .await
        .expect_err("a revoked key registers nothing");
    assert_eq!(err.code(), "unauthorized");

    // Both replicas wrote to the one audit log.
    let audit = a2.audit(None, Some(500)).await.expect("audit");
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["target"] == "orbit")
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.create",
            "owner_key.issue",
            "owner_key.use",
            "owner_key.use",
            "tenant.suspend",
            "tenant.resume",
            "owner_key.revoke"
        ],
        "{audit}"
    );
    drop((i1, i2));
}

/// Tenant deletion in the cluster, on the JetStream store: asked through replica 1, waited
/// for through replica 2 (the client's poll, as `amp admin tenants delete --wait`), then
/// every bucket and stream of the store scanned: nothing of the tenant is left, and the
/// other tenant's agents and mailboxes are whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_tenant_delete_in_the_cluster_purges_the_jetstream_store() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let mut topology = Topology::new("del.test", nats.url(), 1);
    topology.replicas = [0, 1, 1, 0];
    let d = Deployment::start(&topology).await;
    let (p1, p2) = (free_port(), free_port());
    let i1 = ingest_with_admin(&d, 1, p1).await;
    let i2 = ingest_with_admin(&d, 2, p2).await;
    let (u1, u2) = (i1.url(), i2.url());
    let a1 = AdminClient::new(&format!("http://127.0.0.1:{p1}"), BOOTSTRAP).expect("admin 1");
    let a2 = AdminClient::new(&format!("http://127.0.0.1:{p2}"), BOOTSTRAP).expect("admin 2");
    for t in ["purged", "stays"] {
        a1.create_tenant(t, Some("open"))
            .await
            .expect("create tenant");
        a1.issue_owner_key(t, serde_json::json!({}))
            .await
            .expect("owner key");
    }
    let (p, q) = (
        agent(&u1, "purged", "pam").await,
        agent(&u2, "purged", "quin").await,
    );
    let (s1, s2) = (
        agent(&u1, "stays", "sue").await,
        agent(&u2, "stays", "sid").await,
    );
    for (from, to) in [
        (&s1, &p),
        (&s1, &p),
        (&q, &p),
        (&p, &q),
        (&s1, &s2),
        (&s1, &s2),
    ] {
        send(&client(&u1), from, to.address(), &message_id(), "hello")
            .await
            .unwrap_or_else(|e| panic!("route: {e}\n{}", d.logs()));
    }
    let start = Instant::now();
    while mailbox_ids(&u1, &p).await.len() < 3 || mailbox_ids(&u1, &s2).await.len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", d.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = mailbox_ids(&u1, &p).await[0].clone();
    client(&u1).ack_one(&p, &first).await.expect("ack");
    let to_q = mailbox_ids(&u1, &q).await[0].clone();
    client(&u1).read(&q, &to_q).await.expect("read receipt");

    let started = a1.delete_tenant("purged").await.expect("delete");
    assert_eq!(started["status"], "pending", "{started}");
    let done = tokio::time::timeout(
        Duration::from_secs(30),
        a2.wait_tenant_deletion("purged", Duration::from_millis(100)),
    )
    .await
    .expect("done within 30 s")
    .expect("status");
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["purged"]["agents"], 2, "{done}");
    assert_eq!(me(&u2, &p).await.0, 401);
    assert_eq!(me(&u1, &s2).await.0, 200);

    let js =
        amp_store::jetstream::JetStreamStore::connect(amp_store::jetstream::JetStreamStoreConfig {
            urls: vec![nats.url()],
            prefix: topology.prefix.clone(),
            ..Default::default()
        })
        .await
        .expect("connect to the store");
    let rows: Vec<_> = js
        .scan_rows()
        .await
        .expect("scan")
        .into_iter()
        // The audit log, the deletion's record and the usage rows with their index
        // (billing) are kept on purpose.
        .filter(|r| {
            !(r.key.contains("rec.audit.")
                || r.key.contains("rec.tenant_deletions.")
                || r.key.contains("rec.usage.")
                || r.key.contains("rec.usage_tenants."))
        })
        .collect();
    let gone = [
        "purged".to_owned(),
        p.agent_id().to_owned(),
        q.agent_id().to_owned(),
    ];
    let kept = [s1.agent_id().to_owned(), s2.agent_id().to_owned()];
    amp_store::testing::purge::assert_gone(&rows, &gone, &kept);
    assert_eq!(mailbox_ids(&u1, &s2).await.len(), 2);
    drop((i1, i2));
}
