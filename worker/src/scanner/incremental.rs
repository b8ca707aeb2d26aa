//! Incremental scans: every cached type, rows whose `updated_at` is newer than the start of
//! the last scan minus the overlap, active and retired. They catch writes that made no event
//! (scripts with "Generate Events" off). When each type was last scanned is kept in
//! `_sgcache_scans` (`sgcache::storage::record_scan_start`), so a restart misses nothing.

use serde_json::{json, Value};
use sgcache::sql::{format_datetime, Db};
use sgcache::storage::{self, last_scan_start, record_scan_start};

use super::backfill::ScanError;
use super::metrics::{ScanKind, ScannerMetrics};
use super::relink::refresh_link_targets;
use crate::sync::site_reader::{cond, Liveness, SiteReader};
use crate::sync::write::write_read;

/// Scans one type for rows changed since its last scan (minus `overlap_ms`); returns the rows
/// read. A type never scanned is read whole once.
pub async fn scan_changed(
    db: &Db,
    reader: &SiteReader,
    entity_type: &str,
    overlap_ms: i64,
    extra: &[serde_json::Value],
    obs: &ScannerMetrics,
) -> Result<u64, ScanError> {
    let started = std::time::Instant::now();
    let started_ms = chrono::Utc::now().timestamp_millis();
    let last = last_scan_start(db, entity_type).await?;
    let since_ms = last.map_or(0, |s| (s - overlap_ms).max(0));
    let since = chrono::DateTime::from_timestamp_millis(since_ms).unwrap_or_default();
    let state = storage::read_state(db).await?;
    let fields: Vec<String> = state
        .live_fields(entity_type)
        .map(|(n, _)| n.clone())
        .collect();
    // A type without `updated_at` (a real site's `Reply`) has no changed rows to ask for: the
    // site refuses the filter. Its rows are kept fresh by the event log alone.
    if fields.is_empty() || !fields.iter().any(|f| f == "updated_at") {
        return Ok(0);
    }
    let mut conditions = vec![cond(
        "updated_at",
        "greater_than",
        json!([format_datetime(&since)]),
    )];
    conditions.extend(extra.iter().cloned());
    let mut read = 0u64;
    for liveness in [Liveness::Active, Liveness::Retired] {
        let mut cursor = 0;
        loop {
            let read_at = storage::read_mark(db).await?;
            let rows = reader
                .page_after(entity_type, &fields, cursor, None, &conditions, liveness)
                .await?;
            if rows.is_empty() {
                break;
            }
            let full = rows.len() >= reader.page_size as usize;
            cursor = rows
                .iter()
                .filter_map(|r| r.get("id")?.as_i64())
                .max()
                .unwrap_or(cursor);
            let mut tx = db.begin().await?;
            let state = storage::read_state_tx(&mut tx).await?;
            if !state.types.contains_key(entity_type) {
                return Ok(read);
            }
            // Every changed active row's link targets are read again (see `relink`); a type
            // never scanned is read whole, and its rows are not news.
            let changed: Vec<&Value> = match liveness {
                Liveness::Active if last.is_some() => rows.iter().collect(),
                _ => Vec::new(),
            };
            let split: (&[Value], &[Value]) = match liveness {
                Liveness::Active => (&rows, &[]),
                Liveness::Retired => (&[], &rows),
            };
            let out = write_read(&mut tx, &state, entity_type, split, read_at).await?;
            tx.commit().await?;
            obs.rows(
                entity_type,
                ScanKind::Incremental,
                rows.len() as u64,
                out.written,
            );
            obs.heartbeat.beat();
            if !changed.is_empty() {
                refresh_link_targets(db, reader, &state, entity_type, &changed, obs).await?;
            }
            read += rows.len() as u64;
            if !full {
                break;
            }
        }
    }
    if extra.is_empty() {
        let mut tx = db.begin().await?;
        record_scan_start(&mut tx, entity_type, started_ms).await?;
        tx.commit().await?;
        obs.scanned(entity_type, started.elapsed());
    }
    if read > 0 {
        tracing::info!(entity_type, read, since = %format_datetime(&since), "incremental scan");
    }
    Ok(read)
}
