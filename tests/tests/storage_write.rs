//! The entity write path on PostgreSQL and SQLite: every storage kind round-trips, link order
//! is kept, the updated_at and event-id guards hold, a value a column cannot hold is stored as
//! null with its field made unservable (never the row dropped), and records without an id or
//! of another type are refused whole. Backfill progress keeps the backfill's start while it
//! resumes.

use serde_json::{json, Value};
use sgcache::plan::{DbState, FieldState, PlanOptions};
use sgcache::schema::SiteSchema;
use sgcache::sql::{Db, SqlValue};
use sgcache::storage::{self, StorageError, WriteOutcome, WriteSource};
use sgcache::ShotgunCacheSpec;
use sgcache_tests::pg::TestDb;
use sgcache_tests::worker;

// Only the listed types: writes to a type the spec does not cache are refused (below), so no
// link target is implied.
const SPEC: &str = "implyLinkTargets: false
entities:
  - type: Version
    fields: [code, sg_first_frame, sg_frames_aspect_ratio, flagged, created_at,
             sg_uploaded_movie, tag_list, entity, playlists, sg_status_list]
  - type: Task
    fields: [content, due_date, duration, splits]
";

async fn setup(db: &Db) -> DbState {
    let spec = ShotgunCacheSpec::from_yaml(SPEC, "test").unwrap();
    let site = SiteSchema::load_dir(&sgcache::schema::fixture_dir()).unwrap();
    storage::migrate(db, &spec, &site, PlanOptions::default())
        .await
        .unwrap();
    storage::read_state(db).await.unwrap()
}

/// A read of the site that begins now (a scan's page, as the scanner writes it).
async fn read_now(db: &Db) -> WriteSource {
    read_now_as(db, false).await
}

async fn read_now_as(db: &Db, retired: bool) -> WriteSource {
    let at = storage::read_mark(db).await.unwrap();
    WriteSource::Read { at, retired }
}

async fn write(
    db: &Db,
    state: &DbState,
    entity_type: &str,
    records: &[Value],
    source: WriteSource,
) -> Result<WriteOutcome, StorageError> {
    let mut tx = db.begin().await?;
    let outcome = storage::upsert_entities(&mut tx, state, entity_type, records, source).await;
    // Commit even after an error: a refused batch must have written nothing by itself.
    tx.commit().await?;
    outcome
}

/// A stored value in API3 spelling, whichever database holds it.
fn api(v: &SqlValue, bool_column: bool, json_column: bool) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Bool(b) => json!(b),
        SqlValue::Int(i) if bool_column => json!(*i != 0),
        SqlValue::Int(i) => json!(i),
        SqlValue::Float(f) => json!(f),
        SqlValue::Text(s) if json_column => serde_json::from_str(s).unwrap(),
        SqlValue::Text(s) => json!(s),
        SqlValue::Json(j) => j.clone(),
        SqlValue::Date(d) => json!(d.format("%Y-%m-%d").to_string()),
        SqlValue::DateTime(t) => json!(sgcache::sql::format_datetime(t)),
    }
}

async fn select(db: &Db, query: &str) -> Vec<Vec<SqlValue>> {
    let mut sql = db.sql();
    sql.push(query);
    db.fetch_all(&sql).await.unwrap()
}

async fn version_row(db: &Db, id: i64) -> Value {
    let rows = select(
        db,
        &format!(
            "SELECT code, sg_first_frame, sg_frames_aspect_ratio, flagged, created_at, \
             sg_uploaded_movie, tag_list, entity__type, entity__id, sg_status_list \
             FROM version WHERE id = {id}"
        ),
    )
    .await;
    let r = &rows[0];
    json!({
        "code": api(&r[0], false, false),
        "sg_first_frame": api(&r[1], false, false),
        "sg_frames_aspect_ratio": api(&r[2], false, false),
        "flagged": api(&r[3], true, false),
        "created_at": api(&r[4], false, false),
        "sg_uploaded_movie": api(&r[5], false, true),
        "tag_list": api(&r[6], false, true),
        "entity": [api(&r[7], false, false), api(&r[8], false, false)],
        "sg_status_list": api(&r[9], false, false),
    })
}

