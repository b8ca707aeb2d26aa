//! Whether the proxy can vouch for its database, checked at every catalog refresh: it answers
//! from the cache only while the database is the writable primary the workers write to, and
//! the event follower is making progress. Everything it judges by is kept in this process's
//! memory, so a frozen copy of the database (a standby, an old primary left read-only, a
//! restored backup) cannot vouch for itself:
//!
//! - **not writable** (in recovery or read-only): a copy the workers cannot write to is
//!   frozen; reads pass through (the connection pools refuse such a server too,
//!   `sgcache::pg_server`);
//! - **failover**: the server's identity changed (its system identifier, or its timeline: a
//!   promotion starts a new one). With asynchronous replication the last transactions may be
//!   lost, so reads pass through until the follower has caught up with the site after the
//!   change was seen;
//! - **rolled back**: the follower's saved position went below the highest this proxy has
//!   seen (the database lost writes): reads pass through until the follower has replayed past
//!   it. A type whose last scan start went back likewise passes through until scanned again;
//! - **catching up**: the database was not writable or did not answer (an address moved to a
//!   standby, a restart, a network cut) and answers again: reads pass through until the
//!   follower has caught up with the site after it came back, and each scanned type until a
//!   scan started after it (the workers could not write meanwhile, so the copy is as old as
//!   the outage);
//! - **follower stopped**: its position and caught-up time have not moved for
//!   [`FOLLOWER_QUIET`] by this process's clock, while the site is up (with the site down the
//!   cache is the only answer, and `maxLag` still bounds it);
//! - **unsynced writes**: a write-through that could not be stored makes the written types
//!   pass through until the follower has caught up (or a scan started) after it, so the
//!   writer's next read is never older than its write.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sgcache::pg_server::NotWritable;
use sgcache::query::Catalog;
use sgcache::sql::{Db, SqlValue};
use sgcache::storage;

/// How long the follower may show no progress (while the site is up) before reads stop
/// being answered from the cache.
pub const FOLLOWER_QUIET: Duration = Duration::from_secs(60);

/// Longest wait for the guard's queries.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the proxy does not answer from the cache.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unvouched {
    #[error("the database is not a writable primary ({0})")]
    NotWritable(String),
    #[error("the database failed over ({what}); waiting for the follower to catch up")]
    Failover { what: String },
    #[error("the database lost writes: follower position {position} < {high_water} seen before; waiting for the follower to replay past it")]
    RolledBack { position: i64, high_water: i64 },
    #[error("the database is back after an outage; waiting for the follower to catch up")]
    CatchingUp,
    #[error("the event follower made no progress for {quiet_s} s")]
    FollowerStopped { quiet_s: u64 },
    #[error("the database cannot be checked: {0}")]
    Unknown(String),
}

impl Unvouched {
    /// The metric and `/readyz` label.
    pub fn label(&self) -> &'static str {
        match self {
            Unvouched::NotWritable(_) => "not_writable",
            Unvouched::Failover { .. } => "failover",
            Unvouched::RolledBack { .. } => "rolled_back",
            Unvouched::CatchingUp => "catching_up",
            Unvouched::FollowerStopped { .. } => "follower_stopped",
            Unvouched::Unknown(_) => "unknown",
        }
    }
}

/// Marks `types` of the catalog stale: their reads pass through.
pub fn hold_back(catalog: &mut Catalog, types: &BTreeSet<String>) {
    for t in types {
        if let Some(ty) = catalog.types.get_mut(t) {
            ty.stale = true;
        }
    }
}

/// Every label [`DbGuard::state`] reports, `ok` included.
pub const STATES: [&str; 7] = [
    "ok",
    "not_writable",
    "failover",
    "rolled_back",
    "catching_up",
    "follower_stopped",
    "unknown",
];

/// What one check read from the database.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// Why the server is not writable, if it is not.
    pub not_writable: Option<String>,
    pub system_identifier: Option<i64>,
    pub timeline: Option<i64>,
    pub position: Option<i64>,
    pub caught_up_at: Option<DateTime<Utc>>,
    /// Start of each type's last complete scan (unix ms).
    pub scanned_ms: BTreeMap<String, i64>,
}

/// The follower's saved position and caught-up time: either moving is progress.
type Progress = (Option<i64>, Option<DateTime<Utc>>);

