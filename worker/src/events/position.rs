//! The follower's position: the highest event id seen and the backlog of lower ids not seen
//! yet (ids are allocated before commit, so they become visible out of order). Both are saved
//! in `_sgcache_events`, in the transaction that applies the events they cover.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sgcache::sql::{Dialect, SqlValue, Tx};
use sgcache::storage::{EventPosition, StorageError};

/// Most missing ids kept: a flood of holes must not grow memory without bound.
pub const MAX_BACKLOG: usize = 100_000;

/// A missing id and when (unix ms) it was first missed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    pub id: i64,
    pub since_ms: i64,
}

/// Where the follower is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Every id up to here was applied, is in the backlog, or was given up on.
    pub last: i64,
    /// Missing ids below `last`, by id.
    pub backlog: BTreeMap<i64, i64>,
}

/// What advancing over a batch changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Advance {
    pub new_missing: usize,
    pub given_up: Vec<i64>,
}

impl Position {
    pub fn from_saved(saved: &EventPosition) -> Position {
        let items: Vec<Missing> =
            serde_json::from_value(saved.backlog.clone()).unwrap_or_else(|e| {
                // A backlog we cannot read only costs re-checks, never data: log and start empty.
                tracing::warn!(error = %e, "unreadable event backlog; starting with an empty one");
                vec![]
            });
        Position {
            last: saved.last_event_id.unwrap_or(0),
            backlog: items.into_iter().map(|m| (m.id, m.since_ms)).collect(),
        }
    }

    pub fn to_saved(&self) -> EventPosition {
        let items: Vec<Missing> = self
            .backlog
            .iter()
            .map(|(&id, &since_ms)| Missing { id, since_ms })
            .collect();
        EventPosition {
            last_event_id: Some(self.last),
            backlog: serde_json::to_value(items).unwrap_or(Value::Array(vec![])),
        }
    }

    /// Moves past `ids` (the new ids, ascending, all > `last`) and the late ids found from the
    /// backlog; ids skipped over join the backlog; entries older than `window_ms` are given up.
    pub fn advance(&mut self, ids: &[i64], late: &[i64], now_ms: i64, window_ms: i64) -> Advance {
        let timed: Vec<(i64, Option<i64>)> = ids.iter().map(|&id| (id, None)).collect();
        self.advance_timed(&timed, late, now_ms, window_ms)
    }

    /// [`Position::advance`] with each new id's `created_at` (unix ms) when known. As the
    /// official event daemon does, the ids skipped before an event created more than
    /// `window_ms` ago are given up at once: had they been written, they would be visible by
    /// now, so waiting another window for them only delays nothing.
    pub fn advance_timed(
        &mut self,
        ids: &[(i64, Option<i64>)],
        late: &[i64],
        now_ms: i64,
        window_ms: i64,
    ) -> Advance {
        let mut out = Advance::default();
        for id in late {
            self.backlog.remove(id);
        }
        for &(id, created_ms) in ids {
            if id <= self.last {
                continue;
            }
            let gap = id - self.last - 1;
            let settled = created_ms.is_some_and(|c| now_ms - c > window_ms);
            // A gap wider than the backlog can hold is recorded up to the cap; the ids beyond
            // it are given up at once (logged), not silently.
            for missing in (self.last + 1)..id {
                if settled || self.backlog.len() >= MAX_BACKLOG {
                    out.given_up.push(missing);
                } else {
                    self.backlog.insert(missing, now_ms);
                }
            }
            out.new_missing += gap as usize;
            self.last = id;
        }
        let expired: Vec<i64> = self
            .backlog
            .iter()
            .filter(|(_, &since)| now_ms - since > window_ms)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.backlog.remove(&id);
            out.given_up.push(id);
        }
        out
    }
}

/// Reads the saved position inside `tx`, locking its row (PostgreSQL) so two followers can
/// never both apply from the same position.
pub async fn lock_position(tx: &mut Tx) -> Result<Option<Position>, StorageError> {
    let mut sql = tx.sql();
    sql.push("SELECT last_event_id, backlog FROM \"_sgcache_events\" WHERE id = 1");
    if tx.dialect() == Dialect::Postgres {
        sql.push(" FOR UPDATE");
    }
    let rows = tx.fetch_all(&sql).await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let mut it = row.into_iter();
    let last = match it.next() {
        Some(SqlValue::Int(i)) => Some(i),
        _ => None,
    };
    let backlog = match it.next() {
        Some(SqlValue::Json(j)) => j,
        Some(SqlValue::Text(s)) => serde_json::from_str(&s).unwrap_or(Value::Array(vec![])),
        _ => Value::Array(vec![]),
    };
    Ok(Some(Position::from_saved(&EventPosition {
        last_event_id: last,
        backlog,
    })))
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_join_the_backlog_and_expire_after_the_window() {
        let mut p = Position {
            last: 10,
            backlog: BTreeMap::new(),
        };
        let a = p.advance(&[11, 14, 15], &[], 1_000, 500);
        assert_eq!(a.new_missing, 2);
        assert_eq!(p.last, 15);
        assert_eq!(p.backlog.keys().copied().collect::<Vec<_>>(), vec![12, 13]);
        // 12 shows up late; 13 stays missing until the window passes.
        let a = p.advance(&[], &[12], 1_400, 500);
        assert!(a.given_up.is_empty());
        assert_eq!(p.backlog.keys().copied().collect::<Vec<_>>(), vec![13]);
        let a = p.advance(&[16], &[], 1_600, 500);
        assert_eq!(a.given_up, vec![13]);
        assert!(p.backlog.is_empty());
        // Replays of old ids do not move the position back.
        p.advance(&[5], &[], 1_700, 500);
        assert_eq!(p.last, 16);
        let saved = p.to_saved();
        assert_eq!(Position::from_saved(&saved), p);
    }

    #[test]
    fn a_gap_before_an_event_older_than_the_window_is_given_up_at_once() {
        let mut p = Position {
            last: 10,
            backlog: BTreeMap::new(),
        };
        // Event 13 was created 600 ms before now, the window is 500 ms: 11 and 12 would be
        // visible by now if they existed.
        let a = p.advance_timed(&[(13, Some(400))], &[], 1_000, 500);
        assert_eq!(a.given_up, vec![11, 12]);
        assert_eq!(a.new_missing, 2);
        assert!(p.backlog.is_empty());
        assert_eq!(p.last, 13);
        // A recent event (or one without created_at) still leaves its gap in the backlog.
        let a = p.advance_timed(&[(15, Some(900)), (17, None)], &[], 1_000, 500);
        assert!(a.given_up.is_empty());
        assert_eq!(p.backlog.keys().copied().collect::<Vec<_>>(), vec![14, 16]);
        // An old event later in the batch does not drop earlier backlog entries early.
        let a = p.advance_timed(&[(19, Some(0))], &[], 1_000, 500);
        assert_eq!(a.given_up, vec![18]);
        assert_eq!(p.backlog.keys().copied().collect::<Vec<_>>(), vec![14, 16]);
        // Exactly at the window's edge the id is still waited for.
        let a = p.advance_timed(&[(21, Some(500))], &[], 1_000, 500);
        assert!(a.given_up.is_empty());
        assert!(p.backlog.contains_key(&20));
    }
}
