//! When the site's schema was last read and followed (`_sgcache_schema_check`): the record
//! itself on PostgreSQL and SQLite, and a starting scanner against the test site, which
//! backfills without reading the whole schema again when a migration just read it, and reads
//! it at once when the record is old or was made for another spec layout.

use crate::freshness_common;

use freshness_common::*;
use sgcache::sql::Db;
use sgcache::storage;
use sgcache::ShotgunCacheSpec;
use sgcache_tests::pg::TestDb;
use tokio_util::sync::CancellationToken;

const ENTITIES: &str =
    "\n  - type: Shot\n    fields: [code, sg_status_list]\n  - type: Asset\n    fields: [code]\n";
const WIDER: &str = "\n  - type: Shot\n    fields: [code, sg_status_list, description]\n  - type: Asset\n    fields: [code]\n";
const WORKERS: &str = "  scanner:\n    interval: 60s\n    schemaInterval: 5m\n    pageSize: 50";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn spec(entities: &str) -> ShotgunCacheSpec {
    let yaml = format!(
        "site:\n  url: http://unused.invalid\n  scriptName: {{value: s}}\nentities:{entities}"
    );
    ShotgunCacheSpec::from_yaml(&yaml, "check").unwrap()
}

async fn record_and_read(db: &Db) {
    let (narrow, wider) = (spec(ENTITIES), spec(WIDER));
    // Before any migration the table does not exist: nothing recorded, nothing created.
    assert_eq!(storage::schema_checked_ms(db, &narrow).await.unwrap(), None);
    storage::record_schema_check(db, &narrow, 2_000)
        .await
        .unwrap();
    assert_eq!(
        storage::schema_checked_ms(db, &narrow).await.unwrap(),
        Some(2_000)
    );
    // An older read of the same layout (a reused one) changes nothing; a newer one moves it.
    storage::record_schema_check(db, &narrow, 1_000)
        .await
        .unwrap();
    assert_eq!(
        storage::schema_checked_ms(db, &narrow).await.unwrap(),
        Some(2_000)
    );
    storage::record_schema_check(db, &narrow, 3_000)
        .await
        .unwrap();
    assert_eq!(
        storage::schema_checked_ms(db, &narrow).await.unwrap(),
        Some(3_000)
    );
    // Another layout's record replaces it, even an older read: the record says what the
    // layout was last brought to, and for which spec.
    storage::record_schema_check(db, &wider, 500).await.unwrap();
    assert_eq!(storage::schema_checked_ms(db, &narrow).await.unwrap(), None);
    assert_eq!(
        storage::schema_checked_ms(db, &wider).await.unwrap(),
        Some(500)
    );
}

#[tokio::test]
async fn the_schema_check_is_recorded_per_spec_layout_on_postgres_and_sqlite() {
    let pg = TestDb::create("sgcache_schema_check").await.unwrap();
    record_and_read(&pg.db).await;
    pg.drop().await;
    let lite = TestDb::sqlite().await.unwrap();
    record_and_read(&lite.db).await;
    lite.drop().await;
}

fn schema_reads(env: &Env) -> u64 {
    let stats = env.sim.stats();
    ["schema_read", "schema_entity_read"]
        .iter()
        .map(|m| stats.by_method.get(*m).copied().unwrap_or(0))
        .sum()
}

/// Runs the scanner until every field is ready (a first backfill), then stops it; returns the
/// schema reads the site saw meanwhile.
async fn first_backfill(env: &Env) -> u64 {
    env.sim.reset_stats();
    let stop = CancellationToken::new();
    let scanner = spawn_scanner(env, &stop);
    assert_backfilled(env).await;
    let reads = schema_reads(env);
    stop.cancel();
    scanner.await.unwrap();
    reads
}

/// Makes every type of the cache pending again (as a fresh migration leaves them).
async fn restart_backfill(env: &Env) {
    let mut tx = env.db.db.begin().await.unwrap();
    storage::restart_backfills(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!env.all_ready().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_after_a_migration_backfills_without_reading_the_schema_again() {
    let env = Env::start("scan_schema_check", 300, ENTITIES, WORKERS).await;
    let db = &env.db.db;

    // Just read and migrated (as the operator does seconds before the scanner starts).
    storage::record_schema_check(db, &env.spec, now_ms())
        .await
        .unwrap();
    assert_eq!(
        first_backfill(&env).await,
        0,
        "no schema read before a backfill"
    );

    // Read a schemaInterval ago: checked at once, and the check recorded.
    restart_backfill(&env).await;
    let old = now_ms() - 6 * 60 * 1000;
    let mut age = db.sql();
    age.push("UPDATE \"_sgcache_schema_check\" SET read_ms = ")
        .push_bind(sgcache::sql::SqlValue::Int(old));
    db.execute(&age).await.unwrap();
    let started = now_ms();
    assert!(
        first_backfill(&env).await >= 1,
        "an old check is done again"
    );
    let recorded = storage::schema_checked_ms(db, &env.spec).await.unwrap();
    assert!(
        recorded >= Some(started),
        "{recorded:?} recorded by the scanner"
    );

    // Recorded for another layout (the spec changed since): checked at once too.
    restart_backfill(&env).await;
    storage::record_schema_check(db, &spec(WIDER), now_ms())
        .await
        .unwrap();
    assert!(
        first_backfill(&env).await >= 1,
        "another layout's check is not this one's"
    );
    assert!(storage::schema_checked_ms(db, &env.spec)
        .await
        .unwrap()
        .is_some());

    // And with the scanner's own record, a restart reads nothing.
    restart_backfill(&env).await;
    assert_eq!(first_backfill(&env).await, 0);
    env.stop().await;
}
