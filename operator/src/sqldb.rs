//! [`CacheDatabase`] over the shared storage code: the same plan and migration as
//! `sgcache-worker migrate`, the state tables for the status, and dropping for `Delete`.

use chrono::Utc;
use futures::future::BoxFuture;
use sgcache::plan::PlanOptions;
use sgcache::site::SiteClient;
use sgcache::sql::Db;
use sgcache::storage::{notify, read_counts};
use sgcache::{storage, ShotgunCacheSpec};
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::time::Duration;

use crate::db::{
    CacheDatabase, Connection, DbError, DbSnapshot, EventsRow, FieldRow, MigrationOutcome, SiteLag,
};
use crate::schema_memo::{ReadSchema, SchemaMemo};

/// The window of the read counts in the status (as `sgcache-worker status` shows).
const READS_WINDOW_MINUTES: i64 = 5;

/// Connections the operator opens per call; it only runs short statements.
const POOL: u32 = 2;

/// The real database step. Each call opens and closes its own pool; the site's schema read
/// for a migration serves the ones right after it ([`SchemaMemo`]).
#[derive(Clone, Debug, Default)]
pub struct SqlCacheDatabase {
    schemas: Arc<SchemaMemo>,
}

impl SqlCacheDatabase {
    /// Reusing a site schema read for `reuse` (zero: every migration reads the site).
    pub fn reusing_schema_for(reuse: Duration) -> SqlCacheDatabase {
        SqlCacheDatabase {
            schemas: Arc::new(SchemaMemo::reusing_for(reuse)),
        }
    }
}

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
            let site =
                SiteClient::new(conn.site.clone()).map_err(|e| DbError::Site(e.to_string()))?;
            // Two round trips that need nothing from each other.
            let (db, schema) = tokio::join!(
                connect(&conn.database_url),
                self.schemas.schema(&site, &conn.site, spec)
            );
            let db = db?;
            let schema = schema.map_err(|e| DbError::Site(e.to_string()));
            let result = match schema {
                Ok(read) => migrate_read(&db, spec, &read).await,
                Err(e) => Err(e),
            };
            db.close().await;
            let plan = result?;
            Ok(MigrationOutcome {
                changes: plan.changes.iter().map(ToString::to_string).collect(),
                gone: plan.gone,
                uncovered: plan.uncovered,
                implied: plan.implied,
            })
        })
    }

    fn snapshot<'a>(&'a self, conn: &'a Connection) -> BoxFuture<'a, Result<DbSnapshot, DbError>> {
        Box::pin(async move {
            let site =
                SiteClient::new(conn.site.clone()).map_err(|e| DbError::Site(e.to_string()))?;
            let db = connect(&conn.database_url).await?;
            let result = snapshot(&db, &site).await;
            db.close().await;
            result
        })
    }

    fn backfill_progressed<'a>(
        &'a self,
        conn: &'a Connection,
        pending: usize,
        within: Duration,
    ) -> BoxFuture<'a, Result<bool, DbError>> {
        Box::pin(async move {
            let db = connect(&conn.database_url).await?;
            let result = tokio::time::timeout(within, backfill_progressed(&db, pending))
                .await
                .unwrap_or(Ok(false));
            db.close().await;
            result
        })
    }

    fn drop_cache<'a>(&'a self, conn: &'a Connection) -> BoxFuture<'a, Result<(), DbError>> {
        Box::pin(async move {
            let db = connect(&conn.database_url).await?;
            let result = match conn.schema.as_deref() {
                // Its own schema: everything the cache made (tables, the notify function,
                // any table a newer worker added) goes with it.
                Some(schema) if schema != "public" => drop_schema(&db, schema).await,
                _ => drop_all(&db).await,
            };
            db.close().await;
            result
        })
    }
}

/// Migrates to a schema as read, and records when it was read: the scanner that starts next
/// reads it again only a `schemaInterval` after that.
async fn migrate_read(
    db: &Db,
    spec: &ShotgunCacheSpec,
    read: &ReadSchema,
) -> Result<sgcache::plan::Plan, DbError> {
    let plan = storage::migrate(db, spec, &read.schema, PlanOptions::default())
        .await
        .map_err(|e| DbError::Migration(e.to_string()))?;
    // Not recorded only costs the scanner one more read of the schema.
    if let Err(e) = storage::record_schema_check(db, spec, read.read_ms).await {
        tracing::warn!(error = %e, "cannot record when the site's schema was read");
    }
    Ok(plan)
}

