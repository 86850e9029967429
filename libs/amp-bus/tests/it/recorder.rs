//! A minimal global `metrics` recorder that lets tests read counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use parking_lot::Mutex;

#[derive(Default)]
struct Captured {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

struct CounterCell(Arc<AtomicU64>);

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

fn render(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

impl Recorder for &'static Captured {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
        let cell = Arc::clone(
            self.counters
                .lock()
                .entry(render(key.name(), &labels))
                .or_default(),
        );
        Counter::from_arc(Arc::new(CounterCell(cell)))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

static CAPTURED: OnceLock<&'static Captured> = OnceLock::new();

fn captured() -> &'static Captured {
    CAPTURED.get_or_init(|| {
        let captured: &'static Captured = Box::leak(Box::default());
        metrics::set_global_recorder(captured).expect("no other global recorder");
        captured
    })
}

/// Installs the recorder (once per test binary).
pub(crate) fn install() {
    captured();
}

/// The current value of a counter, e.g. `counter("x_total", &[("stream", "A")])`.
pub(crate) fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    captured()
        .counters
        .lock()
        .get(&render(name, labels))
        .map_or(0, |cell| cell.load(Ordering::Relaxed))
}
