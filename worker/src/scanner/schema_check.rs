//! The scanner's schema check: with each incremental scan of a type, the site's description of
//! its fields (`schema_field_read`) against the data types the cache was laid out for. A
//! cached field the site no longer has, or now types differently, is logged (run `migrate`)
//! and counted (`sgcache_scanner_schema_checks_total{outcome="changed"}`,
//! `sgcache_scanner_schema_drift_fields`); changing the layout is `migrate`'s job.

use serde_json::{json, Value};
use sgcache::plan::FieldState;
use sgcache::storage::FieldStatus;

use super::metrics::ScannerMetrics;
use crate::sync::site_reader::{ReadError, SiteReader};

/// Cached fields of `entity_type` (from `fields`) the site no longer describes as the cache
/// has them: `field (cached → site)`.
pub fn drifted(entity_type: &str, fields: &[FieldStatus], site: &Value) -> Vec<String> {
    fields
        .iter()
        .filter(|f| f.entity_type == entity_type && f.state != FieldState::Dropped)
        .filter_map(|f| {
            let now = site
                .get(&f.field_name)
                .and_then(|d| d.get("data_type"))
                .and_then(|d| d.get("value"))
                .and_then(Value::as_str);
            match now {
                Some(t) if t == f.data_type => None,
                Some(t) => Some(format!("{} ({} → {t})", f.field_name, f.data_type)),
                None => Some(format!("{} (gone from the site)", f.field_name)),
            }
        })
        .collect()
}

/// Checks one type against the site and records the outcome in `obs`. Never fails the scan:
/// a check the site does not answer is counted as `failed` and tried again next round.
pub async fn check_type(
    reader: &SiteReader,
    entity_type: &str,
    fields: &[FieldStatus],
    obs: &ScannerMetrics,
) -> Result<(), ReadError> {
    let site = match reader
        .call("schema_field_read", &json!({"type": entity_type}))
        .await
    {
        Ok(site) => site,
        Err(ReadError::Stopped) => return Err(ReadError::Stopped),
        Err(e) => {
            tracing::warn!(entity_type, error = %e, "schema check failed");
            obs.schema_checked(entity_type, None);
            return Ok(());
        }
    };
    let drift = drifted(entity_type, fields, &site);
    if !drift.is_empty() {
        tracing::warn!(entity_type, fields = ?drift,
            "the site's schema moved under cached fields; run `sgcache-worker migrate`");
    }
    obs.schema_checked(entity_type, Some(drift.len()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, data_type: &str, state: FieldState) -> FieldStatus {
        FieldStatus {
            entity_type: "Shot".into(),
            field_name: name.into(),
            data_type: data_type.into(),
            storage: "text".into(),
            state,
            schema: Value::Null,
            backfill_cursor: None,
            backfill_done: 0,
            backfill_total: None,
            unservable_reason: None,
            unservable_id: None,
        }
    }

    #[test]
    fn retyped_and_vanished_fields_are_drift_dropped_ones_are_not() {
        let fields = vec![
            field("code", "text", FieldState::Ready),
            field("sg_cut_in", "number", FieldState::Ready),
            field("sg_gone", "text", FieldState::Pending),
            field("sg_old", "text", FieldState::Dropped),
        ];
        let site = json!({
            "code": {"data_type": {"value": "text"}},
            "sg_cut_in": {"data_type": {"value": "float"}},
        });
        assert_eq!(
            drifted("Shot", &fields, &site),
            vec!["sg_cut_in (number → float)", "sg_gone (gone from the site)"]
        );
        assert!(drifted("Asset", &fields, &site).is_empty());
    }
}
