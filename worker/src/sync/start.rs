//! Where following starts: the site's newest event id, recorded before any scan so that no
//! change made during the scan is missed. The follower and the scanner both record it; the
//! first one wins.

use sgcache::sql::{Db, Dialect, SqlValue, Tx};
use sgcache::storage::{self, StorageError};

use super::site_reader::{ReadError, SiteReader};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Records the newest event id as the starting position when none is saved: done before
/// any initial scan, so no change made during the scan is missed. False before `migrate`.
pub async fn ensure_position(db: &Db, reader: &SiteReader) -> Result<bool, StartError> {
    if storage::read_state(db).await?.types.is_empty() {
        return Ok(false);
    }
    if storage::read_event_position(db).await?.is_some() {
        return Ok(true);
    }
    let newest = reader.newest_event_id().await?;
    let mut tx = db.begin().await?;
    ensure_start(&mut tx, newest).await?;
    tx.commit().await?;
    tracing::info!(
        newest_event_id = newest,
        "recorded the starting event position"
    );
    Ok(true)
}

/// Records the newest event id as the starting position unless one is saved already (the
/// follower and the scanner both call this before any scan; the first one wins). Returns the
/// saved position.
pub async fn ensure_start(tx: &mut Tx, newest: Option<i64>) -> Result<(), StorageError> {
    let mut sql = tx.sql();
    let now = storage::now_value(tx.dialect());
    sql.push(
        "INSERT INTO \"_sgcache_events\" (id, last_event_id, backlog, updated_at) VALUES (1, ",
    )
    .push_bind(SqlValue::Int(newest.unwrap_or(0)))
    .push(", ");
    match tx.dialect() {
        Dialect::Postgres => sql.push("'[]'::jsonb"),
        Dialect::Sqlite => sql.push("'[]'"),
    };
    sql.push(", ")
        .push_bind(now)
        .push(") ON CONFLICT (id) DO NOTHING");
    tx.execute(&sql).await?;
    Ok(())
}
