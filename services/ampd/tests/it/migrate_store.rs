//! `ampd --migrate-store`: a data directory served on redb, migrated, then served on the
//! default embedded store (fjall, since `amp.fjall` now exists): the agents' keys still work
//! and their pending messages are there. Refusals (no redb store, a store in use, one
//! migrated already) are one line and a failure exit.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use amp_testkit::agent::{Agent, register};
use amp_testkit::ampd::{AmpdProcess, ampd_command};
use amp_testkit::message::{ids_of, payload_with, signed_body};
use serde_json::{Value, json};

/// How long a migration of a small store may take on a loaded machine.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `ampd --migrate-store --data-dir <dir>` with `env`.
async fn migrate(dir: &Path, env: &[(&str, &str)]) -> Output {
    let run = ampd_command()
        .envs(env.iter().copied())
        .arg("--migrate-store")
        .arg("--data-dir")
        .arg(dir)
        .output();
    tokio::time::timeout(MIGRATE_TIMEOUT, run)
        .await
        .expect("ampd --migrate-store exits in time")
        .expect("run ampd")
}

/// Expects a refusal: a failure exit and one line on stderr containing `needle`.
#[track_caller]
fn refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should have failed: {stderr}");
    assert!(stderr.contains(needle), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

/// Sends a signed message from `from` to `to`; returns its id.
async fn send(http: &reqwest::Client, url: &str, from: &Agent, to: &Agent, text: &str) -> String {
    let body = signed_body(from, &to.address, text, &payload_with(text), json!({}));
    let r = http
        .post(format!("{url}/v1/route"))
        .bearer_auth(&from.api_key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("route");
    let status = r.status();
    let v: Value = r.json().await.expect("route answer");
    assert!(status.is_success(), "route: {status} {v}");
    v["id"].as_str().expect("id").to_owned()
}

/// The ids pending for `agent`.
async fn pending(http: &reqwest::Client, url: &str, agent: &Agent) -> Vec<String> {
    let r = http
        .get(format!("{url}/v1/messages/pending"))
        .bearer_auth(&agent.api_key)
        .send()
        .await
        .expect("pending");
    let status = r.status();
    let page: Value = r.json().await.expect("pending page");
    assert!(status.is_success(), "pending: {status} {page}");
    ids_of(&page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redb_data_dir_migrated_serves_the_same_agents_and_messages_on_fjall() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();

    let refusal = migrate(dir.path(), &[]).await;
    refused(&refusal, "no redb store to migrate");

    let on_redb = AmpdProcess::start(dir.path(), &[("AMP__STORE__BACKEND", "redb")]).await;
    let url = on_redb.url().to_owned();
    let alice = register(&http, &url, "migrate", "alice", None).await;
    let bob = register(&http, &url, "migrate", "bob", None).await;
    let mut to_bob = Vec::new();
    for i in 0..3 {
        to_bob.push(send(&http, &url, &alice, &bob, &format!("hello {i}")).await);
    }
    let to_alice = vec![send(&http, &url, &bob, &alice, "hi back").await];
    assert_eq!(pending(&http, &url, &bob).await, to_bob);

    // While ampd holds the store, the migration is refused.
    refused(&migrate(dir.path(), &[]).await, "in use");
    on_redb.stop().await;
    assert!(dir.path().join("amp.redb").is_file());
    assert!(!dir.path().join("amp.fjall").exists());

    // A leftover of an interrupted run is redone, not trusted.
    let partial = dir.path().join("amp.fjall.partial");
    std::fs::create_dir_all(&partial).expect("partial dir");
    std::fs::write(partial.join("junk"), b"x").expect("junk");
    let out = migrate(dir.path(), &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "migrate: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("mailbox") && stdout.contains("rows in"),
        "{stdout}"
    );
    assert!(dir.path().join("amp.fjall").is_dir());
    assert!(!partial.exists(), "the partial copy is renamed into place");
    assert!(dir.path().join("amp.redb").is_file(), "kept as the backup");

    // Whatever the caller's environment says, the default embedded store.
    let on_fjall = AmpdProcess::start(dir.path(), &[("AMP__STORE__BACKEND", "embedded")]).await;
    let url = on_fjall.url().to_owned();
    assert_eq!(pending(&http, &url, &bob).await, to_bob);
    assert_eq!(pending(&http, &url, &alice).await, to_alice);
    let more = send(&http, &url, &alice, &bob, "after the move").await;
    to_bob.push(more);
    assert_eq!(pending(&http, &url, &bob).await, to_bob);
    on_fjall.stop().await;

    // The fjall store was written by the new server, not redb.
    refused(&migrate(dir.path(), &[]).await, "exists already");
}
