//! `/metrics`, `/healthz` and `/readyz` of the event follower and the scanner, on a port of
//! their own (`workers.events.metricsPort`, `workers.scanner.metricsPort`); `all` serves the
//! same facts on the proxy's port ([`crate::proxy::AppState::workers`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::heartbeat::{Heartbeat, Role};

/// The OpenMetrics content type prometheus-client writes.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A worker whose metrics and heartbeat are served.
pub trait Observed: Send + Sync {
    /// Appends the worker's metrics (OpenMetrics text, without the closing `# EOF`).
    fn encode_into(&self, out: &mut String);
    fn heartbeat(&self) -> &Heartbeat;
}

/// The workers one process serves probes for.
#[derive(Clone, Default)]
pub struct Probes {
    workers: Vec<Arc<dyn Observed>>,
}

impl Probes {
    pub fn with(mut self, worker: Arc<dyn Observed>) -> Probes {
        self.workers.push(worker);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Every worker's metrics, without the closing `# EOF`.
    pub fn encode_into(&self, out: &mut String) {
        for w in &self.workers {
            w.encode_into(out);
        }
    }

    /// Every worker's metrics as one OpenMetrics document.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }

    /// Whether every loop completed an iteration in time, and a line per loop saying so.
    pub fn health(&self) -> (bool, String) {
        let mut ok = true;
        let mut body = String::new();
        for w in &self.workers {
            let h = w.heartbeat();
            let quiet = h.quiet().as_secs_f64();
            if h.alive() {
                body.push_str(&format!(
                    "{}: ok (last progress {quiet:.1} s ago)\n",
                    h.name()
                ));
            } else {
                ok = false;
                body.push_str(&format!(
                    "{}: stuck: no progress for {quiet:.1} s (allowed {:.1} s)\n",
                    h.name(),
                    h.allowed().as_secs_f64()
                ));
            }
        }
        (ok, body)
    }

    /// Each worker's role; ready once none is still starting (a standby is ready: it is
    /// where it should be, waiting to take over).
    pub fn roles(&self) -> (bool, Map<String, Value>) {
        let mut roles = Map::new();
        let mut ready = true;
        for w in &self.workers {
            let role = w.heartbeat().role();
            ready &= role != Role::Starting;
            roles.insert(w.heartbeat().name().into(), role.as_str().into());
        }
        (ready, roles)
    }
}

/// The probe routes for `probes`.
pub fn router(probes: Probes) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(probes))
}

async fn metrics(State(p): State<Arc<Probes>>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        p.metrics_text(),
    )
        .into_response()
}

/// 503 when a loop has been quiet longer than allowed: Kubernetes restarts the pod.
async fn healthz(State(p): State<Arc<Probes>>) -> Response {
    let (ok, body) = p.health();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

/// The role of each worker (`{"events": "leader"}`); 503 while starting.
async fn readyz(State(p): State<Arc<Probes>>) -> Response {
    let (ready, roles) = p.roles();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Value::Object(roles))).into_response()
}

/// Serves the probe routes on `listener` until `stop`.
pub async fn serve(listener: tokio::net::TcpListener, probes: Probes, stop: CancellationToken) {
    match listener.local_addr() {
        Ok(addr) => tracing::info!(addr = %addr, "metrics and probes listening"),
        Err(e) => tracing::info!(error = %e, "metrics and probes listening"),
    }
    if let Err(e) = axum::serve(listener, router(probes))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::warn!(error = %e, "metrics server stopped");
    }
}

/// Binds `bind` (127.0.0.1 when unset) and `port`, and serves `probes` there until `stop`.
/// Port 0 serves nothing. A port already taken (a second follower started by hand on the same
/// machine, as a standby) is logged and the worker runs without them: its work matters more
/// than its probes, and on Kubernetes the failing probes say so.
pub async fn spawn(
    bind: Option<IpAddr>,
    port: u16,
    probes: Probes,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if port == 0 {
        return None;
    }
    let addr = SocketAddr::new(bind.unwrap_or(Ipv4Addr::LOCALHOST.into()), port);
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => Some(tokio::spawn(serve(listener, probes, stop))),
        Err(e) => {
            tracing::error!(%addr, error = %e,
                "cannot listen for metrics and probes; running without them (set the worker's metricsPort)");
            None
        }
    }
}
