//! `sgcache-worker migrate` with examples/studio.yaml against the fixture schema: the layout it
//! creates on PostgreSQL and SQLite, checked against the database catalog and against
//! docs/storage.md's type table applied to the fixture by this test's own code.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use sgcache::sql::{Db, Dialect};
use sgcache_tests::layout::{self, Column, Layout};
use sgcache_tests::pg::TestDb;
use sgcache_tests::worker;

fn studio_yaml() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/studio.yaml")
}

/// docs/storage.md: data type → column types (PostgreSQL as information_schema names them,
/// SQLite as declared); `None` for multi-entity, `Some(vec![])` when not stored.
fn columns_of(dialect: Dialect, field: &str, data_type: &str) -> Option<Vec<(String, Column)>> {
    let pg = dialect == Dialect::Postgres;
    let col = |ty_pg: &str, ty_lite: &str| Column {
        data_type: if pg { ty_pg } else { ty_lite }.into(),
        not_null: false,
        default: String::new(),
    };
    let one = |c: Column| Some(vec![(field.to_string(), c)]);
    match data_type {
        "text" | "footage" | "list" | "status_list" | "color" | "entity_type" | "uuid"
        | "system_task_type" => one(col("text", "TEXT")),
        "number" | "percent" | "duration" | "timecode" => one(col("bigint", "INTEGER")),
        "float" | "currency" => one(col("double precision", "REAL")),
        // Nullable with no default: sites return null in checkboxes (docs/storage.md).
        "checkbox" => one(col("boolean", "INTEGER")),
        "date" => one(col("date", "TEXT")),
        "date_time" => one(col("timestamp with time zone", "TEXT")),
        "serializable" | "url" | "tag_list" => one(col("jsonb", "TEXT")),
        "entity" => Some(vec![
            (format!("{field}__type"), col("text", "TEXT")),
            (format!("{field}__id"), col("bigint", "INTEGER")),
        ]),
        "multi_entity" | "addressing" => None,
        _ => Some(vec![]),
    }
}

fn display_field(entity_type: &str) -> &'static str {
    match entity_type {
        "Task" => "content",
        "Project" | "HumanUser" | "Department" => "name",
        "Note" => "subject",
        "ApiUser" => "firstname",
        _ => "code",
    }
}

fn metadata_columns(dialect: Dialect) -> Vec<(String, Column)> {
    let pg = dialect == Dialect::Postgres;
    let c =
        |name: &str, pg_ty: &str, lite_ty: &str, not_null: bool, pg_def: &str, lite_def: &str| {
            let column = Column {
                data_type: if pg { pg_ty } else { lite_ty }.into(),
                not_null,
                default: if pg { pg_def } else { lite_def }.into(),
            };
            (name.to_string(), column)
        };
    vec![
        // SQLite's pragma reports an INTEGER PRIMARY KEY (the rowid) as nullable.
        c("id", "bigint", "INTEGER", pg, "", ""),
        c("_retired", "boolean", "INTEGER", true, "false", "0"),
        c("_last_event_id", "bigint", "INTEGER", false, "", ""),
        c(
            "_cached_at",
            "timestamp with time zone",
            "TEXT",
            true,
            "now()",
            "",
        ),
        c(
            "_updated_at_seen",
            "timestamp with time zone",
            "TEXT",
            false,
            "",
            "",
        ),
    ]
}

/// The entity and association tables the spec should produce, by this test's own reading of
/// the spec and the fixture.
fn expected(dialect: Dialect) -> BTreeMap<String, BTreeMap<String, Column>> {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(sgcache::schema::fixture_dir().join("schema.json")).unwrap(),
    )
    .unwrap();
    let spec = sgcache::ShotgunCacheSpec::from_file(&studio_yaml()).unwrap();
    let mut tables = BTreeMap::new();
    for e in &spec.entities {
        let site = schema[&e.entity_type].as_object().unwrap();
        let mut names: Vec<&str> = if e.all_fields() {
            site.keys().map(String::as_str).collect()
        } else {
            e.fields.iter().map(String::as_str).collect()
        };
        names.retain(|f| !e.exclude.iter().any(|x| x == f));
        names.extend(["id", "updated_at", display_field(&e.entity_type)]);
        let table = e.entity_type.to_lowercase();
        let mut cols: BTreeMap<String, Column> = metadata_columns(dialect).into_iter().collect();
        for f in names {
            let dt = site[f]["data_type"]["value"].as_str().unwrap();
            match columns_of(dialect, f, dt) {
                Some(c) if f != "id" => cols.extend(c),
                Some(_) => {}
                None => {
                    tables.insert(format!("{table}_{f}"), assoc_columns(dialect));
                }
            }
        }
        tables.insert(table, cols);
    }
    // Types implied by links: the targets of cached links that the spec does not list, with
    // what a link needs (the display field) besides the columns every table has.
    let listed: Vec<&str> = spec
        .entities
        .iter()
        .map(|e| e.entity_type.as_str())
        .collect();
    for e in &spec.entities {
        for (name, field) in schema[&e.entity_type].as_object().unwrap() {
            let wanted = e.all_fields() || e.fields.iter().any(|f| f == name);
            let dt = field["data_type"]["value"].as_str().unwrap();
            if !wanted
                || e.exclude.iter().any(|x| x == name)
                || !matches!(dt, "entity" | "multi_entity")
            {
                continue;
            }
            let targets = field["properties"]["valid_types"]["value"].as_array();
            for t in targets.into_iter().flatten().filter_map(Value::as_str) {
                if listed.contains(&t) || schema.get(t).is_none() {
                    continue;
                }
                let mut cols: BTreeMap<String, Column> =
                    metadata_columns(dialect).into_iter().collect();
                for f in ["updated_at", display_field(t)] {
                    let dt = schema[t][f]["data_type"]["value"].as_str().unwrap();
                    cols.extend(columns_of(dialect, f, dt).unwrap());
                }
                tables.insert(t.to_lowercase(), cols);
            }
        }
    }
    tables
}

