//! Full scans of one entity type: backfills of pending fields and types, and manual `--full`
//! runs. Pages are keyset pages (`id > cursor`), fetched one ahead of the writer through a
//! bounded channel (memory stays flat whatever the table size), each written in its own
//! transaction together with the backfill cursor, so a crash resumes at the last page. The
//! last page marks the fields ready in the same transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sgcache::plan::FieldState;
use sgcache::sql::Db;
use sgcache::storage::{self, StorageError};
use tokio::sync::mpsc;

use super::fetch::{Liveness, ReadError, SiteReader};
use super::incremental::record_scan_start;
use super::write::{existing_ids, write_read};

/// What to scan.
#[derive(Clone, Debug, Default)]
pub struct ScanRequest {
    pub entity_type: String,
    /// Fields to read (`updated_at` is added for the guards).
    pub fields: Vec<String>,
    /// Pending fields this scan completes: progress is saved on them and the last page marks
    /// them ready.
    pub finalize: Vec<String>,
    /// Resume after this id.
    pub start_after: i64,
    /// Entities already done before `start_after` (for progress).
    pub done_before: i64,
    /// Extra conditions (the `--projects` filter).
    pub extra: Vec<Value>,
    /// Mark cached live rows the scan did not see as retired (only for unfiltered scans).
    pub retire_missing: bool,
    /// `fields` is not every live field: rows the cache lacks are fetched whole instead.
    pub complete_rows: bool,
    /// The scan read every live field of every row: it counts as an incremental scan from
    /// the time it started.
    pub record_scan: bool,
}

/// Counts of a finished scan.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanStats {
    pub read: u64,
    pub written: u64,
    pub retired_missing: u64,
    pub pages: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// One page of the type: live rows after `after` (through `through` when the page was full)
/// and the retired rows of the same id range.
struct Page {
    after: i64,
    through: Option<i64>,
    active: Vec<Value>,
    retired: Vec<Value>,
}

fn last_id(rows: &[Value]) -> Option<i64> {
    rows.last()
        .and_then(|r| r.get("id"))
        .and_then(Value::as_i64)
}

/// Reads pages in id order into `tx`, one page ahead of the writer.
async fn produce(
    reader: Arc<SiteReader>,
    req: ScanRequest,
    fields: Vec<String>,
    tx: mpsc::Sender<Result<Page, ReadError>>,
) {
    let mut cursor = req.start_after;
    let per = reader.page_size as usize;
    loop {
        let page = async {
            let active = reader
                .page_after(
                    &req.entity_type,
                    &fields,
                    cursor,
                    None,
                    &req.extra,
                    Liveness::Active,
                )
                .await?;
            let through = (active.len() >= per).then(|| last_id(&active)).flatten();
            let mut retired = Vec::new();
            let mut r_cursor = cursor;
            loop {
                let rows = reader
                    .page_after(
                        &req.entity_type,
                        &fields,
                        r_cursor,
                        through,
                        &req.extra,
                        Liveness::Retired,
                    )
                    .await?;
                let full = rows.len() >= per;
                r_cursor = last_id(&rows).unwrap_or(r_cursor);
                retired.extend(rows);
                if !full {
                    break;
                }
            }
            Ok(Page {
                after: cursor,
                through,
                active,
                retired,
            })
        }
        .await;
        let next = match &page {
            Ok(p) => p.through,
            Err(_) => None,
        };
        let is_err = page.is_err();
        if tx.send(page).await.is_err() || is_err {
            return;
        }
        match next {
            Some(t) => cursor = t,
            None => return,
        }
    }
}

