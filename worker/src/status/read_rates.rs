//! Reads per second by path (cache, site) over the last minutes, for the status page's
//! sparkline: the proxy's read counters sampled every [`SAMPLE_EVERY`] into a small ring.
//! Prometheus keeps the long history; this is the glance a person gets without one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::read_share::FLUSH_EVERY;
use super::ProxyFigures;
use crate::proxy::cache_db::CacheDb;
use crate::proxy::telemetry::Telemetry;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Points kept: ten minutes at one every two seconds.
pub const KEPT: usize = 300;

/// Reads per second over one sampling interval ending at `at_ms` (unix ms).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RatePoint {
    pub at_ms: i64,
    pub cache_per_s: f64,
    pub site_per_s: f64,
}

#[derive(Debug, Default)]
pub struct ReadRates {
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    /// The previous sample: when, and the read totals (cache, site) then.
    last: Option<(Instant, u64, u64)>,
    points: VecDeque<RatePoint>,
}

impl ReadRates {
    /// Records the read totals seen at `now` (`at_ms` on the wall clock): the rates since the
    /// previous sample become a point.
    pub fn record(&self, now: Instant, at_ms: i64, cache: u64, site: u64) {
        let mut ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((then, c0, s0)) = ring.last {
            let secs = now.duration_since(then).as_secs_f64();
            if secs > 0.0 {
                let point = RatePoint {
                    at_ms,
                    cache_per_s: cache.saturating_sub(c0) as f64 / secs,
                    site_per_s: site.saturating_sub(s0) as f64 / secs,
                };
                if ring.points.len() == KEPT {
                    ring.points.pop_front();
                }
                ring.points.push_back(point);
            }
        }
        ring.last = Some((now, cache, site));
    }

    /// The points kept, oldest first.
    pub fn points(&self) -> Vec<RatePoint> {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ring.points.iter().copied().collect()
    }
}

/// Samples the proxy's read counters into the status page's ring until `stop`, and every
/// [`FLUSH_EVERY`] adds them to the counts shared by every replica (in `cache`'s database).
pub async fn sample_loop(telemetry: Arc<Telemetry>, cache: Arc<CacheDb>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let replica = super::read_share::replica_id();
    let mut flushed = super::read_share::Flushed::default();
    let mut last_flush = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let figures = ProxyFigures::from_metrics(&telemetry.metrics.encode());
        let now = chrono::Utc::now();
        telemetry.status_page.read_rates.record(
            Instant::now(),
            now.timestamp_millis(),
            figures.reads_cache,
            figures.reads_site,
        );
        if last_flush.elapsed() < FLUSH_EVERY {
            continue;
        }
        last_flush = Instant::now();
        if let Some(db) = cache.db() {
            let minute = sgcache::storage::read_counts::minute_of(now);
            if let Err(e) = flushed.flush(db, &replica, &figures, minute).await {
                // Kept for the next flush; the status shows older counts meanwhile.
                tracing::debug!(error = %e, "cannot add this replica's read counts");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_deltas_over_the_interval_and_the_ring_keeps_the_newest() {
        let rates = ReadRates::default();
        let t0 = Instant::now();
        rates.record(t0, 0, 100, 10);
        assert!(rates.points().is_empty(), "one sample is no rate yet");
        rates.record(t0 + Duration::from_secs(2), 2000, 120, 14);
        assert_eq!(
            rates.points(),
            [RatePoint {
                at_ms: 2000,
                cache_per_s: 10.0,
                site_per_s: 2.0
            }]
        );
        for i in 2..(KEPT as u64 + 10) {
            rates.record(t0 + Duration::from_secs(2 * i), 2000 * i as i64, 120, 14);
        }
        let points = rates.points();
        assert_eq!(points.len(), KEPT);
        assert_eq!(points.last().unwrap().at_ms, 2000 * (KEPT as i64 + 9));
        assert_eq!(points.last().unwrap().cache_per_s, 0.0);
    }
}
