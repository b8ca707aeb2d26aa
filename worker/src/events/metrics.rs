//! The follower's metrics, prefixed `sgcache_events`, and its heartbeat.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sgcache::ShotgunCacheSpec;

use super::parse::Kind;
use crate::observe::{allowed_quiet, Heartbeat, LoopGauges, Observed, Role};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `new`, `change`, `retirement`, `revival` or `other` (events of no cached kind).
    pub kind: String,
}

fn kind_label(kind: &Kind) -> &'static str {
    match kind {
        Kind::New => "new",
        Kind::Change => "change",
        Kind::Retirement => "retirement",
        Kind::Revival => "revival",
        Kind::Other => "other",
    }
}

pub struct EventsMetrics {
    registry: Registry,
    pub heartbeat: Heartbeat,
    last_applied: Gauge,
    newest_seen: Gauge,
    backlog: Gauge,
    gap_ids: Gauge,
    lag: Gauge<f64, AtomicU64>,
    /// `created_at` (unix ms) of the oldest event read and not yet committed; 0 when caught
    /// up. The lag is computed from it at each scrape, so a follower that stopped moving shows
    /// a lag that keeps growing.
    oldest_pending_ms: AtomicI64,
    applied: Family<KindLabels, Counter>,
    failures: Counter,
    dead_letters: Counter,
    gap_waits: Counter,
    gap_given_up: Counter,
    loop_gauges: LoopGauges,
    log: LogGauges,
}

/// The kept event log (`eventLog`), published by the trim loop.
struct LogGauges {
    rows: Gauge,
    floor: Gauge,
    through: Gauge,
    trimmed: Counter,
    stored: Counter,
}

impl LogGauges {
    fn register(r: &mut Registry) -> LogGauges {
        let g = LogGauges {
            rows: Gauge::default(),
            floor: Gauge::default(),
            through: Gauge::default(),
            trimmed: Counter::default(),
            stored: Counter::default(),
        };
        r.register(
            "log_rows",
            "Events held in the kept event log (rows, trimmed ones not yet deleted included)",
            g.rows.clone(),
        );
        r.register(
            "log_floor_event_id",
            "The kept event log holds every event above this id (reads reaching lower pass through)",
            g.floor.clone(),
        );
        r.register(
            "log_through_event_id",
            "The kept event log holds every event up to this id (the follower's contiguous position)",
            g.through.clone(),
        );
        r.register(
            "log_trimmed_rows",
            "Events deleted from the kept event log by retention",
            g.trimmed.clone(),
        );
        r.register(
            "log_stored_rows",
            "Events added to the kept event log",
            g.stored.clone(),
        );
        g
    }
}

impl EventsMetrics {
    /// The follower's metrics, its loop allowed to be quiet for `allowed`.
    pub fn new(allowed: Duration) -> EventsMetrics {
        let mut r = Registry::with_prefix("sgcache_events");
        let last_applied = Gauge::default();
        r.register(
            "last_applied_event_id",
            "Id of the newest EventLogEntry applied (saved position)",
            last_applied.clone(),
        );
        let newest_seen = Gauge::default();
        r.register(
            "site_newest_event_id",
            "Id of the newest EventLogEntry seen on the site",
            newest_seen.clone(),
        );
        let backlog = Gauge::default();
        r.register(
            "backlog_events",
            "Events on the site not applied yet (newest seen minus last applied)",
            backlog.clone(),
        );
        let gap_ids = Gauge::default();
        r.register(
            "gap_ids",
            "Missing event ids below the position still waited for (gap window)",
            gap_ids.clone(),
        );
        let lag = Gauge::<f64, AtomicU64>::default();
        r.register(
            "lag_seconds",
            "Age of the oldest change read from the site and not applied yet; 0 when caught up",
            lag.clone(),
        );
        let applied = Family::<KindLabels, Counter>::default();
        r.register(
            "applied",
            "Events committed (the position moved past them), by kind",
            applied.clone(),
        );
        let failures = Counter::default();
        r.register(
            "apply_failures",
            "Polls that failed (site read, apply or database); retried from the same position",
            failures.clone(),
        );
        let dead_letters = Counter::default();
        r.register(
            "dead_letters",
            "Values of applied events the cache could not store (dead letters; the field became unservable)",
            dead_letters.clone(),
        );
        let gap_waits = Counter::default();
        r.register(
            "gap_waits",
            "Event ids found missing and waited for (ids become visible out of order)",
            gap_waits.clone(),
        );
        let gap_given_up = Counter::default();
        r.register(
            "gap_given_up",
            "Missing event ids given up on after the gap window",
            gap_given_up.clone(),
        );
        let log = LogGauges::register(&mut r);
        let loop_gauges = LoopGauges::register(
            &mut r,
            "follows",
            "the follower's loop last completed an iteration",
        );
        // Every kind starts at 0, so the series exist before the first event of each.
        for kind in [
            Kind::New,
            Kind::Change,
            Kind::Retirement,
            Kind::Revival,
            Kind::Other,
        ] {
            let _ = applied.get_or_create(&KindLabels {
                kind: kind_label(&kind).into(),
            });
        }
        EventsMetrics {
            registry: r,
            heartbeat: Heartbeat::new("events", allowed),
            last_applied,
            newest_seen,
            backlog,
            gap_ids,
            lag,
            oldest_pending_ms: AtomicI64::new(0),
            applied,
            failures,
            dead_letters,
            gap_waits,
            gap_given_up,
            loop_gauges,
            log,
        }
    }

