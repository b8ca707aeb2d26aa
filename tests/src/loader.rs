//! Fills a migrated cache from the site, as a finished backfill would: every cached type,
//! active and retired rows, all cached fields; then marks the fields `ready`.
//!
//! Tests use it until the scanner exists; it goes through the storage write path
//! (`upsert_entities`, `retire`, `set_field_state`), so it writes exactly what they write.

use serde_json::{json, Value};
use sgcache::plan::FieldState;
use sgcache::site::SiteClient;
use sgcache::sql::Db;
use sgcache::storage::{self, WriteSource};

const PAGE: u64 = 500;

/// Copies every cached type from the site into the cache and marks its fields ready.
/// Returns the number of rows written.
pub async fn load_all(db: &Db, site: &SiteClient) -> anyhow::Result<u64> {
    let state = storage::read_state(db).await?;
    let mut written = 0;
    for entity_type in state.types.keys() {
        let fields: Vec<String> = state
            .live_fields(entity_type)
            .map(|(name, _)| name.clone())
            .filter(|name| name != "id")
            .collect();
        for retired in [false, true] {
            let mut page = 1;
            loop {
                let at = storage::read_mark(db).await?;
                let results = site
                    .call(
                        "read",
                        json!({
                            "type": entity_type,
                            "filters": {"logical_operator": "and", "conditions": []},
                            "return_fields": fields,
                            "return_only": if retired { "retired" } else { "active" },
                            "sorts": [{"field_name": "id", "direction": "asc"}],
                            "paging": {"entities_per_page": PAGE, "current_page": page},
                            "return_paging_info_without_counts": true,
                        }),
                    )
                    .await?;
                let rows = results["entities"].as_array().cloned().unwrap_or_default();
                let mut tx = db.begin().await?;
                let source = WriteSource::Read { at, retired };
                let out =
                    storage::upsert_entities(&mut tx, &state, entity_type, &rows, source).await?;
                tx.commit().await?;
                written += out.written;
                if results["paging_info"]["has_next_page"] != Value::Bool(true) {
                    break;
                }
                page += 1;
            }
        }
        let mut all = fields.clone();
        all.push("id".into());
        let mut tx = db.begin().await?;
        storage::set_field_state(&mut tx, entity_type, &all, FieldState::Ready).await?;
        tx.commit().await?;
    }
    Ok(written)
}
