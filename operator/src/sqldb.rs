//! [`CacheDatabase`] over the shared storage code: the same plan and migration as
//! `sgcache-worker migrate`, the state tables for the status, and dropping for `Delete`.

use chrono::Utc;
use futures::future::BoxFuture;
use sgcache::plan::PlanOptions;
use sgcache::site::SiteClient;
use sgcache::sql::{Db, Dialect, SqlValue};
use sgcache::{ident, storage, ShotgunCacheSpec};

use crate::db::{
    CacheDatabase, Connection, DbError, DbSnapshot, EventsRow, FieldRow, MigrationOutcome,
};

/// Connections the operator opens per call; it only runs short statements.
const POOL: u32 = 2;

/// The real database step. Stateless: each call opens and closes its own pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct SqlCacheDatabase;

async fn connect(url: &str) -> Result<Db, DbError> {
    Db::connect(url, POOL)
        .await
        .map_err(|e| DbError::Connect(e.to_string()))
}

fn query(e: impl std::fmt::Display) -> DbError {
    DbError::Query(e.to_string())
}

impl CacheDatabase for SqlCacheDatabase {
    fn migrate<'a>(
        &'a self,
        conn: &'a Connection,
        spec: &'a ShotgunCacheSpec,
    ) -> BoxFuture<'a, Result<MigrationOutcome, DbError>> {
        Box::pin(async move {
            let db = connect(&conn.database_url).await?;
            let site =
                SiteClient::new(conn.site.clone()).map_err(|e| DbError::Site(e.to_string()))?;
            let schema = site
                .schema()
                .await
                .map_err(|e| DbError::Site(e.to_string()));
            let result = match schema {
                Ok(schema) => storage::migrate(&db, spec, &schema, PlanOptions::default())
                    .await
                    .map_err(|e| DbError::Migration(e.to_string())),
                Err(e) => Err(e),
            };
            db.close().await;
            let plan = result?;
            Ok(MigrationOutcome {
                changes: plan.changes.iter().map(ToString::to_string).collect(),
            })
        })
    }

    fn snapshot<'a>(&'a self, conn: &'a Connection) -> BoxFuture<'a, Result<DbSnapshot, DbError>> {
        Box::pin(async move {
            let db = connect(&conn.database_url).await?;
            let result = snapshot(&db).await;
            db.close().await;
            result
        })
    }

    fn drop_cache<'a>(&'a self, conn: &'a Connection) -> BoxFuture<'a, Result<(), DbError>> {
        Box::pin(async move {
            let db = connect(&conn.database_url).await?;
            let result = drop_all(&db).await;
            db.close().await;
            result
        })
    }
}

async fn snapshot(db: &Db) -> Result<DbSnapshot, DbError> {
    let fields = storage::list_fields(db).await.map_err(query)?;
    let fields = fields
        .into_iter()
        .map(|f| FieldRow {
            entity_type: f.entity_type,
            field_name: f.field_name,
            state: f.state.as_str().to_string(),
            backfill_done: f.backfill_done,
            backfill_total: f.backfill_total,
        })
        .collect();
    let Some(position) = storage::read_event_position(db).await.map_err(query)? else {
        return Ok(DbSnapshot {
            fields,
            events: None,
        });
    };
    let backlog = match &position.backlog {
        serde_json::Value::Array(a) => a.len() as i64,
        serde_json::Value::Object(o) => o.len() as i64,
        _ => 0,
    };
    // Age computed by the database's clock, so operator/database clock skew does not count.
    let mut sql = db.sql();
    sql.push(match db.dialect() {
        Dialect::Postgres => {
            "SELECT CAST(EXTRACT(EPOCH FROM (now() - updated_at)) AS bigint) \
             FROM \"_sgcache_events\" WHERE id = 1"
        }
        // Local runs only (the operator deploys PostgreSQL caches); `updated_at` is ISO text.
        Dialect::Sqlite => {
            "SELECT CAST((julianday('now') - julianday(updated_at)) * 86400 AS INTEGER) \
             FROM \"_sgcache_events\" WHERE id = 1"
        }
    });
    let lag = match db
        .fetch_all(&sql)
        .await
        .map_err(query)?
        .first()
        .and_then(|r| r.first())
    {
        Some(SqlValue::Int(secs)) => Some(Utc::now() - chrono::Duration::seconds(*secs)),
        _ => None,
    };
    let events = EventsRow {
        last_event_id: position.last_event_id,
        backlog,
        updated_at: lag,
    };
    Ok(DbSnapshot {
        fields,
        events: Some(events),
    })
}

/// Every table the cache made: entity tables, association tables, state tables.
async fn drop_all(db: &Db) -> Result<(), DbError> {
    let fields = storage::list_fields(db).await.map_err(query)?;
    let mut tables: Vec<String> = Vec::new();
    for f in &fields {
        if f.storage == "multi_entity" {
            tables.push(ident::assoc_table_name(&f.entity_type, &f.field_name));
        }
        tables.push(ident::table_name(&f.entity_type));
    }
    tables.sort();
    tables.dedup();
    tables.extend(
        [
            "_sgcache_fields",
            "_sgcache_types",
            "_sgcache_events",
            "_sgcache_migrations",
        ]
        .map(String::from),
    );
    let mut tx = db.begin().await.map_err(query)?;
    for t in &tables {
        let sql = storage::ddl::drop_table(db.dialect(), t);
        tx.execute(&sql).await.map_err(query)?;
    }
    tx.commit().await.map_err(query)
}
