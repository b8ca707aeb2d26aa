//! `sgcache-worker status` (the real binary) against a PostgreSQL cache of the test site:
//! field states per type, backfill progress, dead letters, the follower's lag against the
//! site's newest event, the proxy's hit ratio; text and `--json`; exit code 1 when the database
//! cannot be read (issue 13).

use crate::status_common;

use serde_json::Value;
use sgcache::plan::FieldState;
use sgcache::storage;
use status_common::*;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_command_shows_field_states_lag_and_the_proxys_hit_ratio() {
    let env = shot_backfilled("status_cmd").await;
    let stop = CancellationToken::new();
    let (proxy, _) = proxy_with_reads(&env, &stop).await;

    // Text: one row per type, the follower caught up, the proxy's ratio and reasons.
    let out = worker(&env.config, &["status", "--proxy", &proxy]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let row = |ty: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(ty))
            .unwrap_or_else(|| panic!("no {ty} row:\n{stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    // TYPE STATE READY PENDING BACKFILLING UNSERVABLE BACKFILL ...; four fields each: the two
    // of the spec, and the id and updated_at the cache always keeps.
    assert_eq!(
        row("Shot")[..7],
        ["Shot", "ready", "4", "0", "0", "0", "-"],
        "{stdout}"
    );
    assert_eq!(
        row("Asset")[..8],
        ["Asset", "pending", "0", "4", "0", "0", "not", "started"],
        "{stdout}"
    );
    assert!(stdout.contains("caught up (lag 0 s)"), "{stdout}");
    assert!(
        stdout.contains("hit ratio 75.0% (3 reads from the cache, 1 from the site)"),
        "{stdout}"
    );
    assert!(stdout.contains("passed through: "), "{stdout}");
    assert!(!stdout.contains("test_key"), "credentials shown:\n{stdout}");

    // JSON: the same facts for scripts.
    let out = worker(&env.config, &["status", "--json", "--proxy", &proxy]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let shot = type_of(&status, "Shot");
    assert_eq!(
        (shot["ready"].as_u64(), shot["pending"].as_u64()),
        (Some(4), Some(0))
    );
    assert!(shot["last_scan"].is_string(), "{shot}");
    let asset = type_of(&status, "Asset");
    assert_eq!(
        (asset["ready"].as_u64(), asset["pending"].as_u64()),
        (Some(0), Some(4))
    );
    let events = &status["events"];
    assert!(
        events["site_newest_event_id"].as_i64() > Some(0),
        "{events}"
    );
    assert_eq!(
        events["applied_event_id"], events["site_newest_event_id"],
        "{events}"
    );
    assert_eq!(
        (
            events["events_behind"].as_i64(),
            events["lag_seconds"].as_i64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(status["proxy"]["hit_ratio"].as_f64(), Some(0.75));
    assert_eq!(status["proxy"]["reads_site"].as_u64(), Some(1));
    assert_eq!(
        status["proxy"]["pass_through"][0]["reads"].as_u64(),
        Some(1)
    );

    // A backfill of Asset under way, and a value of Shot the cache could not store, as the
    // scanner and the write path record them.
    let db = &env.db.db;
    let asset_fields: Vec<String> = ["code", "description", "id", "updated_at"]
        .map(String::from)
        .to_vec();
    let mut tx = db.begin().await.unwrap();
    storage::set_field_state(&mut tx, "Asset", &asset_fields, FieldState::Backfilling)
        .await
        .unwrap();
    storage::set_backfill_progress(&mut tx, "Asset", &asset_fields, Some(4), 4, Some(10), 0)
        .await
        .unwrap();
    storage::mark_unservable(&mut tx, "Shot", "sg_status_list", "a value too odd", 3)
        .await
        .unwrap();
    let letter = storage::DeadLetter {
        event_id: None,
        entity_type: "Shot".into(),
        entity_id: 3,
        field_name: "sg_status_list".into(),
        reason: "a value too odd".into(),
    };
    storage::write_dead_letter(&mut tx, &letter).await.unwrap();
    tx.commit().await.unwrap();
    let out = worker(&env.config, &["status", "--proxy", &proxy]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row = |ty: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(ty))
            .unwrap_or_else(|| panic!("no {ty} row:\n{stdout}"))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("Asset")[..8],
        ["Asset", "backfilling", "0", "0", "4", "0", "4/10", "(40%)"],
        "{stdout}"
    );
    let shot = row("Shot");
    assert_eq!(
        shot[..6],
        ["Shot", "unservable", "3", "0", "0", "1"],
        "{stdout}"
    );
    assert_eq!(
        shot.last().map(String::as_str),
        Some("1"),
        "dead letters: {stdout}"
    );
    assert!(!stdout.contains("a value too odd"), "{stdout}");

    // A change on the site that no follower applied: one event behind, and said so. The
    // proxy is gone: its figures are missing, which is not a failure.
    stop.cancel();
    rename_a_shot(&env).await;
    let out = worker(&env.config, &["status", "--proxy", &proxy]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains(": 1 behind, lag "), "{stdout}");
    assert!(
        stdout.contains("proxy   not reached: cannot reach the proxy"),
        "{stdout}"
    );
    let out = worker(&env.config, &["status", "--json", "--proxy", &proxy]).await;
    let status: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let events = &status["events"];
    assert_eq!(events["events_behind"].as_i64(), Some(1), "{events}");
    assert!(
        events["lag_seconds"].as_i64().is_some_and(|s| s >= 0),
        "{events}"
    );
    assert_eq!(
        events["site_newest_event_id"].as_i64(),
        events["applied_event_id"].as_i64().map(|a| a + 1)
    );

    // A database that cannot be read: exit code 1 and one line saying so.
    let broken = env.dir.path().join("broken.yaml");
    let yaml = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace(&env.db.url, &format!("{}_missing", env.db.url));
    std::fs::write(&broken, yaml).unwrap();
    let out = worker(&broken, &["status", "--proxy", &proxy]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: cannot connect to the database"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    env.stop().await;
}
