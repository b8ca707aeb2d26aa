//! Table and column definitions of the storage layout (docs/storage.md), for both dialects.
//! Identifiers come from validated entity types and field names and are always quoted.

use crate::ident;
use crate::schema::Storage;
use crate::sql::{Dialect, Sql};

/// The column types of the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    BigInt,
    Double,
    /// Checkbox: nullable, no default (sites return null for unset checkboxes; a row written
    /// without the field must not claim `false`).
    Checkbox,
    Date,
    DateTime,
    Json,
}

impl ColumnType {
    /// The column's type and constraints in `dialect`.
    pub fn sql(self, dialect: Dialect) -> &'static str {
        match (self, dialect) {
            (ColumnType::Text, Dialect::Postgres) => "text",
            (ColumnType::BigInt, Dialect::Postgres) => "bigint",
            (ColumnType::Double, Dialect::Postgres) => "double precision",
            (ColumnType::Checkbox, Dialect::Postgres) => "boolean",
            (ColumnType::Date, Dialect::Postgres) => "date",
            (ColumnType::DateTime, Dialect::Postgres) => "timestamptz",
            (ColumnType::Json, Dialect::Postgres) => "jsonb",
            (ColumnType::BigInt, Dialect::Sqlite) => "INTEGER",
            (ColumnType::Double, Dialect::Sqlite) => "REAL",
            (ColumnType::Checkbox, Dialect::Sqlite) => "INTEGER",
            (_, Dialect::Sqlite) => "TEXT",
        }
    }
}

/// The name `_sgcache_fields.storage` records for a storage kind.
pub fn storage_name(storage: Storage) -> &'static str {
    match storage {
        Storage::Text => "text",
        Storage::Integer => "integer",
        Storage::Float => "float",
        Storage::Boolean => "boolean",
        Storage::Date => "date",
        Storage::DateTime => "date_time",
        Storage::Json => "json",
        Storage::EntityLink => "entity_link",
        Storage::MultiEntity => "multi_entity",
        Storage::Uncacheable(_) => "uncacheable",
    }
}

/// The entity-table columns of a field. `id` is the table's key, created with the table;
/// multi-entity fields live in an association table.
pub fn field_columns(field: &str, storage: Storage) -> Vec<(String, ColumnType)> {
    let one = |t| vec![(field.to_string(), t)];
    match storage {
        _ if field == "id" => vec![],
        Storage::Text => one(ColumnType::Text),
        Storage::Integer => one(ColumnType::BigInt),
        Storage::Float => one(ColumnType::Double),
        Storage::Boolean => one(ColumnType::Checkbox),
        Storage::Date => one(ColumnType::Date),
        Storage::DateTime => one(ColumnType::DateTime),
        Storage::Json => one(ColumnType::Json),
        Storage::EntityLink => vec![
            (format!("{field}__type"), ColumnType::Text),
            (format!("{field}__id"), ColumnType::BigInt),
        ],
        Storage::MultiEntity | Storage::Uncacheable(_) => vec![],
    }
}

/// `CREATE TABLE` of an entity table with its metadata columns.
pub fn create_entity_table(dialect: Dialect, table: &str) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("CREATE TABLE ").push_ident(table).push(" (");
    let cols = match dialect {
        Dialect::Postgres => {
            "\"id\" bigint PRIMARY KEY, \"_retired\" boolean NOT NULL DEFAULT false, \
             \"_last_event_id\" bigint, \"_cached_at\" timestamptz NOT NULL DEFAULT now(), \
             \"_updated_at_seen\" timestamptz)"
        }
        Dialect::Sqlite => {
            "\"id\" INTEGER PRIMARY KEY, \"_retired\" INTEGER NOT NULL DEFAULT 0, \
             \"_last_event_id\" INTEGER, \"_cached_at\" TEXT NOT NULL, \
             \"_updated_at_seen\" TEXT)"
        }
    };
    sql.push(cols);
    sql
}

