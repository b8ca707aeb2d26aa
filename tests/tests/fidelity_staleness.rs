//! Bounded staleness: with the event follower (and the scanner) stopped, the site changes; the
//! proxy serves the cached value at most `maxLag` longer, then passes the type's reads through
//! (reason `stale`, named by `/readyz` and the metrics) and so answers the site's value; once
//! the follower runs again and catches up, reads come from the cache again, with the change.

use crate::freshness_common;

use std::time::Duration;

use freshness_common::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const WORKERS: &str = "  scanner:\n    interval: 1s\n    overlap: 2s\n    pageSize: 100";
const MAX_LAG: Duration = Duration::from_secs(3);

async fn read_code(http: &reqwest::Client, proxy: &str, id: i64) -> (String, Value) {
    let payload = json!({"type": "Shot", "filters": {"logical_operator": "and", "conditions": [
        {"path": "id", "relation": "is", "values": [id]}]}, "return_fields": ["code"]});
    let body = json!({"method_name": "read", "params": [
        {"script_name": "sgcache_test", "script_key": "test_key"}, payload]});
    let (_, path, answer) = sgcache_tests::proxy::post(
        http,
        &format!("{proxy}/api3/json"),
        "application/json",
        body.to_string(),
    )
    .await;
    (
        path.unwrap_or_default(),
        answer["results"]["entities"][0]["code"].clone(),
    )
}

async fn readyz(http: &reqwest::Client, proxy: &str) -> Value {
    http.get(format!("{proxy}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_type_behind_the_site_by_more_than_max_lag_is_passed_through() {
    let env = Env::start("sgcache_stale", 30, ENTITIES, WORKERS).await;
    let workers_stop = CancellationToken::new();
    let workers = run_workers(&env, &workers_stop);
    assert_backfilled(&env).await;
    let stop = CancellationToken::new();
    let (_state, proxy, _task) =
        start_proxy_with(&env, None, 0.0, &stop, |c| c.max_lag = MAX_LAG).await;
    let http = reqwest::Client::new();
    let shots = site_rows(&env.writer, "Shot", &["code".into()]).await;
    let id = *shots.iter().find(|(_, (r, _))| !r).unwrap().0;
    assert!(
        eventually(Duration::from_secs(10), || async {
            read_code(&http, &proxy, id).await.0 == "cache"
        })
        .await
        .is_some(),
        "a fresh cache serves the read"
    );

    // The followers stop; the site changes.
    workers_stop.cancel();
    for w in workers {
        w.await.unwrap();
    }
    update(
        &env.writer,
        "Shot",
        id,
        json!({"code": "changed_while_stopped"}),
    )
    .await;
    let waited = eventually(Duration::from_secs(20), || async {
        read_code(&http, &proxy, id).await == ("site".to_string(), json!("changed_while_stopped"))
    })
    .await
    .expect("the proxy never stopped answering a stale type from the cache");
    assert!(waited <= MAX_LAG + Duration::from_secs(3), "{waited:?}");
    let r = readyz(&http, &proxy).await;
    assert!(
        r["stale_types"]
            .as_array()
            .unwrap()
            .contains(&json!("Shot")),
        "{r}"
    );
    let metrics = sgcache_tests::proxy::metrics(&http, &proxy).await;
    assert!(metrics.contains("reason=\"stale\""), "{metrics}");
    assert!(
        !metrics.contains("sgcache_proxy_stale_types 0"),
        "{metrics}"
    );

    // The follower alone runs again: it applies the change, catches up, and the cache answers.
    let follower_stop = CancellationToken::new();
    let follower = {
        let (spec, t) = (env.spec.clone(), follower_stop.clone());
        tokio::spawn(async move { sgcache_worker::events::run(&spec, t).await.expect("events") })
    };
    assert!(
        eventually(Duration::from_secs(20), || async {
            read_code(&http, &proxy, id).await
                == ("cache".to_string(), json!("changed_while_stopped"))
        })
        .await
        .is_some(),
        "the proxy never came back to the cache after the follower caught up"
    );
    assert!(readyz(&http, &proxy).await["stale_types"]
        .as_array()
        .unwrap()
        .is_empty());
    follower_stop.cancel();
    follower.await.unwrap();
    stop.cancel();
    env.stop().await;
}
