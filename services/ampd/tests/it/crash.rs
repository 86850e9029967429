//! Durability under `kill -9`: `ampd` is killed while clients send, restarted on the same
//! data directory, and every message it acknowledged must be in the recipient's mailbox,
//! exactly once (spec 05: a 2xx from the route means the message is durably queued).
//!
//! The soak repeats that: `AMP_SOAK_CYCLES` cycles (10 by default, as CI runs it;
//! `deploy/soak.sh` runs 100) of load, `kill -9` and restart on the same data directory,
//! then one count of everything acknowledged over all cycles, with the time each restart
//! took to answer `/readyz`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use amp_testkit::agent::{Agent, register};
use amp_testkit::ampd::AmpdProcess;
use amp_testkit::message::Msg;
use serde_json::{Value, json};

/// Concurrent senders.
const SENDERS: usize = 16;
/// Sending time before the kill, unless [`KILL_AFTER_ACKS`] come first.
const KILL_AFTER: Duration = Duration::from_millis(1500);
/// Acknowledged messages after which the kill comes early.
const KILL_AFTER_ACKS: usize = 500;
/// The longest the test waits for a first acknowledgement before giving up.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(15);

/// Limits raised so that no sender is throttled.
const ENV: [(&str, &str); 6] = [
    ("AMP__INGEST__LIMITS__MESSAGES_PER_MINUTE", "100000"),
    ("AMP__INGEST__LIMITS__API_REQUESTS_PER_MINUTE", "100000"),
    ("AMP__INGEST__LIMITS__TENANT_REQUESTS_PER_MINUTE", "1000000"),
    ("AMP__INGEST__LIMITS__PENDING_PER_MINUTE", "100000"),
    ("AMP__INGEST__LIMITS__MAILBOX_QUOTA", "100000"),
    ("AMP__INGEST__REGISTRATION__PER_IP_PER_MINUTE", "1000"),
];

/// What one sender saw.
#[derive(Default)]
struct Outcomes {
    sent: Vec<String>,
    acked: Vec<String>,
    rejected: Vec<(String, u16, String)>,
    unanswered: Vec<String>,
}

/// Sends signed messages until `stop`; every id is recorded with the answer it got.
/// `(cycle, task)` names the sender in its ids.
async fn sender(
    (cycle, task): (usize, usize),
    http: reqwest::Client,
    url: String,
    from: Arc<Agent>,
    to: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> Outcomes {
    let mut out = Outcomes::default();
    let mut seq: u32 = 0;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let now = amp_proto::Timestamp::now();
        let id = format!("msg_{}_{cycle:03x}{task:02x}{seq:08x}", now.unix_millis());
        let subject = format!("crash {task}/{seq}");
        let payload = json!({
            "type": "notification",
            "message": format!("message {seq} from sender {task}"),
            "context": { "task": task, "seq": seq, "ratio": 0.5 },
        })
        .to_string();
        let signature = Msg::new(&to, &subject).payload(&payload).sign(&from);
        let body = json!({
            "envelope": {
                "version": "amp/0.1",
                "id": id,
                "from": from.address,
                "to": to,
                "subject": subject,
                "priority": "normal",
                "timestamp": now.to_rfc3339(),
                "thread_id": id,
                "in_reply_to": null,
                "expires_at": null,
                "signature": signature,
            },
            "payload": serde_json::from_str::<Value>(&payload).expect("payload"),
        });
        out.sent.push(id.clone());
        let answer = http
            .post(&url)
            .bearer_auth(&from.api_key)
            .json(&body)
            .send()
            .await;
        match answer {
            // The status line is the provider's answer; the body is not needed.
            Ok(r) if r.status().is_success() => {
                out.acked.push(id);
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                out.rejected.push((id, status, text));
            }
            Err(_) => out.unanswered.push(id),
        }
    }
    out
}