/// Statements creating a field's storage in the table of `entity_type`.
pub fn add_field(dialect: Dialect, entity_type: &str, field: &str, storage: Storage) -> Vec<Sql> {
    let table = ident::table_name(entity_type);
    if storage == Storage::MultiEntity {
        return create_assoc_table(dialect, &ident::assoc_table_name(entity_type, field));
    }
    let mut out: Vec<Sql> = field_columns(field, storage)
        .into_iter()
        .map(|(col, ty)| {
            let mut sql = Sql::new(dialect);
            sql.push("ALTER TABLE ")
                .push_ident(&table)
                .push(" ADD COLUMN ")
                .push_ident(&col)
                .push(" ")
                .push(ty.sql(dialect));
            sql
        })
        .collect();
    if storage == Storage::EntityLink {
        out.push(create_link_index(dialect, &table, field));
    }
    out
}

/// The name of the index on an entity field's `{field}__id` column: `{table}_{field}__id`, or,
/// when that is longer than an identifier may be, a prefix of it made unique by a hash.
/// (Field names never contain `__`, so these names cannot meet association tables or their
/// `__target` indexes.)
pub fn link_index_name(table: &str, field: &str) -> String {
    let name = format!("{table}_{field}__id");
    if name.len() <= ident::MAX_IDENT_LEN {
        return name;
    }
    use sha2::{Digest, Sha256};
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
    // Names are ASCII (validated), so any byte offset is a character boundary.
    format!("{}_{hash}__id", &name[..ident::MAX_IDENT_LEN - 13])
}

/// `CREATE INDEX IF NOT EXISTS` on an entity field's `{field}__id` column: reads filter on
/// links (`project is {...}`) and join link targets by id; without it every such filter scans
/// the table. The index is on the id alone: ids are unique per type in practice and the type
/// column is checked on the few rows the index finds.
pub fn create_link_index(dialect: Dialect, table: &str, field: &str) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("CREATE INDEX IF NOT EXISTS ")
        .push_ident(&link_index_name(table, field))
        .push(" ON ")
        .push_ident(table)
        .push(" (")
        .push_ident(&format!("{field}__id"))
        .push(")");
    sql
}

/// Statements dropping a field's storage.
pub fn drop_field(dialect: Dialect, entity_type: &str, field: &str, storage: Storage) -> Vec<Sql> {
    let table = ident::table_name(entity_type);
    if storage == Storage::MultiEntity {
        return vec![drop_table(
            dialect,
            &ident::assoc_table_name(entity_type, field),
        )];
    }
    let mut out = Vec::new();
    if storage == Storage::EntityLink {
        // SQLite refuses to drop an indexed column; PostgreSQL would drop the index with it.
        let mut sql = Sql::new(dialect);
        sql.push("DROP INDEX IF EXISTS ")
            .push_ident(&link_index_name(&table, field));
        out.push(sql);
    }
    out.extend(field_columns(field, storage).into_iter().map(|(col, _)| {
        let mut sql = Sql::new(dialect);
        sql.push("ALTER TABLE ")
            .push_ident(&table)
            .push(" DROP COLUMN ")
            .push_ident(&col);
        sql
    }));
    out
}

fn create_assoc_table(dialect: Dialect, table: &str) -> Vec<Sql> {
    let (big, int, text) = match dialect {
        Dialect::Postgres => ("bigint", "integer", "text"),
        Dialect::Sqlite => ("INTEGER", "INTEGER", "TEXT"),
    };
    let mut create = Sql::new(dialect);
    create
        .push("CREATE TABLE ")
        .push_ident(table)
        .push(&format!(
            " (\"_entity_id\" {big} NOT NULL, \"_position\" {int} NOT NULL, \
         \"_target_type\" {text} NOT NULL, \"_target_id\" {big} NOT NULL, \
         PRIMARY KEY (\"_entity_id\", \"_position\"))"
        ));
    let mut index = Sql::new(dialect);
    index
        .push("CREATE INDEX ")
        .push_ident(&format!("{table}{}", crate::plan::ASSOC_INDEX_SUFFIX))
        .push(" ON ")
        .push_ident(table)
        .push(" (\"_target_type\", \"_target_id\")");
    vec![create, index]
}

/// `DROP TABLE IF EXISTS`.
pub fn drop_table(dialect: Dialect, table: &str) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("DROP TABLE IF EXISTS ").push_ident(table);
    sql
}
