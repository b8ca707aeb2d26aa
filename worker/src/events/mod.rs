//! `sgcache-worker events`: follows EventLogEntry and applies every change to a cached type.
//!
//! Each poll reads up to 500 events after the saved position (id ascending) plus any backlog
//! ids that became visible late, applies them and saves the new position in the same
//! transaction, so a crash at any point loses nothing and applies nothing twice. Only the
//! instance holding the leader lock polls; others wait as hot standbys.

pub mod apply;
pub mod log;
pub mod metrics;
pub mod parse;
pub mod position;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sgcache::site::SiteClient;
use sgcache::spec::process_env;
use sgcache::sql::Db;
use sgcache::storage;
use sgcache::ShotgunCacheSpec;
use tokio_util::sync::CancellationToken;

use self::apply::{apply_batch, ApplyError};
use self::metrics::EventsMetrics;
use self::parse::{parse, Event, EVENT_FIELDS};
use self::position::{now_ms, Position};
use crate::observe::Role;
use crate::sync::backoff::{sleep_or_stop, Backoff};
use crate::sync::connect_db;
use crate::sync::leader::{Leader, EVENTS_LOCK_KEY};
use crate::sync::schema_follow;
use crate::sync::site_reader::{cond, Liveness, ReadError, SiteReader};
use crate::sync::start::{ensure_position, StartError};

/// Events read per poll: the official daemon's batch size and the usual page maximum.
pub const BATCH: u32 = 500;

/// Consecutive failed polls after which the follower reports itself stuck (an error log line;
/// the count is in `_sgcache_events.failures` from the first failure, for the proxy's
/// `sgcache_proxy_events_failures` metric and the operator).
const STUCK_AFTER: u32 = 5;

/// Settings of the follower.
#[derive(Clone, Debug)]
pub struct FollowerConfig {
    pub poll_interval: Duration,
    pub gap_window: Duration,
    /// For following the site's schema when it logs a field created or changed, and the
    /// kept event log's settings (`spec.event_log`).
    pub spec: Arc<ShotgunCacheSpec>,
}

impl FollowerConfig {
    pub fn from_spec(spec: &ShotgunCacheSpec) -> FollowerConfig {
        FollowerConfig {
            poll_interval: spec.workers.events.poll_interval.duration(),
            gap_window: spec.workers.events.gap_window.duration(),
            spec: Arc::new(spec.clone()),
        }
    }
}

/// Runs the follower until `stop`.
pub async fn run(spec: &ShotgunCacheSpec, stop: CancellationToken) -> anyhow::Result<()> {
    run_observed(spec, stop, Arc::new(EventsMetrics::for_spec(spec))).await
}

/// Runs the follower until `stop`, recording its progress in `obs` (served by the caller).
pub async fn run_observed(
    spec: &ShotgunCacheSpec,
    stop: CancellationToken,
    obs: Arc<EventsMetrics>,
) -> anyhow::Result<()> {
    let url = spec.database_url(&process_env);
    let conn = spec.site_connection(&process_env)?;
    let site_url = conn.url.clone();
    let reader = SiteReader::new(SiteClient::new(conn)?, stop.clone(), BATCH);
    let config = FollowerConfig::from_spec(spec);
    let Some(db) = connect_db(&url, spec.database.max_connections.min(4), &stop).await else {
        return Ok(());
    };
    crate::site_binding::check(&db, &site_url).await?;
    reader.attach_db(db.clone());
    let trim_stop = stop.child_token();
    let trim = tokio::spawn(log::trim_loop(
        db.clone(),
        spec.event_log.clone(),
        log::TRIM_EVERY,
        obs.clone(),
        trim_stop.clone(),
    ));
    tracing::info!(
        poll_ms = config.poll_interval.as_millis() as u64,
        gap_window_s = config.gap_window.as_secs(),
        "event follower starting"
    );
    while let Some(mut leader) =
        Leader::acquire(&url, EVENTS_LOCK_KEY, &db, &obs.heartbeat, &stop).await
    {
        // A lost lock stops the work at once, mid-batch included (its transaction rolls back).
        let lost = leader.lost();
        tokio::select! {
            _ = follow(&db, &reader, &mut leader, &config, &obs, &lost) => {}
            _ = lost.cancelled() => {}
        }
        leader.release().await;
        obs.set_role(Role::Standby);
        if stop.is_cancelled() {
            break;
        }
    }
    trim_stop.cancel();
    let _ = trim.await;
    db.close().await;
    tracing::info!("event follower stopped");
    Ok(())
}

