//! The process-wide Prometheus recorder behind the `metrics` facade.
//!
//! Services record with `metrics::counter!` and friends; [`install`] must run once early
//! (the ops router does it too) so that those calls are not dropped.
//!
//! Histograms are exported as Prometheus histograms (`_bucket`, `_sum`, `_count`), not as
//! summaries, so that dashboards can aggregate percentiles across replicas: durations (names
//! ending in `_seconds`) on [`SECONDS_BUCKETS`], batch sizes on [`SIZE_BUCKETS`].

use std::sync::OnceLock;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Bucket bounds of every `…_seconds` histogram: a millisecond to half a minute.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bucket bounds of every `…_size` histogram (items per batch).
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS)
}

/// Installs the global Prometheus recorder on the first call and returns its handle; later
/// calls return the same handle.
///
/// If another recorder was installed first (outside this module), the failure is logged
/// and the returned handle belongs to a detached recorder that renders nothing.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(
            || match builder().and_then(PrometheusBuilder::install_recorder) {
                Ok(handle) => handle,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the Prometheus recorder");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            },
        )
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

    #[test]
    fn durations_and_sizes_are_histograms_with_buckets() {
        let _ = install();
        metrics::histogram!("amp_runtime_test_seconds").record(0.003);
        metrics::histogram!("amp_runtime_test_batch_size").record(3.0);
        let text = render();
        assert!(
            text.contains(r#"amp_runtime_test_seconds_bucket{le="0.005"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"amp_runtime_test_batch_size_bucket{le="4"} 1"#),
            "{text}"
        );
    }
}
