//! The proxy's listener: accepts connections up to `maxConnections` and serves each with a
//! header read timeout, so a client that opens connections and never finishes a request
//! cannot hold them (or the proxy's file descriptors) for long, and an idle timeout for
//! keep-alive connections between requests.
//!
//! hyper has one timer for both: it starts its header timer when a connection starts waiting
//! for a request, so it also closes idle keep-alive connections. The official client does not
//! survive that (it reuses the closed connection and fails with `BrokenPipeError`), so the two
//! are separate here: hyper's timer is set to the longer idle timeout, and [`HeadWatch`]
//! closes a connection whose request started arriving and did not complete its headers within
//! the header timeout. Body reads are bounded by the router's body timeout ([`super::app`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long requests in progress may take to finish once the proxy is asked to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// After the stop, connections are still served for this long, each answer saying
/// `Connection: close`: a client with a kept-alive connection (the pod already out of its
/// Service's endpoints) sends its next request on a new connection, to another pod, instead
/// of racing the close of an idle one (a broken pipe).
const DRAIN: Duration = Duration::from_secs(1);

/// Pause after a failed `accept` (out of file descriptors, say) before trying again, so the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listener's limits, from `workers.proxy.limits`.
#[derive(Clone, Debug)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits::from_spec(&sgcache::spec::ProxyLimitsSpec::default())
    }
}

impl ListenerLimits {
    pub fn from_spec(spec: &sgcache::spec::ProxyLimitsSpec) -> Self {
        ListenerLimits {
            max_connections: spec.max_connections as usize,
            header_read_timeout: spec.header_read_timeout.duration(),
            idle_timeout: spec.idle_timeout.duration(),
        }
    }
}

/// Serves `app` on `listener` until `stop`, within `limits`.
pub async fn serve(
    app: Router,
    listener: tokio::net::TcpListener,
    limits: &ListenerLimits,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Head and body in one buffer, one write: answers are small, and with a crowd of
        // connections the copy costs less than vectored writes did (BENCHMARKS.md, the
        // crowd on a quiet machine: 18–20 µs of CPU per read at 1,000 connections, 22–28
        // with writev).
        .writev(false)
        .timer(TokioTimer::new())
        // hyper's timer runs from the end of the last request: the idle timeout (plus the
        // header timeout, so a request begun just before it may still complete).
        .header_read_timeout(
            limits.idle_timeout.max(limits.header_read_timeout) + limits.header_read_timeout,
        );
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        // A free slot first: past the limit new connections wait in the kernel's backlog.
        let slot = tokio::select! {
            _ = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot?,
        };
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let watch = HeadWatch::new();
        let in_service = watch.clone();
        let stopping = stop.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let served = in_service.clone();
            served.head_done();
            let answer = app.clone().oneshot(req.map(Body::new));
            let stopping = stopping.clone();
            async move {
                let mut response = answer.await?;
                served.idle();
                if stopping.is_cancelled() {
                    response.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let io = TokioIo::new(Watched {
            inner: stream,
            watch: watch.clone(),
        });
        let conn = builder.serve_connection(io, service).into_owned();
        let conn = graceful.watch(conn);
        let header_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            tokio::select! {
                done = conn => if let Err(e) = done {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                _ = watch.overdue(header_timeout) => {
                    tracing::debug!("request headers not received within the header timeout; closing");
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::time::sleep(DRAIN).await;
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("connections still open after the shutdown grace period");
        }
    }
    Ok(())
}

/// Where a connection is between requests, for the header timeout: the time its current
/// request's first byte arrived (0: idle or in a request).
#[derive(Clone, Default)]
struct HeadWatch(Arc<HeadState>);

#[derive(Default)]
struct HeadState {
    /// Milliseconds after `epoch` + 1 at which a request's first byte arrived; 0: none.
    started: AtomicU64,
    /// A request is being served: bytes read now are its body, not a new request.
    serving: AtomicBool,
    epoch: OnceLock<Instant>,
}

impl HeadWatch {
    fn new() -> HeadWatch {
        let w = HeadWatch::default();
        let _ = w.0.epoch.set(Instant::now());
        w
    }

    fn now_ms(&self) -> u64 {
        self.0
            .epoch
            .get()
            .map_or(0, |e| e.elapsed().as_millis() as u64)
            + 1
    }

    /// Bytes arrived: the start of a request's headers unless one is in progress.
    fn bytes_read(&self) {
        if !self.0.serving.load(Ordering::Relaxed) {
            let now = self.now_ms();
            let _ = self
                .0
                .started
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn head_done(&self) {
        self.0.serving.store(true, Ordering::Relaxed);
        self.0.started.store(0, Ordering::Relaxed);
    }

    fn idle(&self) {
        self.0.serving.store(false, Ordering::Relaxed);
    }

    /// Resolves when a request's headers have been arriving longer than `limit`.
    async fn overdue(&self, limit: Duration) {
        loop {
            let started = self.0.started.load(Ordering::Relaxed);
            let wait = if started == 0 {
                limit
            } else {
                let elapsed = Duration::from_millis(self.now_ms().saturating_sub(started));
                if elapsed >= limit {
                    return;
                }
                limit - elapsed
            };
            tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
        }
    }
}

/// A client connection that tells its [`HeadWatch`] when bytes arrive.
struct Watched {
    inner: tokio::net::TcpStream,
    watch: HeadWatch,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.bytes_read();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