fn assoc_columns(dialect: Dialect) -> BTreeMap<String, Column> {
    let pg = dialect == Dialect::Postgres;
    let c = |pg_ty: &str, lite_ty: &str| Column {
        data_type: if pg { pg_ty } else { lite_ty }.into(),
        not_null: true,
        default: String::new(),
    };
    BTreeMap::from([
        ("_entity_id".into(), c("bigint", "INTEGER")),
        ("_position".into(), c("integer", "INTEGER")),
        ("_target_type".into(), c("text", "TEXT")),
        ("_target_id".into(), c("bigint", "INTEGER")),
    ])
}

fn check_layout(dialect: Dialect, got: &Layout) {
    let want = expected(dialect);
    let entity_tables = got.entity_tables();
    assert_eq!(
        entity_tables.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "tables"
    );
    for (table, cols) in &want {
        assert_eq!(&entity_tables[table], cols, "columns of {table}");
        let key = &got.primary_keys[table];
        if cols.contains_key("_position") {
            assert_eq!(key, &["_entity_id", "_position"], "key of {table}");
            let (t, def) = &got.indexes[&format!("{table}__target")];
            assert_eq!(t, table);
            assert!(
                def.contains("_target_type") && def.contains("_target_id"),
                "{def}"
            );
        } else {
            assert_eq!(key, &["id"], "key of {table}");
            // docs/storage.md: every entity field's id column is indexed,
            // `{table}_{field}__id` (reads filter on links and join link targets by id).
            for col in cols.keys().filter(|c| c.ends_with("__id")) {
                let name = format!("{table}_{col}");
                let (t, def) = got
                    .indexes
                    .get(&name)
                    .unwrap_or_else(|| panic!("index {name} missing"));
                assert_eq!(t, table);
                assert!(def.contains(col.as_str()), "{def}");
            }
        }
    }
    // Indexes are the association tables' `__target` and the entity tables' `__id` only.
    for (name, (table, _)) in &got.indexes {
        if want.contains_key(table) {
            assert!(
                name.ends_with("__target") || name.ends_with("__id"),
                "unexpected index {name}"
            );
        }
    }
    for state in [
        "_sgcache_fields",
        "_sgcache_types",
        "_sgcache_events",
        "_sgcache_migrations",
        "_sgcache_dead_letters",
        "_sgcache_scans",
        "_sgcache_site",
    ] {
        assert!(got.tables.contains_key(state), "{state} missing");
    }
    // Spot checks of the doc's rules on real fields.
    let project = &got.tables["project"]["archived"];
    assert!(
        !project.not_null,
        "checkbox is nullable: a site's null is kept as it is"
    );
    assert!(
        !got.tables["version"].contains_key("image"),
        "images are passed through"
    );
    assert!(got.tables["shot"].contains_key("sg_sequence__id"));
}

async fn migrations_count(db: &Db) -> usize {
    layout::dump(db, "_sgcache_migrations", "id")
        .await
        .unwrap()
        .len()
}

async fn migrate_twice(url: &str, db: &Db) {
    let dir = worker::fixture_schema_dir();
    let out = worker::migrate(&studio_yaml(), url, &["--schema-dir", &dir]);
    let (stdout, stderr) = worker::texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("+ create table asset for Asset (display field code)\n"),
        "{stdout}"
    );
    assert!(stdout.contains("= pass through Version.step_0 (pivot_column): computed by the site"));
    let first = layout::read(db).await.unwrap();
    check_layout(db.dialect(), &first);
    assert_eq!(migrations_count(db).await, 1);
    let fields_before = layout::dump(db, "_sgcache_fields", "entity_type, field_name")
        .await
        .unwrap();

    let out = worker::migrate(&studio_yaml(), url, &["--schema-dir", &dir]);
    let (stdout, stderr) = worker::texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("no changes\n"), "{stdout}");
    assert_eq!(
        layout::read(db).await.unwrap(),
        first,
        "second run changed the layout"
    );
    assert_eq!(migrations_count(db).await, 1);
    let fields_after = layout::dump(db, "_sgcache_fields", "entity_type, field_name")
        .await
        .unwrap();
    assert_eq!(fields_before, fields_after);
}

