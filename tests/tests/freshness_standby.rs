//! Hot standby and database outages of the event follower, with real `sgcache-worker events`
//! processes against the test site and PostgreSQL:
//!
//! * two followers on one database: only the one holding the advisory lock applies events;
//!   SIGKILLing it lets the standby take over within a deadline, and the cache then equals the
//!   site with no event range committed twice;
//! * the follower's database connections are terminated (`pg_terminate_backend`) again and
//!   again for a few seconds while the site takes writes: it reconnects and loses nothing;
//! * the database goes away for seconds, as in a server restart (connections cut, new ones
//!   refused, through [`Relay`]) while the site takes writes with and without events: the
//!   follower and the scanner stay up, reconnect, and the cache ends equal to the site.
//!
//! The scanner only does the initial backfill and is stopped before the writes, so anything a
//! follower lost would show in the final comparison.

use crate::freshness_common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use freshness_common::*;
use serde_json::{json, Value};
use sgcache::sql::{Db, SqlValue};
use sgcache::storage;
use sgcache_tests::relay::Relay;
use tokio_util::sync::CancellationToken;

const WORKERS: &str = "  events:\n    pollInterval: 200ms\n    gapWindow: 30s\n  scanner:\n    interval: 1s\n    overlap: 2s\n    pageSize: 100";

fn read_log(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn messages(log: &str, message: &str) -> usize {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message || v["fields"]["message"] == message)
        .count()
}

/// Waits up to `within` for the follower logging to `log` to hold the leader lock; whether it
/// did.
async fn became_active(log: &std::path::Path, within: Duration) -> Option<Duration> {
    eventually(within, || async {
        messages(&read_log(log), "holding the leader lock; active") == 1
    })
    .await
}

/// Batches of all logs together cover every id once: consecutive, never overlapping, and no
/// late id applied twice.
fn assert_applied_once(logs: &[String]) {
    let mut batches: Vec<(i64, i64, Vec<i64>)> = logs.iter().flat_map(|l| committed(l)).collect();
    batches.sort();
    assert!(!batches.is_empty(), "no batch committed");
    for w in batches.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert!(
            b.0 >= a.1,
            "batches ({}, {}] and ({}, {}] overlap",
            a.0,
            a.1,
            b.0,
            b.1
        );
    }
    let mut late: Vec<i64> = batches.iter().flat_map(|b| b.2.clone()).collect();
    let n = late.len();
    late.sort();
    late.dedup();
    assert_eq!(late.len(), n, "a late id was applied twice");
}

async fn newest_event(env: &Env) -> i64 {
    call(
        &env.writer,
        "read",
        json!({"type": "EventLogEntry", "filters": {"logical_operator": "and", "conditions": []},
        "return_fields": ["id"], "sorts": [{"field_name": "id", "direction": "desc"}],
        "paging": {"entities_per_page": 1, "current_page": 1}}),
    )
    .await["entities"][0]["id"]
        .as_i64()
        .unwrap_or(0)
}

/// Waits until the saved position covers the newest event with an empty backlog.
async fn caught_up(env: &Env, within: Duration) -> bool {
    let newest = newest_event(env).await;
    eventually(within, || async {
        storage::read_event_position(&env.db.db)
            .await
            .ok()
            .flatten()
            .is_some_and(|p| p.last_event_id >= Some(newest) && p.backlog == json!([]))
    })
    .await
    .is_some()
}

/// Starts the environment and runs the scanner until the initial backfill is done.
async fn backfilled(prefix: &str) -> Env {
    let env = Env::start(prefix, 60, ENTITIES, WORKERS).await;
    let stop = CancellationToken::new();
    let scanner = spawn_scanner(&env, &stop);
    assert_backfilled(&env).await;
    stop.cancel();
    scanner.await.unwrap();
    env
}

async fn live_shots(env: &Env) -> Vec<i64> {
    site_rows(&env.writer, "Shot", &["code".into()])
        .await
        .into_iter()
        .filter(|(_, (r, _))| !r)
        .map(|(id, _)| id)
        .collect()
}

