//! Keeping the cache's layout on the site's schema while the workers run: the scanner calls
//! this every `workers.scanner.schemaInterval`, the event follower when the site logs a field
//! created or changed (DisplayColumn events). The layout rules live in
//! `sgcache::storage::follow_site_schema`; this reads the site's schema and reports.

use sgcache::schema::SiteSchema;
use sgcache::sql::Db;
use sgcache::storage::{self, StorageError};
use sgcache::ShotgunCacheSpec;

use super::site_reader::{ReadError, SiteReader};

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("reading the site's schema: {0}")]
    Read(#[from] ReadError),
    #[error("following the site's schema: {0}")]
    Storage(#[from] StorageError),
}

/// Reads the site's schema and brings the layout to it; returns how many changes were
/// applied. `why` says what asked (for the log).
pub async fn follow(
    db: &Db,
    reader: &SiteReader,
    spec: &ShotgunCacheSpec,
    why: &'static str,
) -> Result<usize, FollowError> {
    let read_ms = chrono::Utc::now().timestamp_millis();
    let site = reader.schema().await?;
    follow_read(db, &site, read_ms, spec, why).await
}

/// [`follow`] with the site's schema already read (the read began at `read_ms`, unix ms).
pub async fn follow_read(
    db: &Db,
    site: &SiteSchema,
    read_ms: i64,
    spec: &ShotgunCacheSpec,
    why: &'static str,
) -> Result<usize, FollowError> {
    let followed = storage::follow_site_schema(db, spec, site).await?;
    // Recorded once the layout follows `site`: a scanner that starts next reads the schema
    // again a `schemaInterval` after this read, not at once (not recorded, it reads it at
    // once; the layout followed all the same).
    if let Err(e) = storage::record_schema_check(db, spec, read_ms).await {
        tracing::warn!(why, error = %e, "cannot record when the site's schema was read");
    }
    if followed.plan.is_empty() {
        tracing::debug!(why, "the site's schema matches the cache");
        return Ok(0);
    }
    let changes: Vec<String> = followed.plan.changes.iter().map(describe).collect();
    tracing::info!(
        why,
        changes = ?changes,
        gone = ?followed.gone,
        "the site's schema changed: the cache follows it (new and retyped fields are backfilled, \
         deleted ones pass through)"
    );
    Ok(followed.plan.changes.len())
}

/// One change as `add Shot.sg_cut_note`: names only, never values.
fn describe(change: &sgcache::plan::Change) -> String {
    use sgcache::plan::Change::*;
    match change {
        CreateTable { entity_type, .. } => format!("create {entity_type}"),
        SetDisplayField { entity_type, .. } => format!("display field of {entity_type}"),
        AddField(f) => format!("add {}.{}", f.entity_type, f.field_name),
        RebuildField {
            field: f,
            old_data_type,
        } => format!(
            "retype {}.{} ({old_data_type} -> {})",
            f.entity_type, f.field_name, f.data_type
        ),
        ReviveField(f) => format!("revive {}.{}", f.entity_type, f.field_name),
        UpdateFieldSchema(f) => format!("schema of {}.{}", f.entity_type, f.field_name),
        DropField {
            entity_type,
            field_name,
        } => format!("drop {entity_type}.{field_name}"),
        PruneField {
            entity_type,
            field_name,
            ..
        } => format!("prune {entity_type}.{field_name}"),
        PruneTable { entity_type, .. } => format!("prune {entity_type}"),
    }
}
