//! Liveness that means something: a worker loop beats its [`Heartbeat`] each time it completes
//! an iteration that did its job (a poll applied, a page written, a lock attempt answered). A
//! loop stuck on a hung connection, or failing again and again on the same event, stops
//! beating, and `/healthz` fails once it has been quiet longer than allowed, so Kubernetes
//! restarts the pod.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Quiet intervals a loop may miss before it counts as stuck.
pub const INTERVALS: u32 = 10;
/// Site request timeouts a loop may spend in one iteration (a read and its retries).
pub const TIMEOUTS: u32 = 3;

/// How long a loop pausing `interval` between iterations, whose site requests time out after
/// `site_timeout`, may go without completing one: `max(10 × interval, 3 × site timeout)`.
pub fn allowed_quiet(interval: Duration, site_timeout: Duration) -> Duration {
    (interval * INTERVALS).max(site_timeout * TIMEOUTS)
}

/// Where a worker stands with its leader lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Connecting to the database, checking the site binding: not yet ready.
    Starting,
    /// Another instance holds the lock; this one waits to take over.
    Standby,
    /// Holding the lock: this instance does the work.
    Leader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Starting => "starting",
            Role::Standby => "standby",
            Role::Leader => "leader",
        }
    }

    fn from_u8(v: u8) -> Role {
        match v {
            1 => Role::Standby,
            2 => Role::Leader,
            _ => Role::Starting,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Role::Starting => 0,
            Role::Standby => 1,
            Role::Leader => 2,
        }
    }
}

/// The last completed iteration of one worker loop, and the worker's role.
#[derive(Debug)]
pub struct Heartbeat {
    name: &'static str,
    allowed: Duration,
    /// Monotonic reference for `last_ms` (a clock step must not fake or hide a stall).
    epoch: Instant,
    last_ms: AtomicU64,
    /// Wall-clock time of the last beat (unix ms), for the metric.
    last_unix_ms: AtomicU64,
    role: AtomicU8,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Heartbeat {
    /// A heartbeat named after its worker (`events`, `scanner`), quiet for at most `allowed`.
    /// Starting counts as a beat: a start that hangs longer than `allowed` is stuck too.
    pub fn new(name: &'static str, allowed: Duration) -> Heartbeat {
        Heartbeat {
            name,
            allowed,
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            last_unix_ms: AtomicU64::new(unix_ms()),
            role: AtomicU8::new(Role::Starting.as_u8()),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn allowed(&self) -> Duration {
        self.allowed
    }

    /// Records a completed iteration.
    pub fn beat(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.last_unix_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// Time since the last completed iteration.
    pub fn quiet(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// The loop completed an iteration within the allowed time.
    pub fn alive(&self) -> bool {
        self.quiet() <= self.allowed
    }

    /// Unix time (seconds) of the last completed iteration.
    pub fn last_beat_unix_seconds(&self) -> f64 {
        self.last_unix_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub fn set_role(&self, role: Role) {
        self.role.store(role.as_u8(), Ordering::Relaxed);
    }

    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_is_alive_until_quiet_longer_than_allowed() {
        let h = Heartbeat::new("t", Duration::from_millis(40));
        assert!(h.alive());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!h.alive(), "quiet for {:?}", h.quiet());
        h.beat();
        assert!(h.alive());
        assert_eq!(h.role(), Role::Starting);
        h.set_role(Role::Leader);
        assert_eq!(h.role(), Role::Leader);
    }

    #[test]
    fn the_allowance_covers_intervals_and_site_timeouts() {
        let s = Duration::from_secs;
        assert_eq!(allowed_quiet(s(1), s(30)), s(90));
        assert_eq!(allowed_quiet(s(20), s(1)), s(200));
    }
}
