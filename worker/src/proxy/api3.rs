//! The API3 endpoint: parse, decide cache or site, answer, record.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{to_bytes, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sgcache::api3::{self, is_error_body, Api3Error, ErrorCode, ReadRequest};
use sgcache::query::{plan_read, PassThrough, Reason};
use tracing::Instrument;

use super::auth::{principal, CredentialKey, Verdict};
use super::site::SiteResponse;
use super::{AppState, MAX_BODY};

/// Response header naming the path a request took (`cache` or `site`), for operators.
pub const PATH_HEADER: &str = "x-sgcache-path";

const WRITES: &[&str] = &["create", "update", "delete", "revive", "batch"];

/// One API3 request as the handlers see it.
#[derive(Clone)]
struct Call {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

pub async fn handle(state: Arc<AppState>, req: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let span = tracing::info_span!("api3", request_id = %&request_id[..16], method = tracing::field::Empty);
    async move {
        let start = Instant::now();
        let (parts, body) = req.into_parts();
        let body = match to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                let e = Api3Error::bad_request("the request body could not be read");
                return error_response(&e);
            }
        };
        let call = Call {
            path: parts.uri.path().to_string(),
            headers: parts.headers,
            body,
        };
        let parsed = api3::Request::parse(&call.body);
        let method = parsed
            .as_ref()
            .map(|r| r.method_name.clone())
            .unwrap_or_else(|_| "unparsed".into());
        tracing::Span::current().record("method", method.as_str());
        let (mut response, path, reason) = match parsed {
            // The site answers malformed requests with its own errors.
            Err(_) => forward(&state, &call, None).await,
            Ok(req) => match req.method_name.as_str() {
                "read" => read(&state, &call, &req).await,
                "info" => info(&state, &call).await,
                m if WRITES.contains(&m) => {
                    super::write::write(&state, &call.path, &call.headers, call.body.clone(), &req)
                        .await
                }
                _ => forward(&state, &call, principal(&req.auth).as_ref()).await,
            },
        };
        if let Ok(v) = HeaderValue::from_str(path) {
            response.headers_mut().insert(PATH_HEADER, v);
        }
        let elapsed = start.elapsed().as_secs_f64();
        state.metrics.observe(&method, path, reason, elapsed);
        // Two decimals: `ms=0.63`, not `ms=0.6309440000000001`.
        tracing::info!(
            path,
            reason,
            ms = (elapsed * 100_000.0).round() / 100.0,
            "answered"
        );
        response
    }
    .instrument(span)
    .await
}

/// What a handler did: the response, the path taken and why (metrics labels).
pub type Outcome = (Response, &'static str, &'static str);

/// Records what a site answer says about the credentials and the site's health.
pub fn note_site_answer(state: &AppState, key: Option<&CredentialKey>, resp: &SiteResponse) {
    if resp.is_unavailable() {
        state.metrics.site_error("status_5xx");
        state.site_ok.store(false, Ordering::Relaxed);
        return;
    }
    state.site_ok.store(true, Ordering::Relaxed);
    let (Some(key), true) = (key, resp.status.is_success()) else {
        return;
    };
    match resp.json() {
        Some(body) if is_error_body(&body) => {
            let code = body.get("error_code").and_then(Value::as_i64);
            if code == Some(102) {
                state.metrics.site_error("auth");
                state.auth.rejected(key);
            }
        }
        Some(_) => state.auth.accepted(*key),
        None => {}
    }
}

/// The API3 error the client gets when the site cannot be reached.
pub fn unreachable_response(state: &AppState, why: &str) -> Response {
    state.metrics.site_error("unreachable");
    state.site_ok.store(false, Ordering::Relaxed);
    tracing::warn!(error = why, "site unreachable");
    error_response(&Api3Error::new(
        ErrorCode::SiteUnavailable,
        format!("The Shotgun site is unavailable through sgcache: {why}"),
    ))
}

pub fn error_response(e: &Api3Error) -> Response {
    json_response(&e.to_body())
}

pub fn json_response(v: &Value) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )],
        v.to_string(),
    )
        .into_response()
}

/// Sends the request to the site as it came.
async fn forward(state: &AppState, call: &Call, key: Option<&CredentialKey>) -> Outcome {
    forward_reason(state, call, key, "none").await
}