/// The guard's memory (this process's, never the database's).
#[derive(Debug, Default)]
struct Memory {
    identity: Option<(Option<i64>, Option<i64>)>,
    /// When a change of identity was seen, and what changed.
    failover: Option<(DateTime<Utc>, String)>,
    high_water: Option<i64>,
    scans_high: BTreeMap<String, i64>,
    /// The follower's last (position, caught-up time) and when it was first seen.
    progress: Option<(Progress, Instant)>,
    /// Types written through the proxy whose write could not be stored, and when.
    unsynced: BTreeMap<String, DateTime<Utc>>,
    /// When the database answered again after an outage: the follower must have caught up
    /// after it before answers resume.
    resumed: Option<DateTime<Utc>>,
    /// The same moment (unix ms) for the scanner: a type scanned before it passes through
    /// until scanned after it.
    scan_after: Option<i64>,
    verdict: Option<Unvouched>,
}

#[derive(Debug, Default)]
pub struct DbGuard {
    memory: Mutex<Memory>,
    /// The database's server changes as of the last check that vouched for it.
    vouched_at: std::sync::atomic::AtomicU64,
    /// How often the address had been closed (not writable) as of the last check: an outage
    /// shorter than the time between two checks is an outage all the same.
    closings: std::sync::atomic::AtomicU64,
}

impl DbGuard {
    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks the database: Ok with the types that must pass through all the same, or why
    /// nothing may be answered from the cache. Logs changes of verdict.
    pub async fn check(&self, db: &Db, site_up: bool) -> Result<BTreeSet<String>, Unvouched> {
        let changes = db.server_changes();
        let closings = db.closings();
        let closed_since = self
            .closings
            .swap(closings, std::sync::atomic::Ordering::Relaxed)
            != closings;
        let observed = match tokio::time::timeout(CHECK_TIMEOUT, observe(db)).await {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(e)) => Err(unvouched_by(&e)),
            Err(_) => {
                // A silent server: the pooled connections are likely all on it.
                sgcache::sql::reconnect_all();
                Err(Unvouched::Unknown(format!(
                    "no answer within {CHECK_TIMEOUT:?}"
                )))
            }
        };
        let mut memory = self.memory();
        if closed_since {
            memory.outage();
        }
        let judged = match observed {
            Ok(o) => memory.judge(&o, Instant::now(), Utc::now(), site_up),
            Err(why) => Err(why),
        };
        memory.report(&judged);
        if judged.is_ok() {
            self.vouched_at
                .store(changes, std::sync::atomic::Ordering::Relaxed);
        }
        judged
    }

    /// False once the server behind the address changed since the last check vouched for it:
    /// nothing is answered from the new one until a check has.
    pub fn current(&self, db: &Db) -> bool {
        db.server_changes() == self.vouched_at.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A write-through of `types` could not be stored at `at`. True when no type was held
    /// back by such a write before (the first of a spell).
    pub fn write_failed(&self, types: impl IntoIterator<Item = String>, at: DateTime<Utc>) -> bool {
        let mut memory = self.memory();
        let first = memory.unsynced.is_empty();
        for t in types {
            memory.unsynced.insert(t, at);
        }
        first
    }

    /// For `/readyz`: the verdict and the types held back by unsynced writes or rollbacks.
    pub fn describe(&self) -> Value {
        let memory = self.memory();
        json!({
            "state": memory.verdict.as_ref().map_or("ok", Unvouched::label),
            "reason": memory.verdict.as_ref().map(ToString::to_string),
            "unsynced_types": memory.unsynced.keys().collect::<Vec<_>>(),
        })
    }

    /// The current state label (one of [`STATES`]).
    pub fn state(&self) -> &'static str {
        self.memory()
            .verdict
            .as_ref()
            .map_or("ok", Unvouched::label)
    }

    /// Types held back by writes that could not be stored.
    pub fn unsynced(&self) -> usize {
        self.memory().unsynced.len()
    }
}

impl Memory {
    /// The database was out (not writable, or silent) since the last check, even if this
    /// check finds it well: what the workers could not write meanwhile is missing.
    fn outage(&mut self) {
        if !matches!(
            self.verdict,
            Some(Unvouched::NotWritable(_) | Unvouched::Unknown(_))
        ) {
            self.verdict = Some(Unvouched::Unknown("its address was closed".into()));
        }
    }

