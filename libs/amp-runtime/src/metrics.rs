//! The process-wide Prometheus recorder behind the `metrics` facade.
//!
//! Services record with `metrics::counter!` and friends; [`install`] must run once early
//! (the ops router does it too) so that those calls are not dropped.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder on the first call and returns its handle; later
/// calls return the same handle.
///
/// If another recorder was installed first (outside this module), the failure is logged
/// and the returned handle belongs to a detached recorder that renders nothing.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => handle,
            Err(e) => {
                tracing::warn!(error = %e, "cannot install the Prometheus recorder");
                PrometheusBuilder::new().build_recorder().handle()
            }
        })
        .clone()
}

/// The current metrics in the Prometheus text format (installing the recorder if needed).
pub fn render() -> String {
    let handle = install();
    // Without the exporter's HTTP listener nothing else runs upkeep (histogram draining).
    handle.run_upkeep();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent_and_render_shows_metrics() {
        let _ = install();
        let _ = install();
        metrics::counter!("amp_runtime_test_total", "kind" => "unit").increment(3);
        let text = render();
        assert!(text.contains("amp_runtime_test_total"), "{text}");
    }
}
