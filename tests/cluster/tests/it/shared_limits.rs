//! Rate limits hold for the cluster, not per replica: one agent's routes alternate between
//! two ingest replicas and the accepted count stays within `messages_per_minute` plus the
//! bound `amp_runtime::ratelimit` documents, where two replicas counting alone would take
//! twice the limit. The services log in with the users of `deploy/nats/auth.conf`, so the
//! reports' subjects (`amp.limits.>`) are proven allowed.

use std::time::{Duration, Instant};

use amp_testkit::cluster::{Deployment, HEAVY, Topology};
use amp_testkit::{NATS_SERVICES, NatsServer, nats_auth_config};

use crate::common::{agent, client, message_id, send};

const LIMIT: u32 = 10;
const SYNC_MS: u64 = 50;
/// Between two routes: more than the sync interval plus the bus's latency, so a replica
/// has heard of the other's previous route; the bound then allows one unheard-of route.
const SPACING: Duration = Duration::from_millis(150);

fn password(service: &str) -> String {
    format!("pw-{service}-5a9e21c7d3")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_shared_limits_two_ingest_replicas_share_the_message_budget() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start_with(&nats_auth_config(password));
    let secrets = tempfile::tempdir().expect("temp dir");
    for s in NATS_SERVICES {
        std::fs::write(
            secrets.path().join(format!("{s}.password")),
            password(s) + "\n",
        )
        .expect("write a password file");
    }
    let mut topology = Topology::new("limits.test", nats.url(), 1);
    topology.replicas = [2, 1, 1, 0];
    topology.nats_passwords = Some(secrets.path().to_owned());
    topology.messages_per_minute = LIMIT;
    topology.limits_sync_ms = Some(SYNC_MS);
    let d = Deployment::start(&topology).await;
    let urls = [d.ingest[0].url(), d.ingest[1].url()];
    let clients = [client(&urls[0]), client(&urls[1])];
    let alice = agent(&urls[0], "limits", "alice").await;
    let bob = agent(&urls[0], "limits", "bob").await;

    let started = Instant::now();
    let (mut accepted, mut limited) = ([0usize; 2], 0);
    for i in 0..30 {
        match send(&clients[i % 2], &alice, bob.address(), &message_id(), "hi").await {
            Ok(_) => accepted[i % 2] += 1,
            Err(code) if code == "rate_limited" => limited += 1,
            Err(code) => panic!("route {i}: {code}\n{}", d.logs()),
        }
        tokio::time::sleep(SPACING).await;
    }
    let total = accepted[0] + accepted[1];
    // The bound: what one process allows in the elapsed time (the burst, plus one refill
    // every minute / LIMIT, rounded up), plus one route per other replica not yet heard of.
    let refill = Duration::from_secs(60) / LIMIT;
    let refills = started.elapsed().as_millis().div_ceil(refill.as_millis()) as usize;
    let bound = LIMIT as usize + refills + 1;
    assert!(
        total <= bound,
        "{total} routes accepted ({accepted:?} per replica), bound {bound}; alone each \
         replica would take {LIMIT}\n{}",
        d.logs()
    );
    assert!(
        total >= LIMIT as usize,
        "{total} accepted, {limited} limited"
    );
    assert_eq!(total + limited, 30);
    // Both replicas took part, and both refused.
    assert!(accepted.iter().all(|n| *n > 0), "{accepted:?}");
}
