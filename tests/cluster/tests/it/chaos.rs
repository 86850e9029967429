//! Chaos: a bounded load of signed messages runs through two ingest, two router and two
//! delivery processes while replicas (and NATS nodes) are killed with SIGKILL or stopped with
//! SIGSTOP and come back. At the end, every message that got a 2xx is in its recipient's
//! mailbox exactly once, or was pushed over a WebSocket exactly once apart from replays
//! marked `replay`; nothing appears twice, nothing unknown appears.
//!
//! `cargo test --workspace chaos` runs these and nothing else.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use amp_client::{Frame, Identity};
use amp_testkit::cluster::{Deployment, HEAVY, Topology};
use amp_testkit::{NatsCluster, NatsServer};
use futures::StreamExt;
use rand::Rng;
use std::sync::Mutex;

use crate::common::{agent, client, mailbox_ids, message_id, send};

/// Senders and recipients: recipients `0..RELAY` only poll their mailbox, the others hold a
/// WebSocket each, one per delivery replica to start with.
const SENDERS: usize = 4;
const RELAY: usize = 2;
const SOCKETS: usize = 2;
const CONCURRENCY: usize = 16;
/// Attempts of one message answered 503 `service_unavailable`.
const RETRIES_503: usize = 8;

struct Agents {
    senders: Vec<Identity>,
    recipients: Vec<Identity>,
}

async fn agents(ingest: &str) -> Agents {
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        senders.push(agent(ingest, "chaos", &format!("sender{i}")).await);
    }
    let mut recipients = Vec::new();
    for i in 0..RELAY + SOCKETS {
        recipients.push(agent(ingest, "chaos", &format!("recipient{i}")).await);
    }
    Agents {
        senders,
        recipients,
    }
}

/// What the load saw: per message id, its recipient and whether it got a 2xx.
#[derive(Default)]
struct Sent {
    /// id → recipient index, for every message attempted.
    to: HashMap<String, usize>,
    /// Ids that got a 2xx.
    acked: HashSet<String>,
    /// Non-2xx outcomes by error code (transport errors included).
    errors: BTreeMap<String, usize>,
}