async fn links(db: &Db, entity_id: i64) -> Vec<(String, i64)> {
    select(
        db,
        &format!(
            "SELECT _target_type, _target_id FROM version_playlists \
             WHERE _entity_id = {entity_id} ORDER BY _position"
        ),
    )
    .await
    .into_iter()
    .map(|r| match (&r[0], &r[1]) {
        (SqlValue::Text(t), SqlValue::Int(i)) => (t.clone(), *i),
        other => panic!("unexpected link row {other:?}"),
    })
    .collect()
}

async fn code(db: &Db, id: i64) -> Value {
    version_row(db, id).await["code"].clone()
}

fn playlist(id: i64) -> Value {
    json!({"type": "Playlist", "id": id, "name": format!("p{id}")})
}

async fn every_kind_round_trips(db: &Db, state: &DbState) {
    let movie = json!({"type": "Attachment", "id": 141, "name": "clip.mov",
                       "url": "https://x/clip.mov", "content_type": "video/mp4", "link_type": "upload"});
    let v = json!({"type": "Version", "id": 1, "code": "v001", "sg_first_frame": 1001,
        "sg_frames_aspect_ratio": 2.39, "flagged": true, "created_at": "2024-03-05T17:04:09Z",
        "sg_uploaded_movie": movie, "tag_list": ["hero", "fx"],
        "entity": {"type": "Shot", "id": 12, "name": "sh010"},
        "playlists": [playlist(3), playlist(1), playlist(2)], "sg_status_list": "rev",
        "image": "https://signed/url", "not_a_field": 1});
    let out = write(db, state, "Version", &[v], read_now(db).await)
        .await
        .unwrap();
    assert_eq!(
        out,
        WriteOutcome {
            written: 1,
            skipped: 0,
            unstorable: 0
        }
    );
    assert_eq!(
        version_row(db, 1).await,
        json!({"code": "v001", "sg_first_frame": 1001, "sg_frames_aspect_ratio": 2.39,
               "flagged": true, "created_at": "2024-03-05T17:04:09Z", "sg_uploaded_movie": movie,
               "tag_list": ["hero", "fx"], "entity": ["Shot", 12], "sg_status_list": "rev"})
    );
    let p = |i: i64| ("Playlist".to_string(), i);
    assert_eq!(links(db, 1).await, vec![p(3), p(1), p(2)]);
    // Nulls and a partial record: only present fields change; links replaced.
    let v = json!({"type": "Version", "id": 1, "sg_first_frame": null, "entity": null,
                   "flagged": false, "playlists": [playlist(2)]});
    write(db, state, "Version", &[v], read_now(db).await)
        .await
        .unwrap();
    let row = version_row(db, 1).await;
    assert_eq!(row["code"], "v001");
    assert_eq!(row["sg_first_frame"], Value::Null);
    assert_eq!(row["entity"], json!([null, null]));
    assert_eq!(row["flagged"], false);
    assert_eq!(links(db, 1).await, vec![p(2)]);
    // A new row without the checkbox holds null: the cache does not claim a false the site
    // never said. A null checkbox from the site is kept as null.
    write(
        db,
        state,
        "Version",
        &[json!({"type": "Version", "id": 9, "code": "v9"})],
        read_now(db).await,
    )
    .await
    .unwrap();
    assert_eq!(version_row(db, 9).await["flagged"], Value::Null);
    write(
        db,
        state,
        "Version",
        &[json!({"type": "Version", "id": 1, "flagged": null})],
        read_now(db).await,
    )
    .await
    .unwrap();
    assert_eq!(version_row(db, 1).await["flagged"], Value::Null);

    let t = json!({"type": "Task", "id": 5, "content": "anim", "due_date": "2024-02-29",
                   "duration": 480, "splits": [{"start": "2024-02-01", "end": "2024-02-03"}]});
    write(db, state, "Task", &[t], WriteSource::WriteThrough)
        .await
        .unwrap();
    let r = &select(
        db,
        "SELECT content, due_date, duration, splits FROM task WHERE id = 5",
    )
    .await[0];
    assert_eq!(api(&r[0], false, false), "anim");
    assert_eq!(api(&r[1], false, false), "2024-02-29");
    assert_eq!(api(&r[2], false, false), 480);
    assert_eq!(
        api(&r[3], false, true),
        json!([{"start": "2024-02-01", "end": "2024-02-03"}])
    );
}

