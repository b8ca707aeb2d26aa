//! The API3 endpoint: take the body in within limits, parse the envelope, dispatch on the
//! method, answer, record. Reads are [`super::read`], writes [`super::write`].

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use sgcache::api3::is_error_body;
use tracing::Instrument;

use super::answer::{unreachable_response, Outcome, Path};
use super::auth::CredentialKey;
use super::envelope::{Envelope, Method};
use super::AppState;

/// One API3 request as the handlers see it: the body is forwarded as it came (decoded when
/// it came gzipped).
pub struct Call {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub async fn handle(state: Arc<AppState>, req: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let span = tracing::info_span!("api3", request_id = %&request_id[..16], method = tracing::field::Empty);
    async move {
        let start = Instant::now();
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        let buffered = match state.intake.read(&headers, body).await {
            Ok(b) => b,
            Err(refusal) => {
                tracing::info!(reason = refusal.label(), "request body refused");
                return record(&state, "unparsed", refusal.outcome(), start);
            }
        };
        if buffered.decoded {
            headers.remove(header::CONTENT_ENCODING);
        }
        let call = Call {
            path: parts.uri.path().to_string(),
            headers,
            body: buffered.bytes.clone(),
        };
        let (method, outcome) = match Envelope::parse(&call.body) {
            // The site answers malformed requests with its own errors.
            Err(e) => {
                tracing::debug!(error = %e, "malformed API3 request; passing it through");
                (
                    "unparsed".to_string(),
                    forward(&state, &call, None, "malformed").await,
                )
            }
            Ok(env) => {
                tracing::Span::current().record("method", env.method_name.as_str());
                let method = super::metrics::method_label(&env.method_name);
                let outcome = match env.method {
                    Method::Read => super::event_log::counted(
                        &state,
                        &env,
                        super::read::read(&state, &call, &env).await,
                    ),
                    Method::Info => info(&state, &call).await,
                    Method::Write(_) => {
                        super::write::write(
                            &state,
                            &call.path,
                            &call.headers,
                            call.body.clone(),
                            &env,
                        )
                        .await
                    }
                    Method::Other => forward(&state, &call, env.principal().as_ref(), "none").await,
                };
                (method, outcome)
            }
        };
        drop(buffered); // its share of the body budget, now that the site has it
        record(&state, &method, outcome, start)
    }
    .instrument(span)
    .await
}

/// Counts the request and sets the path header.
fn record(state: &AppState, method: &str, outcome: Outcome, start: Instant) -> Response {
    let elapsed = start.elapsed().as_secs_f64();
    let (path, reason) = (outcome.path.label(), outcome.reason);
    state.metrics.observe(method, path, reason, elapsed);
    // Two decimals: `ms=0.63`, not `ms=0.6309440000000001`.
    tracing::info!(
        path,
        reason,
        ms = (elapsed * 100_000.0).round() / 100.0,
        "answered"
    );
    outcome.into_response()
}

/// Sends the request to the site as it came.
pub async fn forward(
    state: &AppState,
    call: &Call,
    key: Option<&CredentialKey>,
    reason: &'static str,
) -> Outcome {
    forward_seen(state, call, key, reason, |_| {}).await
}

/// Like [`forward`], showing the site's answer to `seen` before it goes to the client.
pub async fn forward_seen(
    state: &AppState,
    call: &Call,
    key: Option<&CredentialKey>,
    reason: &'static str,
    seen: impl FnOnce(&super::site::SiteResponse),
) -> Outcome {
    let sent = Instant::now();
    match state
        .site
        .post(&call.path, &call.headers, call.body.clone())
        .await
    {
        Ok(resp) => {
            state.note_site_answer(key, sent, &resp).await;
            seen(&resp);
            Outcome::new(resp.into_response(), Path::Site, reason)
        }
        Err(e) => {
            state.metrics.site_error("unreachable");
            state.recheck_site().await;
            Outcome::new(unreachable_response(&e.0), Path::Error, reason)
        }
    }
}

/// `info`: forwarded; the last good answer is replayed while the site is unreachable.
async fn info(state: &AppState, call: &Call) -> Outcome {
    let sent = Instant::now();
    let answer = state
        .site
        .post(&call.path, &call.headers, call.body.clone())
        .await;
    match answer {
        Ok(resp) if !resp.is_unavailable() => {
            state.note_site_answer(None, sent, &resp).await;
            if resp.status.is_success() && resp.json().is_some_and(|b| !is_error_body(&b)) {
                *state.last_info.write().unwrap_or_else(|e| e.into_inner()) = Some(resp.clone());
            }
            Outcome::new(resp.into_response(), Path::Site, "none")
        }
        other => {
            match &other {
                Ok(resp) => state.note_site_answer(None, sent, resp).await,
                Err(_) => {
                    state.metrics.site_error("unreachable");
                    state.recheck_site().await;
                }
            }
            let last = state
                .last_info
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match (last, other) {
                (Some(last), _) => {
                    Outcome::new(last.into_response(), Path::Cache, "site_unavailable")
                }
                (None, Ok(resp)) => Outcome::new(resp.into_response(), Path::Site, "none"),
                (None, Err(e)) => Outcome::new(unreachable_response(&e.0), Path::Error, "none"),
            }
        }
    }
}

/// Any non-API3 request: streamed to the site and back untouched. Its failures say nothing
/// about the site's health (an upload the site drops is the client's problem).
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
