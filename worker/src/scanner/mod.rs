//! `sgcache-worker scanner`: backfills pending fields and types with full scans, and scans
//! every cached type for rows whose `updated_at` moved (writes that made no event). Before
//! each round of those scans it compares the cached fields with the site's schema
//! ([`drift`]): a field the site retyped or deleted since the last migrate stops being served.
//!
//! Without flags it runs until stopped: it looks for pending fields every few seconds and
//! runs an incremental scan of every type every `workers.scanner.interval`. `--full` runs one
//! full scan (of `--types`, restricted to `--projects`) and exits.

pub mod backfill;
pub mod drift;
pub mod incremental;
pub mod metrics;
mod relink;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sgcache::plan::FieldState;
use sgcache::schema::SiteSchema;
use sgcache::site::SiteClient;
use sgcache::spec::process_env;
use sgcache::sql::Db;
use sgcache::storage::{self, FieldStatus};
use sgcache::ShotgunCacheSpec;
use tokio_util::sync::CancellationToken;

use self::backfill::{scan_type, ScanError, ScanRequest};
use self::metrics::ScannerMetrics;
use crate::observe::Role;
use crate::sync::backoff::{sleep_or_stop, Backoff};
use crate::sync::connect_db;
use crate::sync::leader::{Leader, SCANNER_LOCK_KEY};
use crate::sync::schema_follow;
use crate::sync::site_reader::{cond, ReadError, SiteReader};
use crate::sync::start::{ensure_position, StartError};

/// The scanner's command-line options.
#[derive(Clone, Debug, Default)]
pub struct ScannerArgs {
    /// Run one full scan and exit.
    pub full: bool,
    /// Only these types (all cached types when empty).
    pub types: Vec<String>,
    /// Only rows of these project ids (full scans; no retiring of unseen rows).
    pub projects: Vec<i64>,
}

/// How often the loop looks for pending fields: a newly declared field starts filling within
/// seconds of its migration, not a whole scan interval later.
pub(crate) const PENDING_CHECK: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ScannerError {
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
}

/// Runs the scanner until `stop` (or, with `--full`, until the scan is done).
pub async fn run(
    spec: &ShotgunCacheSpec,
    args: ScannerArgs,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    run_observed(spec, args, stop, Arc::new(ScannerMetrics::for_spec(spec))).await
}

/// [`run`], recording progress in `obs` (served by the caller).
pub async fn run_observed(
    spec: &ShotgunCacheSpec,
    args: ScannerArgs,
    stop: CancellationToken,
    obs: Arc<ScannerMetrics>,
) -> anyhow::Result<()> {
    let url = spec.database_url(&process_env);
    let conn = spec.site_connection(&process_env)?;
    let site_url = conn.url.clone();
    let mut reader = SiteReader::new(
        SiteClient::new(conn)?,
        stop.clone(),
        spec.workers.scanner.page_size,
    );
    // The site's page cap and the database, asked at once; a refusal from the site ends the
    // start without waiting for a database that is down.
    let connect = async {
        connect_db(&url, spec.database.max_connections.min(4), &stop)
            .await
            .ok_or(ReadError::Stopped)
    };
    let db = match tokio::try_join!(reader.fit_page_size_to_site(), connect) {
        Ok(((), db)) => db,
        Err(ReadError::Stopped) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let reader = Arc::new(reader);
    crate::site_binding::check(&db, &site_url).await?;
    reader.attach_db(db.clone());
    let result = if args.full {
        full_run(&db, &reader, &args, &obs)
            .await
            .map_err(anyhow::Error::from)
    } else {
        while let Some(mut leader) =
            Leader::acquire(&url, SCANNER_LOCK_KEY, &db, &obs.heartbeat, &stop).await
        {
            // A lost lock stops the scan at once (its page's transaction rolls back).
            let lost = leader.lost();
            tokio::select! {
                _ = scan_loop(&db, &reader, spec, &args, &mut leader, &obs, &lost) => {}
                _ = lost.cancelled() => {}
            }
            leader.release().await;
            obs.set_role(Role::Standby);
            if stop.is_cancelled() {
                break;
            }
        }
        Ok(())
    };
    db.close().await;
    tracing::info!("scanner stopped");
    result
}

fn selected<'a>(args: &ScannerArgs, types: impl Iterator<Item = &'a String>) -> Vec<String> {
    types
        .filter(|t| args.types.is_empty() || args.types.contains(t))
        .cloned()
        .collect()
}

