//! The status page the proxy serves under `/_sgcache/` (a path no site route uses; every other
//! path still goes to the site): one HTML file with its CSS and script inline, which fetches
//! `/_sgcache/status.json` every few seconds and draws the same facts as
//! `sgcache-worker status`, plus a sparkline of reads/s by path.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use sgcache::site::SiteClient;
use sgcache::spec::{ShotgunCacheSpec, SiteConnection};

use super::read_rates::{RatePoint, ReadRates, SAMPLE_EVERY};
use super::{gather, text, ProxyFigures, Status};
use crate::proxy::AppState;

/// The page: HTML, CSS and script in one file, no external assets.
const PAGE: &str = include_str!("page.html");

/// A gathered status is reused this long, so several open pages cost the database and the
/// site one gathering between them.
const REUSE_FOR: Duration = Duration::from_secs(4);

/// Longest wait for the site's event log while gathering.
const SITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for the whole status: a page that never answers tells nobody anything (a
/// database whose address moved may leave calls waiting for their connection's timeouts).
const GATHER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the proxy keeps for its status page.
#[derive(Default)]
pub struct StatusPage {
    pub read_rates: ReadRates,
    /// The site client reading the event log as the cache's script (made on first use).
    site: OnceLock<Option<SiteClient>>,
    last: Mutex<Option<(Instant, Arc<Status>)>>,
    /// The spec the proxy runs with: which types are listed (the rest are implied by links).
    spec: OnceLock<Arc<ShotgunCacheSpec>>,
}

impl StatusPage {
    /// Gives the page the proxy's spec (set once at start; without it the page leaves the
    /// links out).
    pub fn set_spec(&self, spec: &ShotgunCacheSpec) {
        let _ = self.spec.set(Arc::new(spec.clone()));
    }
}

/// The page's routes, merged into the proxy's router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/_sgcache",
            get(|| async { Redirect::permanent("/_sgcache/") }),
        )
        .route("/_sgcache/", get(page))
        .route("/_sgcache/status.json", get(status_json))
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

/// What the page's script draws: the status, its sentences and cells as the command prints
/// them, and the recent read rates.
#[derive(Serialize)]
struct PageData {
    status: Arc<Status>,
    text: PageText,
    reads_per_second: Vec<RatePoint>,
    sample_every_s: u64,
}

#[derive(Serialize)]
struct PageText {
    /// Whether declared links are served, and one line per implied type or link not served.
    links: String,
    links_detail: Vec<String>,
    /// Reads over every replica in the last minutes.
    reads: String,
    events: String,
    proxy: String,
    /// Per type, in the order of `status.types`: its state word and backfill progress.
    types: Vec<TypeText>,
    /// Per trust class, in the order of `status.trust`: its progress sentence.
    trust: Vec<String>,
}

#[derive(Serialize)]
struct TypeText {
    name: String,
    state: &'static str,
    backfill: String,
}

async fn status_json(State(state): State<Arc<AppState>>) -> Response {
    match current(&state).await {
        Ok(status) => {
            let links = status.links.clone().unwrap_or_default();
            let page_text = PageText {
                links: text::coverage_line(&links),
                links_detail: links
                    .implied
                    .iter()
                    .map(|t| format!("implied by links: {t}"))
                    .chain(links.uncovered.iter().map(|u| format!("to the site: {u}")))
                    .collect(),
                reads: super::read_share::share_line(&status.reads),
                events: text::events_line(&status.events),
                proxy: match (&status.proxy, &status.proxy_error) {
                    (Some(p), _) => text::proxy_line(p),
                    (None, e) => e.clone().unwrap_or_default(),
                },
                types: status
                    .types
                    .iter()
                    .map(|t| TypeText {
                        name: text::type_cell(t),
                        state: text::state_word(t),
                        backfill: text::backfill_text(t),
                    })
                    .collect(),
                trust: status
                    .trust
                    .iter()
                    .map(|t| super::trust::progress_line(t, status.generated_at))
                    .collect(),
            };
            let data = PageData {
                status,
                text: page_text,
                reads_per_second: state.telemetry.status_page.read_rates.points(),
                sample_every_s: SAMPLE_EVERY.as_secs(),
            };
            ([(header::CACHE_CONTROL, "no-store")], Json(data)).into_response()
        }
        Err(message) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::json!({"error": message})),
        )
            .into_response(),
    }
}

/// The status, gathered afresh unless a recent one can be reused.
async fn current(state: &AppState) -> Result<Arc<Status>, String> {
    let page = &state.telemetry.status_page;
    if let Some((at, status)) = &*page.last.lock().unwrap_or_else(|e| e.into_inner()) {
        if at.elapsed() < REUSE_FOR {
            return Ok(status.clone());
        }
    }
    let db = state
        .cache
        .db()
        .ok_or("the proxy has no cache database (it passes everything through)")?;
    let site = page.site.get_or_init(|| site_client(state)).as_ref();
    let spec = page.spec.get().map(|s| s.as_ref());
    let guard = state.cache.guard.describe();
    // Why reads go to the site, said even when the database cannot be read at all (a standby
    // behind its address).
    let why = guard["reason"].as_str().map(String::from);
    let gathered = match tokio::time::timeout(GATHER_TIMEOUT, gather(db, site, spec)).await {
        Ok(gathered) => gathered.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "the status could not be gathered within {} s",
            GATHER_TIMEOUT.as_secs()
        )),
    };
    let mut status = gathered.map_err(|e| match &why {
        Some(why) => format!("{e}; every read goes to the site: {why}"),
        None => e.to_string(),
    })?;
    let mut figures = ProxyFigures::from_metrics(&state.telemetry.metrics.encode());
    figures.database_guard_reason = why;
    status.proxy = Some(figures);
    let trust = state.policy.trust.config();
    super::trust::apply_settings(&mut status.trust, trust.samples, |c| {
        trust.pins.get(&c).copied()
    });
    let status = Arc::new(status);
    *page.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), status.clone()));
    Ok(status)
}

/// A client for the site as the cache's own script, when the proxy has its credentials.
fn site_client(state: &AppState) -> Option<SiteClient> {
    let auth = state.policy.service_auth.as_ref()?;
    let text = |k: &str| auth.get(k).and_then(Value::as_str).map(String::from);
    SiteClient::new(SiteConnection {
        url: state.upstream.base().to_string(),
        script_name: text("script_name")?,
        api_key: text("script_key")?,
        timeout: SITE_TIMEOUT,
    })
    .ok()
}
