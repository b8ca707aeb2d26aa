//! Taking requests in within limits, so no client can exhaust the proxy's memory or workers.
//!
//! * At most `maxInFlight` requests are handled at once; past it a request gets a 503 API3
//!   error at once instead of queueing without bound.
//! * An API3 body is read only up to `maxBodyMb` (checked on `content-length` before reading
//!   and on every chunk while reading, and on the decoded size of a gzip body, so a gzip bomb
//!   stops at the limit), within `bodyReadTimeout`, and counts against a budget of
//!   `bufferedBodiesMb` over all requests; past the budget a request gets a 503 API3 error.
//! * Everything else (uploads, downloads) is streamed by [`super::api3::stream`], never
//!   buffered here.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use bytes::BytesMut;
use futures::StreamExt;
use sgcache::api3::{Api3Error, ErrorCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::answer::{error_response, error_with_status, Outcome, Path};
use super::reason::Reason;

/// How much of a refused body is read and thrown away before the refusal is sent: a client
/// (`shotgun_api3` included) sends its whole body before it reads the answer, and closing a
/// connection with unread data resets it and loses the answer. Past this much the connection
/// is cut and the client sees a connection error instead. Costs no memory.
const DRAIN_LIMIT: usize = 64 << 20;

/// The limits of [`Intake`], from `workers.proxy.limits`.
#[derive(Clone, Debug)]
pub struct IntakeLimits {
    pub max_body: usize,
    pub buffered_bodies: usize,
    pub max_in_flight: usize,
    pub body_read_timeout: Duration,
}

impl Default for IntakeLimits {
    fn default() -> Self {
        let spec = sgcache::spec::ProxyLimitsSpec::default();
        IntakeLimits::from_spec(&spec)
    }
}

impl IntakeLimits {
    pub fn from_spec(spec: &sgcache::spec::ProxyLimitsSpec) -> Self {
        IntakeLimits {
            max_body: spec.max_body_mb as usize * 1024 * 1024,
            buffered_bodies: spec.buffered_bodies_mb as usize * 1024 * 1024,
            max_in_flight: spec.max_in_flight as usize,
            body_read_timeout: spec.body_read_timeout.duration(),
        }
    }
}

/// Why a request was not taken in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The body is over `maxBodyMb` (as sent, or decoded).
    TooLarge { limit: usize },
    /// Too many requests, or too many body bytes, at once.
    Busy,
    /// The body did not arrive within `bodyReadTimeout`.
    Timeout,
    /// The body could not be read or decoded.
    Unreadable(&'static str),
}

impl Refusal {
    /// The metric reason label.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::TooLarge { .. } => "body_too_large",
            Refusal::Busy => "busy",
            Refusal::Timeout => "body_timeout",
            Refusal::Unreadable(_) => "body_unreadable",
        }
    }

    /// The API3 error the client gets.
    pub fn outcome(&self) -> Outcome {
        let response = match self {
            Refusal::TooLarge { limit } => error_response(&Api3Error::bad_request(format!(
                "The request body is larger than sgcache accepts ({} MiB, workers.proxy.limits.maxBodyMb)",
                limit / (1024 * 1024)
            ))),
            Refusal::Busy => error_with_status(
                StatusCode::SERVICE_UNAVAILABLE,
                &Api3Error::new(
                    ErrorCode::SiteUnavailable,
                    "sgcache is busy (too many requests at once); try again",
                ),
            ),
            Refusal::Timeout => error_response(&Api3Error::bad_request(
                "The request body did not arrive in time (workers.proxy.limits.bodyReadTimeout)",
            )),
            Refusal::Unreadable(why) => error_response(&Api3Error::bad_request(format!(
                "The request body could not be read: {why}"
            ))),
        };
        Outcome::new(response, Path::Error, Reason::Refused(*self))
    }
}

/// A body read whole, with its share of the budget (released when dropped).
pub struct Buffered {
    pub bytes: Bytes,
    /// The body was gzip-encoded and `bytes` is decoded (forward without the encoding).
    pub decoded: bool,
    _budget: Option<OwnedSemaphorePermit>,
}

