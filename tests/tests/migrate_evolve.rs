//! Changing the spec between migrations: added fields become pending without touching data,
//! removed fields are dropped (kept) then pruned; bad specs exit 2 and change nothing.

use std::path::{Path, PathBuf};

use serde_json::json;
use sgcache::sql::Db;
use sgcache::storage::{self, WriteSource};
use sgcache_tests::layout;
use sgcache_tests::pg::TestDb;
use sgcache_tests::worker;

fn write_spec(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

fn migrate_ok(config: &Path, url: &str, extra: &[&str]) -> String {
    let schema = worker::fixture_schema_dir();
    let mut args = vec!["--schema-dir", schema.as_str()];
    args.extend_from_slice(extra);
    let out = worker::migrate(config, url, &args);
    let (stdout, stderr) = worker::texts(&out);
    assert!(out.status.success(), "{stderr}");
    stdout
}

/// (field, state) of a type's fields, from the state table.
async fn field_states(db: &Db, entity_type: &str) -> Vec<(String, String)> {
    storage::list_fields(db)
        .await
        .unwrap()
        .into_iter()
        .filter(|f| f.entity_type == entity_type)
        .map(|f| (f.field_name, f.state.to_string()))
        .collect()
}

async fn shot_rows(db: &Db) -> Vec<Vec<String>> {
    let mut sql = db.sql();
    sql.push("SELECT id, code FROM shot ORDER BY id");
    db.fetch_all(&sql)
        .await
        .unwrap()
        .iter()
        .map(|r| r.iter().map(|v| format!("{v:?}")).collect())
        .collect()
}

async fn evolve(url: &str, db: &Db) {
    let dir = tempfile::tempdir().unwrap();
    let v1 = write_spec(
        dir.path(),
        "v1.yaml",
        "entities:\n  - {type: Shot, fields: [code, sg_status_list, assets]}\n",
    );
    migrate_ok(&v1, url, &[]);
    // Rows written through the real write path, as a scan would.
    let state = storage::read_state(db).await.unwrap();
    let at = storage::read_mark(db).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let records = [
        json!({"type": "Shot", "id": 1, "code": "sh010", "sg_status_list": "ip",
               "assets": [{"type": "Asset", "id": 7, "name": "a"}, {"type": "Asset", "id": 3, "name": "b"}]}),
        json!({"type": "Shot", "id": 2, "code": "sh020", "sg_status_list": "wtg", "assets": []}),
    ];
    storage::upsert_entities(
        &mut tx,
        &state,
        "Shot",
        &records,
        WriteSource::Read { at, retired: false },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let ready = sgcache::plan::FieldState::Ready;
    storage::set_field_state(&mut tx, "Shot", &["code".to_string()], ready)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let rows = shot_rows(db).await;
    let links = layout::dump(db, "shot_assets", "_entity_id, _position")
        .await
        .unwrap();
    assert_eq!(links.len(), 2);

    // Add two fields: pending, existing data untouched.
    let v2 = write_spec(
        dir.path(),
        "v2.yaml",
        "entities:\n  - {type: Shot, fields: [code, sg_status_list, assets, description, sg_cut_in]}\n",
    );
    let out = migrate_ok(&v2, url, &[]);
    assert_eq!(
        out,
        "+ add field Shot.description (text), pending backfill\n\
         + add field Shot.sg_cut_in (number), pending backfill\n\
         = implied by links: Asset (code) for Shot.assets\n"
    );
    let states = field_states(db, "Shot").await;
    assert!(
        states.contains(&("description".into(), "pending".into())),
        "{states:?}"
    );
    assert!(states.contains(&("sg_cut_in".into(), "pending".into())));
    let cols = &layout::read(db).await.unwrap().tables["shot"];
    assert!(cols.contains_key("description") && cols.contains_key("sg_cut_in"));
    assert_eq!(shot_rows(db).await, rows);
    assert_eq!(
        layout::dump(db, "shot_assets", "_entity_id, _position")
            .await
            .unwrap(),
        links
    );

    // Remove two: dropped (not served), storage and data kept; Asset was only implied by
    // Shot.assets, so it goes with it.
    let v3 = write_spec(
        dir.path(),
        "v3.yaml",
        "entities:\n  - {type: Shot, fields: [code, description, sg_cut_in]}\n",
    );
    let out = migrate_ok(&v3, url, &[]);
    assert_eq!(
        out,
        "- drop field Asset.code (no longer served; storage kept)\n\
         - drop field Asset.id (no longer served; storage kept)\n\
         - drop field Asset.updated_at (no longer served; storage kept)\n\
         - drop field Shot.assets (no longer served; storage kept)\n\
         - drop field Shot.sg_status_list (no longer served; storage kept)\n"
    );
    let states = field_states(db, "Shot").await;
    assert!(
        states.contains(&("assets".into(), "dropped".into())),
        "{states:?}"
    );
    assert!(states.contains(&("sg_status_list".into(), "dropped".into())));
    let after = layout::read(db).await.unwrap();
    assert!(after.tables["shot"].contains_key("sg_status_list"));
    assert_eq!(
        layout::dump(db, "shot_assets", "_entity_id, _position")
            .await
            .unwrap(),
        links
    );
    assert_eq!(migrate_ok(&v3, url, &[]), "no changes\n");

    // Prune: storage gone, other data intact.
    let out = migrate_ok(&v3, url, &["--prune"]);
    assert_eq!(
        out,
        "- prune table asset of Asset\n\
         - prune field Shot.assets (multi_entity): storage dropped\n\
         - prune field Shot.sg_status_list (status_list): storage dropped\n"
    );
    let pruned = layout::read(db).await.unwrap();
    assert!(!pruned.tables["shot"].contains_key("sg_status_list"));
    assert!(!pruned.tables.contains_key("shot_assets"));
    let states = field_states(db, "Shot").await;
    assert!(!states
        .iter()
        .any(|(f, _)| f == "assets" || f == "sg_status_list"));
    assert!(
        states.contains(&("code".into(), "ready".into())),
        "{states:?}"
    );
    assert_eq!(shot_rows(db).await, rows);

    bad_specs_change_nothing(url, db, dir.path()).await;
}

async fn snapshot(
    db: &Db,
) -> (
    layout::Layout,
    Vec<Vec<String>>,
    Vec<Vec<String>>,
    Vec<Vec<String>>,
) {
    (
        layout::read(db).await.unwrap(),
        layout::dump(db, "_sgcache_fields", "entity_type, field_name")
            .await
            .unwrap(),
        layout::dump(db, "_sgcache_migrations", "id").await.unwrap(),
        shot_rows(db).await,
    )
}

async fn bad_specs_change_nothing(url: &str, db: &Db, dir: &Path) {
    let cases = [
        ("entities:\n  - {type: Shoot, fields: [code]}\n", "Shoot"),
        (
            "entities:\n  - {type: Shot, fields: [code, sg_foo]}\n",
            "Shot.sg_foo",
        ),
        ("entities:\n  - {type: Shot, fields: [code\n", "bad.yaml"),
        ("entities:\n  - {type: Shot, fields: code}\n", "fields"),
        ("workers:\n  proxy:\n    port: lots\n", "lots"),
        (
            "entities:\n  - {type: Shot, fields: ['*'], exclude: [sg_nope]}\n",
            "Shot.sg_nope",
        ),
    ];
    let before = snapshot(db).await;
    for (yaml, offending) in cases {
        let spec = write_spec(dir, "bad.yaml", yaml);
        let out = worker::migrate(&spec, url, &["--schema-dir", &worker::fixture_schema_dir()]);
        let (stdout, stderr) = worker::texts(&out);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{yaml}: {stderr}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(offending),
            "{yaml}: {stderr}"
        );
    }
    assert_eq!(snapshot(db).await, before);
}

#[tokio::test]
async fn spec_changes_on_postgres() {
    let t = TestDb::create("sgcache_migrate_evolve").await.unwrap();
    evolve(&t.url, &t.db).await;
    t.drop().await;
}

#[tokio::test]
async fn spec_changes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = worker::sqlite_url(dir.path());
    let db = Db::connect(&url, 2).await.unwrap();
    evolve(&url, &db).await;
    db.close().await;
}

#[tokio::test]
async fn unreachable_database_exits_1_without_leaking_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "ok.yaml",
        "entities:\n  - {type: Shot, fields: [code]}\n",
    );
    let out = worker::migrate(
        &spec,
        "postgres://cache:hunter2@127.0.0.1:1/sg",
        &["--schema-dir", &worker::fixture_schema_dir()],
    );
    let (_, stderr) = worker::texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot connect to the database"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