/// The `--projects` condition for a type, or None when the type cannot be filtered by
/// project (logged; the type is skipped).
fn project_filter(args: &ScannerArgs, ty: &str, fields: &[FieldStatus]) -> Option<Vec<Value>> {
    if args.projects.is_empty() {
        return Some(vec![]);
    }
    if ty == "Project" {
        return Some(vec![cond("id", "in", json!(args.projects))]);
    }
    if !fields
        .iter()
        .any(|f| f.entity_type == ty && f.field_name == "project")
    {
        tracing::warn!(
            entity_type = ty,
            "--projects given but the type caches no project field; skipped"
        );
        return None;
    }
    let links: Vec<Value> = args
        .projects
        .iter()
        .map(|id| json!({"type": "Project", "id": id}))
        .collect();
    Some(vec![cond("project", "in", json!(links))])
}

async fn full_run(
    db: &Db,
    reader: &Arc<SiteReader>,
    args: &ScannerArgs,
    obs: &Arc<ScannerMetrics>,
) -> Result<(), ScannerError> {
    ensure_position(db, reader).await?;
    let state = storage::read_state(db).await?;
    let fields = storage::list_fields(db).await?;
    for ty in selected(args, state.types.keys()) {
        let Some(extra) = project_filter(args, &ty, &fields) else {
            continue;
        };
        let live: Vec<&FieldStatus> = fields
            .iter()
            .filter(|f| f.entity_type == ty && f.state != FieldState::Dropped)
            .collect();
        let whole = extra.is_empty();
        let req = ScanRequest {
            entity_type: ty.clone(),
            fields: live.iter().map(|f| f.field_name.clone()).collect(),
            has_updated_at: has_updated_at(&live),
            // Only a scan of every row completes a backfill.
            finalize: if whole { pending_names(&live) } else { vec![] },
            retire_missing: whole,
            record_scan: whole,
            extra,
            ..ScanRequest::default()
        };
        scan_type(db, reader.clone(), req, obs).await?;
    }
    Ok(())
}

/// The plan caches `updated_at` with every type whose schema has it (for scans).
fn has_updated_at(live: &[&FieldStatus]) -> bool {
    live.iter().any(|f| f.field_name == "updated_at")
}

fn pending_names(fields: &[&FieldStatus]) -> Vec<String> {
    fields
        .iter()
        .filter(|f| f.state.to_fill())
        .map(|f| f.field_name.clone())
        .collect()
}

async fn scan_loop(
    db: &Db,
    reader: &Arc<SiteReader>,
    spec: &ShotgunCacheSpec,
    args: &ScannerArgs,
    leader: &mut Leader,
    obs: &Arc<ScannerMetrics>,
    stop: &CancellationToken,
) {
    let interval = spec.workers.scanner.interval.duration();
    let overlap_ms = spec.workers.scanner.overlap.as_millis_i64();
    let mut next_incremental = Instant::now();
    // None: when the schema was last checked is still to be read from the cache.
    let mut next_schema: Option<Instant> = None;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        if stop.is_cancelled() || !leader.alive().await {
            return;
        }
        let round = async {
            let due = match next_schema {
                Some(at) => at,
                None => first_schema_check(db, spec).await,
            };
            // The starting event position (read from the site once, on a first start) and the
            // site's schema are two questions that need nothing from each other: asked at once.
            let (positioned, schema) = tokio::join!(ensure_position(db, reader), async {
                if Instant::now() >= due {
                    let read_ms = chrono::Utc::now().timestamp_millis();
                    Some((read_ms, reader.schema().await))
                } else {
                    None
                }
            });
            if !positioned? {
                return Ok::<_, ScannerError>(()); // not migrated yet
            }
            next_schema = Some(match schema {
                Some((read_ms, schema)) => {
                    Instant::now() + follow_schema(db, schema, read_ms, spec).await
                }
                None => due,
            });
            backfill_pending(db, reader, args, obs).await?;
            if Instant::now() >= next_incremental {
                let started = Instant::now();
                let state = storage::read_state(db).await?;
                let types = selected(args, state.types.keys());
                // Fields the site retyped or deleted stop being served before anything reads
                // them again (their cached values may all be stale).
                drift::check_schema(db, reader, &types, obs).await?;
                for ty in types {
                    incremental::scan_changed(db, reader, &ty, overlap_ms, &[], obs).await?;
                }
                // Only a round that completed waits a whole interval: a failed one is retried
                // after the backoff below (types done already are quick to scan again).
                next_incremental = started + interval;
            }
            Ok(())
        };
        match round.await {
            Ok(()) => {
                obs.heartbeat.beat();
                backoff.reset();
            }
            Err(ScannerError::Scan(ScanError::Read(ReadError::Stopped))) => return,
            Err(e) => {
                obs.failed();
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, failures = backoff.failures,
                    retry_in_ms = delay.as_millis() as u64, "scan failed; backing off");
                if !sleep_or_stop(delay, stop).await {
                    return;
                }
                continue;
            }
        }
        let wait = next_incremental
            .saturating_duration_since(Instant::now())
            .min(PENDING_CHECK);
        if !sleep_or_stop(wait, stop).await {
            return;
        }
    }
}

