//! Full scans of one entity type: backfills of pending fields and types, and manual `--full`
//! runs. Pages are keyset pages (`id > cursor`), fetched one ahead of the writer through a
//! bounded channel (memory stays flat whatever the table size), each written in its own
//! transaction together with the backfill cursor, so a crash resumes at the last page. The
//! last page marks the fields ready in the same transaction.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sgcache::plan::FieldState;
use sgcache::sql::Db;
use sgcache::storage::{self, ReadMark, StorageError};
use tokio::sync::mpsc;

use super::metrics::{ScanKind, ScannerMetrics};
use crate::sync::site_reader::{Liveness, ReadError, SiteReader};
use crate::sync::write::write_read;
use sgcache::storage::existing_ids;
use sgcache::storage::record_scan_start;

/// What to scan.
#[derive(Clone, Debug, Default)]
pub struct ScanRequest {
    pub entity_type: String,
    /// Fields to read (`updated_at` is added for the guards when the type has it).
    pub fields: Vec<String>,
    /// The type has `updated_at`. Not every type does (a real site's `Reply` has none), and
    /// the site refuses a read that names a field the type lacks.
    pub has_updated_at: bool,
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
    /// When a backfill resumed after a crash began (its first part); `None`: now.
    pub started_ms: Option<i64>,
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
    /// Time spent reading the active and the retired rows (for the phase timings).
    read_active: Duration,
    read_retired: Duration,
    /// Taken before the page's first read: its rows never undo a write made since.
    read_at: ReadMark,
}

fn last_id(rows: &[Value]) -> Option<i64> {
    rows.last()
        .and_then(|r| r.get("id"))
        .and_then(Value::as_i64)
}