/// Polls while this process is the leader.
async fn follow(
    db: &Db,
    reader: &SiteReader,
    leader: &mut Leader,
    config: &FollowerConfig,
    obs: &EventsMetrics,
    stop: &CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    // The saved failure count may be an earlier process's (before a restart, a key
    // rotation): the first success of this one clears it too.
    let mut saved_clear = false;
    let mut next_behind_check = Instant::now();
    loop {
        if stop.is_cancelled() {
            return;
        }
        if !leader.alive().await {
            tracing::warn!("lost the leader lock's connection; re-acquiring");
            return;
        }
        if Instant::now() >= next_behind_check {
            next_behind_check = Instant::now() + BEHIND_CHECK;
            if let Err(e) = rescan_if_site_behind(db, reader).await {
                // Checked again soon, not a full BEHIND_CHECK later: until it succeeds the
                // follower may be reading past a restored site's newest event.
                next_behind_check = Instant::now() + BEHIND_RETRY;
                tracing::warn!(error = %e, "cannot compare the event position with the site");
            }
        }
        match poll_once(db, reader, config, obs).await {
            Ok(n) => {
                obs.heartbeat.beat();
                if backoff.failures > 0 || !saved_clear {
                    report_failures(db, 0, None).await;
                    saved_clear = true;
                }
                backoff.reset();
                if n < BATCH as usize && !sleep_or_stop(config.poll_interval, stop).await {
                    return;
                }
            }
            Err(PollError::Read(ReadError::Stopped)) => return,
            Err(PollError::Apply(ApplyError::LayoutChanged)) => {
                tracing::info!("cache layout changed during a batch; retrying with the new layout");
            }
            Err(e) => {
                obs.failed();
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, failures = backoff.failures,
                    retry_in_ms = delay.as_millis() as u64, "event poll failed; backing off");
                if backoff.failures == STUCK_AFTER {
                    tracing::error!(error = %e, failures = backoff.failures,
                        "the event follower keeps failing at the same position; types will go stale past maxLag");
                }
                report_failures(db, i64::from(backoff.failures), Some(&e.to_string())).await;
                if !sleep_or_stop(delay, stop).await {
                    return;
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// How often the follower checks that the site's event log has not gone behind its position
/// (the site restored from a backup): at start, then at this pace.
const BEHIND_CHECK: Duration = Duration::from_secs(60);
/// How soon a check that failed (the site or the database unreachable) is tried again.
const BEHIND_RETRY: Duration = Duration::from_secs(2);

/// A saved position ahead of the site's newest event means the cached rows did not come from
/// this site's event history (a restored site, or another one at the same address), and the
/// events that would correct them will never come. Every cached type is then read again in
/// full (its fields go back to `pending`, so the proxy passes them through until the scanner
/// has refilled them) and following restarts from the site's newest event. True when so.
pub async fn rescan_if_site_behind(db: &Db, reader: &SiteReader) -> Result<bool, PollError> {
    let Some(saved) = storage::read_event_position(db)
        .await?
        .and_then(|p| p.last_event_id)
    else {
        return Ok(false);
    };
    let newest = reader.newest_event_id().await?.unwrap_or(0);
    if saved <= newest {
        return Ok(false);
    }
    let mut tx = storage::begin_exclusive(db).await?;
    let fields = storage::restart_backfills(&mut tx).await?;
    let restart = Position {
        last: newest,
        backlog: Default::default(),
    };
    storage::write_event_position(&mut tx, &restart.to_saved()).await?;
    // The kept log starts again from the new position (its events were another history's).
    storage::event_log::drop_window(&mut tx).await?;
    tx.commit().await?;
    tracing::warn!(
        saved_event_id = saved,
        site_newest_event_id = newest,
        fields,
        "the site's event log is behind the cache (a restored or different site): reading every \
         cached type again in full; reads pass through to the site until then"
    );
    Ok(true)
}

/// One poll: returns how many new events were read.
pub async fn poll_once(
    db: &Db,
    reader: &SiteReader,
    config: &FollowerConfig,
    obs: &EventsMetrics,
) -> Result<usize, PollError> {
    if !ensure_position(db, reader).await? {
        return Ok(0); // not migrated yet
    }
    let mut state = storage::read_state(db).await?;
    let Some(saved) = storage::read_event_position(db).await? else {
        return Ok(0);
    };
    let current = Position::from_saved(&saved);
    obs.position(current.last, current.backlog.len());
    let fields: Vec<String> = EVENT_FIELDS.iter().map(|s| s.to_string()).collect();
    // A read returning less than a batch saw the site's newest event: once applied, the cache
    // matched the site as of this instant (what bounded staleness measures).
    let read_at = chrono::Utc::now();
    let newer = reader
        .read(
            "EventLogEntry",
            &fields,
            vec![cond("id", "greater_than", json!([current.last]))],
            Liveness::Active,
            None,
            BATCH,
        )
        .await?;
    let at_head = newer.len() < BATCH as usize;
    observe_site(reader, obs, &newer, current.last, at_head).await;
    let late = read_backlog(reader, &fields, &current).await?;
    let mut events: Vec<Event> = late.iter().chain(newer.iter()).filter_map(parse).collect();
    events.sort_by_key(|e| e.id);
    events.dedup_by_key(|e| e.id);
    let late_ids: BTreeSet<i64> = late.iter().filter_map(|r| r.get("id")?.as_i64()).collect();
    let new_ids: Vec<(i64, Option<i64>)> = events
        .iter()
        .filter(|e| e.id > current.last)
        .map(|e| (e.id, e.created_at.map(|t| t.timestamp_millis())))
        .collect();
    if events
        .iter()
        .any(|e| e.id > current.last && e.entity_type == "DisplayColumn")
    {
        // Fields created or changed on the site: the layout follows before the batch is
        // applied, so a retyped field's new values land in its rebuilt storage.
        match schema_follow::follow(db, reader, &config.spec, "DisplayColumn event").await {
            Ok(0) => {}
            Ok(_) => state = storage::read_state(db).await?,
            Err(e) => tracing::warn!(error = %e, "cannot follow the site's schema after a \
                DisplayColumn event; the scanner checks again on its timer"),
        }
    }
    let mut next = current.clone();
    let window = config.gap_window.as_millis() as i64;
    let advance = next.advance_timed(
        &new_ids,
        &late_ids.iter().copied().collect::<Vec<_>>(),
        now_ms(),
        window,
    );
    for id in &advance.given_up {
        tracing::warn!(
            event_id = id,
            "event id never appeared within the gap window; giving up on it"
        );
    }
    if next == current {
        if at_head {
            mark_caught_up(db, read_at).await?;
            obs.pending_since(None);
        }
        return Ok(0);
    }
    // The oldest change read and not committed yet: the lag until the batch commits.
    let created = |e: &Event| e.created_at.map(|t| t.timestamp_millis());
    obs.pending_since(events.iter().filter_map(created).min());
    let started = Instant::now();
    let records = late.iter().chain(newer.iter());
    let log = log::LogWrite::new(&config.spec.event_log, records, &current, &next);
    let applied = apply_batch(
        db,
        reader,
        &state,
        &events,
        &late_ids,
        (&current, &next),
        &log,
    )
    .await?;
    if at_head {
        mark_caught_up(db, read_at).await?;
    }
    obs.position(next.last, next.backlog.len());
    // Past a full batch more events wait; the next one is no older than this batch's newest.
    obs.pending_since(
        (!at_head)
            .then(|| events.iter().filter_map(created).max())
            .flatten(),
    );
    for e in &events {
        obs.applied(&e.kind);
    }
    obs.dead_letters(applied.unstorable);
    obs.log_stored(applied.logged);
    obs.gaps(advance.new_missing as u64, advance.given_up.len() as u64);
    tracing::info!(
        after = current.last,
        through = next.last,
        late = ?late_ids,
        events = events.len(),
        relevant = applied.relevant,
        entities = applied.entities,
        fetched = applied.fetched,
        rows = applied.written,
        logged = applied.logged,
        backlog = next.backlog.len(),
        ms = started.elapsed().as_millis() as u64,
        "events committed"
    );
    Ok(newer.len())
}

/// Publishes the newest event id the site has: the last one read when the read reached the
/// head of the log, else one more read (once per full batch) asks the site for it.
async fn observe_site(
    reader: &SiteReader,
    obs: &EventsMetrics,
    newer: &[Value],
    last: i64,
    at_head: bool,
) {
    let read_max = newer
        .iter()
        .filter_map(|r| r.get("id")?.as_i64())
        .max()
        .unwrap_or(last);
    if at_head {
        obs.site_newest(read_max.max(last));
        return;
    }
    match reader.newest_event_id().await {
        Ok(newest) => obs.site_newest(newest.unwrap_or(read_max).max(read_max)),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the site's newest event id");
            obs.site_newest(read_max);
        }
    }
}

/// Saves the count of consecutive failed polls; a database that fails too is only logged.
async fn report_failures(db: &Db, failures: i64, error: Option<&str>) {
    if let Err(e) = storage::record_follower_failures(db, failures, error).await {
        tracing::debug!(error = %e, "could not record the follower's failures");
    }
}

/// Records that every event up to the site's newest as of `at` is applied.
async fn mark_caught_up(db: &Db, at: chrono::DateTime<chrono::Utc>) -> Result<(), PollError> {
    let mut tx = db.begin().await?;
    storage::mark_caught_up(&mut tx, at).await?;
    tx.commit().await?;
    Ok(())
}

/// Backlog ids that have become visible since they were missed.
async fn read_backlog(
    reader: &SiteReader,
    fields: &[String],
    current: &Position,
) -> Result<Vec<Value>, ReadError> {
    let ids: Vec<i64> = current.backlog.keys().copied().collect();
    let mut found = Vec::new();
    for chunk in ids.chunks(BATCH as usize) {
        let (lo, hi) = (chunk[0], chunk[chunk.len() - 1]);
        let conditions = vec![
            cond("id", "between", json!([lo, hi])),
            cond("id", "in", json!(chunk)),
        ];
        found.extend(
            reader
                .read(
                    "EventLogEntry",
                    fields,
                    conditions,
                    Liveness::Active,
                    None,
                    BATCH,
                )
                .await?,
        );
    }
    Ok(found)
}