async fn forward_reason(
    state: &AppState,
    call: &Call,
    key: Option<&CredentialKey>,
    reason: &'static str,
) -> Outcome {
    match state
        .site
        .post(&call.path, &call.headers, call.body.clone())
        .await
    {
        Ok(resp) => {
            note_site_answer(state, key, &resp);
            (resp.into_response(), "site", reason)
        }
        Err(e) => (unreachable_response(state, &e.0), "error", reason),
    }
}

/// `info`: forwarded; the last good answer is replayed while the site is unreachable.
async fn info(state: &AppState, call: &Call) -> Outcome {
    let answer = state
        .site
        .post(&call.path, &call.headers, call.body.clone())
        .await;
    match answer {
        Ok(resp) if !resp.is_unavailable() => {
            note_site_answer(state, None, &resp);
            if resp.status.is_success() && resp.json().is_some_and(|b| !is_error_body(&b)) {
                *state.last_info.write().unwrap_or_else(|e| e.into_inner()) = Some(resp.clone());
            }
            (resp.into_response(), "site", "none")
        }
        other => {
            let last = state
                .last_info
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match (last, other) {
                (Some(last), _) => (last.into_response(), "cache", "site_unavailable"),
                (None, Ok(resp)) => {
                    note_site_answer(state, None, &resp);
                    (resp.into_response(), "site", "none")
                }
                (None, Err(e)) => (unreachable_response(state, &e.0), "error", "none"),
            }
        }
    }
}

/// `read`: from the cache when the whole request is answerable and the principal verified.
async fn read(state: &Arc<AppState>, call: &Call, req: &api3::Request) -> Outcome {
    let Some(key) = principal(&req.auth) else {
        return forward_reason(state, call, None, "no_credentials").await;
    };
    if !state.cache_for.as_ref().is_none_or(|c| c.allows(&req.auth)) {
        return forward_reason(state, call, Some(&key), "principal").await;
    }
    let plan = match plan(state, req) {
        Ok(p) => p,
        Err(pt) => {
            tracing::debug!(reason = %pt, "read passed through");
            return forward_reason(state, call, Some(&key), pt.reason.label()).await;
        }
    };
    let db = state.db().expect("a plan implies a database");
    let verdict = state.auth.verdict(&key);
    let site_down = !state.site_ok.load(Ordering::Relaxed);
    if verdict == Verdict::Fresh || (verdict == Verdict::Grace && site_down) {
        return cached(state, call, req, &key, db, &plan).await;
    }
    // Not verified (recently enough): the request itself verifies the credentials.
    match state
        .site
        .post(&call.path, &call.headers, call.body.clone())
        .await
    {
        Ok(resp) if !resp.is_unavailable() => {
            note_site_answer(state, Some(&key), &resp);
            (resp.into_response(), "site", "verify_auth")
        }
        answer => {
            if let Ok(resp) = &answer {
                note_site_answer(state, Some(&key), resp);
            } else {
                state.site_ok.store(false, Ordering::Relaxed);
            }
            if verdict == Verdict::Grace {
                return cached(state, call, req, &key, db, &plan).await;
            }
            match answer {
                Ok(resp) => (resp.into_response(), "site", "verify_auth"),
                Err(e) => (unreachable_response(state, &e.0), "error", "verify_auth"),
            }
        }
    }
}

fn plan(state: &AppState, req: &api3::Request) -> Result<sgcache::query::ReadPlan, PassThrough> {
    let Some(db) = state.db() else {
        return Err(sgcache::query::pass(Reason::Database, "no cache database"));
    };
    if !state.db_ok.load(Ordering::Relaxed) {
        return Err(sgcache::query::pass(
            Reason::Database,
            "cache database unavailable",
        ));
    }
    let read = ReadRequest::parse(&req.payload)
        .map_err(|e| sgcache::query::pass(Reason::Payload, e.message))?;
    plan_read(&read, &state.catalog(), db.dialect())
}

