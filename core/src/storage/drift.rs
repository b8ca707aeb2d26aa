//! Schema drift between migrations: a cached field the site has since given another data type,
//! or deleted. The cached values of such a field are no longer the site's — a site that retypes
//! a field clears or converts its values without events and without moving `updated_at`, so
//! neither worker would ever see those rows change — and values of the new type do not fit the
//! column. The field therefore becomes `unservable` at once (reads touching it pass through to
//! the site) until `migrate` rebuilds it for the new type (or drops it) and the backfill brings
//! it back; every record of the type is still written meanwhile, that field as null where its
//! value does not fit (docs/storage.md "Fields the site retyped or deleted").

use crate::plan::{DbState, FieldState};
use crate::schema::EntitySchema;
use crate::sql::{SqlValue, Tx};

use super::{now_value, StorageError};

/// A cached field the site no longer describes as the cache built it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub entity_type: String,
    pub field: String,
    /// The data type the field's storage was built for (`_sgcache_fields.data_type`).
    pub built_for: String,
    /// The site's data type now; `None` when the site no longer has the field.
    pub site_type: Option<String>,
}

impl Drift {
    /// Why the field is unservable, naming no value.
    pub fn reason(&self) -> String {
        match &self.site_type {
            Some(now) => format!(
                "the site retyped this field ({} -> {now}); the next migrate rebuilds it",
                self.built_for
            ),
            None => "the site no longer has this field".to_string(),
        }
    }
}

/// The cached fields of `entity_type` (`site`: the site's schema of that type, as
/// `schema_field_read` returns it now) whose data type changed or that the site deleted.
/// Fields already unservable or dropped are left out: nothing more to do for them.
pub fn drifted_fields(state: &DbState, entity_type: &str, site: &EntitySchema) -> Vec<Drift> {
    state
        .live_fields(entity_type)
        .filter(|(_, r)| r.state != FieldState::Unservable)
        .filter_map(|(name, r)| {
            let site_type = site
                .fields
                .get(name)
                .map(|f| f.data_type.api_name().to_string());
            (site_type.as_deref() != Some(r.data_type.as_str())).then(|| Drift {
                entity_type: entity_type.to_string(),
                field: name.clone(),
                built_for: r.data_type.clone(),
                site_type,
            })
        })
        .collect()
}

/// Marks a drifted field unservable, provided its storage is still built for the data type the
/// drift was measured against: a migrate that rebuilt it in the meantime is not undone. True
/// when the field changed state.
pub async fn mark_drifted(tx: &mut Tx, drift: &Drift) -> Result<bool, StorageError> {
    let mut sql = tx.sql();
    sql.push("UPDATE \"_sgcache_fields\" SET state = ")
        .push_bind(SqlValue::Text(FieldState::Unservable.as_str().into()))
        .push(", unservable_reason = ")
        .push_bind(SqlValue::Text(drift.reason()))
        .push(", unservable_id = NULL, updated_at = ")
        .push_bind(now_value(tx.dialect()))
        .push(" WHERE state NOT IN ('dropped', 'unservable') AND entity_type = ")
        .push_bind(SqlValue::Text(drift.entity_type.clone()))
        .push(" AND field_name = ")
        .push_bind(SqlValue::Text(drift.field.clone()))
        .push(" AND data_type = ")
        .push_bind(SqlValue::Text(drift.built_for.clone()));
    Ok(tx.execute(&sql).await? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::FieldRecord;
    use crate::schema::SiteSchema;
    use serde_json::{json, Value};

    fn record(data_type: &str, state: FieldState) -> FieldRecord {
        FieldRecord {
            data_type: data_type.into(),
            state,
            schema: Value::Null,
        }
    }

    #[test]
    fn retyped_and_deleted_fields_drift_others_do_not() {
        let mut state = DbState::default();
        let fields = state.fields.entry("Shot".into()).or_default();
        fields.insert("code".into(), record("text", FieldState::Ready));
        fields.insert("sg_cut_in".into(), record("number", FieldState::Ready));
        fields.insert("sg_gone".into(), record("text", FieldState::Backfilling));
        fields.insert("sg_old".into(), record("text", FieldState::Dropped));
        fields.insert("sg_bad".into(), record("float", FieldState::Unservable));
        let dt = |t: &str| json!({"data_type": {"value": t}});
        let site = SiteSchema::from_api(
            &json!({"Shot": {"code": dt("text"), "sg_cut_in": dt("text"), "sg_bad": dt("text")}}),
            None,
        )
        .unwrap();
        let drifts = drifted_fields(&state, "Shot", site.entity("Shot").unwrap());
        let got: Vec<(&str, Option<&str>)> = drifts
            .iter()
            .map(|d| (d.field.as_str(), d.site_type.as_deref()))
            .collect();
        assert_eq!(got, vec![("sg_cut_in", Some("text")), ("sg_gone", None)]);
        assert_eq!(
            drifts[0].reason(),
            "the site retyped this field (number -> text); the next migrate rebuilds it"
        );
        assert_eq!(drifts[1].reason(), "the site no longer has this field");
    }
}
