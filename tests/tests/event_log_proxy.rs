//! Reads of EventLogEntry through the proxy, answered from the event log the follower keeps:
//! the shotgunEvents daemon's shapes come from the cache and equal the site's answers; an
//! answer never has a hole a late commit could fill (ids arriving out of order); reads
//! reaching below the kept log, naming fields it does not keep, linking entities the cache
//! cannot render, or arriving while the follower is behind `maxLag` go to the site.

use crate::freshness_common;

use std::collections::BTreeSet;
use std::time::Duration;

use freshness_common::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const ENTITIES: &str = r#"
  - type: Shot
    fields: [code, sg_status_list, sg_sequence, project, assets]
  - type: Asset
    fields: [code, shots, project]
  - type: Sequence
    fields: [code, shots, project]
  - type: Project
    fields: [name]
  - type: HumanUser
    fields: [name]
  - type: ApiUser
    fields: [firstname]
"#;

const WORKERS: &str =
    "  events:\n    pollInterval: 200ms\n    gapWindow: 30s\n  scanner:\n    interval: 2s";

/// The shotgunEvents daemon's fields.
const FIELDS: [&str; 9] = [
    "id",
    "event_type",
    "attribute_name",
    "meta",
    "entity",
    "user",
    "project",
    "session_uuid",
    "created_at",
];

fn after(n: i64, fields: &[&str]) -> Value {
    json!({"type": "EventLogEntry",
        "filters": {"logical_operator": "and", "conditions": [
            {"path": "id", "relation": "greater_than", "values": [n]}]},
        "return_fields": fields, "return_only": "active",
        "sorts": [{"field_name": "id", "direction": "asc"}],
        "paging": {"entities_per_page": 500, "current_page": 1}})
}

fn newest() -> Value {
    json!({"type": "EventLogEntry", "filters": {"logical_operator": "and", "conditions": []},
        "return_fields": ["id"], "return_only": "active",
        "sorts": [{"field_name": "id", "direction": "desc"}],
        "paging": {"entities_per_page": 1, "current_page": 1}})
}

/// The read through `base` (the proxy or the site) as `sgcache_test`: path header and results.
async fn read(http: &reqwest::Client, base: &str, payload: &Value) -> (String, Value) {
    let body = json!({"method_name": "read", "params": [
        {"script_name": "sgcache_test", "script_key": "test_key"}, payload]});
    let (status, path, answer) = sgcache_tests::proxy::post(
        http,
        &format!("{base}/api3/json"),
        "application/json",
        body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    (
        path.unwrap_or_else(|| "direct".into()),
        answer["results"].clone(),
    )
}

fn ids(results: &Value) -> Vec<i64> {
    results["entities"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["id"].as_i64()).collect())
        .unwrap_or_default()
}

async fn kept_through(env: &Env) -> i64 {
    sgcache::storage::event_log::read_window(&env.db.db)
        .await
        .unwrap()
        .map_or(0, |w| w.through)
}