async fn updated_at_guard(db: &Db, state: &DbState) {
    let rec = |code: &str, at: &str, pl: i64| json!({"type": "Version", "id": 2, "code": code, "updated_at": at, "playlists": [playlist(pl)]});
    let w = |r| async move {
        write(db, state, "Version", &[r], read_now(db).await)
            .await
            .unwrap()
    };
    assert_eq!(w(rec("new", "2024-01-02T00:00:00Z", 1)).await.written, 1);
    assert_eq!(
        w(rec("old", "2024-01-01T23:59:59Z", 2)).await,
        WriteOutcome {
            written: 0,
            skipped: 1,
            unstorable: 0
        }
    );
    assert_eq!(code(db, 2).await, "new");
    assert_eq!(links(db, 2).await, vec![("Playlist".to_string(), 1)]);
    assert_eq!(w(rec("same", "2024-01-02T00:00:00Z", 3)).await.written, 1);
    assert_eq!(links(db, 2).await, vec![("Playlist".to_string(), 3)]);
}

async fn event_guard(db: &Db, state: &DbState) {
    let rec = |c: &str| json!({"type": "Version", "id": 3, "code": c});
    let ev = |event_id| WriteSource::Event { event_id };
    assert_eq!(
        write(db, state, "Version", &[rec("e10")], ev(10))
            .await
            .unwrap()
            .written,
        1
    );
    for (c, id) in [("replay", 10), ("older", 9)] {
        let out = write(db, state, "Version", &[rec(c)], ev(id))
            .await
            .unwrap();
        assert_eq!(
            out,
            WriteOutcome {
                written: 0,
                skipped: 1,
                unstorable: 0
            }
        );
    }
    assert_eq!(code(db, 3).await, "e10");
    assert_eq!(
        write(db, state, "Version", &[rec("e11")], ev(11))
            .await
            .unwrap()
            .written,
        1
    );
    assert_eq!(code(db, 3).await, "e11");
    let last = select(db, "SELECT _last_event_id FROM version WHERE id = 3").await;
    assert_eq!(last[0][0], SqlValue::Int(11));
    // Retire by event: guarded the same way.
    let mut tx = db.begin().await.unwrap();
    assert_eq!(
        storage::retire(&mut tx, state, "Version", &[3], ev(11))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        storage::retire(&mut tx, state, "Version", &[3], ev(12))
            .await
            .unwrap(),
        1
    );
    tx.commit().await.unwrap();
}

