//! What the cache holds and may serve: entity types, their fields, data types and states.
//!
//! Loaded from `_sgcache_types` and `_sgcache_fields` (docs/storage.md). Every name in the
//! catalog has passed `sgcache::ident` validation, so the translator can only ever put
//! catalog names into SQL.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::ident;
use crate::schema::{DataType, FieldSchema, SiteSchema, Storage};
use crate::spec::ShotgunCacheSpec;
use crate::sql::{Db, SqlValue};

/// One cached field.
#[derive(Clone, Debug, PartialEq)]
pub struct CatalogField {
    pub name: String,
    pub data_type: DataType,
    pub storage: Storage,
    /// Only `ready` fields are served.
    pub ready: bool,
    /// The site returned a value the cache cannot store (state `unservable`).
    pub unservable: bool,
    /// The column may hold text outside ASCII (written so, or not known: a cache whose
    /// fields predate the flag), so a case-insensitive comparison with it relies on
    /// [`crate::trust::TrustClass::TextNonAscii`] whatever the search value.
    pub non_ascii: bool,
    /// Target types of entity and multi-entity fields.
    pub valid_types: Vec<String>,
    /// A link to a retired target reads as null (`EventLogEntry.entity`, protocol doc 8.1);
    /// elsewhere such a link passes the read through.
    pub retired_reads_null: bool,
}

/// One cached entity type.
#[derive(Clone, Debug, PartialEq)]
pub struct CatalogType {
    pub entity_type: String,
    pub table: String,
    /// The field giving `name` in links to this type, when it is cached as text.
    pub display_field: Option<String>,
    /// Rows of the type are complete (its `id` field is ready).
    pub ready: bool,
    /// The type is further behind the site than `workers.proxy.maxLag` allows: every read of
    /// it passes through (reason `stale`). Set by the proxy from [`Catalog::load_lag`].
    pub stale: bool,
    /// Rows come from the kept event log, not an entity table (see `query::event_log`).
    pub event_log: bool,
    pub fields: BTreeMap<String, CatalogField>,
}

impl CatalogType {
    /// A field that may be served, `id` included.
    pub fn ready_field(&self, name: &str) -> Option<&CatalogField> {
        self.fields.get(name).filter(|f| f.ready)
    }

    /// The display field, when links to this type can be named from the cache.
    pub fn name_field(&self) -> Option<&CatalogField> {
        let f = self.ready_field(self.display_field.as_deref()?)?;
        (self.ready && !self.stale && f.storage == Storage::Text).then_some(f)
    }
}

/// Everything the cache holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Catalog {
    pub types: BTreeMap<String, CatalogType>,
}

fn id_field() -> CatalogField {
    CatalogField {
        name: "id".into(),
        data_type: DataType::Number,
        storage: Storage::Integer,
        ready: true,
        unservable: false,
        non_ascii: false,
        valid_types: Vec::new(),
        retired_reads_null: false,
    }
}

impl Catalog {
    /// A type whose rows may be served (complete, and not further behind than allowed).
    pub fn ready_type(&self, entity_type: &str) -> Option<&CatalogType> {
        self.types.get(entity_type).filter(|t| t.ready && !t.stale)
    }

    /// The catalog a fully backfilled cache of `spec` would have (every field ready). Used by
    /// tests and benchmarks; the proxy loads the real states with [`Catalog::load`].
    pub fn from_schema(schema: &SiteSchema, spec: &ShotgunCacheSpec) -> Catalog {
        // With the types implied by links, as a migration would cache them.
        let spec = &crate::plan::link_targets(spec, schema).extend(spec);
        let mut types = BTreeMap::new();
        for es in &spec.entities {
            let Some(entity) = schema.entity(&es.entity_type) else {
                continue;
            };
            if ident::validate_entity_type(&entity.entity_type).is_err() {
                continue;
            }
            let display = spec
                .display_fields
                .iter()
                .find(|d| d.entity_type == es.entity_type)
                .map(|d| d.field.clone())
                .or_else(|| entity.display_field().map(str::to_string));
            let mut fields = BTreeMap::new();
            for f in entity.fields.values() {
                let wanted = (es.all_fields() && !es.exclude.contains(&f.name))
                    || es.fields.contains(&f.name)
                    || display.as_deref() == Some(f.name.as_str())
                    || f.name == "updated_at";
                if wanted {
                    if let Some(cf) = catalog_field(f, true) {
                        fields.insert(cf.name.clone(), cf);
                    }
                }
            }
            fields.insert("id".into(), id_field());
            types.insert(
                entity.entity_type.clone(),
                CatalogType {
                    entity_type: entity.entity_type.clone(),
                    table: ident::table_name(&entity.entity_type),
                    display_field: display,
                    ready: true,
                    stale: false,
                    event_log: false,
                    fields,
                },
            );
        }
        Catalog { types }
    }

