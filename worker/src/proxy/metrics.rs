//! Prometheus metrics of the proxy, one registry prefixed `sgcache_proxy`.

use super::reason::Reason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// API3 method name, `other` for unknown ones (bounded cardinality), `raw` for non-JSON
    /// endpoints.
    pub method: String,
    /// `cache`, `site` or `error`.
    pub path: String,
    /// Why a read passed through (`none` otherwise).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteErrorLabels {
    /// `unreachable`, `status_5xx`, `auth` (102).
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub method: String,
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerifyLabels {
    /// `match`, `mismatch`, `error` (the site did not answer the check) or `skipped` (every
    /// site-check slot was taken).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// A trust class (`sort:text`, `relation:in_last`, ...).
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassStateLabels {
    pub class: String,
    /// `learning`, `trusted` or `off`.
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassCheckLabels {
    pub class: String,
    /// `match`, `difference`, `inconclusive` (the site or the cache did not answer, or the
    /// answers agreed once the cache caught up) or `skipped` (no slot or site budget; see
    /// `trust_checks_skipped`).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassSkipLabels {
    pub class: String,
    /// `busy` (every check slot of its kind taken) or `site_budget` (`trust.maxSiteRate`).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    /// `site` (a passed-through read) or `cache` (a cached read's statement).
    pub path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `read`, `write`, `other`, `background`, `probe` or `stream`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BusyLabels {
    /// `site_queue_full` or `site_wait_expired`.
    pub reason: &'static str,
}

/// The proxy's requests to the site ([`super::upstream`]).
#[derive(Clone)]
pub struct UpstreamMetrics {
    /// Requests sent to the site, by kind: what the site receives from this replica.
    pub requests: Family<KindLabels, Counter>,
    pub site_errors: Family<SiteErrorLabels, Counter>,
    pub in_flight: Gauge,
    pub queued: Gauge,
    pub queue_wait: Histogram,
    /// Requests answered by an identical one in flight instead of their own.
    pub coalesced: Family<PathLabels, Counter>,
    pub busy: Family<BusyLabels, Counter>,
    /// Requests whose handling panicked (answered with an API3 error).
    pub panics: Counter,
}

impl UpstreamMetrics {
    fn register(registry: &mut Registry) -> UpstreamMetrics {
        let m = UpstreamMetrics {
            requests: Family::default(),
            site_errors: Family::default(),
            in_flight: Gauge::default(),
            queued: Gauge::default(),
            // 1 ms .. ~33 s.
            queue_wait: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 16,
            )),
            coalesced: Family::default(),
            busy: Family::default(),
            panics: Counter::default(),
        };
        registry.register(
            "site_requests",
            "Requests this replica sent to the site, by kind",
            m.requests.clone(),
        );
        registry.register(
            "site_errors",
            "Failed or rejected calls to the site",
            m.site_errors.clone(),
        );
        registry.register(
            "site_requests_in_flight",
            "Requests at the site now (uploads and downloads not counted)",
            m.in_flight.clone(),
        );
        registry.register(
            "site_requests_queued",
            "Requests waiting for a turn at the site (workers.proxy.site.maxConcurrent)",
            m.queued.clone(),
        );
        registry.register(
            "site_queue_wait_seconds",
            "Time requests waited for a turn at the site",
            m.queue_wait.clone(),
        );
        registry.register(
            "coalesced_requests",
            "Requests answered by an identical one already in flight, by path",
            m.coalesced.clone(),
        );
        registry.register(
            "site_busy",
            "Requests answered busy: the site queue was full or the wait too long",
            m.busy.clone(),
        );
        registry.register(
            "panics",
            "Requests whose handling failed with a panic (answered with an API3 error)",
            m.panics.clone(),
        );
        // Every known label value starts at 0, so the series exist (and rate() and alerts see
        // them) before the first event.
        for kind in ["unreachable", "status_5xx", "auth"] {
            let _ = m
                .site_errors
                .get_or_create(&SiteErrorLabels { kind: kind.into() });
        }
        for kind in ["read", "write", "other", "background", "probe", "stream"] {
            let _ = m.requests.get_or_create(&KindLabels { kind });
        }
        for path in ["site", "cache"] {
            let _ = m.coalesced.get_or_create(&PathLabels { path });
        }
        for b in [
            super::upstream::gate::Busy::QueueFull,
            super::upstream::gate::Busy::WaitExpired,
        ] {
            let _ = m.busy.get_or_create(&BusyLabels { reason: b.label() });
        }
        m
    }

    pub fn sent(&self, kind: super::upstream::Kind) {
        self.requests
            .get_or_create(&KindLabels { kind: kind.label() })
            .inc();
    }

    pub fn sent_stream(&self) {
        self.requests
            .get_or_create(&KindLabels { kind: "stream" })
            .inc();
    }

    pub fn coalesced(&self, path: &'static str) {
        self.coalesced.get_or_create(&PathLabels { path }).inc();
    }

    pub fn site_error(&self, kind: &str) {
        self.site_errors
            .get_or_create(&SiteErrorLabels { kind: kind.into() })
            .inc();
    }

    pub fn busy(&self, busy: super::upstream::gate::Busy) {
        self.busy
            .get_or_create(&BusyLabels {
                reason: busy.label(),
            })
            .inc();
    }
}

/// Per trust class: its state, its samples, the reads it served and the checks run.
pub struct TrustMetrics {
    state: Family<ClassStateLabels, Gauge>,
    samples: Family<ClassLabels, Gauge>,
    served: Family<ClassLabels, Counter>,
    checks: Family<ClassCheckLabels, Counter>,
    skips: Family<ClassSkipLabels, Counter>,
    /// Requests to the site the checks added (re-checks and confirmations).
    pub site_requests: Counter,
}

impl TrustMetrics {
    fn register(registry: &mut Registry) -> TrustMetrics {
        let m = TrustMetrics {
            state: Family::default(),
            samples: Family::default(),
            served: Family::default(),
            checks: Family::default(),
            skips: Family::default(),
            site_requests: Counter::default(),
        };
        registry.register(
            "trust_class_state",
            "1 for the state each trust class is in (learning, trusted, off)",
            m.state.clone(),
        );
        registry.register(
            "trust_class_samples",
            "Checks of each trust class that found the cache's answer identical to the site's",
            m.samples.clone(),
        );
        registry.register(
            "trust_class_served",
            "Reads of each trust class answered from the cache by this replica",
            m.served.clone(),
        );
        registry.register(
            "trust_checks",
            "Background comparisons of a read's answers, per trust class and outcome",
            m.checks.clone(),
        );
        registry.register(
            "trust_checks_skipped",
            "Checks of each trust class not run, by reason (busy, site_budget)",
            m.skips.clone(),
        );
        registry.register(
            "trust_site_requests",
            "Requests the trust checks added to the site",
            m.site_requests.clone(),
        );
        for c in sgcache::trust::TrustClass::ALL {
            m.set(c, sgcache::storage::TrustState::Learning, 0);
            let _ = m.served.get_or_create(&ClassLabels {
                class: c.name().into(),
            });
        }
        m
    }

    pub fn set(
        &self,
        class: sgcache::trust::TrustClass,
        state: sgcache::storage::TrustState,
        samples: i64,
    ) {
        use sgcache::storage::TrustState;
        for s in [TrustState::Learning, TrustState::Trusted, TrustState::Off] {
            self.state
                .get_or_create(&ClassStateLabels {
                    class: class.name().into(),
                    state: s.name().into(),
                })
                .set((s == state) as i64);
        }
        self.samples
            .get_or_create(&ClassLabels {
                class: class.name().into(),
            })
            .set(samples);
    }

    pub fn served(&self, class: sgcache::trust::TrustClass) {
        self.served
            .get_or_create(&ClassLabels {
                class: class.name().into(),
            })
            .inc();
    }

    pub fn skipped<'a>(
        &self,
        classes: impl IntoIterator<Item = &'a sgcache::trust::TrustClass>,
        reason: &str,
    ) {
        for c in classes {
            self.skips
                .get_or_create(&ClassSkipLabels {
                    class: c.name().into(),
                    reason: reason.into(),
                })
                .inc();
        }
    }

    pub fn checked<'a>(
        &self,
        classes: impl IntoIterator<Item = &'a sgcache::trust::TrustClass>,
        outcome: &str,
    ) {
        for c in classes {
            self.checks
                .get_or_create(&ClassCheckLabels {
                    class: c.name().into(),
                    outcome: outcome.into(),
                })
                .inc();
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub trust: TrustMetrics,
    /// Sampled cached reads re-run against the site (`verifySampleRate`).
    pub verify: Family<VerifyLabels, Counter>,
    /// Entities re-read from the site and rewritten after a verification mismatch.
    pub verify_refreshed: Counter,
    /// Refreshes from the site (after a write or a verification mismatch) not done because the
    /// cache has no credentials of its own.
    pub refreshes_skipped: Counter,
    /// Entities re-read from the site and rewritten because a passed-through answer showed
    /// the cache's copy stale.
    pub passthrough_refreshed: Counter,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<LatencyLabels, Histogram>,
    /// The requests to the site (handed to [`super::upstream::Upstream`]).
    pub upstream: UpstreamMetrics,
    pub write_through_failures: Counter,
    /// Cached reads answered from the answers kept in memory, without a query.
    pub result_hits: Counter,
    /// Cached reads whose statement failed while the database answered the proxy's probe
    /// (the read went to the site; the cache stayed on for the others).
    pub read_statement_failures: Counter,
    /// Fields holding a value the cache cannot store (state `unservable`), at the last
    /// catalog refresh.
    pub unservable_fields: Gauge,
    /// Cached types further behind the site than `maxLag`, at the last catalog refresh.
    pub stale_types: Gauge,
    /// Consecutive failed polls of the event follower, at the last catalog refresh.
    pub events_failures: Gauge,
    /// Reads of EventLogEntry (event daemons) by the path taken (method label `read`).
    pub event_log_reads: Family<RequestLabels, Counter>,
    /// 1 for the proxy's verdict on its database (`ok` or why reads pass through).
    pub database_state: Family<DatabaseStateLabels, Gauge>,
    /// Types passed through because a write-through could not be stored.
    pub unsynced_types: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatabaseStateLabels {
    /// One of `super::db_guard::STATES`.
    pub state: String,
}

/// Methods the labels name; anything else is `other`.
const KNOWN_METHODS: &[&str] = &[
    "info",
    "read",
    "summarize",
    "create",
    "update",
    "delete",
    "revive",
    "batch",
    "schema_read",
    "schema_entity_read",
    "schema_field_read",
    "query_display_name_cache",
    "get_session_token",
];

pub fn method_label(method: &str) -> String {
    if KNOWN_METHODS.contains(&method) {
        method.to_string()
    } else {
        "other".to_string()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sgcache_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "API3 requests by method and the path taken",
            requests.clone(),
        );
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms .. ~16 s.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0005, 2.0, 16,
            ))
        });
        registry.register(
            "request_duration_seconds",
            "Time to answer a request, by method and path taken",
            latency.clone(),
        );
        let write_through_failures = Counter::default();
        registry.register(
            "write_through_failures",
            "Successful writes whose result could not be written into the cache",
            write_through_failures.clone(),
        );
        let verify = Family::<VerifyLabels, Counter>::default();
        registry.register(
            "verify",
            "Cached reads re-run against the site and compared, by outcome",
            verify.clone(),
        );
        let verify_refreshed = Counter::default();
        registry.register(
            "verify_refreshed_entities",
            "Entities re-read from the site and rewritten after a verification mismatch",
            verify_refreshed.clone(),
        );
        let refreshes_skipped = Counter::default();
        registry.register(
            "refreshes_skipped",
            "Refreshes from the site (after a write, a verification mismatch or a passed-through answer showing stale rows) not done: the cache has no credentials of its own",
            refreshes_skipped.clone(),
        );
        let passthrough_refreshed = Counter::default();
        registry.register(
            "passthrough_refreshed_entities",
            "Entities re-read from the site and rewritten because a passed-through answer showed them newer than the cache's copy",
            passthrough_refreshed.clone(),
        );
        let result_hits = Counter::default();
        registry.register(
            "result_cache_hits",
            "Cached reads answered from answers kept in memory, without a query",
            result_hits.clone(),
        );
        let read_statement_failures = Counter::default();
        registry.register(
            "read_statement_failures",
            "Cached reads whose statement failed in a database that answers (sent to the site)",
            read_statement_failures.clone(),
        );
        let unservable_fields = Gauge::default();
        registry.register(
            "unservable_fields",
            "Cached fields holding a value the cache cannot store; reads touching them pass through",
            unservable_fields.clone(),
        );
        let stale_types = Gauge::default();
        registry.register(
            "stale_types",
            "Cached types further behind the site than maxLag; their reads pass through",
            stale_types.clone(),
        );
        let events_failures = Gauge::default();
        registry.register(
            "events_failures",
            "Consecutive failed polls of the event follower (it retries the same position)",
            events_failures.clone(),
        );
        let database_state = Family::<DatabaseStateLabels, Gauge>::default();
        registry.register(
            "database_state",
            "1 for the proxy's verdict on its database: ok, or why every read passes through (not_writable, failover, rolled_back, follower_stopped, unknown)",
            database_state.clone(),
        );
        let unsynced_types = Gauge::default();
        registry.register(
            "unsynced_types",
            "Cached types passed through because a write-through could not be stored, until the follower or a scan brings the write in",
            unsynced_types.clone(),
        );
        // Every known label value starts at 0, so the series exist (and rate() and alerts see
        // them) before the first error or check.
        for outcome in ["match", "mismatch", "error", "skipped"] {
            let _ = verify.get_or_create(&VerifyLabels {
                outcome: outcome.into(),
            });
        }
        let trust = TrustMetrics::register(&mut registry);
        let upstream = UpstreamMetrics::register(&mut registry);
        let event_log_reads = Family::<RequestLabels, Counter>::default();
        registry.register(
            "event_log_reads",
            "Reads of EventLogEntry (event daemons) by the path taken and why they passed through",
            event_log_reads.clone(),
        );
        for path in ["cache", "site"] {
            let _ = event_log_reads.get_or_create(&RequestLabels {
                method: "read".into(),
                path: path.into(),
                reason: "none".into(),
            });
        }
        Metrics {
            event_log_reads,
            registry,
            database_state,
            unsynced_types,
            trust,
            read_statement_failures,
            result_hits,
            events_failures,
            unservable_fields,
            stale_types,
            verify,
            verify_refreshed,
            refreshes_skipped,
            passthrough_refreshed,
            requests,
            latency,
            upstream,
            write_through_failures,
        }
    }
}

