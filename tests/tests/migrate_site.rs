//! `sgcache-worker migrate` without `--schema-dir` asks the site for its schema
//! (`schema_read` + `schema_entity_read`) with the `SHOTGUN_*` credentials; a wrong key is a
//! clear failure that changes nothing and never shows the key.

use std::process::{Command, Output};

use sgcache::sql::Db;
use sgcache_tests::worker;
use shotgun_sim::{SimConfig, SimHandle};

fn migrate_against_site(sim: &SimHandle, key: &str, db_url: &str) -> Output {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/studio.yaml");
    Command::new(worker::binary())
        .arg("--config")
        .arg(&config)
        .arg("migrate")
        .env("DATABASE_URL", db_url)
        .env("SHOTGUN_URL", sim.url())
        .env("SHOTGUN_SCRIPT_NAME", "sgcache_test")
        .env("SHOTGUN_API_KEY", key)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sgcache-worker")
}

async fn table_count(url: &str) -> i64 {
    let db = Db::connect(url, 1).await.unwrap();
    let mut sql = db.sql();
    sql.push("SELECT count(*) FROM sqlite_master WHERE type = 'table'");
    let rows = db.fetch_all(&sql).await.unwrap();
    db.close().await;
    match rows[0][0] {
        sgcache::sql::SqlValue::Int(n) => n,
        ref other => panic!("unexpected count {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_reads_the_schema_from_the_site() {
    let sim = shotgun_sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = worker::sqlite_url(dir.path());

    let refused = migrate_against_site(&sim, "wrong-key-abc123", &url);
    let (_, stderr) = worker::texts(&refused);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("schema_read"), "{stderr}");
    assert!(!stderr.contains("wrong-key-abc123"), "key leaked: {stderr}");
    assert_eq!(
        table_count(&url).await,
        0,
        "a refused migration created tables"
    );

    sim.reset_stats();
    let out = migrate_against_site(&sim, "test_key", &url);
    let (stdout, stderr) = worker::texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("shot"),
        "plan does not mention the shot table: {stdout}"
    );
    let stats = sim.stats();
    assert_eq!(stats.by_method.get("schema_read"), Some(&1));
    assert_eq!(stats.by_method.get("schema_entity_read"), Some(&1));
    // The layout exists: ten entity types plus association and state tables.
    assert!(table_count(&url).await > 10);
    sim.shutdown().await;
}
