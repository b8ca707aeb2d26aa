//! The one way to the site. Every request the proxy sends there (a client's read or write,
//! `info`, a trust check, a verification, a refresh, the health probe) goes through
//! [`Upstream::send`], told what kind of request it is and for whom, so the bookkeeping lives
//! here once:
//!
//! * identical reads in flight are sent once and their answer given to every waiter
//!   ([`flights`]); the key holds the whole body (credentials included, so nobody gets an
//!   answer fetched with someone else's rights) and the principal's write mark, so a read
//!   from a principal that just wrote never joins a flight that started before the write;
//! * at most `maxConcurrent` requests are at the site at once, the rest wait in a queue fair
//!   across principals ([`gate`]);
//! * what an answer says about the site (up, its clock) and about the credentials (accepted,
//!   refused with 102), and the metrics.

pub mod flights;
pub mod gate;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use lru::LruCache;
use serde_json::Value;
use sgcache::api3::is_error_body;
use sha2::{Digest, Sha256};

use super::auth::{AuthCache, CredentialKey};
use super::metrics::UpstreamMetrics;
use super::site::{Site, SiteResponse, Unreachable};
use super::site_clock::SiteClock;
use super::site_health::{SiteHealth, PROBE_TIMEOUT};
use flights::{FlightKey, Flights};
use gate::{Busy, Gate, GateLimits, Lane};

/// Principals whose last write is remembered for read-your-writes; older ones fall back to
/// the newest mark forgotten (conservative: their reads start new flights).
const WRITE_MARKS: usize = 10_000;

/// The body of the health probe: `info` without credentials.
const PROBE_BODY: &str = r#"{"method_name":"info","params":[]}"#;

/// What a request to the site is, which decides how it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A client's read (`read`, `summarize`, schema reads, `info`, …): identical ones in
    /// flight share one request.
    Read,
    /// A client's write: never shared; marks the principal for read-your-writes.
    Write,
    /// Any other client request (an unknown method, a body the proxy cannot parse): sent as
    /// it came, never shared.
    Other,
    /// The proxy's own background request (trust check, verification, refresh): queued in a
    /// lane of its own.
    Background,
    /// The health probe (sent by [`Upstream::recheck`] only).
    Probe,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Other => "other",
            Kind::Background => "background",
            Kind::Probe => "probe",
        }
    }
}

/// One request to the site.
pub struct SiteCall<'a> {
    pub kind: Kind,
    /// Whose credentials the body carries, when the proxy recognises them.
    pub principal: Option<CredentialKey>,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

/// Why the site gave no answer.
#[derive(Clone, Debug)]
pub enum Failure {
    /// It could not be reached or did not answer in time.
    Unreachable(String),
    /// This replica's share of the site was taken and the queue full, or the wait too long.
    Busy(Busy),
    /// The proxy failed while sending it (a bug; counted and logged).
    Panicked,
}

/// The site's answer, and whether it was shared with a request already in flight.
pub struct Answer {
    pub response: SiteResponse,
    pub shared: bool,
}

pub struct Upstream {
    site: Site,
    pub health: SiteHealth,
    pub clock: SiteClock,
    /// What the site said about each principal's credentials.
    pub auth: AuthCache,
    gate: Gate,
    flights: Flights<Result<SiteResponse, Failure>>,
    writes: WriteMarks,
    pub metrics: UpstreamMetrics,
    /// The last good `info` answer, replayed while the site is unreachable.
    pub last_info: std::sync::RwLock<Option<SiteResponse>>,
}

impl Upstream {
    pub fn new(
        site: Site,
        auth: AuthCache,
        limits: GateLimits,
        metrics: UpstreamMetrics,
    ) -> Arc<Upstream> {
        Arc::new(Upstream {
            site,
            health: SiteHealth::default(),
            clock: SiteClock::default(),
            auth,
            gate: Gate::new(limits),
            flights: Flights::default(),
            writes: WriteMarks::default(),
            metrics,
            last_info: Default::default(),
        })
    }

    pub fn base(&self) -> &str {
        self.site.base()
    }

