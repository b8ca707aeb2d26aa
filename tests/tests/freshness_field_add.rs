//! Adding a field while clients read it: the proxy and the scanner run, the spec gains
//! `Shot.sg_cut_out` and is migrated, and a client keeps reading that field through the proxy
//! the whole time. Every answer equals the site's, no request fails, reads pass through to the
//! site while the field is not `ready`, and come from the cache once the backfill has ended
//! (and never from the site again after that).

use crate::freshness_common;

use std::time::{Duration, Instant};

use freshness_common::*;
use serde_json::{json, Value};
use sgcache::plan::FieldState;
use tokio_util::sync::CancellationToken;

const WORKERS: &str = "  scanner:\n    interval: 1s\n    overlap: 2s\n    pageSize: 25";
const WITH_CUT_OUT: &str = r#"
  - type: Shot
    fields: [code, description, sg_status_list, sg_cut_in, sg_cut_out, sg_sequence, assets, tasks, tag_list, created_at, updated_by, project]
  - type: Asset
    fields: [code, sg_status_list, shots, project, description]
  - type: Sequence
    fields: [code, shots, project]
  - type: Task
    fields: [content, entity, sg_status_list, milestone, due_date, est_in_mins, project]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_added_under_read_load_passes_through_then_comes_from_the_cache() {
    let mut env = Env::start("field_add", 500, ENTITIES, WORKERS).await;
    let stop = CancellationToken::new();
    let scanner = spawn_scanner(&env, &stop);
    assert_backfilled(&env).await;

    let (_state, proxy, proxy_task) = start_proxy(&env, None, 0.0, &stop).await;

    // The read the client repeats, and the site's answer to it (nothing writes meanwhile).
    let payload = json!({"type": "Shot",
        "filters": {"logical_operator": "and", "conditions": [
            {"path": "id", "relation": "less_than", "values": [120]}]},
        "return_fields": ["code", "sg_cut_out"],
        "sorts": [{"field_name": "id", "direction": "asc"}],
        "paging": {"entities_per_page": 50, "current_page": 1}});
    let expected = call(&env.writer, "read", payload.clone()).await;
    assert_eq!(expected["entities"].as_array().map(Vec::len), Some(50));
    assert!(expected["entities"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| !e["sg_cut_out"].is_null()));
    let body = json!({"method_name": "read", "params": [
        {"script_name": "sgcache_test", "script_key": "test_key"}, payload]})
    .to_string();
    let http = reqwest::Client::new();

    // Backfill pages take a little while, so several reads land during the backfill.
    env.sim.set_faults(shotgun_sim::Faults {
        latency_ms: 40,
        ..env.sim.faults()
    });
    let spec = env.respec(WITH_CUT_OUT, WORKERS);
    env.migrate(&spec).await;

    // (state of the field before the request, path taken)
    let mut seen: Vec<(Option<FieldState>, String)> = Vec::new();
    let t0 = Instant::now();
    let mut cache_streak = 0;
    while cache_streak < 10 {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "reads never came from the cache: {seen:?}"
        );
        let before = field_state(&env, "Shot", "sg_cut_out")
            .await
            .map(|f| f.state);
        let resp = http
            .post(format!("{proxy}/api3/json"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("request answered");
        assert_eq!(resp.status().as_u16(), 200);
        let path = resp
            .headers()
            .get("x-sgcache-path")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        let answer: Value = resp.json().await.expect("JSON answer");
        assert_eq!(
            answer["results"]["entities"],
            expected["entities"],
            "answer #{} (path {path}, field {before:?}) differs from the site",
            seen.len()
        );
        if path == "cache" {
            cache_streak += 1;
        } else {
            assert_eq!(path, "site", "unexpected path");
            assert_eq!(cache_streak, 0, "a read went back to the site: {seen:?}");
        }
        seen.push((before, path));
    }
    let passed: Vec<&(Option<FieldState>, String)> =
        seen.iter().filter(|(_, p)| p == "site").collect();
    let during_backfill = seen
        .iter()
        .filter(|(s, _)| s.is_some_and(|s| s != FieldState::Ready))
        .count();
    eprintln!(
        "{} reads: {} through the site ({during_backfill} while the field was not ready), then {cache_streak} from the cache",
        seen.len(),
        passed.len()
    );
    // Reads made while the field was not ready all passed through.
    for (state, path) in &seen {
        if state.is_some_and(|s| s != FieldState::Ready) {
            assert_eq!(
                path, "site",
                "read served from the cache before the backfill ended"
            );
        }
    }
    assert!(
        during_backfill >= 2,
        "too few reads during the backfill to show anything: {seen:?}"
    );
    assert_eq!(
        field_state(&env, "Shot", "sg_cut_out")
            .await
            .map(|f| f.state),
        Some(FieldState::Ready)
    );
    stop.cancel();
    scanner.await.unwrap();
    proxy_task.await.unwrap().unwrap();
    env.sim.set_faults(shotgun_sim::Faults::default());
    let diffs = compare(&env).await;
    assert!(diffs.is_empty(), "cache differs from the site: {diffs:?}");
    env.stop().await;
}
