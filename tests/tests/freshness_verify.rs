//! Verification of sampled cached reads (`verifySampleRate` 1): a cell tampered in the cache is
//! served once from the cache, the background check finds the mismatch, counts it, re-reads the
//! entity from the site and repairs the row; the next read equals the site. Neither the
//! scanner nor the follower runs meanwhile, so only the verification can have repaired it.
//! Then the same for a linked entity's display field: a tampered Sequence code shows as a stale
//! link `name` in a Shot read, and the verification refreshes the Sequence.

use crate::freshness_common;

use std::time::Duration;

use freshness_common::*;
use serde_json::{json, Value};
use sgcache::sql::SqlValue;
use tokio_util::sync::CancellationToken;

const WORKERS: &str = "  scanner:\n    interval: 1s\n    overlap: 2s\n    pageSize: 100";

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Reads `payload` through the proxy as the test script: the path header and the answer.
async fn read(http: &reqwest::Client, proxy: &str, payload: &Value) -> (String, Value) {
    let body = json!({"method_name": "read", "params": [
        {"script_name": "sgcache_test", "script_key": "test_key"}, payload]});
    let url = format!("{proxy}/api3/json");
    let (_, path, answer) =
        sgcache_tests::proxy::post(http, &url, "application/json", body.to_string()).await;
    (path.unwrap_or_default(), answer)
}

/// Sets `code` of row `id` of `table` in the cache behind the proxy's back, then reads
/// `payload` from the cache until `shows` holds for the answer, and returns it. The answer
/// kept in memory is dropped when the change notification arrives (milliseconds); the reads
/// before that get it, and their verification matches.
async fn tamper(
    env: &Env,
    (http, proxy): (&reqwest::Client, &str),
    (table, id, code): (&str, i64, &str),
    payload: &Value,
    shows: impl Fn(&Value) -> bool,
) -> Value {
    let mut sql = env.db.db.sql();
    sql.push("UPDATE ")
        .push_ident(table)
        .push(" SET \"code\" = ")
        .push_bind(SqlValue::Text(code.into()))
        .push(" WHERE \"id\" = ")
        .push_bind(SqlValue::Int(id));
    env.db.db.execute(&sql).await.unwrap();
    let mut answer = Value::Null;
    for _ in 0..100 {
        let (path, a) = read(http, proxy, payload).await;
        assert_eq!(path, "cache");
        answer = a;
        if shows(&answer) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        shows(&answer),
        "the tampered {table} row never showed: {answer}"
    );
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_cell_is_found_by_verification_and_repaired() {
    let env = Env::start("verify", 40, ENTITIES, WORKERS).await;
    let stop = CancellationToken::new();
    let scanner = spawn_scanner(&env, &stop);
    assert_backfilled(&env).await;
    stop.cancel();
    scanner.await.unwrap();

    let stop = CancellationToken::new();
    let (_state, proxy, task) = start_proxy(
        &env,
        sgcache_tests::proxy::script_auth().as_object().cloned(),
        1.0,
        &stop,
    )
    .await;
    let http = reqwest::Client::new();

    let payload = json!({"type": "Shot",
        "filters": {"logical_operator": "and", "conditions": [
            {"path": "id", "relation": "less_than", "values": [10]}]},
        "return_fields": ["code", "sg_status_list", "sg_cut_in"],
        "sorts": [{"field_name": "id", "direction": "asc"}]});
    let site = call(&env.writer, "read", payload.clone()).await;
    let target = site["entities"][2].clone();
    let id = target["id"].as_i64().unwrap();
    let metrics = || sgcache_tests::proxy::metrics(&http, &proxy);

    // Warm up (the first read verifies the credentials at the site), until served from the
    // cache and verified as matching.
    let warm = eventually(Duration::from_secs(10), || async {
        let (path, answer) = read(&http, &proxy, &payload).await;
        assert_eq!(answer["results"]["entities"], site["entities"]);
        path == "cache"
            && metric(
                &metrics().await,
                "sgcache_proxy_verify_total{outcome=\"match\"}",
            ) >= 1.0
    })
    .await;
    assert!(warm.is_some(), "never served and verified from the cache");
    let m = metrics().await;
    assert_eq!(
        metric(&m, "sgcache_proxy_verify_total{outcome=\"mismatch\"}"),
        0.0
    );

    // Tamper one cell behind the proxy's back.
    tamper(
        &env,
        (&http, &proxy),
        ("shot", id, "tampered"),
        &payload,
        |a| a["results"]["entities"][2]["code"] == "tampered",
    )
    .await;

    // The background check repairs the row and counts the mismatch.
    let repaired = eventually(Duration::from_secs(10), || async {
        cached(&env, "Shot", id)
            .await
            .is_some_and(|(_, row)| row["code"] == target["code"])
    })
    .await;
    assert!(repaired.is_some(), "the tampered cell was never repaired");
    let m = metrics().await;
    assert_eq!(
        metric(&m, "sgcache_proxy_verify_total{outcome=\"mismatch\"}"),
        1.0,
        "{m}"
    );
    assert!(
        metric(&m, "sgcache_proxy_verify_refreshed_entities_total") >= 1.0,
        "{m}"
    );
    let (path, answer) = read(&http, &proxy, &payload).await;
    assert_eq!(path, "cache");
    assert_eq!(answer["results"]["entities"], site["entities"]);

    // A stale link name: the linked Sequence's code is tampered, the Shot row is untouched.
    let links = json!({"type": "Shot",
        "filters": {"logical_operator": "and", "conditions": [
            {"path": "sg_sequence", "relation": "is_not", "values": [null]}]},
        "return_fields": ["code", "sg_sequence"],
        "sorts": [{"field_name": "id", "direction": "asc"}],
        "paging": {"current_page": 1, "entities_per_page": 5}});
    let site = call(&env.writer, "read", links.clone()).await;
    let seq = site["entities"][0]["sg_sequence"].clone();
    let seq_id = seq["id"].as_i64().expect("a shot with a sequence");
    let seq_code = seq["name"].clone();
    let (path, answer) = read(&http, &proxy, &links).await;
    assert_eq!(path, "cache");
    assert_eq!(answer["results"]["entities"], site["entities"]);
    tamper(
        &env,
        (&http, &proxy),
        ("sequence", seq_id, "tampered-seq"),
        &links,
        |a| a["results"]["entities"][0]["sg_sequence"]["name"] == "tampered-seq",
    )
    .await;
    let repaired = eventually(Duration::from_secs(10), || async {
        cached(&env, "Sequence", seq_id)
            .await
            .is_some_and(|(_, row)| row["code"] == seq_code)
    })
    .await;
    assert!(repaired.is_some(), "the linked Sequence was never repaired");
    let m = metrics().await;
    assert_eq!(
        metric(&m, "sgcache_proxy_verify_total{outcome=\"mismatch\"}"),
        2.0,
        "{m}"
    );
    let (path, answer) = read(&http, &proxy, &links).await;
    assert_eq!(path, "cache");
    assert_eq!(answer["results"]["entities"], site["entities"]);

    let diffs = compare(&env).await;
    assert!(diffs.is_empty(), "cache differs from the site: {diffs:?}");
    stop.cancel();
    task.await.unwrap().unwrap();
    env.stop().await;
}