    /// Reads the catalog from the cache's state tables.
    pub async fn load(db: &Db) -> Result<Catalog, sqlx::Error> {
        let mut q = db.sql();
        q.push("SELECT entity_type, display_field FROM _sgcache_types");
        let mut types = BTreeMap::new();
        for row in db.fetch_all(&q).await? {
            let (Some(t), display) = (text(&row[0]), text(&row[1])) else {
                continue;
            };
            if ident::validate_entity_type(&t).is_err() {
                tracing::warn!(entity_type = %t, "ignoring an invalid cached type name");
                continue;
            }
            types.insert(
                t.clone(),
                CatalogType {
                    table: ident::table_name(&t),
                    entity_type: t,
                    display_field: display,
                    ready: false,
                    stale: false,
                    event_log: false,
                    fields: BTreeMap::new(),
                },
            );
        }
        let mut q = db.sql();
        q.push("SELECT entity_type, field_name, data_type, state, schema FROM _sgcache_fields");
        let non_ascii = crate::storage::read_non_ascii(db)
            .await
            .map_err(|e| match e {
                crate::storage::StorageError::Db(e) => e,
                other => sqlx::Error::Protocol(other.to_string()),
            })?;
        let mut id_states: BTreeMap<String, bool> = BTreeMap::new();
        for row in db.fetch_all(&q).await? {
            let (Some(t), Some(name), Some(dt), Some(state)) =
                (text(&row[0]), text(&row[1]), text(&row[2]), text(&row[3]))
            else {
                continue;
            };
            let Some(ty) = types.get_mut(&t) else {
                continue;
            };
            let ready = state == "ready";
            if name == "id" {
                id_states.insert(t.clone(), ready);
                continue;
            }
            let record = match &row[4] {
                SqlValue::Json(v) => v.clone(),
                SqlValue::Text(s) => serde_json::from_str(s).unwrap_or(Value::Null),
                _ => Value::Null,
            };
            let field = FieldSchema::from_api(&t, &name, &record)
                .ok()
                .map(|mut f| {
                    f.data_type = DataType::from_api(&dt);
                    f
                })
                .unwrap_or_else(|| FieldSchema {
                    name: name.clone(),
                    display_name: name.clone(),
                    data_type: DataType::from_api(&dt),
                    editable: false,
                    mandatory: false,
                    valid_types: Vec::new(),
                    valid_values: Vec::new(),
                    default_value: Value::Null,
                    raw: record,
                });
            if let Some(mut cf) = catalog_field(&field, ready) {
                cf.unservable = state == "unservable";
                // Unknown (no flag yet) counts as possibly non-ASCII.
                cf.non_ascii = non_ascii
                    .get(&(t.clone(), name.clone()))
                    .copied()
                    .flatten()
                    .unwrap_or(true);
                ty.fields.insert(cf.name.clone(), cf);
            }
        }
        for ty in types.values_mut() {
            // A type is served once its id column is backfilled; without an id record (older
            // layouts) every recorded field must be ready.
            ty.ready = match id_states.get(&ty.entity_type) {
                Some(ready) => *ready,
                None => !ty.fields.is_empty() && ty.fields.values().all(|f| f.ready),
            };
            ty.fields.insert("id".into(), id_field());
        }
        Ok(Catalog { types })
    }
}

/// The catalog entry of a site field, or None when the cache cannot store it.
fn catalog_field(f: &FieldSchema, ready: bool) -> Option<CatalogField> {
    if f.name == "id"
        || ident::validate_field_name(&f.name).is_err()
        || crate::plan::is_viewer_dependent(&f.name)
    {
        return None;
    }
    let storage = f.data_type.storage();
    if matches!(storage, Storage::Uncacheable(_)) {
        return None;
    }
    let valid_types = f
        .valid_types
        .iter()
        .filter(|t| ident::validate_entity_type(t).is_ok())
        .cloned()
        .collect();
    Some(CatalogField {
        name: f.name.clone(),
        data_type: f.data_type.clone(),
        storage,
        ready,
        unservable: false,
        non_ascii: false,
        valid_types,
        retired_reads_null: false,
    })
}

fn text(v: &SqlValue) -> Option<String> {
    match v {
        SqlValue::Text(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::fixture_dir;

    #[test]
    fn from_schema_keeps_declared_cacheable_fields() {
        let schema = SiteSchema::load_dir(&fixture_dir()).unwrap();
        let spec = ShotgunCacheSpec::from_yaml(
            "entities:\n  - type: Shot\n    fields: [code, sg_sequence, image, assets]\n",
            "t",
        )
        .unwrap();
        let cat = Catalog::from_schema(&schema, &spec);
        let shot = cat.ready_type("Shot").unwrap();
        assert_eq!(shot.table, "shot");
        assert!(shot.ready_field("code").is_some());
        assert!(shot.ready_field("id").is_some());
        assert!(shot.ready_field("updated_at").is_some());
        assert!(shot.ready_field("image").is_none(), "image is uncacheable");
        assert_eq!(
            shot.ready_field("sg_sequence").unwrap().valid_types,
            vec!["Sequence"]
        );
        // Link targets come with what a link needs (implied by links), nothing more.
        let asset = cat
            .ready_type("Asset")
            .expect("Asset, implied by Shot.assets");
        let fields: Vec<&str> = asset.fields.keys().map(String::as_str).collect();
        assert_eq!(fields, ["code", "id", "updated_at"]);
        assert!(cat.ready_type("Sequence").is_some());
        assert!(cat.ready_type("Version").is_none());
    }
}
