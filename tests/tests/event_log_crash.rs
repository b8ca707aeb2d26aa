//! Crash safety of the kept event log: the real `sgcache-worker events` is SIGKILLed at random
//! points, mid-batch included, while the site writes events with late commits. Afterwards the
//! stored log holds exactly the site's events above its floor up to the follower's position,
//! each once, each as the site returns it.

use crate::freshness_common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use freshness_common::*;
use serde_json::{json, Value};
use sgcache::sql::SqlValue;
use sgcache::storage::event_log;

const WORKERS: &str = "  events:\n    pollInterval: 100ms\n    gapWindow: 20s";

const ENTITIES: &str = r#"
  - type: Shot
    fields: [code, sg_status_list, assets, project]
  - type: Asset
    fields: [code, shots]
"#;

/// Writes with events until `stop`: changes, link edits, creates, retirements, revivals.
async fn write_load(env: Arc<Env>, stop: Arc<AtomicBool>) -> usize {
    let shots = live_shots(&env).await;
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let shot = shots[n * 7 % shots.len()];
        let c = &env.writer;
        let r = match n % 8 {
            0..=3 => {
                c.call(
                    "update",
                    json!({"type": "Shot", "id": shot, "fields": [
                {"field_name": "code", "value": format!("k{n}")}]}),
                )
                .await
            }
            4 => {
                c.call(
                    "create",
                    json!({"type": "Asset", "fields": [
                {"field_name": "code", "value": format!("k{n}")}]}),
                )
                .await
            }
            5 => c.call("delete", json!({"type": "Shot", "id": shot})).await,
            6 => c.call("revive", json!({"type": "Shot", "id": shot})).await,
            _ => {
                c.call(
                    "update",
                    json!({"type": "Shot", "id": shot, "fields": [
                {"field_name": "sg_status_list", "value": "ip"}]}),
                )
                .await
            }
        };
        n += usize::from(r.is_ok());
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    n
}

/// Every stored row, as (id → columns in API form).
async fn stored(env: &Env) -> BTreeMap<i64, Value> {
    let mut sql = env.db.db.sql();
    sql.push(
        "SELECT id, event_type, attribute_name, meta, entity__type, entity__id, user__type, \
         user__id, project__type, project__id, session_uuid, created_at FROM \"_sgcache_event_log\"",
    );
    let text = |v: &SqlValue| match v {
        SqlValue::Text(s) => json!(s),
        SqlValue::DateTime(t) => json!(sgcache::sql::format_datetime(t)),
        _ => Value::Null,
    };
    let link = |t: &SqlValue, i: &SqlValue| match (t, i) {
        (SqlValue::Text(t), SqlValue::Int(i)) => json!({"type": t, "id": i}),
        _ => Value::Null,
    };
    let mut out = BTreeMap::new();
    for r in env.db.db.fetch_all(&sql).await.unwrap() {
        let SqlValue::Int(id) = r[0] else { continue };
        let meta = match &r[3] {
            SqlValue::Text(s) => serde_json::from_str(s).unwrap(),
            _ => Value::Null,
        };
        out.insert(
            id,
            json!({"event_type": text(&r[1]), "attribute_name": text(&r[2]), "meta": meta,
                "entity": link(&r[4], &r[5]), "user": link(&r[6], &r[7]),
                "project": link(&r[8], &r[9]), "session_uuid": text(&r[10]),
                "created_at": text(&r[11])}),
        );
    }
    out
}

