//! Kill -9 while writing, on each embedded backend: a child process (this test binary, re-run
//! with `AMP_CRASH_CHILD_DIR` set) writes continuously and prints each id when its write
//! returned; the parent kills it mid-stream, reopens the data, and checks that every
//! acknowledged write is there and that every started write is either whole or absent.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use amp_store::testing::{agent, entry, key_hash, now_ms};
use amp_store::{Enqueued, Store};

const CHILD_ENV: &str = "AMP_CRASH_CHILD_DIR";

/// Not a test on its own: the writer the redb crash test runs in a child process.
#[test]
#[ignore = "run by redb_survives_kill_9 in a child process"]
fn crash_child_writer() {
    child_writes(super::open);
}

/// Not a test on its own: the writer the fjall crash test runs in a child process.
#[test]
#[ignore = "run by fjall_survives_kill_9 in a child process"]
fn crash_child_writer_fjall() {
    child_writes(super::fjall::open);
}

/// Writes agents and messages from 8 tasks until killed, printing each when it returned.
fn child_writes(open: fn(&std::path::Path) -> Store) {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = open(std::path::Path::new(&dir));
        let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let mut tasks = Vec::new();
        for w in 0..8 {
            let store: Store = store.clone();
            let out = out.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let name = format!("w{w}n{i}");
                    let now = now_ms();
                    let a = agent("crash", &name, now);
                    say(&out, &format!("start {name} {}", a.id));
                    store
                        .create_agent(a.clone(), key_hash(&a.id), now)
                        .await
                        .expect("create");
                    let r = store
                        .enqueue(entry(
                            &a.id,
                            &format!("msg_{i}_{w}"),
                            "s@x.example.test",
                            now,
                            86_400_000,
                        ))
                        .await
                        .expect("enqueue");
                    assert!(matches!(r, Enqueued::New { .. }));
                    say(&out, &format!("ok {name} {}", a.id));
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

fn say(out: &std::sync::Mutex<std::io::Stdout>, line: &str) {
    let mut o = out.lock().expect("stdout");
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_survives_kill_9() {
    survives_kill_9("crash::crash_child_writer", super::open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_survives_kill_9() {
    survives_kill_9("crash::crash_child_writer_fjall", super::fjall::open).await;
}

/// Runs the child test `child`, kills it mid-stream, and checks what `open` finds.
async fn survives_kill_9(child: &str, open: fn(&std::path::Path) -> Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            child,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut started = Vec::new();
    let mut acked = HashSet::new();
    // Generous: the CQL tests of this binary share the machine with a Cassandra node.
    let deadline = Instant::now() + Duration::from_secs(90);
    // Let it commit a good number of writes, then kill it mid-stream.
    while acked.len() < 400 && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        record(&line, &mut started, &mut acked);
    }
    child.kill().expect("kill -9");
    // Whatever the child printed before dying was acknowledged to it.
    for line in lines.map_while(Result::ok) {
        record(&line, &mut started, &mut acked);
    }
    let _ = child.wait();
    assert!(
        acked.len() >= 400,
        "child wrote only {} records",
        acked.len()
    );

    let store = open(dir.path());
    let now = now_ms();
    let mut whole = 0;
    for (name, id) in &started {
        let by_id = store.agent(id).await.expect("agent");
        let by_name = store.agent_by_name("crash", name).await.expect("name");
        let by_key = store.agent_by_api_key(&key_hash(id)).await.expect("key");
        let present = [by_id.is_some(), by_name.is_some(), by_key.is_some()];
        assert!(
            present.iter().all(|p| *p) || present.iter().all(|p| !*p),
            "{name} half written: {present:?}"
        );
        if acked.contains(id) {
            assert!(present[0], "acknowledged agent {name} lost");
            let page = store.fetch(id, None, 10, now).await.expect("fetch");
            assert_eq!(page.entries.len(), 1, "acknowledged message of {name} lost");
            whole += 1;
        }
    }
    assert_eq!(whole, acked.len());
}

fn record(line: &str, started: &mut Vec<(String, String)>, acked: &mut HashSet<String>) {
    // The harness may prefix the first line ("test … ... start …").
    let line = ["start ", "ok "]
        .iter()
        .filter_map(|k| line.find(k).map(|i| &line[i..]))
        .next()
        .unwrap_or(line);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some("start"), Some(name), Some(id)) => started.push((name.to_owned(), id.to_owned())),
        (Some("ok"), Some(_), Some(id)) => {
            acked.insert(id.to_owned());
        }
        _ => {}
    }
}