/// Fields still to fill: pending or backfilling.
async fn still_pending(db: &Db) -> Result<usize, DbError> {
    let fields = storage::list_fields(db).await.map_err(query)?;
    Ok(fields.iter().filter(|f| f.state.to_fill()).count())
}

/// Waits on the cache's notifications until fewer than `pending` fields are left to fill.
/// Counted once after `LISTEN` (a backfill that finished before it is seen at once), then again
/// at each change of a state table only: a backfill's pages write the cache tables far more
/// often than it finishes fields.
async fn backfill_progressed(db: &Db, pending: usize) -> Result<bool, DbError> {
    let Db::Postgres(pool) = db else {
        return Ok(false); // no notifications: the requeue follows it
    };
    let channel = notify::channel_of(db).await.map_err(query)?;
    let mut listener = PgListener::connect_with(pool).await.map_err(query)?;
    listener.listen(&channel).await.map_err(query)?;
    loop {
        if still_pending(db).await? < pending {
            return Ok(true);
        }
        loop {
            let note = listener.recv().await.map_err(query)?;
            if notify::SERVING_STATE_TABLES.contains(&note.payload()) {
                break;
            }
        }
    }
}

async fn snapshot(db: &Db, site: &SiteClient) -> Result<DbSnapshot, DbError> {
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
    let trust = trust_rows(db).await?;
    let minute = read_counts::minute_of(Utc::now());
    let reads = read_counts::read_share(db, minute, READS_WINDOW_MINUTES)
        .await
        .map_err(query)?;
    let Some(position) = storage::read_event_position(db).await.map_err(query)? else {
        return Ok(DbSnapshot {
            fields,
            events: None,
            trust,
            reads: Some(reads),
        });
    };
    let backlog = match &position.backlog {
        serde_json::Value::Array(a) => a.len() as i64,
        serde_json::Value::Object(o) => o.len() as i64,
        _ => 0,
    };
    let events = EventsRow {
        last_event_id: position.last_event_id,
        backlog,
        lag: match position.last_event_id {
            Some(last) => site_lag(site, last).await,
            None => SiteLag::Unknown,
        },
    };
    Ok(DbSnapshot {
        fields,
        events: Some(events),
        trust,
        reads: Some(reads),
    })
}

/// What each trust class has earned (`_sgcache_trust`, written by the proxies).
async fn trust_rows(db: &Db) -> Result<Vec<crate::crd::TrustClassStatus>, DbError> {
    let records = storage::read_trust(db).await.map_err(query)?;
    Ok(records
        .into_iter()
        .map(|(class, r)| crate::crd::TrustClassStatus {
            class: class.name().into(),
            state: r.state.name().into(),
            samples: r.samples,
            served: r.served,
            differences: r.differences,
            detail: r.detail,
        })
        .collect())
}

/// Reads the two oldest site events after `last` (the follower's position): none means the
/// cache is caught up; otherwise the first one's `created_at` is how long the cache has been
/// behind. A site that does not answer leaves the lag unknown (the status says so; the
/// reconcile goes on).
async fn site_lag(site: &SiteClient, last: i64) -> SiteLag {
    let payload = serde_json::json!({
        "type": "EventLogEntry",
        "filters": {"logical_operator": "and",
                    "conditions": [{"path": "id", "relation": "greater_than", "values": [last]}]},
        "return_fields": ["id", "created_at"],
        "return_only": "active",
        "paging": {"entities_per_page": 2, "current_page": 1},
        "return_paging_info": false,
        "sorts": [{"field_name": "id", "direction": "asc"}],
    });
    let answer = match site.call("read", payload).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the site's newest events for the lag");
            return SiteLag::Unknown;
        }
    };
    let entities = answer["entities"].as_array().cloned().unwrap_or_default();
    let Some(first) = entities.first() else {
        return SiteLag::CaughtUp;
    };
    let since = first["created_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    match since {
        Some(since) => SiteLag::Behind {
            since,
            pending: entities.len() > 1,
        },
        None => SiteLag::Unknown,
    }
}

/// `DROP SCHEMA … CASCADE` of the cache's own schema.
async fn drop_schema(db: &Db, schema: &str) -> Result<(), DbError> {
    let mut sql = db.sql();
    sql.push("DROP SCHEMA IF EXISTS ")
        .push_ident(schema)
        .push(" CASCADE");
    db.execute(&sql).await.map(|_| ()).map_err(query)
}

/// Every table the cache made in a shared schema (entity, association and every `_sgcache_*`
/// table) and the notify function: `core::storage` owns that list.
async fn drop_all(db: &Db) -> Result<(), DbError> {
    storage::drop_cache(db).await.map(|_| ()).map_err(query)
}
