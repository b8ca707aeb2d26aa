//! Prometheus metrics: reconcile runs, failures by error label, duration.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

/// One registry, prefixed `sgcache_operator`.
pub struct Metrics {
    pub registry: Registry,
    pub runs: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    /// Deletions let go with the cache's tables left in the database (the Event and the log
    /// line name them).
    pub cleanups_abandoned: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sgcache_operator_reconcile");
        let runs = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0]);
        registry.register("runs", "reconciliations", runs.clone());
        registry.register(
            "failures",
            "failed reconciliations by error",
            failures.clone(),
        );
        registry.register_with_unit(
            "duration",
            "reconcile duration",
            Unit::Seconds,
            duration.clone(),
        );
        let cleanups_abandoned = Counter::default();
        registry.register(
            "cleanups_abandoned",
            "deletions released with the cache's tables left in the database",
            cleanups_abandoned.clone(),
        );
        Metrics {
            registry,
            runs,
            failures,
            duration,
            cleanups_abandoned,
        }
    }
}

impl Metrics {
    /// Counts a run and returns a guard that records its duration when dropped.
    pub fn start(&self) -> Timer {
        self.runs.inc();
        Timer {
            start: Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    pub fn cleanup_abandoned(&self) {
        self.cleanups_abandoned.inc();
    }

    pub fn failure(&self, label: &str) {
        self.failures
            .get_or_create(&ErrorLabels {
                error: label.into(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("metrics encode");
        out
    }
}

pub struct Timer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}
