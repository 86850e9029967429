//! The process-wide shutdown signal and [`serve`], the HTTP server with a bounded graceful
//! drain.

use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::listener::ConnectionLimits;

/// A cheap-clone shutdown signal: triggered once (by a signal or by code), seen by every
/// clone and child. Children can be triggered on their own without affecting the parent.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Self(CancellationToken::new())
    }

    /// Triggers shutdown (idempotent).
    pub fn trigger(&self) {
        self.0.cancel();
    }

    /// Whether shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes once shutdown is triggered (at once if it already was).
    pub async fn wait(&self) {
        self.0.cancelled().await;
    }

    /// A signal triggered with this one, which can also be triggered alone (for a
    /// component that must stop before the rest).
    pub fn child(&self) -> Self {
        Self(self.0.child_token())
    }

    /// The underlying token, for APIs that take one.
    pub fn token(&self) -> &CancellationToken {
        &self.0
    }

    /// Spawns a task that triggers this signal on the first SIGINT (Ctrl-C) or SIGTERM.
    ///
    /// Must be called inside a tokio runtime. If a signal handler cannot be installed the
    /// failure is logged and that signal is ignored.
    pub fn listen_for_signals(&self) {
        let shutdown = self.clone();
        tokio::spawn(async move {
            let ctrl_c = async {
                if let Err(e) = tokio::signal::ctrl_c().await {
                    tracing::warn!(error = %e, "cannot listen for SIGINT");
                    std::future::pending::<()>().await;
                }
            };
            #[cfg(unix)]
            let term = async {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for SIGTERM");
                        std::future::pending::<()>().await;
                    }
                }
            };
            #[cfg(not(unix))]
            let term = std::future::pending::<()>();
            tokio::select! {
                () = ctrl_c => tracing::info!(signal = "SIGINT", "shutdown requested"),
                () = term => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                () = shutdown.wait() => return,
            }
            shutdown.trigger();
        });
    }
}

/// Serves `app` on `listener` with `limits` until `shutdown` triggers, then stops accepting
/// and lets in-flight requests finish for at most `grace`, after which it gives up on them
/// (with a warning) and returns.
///
/// Handlers can extract `ConnectInfo<SocketAddr>` for the peer address. Long-lived
/// connections (WebSockets, long polls) should watch `shutdown` themselves so they end
/// within the grace period.
///
/// # Errors
/// None in practice: accept errors are logged and retried.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ConnectionLimits,
    shutdown: Shutdown,
    grace: Duration,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(addr = %addr, "listening");
    }
    crate::listener::serve(listener, app, limits, shutdown, grace).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use std::net::SocketAddr;

    #[tokio::test]
    async fn trigger_reaches_clones_and_children_but_not_parents() {
        let root = Shutdown::new();
        let clone = root.clone();
        let child = root.child();
        let lone = root.child();
        lone.trigger();
        assert!(lone.is_triggered());
        assert!(!root.is_triggered());
        root.trigger();
        clone.wait().await;
        child.wait().await;
        assert!(child.is_triggered());
    }

    async fn start(
        grace: Duration,
    ) -> (
        SocketAddr,
        Shutdown,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let app =
            Router::new()
                .route(
                    "/peer",
                    get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                        peer.ip().to_string()
                    }),
                )
                .route(
                    "/slow/{ms}",
                    get(
                        |axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            "done"
                        },
                    ),
                );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = Shutdown::new();
        let shutdown2 = shutdown.clone();
        let task = tokio::spawn(async move {
            serve(
                listener,
                app,
                &ConnectionLimits::default(),
                shutdown2,
                grace,
            )
            .await
        });
        (addr, shutdown, task)
    }

    #[tokio::test]
    async fn serves_peer_address_and_drains_in_flight_requests() {
        let (addr, shutdown, task) = start(Duration::from_secs(5)).await;
        let peer = reqwest::get(format!("http://{addr}/peer"))
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        assert_eq!(peer, "127.0.0.1");

        let slow = tokio::spawn(reqwest::get(format!("http://{addr}/slow/300")));
        tokio::time::sleep(Duration::from_millis(100)).await;
        shutdown.trigger();
        let response = slow
            .await
            .expect("join")
            .expect("in-flight request finishes");
        assert_eq!(response.text().await.expect("body"), "done");
        task.await.expect("join").expect("serve");
        // No longer accepting.
        assert!(reqwest::get(format!("http://{addr}/peer")).await.is_err());
    }

    #[tokio::test]
    async fn gives_up_after_the_grace_period() {
        let (addr, shutdown, task) = start(Duration::from_millis(100)).await;
        let _slow = tokio::spawn(reqwest::get(format!("http://{addr}/slow/10000")));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        shutdown.trigger();
        task.await.expect("join").expect("serve");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
