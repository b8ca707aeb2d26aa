//! The API3 endpoint: take the body in within limits, parse the envelope, dispatch on the
//! method, answer, record. Reads are [`super::read`], writes [`super::write`].

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use sgcache::api3::is_error_body;
use tracing::Instrument;

use super::answer::{busy_response, internal_error_response, unreachable_response, Outcome, Path};
use super::auth::CredentialKey;
use super::envelope::{Envelope, Method};
use super::gzip;
use super::reason::Reason;
use super::site::SiteResponse;
use super::upstream::{Failure, Kind, SiteCall};
use super::AppState;

/// One API3 request as the handlers see it: the body is forwarded as it came (decoded when
/// it came gzipped).
pub struct Call {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub async fn handle(state: Arc<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    let buffered = match state.intake.read(&headers, body).await {
        Ok(b) => b,
        Err(refusal) => return record(&state, "unparsed", refusal.outcome(), start),
    };
    if buffered.decoded {
        headers.remove(header::CONTENT_ENCODING);
    }
    let call = Call {
        path: parts.uri.path().to_string(),
        headers,
        body: buffered.bytes.clone(),
    };
    let envelope = Envelope::parse(&call.body);
    // The metrics' label, not the name as sent: a client's junk never reaches a log line.
    let method = envelope.as_ref().map_or_else(
        |_| "unparsed".to_string(),
        |e| super::metrics::method_label(&e.method_name),
    );
    async {
        let outcome = match envelope {
            // The site answers malformed requests with its own errors.
            Err(e) => {
                tracing::debug!(error = %e, "malformed API3 request; passing it through");
                send(&state, &call, Kind::Other, None, Reason::Malformed, |_| {}).await
            }
            Ok(env) => dispatch(&state, &call, &env).await,
        };
        drop(buffered); // its share of the body budget, now that the site has it
        record(&state, &method, outcome, start)
    }
    .instrument(request_span(&method))
    .await
}

/// The request's span, opened once with all its fields: the log layer formats them when the
/// span opens, printed or not, and recording one later makes the JSON layer parse and write
/// them all again (the span with a hex id and the method recorded later took 4 % of a
/// passed-through storm's CPU; BENCHMARKS.md). The id is 53 random bits from the thread's
/// generator, a JSON number every log pipeline reads exactly (a v4 UUID cost a system call
/// per request).
fn request_span(method: &str) -> tracing::Span {
    let request_id = rand::random::<u64>() >> 11;
    tracing::info_span!("api3", request_id, method)
}

/// Answers a parsed request by its method.
async fn dispatch(state: &Arc<AppState>, call: &Call, env: &Envelope<'_>) -> Outcome {
    match env.method {
        Method::Read => super::event_log::counted(
            &state.telemetry.metrics,
            env,
            super::read::read(state, call, env).await,
        ),
        Method::Info => info(state, call).await,
        Method::Write(_) => {
            super::write::write(state, &call.path, &call.headers, call.body.clone(), env).await
        }
        Method::Other => {
            let kind = if super::envelope::is_read_only(&env.method_name) {
                Kind::Read
            } else {
                Kind::Other
            };
            let key = env.principal();
            send(state, call, kind, key.as_ref(), Reason::None, |_| {}).await
        }
    }
}

/// Counts the request, logs it as `workers.proxy.accessLog` says, sets the path header.
fn record(state: &AppState, method: &str, outcome: Outcome, start: Instant) -> Response {
    let elapsed = start.elapsed();
    let (path, reason) = (outcome.path.label(), outcome.reason);
    state
        .telemetry
        .metrics
        .observe(method, path, reason, elapsed.as_secs_f64());
    super::access_log::answered(
        state.telemetry.access_log,
        method,
        outcome.path,
        reason,
        elapsed,
    );
    outcome.into_response()
}

/// Sends a client's read to the site as it came (or joins an identical one in flight),
/// showing the site's answer to `seen` before it goes to the client; only the request that
/// got it from the site sees it (not those that shared it).
pub async fn forward_seen(
    state: &AppState,
    call: &Call,
    key: Option<&CredentialKey>,
    reason: Reason,
    seen: impl FnOnce(&SiteResponse),
) -> Outcome {
    send(state, call, Kind::Read, key, reason, seen).await
}

/// Sends a client's request of any kind to the site; the outcome the client gets.
pub async fn send(
    state: &AppState,
    call: &Call,
    kind: Kind,
    key: Option<&CredentialKey>,
    reason: Reason,
    seen: impl FnOnce(&SiteResponse),
) -> Outcome {
    let answer = state.upstream.send(site_call(call, kind, key)).await;
    match answer {
        Ok(answer) => {
            if !answer.shared {
                seen(&answer.response);
            }
            let wants_gzip = gzip::accepted(&call.headers);
            Outcome::new(answer.response.for_client(wants_gzip), Path::Site, reason)
        }
        Err(failure) => failed(failure, reason),
    }
}

/// The request as the upstream takes it.
pub fn site_call<'a>(call: &'a Call, kind: Kind, key: Option<&CredentialKey>) -> SiteCall<'a> {
    SiteCall {
        kind,
        principal: key.copied(),
        path: &call.path,
        headers: &call.headers,
        body: call.body.clone(),
    }
}

/// What the client gets when the site gave no answer.
pub fn failed(failure: Failure, reason: Reason) -> Outcome {
    match failure {
        Failure::Unreachable(why) => Outcome::new(unreachable_response(&why), Path::Error, reason),
        Failure::Busy(busy) => Outcome::new(busy_response(), Path::Error, Reason::Busy(busy)),
        Failure::Panicked => Outcome::new(internal_error_response(), Path::Error, Reason::Panic),
    }
}

/// `info`: forwarded (identical ones in flight share one request); the last good answer is
/// replayed while the site is unreachable.
async fn info(state: &AppState, call: &Call) -> Outcome {
    let wants_gzip = gzip::accepted(&call.headers);
    let answer = state.upstream.send(site_call(call, Kind::Read, None)).await;
    match answer {
        Ok(a) if !a.response.is_unavailable() => {
            let resp = a.response;
            if !a.shared
                && resp.status.is_success()
                && resp.json().is_some_and(|b| !is_error_body(&b))
            {
                *state
                    .upstream
                    .last_info
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = Some(resp.clone());
            }
            Outcome::new(resp.for_client(wants_gzip), Path::Site, Reason::None)
        }
        other => {
            let last = state
                .upstream
                .last_info
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match (last, other) {
                (Some(last), _) => {
                    let replayed = last.for_client(wants_gzip);
                    Outcome::new(replayed, Path::Cache, Reason::SiteUnavailable)
                }
                (None, Ok(a)) => {
                    Outcome::new(a.response.for_client(wants_gzip), Path::Site, Reason::None)
                }
                (None, Err(failure)) => failed(failure, Reason::None),
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
        .upstream
        .stream(parts.method, &pq, &parts.headers, body)
        .await
    {
        Ok(r) => (r, "site"),
        Err(e) => {
            super::access_log::sampled_warn("stream_unreachable", &e.0);
            let mut r = axum::http::Response::new(axum::body::Body::from(
                "The Shotgun site is unavailable through sgcache",
            ));
            *r.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
            (r, "error")
        }
    };
    state
        .telemetry
        .metrics
        .observe("raw", path, Reason::None, start.elapsed().as_secs_f64());
    resp
}
