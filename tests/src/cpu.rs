//! CPU time of processes from `/proc`, for the benchmarks: on a machine whose cores the load
//! generator, the proxy and PostgreSQL share, throughput alone does not say who spent the
//! CPU; the CPU each spent per request does.

use std::collections::HashMap;
use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`: 100 on Linux).
const TICKS: f64 = 100.0;

/// User + system CPU seconds a process (all its threads) has used, 0 when it is gone.
pub fn seconds(pid: u32) -> f64 {
    // utime and stime: fields 14 and 15 of proc(5).
    stat_seconds(&format!("/proc/{pid}/stat"), 11)
}

/// CPU seconds used by this process's children that have ended and been waited for (a load
/// generator run as a child, say).
pub fn ended_children_seconds() -> f64 {
    // cutime and cstime: fields 16 and 17 of proc(5).
    stat_seconds("/proc/self/stat", 13)
}

/// The sum of two adjacent clock-tick fields of a `stat` file, in seconds; `first` counts
/// from the state field (the first after the command name, which may hold spaces).
fn stat_seconds(path: &str, first: usize) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(first) + tick(first + 1)) / TICKS
}

/// The PostgreSQL backends serving `database` now (the proxy's pool and any other), by pid.
pub async fn pg_backends(db: &sgcache::sql::Db, database: &str) -> Vec<u32> {
    let mut q = db.sql();
    q.push("SELECT pid FROM pg_stat_activity WHERE datname = ")
        .push_bind(sgcache::sql::SqlValue::Text(database.into()));
    db.fetch_all(&q)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| match r.first() {
            Some(sgcache::sql::SqlValue::Int(p)) => u32::try_from(*p).ok(),
            _ => None,
        })
        .collect()
}

/// CPU seconds used by groups of processes between [`Meter::start`] and [`Meter::stop`].
pub struct Meter {
    before: HashMap<u32, f64>,
    at: Instant,
}

/// What each group used, and the wall time.
pub struct Used {
    pub groups: Vec<(&'static str, f64)>,
    pub wall: f64,
}

impl Meter {
    /// Starts measuring these processes.
    pub fn start(pids: impl IntoIterator<Item = u32>) -> Meter {
        Meter {
            before: pids.into_iter().map(|p| (p, seconds(p))).collect(),
            at: Instant::now(),
        }
    }

    /// What each named group of processes used since the start; a process not running at
    /// the start (a connection opened meanwhile) counts from 0.
    pub fn stop(self, groups: Vec<(&'static str, Vec<u32>)>) -> Used {
        Used {
            wall: self.at.elapsed().as_secs_f64(),
            groups: groups
                .into_iter()
                .map(|(name, pids)| {
                    let used = pids
                        .iter()
                        .map(|p| seconds(*p) - self.before.get(p).copied().unwrap_or(0.0))
                        .sum();
                    (name, used)
                })
                .collect(),
        }
    }
}

impl Used {
    /// `name 123 µs` per request for each group, and the machine's share they took.
    pub fn per_request(&self, requests: u64) -> String {
        let n = requests.max(1) as f64;
        let total: f64 = self.groups.iter().map(|(_, s)| s).sum();
        let mut parts: Vec<String> = self
            .groups
            .iter()
            .map(|(name, s)| format!("{name} {:.0} µs", s / n * 1e6))
            .collect();
        parts.push(format!(
            "together {:.0} µs ({:.2} cores busy)",
            total / n * 1e6,
            total / self.wall
        ));
        parts.join(", ")
    }
}
