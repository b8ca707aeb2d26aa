//! The real database step (`SqlCacheDatabase`) against PostgreSQL and the test site: the
//! migration it runs, the field states and event position it reads back for the status, and
//! the finalizer's `deletionPolicy` (`Delete` drops every cache table, `Retain` keeps them).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{context, PgDb};
use kube::api::ObjectMeta;
use serde_json::json;
use sgcache::spec::{DeletionPolicy, SiteConnection};
use sgcache::sql::Db;
use sgcache::storage::{self, EventPosition};
use sgcache::ShotgunCacheSpec;
use sgcache_operator::crd::FINALIZER;
use sgcache_operator::db::{CacheDatabase, Connection, SiteLag};
use sgcache_operator::reconcile::reconcile;
use sgcache_operator::resources::default_schema;
use sgcache_operator::sqldb::SqlCacheDatabase;
use sgcache_operator::{ShotgunCache, ShotgunCacheResourceSpec};

const SPEC: &str = "site:\n  url: http://unused.invalid\n  scriptName: {value: sgcache_test}\n\
                    entities:\n  - type: Shot\n    fields: [code, sg_status_list, assets]\n";

fn spec() -> ShotgunCacheSpec {
    ShotgunCacheSpec::from_yaml(SPEC, "sqldb").expect("valid spec")
}

fn connection(database_url: &str, site_url: &str) -> Connection {
    Connection {
        database_url: database_url.into(),
        site: SiteConnection {
            url: site_url.into(),
            script_name: "sgcache_test".into(),
            api_key: "test_key".into(),
            timeout: Duration::from_secs(30),
        },
        schema: None,
    }
}

