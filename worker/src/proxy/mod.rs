//! The API3 proxy: answers reads from the cache when it can, passes everything else through
//! to the site, and writes the results of writes into the cache.
//!
//! Routes: `POST /api3/json` and `POST /<prefix>/api3/json` (API3), `GET /healthz`,
//! `GET /readyz`, `GET /metrics`, the status page under `/_sgcache/` ([`crate::status::page`]);
//! any other request is streamed to the site untouched.

mod access_log;
pub mod answer;
pub mod answer_cache;
mod api3;
pub mod auth;
mod change_listener;
pub mod db_guard;
pub mod envelope;
mod event_log;
mod freshness;
pub mod intake;
pub mod listener;
pub mod metrics;
mod plans;
mod read;
mod refresh;
pub mod run;
pub mod site;
pub mod site_clock;
pub mod site_health;
pub mod stale_rows;
pub mod trust;
pub mod upstream;
pub mod verify;
mod write;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Extensions, HeaderMap, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::FutureExt;
use serde_json::json;
use sgcache::query::Catalog;
use sgcache::sql::Db;
use sgcache::ShotgunCacheSpec;
use tokio_util::sync::CancellationToken;
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::timeout::RequestBodyTimeoutLayer;

use auth::AuthCache;
use intake::{Intake, IntakeLimits};
use listener::ListenerLimits;
use metrics::Metrics;
use site::Site;
use upstream::Upstream;

/// Longest wait for the proxy's own probe of the cache database (`SELECT 1`) after a read
/// failed in it: a database that cannot answer that is unavailable for every read.
const DB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of one proxy.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub site_url: String,
    pub site_timeout: Duration,
    pub auth_ttl: Duration,
    pub auth_grace: Duration,
    /// How often the catalog of ready fields is re-read.
    pub catalog_refresh: Duration,
    /// The cache's own credentials (`script_name`/`script_key`), used to re-read written
    /// entities; without them the writer's credentials are used.
    pub service_auth: Option<serde_json::Map<String, serde_json::Value>>,
    /// Fraction (0–1) of cached reads re-run against the site in the background and compared.
    pub verify_sample_rate: f64,
    /// Principals that may be answered from the cache; `None`: all the site accepts.
    pub cache_for: Option<sgcache::spec::CacheForSpec>,
    /// Bytes of answers kept in memory (0: none) and their longest life.
    pub result_cache_bytes: usize,
    pub result_cache_ttl: Duration,
    /// Request and body limits (`workers.proxy.limits`).
    pub intake: IntakeLimits,
    /// Connection limits and timeouts (`workers.proxy.limits`).
    pub listener: ListenerLimits,
    /// How far behind the site a type may be and still be answered (`ZERO`: unchecked).
    pub max_lag: Duration,
    /// Earned trust of inferred read shapes (`spec.trust`).
    pub trust: trust::TrustConfig,
    /// This replica's share of the site (`workers.proxy.site`).
    pub site_gate: upstream::gate::GateLimits,
    /// One INFO line per request (`workers.proxy.accessLog`).
    pub access_log: bool,
}

impl ProxyConfig {
    pub fn from_spec(spec: &ShotgunCacheSpec, site_url: String) -> Self {
        ProxyConfig {
            site_url,
            site_timeout: spec.site.timeout.duration(),
            auth_ttl: spec.workers.proxy.auth_ttl.duration(),
            auth_grace: spec.workers.proxy.auth_grace.duration(),
            catalog_refresh: Duration::from_secs(5),
            service_auth: None,
            verify_sample_rate: spec.workers.proxy.verify_sample_rate,
            cache_for: spec.workers.proxy.cache_for.clone(),
            result_cache_bytes: spec.workers.proxy.result_cache_mb as usize * 1024 * 1024,
            result_cache_ttl: spec.workers.proxy.result_cache_ttl.duration(),
            intake: IntakeLimits::from_spec(&spec.workers.proxy.limits),
            listener: ListenerLimits::from_spec(&spec.workers.proxy.limits),
            max_lag: spec.workers.proxy.max_lag.duration(),
            trust: trust::TrustConfig::from_spec(&spec.trust),
            site_gate: upstream::gate::GateLimits::from_spec(&spec.workers.proxy.site),
            access_log: spec.workers.proxy.access_log,
        }
    }
}