/// Waits until the kept log covers the site's newest event.
async fn caught_up(env: &Env) {
    let target = newest_event(&env.writer).await;
    let ok = eventually(Duration::from_secs(30), || async {
        kept_through(env).await >= target
    })
    .await;
    assert!(ok.is_some(), "the kept log never reached event {target}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_reads_are_answered_from_the_kept_log_and_equal_the_sites() {
    let env = Env::start("evlog_proxy", 30, ENTITIES, WORKERS).await;
    let stop = CancellationToken::new();
    let shots = live_shots(&env).await;
    // Events before the follower starts: the kept log starts after them.
    for i in 0..3 {
        update(
            &env.writer,
            "Shot",
            shots[5],
            json!({"code": format!("before{i}")}),
        )
        .await;
    }
    let workers = run_workers(&env, &stop);
    assert_backfilled(&env).await;
    // The log starts with the follower's first batch.
    update(&env.writer, "Shot", shots[0], json!({"code": "first"})).await;
    caught_up(&env).await;
    let floor = sgcache::storage::event_log::read_window(&env.db.db)
        .await
        .unwrap()
        .unwrap()
        .floor;
    assert!(
        floor >= 3,
        "the log starts after the events before the follower: {floor}"
    );
    for (i, s) in shots.iter().take(8).enumerate() {
        update(
            &env.writer,
            "Shot",
            *s,
            json!({"code": format!("c{i}"), "sg_status_list": "ip"}),
        )
        .await;
    }
    let asset = create(&env.writer, "Asset", json!({"code": "evlog_asset"})).await;
    update_multi(
        &env.writer,
        "Shot",
        shots[1],
        "assets",
        json!([{"type": "Asset", "id": asset}]),
        "add",
    )
    .await;
    retire(&env.writer, "Shot", shots[2]).await;
    caught_up(&env).await;

    let (_state, proxy, task) = start_script_proxy(&env, &stop).await;
    let http = reqwest::Client::new();
    let site = env.sim.url();

    // The first read of a principal goes to the site: it verifies the credentials.
    assert_eq!(read(&http, &proxy, &newest()).await.0, "site");
    // The daemon's start: the newest id.
    let (path, p) = read(&http, &proxy, &newest()).await;
    let (_, d) = read(&http, &site, &newest()).await;
    assert_eq!((path.as_str(), &p), ("cache", &d));
    // The daemon's poll: every event after the log's start, from the cache, as the site has
    // them; the retired Shot's events have `entity` null on both sides.
    let (path, p) = read(&http, &proxy, &after(floor, &FIELDS)).await;
    let (_, d) = read(&http, &site, &after(floor, &FIELDS)).await;
    assert_eq!(path, "cache");
    assert_eq!(p, d);
    assert!(ids(&p).len() >= 15, "{p}");
    let retired_events: Vec<&Value> = p["entities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["meta"]["entity_id"] == json!(shots[2]))
        .collect();
    assert!(!retired_events.is_empty());
    assert!(retired_events.iter().all(|e| e["entity"].is_null()));
    // Filters daemons use: event_type in / starts_with, project, created_at.
    let mut by_type = after(floor, &FIELDS);
    by_type["filters"]["conditions"]
        .as_array_mut()
        .unwrap()
        .extend([
            json!({"path": "event_type", "relation": "in", "values": ["Shotgun_Shot_Change", "Shotgun_Asset_New"]}),
            json!({"path": "created_at", "relation": "greater_than", "values": ["2000-01-01T00:00:00Z"]}),
        ]);
    let (path, p) = read(&http, &proxy, &by_type).await;
    assert_eq!(
        (path.as_str(), &p),
        ("cache", &read(&http, &site, &by_type).await.1)
    );
    let mut prefix = after(floor, &["id", "event_type", "entity"]);
    prefix["filters"]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(
            json!({"path": "event_type", "relation": "starts_with", "values": ["Shotgun_Shot_"]}),
        );
    let (path, p) = read(&http, &proxy, &prefix).await;
    assert_eq!(
        (path.as_str(), &p),
        ("cache", &read(&http, &site, &prefix).await.1)
    );

    // Passed through: below the kept log, a field it does not keep, `entity is` a retired
    // Shot, a negation on `entity`.
    let below = after(floor - 1, &FIELDS);
    assert_eq!(read(&http, &proxy, &below).await.0, "site");
    assert_eq!(
        read(&http, &proxy, &after(floor, &["id", "description"]))
            .await
            .0,
        "site"
    );
    for cond in [
        json!({"path": "entity", "relation": "is", "values": [{"type": "Shot", "id": shots[2]}]}),
        json!({"path": "entity", "relation": "is_not", "values": [{"type": "Shot", "id": shots[3]}]}),
        json!({"path": "entity", "relation": "is", "values": [null]}),
    ] {
        let mut q = after(floor, &FIELDS);
        q["filters"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(cond.clone());
        let (path, p) = read(&http, &proxy, &q).await;
        assert_eq!(path, "site", "{cond}");
        assert_eq!(p, read(&http, &site, &q).await.1);
    }
    // `entity is` a live Shot: from the cache.
    let mut q = after(floor, &FIELDS);
    q["filters"]["conditions"].as_array_mut().unwrap().push(
        json!({"path": "entity", "relation": "is", "values": [{"type": "Shot", "id": shots[1]}]}),
    );
    let (path, p) = read(&http, &proxy, &q).await;
    assert_eq!(
        (path.as_str(), &p),
        ("cache", &read(&http, &site, &q).await.1)
    );
    assert!(!ids(&p).is_empty());

    // An event linking a type the cache does not hold (a Task): its name is not known here.
    let mark = kept_through(&env).await;
    create(&env.writer, "Task", json!({"content": "evlog task"})).await;
    caught_up(&env).await;
    let (path, p) = read(&http, &proxy, &after(mark, &FIELDS)).await;
    assert_eq!(path, "site");
    assert_eq!(p, read(&http, &site, &after(mark, &FIELDS)).await.1);

    // Late commits: ids become visible out of order. Every answer from the cache is the
    // site's full list up to its last id: no hole a late event could fill.
    let start = newest_event(&env.writer).await;
    env.sim.set_faults(shotgun_sim::Faults {
        event_gap_rate: 0.4,
        event_gap_delay_ms: 1_500,
        ..env.sim.faults()
    });
    let mut answers: Vec<Vec<i64>> = Vec::new();
    // 30 writes at least, and on until the answers have grown (a loaded machine's follower
    // may hold the first late id for the whole of 30): bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let grown =
        |answers: &[Vec<i64>]| answers.iter().map(Vec::len).collect::<BTreeSet<_>>().len() >= 2;
    let mut i = 0;
    while i < 30 || (!grown(&answers) && std::time::Instant::now() < deadline) {
        i += 1;
        update(
            &env.writer,
            "Shot",
            shots[(i % 6) + 3],
            json!({"code": format!("g{i}")}),
        )
        .await;
        let (path, p) = read(&http, &proxy, &after(start, &["id", "event_type"])).await;
        assert_eq!(path, "cache");
        answers.push(ids(&p));
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    env.sim.set_faults(shotgun_sim::Faults {
        event_gap_rate: 0.0,
        ..env.sim.faults()
    });
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    caught_up(&env).await;
    let full = ids(&read(&http, &site, &after(start, &["id"])).await.1);
    let (_, cached) = read(&http, &proxy, &after(start, &["id"])).await;
    assert_eq!(
        ids(&cached),
        full,
        "once caught up, the cache has every event"
    );
    let mut grew = BTreeSet::new();
    for a in &answers {
        let top = a.last().copied().unwrap_or(start);
        let expected: Vec<i64> = full.iter().copied().filter(|id| *id <= top).collect();
        assert_eq!(a, &expected, "an answer with a hole");
        grew.insert(a.len());
    }
    // Answers grew while events came in (a late id holds back every one after it).
    assert!(
        grew.len() >= 2 && full.len() >= 30,
        "{grew:?}, {} events",
        full.len()
    );

    // The metric counts the reads by path.
    let metrics = sgcache_tests::proxy::metrics(&http, &proxy).await;
    let cache_reads = metrics
        .lines()
        .find(|l| {
            l.starts_with("sgcache_proxy_event_log_reads_total{") && l.contains("path=\"cache\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(cache_reads >= 35.0, "{metrics}");

    // A follower further behind than maxLag: the reads go to the site.
    let (_s2, lagging, task2) = start_proxy_with(&env, None, 0.0, &stop, |c| {
        c.max_lag = Duration::from_millis(1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    read(&http, &lagging, &newest()).await; // verifies the credentials
    let (path, _) = read(&http, &lagging, &after(start, &FIELDS)).await;
    assert_eq!(path, "site");

    stop.cancel();
    for w in workers {
        let _ = w.await;
    }
    let _ = task.await;
    let _ = task2.await;
    env.stop().await;
}
