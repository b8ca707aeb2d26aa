//! HTTP: `POST [/<prefix>]/api3/json` (with faults) and the `/control/` endpoint.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use sgcache::api3::Request;

use crate::semantics::{NullHop, SortCollation, TextCase, WeekStart};
use crate::site::Site;

pub fn router(site: Arc<Site>) -> Router {
    Router::new()
        .route("/control/health", get(health))
        .route("/control/stats", get(stats))
        .route("/control/stats/reset", post(reset_stats))
        .route("/control/faults", get(get_faults).put(put_faults))
        .route("/control/quirks", get(get_quirks).put(put_quirks))
        .route("/control/requests", get(requests))
        .route("/control/credentials", axum::routing::put(put_credentials))
        .route("/control/clock", get(get_clock).put(put_clock))
        .fallback(api3)
        .layer(axum::middleware::map_response_with_state(
            site.clone(),
            site_date,
        ))
        .with_state(site)
}

/// Every answer carries the site's own time in `Date` (RFC 7231 IMF-fixdate), as a real
/// site's front end does: a client that needs "now" as the site sees it (relative dates) reads
/// it there. With a fixed or advanced clock this is not the machine's time, which is the point.
async fn site_date(State(site): State<Arc<Site>>, mut response: Response) -> Response {
    let date = crate::value::to_utc(site.now())
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    if let Ok(v) = header::HeaderValue::from_str(&date) {
        response.headers_mut().insert(header::DATE, v);
    }
    response
}

fn clock_json(site: &Site) -> Value {
    json!({
        "now": crate::value::format_date_time(site.now()),
        "fixed": matches!(site.clock(), crate::site::Clock::Fixed(_)),
    })
}

async fn get_clock(State(site): State<Arc<Site>>) -> Json<Value> {
    Json(clock_json(&site))
}

/// `{"clock": "YYYY-MM-DDTHH:MM:SSZ" | null, "advance_seconds": n}`, both optional: `clock`
/// fixes the clock (null: back to real time), then `advance_seconds` moves it (fixed or real).
async fn put_clock(State(site): State<Arc<Site>>, body: Bytes) -> Response {
    let bad = |e: String| json_response(StatusCode::BAD_REQUEST, &json!({"error": e}));
    let change: serde_json::Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => return bad(e.to_string()),
    };
    if let Some(k) = change
        .keys()
        .find(|k| *k != "clock" && *k != "advance_seconds")
    {
        return bad(format!("unknown key {k:?} (clock, advance_seconds)"));
    }
    let at = match change.get("clock") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(t)) => match crate::value::parse_date_time(t) {
            Some(secs) => Some(Some(secs)),
            None => return bad(format!("invalid clock {t:?}")),
        },
        Some(v) => return bad(format!("clock {v} is not a date_time string or null")),
    };
    let advance = match change.get("advance_seconds") {
        None => None,
        Some(v) => match v.as_i64() {
            Some(n) => Some(n),
            None => return bad(format!("advance_seconds {v} is not an integer")),
        },
    };
    if let Some(at) = at {
        site.set_clock(at);
    }
    if let Some(n) = advance {
        site.advance_clock(n);
    }
    tracing::info!(clock = ?site.clock(), "clock changed");
    json_response(StatusCode::OK, &clock_json(&site))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

async fn health(State(site): State<Arc<Site>>) -> Json<Value> {
    Json(json!({"status": "ok", "seed": site.counts}))
}

async fn stats(State(site): State<Arc<Site>>) -> Json<Value> {
    let r = site.recorder.lock().unwrap_or_else(|e| e.into_inner());
    Json(serde_json::to_value(&r.stats).unwrap_or_default())
}

async fn reset_stats(State(site): State<Arc<Site>>) -> Json<Value> {
    site.recorder
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .reset();
    Json(json!({"reset": true}))
}

async fn get_faults(State(site): State<Arc<Site>>) -> Json<Value> {
    Json(serde_json::to_value(site.faults()).unwrap_or_default())
}

async fn put_faults(State(site): State<Arc<Site>>, body: Bytes) -> Response {
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
    };
    match site.faults().merged(&patch) {
        Ok(f) => {
            tracing::info!(faults = ?f, "faults changed");
            site.set_faults(f.clone());
            json_response(StatusCode::OK, &serde_json::to_value(f).unwrap_or_default())
        }
        Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({"error": e})),
    }
}

/// How the site's data reads (`PUT` takes any subset; unknown keys are a 400).
#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Quirks {
    null_checkboxes: Option<bool>,
    text_case: Option<TextCase>,
    sort_collation: Option<SortCollation>,
    week_start: Option<WeekStart>,
    null_hop: Option<NullHop>,
}