#[tokio::test]
async fn studio_layout_on_postgres_and_rerun_changes_nothing() {
    let t = TestDb::create("sgcache_migrate_layout").await.unwrap();
    migrate_twice(&t.url, &t.db).await;
    t.drop().await;
}

/// Every table a proxy reads notifies its changes (docs/storage.md), including the tables of a
/// cache made before notifications existed: a rerun puts back a missing trigger.
#[tokio::test]
async fn every_table_notifies_its_changes_on_postgres() {
    use sgcache::storage::notify::untriggered_tables;
    let t = TestDb::create("sgcache_migrate_notify").await.unwrap();
    let dir = worker::fixture_schema_dir();
    let out = worker::migrate(&studio_yaml(), &t.url, &["--schema-dir", &dir]);
    assert!(out.status.success(), "{}", worker::texts(&out).1);
    assert_eq!(
        untriggered_tables(&t.db).await.unwrap(),
        Vec::<String>::new()
    );
    let mut remove = t.db.sql();
    remove.push("DROP TRIGGER \"_sgcache_notify\" ON \"shot_assets\"");
    t.db.execute(&remove).await.unwrap();
    assert_eq!(
        untriggered_tables(&t.db).await.unwrap(),
        vec!["shot_assets".to_string()]
    );
    let out = worker::migrate(&studio_yaml(), &t.url, &["--schema-dir", &dir]);
    assert!(out.status.success(), "{}", worker::texts(&out).1);
    assert_eq!(
        untriggered_tables(&t.db).await.unwrap(),
        Vec::<String>::new()
    );

    // A committed change arrives on the channel with its table's name.
    let Db::Postgres(pool) = &t.db else {
        unreachable!()
    };
    let mut listener = sqlx::postgres::PgListener::connect_with(pool)
        .await
        .unwrap();
    listener
        .listen(sgcache::storage::notify::CHANNEL)
        .await
        .unwrap();
    let mut update = t.db.sql();
    update.push("UPDATE \"asset\" SET \"code\" = 'x' WHERE false");
    t.db.execute(&update).await.unwrap();
    let note = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("no notification within 10 s")
        .unwrap();
    assert_eq!(note.payload(), "asset");
    drop(listener);
    t.drop().await;
}

#[tokio::test]
async fn studio_layout_on_sqlite_and_rerun_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = worker::sqlite_url(dir.path());
    let db = Db::connect(&url, 2).await.unwrap();
    migrate_twice(&url, &db).await;
    db.close().await;
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = worker::sqlite_url(dir.path());
    let schema = worker::fixture_schema_dir();
    let out = worker::migrate(
        &studio_yaml(),
        &url,
        &["--dry-run", "--schema-dir", &schema],
    );
    let (stdout, stderr) = worker::texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("+ add field Shot.sg_sequence (entity), pending backfill"),
        "{stdout}"
    );
    let db = Db::connect(&url, 1).await.unwrap();
    assert!(layout::read(&db).await.unwrap().tables.is_empty());
    db.close().await;
}

async fn concurrent(url: &str, db: &Db) {
    let schema = worker::fixture_schema_dir();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (url, schema) = (url.to_string(), schema.clone());
            std::thread::spawn(move || {
                worker::migrate(&studio_yaml(), &url, &["--schema-dir", &schema])
            })
        })
        .collect();
    let outs: Vec<_> = runs.into_iter().map(|h| h.join().unwrap()).collect();
    for out in &outs {
        assert!(out.status.success(), "{}", worker::texts(out).1);
    }
    // One of them did the work; the other found nothing left to do.
    let empty = outs
        .iter()
        .filter(|o| worker::texts(o).0.starts_with("no changes"))
        .count();
    assert_eq!(empty, 1);
    check_layout(db.dialect(), &layout::read(db).await.unwrap());
    assert_eq!(migrations_count(db).await, 1);
}

#[tokio::test]
async fn concurrent_migrations_on_postgres_both_succeed_with_one_layout() {
    let t = TestDb::create("sgcache_migrate_concurrent").await.unwrap();
    concurrent(&t.url, &t.db).await;
    t.drop().await;
}

#[tokio::test]
async fn concurrent_migrations_on_sqlite_both_succeed_with_one_layout() {
    let dir = tempfile::tempdir().unwrap();
    let url = worker::sqlite_url(dir.path());
    let db = Db::connect(&url, 2).await.unwrap();
    concurrent(&url, &db).await;
    db.close().await;
}