async fn unstorable_values_keep_the_row(db: &Db, state: &DbState) {
    // (record, field made unservable, reason fragment)
    let cases = [
        (
            json!({"type": "Version", "id": 21, "code": "a\u{0}b", "sg_first_frame": 7}),
            "code",
            "U+0000",
        ),
        (
            json!({"type": "Version", "id": 22, "sg_first_frame": "ten", "code": "v22"}),
            "sg_first_frame",
            "an integer",
        ),
        (
            json!({"type": "Version", "id": 23, "created_at": "2024-03-05 17:04:09", "code": "v23"}),
            "created_at",
            "date-time",
        ),
        (
            json!({"type": "Version", "id": 24, "playlists": [{"id": 4}], "code": "v24"}),
            "playlists",
            "entity link",
        ),
        (
            json!({"type": "Version", "id": 25, "entity": {"type": "Playlist", "id": 1}, "code": "v25"}),
            "entity",
            "does not list",
        ),
        (
            json!({"type": "Version", "id": 26, "sg_uploaded_movie": {"name": "\u{0}"}, "code": "v26"}),
            "sg_uploaded_movie",
            "U+0000",
        ),
        (
            json!({"type": "Version", "id": 27, "sg_frames_aspect_ratio": "wide", "code": "v27"}),
            "sg_frames_aspect_ratio",
            "finite number",
        ),
    ];
    for (i, (record, field, reason)) in cases.into_iter().enumerate() {
        let id = record["id"].as_i64().unwrap();
        let good = json!({"type": "Version", "id": 40 + i as i64, "code": "fine"});
        let out = write(
            db,
            state,
            "Version",
            &[good, record.clone()],
            WriteSource::Event {
                event_id: 100 + i as i64,
            },
        )
        .await
        .unwrap();
        assert_eq!((out.written, out.unstorable), (2, 1), "{record}");
        // The row is stored, the bad value as null, the other values as they are.
        let row = version_row(db, id).await;
        assert!(
            row[field].is_null() || row[field] == json!([null, null]),
            "{field}: {row}"
        );
        if field != "code" {
            assert_eq!(row["code"], record["code"]);
        }
        let f = storage::list_fields(db)
            .await
            .unwrap()
            .into_iter()
            .find(|f| f.entity_type == "Version" && f.field_name == field)
            .unwrap();
        assert_eq!(f.state, FieldState::Unservable, "{field}");
        assert_eq!(f.unservable_id, Some(id));
        let why = f.unservable_reason.unwrap();
        assert!(why.contains(reason), "{field}: {why}");
        // Never the value itself (entity values are not logged or kept as reasons).
        assert!(!why.contains("ten") && !why.contains("wide"), "{why}");
        let letters = storage::list_dead_letters(db).await.unwrap();
        assert!(
            letters.iter().any(|l| l.event_id == Some(100 + i as i64)
                && l.entity_id == id
                && l.field_name == field),
            "{letters:?}"
        );
        // A backfill finishing cannot declare it ready; only a migration retries it.
        let mut tx = db.begin().await.unwrap();
        storage::set_field_state(&mut tx, "Version", &[field.to_string()], FieldState::Ready)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            storage::list_fields(db)
                .await
                .unwrap()
                .into_iter()
                .find(|f| f.entity_type == "Version" && f.field_name == field)
                .unwrap()
                .state,
            FieldState::Unservable
        );
    }
}

async fn bad_records_write_nothing(db: &Db, state: &DbState) {
    let good = json!({"type": "Version", "id": 30, "code": "fine"});
    let cases = [
        (json!({"type": "Shot", "id": 31}), "Version record"),
        (
            json!({"type": "Version", "code": "no id"}),
            "without an integer id",
        ),
    ];
    for (bad, message) in cases {
        let err = write(
            db,
            state,
            "Version",
            &[good.clone(), bad.clone()],
            read_now(db).await,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(message), "{bad}: {err}");
        assert!(select(db, "SELECT id FROM version WHERE id IN (30, 31)")
            .await
            .is_empty());
    }
    let err = write(db, state, "Shot", &[good], read_now(db).await)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::NotCached(_)), "{err}");
}

async fn retire_and_revive(db: &Db, state: &DbState) {
    let recs: Vec<Value> = (100..110)
        .map(|id| json!({"type": "Version", "id": id}))
        .collect();
    write(db, state, "Version", &recs, read_now(db).await)
        .await
        .unwrap();
    let at = storage::read_mark(db).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    // A scan page covering (100, 105] saw 101, 103, 105: 102 and 104 are gone.
    let seen = [101, 103, 105];
    let n = storage::retire_missing(&mut tx, state, "Version", (100, Some(105)), &seen, at)
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        storage::revive(&mut tx, state, "Version", &[104], WriteSource::WriteThrough)
            .await
            .unwrap(),
        1
    );
    tx.commit().await.unwrap();
    let retired = select(
        db,
        "SELECT id FROM version WHERE _retired AND id >= 100 ORDER BY id",
    )
    .await;
    assert_eq!(retired, vec![vec![SqlValue::Int(102)]]);
    // A scan returning the row again makes it live.
    write(
        db,
        state,
        "Version",
        &[json!({"type": "Version", "id": 102})],
        read_now(db).await,
    )
    .await
    .unwrap();
    assert!(
        select(db, "SELECT id FROM version WHERE _retired AND id >= 100")
            .await
            .is_empty()
    );
}