    /// The verdict on `o`: types to pass through, or why the whole cache must.
    fn judge(
        &mut self,
        o: &Observation,
        now: Instant,
        wall: DateTime<Utc>,
        site_up: bool,
    ) -> Result<BTreeSet<String>, Unvouched> {
        if let Some(why) = &o.not_writable {
            return Err(Unvouched::NotWritable(why.clone()));
        }
        self.note_identity(o, wall);
        if matches!(
            self.verdict,
            Some(Unvouched::NotWritable(_) | Unvouched::Unknown(_))
        ) {
            // Back after an outage: start waiting from now (a later outage restarts it).
            self.resumed = Some(wall);
            self.scan_after = Some(wall.timestamp_millis());
        }
        let caught_up_after = |at: DateTime<Utc>| o.caught_up_at.is_some_and(|c| c > at);
        if let Some((at, what)) = &self.failover {
            if o.caught_up_at.is_none() || caught_up_after(*at) {
                tracing::info!(changed = %what, "the follower caught up after the failover");
                self.failover = None;
            } else {
                return Err(Unvouched::Failover { what: what.clone() });
            }
        }
        if let (Some(position), Some(high)) = (o.position, self.high_water) {
            if position < high {
                return Err(Unvouched::RolledBack {
                    position,
                    high_water: high,
                });
            }
        }
        // After the more telling failover and rollback waits: each ends as the follower catches up.
        if let Some(at) = self.resumed {
            if o.caught_up_at.is_none() || caught_up_after(at) {
                tracing::info!("the follower caught up after the database came back");
                self.resumed = None;
            } else {
                return Err(Unvouched::CatchingUp);
            }
        }
        self.high_water = self.high_water.max(o.position);
        self.judge_progress(o, now, site_up)?;
        let mut pass = BTreeSet::new();
        for (ty, ms) in &o.scanned_ms {
            let high = self.scans_high.entry(ty.clone()).or_insert(*ms);
            if ms < high {
                pass.insert(ty.clone()); // its scan was rolled back: until scanned again
            } else {
                *high = *ms;
            }
            if self.scan_after.is_some_and(|after| *ms <= after) {
                pass.insert(ty.clone()); // not scanned since the outage
            }
        }
        if self
            .scan_after
            .is_some_and(|after| o.scanned_ms.values().all(|ms| *ms > after))
        {
            self.scan_after = None;
        }
        self.unsynced.retain(|ty, at| {
            let scanned = o
                .scanned_ms
                .get(ty)
                .is_some_and(|ms| *ms > at.timestamp_millis());
            let settled = caught_up_after(*at) || scanned;
            if !settled {
                pass.insert(ty.clone());
            }
            !settled
        });
        Ok(pass)
    }

    /// Remembers the server's identity; a change starts a failover wait.
    fn note_identity(&mut self, o: &Observation, wall: DateTime<Utc>) {
        let Some(before) = self.identity else {
            self.identity = Some((o.system_identifier, o.timeline));
            return;
        };
        // A part a check could not read keeps what was known.
        let now = (o.system_identifier.or(before.0), o.timeline.or(before.1));
        self.identity = Some(now);
        let changed =
            |a: Option<i64>, b: Option<i64>| matches!((a, b), (Some(x), Some(y)) if x != y);
        let what = if changed(before.0, now.0) {
            format!("system identifier {:?} -> {:?}", before.0, now.0)
        } else if changed(before.1, now.1) {
            format!("timeline {:?} -> {:?}", before.1, now.1)
        } else {
            return;
        };
        self.failover = Some((wall, what));
    }

    fn judge_progress(
        &mut self,
        o: &Observation,
        now: Instant,
        site_up: bool,
    ) -> Result<(), Unvouched> {
        if o.caught_up_at.is_none() {
            return Ok(()); // no follower has ever run: nothing to judge by
        }
        let seen = (o.position, o.caught_up_at);
        let since = match &self.progress {
            Some((last, since)) if *last == seen => *since,
            _ => {
                self.progress = Some((seen, now));
                now
            }
        };
        let quiet = now.saturating_duration_since(since);
        if site_up && quiet > FOLLOWER_QUIET {
            return Err(Unvouched::FollowerStopped {
                quiet_s: quiet.as_secs(),
            });
        }
        Ok(())
    }

    /// Logs a change of verdict (not every refresh).
    fn report(&mut self, judged: &Result<BTreeSet<String>, Unvouched>) {
        let now = judged.as_ref().err().cloned();
        if now.as_ref().map(Unvouched::label) == self.verdict.as_ref().map(Unvouched::label) {
            self.verdict = now;
            return;
        }
        match &now {
            Some(why) => {
                tracing::warn!(reason = %why, "cannot vouch for the cache database; reads pass through")
            }
            None => tracing::info!("the cache database is vouched for again; answering from it"),
        }
        self.verdict = now;
    }
}

