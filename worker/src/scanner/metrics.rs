//! The scanner's metrics, prefixed `sgcache_scanner`, and its heartbeat.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sgcache::ShotgunCacheSpec;

use crate::observe::{allowed_quiet, Heartbeat, LoopGauges, Observed, Role};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub entity_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RowLabels {
    pub entity_type: String,
    /// `incremental` (rows whose `updated_at` moved), `full` (backfills, `--full`) or `links`
    /// (rows read again because a row linking to them changed or came back: `relink`).
    pub scan: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// Which kind of scan rows were read by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanKind {
    Incremental,
    Full,
    Links,
}

impl ScanKind {
    fn as_str(self) -> &'static str {
        match self {
            ScanKind::Incremental => "incremental",
            ScanKind::Full => "full",
            ScanKind::Links => "links",
        }
    }
}

pub struct ScannerMetrics {
    registry: Registry,
    pub heartbeat: Heartbeat,
    last_success: Family<TypeLabels, Gauge<f64, AtomicU64>>,
    last_duration: Family<TypeLabels, Gauge<f64, AtomicU64>>,
    fetched: Family<RowLabels, Counter>,
    written: Family<RowLabels, Counter>,
    backfill_done: Family<TypeLabels, Gauge>,
    backfill_expected: Family<TypeLabels, Gauge>,
    pending_fields: Family<TypeLabels, Gauge>,
    schema_checks: Family<OutcomeLabels, Counter>,
    schema_drift: Family<TypeLabels, Gauge>,
    failures: Counter,
    loop_gauges: LoopGauges,
}

impl ScannerMetrics {
    /// The scanner's metrics, its loop allowed to be quiet for `allowed`.
    pub fn new(allowed: Duration) -> ScannerMetrics {
        let mut r = Registry::with_prefix("sgcache_scanner");
        let last_success = Family::<TypeLabels, Gauge<f64, AtomicU64>>::default();
        r.register(
            "last_success_timestamp_seconds",
            "Unix time the last scan of the type (incremental or full) finished",
            last_success.clone(),
        );
        let last_duration = Family::<TypeLabels, Gauge<f64, AtomicU64>>::default();
        r.register(
            "last_scan_duration_seconds",
            "How long the last finished scan of the type took",
            last_duration.clone(),
        );
        let fetched = Family::<RowLabels, Counter>::default();
        r.register(
            "rows_fetched",
            "Rows read from the site, by type and scan",
            fetched.clone(),
        );
        let written = Family::<RowLabels, Counter>::default();
        r.register(
            "rows_written",
            "Rows inserted or updated in the cache, by type and scan",
            written.clone(),
        );
        let backfill_done = Family::<TypeLabels, Gauge>::default();
        r.register(
            "backfill_done_rows",
            "Rows of the type's backfill committed so far",
            backfill_done.clone(),
        );
        let backfill_expected = Family::<TypeLabels, Gauge>::default();
        r.register(
            "backfill_expected_rows",
            "Rows the type's backfill reads in all (the site's count when it started)",
            backfill_expected.clone(),
        );
        let pending_fields = Family::<TypeLabels, Gauge>::default();
        r.register(
            "pending_fields",
            "Fields of the type waiting for or in their backfill (not served yet)",
            pending_fields.clone(),
        );
        let schema_checks = Family::<OutcomeLabels, Counter>::default();
        r.register(
            "schema_checks",
            "Checks of a cached type's fields against the site's schema, by outcome (unchanged, changed, failed)",
            schema_checks.clone(),
        );
        for outcome in ["unchanged", "changed", "failed"] {
            let _ = schema_checks.get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            });
        }
        let schema_drift = Family::<TypeLabels, Gauge>::default();
        r.register(
            "schema_drift_fields",
            "Cached fields of the type the site no longer has or types differently (unservable until the layout follows the site)",
            schema_drift.clone(),
        );
        let failures = Counter::default();
        r.register(
            "failures",
            "Scan rounds that failed (retried with backoff)",
            failures.clone(),
        );
        let loop_gauges = LoopGauges::register(
            &mut r,
            "scans",
            "the scanner last completed a round or wrote a page",
        );
        ScannerMetrics {
            registry: r,
            heartbeat: Heartbeat::new("scanner", allowed),
            last_success,
            last_duration,
            fetched,
            written,
            backfill_done,
            backfill_expected,
            pending_fields,
            schema_checks,
            schema_drift,
            failures,
            loop_gauges,
        }
    }

    /// For `spec`: quiet for at most `max(10 × its pause between rounds, 3 × site.timeout)`;
    /// long scans beat on every page.
    pub fn for_spec(spec: &ShotgunCacheSpec) -> ScannerMetrics {
        let pause = spec
            .workers
            .scanner
            .interval
            .duration()
            .min(super::PENDING_CHECK);
        ScannerMetrics::new(allowed_quiet(pause, spec.site.timeout.duration()))
    }

    fn ty(entity_type: &str) -> TypeLabels {
        TypeLabels {
            entity_type: entity_type.into(),
        }
    }

    /// A page of `fetched` rows read, `written` of them changed in the cache.
    pub fn rows(&self, entity_type: &str, scan: ScanKind, fetched: u64, written: u64) {
        let labels = RowLabels {
            entity_type: entity_type.into(),
            scan: scan.as_str().into(),
        };
        self.fetched.get_or_create(&labels).inc_by(fetched);
        self.written.get_or_create(&labels).inc_by(written);
    }

    /// A scan of the type finished after `took`.
    pub fn scanned(&self, entity_type: &str, took: Duration) {
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let labels = Self::ty(entity_type);
        self.last_success.get_or_create(&labels).set(now);
        self.last_duration
            .get_or_create(&labels)
            .set(took.as_secs_f64());
    }

    /// Backfill progress of the type: rows done and expected (when the site said).
    pub fn backfill(&self, entity_type: &str, done: i64, expected: Option<i64>) {
        let labels = Self::ty(entity_type);
        self.backfill_done.get_or_create(&labels).set(done);
        if let Some(t) = expected {
            self.backfill_expected
                .get_or_create(&labels)
                .set(t.max(done));
        }
    }

    /// Fields of the type not backfilled yet.
    pub fn pending_fields(&self, entity_type: &str, n: usize) {
        self.pending_fields
            .get_or_create(&Self::ty(entity_type))
            .set(n as i64);
    }

    /// A schema check of the type: the fields that drifted, or None when the site did not
    /// answer.
    pub fn schema_checked(&self, entity_type: &str, drifted: Option<usize>) {
        let outcome = match drifted {
            None => "failed",
            Some(0) => "unchanged",
            Some(_) => "changed",
        };
        self.schema_checks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        if let Some(n) = drifted {
            self.schema_drift
                .get_or_create(&Self::ty(entity_type))
                .set(n as i64);
        }
    }

    pub fn failed(&self) {
        self.failures.inc();
    }

    pub fn set_role(&self, role: Role) {
        self.heartbeat.set_role(role);
    }
}

impl Observed for ScannerMetrics {
    fn encode_into(&self, out: &mut String) {
        self.loop_gauges.publish(&self.heartbeat);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.registry);
    }

    fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }
}