/// A read's rows never undo a write made after the read began: the site's `updated_at` has
/// whole seconds and a delete answered through the proxy records none, so the guard also asks
/// whether the row was written since (`_cached_at` against the read's mark, both on the
/// database's clock). The compat battery met the first case: a shot deleted through the proxy
/// came back live from a scan page read just before the delete.
async fn reads_never_undo_later_writes(db: &Db, state: &DbState) {
    let t = "2024-05-02T09:14:07Z";
    let rec =
        |id: i64, code: &str| json!({"type": "Version", "id": id, "code": code, "updated_at": t});
    let retired = |id: i64| async move {
        select(db, &format!("SELECT _retired FROM version WHERE id = {id}"))
            .await
            .first()
            .map(|r| matches!(r[0], SqlValue::Bool(true) | SqlValue::Int(1)))
            .unwrap()
    };
    let update_through_proxy = |id: i64, code: &'static str| async move {
        write(
            db,
            state,
            "Version",
            &[rec(id, code)],
            WriteSource::WriteThrough,
        )
        .await
        .unwrap();
    };
    write(db, state, "Version", &[rec(300, "a")], read_now(db).await)
        .await
        .unwrap();

    // Read live, then deleted through the proxy, then the read is written: still retired.
    let delete_mark = storage::read_mark(db).await.unwrap();
    let before_delete = WriteSource::Read {
        at: delete_mark,
        retired: false,
    };
    let mut tx = db.begin().await.unwrap();
    storage::retire(&mut tx, state, "Version", &[300], WriteSource::WriteThrough)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Nor is it one the read brings back (a full scan relinks those), but a read begun after
    // the delete would.
    let back_since = |at| async move {
        let mut tx = db.begin().await.unwrap();
        let ids = storage::retired_ids(&mut tx, "Version", &[300], at)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        ids.into_iter().collect::<Vec<_>>()
    };
    assert_eq!(back_since(delete_mark).await, Vec::<i64>::new());
    let after_delete = storage::read_mark(db).await.unwrap();
    assert_eq!(back_since(after_delete).await, vec![300]);
    write(db, state, "Version", &[rec(300, "a")], before_delete)
        .await
        .unwrap();
    assert!(
        retired(300).await,
        "a read from before the delete revived the row"
    );
    // A read begun after the delete that finds it live again (revived since) is news.
    write(db, state, "Version", &[rec(300, "a")], read_now(db).await)
        .await
        .unwrap();
    assert!(!retired(300).await);

    // Read retired, then revived through the proxy: the read does not retire it again.
    let before_revive = read_now_as(db, true).await;
    let mut tx = db.begin().await.unwrap();
    storage::retire(&mut tx, state, "Version", &[300], WriteSource::WriteThrough)
        .await
        .unwrap();
    storage::revive(&mut tx, state, "Version", &[300], WriteSource::WriteThrough)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    write(db, state, "Version", &[rec(300, "a")], before_revive)
        .await
        .unwrap();
    assert!(
        !retired(300).await,
        "a read from before the revive retired the row"
    );

    // Two writes within one second of the site: the one written after the read began keeps
    // its value against the read's (same `updated_at`)...
    let before_update = read_now(db).await;
    update_through_proxy(300, "b").await;
    let out = write(db, state, "Version", &[rec(300, "a")], before_update)
        .await
        .unwrap();
    assert_eq!((out.written, out.skipped), (0, 1));
    assert_eq!(code(db, 300).await, "b");
    // ...and a record with a newer `updated_at` is newer whenever it was read.
    let newer =
        json!({"type": "Version", "id": 300, "code": "c", "updated_at": "2024-05-02T09:14:08Z"});
    let before_other = read_now(db).await;
    update_through_proxy(300, "b").await;
    write(db, state, "Version", &[newer], before_other)
        .await
        .unwrap();
    assert_eq!(code(db, 300).await, "c");

    // A full scan page read before a revive does not retire the revived row as missing.
    write(
        db,
        state,
        "Version",
        &[rec(301, "d"), rec(302, "e")],
        read_now(db).await,
    )
    .await
    .unwrap();
    let mut tx = db.begin().await.unwrap();
    storage::retire(&mut tx, state, "Version", &[302], WriteSource::WriteThrough)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let page_read = storage::read_mark(db).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    storage::revive(&mut tx, state, "Version", &[302], WriteSource::WriteThrough)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let n = storage::retire_missing(
        &mut tx,
        state,
        "Version",
        (300, Some(302)),
        &[301],
        page_read,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(n, 0);
    assert!(!retired(302).await);
}