/// The verdict of a check that failed: a server the pools refuse as not writable says so.
fn unvouched_by(e: &anyhow::Error) -> Unvouched {
    match e.downcast_ref::<sqlx::Error>() {
        Some(s) if sgcache::pg_server::is_not_writable(s) => Unvouched::NotWritable(s.to_string()),
        _ => Unvouched::Unknown(e.to_string()),
    }
}

/// Reads what the guard judges by. Errors are the database's.
async fn observe(db: &Db) -> anyhow::Result<Observation> {
    let mut o = Observation::default();
    if let Db::Postgres(_) = db {
        observe_server(db, &mut o).await?;
        if o.not_writable.is_some() {
            return Ok(o);
        }
    }
    o.position = storage::read_event_position(db)
        .await?
        .and_then(|p| p.last_event_id);
    let freshness = storage::read_freshness(db).await?;
    o.caught_up_at = freshness.caught_up_at;
    o.scanned_ms = freshness
        .scanned_at
        .iter()
        .map(|(t, at)| (t.clone(), at.timestamp_millis()))
        .collect();
    Ok(o)
}

/// Whether the server is a writable primary, and its identity.
async fn observe_server(db: &Db, o: &mut Observation) -> anyhow::Result<()> {
    let mut q = db.sql();
    // The timeline of the WAL being written: a promotion starts a new one at once.
    q.push(
        "SELECT pg_is_in_recovery(), current_setting('transaction_read_only'), \
         CASE WHEN pg_is_in_recovery() THEN NULL \
         ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END",
    );
    let rows = db.fetch_all(&q).await?;
    let row = rows.first().cloned().unwrap_or_default();
    match row.as_slice() {
        [SqlValue::Bool(true), ..] => o.not_writable = Some("in recovery: a standby".into()),
        [_, SqlValue::Text(ro), ..] if ro == "on" => {
            o.not_writable = Some("transaction_read_only is on".into())
        }
        [_, _, SqlValue::Text(tli)] => o.timeline = i64::from_str_radix(tli, 16).ok(),
        _ => {}
    }
    if o.not_writable.is_some() {
        // Tell the pools too: no connection to this server is used until it is a primary.
        let in_recovery = matches!(row.first(), Some(SqlValue::Bool(true)));
        db.refuse_not_writable(if in_recovery {
            NotWritable::InRecovery
        } else {
            NotWritable::ReadOnly
        });
        return Ok(());
    }
    let mut q = db.sql();
    q.push("SELECT system_identifier FROM pg_control_system()");
    // Some roles may not read it; the timeline still tells a promotion.
    if let Ok(rows) = db.fetch_all(&q).await {
        if let Some(SqlValue::Int(id)) = rows.first().and_then(|r| r.first()) {
            o.system_identifier = Some(*id);
        }
    }
    Ok(())
}