/// The site's events after `after`, in the stored form (links: type and id).
async fn site_events(env: &Env, after: i64) -> BTreeMap<i64, Value> {
    let mut out = BTreeMap::new();
    let mut from = after;
    loop {
        let r = call(
            &env.writer,
            "read",
            json!({"type": "EventLogEntry",
            "filters": {"logical_operator": "and", "conditions": [
                {"path": "id", "relation": "greater_than", "values": [from]}]},
            "return_fields": ["event_type", "attribute_name", "meta", "entity", "user", "project",
                              "session_uuid", "created_at"],
            "sorts": [{"field_name": "id", "direction": "asc"}],
            "paging": {"entities_per_page": 500, "current_page": 1}}),
        )
        .await;
        let rows = r["entities"].as_array().cloned().unwrap_or_default();
        if rows.is_empty() {
            return out;
        }
        for mut e in rows {
            let id = e["id"].as_i64().unwrap();
            from = id;
            for f in ["entity", "user", "project"] {
                if !e[f].is_null() {
                    e[f] = json!({"type": e[f]["type"], "id": e[f]["id"]});
                }
            }
            let m = e.as_object_mut().unwrap();
            m.remove("id");
            m.remove("type");
            out.insert(id, e);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_follower_mid_batch_loses_and_repeats_no_stored_event() {
    let iterations: u64 = std::env::var("CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let env = Arc::new(Env::start("evlog_crash", 40, ENTITIES, WORKERS).await);
    let logs = env.dir.path().to_path_buf();
    // A first run records the starting position and backfills; the log starts with its
    // first batch.
    let mut first = spawn_worker(&env, "events", &logs.join("events-first.log"));
    let started = eventually(Duration::from_secs(30), || async {
        follower_position(&env).await > 0 || newest_event(&env.writer).await == 0
    })
    .await;
    assert!(started.is_some());
    env.sim.set_faults(shotgun_sim::Faults {
        event_gap_rate: 0.2,
        event_gap_delay_ms: 800,
        ..env.sim.faults()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(write_load(env.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let mut seed = 0x2545_F491_4F6C_DD1D_u64;
    for i in 0..iterations {
        let mut ev = spawn_worker(&env, "events", &logs.join(format!("events-{i}.log")));
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(300 + seed % 1_200)).await;
        ev.kill().unwrap(); // SIGKILL, wherever it is
        ev.wait().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let writes = load.await.unwrap();
    assert!(writes > 100, "too few writes ({writes})");
    env.sim.set_faults(shotgun_sim::Faults {
        event_gap_rate: 0.0,
        ..env.sim.faults()
    });
    tokio::time::sleep(Duration::from_millis(900)).await; // the last late commits show

    let mut last = spawn_worker(&env, "events", &logs.join("events-last.log"));
    let newest = newest_event(&env.writer).await;
    let caught_up = eventually(Duration::from_secs(60), || async {
        event_log::read_window(&env.db.db)
            .await
            .unwrap()
            .is_some_and(|w| w.through >= newest)
    })
    .await;
    last.kill().unwrap();
    last.wait().unwrap();
    assert!(
        caught_up.is_some(),
        "the kept log never reached event {newest}"
    );

    let window = event_log::read_window(&env.db.db).await.unwrap().unwrap();
    let site = site_events(&env, window.floor).await;
    let kept = stored(&env).await;
    assert!(kept.len() > 200, "too few events kept ({})", kept.len());
    assert_eq!(
        kept.keys().collect::<Vec<_>>(),
        site.keys()
            .filter(|id| **id <= window.through)
            .collect::<Vec<_>>(),
        "the kept ids are not the site's"
    );
    for (id, k) in &kept {
        let mut s = site[id].clone();
        // The site shows `entity` null while it is retired; the log keeps the link it read.
        if s["entity"].is_null() {
            s["entity"] = k["entity"].clone();
        }
        assert_eq!(k, &s, "event {id} stored differently");
    }
    // The batches committed overlapped: the kills hit while batches were being applied.
    let mut committed_batches = 0;
    for e in std::fs::read_dir(&logs).unwrap().flatten() {
        committed_batches += committed(&std::fs::read_to_string(e.path()).unwrap()).len();
    }
    assert!(
        committed_batches > iterations as usize,
        "{committed_batches} batches"
    );
    Arc::try_unwrap(env).ok().expect("env").stop().await;
}
