//! The kept event log's storage on PostgreSQL and SQLite: records come back as stored
//! (`meta` exactly), replays add nothing, the window follows the position, and retention
//! trims in two phases (the floor first, the rows a grace period later), by rows and by age.

use std::time::Duration;

use serde_json::{json, Value};
use sgcache::sql::{Db, SqlValue};
use sgcache::storage::event_log::{self, Keep, LogWindow};
use sgcache::storage::{self};
use sgcache_tests::pg::TestDb;

fn record(id: i64, minutes_ago: i64) -> Value {
    let at = chrono::Utc::now() - chrono::Duration::minutes(minutes_ago);
    json!({"type": "EventLogEntry", "id": id, "event_type": "Shotgun_Shot_Change",
        "attribute_name": "code",
        // Key order, nested nulls, floats, U+0000 and a big integer: all must come back.
        "meta": {"type": "attribute_change", "entity_id": id, "old_value": null,
                 "new_value": format!("v{id}\u{0}"), "z": 1.5, "a": [1, {"k": 9007199254740993_i64}]},
        "entity": {"type": "Shot", "id": id % 7 + 1, "name": "ignored"},
        "user": {"type": "HumanUser", "id": 3, "name": "someone"},
        "project": null, "session_uuid": "6c3b9a2e-0d7e-11ef-9e2a-0242ac120002",
        "created_at": sgcache::sql::format_datetime(&at)})
}

async fn prepared(db: &Db) {
    let mut tx = db.begin().await.unwrap();
    storage::ensure_state_tables(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
}

async fn store(db: &Db, recs: &[Value], start_after: i64, through: i64) -> event_log::Stored {
    let mut tx = db.begin().await.unwrap();
    let refs: Vec<&Value> = recs.iter().collect();
    let out = event_log::store(&mut tx, &refs, start_after, through)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    out
}

async fn meta_of(db: &Db, id: i64) -> String {
    let mut sql = db.sql();
    sql.push("SELECT meta FROM \"_sgcache_event_log\" WHERE id = ")
        .push_bind(SqlValue::Int(id));
    match &db.fetch_all(&sql).await.unwrap()[0][0] {
        SqlValue::Text(t) => t.clone(),
        other => panic!("meta stored as {other:?}"),
    }
}

async fn window(db: &Db) -> Option<LogWindow> {
    event_log::read_window(db).await.unwrap()
}

async fn stores_and_trims(db: &Db) {
    prepared(db).await;
    assert_eq!(window(db).await, None, "no log before the first batch");

    // The first batch starts the log after the position it was read from (100).
    let first: Vec<Value> = (101..=110).map(|i| record(i, 120 - i)).collect();
    let out = store(db, &first, 100, 110).await;
    assert_eq!((out.rows, out.started, out.unstorable), (10, true, 0));
    assert_eq!(
        window(db).await,
        Some(LogWindow {
            floor: 100,
            through: 110
        })
    );
    let m = meta_of(db, 105).await;
    assert_eq!(
        m,
        first[4]["meta"].to_string(),
        "meta comes back as its JSON text"
    );
    assert_eq!(serde_json::from_str::<Value>(&m).unwrap(), first[4]["meta"]);

    // A replay adds nothing and never moves the position back; a batch whose id 113 is still
    // missing moves it only to 112.
    let out = store(db, &first[5..], 100, 105).await;
    assert_eq!(out.rows, 0);
    assert_eq!(window(db).await.unwrap().through, 110);
    let second: Vec<Value> = [111, 112, 114, 115].iter().map(|&i| record(i, 0)).collect();
    store(db, &second, 110, 112).await;
    assert_eq!(window(db).await.unwrap().through, 112);
    // 113 arrives late.
    store(db, &[record(113, 0)], 115, 115).await;
    assert_eq!(window(db).await.unwrap().through, 115);
    assert_eq!(
        event_log::stored_ids(db).await.unwrap(),
        (101..=115).collect::<Vec<_>>()
    );

    // Keep 5 rows: the floor rises first (to 110: 111..=115 kept), rows stay for the grace.
    let t = event_log::trim(db, Keep::Rows(5), Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!((t.deleted, t.raised_to), (0, Some(110)));
    assert_eq!(window(db).await.unwrap().floor, 110);
    assert_eq!(event_log::stored_ids(db).await.unwrap().len(), 15);
    // After the grace, the rows below the floor go.
    let t = event_log::trim(db, Keep::Rows(5), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((t.deleted, t.raised_to), (10, None));
    assert_eq!(
        event_log::stored_ids(db).await.unwrap(),
        (111..=115).collect::<Vec<_>>()
    );
    let status = event_log::log_status(db).await.unwrap();
    assert_eq!((status.rows, status.trims, status.trimmed_rows), (5, 1, 10));

    // By age: events created more than 30 minutes ago (none of 111..=115) stay; older ones
    // added now go.
    let old: Vec<Value> = (116..=118).map(|i| record(i, 600)).collect();
    store(db, &old, 115, 118).await;
    let t = event_log::trim(
        db,
        Keep::Since(chrono::Utc::now() - chrono::Duration::minutes(30)),
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(
        t.raised_to,
        Some(118),
        "an old event raises the floor past every id below it"
    );

    // Disabled: the window goes at once, the rows with the next trim; enabling again starts
    // a new log (nothing older is answered).
    let mut tx = db.begin().await.unwrap();
    event_log::drop_window(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(window(db).await, None);
    event_log::trim(db, Keep::Rows(5), Duration::ZERO)
        .await
        .unwrap();
    assert!(event_log::stored_ids(db).await.unwrap().is_empty());
    let out = store(db, &[record(200, 0)], 199, 200).await;
    assert!(out.started);
    assert_eq!(
        window(db).await,
        Some(LogWindow {
            floor: 199,
            through: 200
        })
    );
}

#[tokio::test]
async fn the_log_is_stored_and_trimmed_on_postgres() {
    let t = TestDb::create("evlog_store").await.expect("database");
    stores_and_trims(&t.db).await;
    t.drop().await;
}

#[tokio::test]
async fn the_log_is_stored_and_trimmed_on_sqlite() {
    let t = TestDb::sqlite().await.expect("database");
    stores_and_trims(&t.db).await;
    t.drop().await;
}
