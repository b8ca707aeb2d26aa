//! PostgreSQL values as the cache reads them (`sgcache::sql::Db::fetch_all`, and
//! `Db::fetch_rows`, which the proxy writes answers from): each column type comes back as the
//! value it holds, nulls as nulls; a type the cache never stores is refused (the read then goes
//! to the site), never read as something else.

use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::json;
use sgcache::sql::{Cell, Db, SqlValue};
use sgcache_tests::pg::TestDb;

/// The rows as owned values; the borrowed cells of the same statement must say the same.
async fn select(db: &Db, expr: &str) -> Result<Vec<Vec<SqlValue>>, sqlx::Error> {
    let mut q = db.sql();
    q.push("SELECT ").push(expr);
    let owned = db.fetch_all(&q).await;
    let borrowed = db.fetch_rows(&q, |rows| rows.to_values()).await;
    match (&owned, &borrowed) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{expr}"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("{expr}: fetch_all {a:?}, fetch_rows {b:?}"),
    }
    owned
}

#[tokio::test]
async fn every_column_type_the_cache_reads_comes_back_as_stored() {
    let t = TestDb::create("sgcache_pg_values").await.unwrap();
    let rows = select(
        &t.db,
        "true, 7::int2, -8::int4, 9007199254740993::int8, 1.5::float4, -2.25::float8, \
         'ß \"q\" ☃'::text, 'v'::varchar, '2024-02-29'::date, \
         '2024-02-29 23:59:58+00'::timestamptz, '0001-01-01 00:00:00'::timestamp, \
         '{\"k\": [1, \"ü\"]}'::json, '{\"k\": null}'::jsonb, \
         NULL::text, NULL::int8, NULL::timestamptz",
    )
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![vec![
            SqlValue::Bool(true),
            SqlValue::Int(7),
            SqlValue::Int(-8),
            SqlValue::Int(9_007_199_254_740_993),
            SqlValue::Float(1.5),
            SqlValue::Float(-2.25),
            SqlValue::Text("ß \"q\" ☃".into()),
            SqlValue::Text("v".into()),
            SqlValue::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
            SqlValue::DateTime(Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 58).unwrap()),
            SqlValue::DateTime(Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap()),
            SqlValue::Json(json!({"k": [1, "ü"]})),
            SqlValue::Json(json!({"k": null})),
            SqlValue::Null,
            SqlValue::Null,
            SqlValue::Null,
        ]]
    );
    // JSON is borrowed as the text PostgreSQL sent (jsonb without its version byte).
    let mut q = t.db.sql();
    q.push(r#"SELECT '{"a": 1}'::jsonb, '[1, "x"]'::json, 'x'::text, 2::int8"#);
    let cells =
        t.db.fetch_rows(&q, |rows| {
            rows.first().map(<[Cell]>::to_vec).map(|r| format!("{r:?}"))
        })
        .await
        .unwrap();
    assert_eq!(
        cells.as_deref(),
        Some(r#"[JsonText("{\"a\": 1}"), JsonText("[1, \"x\"]"), Text("x"), Int(2)]"#)
    );
    // Read once per column, every row alike.
    let rows = select(&t.db, "n, n::text FROM generate_series(1, 3) n")
        .await
        .unwrap();
    assert_eq!(
        rows,
        (1..=3)
            .map(|n| vec![SqlValue::Int(n), SqlValue::Text(n.to_string())])
            .collect::<Vec<_>>()
    );
    t.drop().await;
}

#[tokio::test]
async fn a_type_the_cache_never_stores_is_refused_not_guessed() {
    let t = TestDb::create("sgcache_pg_values").await.unwrap();
    for expr in [
        "1.5::numeric",
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
        "'{1,2}'::int4[]",
    ] {
        let e = select(&t.db, expr).await.expect_err(expr);
        assert!(matches!(e, sqlx::Error::ColumnDecode { .. }), "{expr}: {e}");
    }
    // A null of such a type holds no value to misread.
    assert_eq!(
        select(&t.db, "NULL::numeric").await.unwrap(),
        vec![vec![SqlValue::Null]]
    );
    t.drop().await;
}

/// The proxy's pool does not ping its connections before use: after the server ended every
/// session, a read, a transaction and a statement that cannot have taken effect each run
/// again on a fresh connection instead of failing.
#[tokio::test]
async fn calls_on_connections_the_server_ended_run_again_on_fresh_ones() {
    let t = TestDb::create("sgcache_pg_values").await.unwrap();
    let db = t.proxy_pool(2).await;
    let mut create = db.sql();
    create.push("CREATE TABLE t (n bigint)");
    db.execute(&create).await.unwrap();
    let mut insert = db.sql();
    insert.push("INSERT INTO t VALUES (1)");
    for call in ["read", "transaction", "statement"] {
        // Both connections open and idle, then ended by the server.
        let (a, b) = tokio::join!(select(&db, "pg_sleep(0.05)::text"), select(&db, "1"));
        a.unwrap();
        b.unwrap();
        assert!(sgcache_tests::pg::terminate_sessions(&t.name).await >= 2);
        match call {
            "read" => assert_eq!(
                select(&db, "2").await.unwrap(),
                vec![vec![SqlValue::Int(2)]]
            ),
            "transaction" => {
                let mut tx = db.begin().await.unwrap();
                tx.execute(&insert).await.unwrap();
                tx.commit().await.unwrap();
            }
            _ => assert_eq!(db.execute(&insert).await.unwrap(), 1),
        }
    }
    // Each insert applied once.
    assert_eq!(
        select(&db, "count(*) FROM t").await.unwrap(),
        vec![vec![SqlValue::Int(2)]]
    );
    db.close().await;
    t.drop().await;
}