/// Runs one full scan of a type.
pub async fn scan_type(
    db: &Db,
    reader: Arc<SiteReader>,
    req: ScanRequest,
) -> Result<ScanStats, ScanError> {
    let ty = req.entity_type.clone();
    let started_ms = chrono::Utc::now().timestamp_millis();
    let mut fields = req.fields.clone();
    if !fields.iter().any(|f| f == "updated_at") {
        fields.push("updated_at".into());
    }
    let total = count(&reader, &ty, &req.extra).await;
    if !req.finalize.is_empty() {
        let mut tx = db.begin().await?;
        storage::set_field_state(&mut tx, &ty, &req.finalize, FieldState::Backfilling).await?;
        tx.commit().await?;
    }
    tracing::info!(entity_type = %ty, fields = fields.len(), total, resume_after = req.start_after,
        backfill = req.finalize.len(), "full scan started");
    let (send, mut recv) = mpsc::channel(2);
    let producer = tokio::spawn(produce(reader.clone(), req.clone(), fields.clone(), send));
    let mut stats = ScanStats::default();
    let mut done = req.done_before;
    let t0 = Instant::now();
    let mut last_log = Instant::now();
    let result: Result<(), ScanError> = loop {
        let Some(page) = recv.recv().await else {
            break Ok(());
        };
        let mut page = match page {
            Ok(p) => p,
            Err(e) => break Err(e.into()),
        };
        if req.complete_rows {
            complete(db, &reader, &ty, &mut page).await?;
        }
        let n = (page.active.len() + page.retired.len()) as u64;
        let is_last = page.through.is_none();
        let seen_max = page
            .active
            .iter()
            .chain(&page.retired)
            .filter_map(|r| r.get("id")?.as_i64())
            .max();
        let cursor = page.through.or(seen_max).unwrap_or(page.after);
        let mut tx = db.begin().await?;
        let state = storage::read_state_tx(&mut tx).await?;
        if !state.types.contains_key(&ty) {
            tracing::warn!(entity_type = %ty, "type no longer cached; scan stopped");
            break Ok(());
        }
        stats.written += write_read(&mut tx, &state, &ty, &page.active, &page.retired)
            .await?
            .written;
        if req.retire_missing && req.extra.is_empty() {
            if let Some(through) = page.through.or(seen_max) {
                let seen: Vec<i64> = page
                    .active
                    .iter()
                    .filter_map(|r| r.get("id")?.as_i64())
                    .collect();
                stats.retired_missing +=
                    storage::retire_missing(&mut tx, &state, &ty, page.after, Some(through), &seen)
                        .await?;
            }
        }
        done += n as i64;
        if !req.finalize.is_empty() {
            storage::set_backfill_progress(&mut tx, &ty, &req.finalize, Some(cursor), done, total)
                .await?;
            if is_last {
                storage::set_field_state(&mut tx, &ty, &req.finalize, FieldState::Ready).await?;
            }
        }
        if is_last && req.record_scan {
            record_scan_start(&mut tx, &ty, started_ms).await?;
        }
        tx.commit().await?;
        stats.read += n;
        stats.pages += 1;
        if last_log.elapsed() >= Duration::from_secs(5) || is_last {
            last_log = Instant::now();
            let rate = stats.read as f64 / t0.elapsed().as_secs_f64().max(1e-3);
            let eta_s = total.map(|t| ((t - done).max(0) as f64 / rate.max(1e-3)).round() as u64);
            tracing::info!(entity_type = %ty, done, total, rate = rate.round() as u64, eta_s,
                pages = stats.pages, "scan progress");
        }
        if is_last {
            break Ok(());
        }
    };
    producer.abort();
    result?;
    tracing::info!(entity_type = %ty, read = stats.read, written = stats.written,
        retired_missing = stats.retired_missing, secs = t0.elapsed().as_secs_f64(),
        ready = req.finalize.len(), "full scan finished");
    Ok(stats)
}

/// Replaces records of rows the cache lacks by whole records, so a backfill of a few fields
/// never creates a row whose other (ready) fields are empty.
async fn complete(
    db: &Db,
    reader: &SiteReader,
    ty: &str,
    page: &mut Page,
) -> Result<(), ScanError> {
    let ids: Vec<i64> = page
        .active
        .iter()
        .chain(&page.retired)
        .filter_map(|r| r.get("id")?.as_i64())
        .collect();
    let mut tx = db.begin().await?;
    let found = existing_ids(&mut tx, ty, &ids).await?;
    let state = storage::read_state_tx(&mut tx).await?;
    drop(tx);
    let missing: Vec<i64> = ids.into_iter().filter(|i| !found.contains(i)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let all: Vec<String> = state.live_fields(ty).map(|(n, _)| n.clone()).collect();
    let (active, retired) = reader.fetch_ids(ty, &all, &missing).await?;
    let keep = |rows: &mut Vec<Value>, whole: Vec<Value>| {
        rows.retain(|r| {
            r.get("id")
                .and_then(Value::as_i64)
                .is_some_and(|i| found.contains(&i))
        });
        rows.extend(whole);
    };
    keep(&mut page.active, active);
    keep(&mut page.retired, retired);
    Ok(())
}

/// Live rows of the type (for progress and ETA); None when the site cannot say.
async fn count(reader: &SiteReader, ty: &str, extra: &[Value]) -> Option<i64> {
    let payload = json!({
        "type": ty,
        "filters": {"logical_operator": "and", "conditions": extra},
        "summaries": [{"field": "id", "type": "record_count"}],
    });
    let answer = reader.call("summarize", &payload).await.ok()?;
    let n = answer.get("summaries")?.get("id")?;
    n.as_i64().or_else(|| n.as_str()?.parse().ok())
}
