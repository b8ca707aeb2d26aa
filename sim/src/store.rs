//! The in-memory site: one table per entity type of the schema, rows indexed by id.

use std::collections::HashMap;
use std::time::Instant;

use sgcache::api3::Api3Error;
use sgcache::schema::{DataType, SiteSchema};

use crate::schema_writes::SchemaEdits;
use crate::semantics::Semantics;
use crate::value::{Link, Ty, Val};

/// One field of a table, with link targets resolved to table indices.
#[derive(Clone, Debug)]
pub struct FieldMeta {
    pub name: String,
    pub data_type: DataType,
    /// Targets that exist in the schema (the fixture names some types it does not define).
    pub valid_types: Vec<Ty>,
    pub valid_values: Vec<String>,
    pub editable: bool,
    /// The fields on the other side of a link, at most one per other type (see `inverse`).
    pub inverse: Vec<(Ty, u16)>,
}

/// A row. `vals` is sorted by field index and holds only fields that are set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub retired: bool,
    pub vals: Vec<(u16, Val)>,
}

impl Row {
    pub fn get(&self, field: u16) -> Option<&Val> {
        self.vals
            .binary_search_by_key(&field, |(f, _)| *f)
            .ok()
            .map(|i| &self.vals[i].1)
    }

    /// Sets or clears (None) a field.
    pub fn set(&mut self, field: u16, val: Option<Val>) {
        match (self.vals.binary_search_by_key(&field, |(f, _)| *f), val) {
            (Ok(i), Some(v)) => self.vals[i].1 = v,
            (Ok(i), None) => {
                self.vals.remove(i);
            }
            (Err(i), Some(v)) => self.vals.insert(i, (field, v)),
            (Err(_), None) => {}
        }
    }
}

/// Visibility of event rows affected by the event-gap fault.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pending {
    Until(Instant),
    Never,
}

#[derive(Debug)]
pub struct Table {
    pub name: String,
    pub display_name: String,
    pub fields: Vec<FieldMeta>,
    pub by_name: HashMap<String, u16>,
    /// The display field (the `name` of links to this type).
    pub display: Option<u16>,
    /// `rows[id - 1]`; `None` for ids never created (or rolled back).
    pub rows: Vec<Option<Row>>,
    /// Rows hidden from reads for a while (event gaps) or for ever (dropped events).
    pub pending: HashMap<u32, Pending>,
    /// Values create gives fields the request leaves out (schema `default_value`).
    pub defaults: Option<Vec<(u16, Val)>>,
}

impl Table {
    pub fn field(&self, name: &str) -> Option<u16> {
        self.by_name.get(name).copied()
    }
    pub fn row(&self, id: u32) -> Option<&Row> {
        self.rows.get((id as usize).checked_sub(1)?)?.as_ref()
    }
    pub fn row_mut(&mut self, id: u32) -> Option<&mut Row> {
        self.rows.get_mut((id as usize).checked_sub(1)?)?.as_mut()
    }
    pub fn next_id(&self) -> u32 {
        self.rows.len() as u32 + 1
    }
    /// False while an event row is held back by the gap fault.
    pub fn visible(&self, id: u32, now: Instant) -> bool {
        match self.pending.get(&id) {
            None => true,
            Some(Pending::Never) => false,
            Some(Pending::Until(t)) => *t <= now,
        }
    }
}

/// All tables, and the schema they follow (the schema methods change both together).
#[derive(Debug)]
pub struct Store {
    pub tables: Vec<Table>,
    pub by_name: HashMap<String, Ty>,
    pub schema: SiteSchema,
    pub edits: SchemaEdits,
    /// Unset checkboxes read as `null` (reads, filters and sorts) instead of `false`, as on
    /// sites whose checkbox columns were added without a default (`SimConfig::null_checkboxes`).
    pub null_checkboxes: bool,
    /// Text case, sort collation and week start (`SimConfig::semantics`).
    pub semantics: Semantics,
}