async fn sim() -> shotgun_sim::SimHandle {
    shotgun_sim::start(
        shotgun_sim::SimConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("test site")
}

/// Saves an event position as the follower does.
async fn write_position(url: &str, last: i64, backlog: serde_json::Value) {
    let db = Db::connect(url, 1).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let pos = EventPosition {
        last_event_id: Some(last),
        backlog,
    };
    storage::write_event_position(&mut tx, &pos).await.unwrap();
    tx.commit().await.unwrap();
    db.close().await;
}

#[tokio::test]
async fn migrate_then_snapshot_reads_the_state_tables() {
    let pg = PgDb::create("op_sqldb").await;
    let site = sim().await;
    let conn = connection(&pg.url, &site.url());
    let db = SqlCacheDatabase::default();

    // Nothing migrated yet: no fields, no event position (and no error).
    let empty = db
        .snapshot(&conn)
        .await
        .expect("snapshot of an empty database");
    assert!(empty.fields.is_empty() && empty.events.is_none());

    let first = db.migrate(&conn, &spec()).await.expect("migration");
    let text = first.changes.join("\n");
    assert!(text.contains("Shot.sg_status_list"), "{text}");
    assert!(text.contains("Shot.assets"), "{text}");
    let again = db.migrate(&conn, &spec()).await.expect("second migration");
    assert!(again.changes.is_empty(), "idempotent: {:?}", again.changes);

    let snap = db.snapshot(&conn).await.expect("snapshot");
    let names: Vec<&str> = snap.fields.iter().map(|f| f.field_name.as_str()).collect();
    for f in ["code", "sg_status_list", "assets"] {
        assert!(names.contains(&f), "{f} in {names:?}");
    }
    // Asset is cached for Shot.assets (implied by links), with its display field.
    let implied: Vec<String> = first.implied.iter().map(ToString::to_string).collect();
    assert_eq!(implied, ["Asset (code) for Shot.assets"]);
    assert!(first.uncovered.is_empty(), "{:?}", first.uncovered);
    assert!(snap
        .fields
        .iter()
        .all(|f| f.entity_type == "Shot" || f.entity_type == "Asset"));
    assert!(snap
        .fields
        .iter()
        .any(|f| (f.entity_type.as_str(), f.field_name.as_str()) == ("Asset", "code")));
    assert!(snap.fields.iter().all(|f| f.state == "pending"), "{snap:?}");
    assert!(snap.events.is_none(), "no follower position yet");
    assert!(pg.tables().await.contains(&"shot".to_string()));

    write_position(&pg.url, 42, json!([39, 41])).await;
    let snap = db.snapshot(&conn).await.expect("snapshot");
    let ev = snap.events.expect("the position written");
    assert_eq!((ev.last_event_id, ev.backlog), (Some(42), 2));
    assert_ne!(ev.lag, SiteLag::Unknown, "the site answered");
    // Past every site event: caught up, however long ago the site last changed.
    write_position(&pg.url, 1_000_000_000, json!([])).await;
    let ev = db.snapshot(&conn).await.unwrap().events.unwrap();
    assert_eq!(ev.lag, SiteLag::CaughtUp);
    // A site that does not answer leaves the lag unknown, not an error.
    let mut down = conn.clone();
    down.site.url = "http://127.0.0.1:9".into();
    let ev = db.snapshot(&down).await.unwrap().events.unwrap();
    assert_eq!(ev.lag, SiteLag::Unknown);

    site.shutdown().await;
    pg.drop().await;
}

#[tokio::test]
async fn drop_cache_removes_every_cache_table_and_is_idempotent() {
    let pg = PgDb::create("op_sqldb_drop").await;
    let site = sim().await;
    let conn = connection(&pg.url, &site.url());
    SqlCacheDatabase::default()
        .migrate(&conn, &spec())
        .await
        .unwrap();
    let before = pg.tables().await;
    assert!(
        before.len() >= 6,
        "entity, association and state tables: {before:?}"
    );
    assert!(before.iter().any(|t| t.contains("assets")), "{before:?}");

    SqlCacheDatabase::default()
        .drop_cache(&conn)
        .await
        .expect("drop");
    assert_eq!(pg.tables().await, Vec::<String>::new());
    assert_eq!(
        pg.function_schemas("_sgcache_notify_change").await,
        Vec::<String>::new(),
        "nothing of the cache is left in the shared schema"
    );
    SqlCacheDatabase::default()
        .drop_cache(&conn)
        .await
        .expect("drop again");

    site.shutdown().await;
    pg.drop().await;
}

/// The reconciles of a start or a rollout come a moment apart: one read of the site's schema
/// serves them, a spec change reads it again at once, and a reuse of zero reads it every time.
#[tokio::test]
async fn one_schema_read_serves_the_migrations_right_after_it() {
    let pg = PgDb::create("op_sqldb_memo").await;
    let site = sim().await;
    let conn = connection(&pg.url, &site.url());
    let schema_reads = || {
        site.stats()
            .by_method
            .get("schema_read")
            .copied()
            .unwrap_or(0)
    };
    let checked = |spec: ShotgunCacheSpec| {
        let url = pg.url.clone();
        async move {
            let db = Db::connect(&url, 1).await.unwrap();
            let ms = storage::schema_checked_ms(&db, &spec).await.unwrap();
            db.close().await;
            ms
        }
    };
    let db = SqlCacheDatabase::default();
    let before = chrono::Utc::now().timestamp_millis();
    db.migrate(&conn, &spec()).await.unwrap();
    let after = chrono::Utc::now().timestamp_millis();
    // When the schema was read is recorded with the migration (a starting scanner reads it
    // again only a schemaInterval later), and a reused read keeps its own time.
    let read_at = checked(spec()).await.expect("the schema check recorded");
    assert!(
        (before..=after).contains(&read_at),
        "{before} <= {read_at} <= {after}"
    );
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        db.migrate(&conn, &spec()).await.unwrap();
    }
    assert_eq!(schema_reads(), 1, "three migrations of one spec, one read");
    assert_eq!(checked(spec()).await, Some(read_at));

    let wider =
        ShotgunCacheSpec::from_yaml(&SPEC.replace("assets]", "assets, description]"), "memo")
            .expect("valid spec");
    let outcome = db.migrate(&conn, &wider).await.unwrap();
    assert_eq!(schema_reads(), 2, "a spec change reads the site again");
    assert!(checked(wider.clone()).await > Some(read_at));
    assert_eq!(
        checked(spec()).await,
        None,
        "recorded for the layout migrated last"
    );
    assert!(
        outcome
            .changes
            .iter()
            .any(|c| c.contains("Shot.description")),
        "{:?}",
        outcome.changes
    );

    let every_time = SqlCacheDatabase::reusing_schema_for(Duration::ZERO);
    every_time.migrate(&conn, &wider).await.unwrap();
    every_time.migrate(&conn, &wider).await.unwrap();
    assert_eq!(schema_reads(), 4);

    site.shutdown().await;
    pg.drop().await;
}

