//! The site schema model: what `schema_read` / `schema_entity_read` return, reduced to what
//! the cache needs (data types, link targets, valid values, display fields).

mod data_type;
mod display;

pub use data_type::{DataType, Storage};
pub use display::default_display_field;

use std::collections::BTreeMap;

use serde_json::Value;

/// One field of an entity type as the site describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldSchema {
    pub name: String,
    pub display_name: String,
    pub data_type: DataType,
    pub editable: bool,
    pub mandatory: bool,
    /// Target types of entity and multi-entity fields.
    pub valid_types: Vec<String>,
    /// Allowed values of list and status_list fields.
    pub valid_values: Vec<String>,
    pub default_value: Value,
    /// The full record as the site returned it, served back by `schema_*` methods.
    pub raw: Value,
}

/// One entity type.
#[derive(Clone, Debug, PartialEq)]
pub struct EntitySchema {
    pub entity_type: String,
    pub display_name: String,
    pub fields: BTreeMap<String, FieldSchema>,
}

impl EntitySchema {
    /// The field whose value is the `name` of links to this type, if known.
    pub fn display_field(&self) -> Option<&str> {
        default_display_field(&self.entity_type)
            .filter(|f| self.fields.contains_key(*f))
            .or_else(|| {
                // The schema has no display-field marker; the sole mandatory field is the best
                // evidence (see the fixture's README).
                let mut mandatory = self
                    .fields
                    .values()
                    .filter(|f| f.mandatory && f.name != "id");
                match (mandatory.next(), mandatory.next()) {
                    (Some(f), None) => Some(f.name.as_str()),
                    _ => None,
                }
            })
    }
}

/// The whole site schema.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SiteSchema {
    pub entities: BTreeMap<String, EntitySchema>,
}

/// A schema document that does not have the `schema_read` shape.
#[derive(Debug, thiserror::Error)]
#[error("invalid schema: {0}")]
pub struct SchemaError(pub String);

impl SiteSchema {
    /// Builds the model from the results of `schema_read` and (optionally) `schema_entity_read`.
    pub fn from_api(
        schema_read: &Value,
        schema_entity_read: Option<&Value>,
    ) -> Result<Self, SchemaError> {
        let types = schema_read
            .as_object()
            .ok_or_else(|| SchemaError("schema_read result is not an object".into()))?;
        let mut entities = BTreeMap::new();
        for (entity_type, fields) in types {
            let fields = fields
                .as_object()
                .ok_or_else(|| SchemaError(format!("{entity_type}: fields are not an object")))?;
            let mut parsed = BTreeMap::new();
            for (name, record) in fields {
                parsed.insert(name.clone(), parse_field(entity_type, name, record)?);
            }
            let display_name = schema_entity_read
                .and_then(|e| e.get(entity_type)?.get("name")?.get("value")?.as_str())
                .unwrap_or(entity_type)
                .to_string();
            entities.insert(
                entity_type.clone(),
                EntitySchema {
                    entity_type: entity_type.clone(),
                    display_name,
                    fields: parsed,
                },
            );
        }
        Ok(SiteSchema { entities })
    }

    /// Loads `schema.json` (and `schema_entity.json` beside it, when present).
    pub fn load_dir(dir: &std::path::Path) -> Result<Self, SchemaError> {
        let read = |name: &str| -> Result<Option<Value>, SchemaError> {
            let path = dir.join(name);
            if !path.exists() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| SchemaError(format!("{}: {e}", path.display())))?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| SchemaError(format!("{}: {e}", path.display())))
        };
        let schema = read("schema.json")?
            .ok_or_else(|| SchemaError(format!("{}: no schema.json", dir.display())))?;
        Self::from_api(&schema, read("schema_entity.json")?.as_ref())
    }

    pub fn entity(&self, entity_type: &str) -> Option<&EntitySchema> {
        self.entities.get(entity_type)
    }

    pub fn field(&self, entity_type: &str, field: &str) -> Option<&FieldSchema> {
        self.entities.get(entity_type)?.fields.get(field)
    }
}

impl FieldSchema {
    /// Parses one field record as `schema_read` / `schema_field_read` return it.
    pub fn from_api(entity_type: &str, name: &str, record: &Value) -> Result<Self, SchemaError> {
        parse_field(entity_type, name, record)
    }
}

fn prop<'a>(record: &'a Value, key: &str) -> Option<&'a Value> {
    record.get(key)?.get("value")
}

fn parse_field(entity_type: &str, name: &str, record: &Value) -> Result<FieldSchema, SchemaError> {
    let data_type = prop(record, "data_type")
        .and_then(Value::as_str)
        .ok_or_else(|| SchemaError(format!("{entity_type}.{name}: no data_type")))?;
    let props = record.get("properties");
    let strings = |key: &str| -> Vec<String> {
        props
            .and_then(|p| prop(p, key))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(FieldSchema {
        name: name.to_string(),
        display_name: prop(record, "name")
            .and_then(Value::as_str)
            .unwrap_or(name)
            .to_string(),
        data_type: DataType::from_api(data_type),
        editable: prop(record, "editable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        mandatory: prop(record, "mandatory")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        valid_types: strings("valid_types"),
        valid_values: strings("valid_values"),
        default_value: props
            .and_then(|p| prop(p, "default_value"))
            .cloned()
            .unwrap_or(Value::Null),
        raw: record.clone(),
    })
}

/// The real site's schema kept in this repository (the test site's default schema), for tests
/// across the workspace. It lives with the test site, which embeds it in its binary.
pub fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/fixtures/shotgun-schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_fixture() {
        let schema = SiteSchema::load_dir(&fixture_dir()).unwrap();
        assert_eq!(schema.entities.len(), 77);
        let total: usize = schema.entities.values().map(|e| e.fields.len()).sum();
        assert_eq!(total, 1035);
        let seq = schema.field("Shot", "sg_sequence").unwrap();
        assert_eq!(seq.data_type, DataType::Entity);
        assert_eq!(seq.valid_types, vec!["Sequence"]);
        assert_eq!(schema.entity("Shot").unwrap().display_field(), Some("code"));
        assert_eq!(
            schema.entity("Task").unwrap().display_field(),
            Some("content")
        );
        assert_eq!(
            schema.entity("PublishedFile").unwrap().display_name,
            "Published File"
        );
        let status = schema.field("Asset", "sg_status_list").unwrap();
        assert!(!status.valid_values.is_empty());
    }
}
