//! The operations endpoints every service serves: `/healthz`, `/readyz`, `/metrics`.
//!
//! Every readiness report also sets the gauges `amp_ready` (1 when ready) and
//! `amp_readiness_check{check}` (1 when that check passed), and `/metrics` runs the checks
//! before it renders, so a scrape always carries the store's health as of that scrape.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::{BoxFuture, join_all};
use parking_lot::RwLock;
use serde_json::json;

use crate::shutdown::Shutdown;

/// How long one readiness check may take before it counts as failed.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type Check = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// What `/readyz` asks: named async checks (is the store reachable? the bus?) and whether
/// shutdown has begun, which makes the service unready at once so load balancers drain it.
///
/// Cheap to clone; clones share checks and state.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

struct Inner {
    checks: RwLock<Vec<(String, Check)>>,
    shutting_down: AtomicBool,
    timeout: Duration,
}

/// The outcome of running every readiness check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessReport {
    /// Whether the service is ready: every check passed and shutdown has not begun.
    pub ready: bool,
    /// Whether shutdown has begun.
    pub shutting_down: bool,
    /// Each check by name: passed or not (a timeout is a failure).
    pub checks: BTreeMap<String, bool>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .inner
            .checks
            .read()
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        f.debug_struct("Readiness")
            .field("checks", &names)
            .field("shutting_down", &self.is_shutting_down())
            .finish()
    }
}

impl Readiness {
    /// No checks, not shutting down, [`DEFAULT_CHECK_TIMEOUT`] per check.
    pub fn new() -> Self {
        Self::with_timeout(DEFAULT_CHECK_TIMEOUT)
    }

    /// No checks, with `timeout` per check.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                checks: RwLock::new(Vec::new()),
                shutting_down: AtomicBool::new(false),
                timeout,
            }),
        }
    }

    /// Adds a check named `name` (replacing one of the same name). The check returns
    /// whether the dependency is usable; it runs on every `/readyz` request.
    pub fn add(
        &self,
        name: impl Into<String>,
        check: impl Fn() -> BoxFuture<'static, bool> + Send + Sync + 'static,
    ) -> &Self {
        let name = name.into();
        let mut checks = self.inner.checks.write();
        checks.retain(|(n, _)| *n != name);
        checks.push((name, Arc::new(check)));
        self
    }

    /// Marks the service as shutting down: `/readyz` fails from now on.
    pub fn set_shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Spawns a task that marks this as shutting down when `shutdown` triggers. Must be
    /// called inside a tokio runtime.
    pub fn follow(&self, shutdown: &Shutdown) {
        let readiness = self.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.wait().await;
            readiness.set_shutting_down();
        });
    }

    /// Runs every check concurrently, each bounded by the timeout.
    pub async fn report(&self) -> ReadinessReport {
        let checks: Vec<(String, Check)> = self.inner.checks.read().clone();
        let timeout = self.inner.timeout;
        let results = join_all(checks.into_iter().map(|(name, check)| async move {
            let ok = tokio::time::timeout(timeout, check())
                .await
                .unwrap_or(false);
            if !ok {
                tracing::warn!(check = %name, "readiness check failed");
            }
            (name, ok)
        }))
        .await;
        let shutting_down = self.is_shutting_down();
        let checks: BTreeMap<String, bool> = results.into_iter().collect();
        let ready = !shutting_down && checks.values().all(|ok| *ok);
        // Check names are fixed by the service ("store"), so the label stays bounded.
        for (name, ok) in &checks {
            metrics::gauge!("amp_readiness_check", "check" => name.clone())
                .set(f64::from(u8::from(*ok)));
        }
        metrics::gauge!("amp_ready").set(f64::from(u8::from(ready)));
        ReadinessReport {
            ready,
            shutting_down,
            checks,
        }
    }
}

/// A router with `GET /healthz` (200 `{"status":"ok"}` while the process runs),
/// `GET /readyz` (200 `{"status":"ready"}`, or 503
/// `{"status":"not_ready","shutting_down":…,"checks":{name: bool}}`) and `GET /metrics`
/// (Prometheus text; installs the recorder).
///
/// It sets no fallback, so it merges into a service router; wrap the merged router with
/// [`crate::http::harden`].
pub fn ops_router(readiness: Readiness) -> Router {
    crate::metrics::install();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let report = readiness.report().await;
    if report.ready {
        return Json(json!({"status": "ready"})).into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "not_ready",
            "shutting_down": report.shutting_down,
            "checks": report.checks,
        })),
    )
        .into_response()
}

async fn metrics(State(readiness): State<Readiness>) -> Response {
    // Refreshes the readiness gauges (each check bounded by its timeout).
    let _ = readiness.report().await;
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        crate::metrics::render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use futures::FutureExt;
    use tower::ServiceExt;

    async fn get_json(app: &Router, path: &str) -> (StatusCode, serde_json::Value) {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn healthz_and_readyz() {
        let readiness = Readiness::with_timeout(Duration::from_millis(50));
        let app = ops_router(readiness.clone());
        assert_eq!(
            get_json(&app, "/healthz").await,
            (StatusCode::OK, json!({"status":"ok"}))
        );
        assert_eq!(
            get_json(&app, "/readyz").await,
            (StatusCode::OK, json!({"status":"ready"}))
        );

        let store_up = Arc::new(AtomicBool::new(true));
        let flag = store_up.clone();
        readiness
            .add("store", move || {
                let up = flag.load(Ordering::SeqCst);
                async move { up }.boxed()
            })
            .add("bus", || async { true }.boxed());
        assert_eq!(get_json(&app, "/readyz").await.0, StatusCode::OK);

        store_up.store(false, Ordering::SeqCst);
        let (status, body) = get_json(&app, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "not_ready");
        assert_eq!(body["checks"], json!({"store": false, "bus": true}));

        // A hanging check times out and fails.
        store_up.store(true, Ordering::SeqCst);
        readiness.add("bus", || futures::future::pending().boxed());
        let (status, body) = get_json(&app, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["checks"]["bus"], false);
    }

    #[tokio::test]
    async fn readyz_fails_once_shutdown_begins() {
        let readiness = Readiness::new();
        let shutdown = Shutdown::new();
        readiness.follow(&shutdown);
        let app = ops_router(readiness.clone());
        assert_eq!(get_json(&app, "/readyz").await.0, StatusCode::OK);
        shutdown.trigger();
        tokio::task::yield_now().await;
        for _ in 0..100 {
            if readiness.is_shutting_down() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let (status, body) = get_json(&app, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["shutting_down"], true);
        // Liveness is unaffected.
        assert_eq!(get_json(&app, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_endpoint_is_prometheus_text() {
        let app = ops_router(Readiness::new());
        metrics::counter!("amp_runtime_ops_test_total").increment(1);
        let response = app
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[CONTENT_TYPE]
                .to_str()
                .expect("ascii")
                .starts_with("text/plain")
        );
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("amp_runtime_ops_test_total"), "{text}");
        assert!(text.contains("amp_ready "), "{text}");
    }
}
