//! Applying plans on real databases matches the planner's model, including a field the site
//! retyped (rebuilt, back to pending) and a pruned type.

use serde_json::json;
use sgcache::plan::{DbState, FieldState, PlanOptions};
use sgcache::schema::{DataType, SiteSchema};
use sgcache::sql::Db;
use sgcache::storage::{self, WriteSource};
use sgcache::ShotgunCacheSpec;
use sgcache_tests::layout;
use sgcache_tests::pg::TestDb;
use sgcache_tests::worker;

async fn migrate(db: &Db, yaml: &str, site: &SiteSchema, prune: bool) -> sgcache::plan::Plan {
    let spec = ShotgunCacheSpec::from_yaml(yaml, "test").unwrap();
    let before = storage::read_state(db).await.unwrap();
    let plan = storage::migrate(db, &spec, site, PlanOptions { prune })
        .await
        .unwrap();
    // The database ends where the planner's model says it does.
    assert_eq!(storage::read_state(db).await.unwrap(), before.after(&plan));
    plan
}

async fn rebuild(db: &Db) {
    let mut site = SiteSchema::load_dir(&sgcache::schema::fixture_dir()).unwrap();
    let yaml = "entities:\n  - {type: Shot, fields: [code, sg_cut_in]}\n  - {type: Step, fields: [code]}\n";
    migrate(db, yaml, &site, false).await;
    write_one_shot(db).await;

    let field = site
        .entities
        .get_mut("Shot")
        .unwrap()
        .fields
        .get_mut("sg_cut_in")
        .unwrap();
    field.data_type = DataType::Text;
    let plan = migrate(db, yaml, &site, false).await;
    assert_eq!(
        plan.to_string(),
        "~ rebuild field Shot.sg_cut_in (number -> text), pending backfill\n"
    );
    let cols = &layout::read(db).await.unwrap().tables["shot"];
    let expected = if db.dialect() == sgcache::sql::Dialect::Postgres {
        "text"
    } else {
        "TEXT"
    };
    assert_eq!(cols["sg_cut_in"].data_type, expected);
    let state = storage::read_state(db).await.unwrap();
    assert_eq!(
        state.field("Shot", "sg_cut_in").unwrap().state,
        FieldState::Pending
    );
    let mut sql = db.sql();
    sql.push("SELECT code, sg_cut_in FROM shot");
    let rows = db.fetch_all(&sql).await.unwrap();
    assert_eq!(format!("{rows:?}"), "[[Text(\"sh010\"), Null]]");

    // Step out of the spec, pruned: its table and state rows go.
    let plan = migrate(
        db,
        "entities:\n  - {type: Shot, fields: [code, sg_cut_in]}\n",
        &site,
        true,
    )
    .await;
    assert_eq!(plan.to_string(), "- prune table step of Step\n");
    assert!(!layout::read(db).await.unwrap().tables.contains_key("step"));
    assert_eq!(storage::read_state(db).await.unwrap().types.len(), 1);
    assert_ne!(storage::read_state(db).await.unwrap(), DbState::default());
}

#[tokio::test]
async fn retyped_field_is_rebuilt_on_postgres() {
    let t = TestDb::create("sgcache_rebuild").await.unwrap();
    rebuild(&t.db).await;
    t.drop().await;
}

#[tokio::test]
async fn retyped_field_is_rebuilt_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&worker::sqlite_url(dir.path()), 2)
        .await
        .unwrap();
    rebuild(&db).await;
    db.close().await;
}

/// A statement a connection prepared before a migrate rebuilt a column it reads still runs
/// after it (PostgreSQL refuses a kept plan whose result type changed: the pool reconnects).
#[tokio::test]
async fn a_statement_prepared_before_a_rebuild_still_runs_on_postgres() {
    let t = TestDb::create("sgcache_rebuild_kept").await.unwrap();
    let mut site = SiteSchema::load_dir(&sgcache::schema::fixture_dir()).unwrap();
    let yaml = "entities:\n  - {type: Shot, fields: [code, sg_cut_in]}\n";
    migrate(&t.db, yaml, &site, false).await;
    write_one_shot(&t.db).await;
    // One connection, so the second run meets the statement the first one kept.
    let one = Db::connect(&t.url, 1).await.unwrap();
    let mut select = one.sql();
    select.push("SELECT code, sg_cut_in FROM shot");
    let rows = one.fetch_all(&select).await.unwrap();
    assert_eq!(format!("{rows:?}"), "[[Text(\"sh010\"), Int(1001)]]");
    site.entities
        .get_mut("Shot")
        .unwrap()
        .fields
        .get_mut("sg_cut_in")
        .unwrap()
        .data_type = DataType::Text;
    migrate(&t.db, yaml, &site, false).await;
    let rows = one.fetch_all(&select).await.unwrap();
    assert_eq!(format!("{rows:?}"), "[[Text(\"sh010\"), Null]]");
    one.close().await;
    t.drop().await;
}

/// Shot 1 (`code`, `sg_cut_in`) written as a scan would.
async fn write_one_shot(db: &Db) {
    let state = storage::read_state(db).await.unwrap();
    let at = storage::read_mark(db).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let rec = json!({"type": "Shot", "id": 1, "code": "sh010", "sg_cut_in": 1001});
    let source = WriteSource::Read { at, retired: false };
    storage::upsert_entities(&mut tx, &state, "Shot", &[rec], source)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}
