//! What the proxy tells about itself: metrics, the opt-in access log, the status page's
//! read rates, and (under `all`) the probes of the follower and scanner in the same process.

use std::sync::OnceLock;

use super::metrics::Metrics;

#[derive(Default)]
pub struct Telemetry {
    pub metrics: Metrics,
    /// One INFO line per request (`workers.proxy.accessLog`).
    pub access_log: bool,
    /// The status page's read rates and last gathered status (`/_sgcache/`).
    pub status_page: crate::status::page::StatusPage,
    /// The event follower and scanner running in this process (`all`): their metrics,
    /// heartbeats and roles are served with the proxy's.
    pub workers: OnceLock<crate::observe::Probes>,
}
