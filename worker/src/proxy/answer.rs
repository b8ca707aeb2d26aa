//! What a handler answers: the response, the path it took and why (the metric labels), and
//! the helpers that build API3 answers. Shared by every handler of the proxy.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sgcache::api3::{Api3Error, ErrorCode};

use super::reason::Reason;

/// Response header naming the path a request took (`cache`, `site` or `error`), for operators.
pub const PATH_HEADER: &str = "x-sgcache-path";

/// Which way a request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// From the cache (or the last good `info`).
    Cache,
    /// By the site.
    Site,
    /// By the proxy with an error (the site unreachable, a refused request).
    Error,
}

impl Path {
    pub fn label(self) -> &'static str {
        match self {
            Path::Cache => "cache",
            Path::Site => "site",
            Path::Error => "error",
        }
    }
}

/// What a handler did: the response, the path taken and why (metric labels).
pub struct Outcome {
    pub response: Response,
    pub path: Path,
    /// Why a read passed through, or why the request was answered as it was.
    pub reason: Reason,
}

impl Outcome {
    pub fn new(response: Response, path: Path, reason: Reason) -> Outcome {
        Outcome {
            response,
            path,
            reason,
        }
    }

    /// The response with the path header set.
    pub fn into_response(self) -> Response {
        let mut response = self.response;
        response
            .headers_mut()
            .insert(PATH_HEADER, HeaderValue::from_static(self.path.label()));
        response
    }
}

/// An API3 error as the site sends them (HTTP 200, the client raises `Fault`).
pub fn error_response(e: &Api3Error) -> Response {
    json_response(&e.to_body())
}

/// An API3 error with an HTTP status (503 for "busy": clients and load balancers retry).
pub fn error_with_status(status: StatusCode, e: &Api3Error) -> Response {
    let mut r = error_response(e);
    *r.status_mut() = status;
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

pub fn json_response(v: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

/// The API3 error the client gets when the site cannot be reached.
pub fn unreachable_response(why: &str) -> Response {
    super::access_log::sampled_warn("site_unreachable", why);
    error_response(&Api3Error::new(
        ErrorCode::SiteUnavailable,
        format!("The Shotgun site is unavailable through sgcache: {why}"),
    ))
}

/// The API3 error (503, `Retry-After`) a request gets when this replica's share of the site
/// is taken and its queue full, or its wait too long.
pub fn busy_response() -> Response {
    error_with_status(
        StatusCode::SERVICE_UNAVAILABLE,
        &Api3Error::new(
            ErrorCode::SiteUnavailable,
            "sgcache is busy (too many requests waiting for the Shotgun site); try again",
        ),
    )
}

/// The API3 error a request gets when the proxy failed handling it (details in its log).
pub fn internal_error_response() -> Response {
    error_with_status(
        StatusCode::INTERNAL_SERVER_ERROR,
        &Api3Error::new(
            ErrorCode::Internal,
            "sgcache failed handling this request (see its log); try again",
        ),
    )
}
