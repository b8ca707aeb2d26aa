//! The event log the follower keeps for event daemons (`eventLog` in the spec): every event
//! read, of every entity type, written by [`LogWrite::apply`] in the batch's transaction (so
//! the stored log and the position never disagree, whatever crashes), and trimmed to the
//! retention in the background by [`trim_loop`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sgcache::spec::{EventLogSpec, Retain};
use sgcache::sql::{Db, Tx};
use sgcache::storage::event_log::{self, Keep, TRIM_GRACE};
use sgcache::storage::StorageError;
use tokio_util::sync::CancellationToken;

use super::metrics::EventsMetrics;
use super::position::Position;
use crate::sync::backoff::sleep_or_stop;

/// What a batch does to the kept log.
pub enum LogWrite<'a> {
    /// Store these records; the log's position becomes `through`.
    Keep {
        records: Vec<&'a Value>,
        /// The position before the batch: where a log that is not kept yet starts.
        start_after: i64,
        through: i64,
    },
    /// The log is disabled: stop answering from it.
    Drop,
}

/// The follower's contiguous position: no id at or below it can still show up (every lower
/// id was read or given up on).
pub fn contiguous(p: &Position) -> i64 {
    p.backlog
        .keys()
        .next()
        .map_or(p.last, |first| (first - 1).min(p.last))
}

impl<'a> LogWrite<'a> {
    pub fn new(
        spec: &EventLogSpec,
        records: impl Iterator<Item = &'a Value>,
        current: &Position,
        next: &Position,
    ) -> LogWrite<'a> {
        if !spec.enabled {
            return LogWrite::Drop;
        }
        LogWrite::Keep {
            records: records.collect(),
            start_after: current.last,
            through: contiguous(next),
        }
    }

    /// Writes the batch's part of the log in the batch's transaction; returns rows stored.
    pub async fn apply(&self, tx: &mut Tx) -> Result<u64, StorageError> {
        match self {
            LogWrite::Keep {
                records,
                start_after,
                through,
            } => {
                let out = event_log::store(tx, records, *start_after, *through).await?;
                if out.started {
                    tracing::info!(
                        after_event_id = start_after,
                        "keeping the event log from here on"
                    );
                }
                if out.unstorable > 0 {
                    tracing::warn!(
                        events = out.unstorable,
                        "events the cache cannot store as read; reads returning them pass through"
                    );
                }
                Ok(out.rows)
            }
            LogWrite::Drop => {
                event_log::drop_window(tx).await?;
                Ok(0)
            }
        }
    }
}

/// How often the kept log is trimmed (and its status published).
pub const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Trims the kept log to the retention until `stop` (every follower process runs it; rounds
/// of two processes at once only repeat each other's work).
pub async fn trim_loop(
    db: Db,
    spec: EventLogSpec,
    every: Duration,
    obs: Arc<EventsMetrics>,
    stop: CancellationToken,
) {
    loop {
        let keep = match spec.retain {
            Retain::Rows(n) => Keep::Rows(n),
            Retain::Age(age) => Keep::Since(
                chrono::Duration::from_std(age)
                    .ok()
                    .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
            ),
        };
        match event_log::trim(&db, keep, TRIM_GRACE).await {
            Ok(t) => {
                obs.log_trimmed(t.deleted);
                if t.deleted > 0 || t.raised_to.is_some() {
                    tracing::debug!(deleted = t.deleted, floor = ?t.raised_to, "event log trimmed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot trim the kept event log; retrying later"),
        }
        match event_log::log_status(&db).await {
            Ok(s) => obs.log_status(&s),
            Err(e) => tracing::debug!(error = %e, "cannot read the kept event log's status"),
        }
        if !sleep_or_stop(every, &stop).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_contiguous_position_stops_below_the_first_missing_id() {
        let p = |last, missing: &[i64]| Position {
            last,
            backlog: missing.iter().map(|&m| (m, 0)).collect::<BTreeMap<_, _>>(),
        };
        assert_eq!(contiguous(&p(20, &[])), 20);
        assert_eq!(contiguous(&p(20, &[14, 17])), 13);
        assert_eq!(contiguous(&p(20, &[20])), 19);
    }
}
