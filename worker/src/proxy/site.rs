//! The upstream site: a pooled keep-alive HTTP client, forwarding with status and headers
//! preserved.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_ENCODING, VARY};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;

use super::gzip;

/// Headers that belong to one connection, not to the message (RFC 9110 7.6.1), plus the
/// ones the HTTP stack recomputes.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// A whole response from the site (API3 JSON answers are small enough to buffer, and the
/// proxy must look at them: errors, 102, write results).
#[derive(Clone, Debug)]
pub struct SiteResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body gzipped, made by the first client of a shared answer that asks for it and
    /// kept for the others (clones share it): a crowd joining one flight is compressed once.
    gz: Arc<OnceLock<Option<Bytes>>>,
}

impl SiteResponse {
    /// The site is down or overloaded (the client sees `ProtocolError` for these).
    pub fn is_unavailable(&self) -> bool {
        matches!(self.status.as_u16(), 502..=504)
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The answer for a client that asks for gzip (`wants_gzip`) or not: a JSON answer is
    /// compressed here, once for every client sharing it, rather than by the compression
    /// layer once per client (which leaves answers that carry an encoding alone).
    pub fn for_client(mut self, wants_gzip: bool) -> Response {
        if wants_gzip
            && gzip::compressible(&self.headers)
            && !self.headers.contains_key(CONTENT_ENCODING)
        {
            if let Some(gz) = self.gz.get_or_init(|| gzip::gzip(&self.body)).clone() {
                let h = &mut self.headers;
                h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                h.append(VARY, HeaderValue::from_static("accept-encoding"));
                self.body = gz;
            }
        }
        self.into_response()
    }
}

impl IntoResponse for SiteResponse {
    fn into_response(self) -> Response {
        let mut r = Response::new(Body::from(self.body));
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers;
        r
    }
}

/// The site could not be reached, or did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

pub struct Site {
    base: String,
    /// Decompresses answers so the proxy can read them.
    client: reqwest::Client,
    /// Leaves bodies untouched, for streamed pass-through of non-JSON endpoints.
    raw: reqwest::Client,
}

fn copy_headers(from: &HeaderMap, drop: &[&str]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in from {
        let name = k.as_str();
        if HOP_BY_HOP.contains(&name) || drop.contains(&name) {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

impl Site {
    pub fn new(base: &str, timeout: Duration) -> reqwest::Result<Site> {
        let build = |gzip: bool| {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .pool_idle_timeout(Duration::from_secs(90))
                .tcp_keepalive(Duration::from_secs(60))
                .gzip(gzip)
                .build()
        };
        Ok(Site {
            base: base.trim_end_matches('/').to_string(),
            client: build(true)?,
            raw: build(false)?,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// POSTs an API3 body to the same path on the site.
    pub async fn post(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<SiteResponse, Unreachable> {
        // accept-encoding is negotiated by our client, which then decompresses.
        let headers = copy_headers(headers, &["accept-encoding"]);
        let resp = self
            .client
            .post(format!("{}{}", self.base, path))
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(describe)?;
        let status = resp.status();
        let headers = copy_headers(resp.headers(), &["content-encoding"]);
        let body = resp.bytes().await.map_err(describe)?;
        Ok(SiteResponse {
            status,
            headers,
            body,
            gz: Arc::default(),
        })
    }

    /// Streams any other request to the site and its answer back, bodies untouched.
    pub async fn stream(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, Unreachable> {
        let stream = body.into_data_stream();
        let resp = self
            .raw
            .request(method, format!("{}{}", self.base, path_and_query))
            .headers(copy_headers(headers, &[]))
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .map_err(describe)?;
        let status = resp.status();
        let headers = copy_headers(resp.headers(), &[]);
        let mut out = Response::new(Body::from_stream(
            resp.bytes_stream().map_err(std::io::Error::other),
        ));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

fn describe(e: reqwest::Error) -> Unreachable {
    // The URL may carry basic-auth credentials: never include it.
    let e = e.without_url();
    let what = if e.is_timeout() {
        "the site did not answer in time"
    } else if e.is_connect() {
        "the site could not be reached"
    } else {
        "the connection to the site failed"
    };
    Unreachable(format!("{what}: {e}"))
}

/// `HeaderName` for a static lowercase name (used by tests and the handler).
pub fn header(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::CONTENT_TYPE;

    fn answer(content_type: &'static str, body: &'static [u8]) -> SiteResponse {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        SiteResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(body),
            gz: Arc::default(),
        }
    }

    async fn body_of(r: Response) -> (HeaderMap, Bytes) {
        let (parts, body) = r.into_parts();
        (
            parts.headers,
            axum::body::to_bytes(body, usize::MAX).await.unwrap(),
        )
    }

    #[tokio::test]
    async fn an_answer_shared_by_many_clients_is_compressed_once() {
        let shared = answer("application/json; charset=utf-8", b"{\"results\":[1,2,3]}");
        let (h1, first) = body_of(shared.clone().for_client(true)).await;
        let (h2, second) = body_of(shared.clone().for_client(true)).await;
        assert_eq!(h1[CONTENT_ENCODING], "gzip");
        assert_eq!(h2[VARY], "accept-encoding");
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "the second client got the first one's compressed copy"
        );
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&first[..]), &mut text)
            .unwrap();
        assert_eq!(text, "{\"results\":[1,2,3]}");
        let (h3, plain) = body_of(shared.for_client(false)).await;
        assert!(!h3.contains_key(CONTENT_ENCODING));
        assert_eq!(&plain[..], b"{\"results\":[1,2,3]}");
    }

    #[tokio::test]
    async fn only_json_without_an_encoding_is_compressed() {
        let (h, body) = body_of(answer("text/html", b"<p>busy</p>").for_client(true)).await;
        assert!(!h.contains_key(CONTENT_ENCODING));
        assert_eq!(&body[..], b"<p>busy</p>");
        let mut encoded = answer("application/json", b"already");
        encoded
            .headers
            .insert(CONTENT_ENCODING, HeaderValue::from_static("br"));
        let (h, body) = body_of(encoded.for_client(true)).await;
        assert_eq!(h[CONTENT_ENCODING], "br");
        assert_eq!(&body[..], b"already");
    }
}