/// When the first check of the site's schema is due: a `schemaInterval` after the last read
/// of it that the layout was brought to for this spec (the operator's migration, seconds
/// before a scanner starts, or an earlier scanner's check), else at once. Reading the whole
/// schema again first would hold the first backfill back by as long as the read takes.
async fn first_schema_check(db: &Db, spec: &ShotgunCacheSpec) -> Instant {
    let interval = spec.workers.scanner.schema_interval.duration();
    match storage::schema_checked_ms(db, spec).await {
        Ok(Some(read_ms)) => {
            // A read stamped ahead of this clock counts as just now.
            let age_ms = (chrono::Utc::now().timestamp_millis() - read_ms).max(0);
            let age = Duration::from_millis(age_ms as u64);
            tracing::debug!(
                age_ms,
                "the site's schema was read and followed recently: next check after schemaInterval"
            );
            Instant::now() + interval.saturating_sub(age)
        }
        Ok(None) => Instant::now(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read when the schema was last checked; checking now");
            Instant::now()
        }
    }
}

/// Follows the site's schema, as read at `read_ms` (see `crate::sync::schema_follow`);
/// returns when to check again: after `schemaInterval`, or soon when the check failed.
async fn follow_schema(
    db: &Db,
    site: Result<SiteSchema, ReadError>,
    read_ms: i64,
    spec: &ShotgunCacheSpec,
) -> Duration {
    let followed = match site {
        Ok(site) => schema_follow::follow_read(db, &site, read_ms, spec, "schemaInterval").await,
        Err(e) => Err(e.into()),
    };
    match followed {
        Ok(_) => spec.workers.scanner.schema_interval.duration(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot follow the site's schema; trying again soon");
            SCHEMA_RETRY
        }
    }
}

/// How soon a failed schema check is tried again.
const SCHEMA_RETRY: Duration = Duration::from_secs(10);

/// Backfills every type that has pending or backfilling fields, resuming from its cursor.
async fn backfill_pending(
    db: &Db,
    reader: &Arc<SiteReader>,
    args: &ScannerArgs,
    obs: &Arc<ScannerMetrics>,
) -> Result<(), ScannerError> {
    let fields = storage::list_fields(db).await?;
    publish_backfills(&fields, obs);
    let mut by_type: BTreeMap<&str, Vec<&FieldStatus>> = BTreeMap::new();
    for f in fields.iter().filter(|f| f.state != FieldState::Dropped) {
        by_type.entry(f.entity_type.as_str()).or_default().push(f);
    }
    let mut reqs = Vec::new();
    for (ty, live) in by_type {
        if !(args.types.is_empty() || args.types.iter().any(|t| t == ty)) {
            continue;
        }
        let pending: Vec<&FieldStatus> =
            live.iter().copied().filter(|f| f.state.to_fill()).collect();
        if pending.is_empty() {
            continue;
        }
        let whole_type = pending.len() == live.len();
        let started_ms = resumed_start(&pending);
        // Fields added at different times resume from the earliest cursor among them.
        let resume = pending
            .iter()
            .min_by_key(|f| f.backfill_cursor.unwrap_or(0))
            .map(|f| {
                (
                    f.backfill_cursor.unwrap_or(0),
                    if f.backfill_cursor.is_some() {
                        f.backfill_done
                    } else {
                        0
                    },
                )
            })
            .unwrap_or((0, 0));
        let req = ScanRequest {
            entity_type: ty.to_string(),
            fields: if whole_type {
                live.iter().map(|f| f.field_name.clone()).collect()
            } else {
                pending.iter().map(|f| f.field_name.clone()).collect()
            },
            finalize: pending.iter().map(|f| f.field_name.clone()).collect(),
            has_updated_at: has_updated_at(&live),
            start_after: resume.0,
            done_before: resume.1,
            retire_missing: whole_type,
            complete_rows: !whole_type,
            // A resumed backfill counts from when its first part began (rows may have changed
            // behind it since); one begun before that was kept is not recorded.
            record_scan: whole_type && (resume.0 == 0 || started_ms.is_some()),
            started_ms: started_ms.filter(|_| resume.0 != 0),
            extra: vec![],
        };
        reqs.push(req);
    }
    scan_types(db, reader, reqs, obs).await
}