/// The snapshot on SQLite too (local runs; the operator deploys PostgreSQL).
#[tokio::test]
async fn snapshot_reads_the_event_position_on_sqlite_too() {
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let path = std::env::temp_dir().join(format!("op_sqldb_{}_{nanos}.db", std::process::id()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let site = sim().await;
    let conn = connection(&url, &site.url());
    SqlCacheDatabase::default()
        .migrate(&conn, &spec())
        .await
        .unwrap();
    write_position(&url, 7, json!([])).await;
    let ev = SqlCacheDatabase::default()
        .snapshot(&conn)
        .await
        .unwrap()
        .events
        .unwrap();
    assert_eq!((ev.last_event_id, ev.backlog), (Some(7), 0));
    assert_ne!(ev.lag, SiteLag::Unknown, "the site answered");
    site.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

/// A ShotgunCache being deleted, whose database URL comes from the Secret `db`.
fn deleting(policy: DeletionPolicy) -> ShotgunCache {
    let mut spec = spec();
    spec.deletion_policy = policy;
    spec.database.url = Some(sgcache::spec::ValueSource {
        secret_key_ref: Some(sgcache::spec::SecretKeyRef {
            name: "db".into(),
            key: "url".into(),
        }),
        ..Default::default()
    });
    let mut c = ShotgunCache::new("cache", ShotgunCacheResourceSpec(spec));
    let ts = "2026-01-01T00:00:00Z".parse().unwrap();
    c.metadata = ObjectMeta {
        name: Some("cache".into()),
        namespace: Some("default".into()),
        uid: Some("6e0c2f1a-0000-4000-8000-0000000000d1".into()),
        generation: Some(1),
        finalizers: Some(vec![FINALIZER.into()]),
        deletion_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts)),
        ..ObjectMeta::default()
    };
    c
}

/// What a deletion left: the tables in the cache's schema, whether the schema exists, the
/// schemas holding a notify function, the Events published, and whether the finalizer went.
struct Left {
    tables: Vec<String>,
    schema_exists: bool,
    notify_functions: Vec<String>,
    events: Vec<String>,
    finalizer_removed: bool,
}

/// Migrates into the schema the operator gives `default/cache`, then runs the finalizer's
/// cleanup through the real reconcile.
async fn delete_with(policy: DeletionPolicy) -> Left {
    let pg = PgDb::create("op_sqldb_policy").await;
    let site = sim().await;
    let schema = default_schema("default", "cache");
    let mut conn = connection(&pg.url, &site.url());
    conn.database_url = sgcache::spec::with_schema(&pg.url, Some(&schema));
    let mut in_schema = spec();
    in_schema.database.schema = Some(schema.clone());
    SqlCacheDatabase::default()
        .migrate(&conn, &in_schema)
        .await
        .unwrap();
    assert!(pg.tables().await.is_empty(), "nothing in public");
    assert!(pg.tables_in(&schema).await.contains(&"shot".to_string()));
    let (ctx, api) = context(Arc::new(SqlCacheDatabase::default()));
    let cache = deleting(policy);
    {
        let mut st = api.lock().unwrap();
        st.secrets
            .insert("db".into(), [("url".to_string(), pg.url.clone())].into());
        st.cache = Some(cache.clone());
    }
    reconcile(Arc::new(cache), ctx).await.expect("cleanup");
    let left = {
        let st = api.lock().unwrap();
        st.assert_clean();
        Left {
            tables: Vec::new(),
            schema_exists: false,
            notify_functions: Vec::new(),
            events: st.event_reasons(),
            finalizer_removed: st.cache.is_none(),
        }
    };
    let left = Left {
        tables: pg.tables_in(&schema).await,
        schema_exists: pg.schema_exists(&schema).await,
        notify_functions: pg.function_schemas("_sgcache_notify_change").await,
        ..left
    };
    site.shutdown().await;
    pg.drop().await;
    left
}

#[tokio::test]
async fn deletion_policy_delete_drops_the_cache_schema_whole() {
    let left = delete_with(DeletionPolicy::Delete).await;
    assert!(!left.schema_exists, "DROP SCHEMA … CASCADE");
    assert_eq!(left.tables, Vec::<String>::new());
    assert_eq!(
        left.notify_functions,
        Vec::<String>::new(),
        "the notify function went too"
    );
    assert_eq!(left.events, ["CacheDropped"]);
    assert!(
        left.finalizer_removed,
        "the finalizer is removed once the schema is gone"
    );
}

#[tokio::test]
async fn deletion_policy_retain_keeps_the_tables() {
    let left = delete_with(DeletionPolicy::Retain).await;
    for t in ["_sgcache_fields", "_sgcache_events", "shot"] {
        assert!(
            left.tables.contains(&t.to_string()),
            "{t} kept: {:?}",
            left.tables
        );
    }
    assert!(left.schema_exists);
    assert_eq!(left.notify_functions, [default_schema("default", "cache")]);
    assert_eq!(left.events, ["CacheRetained"]);
    assert!(left.finalizer_removed);
}

#[tokio::test]
async fn snapshot_sums_the_read_counts_of_every_proxy() {
    use sgcache::storage::read_counts::{self, MinuteReads};
    let pg = PgDb::create("op_sqldb_reads").await;
    let site = sim().await;
    let conn = connection(&pg.url, &site.url());
    let db = SqlCacheDatabase::default();
    db.migrate(&conn, &spec()).await.expect("migration");
    let none = db
        .snapshot(&conn)
        .await
        .unwrap()
        .reads
        .expect("read counts");
    assert_eq!((none.cache, none.site, none.ratio()), (0, 0, None));

    // Two replicas' counts this minute and last minute, and one from an hour ago.
    let cache_db = Db::connect(&pg.url, 1).await.unwrap();
    let now = read_counts::minute_of(chrono::Utc::now());
    let reads = |minute, cache, site: &[(&str, u64)]| MinuteReads {
        minute,
        cache,
        site: site.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
    };
    read_counts::add_reads(
        &cache_db,
        "proxy-a",
        &reads(now - 61, 1000, &[("stale", 1000)]),
    )
    .await
    .unwrap();
    read_counts::add_reads(
        &cache_db,
        "proxy-a",
        &reads(now - 1, 50, &[("link_name", 2)]),
    )
    .await
    .unwrap();
    read_counts::add_reads(&cache_db, "proxy-a", &reads(now, 40, &[("link_name", 1)]))
        .await
        .unwrap();
    read_counts::add_reads(
        &cache_db,
        "proxy-b",
        &reads(now, 7, &[("stale", 1), ("link_name", 3)]),
    )
    .await
    .unwrap();
    let share = db.snapshot(&conn).await.unwrap().reads.unwrap();
    assert_eq!(
        (share.cache, share.site, share.replicas),
        (97, 7, 2),
        "{share:?}"
    );
    assert_eq!(
        share.reasons,
        [("link_name".to_string(), 6), ("stale".to_string(), 1)],
        "the hour-old counts are trimmed and out of the window"
    );
    let status = sgcache_operator::status::reads_status(&share);
    assert_eq!(status.cached, "93%");
    assert_eq!(
        (status.from_cache, status.to_site, status.replicas),
        (97, 7, 2)
    );
    cache_db.close().await;
    site.shutdown().await;
    pg.drop().await;
}

/// `backfill_progressed` follows the cache's notifications: a write to a cache table alone
/// does not count, a field turning ready does (seen while waiting); a backfill that finished
/// before the wait began is seen at once; nothing happening ends at the deadline.
#[tokio::test]
async fn backfill_progress_is_heard_through_notifications() {
    let pg = PgDb::create("op_sqldb_wake").await;
    let site = sim().await;
    let conn = connection(&pg.url, &site.url());
    let db = SqlCacheDatabase::default();
    db.migrate(&conn, &spec()).await.expect("migration");
    let pending = db
        .snapshot(&conn)
        .await
        .unwrap()
        .fields
        .iter()
        .filter(|f| f.state == "pending")
        .count();
    assert!(pending >= 3, "the declared fields wait for their backfill");

    assert!(
        !db.backfill_progressed(&conn, pending, Duration::from_millis(300))
            .await
            .unwrap(),
        "nothing moved"
    );

    let waiting = {
        let conn = conn.clone();
        tokio::spawn(async move {
            SqlCacheDatabase::default()
                .backfill_progressed(&conn, pending, Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cache = Db::connect(&pg.url, 1).await.unwrap();
    // A page of rows written: a notification of a cache table, no field finished.
    let mut q = cache.sql();
    let table = sgcache::ident::quote(&sgcache::ident::table_name("Shot"));
    q.push(&format!("INSERT INTO {table} (id, code) VALUES (1, 'a')"));
    cache.execute(&q).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a row written is not progress");
    let mut tx = cache.begin().await.unwrap();
    storage::set_field_state(
        &mut tx,
        "Shot",
        &["code".to_string()],
        sgcache::plan::FieldState::Ready,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("heard before its deadline")
        .unwrap();
    assert!(heard.unwrap(), "a field turned ready");

    // Already fewer than the caller saw: true at once, without waiting for a notification.
    assert!(db
        .backfill_progressed(&conn, pending, Duration::from_secs(20))
        .await
        .unwrap());
    cache.close().await;
    pg.drop().await;
}