/// Sends `total` messages, `CONCURRENCY` at a time, round-robin over `ingest`; `done` counts
/// the finished ones so the disruption can pace itself.
async fn load(
    ingest: Vec<String>,
    agents: Arc<Agents>,
    total: usize,
    done: Arc<AtomicUsize>,
) -> Sent {
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(Mutex::new(Sent::default()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (ingest, agents, next, done, sent) = (
            ingest.clone(),
            agents.clone(),
            next.clone(),
            done.clone(),
            sent.clone(),
        );
        workers.spawn(async move {
            let clients: Vec<_> = ingest.iter().map(|u| client(u)).collect();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let from = &agents.senders[i % SENDERS];
                let r = (i / SENDERS) % agents.recipients.len();
                let id = message_id();
                sent.lock().expect("lock").to.insert(id.clone(), r);
                // A client retries a 503 (the provider said it could not take the message
                // now, e.g. while NATS fails over) with the same id, on the other ingest;
                // a transport error stays an unknown outcome.
                let mut outcome = Err(String::new());
                for attempt in 0..RETRIES_503 {
                    outcome = send(
                        &clients[(i + attempt) % clients.len()],
                        from,
                        agents.recipients[r].address(),
                        &id,
                        "chaos",
                    )
                    .await;
                    if !matches!(&outcome, Err(code) if code == "service_unavailable") {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                {
                    let mut s = sent.lock().expect("lock");
                    match outcome {
                        Ok(_) => {
                            s.acked.insert(id);
                        }
                        Err(code) => *s.errors.entry(code).or_default() += 1,
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while workers.join_next().await.is_some() {}
    Arc::try_unwrap(sent)
        .ok()
        .expect("workers are done")
        .into_inner()
        .expect("lock")
}

/// Every `message.new` a recipient's socket got: (id, replay).
type Received = Arc<Mutex<Vec<(String, bool)>>>;

/// Holds a WebSocket for `who`, starting on delivery replica `first` and moving to the next
/// replica whenever the socket ends; acks every message it gets.
fn hold_socket(
    delivery: Vec<String>,
    who: Identity,
    first: usize,
) -> (Received, tokio::task::JoinHandle<()>) {
    let received: Received = Arc::default();
    let got = received.clone();
    let task = tokio::spawn(async move {
        let mut at = first;
        loop {
            let url = &delivery[at % delivery.len()];
            at += 1;
            let Ok(mut socket) = client(url).subscribe(&who).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            while let Some(Ok(frame)) = socket.next().await {
                if let Frame::Message(m) = frame {
                    got.lock()
                        .expect("lock")
                        .push((m.id().to_owned(), m.replay));
                    if socket.ack(m.id()).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    (received, task)
}

/// Waits until `done` reaches `n`.
async fn reach(done: &AtomicUsize, n: usize) {
    while done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The figures of a run, printed for the closing note.
struct Figures {
    sent: usize,
    acked: usize,
    found: usize,
    duplicates: usize,
    replays: usize,
}

/// Checks the end state: every 2xx message landed exactly once (mailbox or socket), nothing
/// unknown appeared, nothing twice; socket recipients' mailboxes drain as they ack.
async fn verify(d: &Deployment, agents: &Agents, sent: &Sent, sockets: &[Received]) -> Figures {
    let url = d.ingest[0].url();
    let expected = |r: usize| -> HashSet<&String> {
        sent.acked
            .iter()
            .filter(|id| sent.to.get(*id) == Some(&r))
            .collect()
    };
    // Wait for the routers to drain (a redelivery after a kill waits out the ack wait).
    let deadline = Instant::now() + d.drain_timeout;
    loop {
        let mut missing = 0;
        let mut where_missing = Vec::new();
        for r in 0..RELAY {
            let have: HashSet<String> = mailbox_ids(&url, &agents.recipients[r])
                .await
                .into_iter()
                .collect();
            let gone: Vec<_> = expected(r)
                .into_iter()
                .filter(|id| !have.contains(*id))
                .collect();
            missing += gone.len();
            where_missing.push((r, gone.len(), gone.first().cloned().cloned()));
        }
        for (s, received) in sockets.iter().enumerate() {
            let have: HashSet<String> = received
                .lock()
                .expect("lock")
                .iter()
                .map(|(id, _)| id.clone())
                .collect();
            let gone: Vec<_> = expected(RELAY + s)
                .into_iter()
                .filter(|id| !have.contains(*id))
                .collect();
            missing += gone.len();
            where_missing.push((RELAY + s, gone.len(), gone.first().cloned().cloned()));
        }
        if missing == 0 {
            break;
        }
        if Instant::now() >= deadline {
            // Where a message a socket never got is: still queued (delivery did not push or
            // replay it) or nowhere (the store lost it).
            for s in 0..sockets.len() {
                let queued = mailbox_ids(&url, &agents.recipients[RELAY + s]).await;
                eprintln!("recipient{} still queued: {queued:?}", RELAY + s);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged messages never arrived (recipient, missing, e.g.): \
             {where_missing:?}\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Late duplicates would come now.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut found = 0;
    let mut duplicates = 0;
    for r in 0..RELAY {
        let ids = mailbox_ids(&url, &agents.recipients[r]).await;
        let unique: HashSet<&String> = ids.iter().collect();
        duplicates += ids.len() - unique.len();
        found += unique.len();
        for id in &unique {
            assert_eq!(
                sent.to.get(*id),
                Some(&r),
                "{id} in recipient{r}'s mailbox was never sent to it"
            );
        }
        for id in expected(r) {
            assert!(
                unique.contains(id),
                "{id} acknowledged but not in the mailbox"
            );
        }
    }
    let mut replays = 0;
    for (s, received) in sockets.iter().enumerate() {
        let got = received.lock().expect("lock").clone();
        let mut live: HashMap<&String, usize> = HashMap::new();
        let mut seen = HashSet::new();
        for (id, replay) in &got {
            assert_eq!(
                sent.to.get(id),
                Some(&(RELAY + s)),
                "{id} pushed to recipient{} was never sent to it",
                RELAY + s
            );
            if *replay {
                replays += 1;
            } else {
                *live.entry(id).or_default() += 1;
            }
            seen.insert(id.clone());
        }
        let twice: Vec<_> = live.iter().filter(|(_, n)| **n > 1).collect();
        duplicates += twice.len();
        assert!(twice.is_empty(), "pushed live more than once: {twice:?}");
        found += seen.len();
    }
    // What the sockets acked leaves the mailboxes. An ack the store could not take while a
    // NATS node was down leaves its message queued (the safe side: it is replayed on the
    // next connection); such leftovers must be messages the socket did get, and a client
    // reconciling over REST then empties the mailbox.
    let deadline = Instant::now() + Duration::from_secs(10);
    for (s, received) in sockets.iter().enumerate() {
        let who = &agents.recipients[RELAY + s];
        let mut left = mailbox_ids(&url, who).await;
        while !left.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            left = mailbox_ids(&url, who).await;
        }
        if left.is_empty() {
            continue;
        }
        let got: HashSet<String> = received
            .lock()
            .expect("lock")
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        for id in &left {
            assert!(
                got.contains(id),
                "{id} stays queued but never reached the socket"
            );
        }
        println!(
            "recipient{}: {} acks not taken, acked again over REST",
            RELAY + s,
            left.len()
        );
        let ids: Vec<&str> = left.iter().map(String::as_str).collect();
        client(&url).ack(who, &ids).await.expect("ack over REST");
        // On a three-node NATS cluster a listing may be served by a stream replica that has
        // not applied the ack yet: the bound is a few replication round trips, polled here.
        let acked = Instant::now();
        while !mailbox_ids(&url, who).await.is_empty() {
            assert!(
                acked.elapsed() < Duration::from_secs(5),
                "recipient{}: acked over REST, still listed after 5 s",
                RELAY + s
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(duplicates, 0);
    Figures {
        sent: sent.to.len(),
        acked: sent.acked.len(),
        found,
        duplicates,
        replays,
    }
}

fn report(name: &str, f: &Figures, sent: &Sent, took: Duration) {
    println!(
        "{name}: sent {} acknowledged {} found {} duplicates {} replays {} errors {:?} in {:.1} s",
        f.sent,
        f.acked,
        f.found,
        f.duplicates,
        f.replays,
        sent.errors,
        took.as_secs_f64()
    );
}

/// A finished run, kept for a second look.
struct Run {
    agents: Arc<Agents>,
    sent: Sent,
    sockets: Vec<Received>,
    holders: Vec<tokio::task::JoinHandle<()>>,
}

impl Run {
    /// Verifies the end state again (after more disruption) and stops the sockets.
    async fn verify_again(self, name: &str, d: &Deployment) {
        let figures = verify(d, &self.agents, &self.sent, &self.sockets).await;
        report(name, &figures, &self.sent, Duration::ZERO);
        for h in self.holders {
            h.abort();
        }
    }
}

/// Runs `total` messages while `disrupt` kills things, then verifies.
async fn run_chaos<F>(name: &str, d: &mut Deployment, total: usize, disrupt: F) -> Run
where
    F: AsyncFnOnce(&mut Deployment, Arc<AtomicUsize>),
{
    let agents = Arc::new(agents(&d.ingest[0].url()).await);
    let delivery: Vec<String> = d.delivery.iter().map(|s| s.url()).collect();
    let mut sockets = Vec::new();
    let mut holders = Vec::new();
    for s in 0..SOCKETS {
        let (received, task) =
            hold_socket(delivery.clone(), agents.recipients[RELAY + s].clone(), s);
        sockets.push(received);
        holders.push(task);
    }
    let ingest: Vec<String> = d.ingest.iter().map(|s| s.url()).collect();
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let (sent, ()) = tokio::join!(
        load(ingest, agents.clone(), total, done.clone()),
        disrupt(d, done.clone())
    );
    let took = started.elapsed();
    let figures = verify(d, &agents, &sent, &sockets).await;
    report(name, &figures, &sent, took);
    assert!(
        figures.acked * 10 >= total * 8,
        "too few messages acknowledged ({} of {total}) for the run to prove anything: {:?}",
        figures.acked,
        sent.errors
    );
    Run {
        agents,
        sent,
        sockets,
        holders,
    }
}

fn pick(n: usize) -> usize {
    rand::thread_rng().gen_range(0..n)
}

/// Kills one random replica of each service with SIGKILL at 20/40/60 % of the load and
/// restarts it on the same port.
async fn kill_each_service(d: &mut Deployment, done: &AtomicUsize, total: usize) {
    reach(done, total / 5).await;
    let i = pick(d.ingest.len());
    d.ingest[i].kill9().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.ingest[i].restart().await;

    reach(done, total * 2 / 5).await;
    let i = pick(d.router.len());
    d.router[i].kill9().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.router[i].restart().await;

    reach(done, total * 3 / 5).await;
    let i = pick(d.delivery.len());
    d.delivery[i].kill9().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.delivery[i].restart().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill9_ingest_router_delivery_under_load() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let mut topology = Topology::new("chaos.test", nats.url(), 1);
    topology.ack_wait_ms = 3_000;
    let mut d = Deployment::start(&topology).await;
    let total = 5_000;
    run_chaos("chaos, 1 NATS node", &mut d, total, async |d, done| {
        kill_each_service(d, &done, total).await;
    })
    .await
    .verify_again("chaos, 1 NATS node, settled", &d)
    .await;
}

/// The same kill -9 of every service under load, with the mailboxes in the CQL store (a
/// real Cassandra node): nothing acknowledged is lost, nothing appears twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill9_on_the_cql_store() {
    let Some(cql) = amp_testkit::cql::cql_target() else {
        return;
    };
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let mut topology = Topology::new("chaos.test", nats.url(), 1)
        .with_cql_store(&cql, &amp_testkit::cql::unique_keyspace("amp_chaos"));
    topology.ack_wait_ms = 3_000;
    let mut d = Deployment::start(&topology).await;
    let total = 1_000;
    run_chaos("chaos, CQL store", &mut d, total, async |d, done| {
        kill_each_service(d, &done, total).await;
    })
    .await
    .verify_again("chaos, CQL store, settled", &d)
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill9_with_a_three_node_nats_cluster() {
    let _heavy = HEAVY.lock().await;
    let mut nats = NatsCluster::start(3);
    let mut topology = Topology::new("chaos.test", nats.urls().join(","), 3);
    topology.ack_wait_ms = 3_000;
    let mut d = Deployment::start(&topology).await;
    let total = 3_000;
    let nats = &mut nats;
    run_chaos("chaos, 3 NATS nodes", &mut d, total, async |d, done| {
        kill_each_service(d, &done, total).await;
        reach(&done, total * 4 / 5).await;
        let n = pick(nats.len());
        tokio::task::block_in_place(|| nats.kill(n));
        tokio::time::sleep(Duration::from_secs(1)).await;
        tokio::task::block_in_place(|| nats.restart(n));
    })
    .await
    .verify_again("chaos, 3 NATS nodes, settled", &d)
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_stopped_router_hands_its_messages_to_the_other() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let mut topology = Topology::new("chaos.test", nats.url(), 1);
    topology.ack_wait_ms = 2_000;
    let mut d = Deployment::start(&topology).await;
    let total = 1_500;
    // Stopped with whatever it had fetched in flight, for longer than the ack wait: the
    // other router must get those messages and write them (verified while it still sleeps);
    // when the stopped one wakes up and finishes its stale copies, nothing may appear twice.
    let run = run_chaos("chaos, router stopped", &mut d, total, async |d, done| {
        reach(&done, total * 3 / 10).await;
        d.router[0].pause();
    })
    .await;
    d.router[0].resume();
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.verify_again("chaos, router resumed", &d).await;
}

/// Messages per soak cycle.
const SOAK_PER_CYCLE: usize = 600;
/// How long a killed process stays down before it is restarted.
const DOWN: Duration = Duration::from_millis(200);

/// The soak: `AMP_SOAK_CYCLES` cycles (2 by default, as CI runs it; `deploy/soak.sh` runs
/// 100) in each of which one random replica of ingest, router and delivery, then one node of
/// a three-node NATS cluster, is killed with SIGKILL under load and restarted. At the end
/// nothing acknowledged is lost and nothing appears twice; the time each process took to be
/// ready again is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_cluster_kill9_cycles_with_a_three_node_nats_cluster() {
    let cycles = amp_testkit::soak_cycles(2);
    let _heavy = HEAVY.lock().await;
    let mut nats = NatsCluster::start(3);
    let mut topology = Topology::new("soak.test", nats.urls().join(","), 3);
    topology.ack_wait_ms = 3_000;
    let mut d = Deployment::start(&topology).await;
    let total = cycles * SOAK_PER_CYCLE;
    let recoveries: Arc<Mutex<BTreeMap<&'static str, Vec<Duration>>>> = Arc::default();
    let nats = &mut nats;
    let times = recoveries.clone();
    run_chaos("soak, 3 NATS nodes", &mut d, total, async |d, done| {
        let record = |kind: &'static str, took: Duration| {
            if let Ok(mut t) = times.lock() {
                t.entry(kind).or_default().push(took);
            }
        };
        for cycle in 0..cycles {
            let base = cycle * SOAK_PER_CYCLE;
            let at = |fifth: usize| base + SOAK_PER_CYCLE * fifth / 5;
            reach(&done, at(1)).await;
            let i = pick(d.ingest.len());
            d.ingest[i].kill9().await;
            tokio::time::sleep(DOWN).await;
            let restarted = Instant::now();
            d.ingest[i].restart().await;
            record("ingest", restarted.elapsed());

            reach(&done, at(2)).await;
            let i = pick(d.router.len());
            d.router[i].kill9().await;
            tokio::time::sleep(DOWN).await;
            let restarted = Instant::now();
            d.router[i].restart().await;
            record("router", restarted.elapsed());

            reach(&done, at(3)).await;
            let i = pick(d.delivery.len());
            d.delivery[i].kill9().await;
            tokio::time::sleep(DOWN).await;
            let restarted = Instant::now();
            d.delivery[i].restart().await;
            record("delivery", restarted.elapsed());

            reach(&done, at(4)).await;
            let n = pick(nats.len());
            tokio::task::block_in_place(|| nats.kill(n));
            tokio::time::sleep(DOWN).await;
            let restarted = Instant::now();
            tokio::task::block_in_place(|| nats.restart(n));
            record("nats-server", restarted.elapsed());
        }
    })
    .await
    .verify_again("soak, 3 NATS nodes, settled", &d)
    .await;
    let times = recoveries.lock().map(|t| t.clone()).unwrap_or_default();
    for (kind, took) in &times {
        assert_eq!(took.len(), cycles, "{kind} was not restarted every cycle");
        let slowest = took.iter().max().copied().unwrap_or_default();
        let mean = took.iter().sum::<Duration>() / u32::try_from(took.len()).unwrap_or(1);
        eprintln!(
            "soak: {kind} killed {cycles} times; restart to ready: mean {} ms, slowest {} ms",
            mean.as_millis(),
            slowest.as_millis()
        );
    }
    assert_eq!(
        times.len(),
        4,
        "every kind of process was killed: {times:?}"
    );
}

/// How long the partition tests keep a link cut: longer than the consumers' ack wait, so
/// what the cut-off process held must be redelivered to the others.
const CUT_FOR: Duration = Duration::from_secs(5);

/// A network partition between one router and NATS under load (a [`amp_testkit::Link`] that
/// stops forwarding, like a route that drops packets): the other router keeps writing
/// mailboxes while it is cut, what the cut-off one held is redelivered after the ack wait,
/// and after the link heals the cut-off router serves again; nothing acknowledged is lost,
/// nothing appears twice. Reports how much was acknowledged during the cut and how long the
/// router took to be ready after the heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_partition_router_cut_off_from_nats_under_load() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let upstream: std::net::SocketAddr = nats
        .url()
        .trim_start_matches("nats://")
        .parse()
        .expect("the NATS address");
    let link = amp_testkit::Link::start(upstream);
    let mut topology = Topology::new("partition.test", nats.url(), 1);
    topology.ack_wait_ms = 3_000;
    let mut d = Deployment::start(&topology).await;
    d.router[0].set_env("AMP__NATS__URLS", &link.nats_url());
    d.router[0].restart().await;
    let total = 2_000;
    let during_cut = Arc::new(AtomicUsize::new(0));
    let back_after = Arc::new(Mutex::new(Duration::ZERO));
    let (cut_count, back) = (during_cut.clone(), back_after.clone());
    let link = &link;
    run_chaos(
        "partition, router cut off",
        &mut d,
        total,
        async |d, done| {
            reach(&done, total / 5).await;
            link.cut();
            let before = done.load(Ordering::SeqCst);
            tokio::time::sleep(CUT_FOR).await;
            cut_count.store(done.load(Ordering::SeqCst) - before, Ordering::SeqCst);
            link.heal();
            let healed = Instant::now();
            d.router[0].wait_ready().await;
            if let Ok(mut b) = back.lock() {
                *b = healed.elapsed();
            }
        },
    )
    .await
    .verify_again("partition, router cut off, settled", &d)
    .await;
    let acked_during_cut = during_cut.load(Ordering::SeqCst);
    let back_after = back_after.lock().map(|b| *b).unwrap_or_default();
    eprintln!(
        "partition: {acked_during_cut} messages answered while one router was cut off for {} s; \
         the router was ready {} ms after the heal",
        CUT_FOR.as_secs(),
        back_after.as_millis()
    );
    assert!(
        acked_during_cut > 0,
        "the cluster stopped answering while one of two routers was cut off"
    );
}

/// A NATS node cut off from its peers only (its route connections dropped, its clients still
/// connected to it), under load, for longer than the ack wait: it loses its quorum and the
/// leaderships it held move to the two others. Services connected to it are refused or time
/// out meanwhile (and report unready) while the others go on; after the heal the node catches
/// up. Nothing acknowledged is lost, nothing appears twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_partition_nats_node_cut_off_from_its_peers_under_load() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsCluster::start_isolatable(3);
    let mut topology = Topology::new("partition.test", nats.urls().join(","), 3);
    topology.ack_wait_ms = 3_000;
    let mut d = Deployment::start(&topology).await;
    let total = 2_000;
    let during_cut = Arc::new(AtomicUsize::new(0));
    let cut_count = during_cut.clone();
    let nats = &nats;
    run_chaos(
        "partition, NATS node cut off from its peers",
        &mut d,
        total,
        async |_d, done| {
            reach(&done, total / 5).await;
            nats.isolate_node0();
            let before = done.load(Ordering::SeqCst);
            tokio::time::sleep(CUT_FOR).await;
            cut_count.store(done.load(Ordering::SeqCst) - before, Ordering::SeqCst);
            nats.heal_node0();
        },
    )
    .await
    .verify_again("partition, NATS node cut off, settled", &d)
    .await;
    let acked_during_cut = during_cut.load(Ordering::SeqCst);
    eprintln!(
        "partition: {acked_during_cut} messages answered while a NATS node was cut off from its \
         peers for {} s",
        CUT_FOR.as_secs()
    );
}
