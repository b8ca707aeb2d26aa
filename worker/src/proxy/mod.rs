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
pub mod cache_db;
mod change_listener;
pub mod db_guard;
pub mod envelope;
mod event_log;
mod freshness;
mod gzip;
pub mod intake;
pub mod listener;
pub mod metrics;
mod plans;
pub mod policy;
mod read;
pub mod reason;
mod refresh;
pub mod run;
pub mod site;
pub mod site_clock;
pub mod site_health;
pub mod stale_rows;
pub mod telemetry;
pub mod trust;
pub mod upstream;
pub mod verify;
mod write;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Extensions, HeaderMap, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::FutureExt;
use serde_json::json;
use sgcache::sql::Db;
use sgcache::ShotgunCacheSpec;
use tokio_util::sync::CancellationToken;
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::timeout::RequestBodyTimeoutLayer;

use auth::AuthCache;
use cache_db::CacheDb;
use intake::{Intake, IntakeLimits};
use listener::ListenerLimits;
use policy::ReadPolicy;
use reason::Reason;
use site::Site;
use telemetry::Telemetry;
use upstream::Upstream;

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

/// Shared state of the proxy's handlers: a few components, each saying what a part of the
/// proxy depends on.
pub struct AppState {
    /// The cache database, the catalog of ready fields and the answers kept in memory.
    pub cache: Arc<CacheDb>,
    /// Every request to the site goes through it (with the site's health and clock, and
    /// what the site said about each principal's credentials).
    pub upstream: Arc<Upstream>,
    /// What may be answered from the cache and how answers are checked.
    pub policy: ReadPolicy,
    /// Metrics, the access log, the status page, the in-process workers' probes.
    pub telemetry: Arc<Telemetry>,
    /// Requests in flight and bodies buffered.
    pub intake: Intake,
}

impl AppState {
    pub fn new(config: &ProxyConfig, db: Option<Db>) -> anyhow::Result<Arc<AppState>> {
        let telemetry = Arc::new(Telemetry {
            access_log: config.access_log,
            ..Default::default()
        });
        let upstream = Upstream::new(
            Site::new(&config.site_url, config.site_timeout)?,
            AuthCache::new(config.auth_ttl, config.auth_grace),
            config.site_gate.clone(),
            telemetry.metrics.upstream.clone(),
        );
        Ok(Arc::new(AppState {
            cache: Arc::new(CacheDb::new(config, db)),
            upstream,
            policy: ReadPolicy::new(config),
            telemetry,
            intake: Intake::new(config.intake.clone()),
        }))
    }

    /// Re-reads the catalog (a failure marks the database unavailable: reads pass through),
    /// then the trust classes' state.
    pub async fn refresh_catalog(&self) {
        let metrics = &self.telemetry.metrics;
        if let Some(db) = self
            .cache
            .refresh(self.upstream.health.is_up(), metrics)
            .await
        {
            self.policy.trust.refresh(db, metrics).await;
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
                        gzip::compressible(headers)
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
                .telemetry
                .metrics
                .observe("other", "error", Reason::Refused(refusal), 0.0);
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
    state.telemetry.metrics.upstream.panics.inc();
    state
        .telemetry
        .metrics
        .observe("other", "error", Reason::Panic, 0.0);
    tracing::error!("handling a request panicked; answered with an API3 error");
    answer::Outcome::new(
        answer::internal_error_response(),
        answer::Path::Error,
        Reason::Panic,
    )
    .into_response()
}

/// Ready when the cache or the site can answer (reads are served from either). The body
/// says which of the two is available.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let db = state.cache.ok();
    let site = state.upstream.health.is_up();
    let status = if db || site {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let catalog = state.cache.catalog();
    let types_ready = catalog.types.values().filter(|t| t.ready).count();
    let mut body = json!({
        "database": match (state.cache.db().is_some(), db, state.cache.pending.load(Ordering::Relaxed)) {
            (_, true, _) => "ok",
            (false, _, false) => "disabled",
            _ => "unavailable",
        },
        "site": if site { "ok" } else { "unavailable" },
        "types_ready": types_ready,
        // Every type the cache holds (listed or implied by links), ready or still backfilling.
        "types_planned": catalog.types.len(),
        // Passed through rather than served: types too far behind the site (maxLag) and
        // fields holding a value the cache cannot store.
        "stale_types": freshness::stale_types(&catalog),
        "unservable_fields": freshness::unservable_fields(&catalog),
    });
    if state.cache.db().is_some() {
        // Whether the database can be vouched for (failover, rollback, unsynced writes);
        // nothing to say without one.
        body["database_guard"] = state.cache.guard.describe();
    }
    if let Some(workers) = state.telemetry.workers.get() {
        // Leader or standby of each worker in this process (`all`); they do not make the
        // proxy unready: it answers from the site meanwhile.
        body["workers"] = serde_json::Value::Object(workers.roles().1);
    }
    (status, Json(body)).into_response()
}

/// Alive; in `all`, only while the follower's and the scanner's loops make progress too.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.telemetry.workers.get().map(|w| w.health()) {
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
        Body::from(
            state
                .telemetry
                .metrics
                .encode_with(state.telemetry.workers.get()),
        ),
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
    let changes = tokio::spawn(change_listener::listen(state.cache.clone(), stop.clone()));
    let prober = tokio::spawn(probe_loop(state.clone(), stop.clone()));
    let rates = tokio::spawn(crate::status::read_rates::sample_loop(
        state.telemetry.clone(),
        state.cache.clone(),
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
