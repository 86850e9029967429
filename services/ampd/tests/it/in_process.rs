//! [`ampd::run`] in this process, on `127.0.0.1:0`.

use std::time::Duration;

use amp_runtime::Shutdown;
use ampd::Config;
use tokio::net::TcpListener;

/// Starts `run` on a free port with `data_dir`; returns the base URL, the shutdown signal
/// and the task.
async fn start(
    data_dir: &std::path::Path,
) -> (
    String,
    Shutdown,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut config = Config::default();
    config.server.data_dir = data_dir.to_owned();
    config.server.shutdown_grace_secs = 2;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = Shutdown::new();
    let task = tokio::spawn(ampd::run(config, listener, shutdown.clone()));
    (url, shutdown, task)
}

async fn stop(shutdown: Shutdown, task: tokio::task::JoinHandle<anyhow::Result<()>>) {
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run returns after shutdown")
        .expect("join")
        .expect("run succeeds");
}

#[tokio::test]
async fn runs_and_shuts_down_and_keeps_its_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, shutdown, task) = start(dir.path()).await;
    let ready = reqwest::get(format!("{url}/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let info: serde_json::Value = reqwest::get(format!("{url}/v1/info"))
        .await
        .expect("info")
        .json()
        .await
        .expect("json");
    // The derived public URL carries the port actually bound.
    assert!(
        info.to_string().contains(&url),
        "public URL {url} not advertised: {info}"
    );
    stop(shutdown, task).await;
    // Stopped: the port no longer answers, and the store is closed (it reopens below).
    assert!(reqwest::get(format!("{url}/healthz")).await.is_err());

    let (url, shutdown, task) = start(dir.path()).await;
    let again: serde_json::Value = reqwest::get(format!("{url}/v1/info"))
        .await
        .expect("info")
        .json()
        .await
        .expect("json");
    assert_eq!(again["fingerprint"], info["fingerprint"]);
    stop(shutdown, task).await;
}

#[tokio::test]
async fn an_open_store_is_not_shared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, shutdown, task) = start(dir.path()).await;
    // Once it answers, the first instance holds the store.
    let ready = reqwest::get(format!("{url}/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let (_url2, _shutdown2, second) = start(dir.path()).await;
    let err = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("second run ends")
        .expect("join")
        .expect_err("second instance refused");
    assert!(
        format!("{err:#}").contains("cannot open the store"),
        "{err:#}"
    );
    stop(shutdown, task).await;
}