fn quirks_json(site: &Site) -> Value {
    let mut v = serde_json::to_value(site.semantics()).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert("null_checkboxes".into(), json!(site.null_checkboxes()));
    }
    v
}

async fn get_quirks(State(site): State<Arc<Site>>) -> Json<Value> {
    Json(quirks_json(&site))
}

async fn put_quirks(State(site): State<Arc<Site>>, body: Bytes) -> Response {
    let q: Quirks = match serde_json::from_slice(&body) {
        Ok(q) => q,
        Err(e) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
    };
    if let Some(on) = q.null_checkboxes {
        tracing::info!(null_checkboxes = on, "quirks changed");
        site.set_null_checkboxes(on);
    }
    if q.text_case.is_some()
        || q.sort_collation.is_some()
        || q.week_start.is_some()
        || q.null_hop.is_some()
    {
        let mut sem = site.semantics();
        sem.text_case = q.text_case.unwrap_or(sem.text_case);
        sem.sort_collation = q.sort_collation.unwrap_or(sem.sort_collation);
        sem.week_start = q.week_start.unwrap_or(sem.week_start);
        sem.null_hop = q.null_hop.unwrap_or(sem.null_hop);
        tracing::info!(semantics = ?sem, "quirks changed");
        site.set_semantics(sem);
    }
    json_response(StatusCode::OK, &quirks_json(&site))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptKey {
    script_name: String,
    script_key: String,
}

/// Rotates a script's key: `{"script_name": ..., "script_key": ...}`; 404 for an unknown script.
async fn put_credentials(State(site): State<Arc<Site>>, body: Bytes) -> Response {
    let change: ScriptKey = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
    };
    if site
        .auth
        .set_script_key(&change.script_name, &change.script_key)
    {
        tracing::info!(script = %change.script_name, "script key rotated");
        json_response(StatusCode::OK, &json!({"script_name": change.script_name}))
    } else {
        json_response(StatusCode::NOT_FOUND, &json!({"error": "no such script"}))
    }
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn requests(State(site): State<Arc<Site>>, Query(q): Query<Limit>) -> Json<Value> {
    let r = site.recorder.lock().unwrap_or_else(|e| e.into_inner());
    Json(serde_json::to_value(r.recent(q.limit.unwrap_or(100))).unwrap_or_default())
}

/// What the fault settings do to one request, decided before it runs.
enum Fate {
    Serve,
    Fail503,
    Timeout(Duration),
}

async fn apply_faults(site: &Site) -> Fate {
    let f = site.faults();
    if f.down {
        return Fate::Fail503;
    }
    let (delay, roll_503, roll_timeout) = {
        let mut rng = rand::rng();
        let jitter = if f.jitter_ms > 0 {
            rng.random_range(0..=f.jitter_ms)
        } else {
            0
        };
        (
            f.latency_ms + jitter,
            rng.random::<f64>(),
            rng.random::<f64>(),
        )
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if roll_503 < f.fail_503_rate {
        Fate::Fail503
    } else if roll_timeout < f.timeout_rate {
        Fate::Timeout(Duration::from_millis(f.timeout_ms))
    } else {
        Fate::Serve
    }
}

async fn api3(State(site): State<Arc<Site>>, method: Method, uri: Uri, body: Bytes) -> Response {
    if method != Method::POST || !uri.path().ends_with("/api3/json") {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}));
    }
    let parsed = Request::parse(&body);
    site.record(parsed.as_ref().ok());
    match apply_faults(&site).await {
        Fate::Serve => {}
        Fate::Fail503 => {
            site.recorder
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .stats
                .faulted += 1;
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "Site down for maintenance or too busy",
            )
                .into_response();
        }
        Fate::Timeout(d) => {
            site.recorder
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .stats
                .faulted += 1;
            tokio::time::sleep(d).await;
            return (StatusCode::GATEWAY_TIMEOUT, "Gateway timeout").into_response();
        }
    }
    let req = match parsed {
        Ok(r) => r,
        Err(e) => return json_response(StatusCode::OK, &e.to_body()),
    };
    let method_name = req.method_name.clone();
    let reply_delay = match method_name.as_str() {
        "read" => Duration::from_millis(site.faults().read_reply_delay_ms),
        _ => Duration::ZERO,
    };
    let outcome = tokio::task::spawn_blocking(move || site.call(&req)).await;
    if !reply_delay.is_zero() {
        tokio::time::sleep(reply_delay).await;
    }
    let body = match outcome {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::debug!(method = %method_name, error = %e.message, "api3 error");
            e.to_body()
        }
        Err(e) => {
            tracing::error!(method = %method_name, error = %e, "handler panicked");
            sgcache::api3::Api3Error::new(sgcache::api3::ErrorCode::Internal, "internal error")
                .to_body()
        }
    };
    json_response(StatusCode::OK, &body)
}