/// When the backfill of `pending` fields that a crash interrupted began: the earliest start
/// among them, or `None` when one of them has a cursor without a start (or none has a cursor).
fn resumed_start(pending: &[&FieldStatus]) -> Option<i64> {
    let resumed = pending.iter().filter(|f| f.backfill_cursor.is_some());
    resumed
        .map(|f| f.backfill_started_ms)
        .collect::<Option<Vec<i64>>>()?
        .into_iter()
        .min()
}

/// How many types' backfills run at once. A first start backfills every declared type: one
/// after another, the cache was Ready only after the sum of their scans (Asset, Sequence and
/// Shot of the test site: 0.27 + 0.03 + 0.54 s); at once, after the longest. Each scan keeps
/// its own few pages in flight, so this bounds what the site sees from the scanner.
pub(crate) const TYPES_AT_ONCE: usize = 3;

/// Runs the scans, [`TYPES_AT_ONCE`] at a time. Every scan runs to its end before an error
/// is returned (the first one): a scan dropped halfway would leave its page writers running
/// beside the next round's scan of the same type.
async fn scan_types(
    db: &Db,
    reader: &Arc<SiteReader>,
    reqs: Vec<ScanRequest>,
    obs: &Arc<ScannerMetrics>,
) -> Result<(), ScannerError> {
    use futures::StreamExt;
    let results: Vec<Result<_, ScanError>> = futures::stream::iter(reqs)
        .map(|req| scan_type(db, reader.clone(), req, obs))
        .buffer_unordered(TYPES_AT_ONCE)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

/// Publishes each type's fields still to backfill and the progress saved for its backfill.
fn publish_backfills(fields: &[FieldStatus], obs: &ScannerMetrics) {
    let mut by_type: BTreeMap<&str, Vec<&FieldStatus>> = BTreeMap::new();
    for f in fields.iter().filter(|f| f.state != FieldState::Dropped) {
        by_type.entry(f.entity_type.as_str()).or_default().push(f);
    }
    for (ty, live) in by_type {
        let pending: Vec<&FieldStatus> =
            live.iter().copied().filter(|f| f.state.to_fill()).collect();
        obs.pending_fields(ty, pending.len());
        // The backfill in progress (the least advanced pending field), else the last one.
        let progress = if pending.is_empty() { &live } else { &pending };
        if let Some(f) = progress
            .iter()
            .filter(|f| f.backfill_total.is_some() || f.backfill_cursor.is_some())
            .min_by_key(|f| f.backfill_done)
        {
            obs.backfill(ty, f.backfill_done, f.backfill_total);
        }
    }
}

/// Milliseconds of a spec duration.
trait AsMillis {
    fn as_millis_i64(&self) -> i64;
}

impl AsMillis for sgcache::spec::DurationString {
    fn as_millis_i64(&self) -> i64 {
        self.duration().as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(cursor: Option<i64>, started: Option<i64>) -> FieldStatus {
        FieldStatus {
            entity_type: "Shot".into(),
            field_name: "code".into(),
            data_type: "text".into(),
            storage: "column".into(),
            state: FieldState::Backfilling,
            schema: serde_json::Value::Null,
            backfill_cursor: cursor,
            backfill_done: 0,
            backfill_total: None,
            backfill_started_ms: started,
            unservable_reason: None,
            unservable_id: None,
        }
    }

    #[test]
    fn a_resumed_backfill_starts_when_its_earliest_part_began() {
        let (a, b) = (field(Some(40), Some(2_000)), field(Some(10), Some(1_000)));
        assert_eq!(resumed_start(&[&a, &b]), Some(1_000));
        // A field added since, not yet begun, does not count.
        let fresh = field(None, None);
        assert_eq!(resumed_start(&[&a, &fresh]), Some(2_000));
        // A part begun before the start was kept: unknown.
        let old = field(Some(10), None);
        assert_eq!(resumed_start(&[&a, &old]), None);
        assert_eq!(resumed_start(&[&fresh]), None);
    }
}
