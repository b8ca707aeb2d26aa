//! Whether the site is up: the proxy's own knowledge, from its own probes.
//!
//! A client's request can fail for reasons of its own (an upload the site drops, a read that
//! times out on the site), and the site being down opens the `authGrace` window in which
//! credentials verified earlier read from the cache without the site's word. So a failed
//! forwarded request only asks for a probe (an `info` call, which needs no credentials); the
//! probe's answer decides. Any real answer from the site (not 502–504) shows it up. While it
//! is down a background loop probes again so the grace window closes once it is back.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A probe's answer is reused this long by the failures that follow it, so a burst of
/// failing requests costs one probe.
const PROBE_REUSE: Duration = Duration::from_secs(1);

/// Longest wait for a probe's answer: `info` is the site's cheapest call; no answer in this
/// time is as good as none for a client.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the site is probed while it is down.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

pub struct SiteHealth {
    up: AtomicBool,
    /// When the last probe finished and what it said; held while probing so that concurrent
    /// failures wait for one probe.
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl Default for SiteHealth {
    fn default() -> Self {
        SiteHealth {
            up: AtomicBool::new(true),
            last: tokio::sync::Mutex::new(None),
        }
    }
}

impl SiteHealth {
    /// The last probe (or real answer) said the site is up.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The site answered a request (not with 502–504): it is up.
    pub fn answered(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("the site answers again");
        }
    }

    /// A request to the site failed: runs `probe` (or reuses a probe that just finished) and
    /// returns whether the site is up.
    pub async fn recheck(&self, probe: impl Future<Output = bool>) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, up)) = *last {
            if at.elapsed() < PROBE_REUSE {
                return up;
            }
        }
        let up = probe.await;
        *last = Some((Instant::now(), up));
        let was = self.up.swap(up, Ordering::Relaxed);
        if was && !up {
            tracing::warn!("the site does not answer the proxy's probe; marked unavailable");
        } else if !was && up {
            tracing::info!("the site answers the proxy's probe again");
        }
        up
    }
}
