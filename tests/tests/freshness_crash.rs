//! Crash safety: the real `sgcache-worker events` and `sgcache-worker scanner` processes are
//! SIGKILLed at random points (during the initial backfill and while following) over many
//! iterations while the site takes writes with and without events. Afterwards the cache must
//! equal the site field by field for every cached type, and the follower's committed batches
//! (from its JSON logs) must never cover an event twice. The last run is stopped with SIGTERM
//! and must exit 0.

use crate::freshness_common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use freshness_common::*;
use serde_json::json;

const WORKERS: &str = "  events:\n    pollInterval: 300ms\n    gapWindow: 20s\n  scanner:\n    interval: 1s\n    overlap: 3s\n    pageSize: 40";

/// A small xorshift generator: the tests crate has no RNG, and the seed is printed for replay.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Random writes through the site's API until `stop`: updates, link edits, retire/revive,
/// creates; about one in five by the script without events.
async fn write_load(env: Arc<Env>, stop: Arc<AtomicBool>, seed: u64) -> usize {
    let mut rng = Rng(seed | 1);
    let shots: Vec<i64> = site_rows(&env.writer, "Shot", &["code".into()])
        .await
        .into_iter()
        .filter(|(_, (r, _))| !r)
        .map(|(id, _)| id)
        .collect();
    let assets: Vec<i64> = site_rows(&env.writer, "Asset", &["code".into()])
        .await
        .into_iter()
        .filter(|(_, (r, _))| !r)
        .map(|(id, _)| id)
        .collect();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let c = if rng.below(5) == 0 {
            &env.silent
        } else {
            &env.writer
        };
        let shot = shots[rng.below(shots.len() as u64) as usize];
        let asset =
            json!([{"type": "Asset", "id": assets[rng.below(assets.len() as u64) as usize]}]);
        let r = match rng.below(10) {
            0..=4 => c.call("update", json!({"type": "Shot", "id": shot, "fields": [
                {"field_name": "code", "value": format!("w{n}")}, {"field_name": "sg_cut_in", "value": n}]})).await,
            5 => c.call("update", json!({"type": "Shot", "id": shot, "fields": [
                {"field_name": "assets", "value": asset, "multi_entity_update_mode": "add"}]})).await,
            6 => c.call("update", json!({"type": "Shot", "id": shot, "fields": [
                {"field_name": "assets", "value": asset, "multi_entity_update_mode": "remove"}]})).await,
            7 => c.call("delete", json!({"type": "Shot", "id": shot})).await,
            8 => c.call("revive", json!({"type": "Shot", "id": shot})).await,
            _ => c.call("create", json!({"type": "Asset", "fields": [{"field_name": "code", "value": format!("new{n}")}]})).await,
        };
        // Updating a retired shot is refused by the site; that is part of the load, not a failure.
        if r.is_ok() {
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_workers_at_random_points_loses_and_repeats_nothing() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(7) as u64);
    let iterations: usize = std::env::var("CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    eprintln!("crash test seed {seed}, {iterations} iterations");
    let env = Arc::new(Env::start("crash", 120, ENTITIES, WORKERS).await);
    let logs = env.dir.path().to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(write_load(env.clone(), stop.clone(), seed));
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut kills = 0;
    for i in 0..iterations {
        let mut ev = spawn_worker(&env, "events", &logs.join(format!("events-{i}.log")));
        let mut sc = spawn_worker(&env, "scanner", &logs.join(format!("scanner-{i}.log")));
        // Early iterations die inside the initial backfill; later ones while following.
        tokio::time::sleep(Duration::from_millis(150 + rng.below(1_500))).await;
        ev.kill().unwrap(); // SIGKILL
        if rng.below(4) != 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        }
        sc.kill().unwrap();
        ev.wait().unwrap();
        sc.wait().unwrap();
        kills += 2;
    }
    stop.store(true, Ordering::Relaxed);
    let writes = load.await.unwrap();
    eprintln!("{kills} kills, {writes} writes");
    assert!(writes > 50, "the site took too few writes ({writes})");

    // A last, undisturbed run catches up; then the cache must equal the site.
    let mut ev = spawn_worker(&env, "events", &logs.join("events-final.log"));
    let mut sc = spawn_worker(&env, "scanner", &logs.join("scanner-final.log"));
    let newest = call(
        &env.writer,
        "read",
        json!({"type": "EventLogEntry", "filters": {"logical_operator": "and", "conditions": []},
        "return_fields": ["id"], "sorts": [{"field_name": "id", "direction": "desc"}],
        "paging": {"entities_per_page": 1, "current_page": 1}}),
    )
    .await["entities"][0]["id"]
        .as_i64()
        .unwrap();
    let caught_up = eventually(Duration::from_secs(90), || async {
        env.all_ready().await
            && sgcache::storage::read_event_position(&env.db.db)
                .await
                .ok()
                .flatten()
                .is_some_and(|p| p.last_event_id >= Some(newest) && p.backlog == json!([]))
    })
    .await;
    assert!(caught_up.is_some(), "the workers never caught up");
    // Two scan intervals after the last write: silent writes are in too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let diffs = compare(&env).await;
    for (child, name) in [(&mut ev, "events"), (&mut sc, "scanner")] {
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let code = child.wait().unwrap();
        assert!(code.success(), "{name} exited with {code} on SIGTERM");
    }
    if !diffs.is_empty() {
        let keep = std::env::temp_dir().join(format!("sgcache-crash-{seed}"));
        let _ = std::fs::create_dir_all(&keep);
        for e in std::fs::read_dir(&logs).unwrap().flatten() {
            let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
        }
        let ev = call(&env.writer, "read", json!({"type": "EventLogEntry", "filters": {"logical_operator": "and", "conditions": []},
            "return_fields": ["id", "event_type", "attribute_name", "entity", "meta", "created_at", "user"],
            "paging": {"entities_per_page": 5000, "current_page": 1}})).await;
        std::fs::write(
            keep.join("site-events.json"),
            serde_json::to_string_pretty(&ev).unwrap(),
        )
        .unwrap();
        eprintln!("logs and site events kept in {}", keep.display());
    }
    assert!(
        diffs.is_empty(),
        "seed {seed}: cache differs from the site:\n{}",
        diffs.join("\n")
    );

    let mut batches = Vec::new();
    for entry in std::fs::read_dir(&logs).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("events-")
        {
            batches.extend(committed(&std::fs::read_to_string(&p).unwrap()));
        }
    }
    assert!(
        batches.len() > 3,
        "too few committed batches were logged: {}",
        batches.len()
    );
    batches.sort();
    // Backlog-only commits cover no new range.
    let ranges: Vec<_> = batches.iter().filter(|(a, t, _)| t > a).cloned().collect();
    for pair in ranges.windows(2) {
        let ((a1, t1, _), (a2, t2, _)) = (&pair[0], &pair[1]);
        assert!(
            t1 <= a2,
            "seed {seed}: batches ({a1}, {t1}] and ({a2}, {t2}] overlap: an event applied twice"
        );
    }
    let mut late = BTreeSet::new();
    for (_, _, l) in &batches {
        for id in l {
            assert!(
                late.insert(*id),
                "seed {seed}: late event {id} applied twice"
            );
        }
    }
    Arc::try_unwrap(env)
        .ok()
        .expect("env still shared")
        .stop()
        .await;
}
