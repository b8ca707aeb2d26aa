//! The scanner's schema check: before each round of incremental scans, every cached type's
//! fields are compared with what the site says now (`schema_field_read`, one call per type).
//! A field the site retyped or deleted since the last migrate becomes unservable at once
//! (`sgcache::storage::drifted_fields`): a retype clears or converts the site's values without
//! events or `updated_at`, so no scan or event would ever correct the cached ones. Each check
//! is counted (`sgcache_scanner_schema_checks_total{outcome}`) and the drifted fields of each
//! type are a gauge (`sgcache_scanner_schema_drift_fields`) until the layout follows the site
//! (`workers.scanner.schemaInterval`, `crate::sync::schema_follow`).

use serde_json::{json, Value};
use sgcache::schema::SiteSchema;
use sgcache::site::SiteError;
use sgcache::sql::Db;
use sgcache::storage::{self, Drift};

use super::backfill::ScanError;
use super::metrics::ScannerMetrics;
use crate::sync::site_reader::{ReadError, SiteReader};

/// Checks `types` against the site's schema; returns the fields newly marked unservable.
pub async fn check_schema(
    db: &Db,
    reader: &SiteReader,
    types: &[String],
    obs: &ScannerMetrics,
) -> Result<Vec<Drift>, ScanError> {
    let state = storage::read_state(db).await?;
    let mut marked = Vec::new();
    for ty in types {
        let answer = match reader.call("schema_field_read", &json!({"type": ty})).await {
            Ok(v) => v,
            // The type itself is refused (disabled on the site): its reads fail and say so.
            Err(ReadError::Site(SiteError::Api { message, .. })) => {
                tracing::warn!(entity_type = %ty, error = %message,
                    "the site refused the schema of a cached type");
                obs.schema_checked(ty, None);
                continue;
            }
            Err(e) => {
                obs.schema_checked(ty, None);
                return Err(e.into());
            }
        };
        let Some(site) = entity_schema(ty, answer) else {
            tracing::warn!(entity_type = %ty, "unreadable schema_field_read answer; not checked");
            obs.schema_checked(ty, None);
            continue;
        };
        let drifts = storage::drifted_fields(&state, ty, &site);
        // The gauge counts every cached field the site has moved away from, those already
        // unservable (by an earlier check, an event or a failed read) included.
        let moved = state
            .live_fields(ty)
            .filter(|(name, r)| {
                site.fields.get(*name).map(|f| f.data_type.api_name()) != Some(r.data_type.as_str())
            })
            .count();
        obs.schema_checked(ty, Some(moved));
        if drifts.is_empty() {
            continue;
        }
        let mut tx = db.begin().await?;
        let mut newly = Vec::new();
        for d in drifts {
            if storage::mark_drifted(&mut tx, &d).await? {
                newly.push(d);
            }
        }
        tx.commit().await?;
        for d in &newly {
            tracing::warn!(entity_type = %d.entity_type, field = %d.field,
                built_for = %d.built_for, site_type = d.site_type.as_deref().unwrap_or("(deleted)"),
                "the site changed a cached field since the last migrate: it is unservable (reads pass through) until migrate rebuilds it");
        }
        marked.extend(newly);
    }
    Ok(marked)
}

/// The schema of `ty` from a `schema_field_read` answer (field name → record).
fn entity_schema(ty: &str, answer: Value) -> Option<sgcache::schema::EntitySchema> {
    let mut doc = serde_json::Map::new();
    doc.insert(ty.to_string(), answer);
    SiteSchema::from_api(&Value::Object(doc), None)
        .ok()?
        .entities
        .remove(ty)
}
