//! Links to entities that were hidden. The site hides a retired entity from the links of other
//! rows without touching those rows (no event, no `updated_at`), so a row read while an entity
//! it links to was retired is stored without that link. When the entity is back, the rows on
//! the other side of its links are read again (docs/storage.md, "Links to retired entities").
//!
//! A script without events can retire an entity and revive it between two scans: each of those
//! writes moves its `updated_at`, but a scan (or a backfill) that reads it only afterwards sees
//! it live, as the cache already has it. So the incremental scan reads again the link targets
//! of every changed row it reads ([`super::incremental`]), and a full scan's page those of the
//! rows the cache had retired ([`back_to_life`]).

use serde_json::Value;
use sgcache::plan::DbState;
use sgcache::sql::Tx;
use sgcache::storage::{retired_ids, ReadMark};

use super::backfill::ScanError;
use super::metrics::{ScanKind, ScannerMetrics};
use crate::sync::site_reader::SiteReader;
use crate::sync::write::{link_targets, write_read};

/// The records of active `rows` the cache had as retired: a full scan's page, read from
/// `read_at` on, that finds live a row whose retirement the follower applied (a script without
/// events revived it since). Not a row retired after `read_at`: the page's write leaves it
/// retired, so there is nothing to relink.
pub(crate) async fn back_to_life<'a>(
    tx: &mut Tx,
    entity_type: &str,
    rows: &'a [Value],
    read_at: ReadMark,
) -> Result<Vec<&'a Value>, ScanError> {
    let id_of = |r: &Value| r.get("id").and_then(Value::as_i64);
    let ids: Vec<i64> = rows.iter().filter_map(id_of).collect();
    let back = retired_ids(tx, entity_type, &ids, read_at).await?;
    Ok(rows
        .iter()
        .filter(|r| id_of(r).is_some_and(|id| back.contains(&id)))
        .collect())
}

/// Reads again and writes the rows `records` link to; see [`link_targets`]. Counted as
/// `scan="links"` in the scanner's row metrics.
pub(crate) async fn refresh_link_targets(
    db: &sgcache::sql::Db,
    reader: &SiteReader,
    state: &DbState,
    entity_type: &str,
    records: &[&Value],
    obs: &ScannerMetrics,
) -> Result<(), ScanError> {
    for (ty, ids) in link_targets(state, entity_type, records) {
        let fields: Vec<String> = state.live_fields(&ty).map(|(f, _)| f.clone()).collect();
        let read_at = sgcache::storage::read_mark(db).await?;
        let (active, retired) = reader.fetch_ids(&ty, &fields, &ids).await?;
        let mut tx = db.begin().await?;
        let out = write_read(&mut tx, state, &ty, (&active, &retired), read_at).await?;
        tx.commit().await?;
        let read = (active.len() + retired.len()) as u64;
        obs.rows(&ty, ScanKind::Links, read, out.written);
    }
    Ok(())
}