/// Reads pages in id order into `tx`, ahead of the writers. The retired rows of a page's id
/// range are read at the same time as the next page's live rows (the site serves concurrent
/// reads), so a page costs one round trip instead of two.
async fn produce(
    db: Db,
    reader: Arc<SiteReader>,
    req: ScanRequest,
    fields: Vec<String>,
    tx: mpsc::Sender<Result<Page, ScanError>>,
) {
    let per = reader.page_size as usize;
    let active_after = |after: i64| {
        let (db, reader, req, fields) = (&db, &reader, &req, &fields);
        async move {
            let read_at = storage::read_mark(db).await?;
            let t = Instant::now();
            let rows = reader
                .page_after(
                    &req.entity_type,
                    fields,
                    after,
                    None,
                    &req.extra,
                    Liveness::Active,
                )
                .await?;
            Ok::<_, ScanError>((rows, t.elapsed(), read_at))
        }
    };
    let retired_in = |after: i64, through: Option<i64>| {
        let (reader, req, fields) = (&reader, &req, &fields);
        async move {
            let t = Instant::now();
            let mut retired = Vec::new();
            let mut r_cursor = after;
            loop {
                let rows = reader
                    .page_after(
                        &req.entity_type,
                        fields,
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
            Ok::<_, ScanError>((retired, t.elapsed()))
        }
    };
    let mut cursor = req.start_after;
    let mut next = active_after(cursor).await;
    loop {
        let (active, read_active, read_at) = match next {
            Ok(a) => a,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let through = (active.len() >= per).then(|| last_id(&active)).flatten();
        let (retired, following) = match through {
            Some(t) => {
                let (r, f) = tokio::join!(retired_in(cursor, through), active_after(t));
                (r, Some(f))
            }
            None => (retired_in(cursor, None).await, None),
        };
        let page = retired.map(|(retired, read_retired)| Page {
            after: cursor,
            through,
            active,
            retired,
            read_active,
            read_retired,
            read_at,
        });
        let is_err = page.is_err();
        if tx.send(page).await.is_err() || is_err {
            return;
        }
        match (through, following) {
            (Some(t), Some(f)) => {
                cursor = t;
                next = f;
            }
            _ => return,
        }
    }
}

/// Id windows read at once.
const PARALLEL_WINDOWS: usize = 2;

/// The newest live id of the type (one row, id descending), or None for a filtered scan
/// (read in keyset pages only) or when the site does not say.
async fn newest_id(reader: &SiteReader, req: &ScanRequest) -> Option<i64> {
    if !req.extra.is_empty() {
        return None;
    }
    let newest = reader
        .read(
            &req.entity_type,
            &["id".to_string()],
            vec![],
            Liveness::Active,
            Some(("id", "desc")),
            1,
        )
        .await
        .ok()?;
    last_id(&newest)
}

/// `(width, max_id)` when the type's ids are dense enough to read in fixed id windows of
/// `width` ids (at most one page of rows each, whatever their liveness, since ids are
/// unique); None to read keyset pages only. `width` is the reader's page size, which already
/// fits the site's cap (`fit_page_size_to_site`), so a window is never cut short by the site.
fn window_plan(
    width: i64,
    start_after: i64,
    max_id: Option<i64>,
    live: Option<i64>,
) -> Option<(i64, i64)> {
    let (max_id, live) = (max_id?, live?);
    // Half-empty windows would cost more requests than keyset pages.
    (width > 0 && max_id - start_after > width && live * 2 >= max_id).then_some((width, max_id))
}

/// Reads `(after, through]` (one window): live and retired rows at once.
async fn read_window(
    db: Db,
    reader: Arc<SiteReader>,
    ty: String,
    fields: Arc<Vec<String>>,
    (after, through): (i64, i64),
) -> Result<Page, ScanError> {
    let read_at = storage::read_mark(&db).await?;
    let timed = |liveness| {
        let (reader, ty, fields) = (&reader, &ty, &fields);
        async move {
            let t = Instant::now();
            let rows = reader
                .page_after(ty, fields, after, Some(through), &[], liveness)
                .await?;
            Ok::<_, ReadError>((rows, t.elapsed()))
        }
    };
    let (active, retired) = tokio::try_join!(timed(Liveness::Active), timed(Liveness::Retired))?;
    Ok(Page {
        after,
        through: Some(through),
        active: active.0,
        retired: retired.0,
        read_active: active.1,
        read_retired: retired.1,
        read_at,
    })
}

/// Reads the type in id windows, `PARALLEL_WINDOWS` at a time, sent in id order, up to the
/// newest id seen at the start; then keyset pages from there (rows created since, and the
/// last page, which ends the scan).
async fn produce_windows(
    db: Db,
    reader: Arc<SiteReader>,
    req: ScanRequest,
    fields: Vec<String>,
    windows: Option<(i64, i64)>,
    tx: mpsc::Sender<Result<Page, ScanError>>,
) {
    let mut cursor = req.start_after;
    if let Some((width, max_id)) = windows {
        let shared = Arc::new(fields.clone());
        let mut reading: VecDeque<tokio::task::JoinHandle<Result<Page, ScanError>>> =
            VecDeque::new();
        let mut next = cursor;
        loop {
            while reading.len() < PARALLEL_WINDOWS && next < max_id {
                reading.push_back(tokio::spawn(read_window(
                    db.clone(),
                    reader.clone(),
                    req.entity_type.clone(),
                    shared.clone(),
                    (next, next + width),
                )));
                next += width;
            }
            let Some(first) = reading.pop_front() else {
                break;
            };
            let page = first.await.unwrap_or_else(|e| {
                Err(ReadError::BadAnswer(format!("window read failed: {e}")).into())
            });
            let failed = page.is_err();
            if let Ok(p) = &page {
                cursor = p.through.unwrap_or(cursor);
            }
            if tx.send(page).await.is_err() || failed {
                for r in reading {
                    r.abort();
                }
                return;
            }
        }
    }
    let req = ScanRequest {
        start_after: cursor,
        ..req
    };
    produce(db, reader, req, fields, tx).await;
}

/// Runs one full scan of a type.
pub async fn scan_type(
    db: &Db,
    reader: Arc<SiteReader>,
    req: ScanRequest,
    obs: &Arc<ScannerMetrics>,
) -> Result<ScanStats, ScanError> {
    let ty = req.entity_type.clone();
    let started_ms = req
        .started_ms
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let mut fields = req.fields.clone();
    if req.has_updated_at && !fields.iter().any(|f| f == "updated_at") {
        fields.push("updated_at".into());
    }
    // Two questions to the site that need nothing from each other: one round trip.
    let (total, max_id) = tokio::join!(count(&reader, &ty, &req.extra), newest_id(&reader, &req));
    if !req.finalize.is_empty() {
        obs.backfill(&ty, req.done_before, total);
    }
    if !req.finalize.is_empty() {
        let mut tx = db.begin().await?;
        storage::set_field_state(&mut tx, &ty, &req.finalize, FieldState::Backfilling).await?;
        tx.commit().await?;
    }
    tracing::info!(entity_type = %ty, fields = fields.len(), total, resume_after = req.start_after,
        backfill = req.finalize.len(), "full scan started");
    let (send, mut recv) = mpsc::channel(2);
    let windows = window_plan(i64::from(reader.page_size), req.start_after, max_id, total);
    tracing::debug!(entity_type = %ty, ?windows, "read plan (window width, id bound)");
    let producer = tokio::spawn(produce_windows(
        db.clone(),
        reader.clone(),
        req.clone(),
        fields.clone(),
        windows,
        send,
    ));
    let ctx = Arc::new(PageCtx {
        db: db.clone(),
        reader: reader.clone(),
        req: req.clone(),
        total,
        started_ms,
        progress_turn: tokio::sync::Mutex::new(()),
        obs: obs.clone(),
    });
    let bar = crate::backfill_bar::BackfillBar::start(&ty, total, req.done_before);
    let mut stats = ScanStats::default();
    let t0 = Instant::now();
    let mut last_log = Instant::now();
    let mut phases = Phases::default();
    // Pages being written, oldest first. Their transactions touch disjoint id ranges, so they
    // run concurrently; completions are taken in page order, and a page's transaction saves as
    // cursor only the end of pages already committed with every page before them, so a crash
    // resumes where nothing before the cursor is missing. The last page waits for all others
    // and marks the fields ready in its own transaction.
    let mut writing: VecDeque<tokio::task::JoinHandle<Result<Option<Written>, ScanError>>> =
        VecDeque::new();
    // The end (cursor, entities done) of the committed prefix of pages.
    let mut committed = (req.start_after, req.done_before);
    let mut queued_done = req.done_before;
    let mut stopped = false;
    let mut settle = |w: Written, stats: &mut ScanStats, committed: &mut (i64, i64)| {
        stats.written += w.written;
        stats.retired_missing += w.retired_missing;
        stats.read += w.read;
        stats.pages += 1;
        *committed = (w.cursor, w.done);
        bar.set(w.done);
        if last_log.elapsed() >= Duration::from_secs(5) {
            last_log = Instant::now();
            let rate = stats.read as f64 / t0.elapsed().as_secs_f64().max(1e-3);
            let eta_s = total.map(|t| ((t - w.done).max(0) as f64 / rate.max(1e-3)).round() as u64);
            tracing::info!(entity_type = %ctx.req.entity_type, done = w.done, total,
                rate = rate.round() as u64, eta_s, pages = stats.pages, "scan progress");
        }
    };
    let result: Result<(), ScanError> = async {
        loop {
            let t_wait = Instant::now();
            let Some(page) = recv.recv().await else {
                break;
            };
            phases.wait += t_wait.elapsed();
            let page = page?;
            phases.read_active += page.read_active;
            phases.read_retired += page.read_retired;
            let is_last = page.through.is_none();
            // The last page, and a full pipeline, wait for the oldest writes.
            let t_write = Instant::now();
            while !writing.is_empty() && (is_last || writing.len() >= WRITERS) {
                let front = writing.pop_front().expect("not empty");
                match front.await.map_err(join_error)?? {
                    Some(w) => settle(w, &mut stats, &mut committed),
                    None => stopped = true,
                }
            }
            phases.write += t_write.elapsed();
            if stopped {
                break;
            }
            // Progress counts live rows, as `total` does (retired rows are read too).
            queued_done += page.active.len() as i64;
            let done = queued_done;
            let ctx = ctx.clone();
            let progress = committed;
            writing.push_back(tokio::spawn(async move {
                ctx.write_page(page, progress, done).await
            }));
            if is_last {
                let t_write = Instant::now();
                let last = writing.pop_front().expect("just pushed");
                match last.await.map_err(join_error)?? {
                    Some(w) => settle(w, &mut stats, &mut committed),
                    None => stopped = true,
                }
                phases.write += t_write.elapsed();
                break;
            }
        }
        Ok(())
    }
    .await;
    producer.abort();
    for w in writing {
        w.abort();
    }
    result?;
    let secs = t0.elapsed().as_secs_f64();
    // Rows created during the scan are done but were not counted in `total`.
    let total = total.map(|t| t.max(committed.1));
    tracing::info!(entity_type = %ty, done = committed.1, total,
        rate = (stats.read as f64 / secs.max(1e-3)).round() as u64, pages = stats.pages, "scan progress");
    tracing::info!(entity_type = %ty, read = stats.read, written = stats.written,
        retired_missing = stats.retired_missing, secs = round2(secs),
        ready = req.finalize.len(), "full scan finished");
    phases.log(&ty, t0.elapsed());
    if !stopped && (req.record_scan || !req.finalize.is_empty()) {
        obs.scanned(&ty, t0.elapsed());
    }
    if !stopped && !req.finalize.is_empty() {
        crate::ready_signal::announce();
        tracing::info!(entity_type = %ty, fields = req.finalize.len(),
            "backfill complete; served from the cache");
    }
    Ok(stats)
}

/// `x` to two decimals, for logs.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Pages written at once (each in its own transaction and connection).
const WRITERS: usize = 3;

fn join_error(e: tokio::task::JoinError) -> ScanError {
    ScanError::Read(ReadError::BadAnswer(format!("page writer failed: {e}")))
}

/// What one page's transaction did.
struct Written {
    read: u64,
    written: u64,
    retired_missing: u64,
    /// Where this page ends, and the entities done through it.
    cursor: i64,
    done: i64,
}

/// What every page write of a scan shares.
struct PageCtx {
    db: Db,
    reader: Arc<SiteReader>,
    req: ScanRequest,
    total: Option<i64>,
    started_ms: i64,
    progress_turn: tokio::sync::Mutex<()>,
    obs: Arc<ScannerMetrics>,
}

impl PageCtx {
    /// Writes one page in its own transaction, saving `committed` (the end of the pages known
    /// committed before it) as progress; the last page saves its own end and marks the fields
    /// ready. None when the type is no longer cached.
    async fn write_page(
        &self,
        mut page: Page,
        committed: (i64, i64),
        done: i64,
    ) -> Result<Option<Written>, ScanError> {
        let (db, req, ty) = (&self.db, &self.req, self.req.entity_type.as_str());
        if req.complete_rows {
            complete(db, &self.reader, ty, &mut page).await?;
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
        if !state.types.contains_key(ty) {
            tracing::warn!(entity_type = %ty, "type no longer cached; scan stopped");
            return Ok(None);
        }
        // Rows the cache has retired that the site has live again: a revival the follower
        // cannot see when it came without an event (see `relink`).
        let revived = super::relink::back_to_life(&mut tx, ty, &page.active, page.read_at).await?;
        let read = (page.active.as_slice(), page.retired.as_slice());
        let written = write_read(&mut tx, &state, ty, read, page.read_at)
            .await?
            .written;
        let mut retired_missing = 0;
        if req.retire_missing && req.extra.is_empty() {
            if let Some(through) = page.through.or(seen_max) {
                let seen: Vec<i64> = page
                    .active
                    .iter()
                    .filter_map(|r| r.get("id")?.as_i64())
                    .collect();
                let range = (page.after, Some(through));
                retired_missing =
                    storage::retire_missing(&mut tx, &state, ty, range, &seen, page.read_at)
                        .await?;
            }
        }
        // One transaction at a time updates the shared progress rows and commits: concurrent
        // page transactions never wait on each other's row locks (no deadlock possible).
        let _turn = self.progress_turn.lock().await;
        if !req.finalize.is_empty() {
            // Only the last page, written after every other page committed, saves its own end.
            let (c, d) = if is_last { (cursor, done) } else { committed };
            storage::set_backfill_progress(
                &mut tx,
                ty,
                &req.finalize,
                Some(c),
                d,
                self.total,
                self.started_ms,
            )
            .await?;
            if is_last {
                storage::set_field_state(&mut tx, ty, &req.finalize, FieldState::Ready).await?;
            }
        }
        if is_last && req.record_scan {
            record_scan_start(&mut tx, ty, self.started_ms).await?;
        }
        tx.commit().await?;
        if !revived.is_empty() {
            // The rows they link to were read while they were hidden from them.
            super::relink::refresh_link_targets(db, &self.reader, &state, ty, &revived, &self.obs)
                .await?;
        }
        self.obs.rows(ty, ScanKind::Full, n, written);
        if !req.finalize.is_empty() {
            let (_, d) = if is_last { (cursor, done) } else { committed };
            self.obs.backfill(ty, d, self.total);
        }
        // A long backfill is progress: each page written keeps the scanner alive.
        self.obs.heartbeat.beat();
        Ok(Some(Written {
            read: n,
            written,
            retired_missing,
            cursor,
            done,
        }))
    }
}

/// Where a scan's time went, logged at debug level when it finishes. Reads run ahead of the
/// writer, so `read_*` overlap `write`; `wait` is the writer idle for want of a page.
#[derive(Default)]
struct Phases {
    read_active: Duration,
    read_retired: Duration,
    wait: Duration,
    write: Duration,
}

impl Phases {
    fn log(&self, ty: &str, total: Duration) {
        let ms = |d: Duration| d.as_millis() as u64;
        tracing::debug!(entity_type = %ty, total_ms = ms(total), read_active_ms = ms(self.read_active),
            read_retired_ms = ms(self.read_retired), writer_wait_ms = ms(self.wait),
            write_ms = ms(self.write), "full scan phases");
    }
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

#[cfg(test)]
mod tests {
    use super::window_plan;

    #[test]
    fn dense_ids_are_read_in_windows_of_a_page() {
        assert_eq!(
            window_plan(500, 0, Some(1_000), Some(990)),
            Some((500, 1_000))
        );
        // Resumed past most of the type: what is left fits in one page.
        assert_eq!(window_plan(500, 600, Some(1_000), Some(990)), None);
    }

    #[test]
    fn sparse_or_unknown_ids_are_read_in_keyset_pages() {
        // Fewer live rows than half the id range: windows would be half empty.
        assert_eq!(window_plan(500, 0, Some(10_000), Some(990)), None);
        assert_eq!(window_plan(500, 0, None, Some(990)), None);
        assert_eq!(window_plan(500, 0, Some(1_000), None), None);
        assert_eq!(window_plan(0, 0, Some(1_000), Some(990)), None);
    }
}