/// The entity types a write request names: the written types and those its link values point
/// to (their other side may change), for [`DbGuard::write_failed`].
pub fn written_types(req: &sgcache::api3::Request) -> BTreeSet<String> {
    let ops: Vec<&Value> = if req.method_name == "batch" {
        req.payload.as_array().into_iter().flatten().collect()
    } else {
        vec![&req.payload]
    };
    let mut types = BTreeSet::new();
    for op in ops {
        if let Some(t) = op["type"].as_str() {
            types.insert(t.to_string());
        }
        let values = op["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| &f["value"])
            .chain(op["data"].as_object().into_iter().flat_map(|d| d.values()));
        for v in values {
            let links = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
            for l in links {
                if let Some(t) = l["type"].as_str() {
                    types.insert(t.to_string());
                }
            }
        }
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(position: i64, caught_up: i64) -> Observation {
        Observation {
            system_identifier: Some(7),
            timeline: Some(1),
            position: Some(position),
            caught_up_at: DateTime::from_timestamp(caught_up, 0),
            ..Observation::default()
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn a_rolled_back_position_passes_through_until_replayed_past() {
        let mut m = Memory::default();
        let now = Instant::now();
        assert!(m.judge(&obs(100, 10), now, at(10), true).is_ok());
        let err = m.judge(&obs(90, 11), now, at(11), true).unwrap_err();
        assert_eq!(
            err,
            Unvouched::RolledBack {
                position: 90,
                high_water: 100
            }
        );
        assert!(m.judge(&obs(99, 12), now, at(12), true).is_err());
        assert!(m.judge(&obs(100, 13), now, at(13), true).is_ok());
    }

    #[test]
    fn a_new_timeline_waits_for_the_follower_to_catch_up_after_it() {
        let mut m = Memory::default();
        let now = Instant::now();
        assert!(m.judge(&obs(100, 10), now, at(10), true).is_ok());
        let mut promoted = obs(100, 10);
        promoted.timeline = Some(2);
        let err = m.judge(&promoted, now, at(20), true).unwrap_err();
        assert_eq!(err.label(), "failover");
        promoted.caught_up_at = Some(at(19)); // caught up before the change was seen
        assert!(m.judge(&promoted, now, at(21), true).is_err());
        promoted.caught_up_at = Some(at(22));
        assert!(m.judge(&promoted, now, at(22), true).is_ok());
    }

    #[test]
    fn after_an_outage_answers_wait_for_the_follower_and_a_scan_after_it() {
        let mut m = Memory::default();
        let now = Instant::now();
        let mut o = obs(100, 10);
        o.scanned_ms.insert("Shot".into(), 9_000);
        assert!(m.judge(&o, now, at(10), true).is_ok());
        m.verdict = Some(Unvouched::NotWritable("a standby".into()));
        // Back at 20; the follower last caught up at 10.
        let err = m.judge(&o, now, at(20), true).unwrap_err();
        assert_eq!(err, Unvouched::CatchingUp);
        m.verdict = Some(err);
        o.caught_up_at = Some(at(21));
        let pass = m.judge(&o, now, at(21), true).unwrap();
        assert_eq!(pass, BTreeSet::from(["Shot".to_string()]));
        m.verdict = None;
        o.scanned_ms.insert("Shot".into(), 22_000);
        assert!(m.judge(&o, now, at(22), true).unwrap().is_empty());
        // An outage no check saw (the address was closed between two) counts too.
        m.outage();
        assert_eq!(
            m.judge(&o, now, at(30), true).unwrap_err(),
            Unvouched::CatchingUp
        );
    }

    #[test]
    fn a_read_only_server_is_never_vouched_for() {
        let mut m = Memory::default();
        let mut o = obs(100, 10);
        o.not_writable = Some("in recovery".into());
        let err = m.judge(&o, Instant::now(), at(10), true).unwrap_err();
        assert_eq!(err.label(), "not_writable");
    }

    #[test]
    fn a_follower_without_progress_stops_answers_while_the_site_is_up() {
        let mut m = Memory::default();
        let t0 = Instant::now();
        assert!(m.judge(&obs(100, 10), t0, at(10), true).is_ok());
        let later = t0 + FOLLOWER_QUIET + Duration::from_secs(1);
        assert!(m.judge(&obs(100, 10), later, at(80), false).is_ok());
        let err = m.judge(&obs(100, 10), later, at(80), true).unwrap_err();
        assert_eq!(err.label(), "follower_stopped");
        assert!(m.judge(&obs(100, 81), later, at(81), true).is_ok());
    }

    #[test]
    fn unsynced_types_pass_through_until_caught_up_or_scanned_after_the_write() {
        let mut m = Memory::default();
        let now = Instant::now();
        m.unsynced.insert("Shot".into(), at(50));
        m.unsynced.insert("Asset".into(), at(50));
        let mut o = obs(100, 40);
        o.scanned_ms.insert("Asset".into(), 51_000);
        let pass = m.judge(&o, now, at(52), true).unwrap();
        assert_eq!(pass, BTreeSet::from(["Shot".to_string()]));
        let pass = m.judge(&obs(101, 60), now, at(60), true).unwrap();
        assert!(pass.is_empty());
        assert!(m.unsynced.is_empty());
    }

    #[test]
    fn a_type_whose_scan_went_back_passes_through_until_scanned_again() {
        let mut m = Memory::default();
        let now = Instant::now();
        let mut o = obs(100, 10);
        o.scanned_ms.insert("Shot".into(), 5_000);
        assert!(m.judge(&o, now, at(10), true).unwrap().is_empty());
        o.scanned_ms.insert("Shot".into(), 4_000);
        o.caught_up_at = Some(at(11));
        assert_eq!(m.judge(&o, now, at(11), true).unwrap().len(), 1);
        o.scanned_ms.insert("Shot".into(), 6_000);
        o.caught_up_at = Some(at(12));
        assert!(m.judge(&o, now, at(12), true).unwrap().is_empty());
    }
}