/// Text outside ASCII written into a column is recorded, so that the translator knows an
/// ASCII search value may meet it there (`text:non_ascii`); a fresh column holds none.
async fn non_ascii_text_is_recorded(db: &Db, state: &DbState) {
    let flag = |f: &str| {
        let f = f.to_string();
        async move {
            let all = storage::read_non_ascii(db).await.unwrap();
            all[&("Task".to_string(), f)]
        }
    };
    assert_eq!(flag("content").await, Some(false));
    write(
        db,
        state,
        "Task",
        &[json!({"type": "Task", "id": 900, "content": "plain"})],
        read_now(db).await,
    )
    .await
    .unwrap();
    assert_eq!(flag("content").await, Some(false));
    write(
        db,
        state,
        "Task",
        &[json!({"type": "Task", "id": 901, "content": "Écluse"})],
        read_now(db).await,
    )
    .await
    .unwrap();
    assert_eq!(flag("content").await, Some(true));
    let cat = sgcache::query::Catalog::load(db).await.unwrap();
    assert!(cat.types["Task"].fields["content"].non_ascii);
    assert!(!cat.types["Version"].fields["code"].non_ascii);
}

async fn all(db: &Db) {
    let state = setup(db).await;
    non_ascii_text_is_recorded(db, &state).await;
    every_kind_round_trips(db, &state).await;
    updated_at_guard(db, &state).await;
    event_guard(db, &state).await;
    bad_records_write_nothing(db, &state).await;
    unstorable_values_keep_the_row(db, &state).await;
    retire_and_revive(db, &state).await;
    reads_never_undo_later_writes(db, &state).await;
    backfill_start_is_kept_while_resuming(db).await;
}

/// The start of a backfill is saved with its first progress and kept while the cursor is set
/// (a resumed backfill passes its own, later start); a reset cursor starts afresh.
async fn backfill_start_is_kept_while_resuming(db: &Db) {
    progress(db, Some(10), 1_000).await;
    assert_eq!(task_content_started(db).await, Some(1_000));
    progress(db, Some(20), 5_000).await;
    assert_eq!(
        task_content_started(db).await,
        Some(1_000),
        "kept while resuming"
    );
    progress(db, None, 6_000).await;
    progress(db, Some(10), 7_000).await;
    assert_eq!(
        task_content_started(db).await,
        Some(7_000),
        "a reset cursor starts afresh"
    );
}

async fn progress(db: &Db, cursor: Option<i64>, started_ms: i64) {
    let fields = ["content".to_string()];
    let mut tx = db.begin().await.unwrap();
    storage::set_backfill_progress(&mut tx, "Task", &fields, cursor, 1, None, started_ms)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn task_content_started(db: &Db) -> Option<i64> {
    storage::list_fields(db)
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.entity_type == "Task" && f.field_name == "content")
        .unwrap()
        .backfill_started_ms
}

#[tokio::test]
async fn write_path_on_postgres() {
    let t = TestDb::create("sgcache_write").await.unwrap();
    all(&t.db).await;
    t.drop().await;
}

#[tokio::test]
async fn write_path_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&worker::sqlite_url(dir.path()), 2)
        .await
        .unwrap();
    all(&db).await;
    db.close().await;
}