/// Shared state of the proxy's handlers.
pub struct AppState {
    /// Every request to the site goes through it (with the site's health and clock, and
    /// what the site said about each principal's credentials).
    pub upstream: Arc<Upstream>,
    /// The cache; unset runs a pure pass-through proxy (see [`AppState::attach_db`]).
    db: OnceLock<Db>,
    /// A database connection is being retried in the background.
    pub db_pending: AtomicBool,
    pub catalog: RwLock<Arc<Catalog>>,
    pub metrics: Metrics,
    /// The database answers the proxy (catalog refreshes, probes); when false every read
    /// passes through.
    db_ok: AtomicBool,
    /// Requests in flight and bodies buffered.
    pub intake: Intake,
    /// The last good `info` answer, replayed while the site is unreachable.
    pub last_info: RwLock<Option<site::SiteResponse>>,
    pub service_auth: Option<serde_json::Map<String, serde_json::Value>>,
    pub verify_sample_rate: f64,
    pub cache_for: Option<sgcache::spec::CacheForSpec>,
    /// Answers kept in memory.
    pub results: answer_cache::ResultCache,
    /// Plans of cached reads kept by payload.
    plans: plans::Plans,
    /// Cached reads' statements in flight: identical ones run once.
    pub statements:
        upstream::flights::Flights<Result<answer_cache::Kept, sgcache::query::PassThrough>>,
    /// See [`ProxyConfig::access_log`].
    pub access_log: bool,
    /// See [`ProxyConfig::max_lag`].
    pub max_lag: Duration,
    /// The status page's read rates and last gathered status (`/_sgcache/`).
    pub status_page: crate::status::page::StatusPage,
    /// The event follower and scanner running in this process (`all`): their metrics,
    /// heartbeats and roles are served with the proxy's.
    pub workers: OnceLock<crate::observe::Probes>,
    /// Held across each catalog load and store, so a load that began before a change can
    /// never replace the catalog a later load stored (under load, the periodic refresh and
    /// one asked for after a backfill overlapped and the older one won: a ready type read as
    /// not cached until the next refresh).
    catalog_load: tokio::sync::Mutex<()>,
    /// Which inferred read shapes have earned answers from the cache.
    pub trust: trust::Trust,
    /// Limits of refreshes from passed-through answers.
    pub stale_rows: stale_rows::StaleRows,
    /// Whether the database can be vouched for (failover, rollback, unsynced writes).
    pub db_guard: db_guard::DbGuard,
}

impl AppState {
    pub fn new(config: &ProxyConfig, db: Option<Db>) -> anyhow::Result<Arc<AppState>> {
        let metrics = Metrics::default();
        let upstream = Upstream::new(
            Site::new(&config.site_url, config.site_timeout)?,
            AuthCache::new(config.auth_ttl, config.auth_grace),
            config.site_gate.clone(),
            metrics.upstream.clone(),
        );
        Ok(Arc::new(AppState {
            upstream,
            db_ok: AtomicBool::new(db.is_some()),
            db: db.map(OnceLock::from).unwrap_or_default(),
            db_pending: AtomicBool::new(false),
            catalog: RwLock::new(Arc::new(Catalog::default())),
            metrics,
            intake: Intake::new(config.intake.clone()),
            last_info: RwLock::new(None),
            service_auth: config.service_auth.clone(),
            verify_sample_rate: config.verify_sample_rate,
            cache_for: config.cache_for.clone(),
            results: answer_cache::ResultCache::new(
                config.result_cache_bytes,
                config.result_cache_ttl,
            ),
            plans: Default::default(),
            statements: Default::default(),
            access_log: config.access_log,
            max_lag: config.max_lag,
            status_page: Default::default(),
            workers: OnceLock::new(),
            catalog_load: tokio::sync::Mutex::new(()),
            trust: trust::Trust::new(config.trust.clone()),
            stale_rows: Default::default(),
            db_guard: Default::default(),
        }))
    }