pub struct Intake {
    limits: IntakeLimits,
    /// One permit per request in flight.
    in_flight: Arc<Semaphore>,
    /// One permit per buffered body byte.
    budget: Arc<Semaphore>,
}

impl Intake {
    pub fn new(limits: IntakeLimits) -> Intake {
        // Semaphore permits are counted in u32 (tokio): a budget beyond 4 GiB is capped there.
        let budget = limits
            .buffered_bodies
            .min(u32::MAX as usize)
            // A body of the largest size read in several chunks is briefly held twice (joined).
            .max(2 * limits.max_body);
        Intake {
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            budget: Arc::new(Semaphore::new(budget.min(u32::MAX as usize))),
            limits,
        }
    }

    pub fn limits(&self) -> &IntakeLimits {
        &self.limits
    }

    /// A slot for one request, or `Busy`.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Busy)
    }

    /// Takes `n` more bytes of the budget into `held`.
    fn reserve(&self, held: &mut Option<OwnedSemaphorePermit>, n: usize) -> Result<(), Refusal> {
        if n == 0 {
            return Ok(());
        }
        let n = u32::try_from(n).map_err(|_| Refusal::Busy)?;
        let more = self
            .budget
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| Refusal::Busy)?;
        match held {
            Some(p) => p.merge(more),
            None => *held = Some(more),
        }
        Ok(())
    }

    /// Reads an API3 body within the limits (see the module comment).
    pub async fn read(&self, headers: &HeaderMap, body: Body) -> Result<Buffered, Refusal> {
        let max = self.limits.max_body;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let deadline = tokio::time::Instant::now() + self.limits.body_read_timeout;
        let mut stream = body.into_data_stream();
        if declared.is_some_and(|n| n > max) {
            drain(&mut stream, deadline).await;
            return Err(Refusal::TooLarge { limit: max });
        }
        let encoding = content_encoding(headers)?;
        let mut held = None;
        if let Some(n) = declared {
            self.reserve(&mut held, n)?;
        }
        let reserved = declared.unwrap_or(0);
        // Chunks are kept as they came and joined once at the end: no doubling buffer whose
        // discarded copies would add up to twice the body.
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut len = 0;
        let read = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|_| Refusal::Unreadable("the connection failed"))?;
                if len + chunk.len() > max {
                    return Err(Refusal::TooLarge { limit: max });
                }
                let beyond = (len + chunk.len()).saturating_sub(reserved.max(len));
                self.reserve(&mut held, beyond)?;
                len += chunk.len();
                chunks.push(chunk);
            }
            Ok(())
        };
        match tokio::time::timeout_at(deadline, read).await {
            Err(_) => return Err(Refusal::Timeout),
            Ok(Err(e @ Refusal::TooLarge { .. })) => {
                drop((chunks, held));
                drain(&mut stream, deadline).await;
                return Err(e);
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(())) => {}
        }
        // Joining several chunks copies the body once more: counted while both exist.
        let copy = if chunks.len() > 1 { len } else { 0 };
        self.reserve(&mut held, copy)?;
        let bytes = join(chunks, len);
        if let Some(p) = held.as_mut().filter(|_| copy > 0) {
            drop(p.split(copy));
        }
        if !encoding {
            return Ok(Buffered {
                bytes,
                decoded: false,
                _budget: held,
            });
        }
        let decoded = gunzip(&bytes, max)?;
        self.reserve(&mut held, decoded.len())?;
        Ok(Buffered {
            bytes: Bytes::from(decoded),
            decoded: true,
            _budget: held,
        })
    }
}

/// One buffer of the body's chunks (the chunk itself when there is one).
fn join(mut chunks: Vec<Bytes>, len: usize) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut buf = BytesMut::with_capacity(len);
    for c in chunks {
        buf.extend_from_slice(&c);
    }
    buf.freeze()
}

/// Reads and discards the rest of a refused body, up to [`DRAIN_LIMIT`] bytes and `deadline`.
async fn drain(stream: &mut axum::body::BodyDataStream, deadline: tokio::time::Instant) {
    let discard = async {
        let mut seen = 0;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, discard).await;
}