/// A few writes with events, each a real change (an update that changes nothing bumps
/// `updated_at` without an event; only the scanner can see that): scalar updates, and a
/// create linking an asset (its back-reference changes the asset too).
async fn writes(env: &Env, shots: &[i64], round: usize) {
    for (i, id) in shots.iter().take(6).enumerate() {
        update(
            &env.writer,
            "Shot",
            *id,
            json!({"code": format!("r{round}_{i}"), "sg_cut_in": (round * 100 + i) as i64}),
        )
        .await;
    }
    let asset = site_rows(&env.writer, "Asset", &["code".into()])
        .await
        .into_iter()
        .filter(|(_, (r, _))| !r)
        .map(|(id, _)| id)
        .nth(round % 5)
        .expect("an asset");
    create(
        &env.writer,
        "Shot",
        json!({"code": format!("new_{round}"), "description": "standby",
               "assets": [{"type": "Asset", "id": asset}]}),
    )
    .await;
}

fn sigterm_exits_zero(child: &mut Child, name: &str, log: &std::path::Path) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let t0 = Instant::now();
    loop {
        if let Some(code) = child.try_wait().unwrap() {
            assert!(
                code.success(),
                "{name} exited with {code}:\n{}",
                read_log(log)
            );
            return;
        }
        if t0.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("{name} still running 15 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_after_sigkill_and_nothing_is_lost_or_applied_twice() {
    let env = backfilled("standby").await;
    let shots = live_shots(&env).await;
    let (log_a, log_b) = (
        env.dir.path().join("events-a.log"),
        env.dir.path().join("events-b.log"),
    );
    let mut a = spawn_worker(&env, "events", &log_a);
    assert!(
        became_active(&log_a, Duration::from_secs(15))
            .await
            .is_some(),
        "first follower never became active:\n{}",
        read_log(&log_a)
    );
    let mut b = spawn_worker(&env, "events", &log_b);
    assert!(
        eventually(Duration::from_secs(15), || async {
            messages(
                &read_log(&log_b),
                "another instance is active; waiting as standby",
            ) == 1
        })
        .await
        .is_some(),
        "second follower never reported standby:\n{}",
        read_log(&log_b)
    );
    for round in 0..3 {
        writes(&env, &shots, round).await;
    }
    assert!(
        caught_up(&env, Duration::from_secs(20)).await,
        "A never caught up"
    );
    // The position is committed before the follower logs the batch: wait for its line.
    assert!(
        eventually(Duration::from_secs(5), || async {
            !committed(&read_log(&log_a)).is_empty()
        })
        .await
        .is_some(),
        "no batch logged by A"
    );
    assert!(
        committed(&read_log(&log_b)).is_empty(),
        "the standby applied events while the other held the lock"
    );
    assert_eq!(
        messages(&read_log(&log_b), "holding the leader lock; active"),
        0
    );

    // SIGKILL the active one, keep writing: the standby takes over and catches up.
    a.kill().unwrap();
    a.wait().unwrap();
    let killed = Instant::now();
    for round in 3..6 {
        writes(&env, &shots, round).await;
    }
    let took = became_active(&log_b, Duration::from_secs(10)).await;
    assert!(
        took.is_some(),
        "the standby did not take over within 10 s of the SIGKILL:\n{}",
        read_log(&log_b)
    );
    eprintln!("standby active {:?} after the SIGKILL", killed.elapsed());
    assert!(
        caught_up(&env, Duration::from_secs(20)).await,
        "B never caught up"
    );
    // The position is committed before the follower logs the batch: wait for its line.
    assert!(
        eventually(Duration::from_secs(5), || async {
            !committed(&read_log(&log_b)).is_empty()
        })
        .await
        .is_some(),
        "no batch logged by B"
    );
    assert_applied_once(&[read_log(&log_a), read_log(&log_b)]);
    let diffs = compare(&env).await;
    assert!(diffs.is_empty(), "cache differs from the site: {diffs:#?}");
    sigterm_exits_zero(&mut b, "standby", &log_b);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_survives_its_connections_being_terminated() {
    let env = backfilled("pgkill").await;
    let shots = live_shots(&env).await;
    let log = env.dir.path().join("events.log");
    let mut ev = spawn_worker(&env, "events", &log);
    assert!(
        became_active(&log, Duration::from_secs(15)).await.is_some(),
        "follower never became active:\n{}",
        read_log(&log)
    );
    let admin = Db::connect(&format!("{}/postgres", sgcache_tests::pg::server_url()), 1)
        .await
        .unwrap();
    // Terminate every backend of the test database every 250 ms for 4 s while writing.
    let t0 = Instant::now();
    let mut terminated = 0usize;
    let mut round = 0;
    while t0.elapsed() < Duration::from_secs(4) {
        let mut sql = admin.sql();
        sql.push(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND datname = ",
        )
        .push_bind(SqlValue::Text(env.db.name.clone()));
        terminated += admin.fetch_all(&sql).await.unwrap().len();
        writes(&env, &shots, round).await;
        round += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    admin.close().await;
    eprintln!("{terminated} backends terminated over {round} rounds of writes");
    assert!(
        terminated >= round,
        "too few backends were terminated ({terminated})"
    );
    assert!(
        caught_up(&env, Duration::from_secs(30)).await,
        "the follower never caught up after the terminations:\n{}",
        read_log(&log)
    );
    let text = read_log(&log);
    let reacquired = messages(&text, "holding the leader lock; active");
    eprintln!("leader lock acquired {reacquired} times");
    assert!(
        reacquired >= 2,
        "the follower never noticed losing its lock connection"
    );
    assert_eq!(ev.try_wait().unwrap(), None, "the follower exited:\n{text}");
    assert_applied_once(&[text]);
    let diffs = compare(&env).await;
    assert!(diffs.is_empty(), "cache differs from the site: {diffs:#?}");
    sigterm_exits_zero(&mut ev, "follower", &log);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_and_the_scanner_ride_out_a_database_restart() {
    let env = backfilled("pgdown").await;
    let shots = live_shots(&env).await;
    let (relay, url) = Relay::for_postgres(&env.db.url).await.unwrap();
    let (ev_log, sc_log) = (
        env.dir.path().join("events.log"),
        env.dir.path().join("scanner.log"),
    );
    let mut ev = spawn_worker_via(&env, "events", &ev_log, Some(&url));
    let mut sc = spawn_worker_via(&env, "scanner", &sc_log, Some(&url));
    assert!(
        became_active(&ev_log, Duration::from_secs(15))
            .await
            .is_some(),
        "follower never became active:\n{}",
        read_log(&ev_log)
    );
    writes(&env, &shots, 0).await;
    assert!(
        caught_up(&env, Duration::from_secs(20)).await,
        "no catch-up before the outage"
    );

    relay.down();
    let accepted = relay.accepted();
    for round in 1..5 {
        writes(&env, &shots, round).await;
        // A script without events: only the scanner's incremental scan can bring this in.
        update(
            &env.silent,
            "Shot",
            shots[10 + round],
            json!({"description": format!("silent during the outage {round}")}),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    relay.up().await.unwrap();

    assert!(
        caught_up(&env, Duration::from_secs(40)).await,
        "the follower never caught up after the outage:\n{}",
        read_log(&ev_log)
    );
    let equal = eventually(Duration::from_secs(30), || async {
        compare(&env).await.is_empty()
    })
    .await;
    let diffs = compare(&env).await;
    assert!(equal.is_some(), "cache differs from the site: {diffs:#?}");
    assert!(relay.accepted() > accepted, "nothing reconnected");
    let log = read_log(&ev_log);
    // Whichever notices first: the lock's watcher, or the follow loop's own check.
    let noticed: usize = [
        "lost the leader lock; stopping the work",
        "the leader lock's connection does not answer; stopping the work",
        "lost the leader lock's connection; re-acquiring",
    ]
    .iter()
    .map(|m| messages(&log, m))
    .sum();
    assert!(
        noticed >= 1,
        "the follower never noticed the outage:\n{log}"
    );
    assert_eq!(
        ev.try_wait().unwrap(),
        None,
        "the follower exited:\n{}",
        read_log(&ev_log)
    );
    assert_eq!(
        sc.try_wait().unwrap(),
        None,
        "the scanner exited:\n{}",
        read_log(&sc_log)
    );
    assert_applied_once(&[read_log(&ev_log)]);
    sigterm_exits_zero(&mut ev, "follower", &ev_log);
    sigterm_exits_zero(&mut sc, "scanner", &sc_log);
    drop(relay);
    env.stop().await;
}