    /// The cache database, once connected.
    pub fn db(&self) -> Option<&Db> {
        self.db.get()
    }

    /// Connects the cache after start (the database was unreachable then); reads are served
    /// from it from the next catalog refresh on.
    pub fn attach_db(&self, db: Db) {
        if self.db.set(db).is_ok() {
            self.db_pending.store(false, Ordering::Relaxed);
        }
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The database is connected and answers.
    pub fn db_ok(&self) -> bool {
        self.db()
            .is_some_and(|db| self.db_ok.load(Ordering::Relaxed) && self.db_guard.current(db))
    }

    /// A read failed in the database: probes it (`SELECT 1`) and returns whether it answers.
    /// Only a failed probe marks it unavailable for every read (until the next successful
    /// catalog refresh): a statement error or a slow statement is that read's problem.
    pub async fn recheck_db(&self) -> bool {
        let Some(db) = self.db() else { return false };
        let mut probe = db.sql();
        probe.push("SELECT 1");
        let up = matches!(
            tokio::time::timeout(DB_PROBE_TIMEOUT, db.fetch_all(&probe)).await,
            Ok(Ok(_))
        );
        if !up && self.db_ok.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "cache database does not answer the proxy's probe; passing reads through"
            );
        }
        up
    }

    /// Re-reads the catalog; a failure marks the database unavailable (reads pass through).
    pub async fn refresh_catalog(&self) {
        let Some(db) = self.db() else { return };
        let _one_at_a_time = self.catalog_load.lock().await;
        // Nothing from a database the proxy cannot vouch for (db_guard logs why).
        let vouched = self.db_guard.check(db, self.upstream.health.is_up()).await;
        self.metrics.set_db_guard(&self.db_guard);
        let Ok(held_back) = vouched else {
            self.db_ok.store(false, Ordering::Relaxed);
            return;
        };
        match freshness::load(db, self.max_lag).await {
            Ok(mut loaded) => {
                db_guard::hold_back(&mut loaded.catalog, &held_back);
                self.metrics.set_fidelity(&loaded.catalog);
                self.metrics.events_failures.set(loaded.follower_failures);
                *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded.catalog);
                if !self.db_ok.swap(true, Ordering::Relaxed) {
                    tracing::info!("cache database available again");
                }
                self.trust.refresh(db, &self.metrics).await;
            }
            Err(e) => {
                if self.db_ok.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cache database unavailable; passing reads through");
                }
            }
        }
    }
}

/// The proxy's routes. Separate from serving so tests can drive it with `oneshot`.
pub fn app(state: Arc<AppState>) -> Router {
    let body_timeout = state.intake.limits().body_read_timeout;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .merge(crate::status::page::routes())
        .fallback(dispatch)
        // Clients send `accept-encoding: gzip`; pages of 500 entities shrink several times.
        // Only JSON is compressed: file downloads pass through as the site sent them.
        // Fastest level: on a page of 50 it compresses almost as well as the default level
        // and costs a fraction of its CPU, which the proxy shares with the database.
        .layer(
            CompressionLayer::new()
                .quality(CompressionLevel::Fastest)
                .compress_when(
                    |_: StatusCode, _: Version, headers: &HeaderMap, _: &Extensions| {
                        headers
                            .get(header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v.starts_with("application/json"))
                    },
                ),
        )
        // API3 bodies are limited by `intake`; uploads stream through unlimited.
        .layer(DefaultBodyLimit::disable())
        // A client pausing longer than this in the middle of a body loses the request.
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .with_state(state)
}

/// API3 for `POST …/api3/json`, streaming pass-through for everything else; at most
/// `maxInFlight` at once.
async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let _slot = match state.intake.admit() {
        Ok(slot) => slot,
        Err(refusal) => {
            state
                .metrics
                .observe("other", "error", refusal.label(), 0.0);
            return refusal.outcome().into_response();
        }
    };
    if req.method() == Method::POST && req.uri().path().ends_with("/api3/json") {
        let handled = AssertUnwindSafe(api3::handle(state.clone(), req))
            .catch_unwind()
            .await;
        return handled.unwrap_or_else(|_| panicked(&state));
    }
    api3::stream(state, req).await
}

