//! What a database really contains, read from its catalog (information_schema on PostgreSQL,
//! sqlite_master and pragma_table_info on SQLite), never from the cache's own state tables.

use std::collections::BTreeMap;

use sgcache::sql::{Db, SqlValue};

/// One column as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Column {
    /// The type name: `bigint`, `timestamp with time zone`, … or SQLite's declared type.
    pub data_type: String,
    pub not_null: bool,
    /// The default expression, empty when none.
    pub default: String,
}

/// Tables, their columns, primary keys and indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub tables: BTreeMap<String, BTreeMap<String, Column>>,
    /// Primary key columns per table, in key order.
    pub primary_keys: BTreeMap<String, Vec<String>>,
    /// Index name → (table, definition).
    pub indexes: BTreeMap<String, (String, String)>,
}

impl Layout {
    /// The layout without the cache's `_sgcache_*` state tables.
    pub fn entity_tables(&self) -> BTreeMap<String, BTreeMap<String, Column>> {
        self.tables
            .iter()
            .filter(|(t, _)| !t.starts_with("_sgcache"))
            .map(|(t, c)| (t.clone(), c.clone()))
            .collect()
    }
}

fn text(v: &SqlValue) -> String {
    match v {
        SqlValue::Text(s) => s.clone(),
        SqlValue::Int(i) => i.to_string(),
        SqlValue::Null => String::new(),
        other => format!("{other:?}"),
    }
}

async fn rows(db: &Db, query: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let mut sql = db.sql();
    sql.push(query);
    Ok(db
        .fetch_all(&sql)
        .await?
        .iter()
        .map(|r| r.iter().map(text).collect())
        .collect())
}

/// Reads the layout of `db`.
pub async fn read(db: &Db) -> anyhow::Result<Layout> {
    match db {
        Db::Postgres(_) => read_pg(db).await,
        Db::Sqlite(_) => read_sqlite(db).await,
    }
}

async fn read_pg(db: &Db) -> anyhow::Result<Layout> {
    let mut layout = Layout::default();
    let cols = rows(
        db,
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, \
         coalesce(column_default, '')::text FROM information_schema.columns \
         WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position",
    )
    .await?;
    for r in cols {
        let column = Column {
            data_type: r[2].clone(),
            not_null: r[3] == "NO",
            default: r[4].clone(),
        };
        layout
            .tables
            .entry(r[0].clone())
            .or_default()
            .insert(r[1].clone(), column);
    }
    let keys = rows(
        db,
        "SELECT tc.table_name::text, kcu.column_name::text FROM information_schema.table_constraints tc \
         JOIN information_schema.key_column_usage kcu ON tc.constraint_name = kcu.constraint_name \
         AND tc.table_schema = kcu.table_schema \
         WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = current_schema() \
         ORDER BY tc.table_name, kcu.ordinal_position",
    )
    .await?;
    for r in keys {
        layout
            .primary_keys
            .entry(r[0].clone())
            .or_default()
            .push(r[1].clone());
    }
    let indexes = rows(
        db,
        "SELECT indexname::text, tablename::text, indexdef::text FROM pg_indexes \
         WHERE schemaname = current_schema() AND indexname NOT LIKE '%_pkey'",
    )
    .await?;
    for r in indexes {
        layout
            .indexes
            .insert(r[0].clone(), (r[1].clone(), r[2].clone()));
    }
    Ok(layout)
}

async fn read_sqlite(db: &Db) -> anyhow::Result<Layout> {
    let mut layout = Layout::default();
    let cols = rows(
        db,
        "SELECT m.name, p.name, p.type, p.\"notnull\", coalesce(p.dflt_value, ''), p.pk \
         FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table' \
         ORDER BY m.name, p.pk, p.cid",
    )
    .await?;
    for r in cols {
        let column = Column {
            data_type: r[2].clone(),
            not_null: r[3] == "1",
            default: r[4].clone(),
        };
        layout
            .tables
            .entry(r[0].clone())
            .or_default()
            .insert(r[1].clone(), column);
        if r[5] != "0" {
            layout
                .primary_keys
                .entry(r[0].clone())
                .or_default()
                .push(r[1].clone());
        }
    }
    let indexes = rows(
        db,
        "SELECT name, tbl_name, coalesce(sql, '') FROM sqlite_master WHERE type = 'index' \
         AND name NOT LIKE 'sqlite_autoindex%'",
    )
    .await?;
    for r in indexes {
        layout
            .indexes
            .insert(r[0].clone(), (r[1].clone(), r[2].clone()));
    }
    Ok(layout)
}

/// Every row of a table as text, ordered, for before/after comparisons.
pub async fn dump(db: &Db, table: &str, order_by: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let mut sql = db.sql();
    sql.push("SELECT * FROM ")
        .push_ident(table)
        .push(" ORDER BY ")
        .push(order_by);
    Ok(db
        .fetch_all(&sql)
        .await?
        .iter()
        .map(|r| r.iter().map(|v| format!("{v:?}")).collect())
        .collect())
}