async fn cached(
    state: &Arc<AppState>,
    call: &Call,
    req: &api3::Request,
    key: &CredentialKey,
    db: &sgcache::sql::Db,
    plan: &sgcache::query::ReadPlan,
) -> Outcome {
    // Keyed by the payload only: every principal allowed here gets the same answer.
    let kept_key = state.results.enabled().then(|| req.payload.to_string());
    let wants_gzip = accepts_gzip(&call.headers);
    let hit = kept_key.as_deref().and_then(|k| state.results.get(k));
    if hit.is_some() {
        state.metrics.result_hits.inc();
    }
    let answer = match hit {
        Some(kept) => Ok(kept),
        None => run_and_keep(state, plan, db, kept_key, wants_gzip).await,
    };
    match answer {
        Ok(super::results::Kept { body, gz }) => {
            if state.verify_sample_rate > 0.0 && rand::random::<f64>() < state.verify_sample_rate {
                let results = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|mut v| v.get_mut("results").map(Value::take))
                    .unwrap_or(Value::Null);
                let check = super::verify::verify(
                    state.clone(),
                    call.path.clone(),
                    call.headers.clone(),
                    call.body.clone(),
                    results,
                );
                tokio::spawn(check.instrument(tracing::Span::current()));
            }
            // Gzipped already: the compression layer leaves answers with an encoding alone.
            if let Some(gz) = gz.filter(|_| wants_gzip) {
                let response = (
                    [
                        (
                            axum::http::header::CONTENT_TYPE,
                            "application/json; charset=utf-8",
                        ),
                        (axum::http::header::CONTENT_ENCODING, "gzip"),
                        (axum::http::header::VARY, "accept-encoding"),
                    ],
                    gz,
                )
                    .into_response();
                return (response, "cache", "none");
            }
            let response = (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/json; charset=utf-8",
                )],
                body,
            )
                .into_response();
            (response, "cache", "none")
        }
        Err(pt) => {
            if pt.reason == Reason::Database {
                state.db_ok.store(false, Ordering::Relaxed);
            }
            tracing::debug!(reason = %pt, "cached read fell back to the site");
            forward_reason(state, call, Some(key), pt.reason.label()).await
        }
    }
}

/// Any non-API3 request: streamed to the site and back untouched.
pub async fn stream(state: Arc<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let (resp, path) = match state
        .site
        .stream(parts.method, &pq, &parts.headers, body)
        .await
    {
        Ok(r) => (r, "site"),
        Err(e) => {
            state.metrics.site_error("unreachable");
            tracing::warn!(error = %e, "site unreachable for a pass-through request");
            let mut r = axum::http::Response::new(axum::body::Body::from(
                "The Shotgun site is unavailable through sgcache",
            ));
            *r.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
            (r, "error")
        }
    };
    state
        .metrics
        .observe("raw", path, "none", start.elapsed().as_secs_f64());
    resp
}

/// Whether the client accepts gzip (`accept-encoding: gzip`, not with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut it = part.split(';').map(str::trim);
            it.next().is_some_and(|e| e.eq_ignore_ascii_case("gzip"))
                && !it.any(|p| p.replace(' ', "") == "q=0")
        })
}

/// Longest wait for the cache database on a read before it goes to the site.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs a cached read's statement and keeps the answer in memory when it can be kept.
async fn run_and_keep(
    state: &AppState,
    plan: &sgcache::query::ReadPlan,
    db: &sgcache::sql::Db,
    kept_key: Option<String>,
    wants_gzip: bool,
) -> Result<super::results::Kept, PassThrough> {
    // Read before the query: a change while it runs must keep its answer from being kept.
    let at = kept_key.as_ref().and_then(|_| {
        let tables = super::results::quoted_identifiers(&plan.sql.text);
        state.results.snapshot(tables)
    });
    // The answer's JSON text is written straight from the rows (no intermediate value).
    // Bounded: over a dead connection a query may never return, and the site can answer.
    let body = tokio::time::timeout(READ_TIMEOUT, plan.run_response(db))
        .await
        .map_err(|_| {
            tracing::warn!(timeout = ?READ_TIMEOUT, "cached read timed out; passing through");
            sgcache::query::pass(
                Reason::Database,
                "the cache database did not answer in time",
            )
        })??;
    let body = Bytes::from(body);
    let mut gz = None;
    if let (Some(key), Some(at)) = (kept_key, at) {
        gz = wants_gzip.then(|| super::results::gzip(&body)).flatten();
        state.results.put(key, at, body.clone(), gz.clone());
    }
    Ok(super::results::Kept { body, gz })
}