    /// Sends `call` (or joins an identical read in flight) and does the bookkeeping.
    pub async fn send(self: &Arc<Self>, call: SiteCall<'_>) -> Result<Answer, Failure> {
        let answer = if call.kind == Kind::Read {
            self.send_shared(call).await
        } else {
            let kind = call.kind;
            let principal = call.principal;
            let result = self.exchange(call).await;
            if kind == Kind::Write {
                // Whatever came back, the write may have reached the site.
                self.writes.mark(principal.as_ref());
            }
            result.map(|response| Answer {
                response,
                shared: false,
            })
        };
        if matches!(answer, Err(Failure::Panicked)) {
            self.metrics.panics.inc();
        }
        answer
    }

    async fn send_shared(self: &Arc<Self>, call: SiteCall<'_>) -> Result<Answer, Failure> {
        let key = self.flight_key(&call);
        let owned = OwnedCall::from(call);
        let up = self.clone();
        let (result, shared) = self
            .flights
            .run(
                key,
                move || async move { up.exchange(owned.as_call()).await },
            )
            .await;
        if shared {
            self.metrics.coalesced("site");
        }
        let response = result.map_err(|_| Failure::Panicked)??;
        Ok(Answer { response, shared })
    }

    /// What makes two reads the same: path, body (credentials included) and the principal's
    /// last write.
    fn flight_key(&self, call: &SiteCall<'_>) -> FlightKey {
        let mut h = Sha256::new();
        h.update(b"site\0");
        h.update(call.path.as_bytes());
        h.update(b"\0");
        h.update(self.writes.mark_of(call.principal.as_ref()).to_le_bytes());
        h.update(&call.body);
        h.finalize().into()
    }

    /// One request to the site, within the gate, with its bookkeeping.
    async fn exchange(&self, call: SiteCall<'_>) -> Result<SiteResponse, Failure> {
        let turn = self.take_turn(call.kind, call.principal.as_ref()).await?;
        self.metrics.sent(call.kind);
        self.publish_load();
        let sent = Instant::now();
        let result = self.site.post(call.path, call.headers, call.body).await;
        drop(turn);
        self.publish_load();
        self.note(call.principal.as_ref(), sent, &result).await;
        result.map_err(|Unreachable(why)| Failure::Unreachable(why))
    }

    async fn take_turn(
        &self,
        kind: Kind,
        principal: Option<&CredentialKey>,
    ) -> Result<gate::Turn, Failure> {
        let lane: Lane = match (kind, principal) {
            (Kind::Background, _) => gate::BACKGROUND,
            (_, Some(p)) => *p,
            (_, None) => gate::ANONYMOUS,
        };
        let turn = self.gate.enter(lane).await;
        self.publish_load();
        match turn {
            Ok(turn) => {
                self.metrics.queue_wait.observe(turn.waited.as_secs_f64());
                Ok(turn)
            }
            Err(busy) => {
                self.metrics.busy(busy);
                Err(Failure::Busy(busy))
            }
        }
    }

    fn publish_load(&self) {
        let (running, queued) = self.gate.load();
        self.metrics.in_flight.set(running as i64);
        self.metrics.queued.set(queued as i64);
    }

    /// What an answer (or its absence) says about the site and the credentials.
    async fn note(
        &self,
        principal: Option<&CredentialKey>,
        sent: Instant,
        result: &Result<SiteResponse, Unreachable>,
    ) {
        let resp = match result {
            Ok(resp) if !resp.is_unavailable() => resp,
            failed => {
                self.metrics.site_error(match failed {
                    Ok(_) => "status_5xx",
                    Err(_) => "unreachable",
                });
                self.recheck().await;
                return;
            }
        };
        self.health.answered();
        self.clock.observe(&resp.headers, chrono::Utc::now());
        let (Some(key), true) = (principal, resp.status.is_success()) else {
            return;
        };
        let Some(body) = resp.json() else { return };
        if !is_error_body(&body) {
            self.auth.accepted(*key, sent);
        } else if body.get("error_code").and_then(Value::as_i64) == Some(102) {
            self.metrics.site_error("auth");
            self.auth.rejected(key);
        }
    }

    /// A request to the site failed: the proxy's own probe says whether the site is up.
    pub async fn recheck(&self) -> bool {
        self.health.recheck(self.probe()).await
    }

