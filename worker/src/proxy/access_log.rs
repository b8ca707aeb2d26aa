//! What the proxy logs about requests. Under a storm a line per request would be most of the
//! proxy's work and flood the log pipeline, so: the access log (a line per request) is INFO
//! only with `workers.proxy.accessLog`, DEBUG otherwise; errors and slow requests reach WARN
//! whatever it says, at most one line a second per reason, with how many were not logged.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::answer::Path;
use super::reason::Reason;

/// A request slower than this is logged at WARN (sampled).
pub const SLOW: Duration = Duration::from_secs(5);

/// At most one WARN line per reason in this time.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One answered request.
pub fn answered(access_log: bool, method: &str, path: Path, reason: Reason, elapsed: Duration) {
    let reason = reason.label();
    // Two decimals: `ms=0.63`, not `ms=0.6309440000000001`.
    let ms = (elapsed.as_secs_f64() * 100_000.0).round() / 100.0;
    let path = path.label();
    if access_log {
        tracing::info!(method, path, reason, ms, "answered");
    } else {
        tracing::debug!(method, path, reason, ms, "answered");
    }
    if path == "error" {
        if let Some(skipped) = sampler().admit(reason) {
            tracing::warn!(
                method,
                reason,
                ms,
                not_logged = skipped,
                "request answered with an error"
            );
        }
    } else if elapsed >= SLOW {
        if let Some(skipped) = sampler().admit("slow") {
            tracing::warn!(
                method,
                path,
                reason,
                ms,
                not_logged = skipped,
                "slow request"
            );
        }
    }
}

/// A WARN line for `what`, unless one was logged in the last second.
pub fn sampled_warn(what: &'static str, error: &str) {
    if let Some(skipped) = sampler().admit(what) {
        tracing::warn!(
            what,
            error,
            not_logged = skipped,
            "request to the site failed"
        );
    }
}

#[derive(Default)]
struct Sampler {
    /// Per reason: when a line was last logged and how many were not since.
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Sampler {
    /// `Some(lines not logged since the last one)` when a line may be logged now.
    fn admit(&self, reason: &str) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match last.get_mut(reason) {
            Some((at, skipped)) if now.duration_since(*at) < SAMPLE_EVERY => {
                *skipped += 1;
                None
            }
            Some((at, skipped)) => {
                *at = now;
                Some(std::mem::take(skipped))
            }
            None => {
                last.insert(reason.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

fn sampler() -> &'static Sampler {
    static SAMPLER: OnceLock<Sampler> = OnceLock::new();
    SAMPLER.get_or_init(Sampler::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_per_reason_with_the_count_not_logged() {
        let s = Sampler::default();
        assert_eq!(s.admit("busy"), Some(0));
        assert_eq!(s.admit("busy"), None);
        assert_eq!(s.admit("busy"), None);
        assert_eq!(s.admit("statement"), Some(0), "reasons are sampled apart");
        s.last.lock().unwrap().get_mut("busy").unwrap().0 -= SAMPLE_EVERY;
        assert_eq!(s.admit("busy"), Some(2));
    }
}