impl Metrics {
    /// Publishes the proxy's verdict on its database.
    pub fn set_db_guard(&self, guard: &super::db_guard::DbGuard) {
        let now = guard.state();
        for state in super::db_guard::STATES {
            self.database_state
                .get_or_create(&DatabaseStateLabels {
                    state: state.into(),
                })
                .set(i64::from(state == now));
        }
        self.unsynced_types.set(guard.unsynced() as i64);
    }

    /// Publishes what the catalog says the cache cannot serve.
    pub fn set_fidelity(&self, catalog: &sgcache::query::Catalog) {
        let unservable = catalog
            .types
            .values()
            .flat_map(|t| t.fields.values())
            .filter(|f| f.unservable)
            .count();
        let stale = catalog.types.values().filter(|t| t.stale).count();
        self.unservable_fields.set(unservable as i64);
        self.stale_types.set(stale as i64);
    }

    pub fn observe(&self, method: &str, path: &str, reason: Reason, seconds: f64) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                method: method.clone(),
                path: path.into(),
                reason: reason.label().into(),
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                method,
                path: path.into(),
            })
            .observe(seconds);
    }

    pub fn verified(&self, outcome: &str) {
        self.verify
            .get_or_create(&VerifyLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        self.encode_with(None)
    }

    /// The proxy's metrics followed by those of the workers running in the same process.
    pub fn encode_with(&self, workers: Option<&crate::observe::Probes>) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        if let Some(w) = workers {
            w.encode_into(&mut out);
        }
        let _ = encode_eof(&mut out);
        out
    }
}
