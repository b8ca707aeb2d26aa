//! Exponential backoff with jitter for site and database outages: retrying in lockstep would
//! hammer a recovering site, so every wait is randomised within [d/2, d].

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Doubling waits from `base` up to `max`, reset after a success.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
    /// Consecutive failures since the last success.
    pub failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            current: base,
            failures: 0,
        }
    }

    /// The next wait (jittered), doubling the one after it.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        self.failures += 1;
        let half = d / 2;
        half + half.mul_f64(unit_random())
    }

    pub fn reset(&mut self) {
        self.current = self.base;
        self.failures = 0;
    }

    /// Sleeps the next delay; false when `stop` fired first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// A number in [0, 1): jitter needs no cryptographic quality, only to differ between processes.
fn unit_random() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Sleeps `d` unless `stop` fires first; false when stopped.
pub async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_jittered() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let mut prev_cap = Duration::ZERO;
        for cap in [100u64, 200, 400, 800, 800] {
            let cap = Duration::from_millis(cap);
            let d = b.next_delay();
            assert!(
                d >= cap / 2 && d <= cap,
                "{d:?} outside [{:?}, {cap:?}]",
                cap / 2
            );
            assert!(cap >= prev_cap);
            prev_cap = cap;
        }
        assert_eq!(b.failures, 5);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