    /// One `info` call without credentials: up when the site answers with anything but
    /// 502–504. Sent past the queue (it must see a saturated site), and its failure asks for
    /// no further probe.
    async fn probe(&self) -> bool {
        self.metrics.sent(Kind::Probe);
        let body = Bytes::from_static(PROBE_BODY.as_bytes());
        let headers = HeaderMap::new();
        let sent = self.site.post("/api3/json", &headers, body);
        match tokio::time::timeout(PROBE_TIMEOUT, sent).await {
            Ok(Ok(resp)) if !resp.is_unavailable() => {
                self.clock.observe(&resp.headers, chrono::Utc::now());
                true
            }
            Ok(Ok(_)) => {
                self.metrics.site_error("status_5xx");
                false
            }
            _ => {
                self.metrics.site_error("unreachable");
                false
            }
        }
    }

    /// Streams a non-API3 request (an upload, a download) to the site: not queued, so a long
    /// transfer never holds a turn.
    pub async fn stream(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, Unreachable> {
        self.metrics.sent_stream();
        let result = self
            .site
            .stream(method, path_and_query, headers, body)
            .await;
        if result.is_err() {
            // Says nothing about the site's health (an upload the site drops is the client's
            // problem), but it is a failed call to the site.
            self.metrics.site_error("unreachable");
        }
        result
    }
}

/// A [`SiteCall`] that owns its parts, for a flight's own task.
struct OwnedCall {
    kind: Kind,
    principal: Option<CredentialKey>,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl From<SiteCall<'_>> for OwnedCall {
    fn from(c: SiteCall<'_>) -> Self {
        OwnedCall {
            kind: c.kind,
            principal: c.principal,
            path: c.path.to_string(),
            headers: c.headers.clone(),
            body: c.body,
        }
    }
}

impl OwnedCall {
    fn as_call(&self) -> SiteCall<'_> {
        SiteCall {
            kind: self.kind,
            principal: self.principal,
            path: &self.path,
            headers: &self.headers,
            body: self.body.clone(),
        }
    }
}

/// For read-your-writes: a number per principal that moves past every flight started before
/// the principal's last write, so its reads after the write never join one.
struct WriteMarks {
    next: AtomicU64,
    marks: Mutex<(LruCache<CredentialKey, u64>, u64)>,
}

impl Default for WriteMarks {
    fn default() -> Self {
        WriteMarks {
            next: AtomicU64::new(1),
            marks: Mutex::new((
                LruCache::new(NonZeroUsize::new(WRITE_MARKS).expect("non-zero")),
                0,
            )),
        }
    }
}

impl WriteMarks {
    fn lock(&self) -> std::sync::MutexGuard<'_, (LruCache<CredentialKey, u64>, u64)> {
        self.marks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark(&self, principal: Option<&CredentialKey>) {
        let key = principal.copied().unwrap_or(gate::ANONYMOUS);
        let mark = self.next.fetch_add(1, Ordering::Relaxed);
        let mut marks = self.lock();
        if let Some((_, forgotten)) = marks.0.push(key, mark).filter(|(k, _)| *k != key) {
            // A principal forgotten takes the newest mark forgotten, never an older one.
            marks.1 = marks.1.max(forgotten);
        }
    }

    fn mark_of(&self, principal: Option<&CredentialKey>) -> u64 {
        let key = principal.copied().unwrap_or(gate::ANONYMOUS);
        let mut marks = self.lock();
        let floor = marks.1;
        marks.0.get(&key).copied().unwrap_or(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_moves_only_its_principals_mark() {
        let m = WriteMarks::default();
        let (a, b) = ([1; 32], [2; 32]);
        let (a0, b0) = (m.mark_of(Some(&a)), m.mark_of(Some(&b)));
        m.mark(Some(&a));
        assert_ne!(m.mark_of(Some(&a)), a0);
        assert_eq!(m.mark_of(Some(&b)), b0);
    }

    #[test]
    fn a_forgotten_principal_never_gets_an_older_mark() {
        let m = WriteMarks {
            next: AtomicU64::new(1),
            marks: Mutex::new((LruCache::new(NonZeroUsize::new(2).unwrap()), 0)),
        };
        let before_write = m.mark_of(Some(&[1; 32]));
        m.mark(Some(&[1; 32]));
        m.mark(Some(&[2; 32]));
        m.mark(Some(&[3; 32])); // pushes [1] out
        assert_ne!(m.mark_of(Some(&[1; 32])), before_write);
    }
}