impl Store {
    pub fn new(schema: &SiteSchema) -> Store {
        let by_name: HashMap<String, Ty> = schema
            .entities
            .keys()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as Ty))
            .collect();
        let tables = schema
            .entities
            .values()
            .map(|e| {
                let fields: Vec<FieldMeta> = e
                    .fields
                    .values()
                    .map(|f| FieldMeta {
                        name: f.name.clone(),
                        data_type: f.data_type.clone(),
                        valid_types: f
                            .valid_types
                            .iter()
                            .filter_map(|t| by_name.get(t).copied())
                            .collect(),
                        valid_values: f.valid_values.clone(),
                        editable: f.editable,
                        inverse: Vec::new(),
                    })
                    .collect();
                let by_field: HashMap<String, u16> = fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (f.name.clone(), i as u16))
                    .collect();
                Table {
                    name: e.entity_type.clone(),
                    display_name: e.display_name.clone(),
                    display: e.display_field().and_then(|d| by_field.get(d).copied()),
                    by_name: by_field,
                    fields,
                    rows: Vec::new(),
                    pending: HashMap::new(),
                    defaults: None,
                }
            })
            .collect();
        let mut store = Store {
            tables,
            by_name,
            schema: schema.clone(),
            edits: SchemaEdits::default(),
            null_checkboxes: false,
            semantics: Semantics::default(),
        };
        crate::inverse::pair_fields(&mut store);
        store.load_defaults(schema);
        store
    }

    /// Scalar schema defaults (checkboxes default to false without being stored).
    fn load_defaults(&mut self, schema: &SiteSchema) {
        for ty in 0..self.tables.len() {
            let t = &self.tables[ty];
            let Some(e) = schema.entity(&t.name) else {
                continue;
            };
            let mut out = Vec::new();
            for (i, meta) in t.fields.iter().enumerate() {
                let skip = matches!(
                    meta.data_type,
                    DataType::Checkbox | DataType::Entity | DataType::MultiEntity
                );
                let Some(d) = e.fields.get(&meta.name).map(|f| &f.default_value) else {
                    continue;
                };
                if skip || d.is_null() {
                    continue;
                }
                if let Ok(Some(v)) = crate::codec::parse_value(self, meta, d) {
                    out.push((i as u16, v));
                }
            }
            self.tables[ty].defaults = (!out.is_empty()).then_some(out);
        }
    }

    pub fn ty(&self, name: &str) -> Result<Ty, Api3Error> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| Api3Error::bad_request(format!("Entity type '{name}' does not exist")))
    }

    pub fn table(&self, ty: Ty) -> &Table {
        &self.tables[ty as usize]
    }

    pub fn table_mut(&mut self, ty: Ty) -> &mut Table {
        &mut self.tables[ty as usize]
    }

    /// A field index or a clear "does not exist" fault.
    pub fn field(&self, ty: Ty, name: &str) -> Result<u16, Api3Error> {
        let t = self.table(ty);
        t.field(name).ok_or_else(|| {
            Api3Error::bad_request(format!(
                "Field '{name}' does not exist on entity type '{}'",
                t.name
            ))
        })
    }

    pub fn row(&self, link: Link) -> Option<&Row> {
        self.table(link.ty).row(link.id)
    }

    /// An active (not retired) row. Links to retired rows resolve to nothing in reads.
    pub fn active(&self, link: Link) -> Option<&Row> {
        self.row(link).filter(|r| !r.retired)
    }

    /// The display name of a linked entity (retired or not), if it has one.
    pub fn display_name(&self, link: Link) -> Option<&str> {
        let field = self.table(link.ty).display?;
        self.row(link)?.get(field)?.as_str()
    }

    /// Appends a row and returns its id.
    pub fn insert(&mut self, ty: Ty, row: Row) -> u32 {
        let t = self.table_mut(ty);
        t.rows.push(Some(row));
        t.rows.len() as u32
    }
}