    /// For `spec`: quiet for at most `max(10 × pollInterval, 3 × site.timeout)`.
    pub fn for_spec(spec: &ShotgunCacheSpec) -> EventsMetrics {
        EventsMetrics::new(allowed_quiet(
            spec.workers.events.poll_interval.duration(),
            spec.site.timeout.duration(),
        ))
    }

    /// The saved position: last applied id and the ids still waited for.
    pub fn position(&self, last: i64, gap_ids: usize) {
        self.last_applied.set(last);
        self.gap_ids.set(gap_ids as i64);
        self.update_backlog();
    }

    /// The newest event id the site has shown (set as seen, not kept at its maximum: a
    /// site restored from a backup goes back).
    pub fn site_newest(&self, id: i64) {
        self.newest_seen.set(id);
        self.update_backlog();
    }

    fn update_backlog(&self) {
        let behind = self.newest_seen.get() - self.last_applied.get();
        self.backlog.set(behind.max(0));
    }

    /// Events were read that are not committed yet, the oldest created at `oldest_ms` (unix
    /// ms); `None` when the follower is caught up.
    pub fn pending_since(&self, oldest_ms: Option<i64>) {
        self.oldest_pending_ms
            .store(oldest_ms.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn applied(&self, kind: &Kind) {
        self.applied
            .get_or_create(&KindLabels {
                kind: kind_label(kind).into(),
            })
            .inc();
    }

    pub fn failed(&self) {
        self.failures.inc();
    }

    pub fn dead_letters(&self, n: u64) {
        self.dead_letters.inc_by(n);
    }

    pub fn gaps(&self, waited: u64, given_up: u64) {
        self.gap_waits.inc_by(waited);
        self.gap_given_up.inc_by(given_up);
    }

    /// Events added to the kept log by a batch.
    pub fn log_stored(&self, n: u64) {
        self.log.stored.inc_by(n);
    }

    pub fn log_trimmed(&self, n: u64) {
        self.log.trimmed.inc_by(n);
    }

    /// The kept log as the trim loop last read it (all 0 while none is kept).
    pub fn log_status(&self, s: &sgcache::storage::event_log::LogStatus) {
        self.log.rows.set(s.rows);
        self.log.floor.set(s.window.map_or(0, |w| w.floor));
        self.log.through.set(s.window.map_or(0, |w| w.through));
    }

    pub fn set_role(&self, role: Role) {
        self.heartbeat.set_role(role);
    }
}

impl Observed for EventsMetrics {
    fn encode_into(&self, out: &mut String) {
        let oldest = self.oldest_pending_ms.load(Ordering::Relaxed);
        let lag = if oldest > 0 {
            let now = chrono::Utc::now().timestamp_millis();
            (now - oldest).max(0) as f64 / 1000.0
        } else {
            0.0
        };
        self.lag.set(lag);
        self.loop_gauges.publish(&self.heartbeat);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.registry);
    }

    fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }
}