/// Whether the body is gzip-encoded (`Ok(false)`: not encoded); other encodings are refused.
fn content_encoding(headers: &HeaderMap) -> Result<bool, Refusal> {
    let Some(v) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    match v.to_str().map(|s| s.trim().to_ascii_lowercase()) {
        Ok(s) if s.is_empty() || s == "identity" => Ok(false),
        Ok(s) if s == "gzip" || s == "x-gzip" => Ok(true),
        _ => Err(Refusal::Unreadable("only gzip request bodies are accepted")),
    }
}

/// Decodes a gzip body, stopping past `max` decoded bytes (a gzip bomb costs `max`, no more).
fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| Refusal::Unreadable("the body is not valid gzip"))?;
    if out.len() > max {
        return Err(Refusal::TooLarge { limit: max });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn intake(max_body: usize, buffered: usize) -> Intake {
        Intake::new(IntakeLimits {
            max_body,
            buffered_bodies: buffered,
            max_in_flight: 2,
            body_read_timeout: Duration::from_secs(5),
        })
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_declared_streamed_or_decoded() {
        let i = intake(1000, 10_000);
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, "1001".parse().unwrap());
        assert_eq!(
            i.read(&h, Body::from(vec![b' '; 1001])).await.err(),
            Some(Refusal::TooLarge { limit: 1000 })
        );
        // No length given: counted while streaming.
        let chunks = futures::stream::iter(
            (0..20).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 100]))),
        );
        assert_eq!(
            i.read(&HeaderMap::new(), Body::from_stream(chunks))
                .await
                .err(),
            Some(Refusal::TooLarge { limit: 1000 })
        );
        // A gzip bomb: 50 bytes that decode to a megabyte.
        let bomb = gz(&vec![b'0'; 1 << 20]);
        assert!(bomb.len() < 2000);
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        let i = intake(4000, 10_000);
        assert_eq!(
            i.read(&h, Body::from(bomb)).await.err(),
            Some(Refusal::TooLarge { limit: 4000 })
        );
        let ok = i.read(&h, Body::from(gz(b"{\"a\": 1}"))).await.unwrap();
        assert_eq!((&ok.bytes[..], ok.decoded), (&b"{\"a\": 1}"[..], true));
        h.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        assert!(matches!(
            i.read(&h, Body::from("x")).await,
            Err(Refusal::Unreadable(_))
        ));
    }

    #[tokio::test]
    async fn the_budget_and_the_in_flight_limit_refuse_when_spent_and_recover() {
        // The budget is at least twice the largest body (a streamed one is joined).
        let i = intake(1000, 1500);
        let body = || Body::from(vec![b' '; 1000]);
        let (a, b) = (
            i.read(&HeaderMap::new(), body()).await.unwrap(),
            i.read(&HeaderMap::new(), body()).await.unwrap(),
        );
        assert_eq!(
            i.read(&HeaderMap::new(), body()).await.err(),
            Some(Refusal::Busy)
        );
        drop(b);
        // Two chunks: joining them holds the body twice, which the budget must count.
        let chunked = || {
            let chunks = vec![
                Ok::<_, std::io::Error>(Bytes::from(vec![b'a'; 500])),
                Ok(Bytes::from(vec![b'b'; 500])),
            ];
            Body::from_stream(futures::stream::iter(chunks))
        };
        assert_eq!(
            i.read(&HeaderMap::new(), chunked()).await.err(),
            Some(Refusal::Busy)
        );
        drop(a);
        let joined = i.read(&HeaderMap::new(), chunked()).await.unwrap();
        assert_eq!(joined.bytes.len(), 1000);
        // The copy's share was given back: another body of 1000 fits beside it.
        assert!(i.read(&HeaderMap::new(), body()).await.is_ok());
        drop(joined);
        assert!(i.read(&HeaderMap::new(), body()).await.is_ok());
        let (p1, p2) = (i.admit().unwrap(), i.admit().unwrap());
        assert_eq!(i.admit().err(), Some(Refusal::Busy));
        drop((p1, p2));
        assert!(i.admit().is_ok());
    }
}
