//! Values a column cannot hold (U+0000 in text) never stop the cache and are never served
//! stale: through a write-through, through an event, and through a write by a script without
//! events (found by the scanner). Each time the row is stored, the field becomes unservable
//! (reads pass through and equal the site), a dead letter records it, the follower's position
//! moves on (a later change is applied), and `/readyz` and the metrics name it. The next
//! migrate backfills the fields again: still unservable while the site holds the values, ready
//! once they are storable. On PostgreSQL and on SQLite alike.

use crate::freshness_common;

use std::time::Duration;

use freshness_common::*;
use serde_json::{json, Value};
use sgcache::storage::{self, DeadLetter};
use tokio_util::sync::CancellationToken;

const WORKERS: &str = "  scanner:\n    interval: 1s\n    overlap: 2s\n    pageSize: 100";

async fn letters(env: &Env) -> Vec<DeadLetter> {
    storage::list_dead_letters(&env.db.db).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_values_make_fields_unservable_and_never_stop_the_followers_postgres() {
    poison_values(false).await;
}

/// SQLite could keep U+0000 in a TEXT value, but its string functions (LIKE, length, the
/// proxy's filters) stop at it, so the cache treats it as PostgreSQL does: the same test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_values_make_fields_unservable_and_never_stop_the_followers_sqlite() {
    poison_values(true).await;
}