/// A request whose handling panicked gets an API3 error (never a dropped connection), and
/// the panic is counted; the panic hook has logged where it happened.
fn panicked(state: &AppState) -> Response {
    state.metrics.upstream.panics.inc();
    state.metrics.observe("other", "error", "panic", 0.0);
    tracing::error!("handling a request panicked; answered with an API3 error");
    answer::Outcome::new(
        answer::internal_error_response(),
        answer::Path::Error,
        "panic",
    )
    .into_response()
}

/// Ready when the cache or the site can answer (reads are served from either). The body
/// says which of the two is available.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let db = state.db_ok();
    let site = state.upstream.health.is_up();
    let status = if db || site {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let catalog = state.catalog();
    let types_ready = catalog.types.values().filter(|t| t.ready).count();
    let mut body = json!({
        "database": match (state.db().is_some(), db, state.db_pending.load(Ordering::Relaxed)) {
            (_, true, _) => "ok",
            (false, _, false) => "disabled",
            _ => "unavailable",
        },
        "site": if site { "ok" } else { "unavailable" },
        "types_ready": types_ready,
        // Passed through rather than served: types too far behind the site (maxLag) and
        // fields holding a value the cache cannot store.
        "stale_types": freshness::stale_types(&catalog),
        "unservable_fields": freshness::unservable_fields(&catalog),
    });
    if state.db().is_some() {
        // Whether the database can be vouched for (failover, rollback, unsynced writes);
        // nothing to say without one.
        body["database_guard"] = state.db_guard.describe();
    }
    if let Some(workers) = state.workers.get() {
        // Leader or standby of each worker in this process (`all`); they do not make the
        // proxy unready: it answers from the site meanwhile.
        body["workers"] = serde_json::Value::Object(workers.roles().1);
    }
    (status, Json(body)).into_response()
}

/// Alive; in `all`, only while the follower's and the scanner's loops make progress too.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.workers.get().map(|w| w.health()) {
        Some((false, body)) => (StatusCode::SERVICE_UNAVAILABLE, body).into_response(),
        Some((true, body)) => body.into_response(),
        None => "ok".into_response(),
    }
}

async fn metrics_handler(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        Body::from(state.metrics.encode_with(state.workers.get())),
    )
        .into_response()
}

/// Keeps the catalog fresh until cancelled: every `every`, and at once when field states
/// change (`ready_signal`).
pub async fn refresh_loop(state: Arc<AppState>, every: Duration, stop: CancellationToken) {
    let mut changed = crate::ready_signal::subscribe();
    loop {
        state.refresh_catalog().await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
            _ = changed.changed() => {}
        }
    }
}

/// Probes the site every [`site_health::PROBE_INTERVAL`] while it is marked down, so the grace
/// window closes once it is back even if no client request reaches it.
async fn probe_loop(state: Arc<AppState>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(site_health::PROBE_INTERVAL) => {}
        }
        if !state.upstream.health.is_up() {
            state.upstream.recheck().await;
        }
    }
}

/// Serves the proxy on `listener` until `stop` is cancelled.
pub async fn serve(
    state: Arc<AppState>,
    config: ProxyConfig,
    listener: tokio::net::TcpListener,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let refresher = tokio::spawn(refresh_loop(
        state.clone(),
        config.catalog_refresh,
        stop.clone(),
    ));
    let changes = tokio::spawn(change_listener::listen(state.clone(), stop.clone()));
    let prober = tokio::spawn(probe_loop(state.clone(), stop.clone()));
    let rates = tokio::spawn(crate::status::read_rates::sample_loop(
        state.clone(),
        stop.clone(),
    ));
    tracing::info!(addr = %listener.local_addr()?, site = %state.upstream.base(), "proxy listening");
    listener::serve(app(state), listener, &config.listener, stop).await?;
    refresher.abort();
    changes.abort();
    prober.abort();
    rates.abort();
    Ok(())
}