/// Every message pending for the agent, paged with `after` / `next_cursor`.
async fn fetch_all(http: &reqwest::Client, base: &str, agent: &Agent) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1000 {
        let mut request = http
            .get(format!("{base}/v1/messages/pending"))
            .bearer_auth(&agent.api_key)
            .query(&[("limit", "1000")]);
        if let Some(cursor) = &after {
            request = request.query(&[("after", cursor.as_str())]);
        }
        let response = request.send().await.expect("fetch pending");
        let status = response.status();
        let page: Value = response.json().await.expect("pending body");
        assert!(status.is_success(), "pending: {status} {page}");
        let messages = page["messages"].as_array().expect("messages[]");
        if messages.is_empty() {
            assert_eq!(page["remaining"], 0, "empty page but remaining: {page}");
            return ids;
        }
        for m in messages {
            let id = m["envelope"]["id"].as_str().expect("envelope.id");
            assert_eq!(m["id"].as_str(), Some(id), "item id vs envelope.id: {m}");
            ids.push(id.to_owned());
        }
        after = Some(
            page["next_cursor"]
                .as_str()
                .expect("next_cursor")
                .to_owned(),
        );
    }
    panic!("pending never ran out after 1000 pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_every_acknowledged_message_survives_kill_9_cycles() {
    let cycles = amp_testkit::soak_cycles(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ampd = AmpdProcess::start(dir.path(), &ENV).await;
    let mut base = ampd.url().to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let alice = Arc::new(register(&http, &base, "crash", "sender", None).await);
    let bob = register(&http, &base, "crash", "recipient", None).await;

    let mut all = Outcomes::default();
    let mut acked_at_kills = Vec::with_capacity(cycles);
    let mut recoveries = Vec::with_capacity(cycles);
    for cycle in 0..cycles {
        let stop_flag = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..SENDERS)
            .map(|task| {
                tokio::spawn(sender(
                    (cycle, task),
                    http.clone(),
                    format!("{base}/v1/route"),
                    alice.clone(),
                    bob.address.clone(),
                    stop_flag.clone(),
                    acked.clone(),
                ))
            })
            .collect();

        let started = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let n = acked.load(Ordering::SeqCst);
            let elapsed = started.elapsed();
            if n > 0 && (elapsed >= KILL_AFTER || n >= KILL_AFTER_ACKS) {
                break;
            }
            if elapsed >= FIRST_ACK_TIMEOUT {
                stop_flag.store(true, Ordering::SeqCst);
                panic!("cycle {cycle}: no message was acknowledged in {FIRST_ACK_TIMEOUT:?}");
            }
        }
        // SIGKILL mid-traffic; then the senders finish their in-flight requests and stop.
        ampd.kill9().await;
        acked_at_kills.push(acked.load(Ordering::SeqCst));
        stop_flag.store(true, Ordering::SeqCst);
        for t in tasks {
            let o = t.await.expect("sender task");
            all.sent.extend(o.sent);
            all.acked.extend(o.acked);
            all.rejected.extend(o.rejected);
            all.unanswered.extend(o.unanswered);
        }

        // Restart on the same data directory; the time until `/readyz` answers is the
        // recovery.
        let restarted = std::time::Instant::now();
        ampd.restart().await;
        base = ampd.url().to_owned();
        recoveries.push(restarted.elapsed());
    }
    let acked_at_kill: usize = acked_at_kills.iter().sum();
    let slowest = recoveries.iter().max().copied().unwrap_or_default();
    let mean = recoveries.iter().sum::<Duration>() / u32::try_from(cycles.max(1)).unwrap_or(1);
    eprintln!(
        "soak: {cycles} kill -9 cycles; restart to ready: mean {} ms, slowest {} ms",
        mean.as_millis(),
        slowest.as_millis()
    );
    let found = fetch_all(&http, &base, &bob).await;
    assert!(
        all.acked.len() >= cycles,
        "too little was acknowledged to prove anything: {} over {cycles} cycles",
        all.acked.len()
    );

    let sent: HashSet<&str> = all.sent.iter().map(String::as_str).collect();
    let unanswered: HashSet<&str> = all.unanswered.iter().map(String::as_str).collect();
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for id in &found {
        *copies.entry(id.as_str()).or_default() += 1;
    }
    let unanswered_present = found
        .iter()
        .filter(|id| unanswered.contains(id.as_str()))
        .count();
    eprintln!(
        "soak: sent {}, acknowledged {} ({} when killed), rejected {}, unanswered {}, \
         found {}, unanswered-but-present {}",
        all.sent.len(),
        all.acked.len(),
        acked_at_kill,
        all.rejected.len(),
        all.unanswered.len(),
        found.len(),
        unanswered_present,
    );
    for (id, status, body) in all.rejected.iter().take(5) {
        eprintln!("soak: rejected {id}: {status} {body}");
    }

    assert_eq!(sent.len(), all.sent.len(), "the test reused an id");
    let duplicates: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "delivered twice: {duplicates:?}");
    let strangers: Vec<_> = found
        .iter()
        .filter(|id| !sent.contains(id.as_str()))
        .collect();
    assert!(strangers.is_empty(), "never sent: {strangers:?}");
    let lost: Vec<_> = all
        .acked
        .iter()
        .filter(|id| !copies.contains_key(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost over {cycles} kill -9 cycles: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let refused_present: Vec<_> = all
        .rejected
        .iter()
        .filter(|(id, _, _)| copies.contains_key(id.as_str()))
        .collect();
    assert!(
        refused_present.is_empty(),
        "refused with a non-2xx yet delivered: {refused_present:?}"
    );

    ampd.stop().await;
}