async fn poison_values(sqlite: bool) {
    let env = Env::start_on("sgcache_poison", 40, ENTITIES, WORKERS, sqlite).await;
    let stop = CancellationToken::new();
    let workers = run_workers(&env, &stop);
    assert_backfilled(&env).await;
    let (state, proxy, _task) = start_script_proxy(&env, &stop).await;
    let http = reqwest::Client::new();
    let live = live_shots(&env).await;
    let (a, b, c) = (live[0], live[1], live[2]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            read_field(&http, &proxy, "Shot", a, "description").await.0 == "cache"
        })
        .await
        .is_some(),
        "served from the cache before any poison"
    );

    // 1. Through a write-through: an update sent to the proxy.
    let poison = "nul\u{0}inside";
    let body = json!({"method_name": "update", "params": [
        {"script_name": "sgcache_test", "script_key": "test_key"},
        {"type": "Shot", "id": a, "fields": [{"field_name": "description", "value": poison}]}]});
    let (status, _, answer) = sgcache_tests::proxy::post(
        &http,
        &format!("{proxy}/api3/json"),
        "application/json",
        body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"]["description"], json!(poison));
    let f = wait_unservable(&env, "Shot", "description").await;
    assert!(f.unservable_reason.unwrap().contains("U+0000"));
    // The write-through refreshed the catalog: reads pass through (within the refresh).
    assert!(
        eventually(Duration::from_secs(2), || async {
            read_field(&http, &proxy, "Shot", a, "description").await
                == ("site".to_string(), json!(poison))
        })
        .await
        .is_some(),
        "the proxy served the field after it became unservable"
    );
    // The row itself is stored and other fields still come from the cache.
    let (path, _) = read_field(&http, &proxy, "Shot", a, "code").await;
    assert_eq!(path, "cache");
    assert!(cached(&env, "Shot", a).await.is_some());

    // 2. Through an event: a script with events writes U+0000 into Shot.code on the site.
    update(&env.writer, "Shot", b, json!({"code": "sh\u{0}b"})).await;
    let event_id = newest_event(&env.writer).await;
    let f = wait_unservable(&env, "Shot", "code").await;
    assert_eq!(f.unservable_id, Some(b));
    // The follower (or the scanner, when it met the row first) recorded it.
    assert!(letters(&env)
        .await
        .iter()
        .any(|l| l.field_name == "code" && l.entity_id == b));
    // The position moved past it and later events apply: a change the site logs (a status
    // other than the current one: an update to the same value writes no event).
    let before = cached(&env, "Shot", c).await.unwrap().1["sg_status_list"].clone();
    let status = if before == json!("fin") { "ip" } else { "fin" };
    update(&env.writer, "Shot", c, json!({"sg_status_list": status})).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            cached(&env, "Shot", c).await.unwrap().1["sg_status_list"] == status
        })
        .await
        .is_some(),
        "the follower stopped after the poison event"
    );
    let later = newest_event(&env.writer).await;
    assert!(
        later > event_id,
        "the site logged no event for the later change"
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            follower_position(&env).await >= later
        })
        .await
        .is_some(),
        "the follower's position never moved past the poison event: {:?}",
        {
            let mut q = env.db.db.sql();
            q.push("SELECT last_event_id, failures, last_error FROM _sgcache_events");
            env.db.db.fetch_all(&q).await.unwrap()
        }
    );
    let (path, value) = read_field(&http, &proxy, "Shot", b, "code").await;
    assert_eq!((path.as_str(), value), ("site", json!("sh\u{0}b")));

    // 3. Through a write without events: only the scanner finds it.
    let assets = site_rows(&env.writer, "Asset", &["code".into()]).await;
    let asset = *assets.iter().find(|(_, (r, _))| !r).unwrap().0;
    update(&env.silent, "Asset", asset, json!({"description": "\u{0}"})).await;
    let f = wait_unservable(&env, "Asset", "description").await;
    assert_eq!(f.unservable_id, Some(asset));
    assert!(letters(&env)
        .await
        .iter()
        .any(|l| l.entity_type == "Asset" && l.entity_id == asset && l.event_id.is_none()));
    assert!(
        eventually(Duration::from_secs(10), || async {
            read_field(&http, &proxy, "Asset", asset, "description").await
                == ("site".to_string(), json!("\u{0}"))
        })
        .await
        .is_some(),
        "the proxy kept serving the stale description"
    );
    // The scanner goes on: a later write without events, to another row, reaches the cache,
    // and the poisoned row's other fields are still served from it.
    let other = *assets
        .iter()
        .find(|(id, (r, _))| !r && **id != asset)
        .unwrap()
        .0;
    update(&env.silent, "Asset", other, json!({"code": "after_poison"})).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            cached(&env, "Asset", other).await.unwrap().1["code"] == "after_poison"
        })
        .await
        .is_some(),
        "the scanner stopped after the poisoned row"
    );
    assert_eq!(
        read_field(&http, &proxy, "Asset", other, "code").await,
        ("cache".to_string(), json!("after_poison"))
    );
    assert_eq!(
        read_field(&http, &proxy, "Asset", asset, "code").await.0,
        "cache"
    );

    // /readyz and the metrics tell.
    state.refresh_catalog().await;
    let readyz: Value = sgcache_tests::proxy::get_json(&http, &format!("{proxy}/readyz")).await;
    let listed = readyz["unservable_fields"].as_array().unwrap().clone();
    for f in ["Shot.description", "Shot.code", "Asset.description"] {
        assert!(listed.contains(&json!(f)), "{readyz}");
    }
    let metrics = sgcache_tests::proxy::metrics(&http, &proxy).await;
    assert!(
        metrics.contains("sgcache_proxy_unservable_fields 3"),
        "{metrics}"
    );
    assert!(metrics.contains("reason=\"unservable\""));

    // The next migrate backfills them again: still unservable while the site holds the
    // values; once the site's values are clean, the next migrate brings them back.
    env.migrate(&env.spec).await;
    wait_unservable(&env, "Shot", "code").await;
    update(&env.writer, "Shot", a, json!({"description": "clean"})).await;
    update(&env.writer, "Shot", b, json!({"code": "sh_b"})).await;
    update(&env.writer, "Asset", asset, json!({"description": "clean"})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.migrate(&env.spec).await;
    assert!(
        eventually(Duration::from_secs(30), || env.all_ready())
            .await
            .is_some(),
        "the fields never came back to ready"
    );
    assert_eq!(compare(&env).await, Vec::<String>::new());
    stop.cancel();
    for w in workers {
        w.await.unwrap();
    }
    env.stop().await;
}
