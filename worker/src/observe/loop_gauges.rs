//! The two gauges every worker loop exports beside its own metrics: whether this instance
//! leads, and when its loop last made progress (what `/healthz` judges, for alerts).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Heartbeat, Role};

pub struct LoopGauges {
    leader: Gauge,
    last_progress: Gauge<f64, AtomicU64>,
}

impl LoopGauges {
    /// Registers `leader` and `last_progress_timestamp_seconds` in `r` (the worker's prefix);
    /// `leads` says what the leader does, `progress` what counts as progress.
    pub fn register(r: &mut Registry, leads: &str, progress: &str) -> LoopGauges {
        let leader = Gauge::default();
        r.register(
            "leader",
            format!("1 when this instance holds the leader lock and {leads}, 0 on standby"),
            leader.clone(),
        );
        let last_progress = Gauge::<f64, AtomicU64>::default();
        r.register(
            "last_progress_timestamp_seconds",
            format!("Unix time {progress} (liveness)"),
            last_progress.clone(),
        );
        LoopGauges {
            leader,
            last_progress,
        }
    }

    /// Sets both from `heartbeat`, just before an encode.
    pub fn publish(&self, heartbeat: &Heartbeat) {
        self.leader.set(i64::from(heartbeat.role() == Role::Leader));
        self.last_progress.set(heartbeat.last_beat_unix_seconds());
    }
}
