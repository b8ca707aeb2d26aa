//! The proxy's listener: accepts connections up to `maxConnections` and serves each with a
//! header read timeout, so a client that opens connections and never finishes a request
//! cannot hold them (or the proxy's file descriptors) for long.
//!
//! hyper starts the header timer when a connection starts waiting for a request, so the same
//! timeout closes keep-alive connections left idle (clients reconnect on their next call).
//! Body reads are bounded by the router's body timeout ([`super::app`]).

use std::sync::Arc;
use std::time::Duration;

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
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
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
        let stopping = stop.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let answer = app.clone().oneshot(req.map(Body::new));
            let stopping = stopping.clone();
            async move {
                let mut response = answer.await?;
                if stopping.is_cancelled() {
                    response.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
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
