//! The scanner against the test site and a real PostgreSQL: a field declared while the
//! follower and scanner run is backfilled (while the site takes writes on it) and marked ready
//! at the end, matching the site; a `--full` scan retires cached ids the site no longer has.

use crate::freshness_common;

use std::time::Duration;

use freshness_common::*;
use serde_json::json;
use sgcache::plan::FieldState;
use sgcache::sql::SqlValue;
use sgcache_worker::scanner::ScannerArgs;
use shotgun_sim::{SeedConfig, SimConfig};
use tokio_util::sync::CancellationToken;

const WORKERS: &str = "  events:\n    pollInterval: 300ms\n  scanner:\n    interval: 2s\n    overlap: 5s\n    pageSize: 10";
const BEFORE: &str = "\n  - type: Shot\n    fields: [code, sg_status_list, project]\n  - type: Asset\n    fields: [code, shots]\n";
const AFTER: &str = "\n  - type: Shot\n    fields: [code, sg_status_list, project, description, sg_cut_in, assets]\n  - type: Asset\n    fields: [code, shots]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_added_while_workers_run_is_backfilled_then_ready() {
    let mut env = Env::start("scan_add", 3_000, BEFORE, WORKERS).await;
    let stop = CancellationToken::new();
    let tasks = run_workers(&env, &stop);
    assert!(eventually(Duration::from_secs(90), || env.all_ready())
        .await
        .is_some());

    let spec = env.respec(AFTER, WORKERS);
    env.migrate(&spec).await;
    // The running workers pick the new fields up from the state tables.
    let fields = sgcache::storage::list_fields(&env.db.db).await.unwrap();
    let desc = fields
        .iter()
        .find(|f| f.entity_type == "Shot" && f.field_name == "description")
        .unwrap();
    assert_ne!(desc.state, FieldState::Ready);
    let shots = site_rows(&env.writer, "Shot", &["code".into()]).await;
    let ids: Vec<i64> = shots
        .iter()
        .filter(|(_, (r, _))| !r)
        .map(|(id, _)| *id)
        .collect();
    let mut saw_progress = false;
    for (i, id) in ids.iter().rev().cycle().take(400).enumerate() {
        if env.all_ready().await {
            break;
        }
        update(
            &env.writer,
            "Shot",
            *id,
            json!({"description": format!("during backfill {i}")}),
        )
        .await;
        let f = sgcache::storage::list_fields(&env.db.db).await.unwrap();
        saw_progress |= f.iter().any(|f| {
            f.field_name == "description"
                && f.backfill_done > 0
                && f.state == FieldState::Backfilling
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        eventually(Duration::from_secs(90), || env.all_ready())
            .await
            .is_some(),
        "backfill never finished"
    );
    let f = sgcache::storage::list_fields(&env.db.db).await.unwrap();
    let desc = f
        .iter()
        .find(|f| f.entity_type == "Shot" && f.field_name == "description")
        .unwrap();
    assert!(
        desc.backfill_done >= ids.len() as i64,
        "progress {} of {}",
        desc.backfill_done,
        ids.len()
    );
    assert!(desc.backfill_total.is_some());
    assert!(
        saw_progress,
        "backfill progress was never visible in the state tables"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let diffs = compare(&env).await;
    assert!(
        diffs.is_empty(),
        "cache differs from the site:\n{}",
        diffs.join("\n")
    );
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }

    // A manual `--full` scan repairs a wrong cell and a row wrongly shown live.
    let retired_id = *shots
        .iter()
        .find(|(_, (r, _))| *r)
        .expect("a retired shot")
        .0;
    let mut sql = env.db.db.sql();
    sql.push("UPDATE shot SET code = 'tampered' WHERE id = ")
        .push_bind(SqlValue::Int(ids[3]));
    env.db.db.execute(&sql).await.unwrap();
    let mut sql = env.db.db.sql();
    sql.push("UPDATE shot SET _retired = false, _updated_at_seen = NULL WHERE id = ")
        .push_bind(SqlValue::Int(retired_id));
    env.db.db.execute(&sql).await.unwrap();
    assert_eq!(compare(&env).await.len(), 2);
    let args = ScannerArgs {
        full: true,
        types: vec!["Shot".into()],
        projects: vec![],
    };
    sgcache_worker::scanner::run(&env.spec, args, CancellationToken::new())
        .await
        .unwrap();
    let diffs = compare(&env).await;
    assert!(diffs.iter().all(|d| d.contains("tampered")), "{diffs:?}");
    env.stop().await;
}

/// A site whose page cap (`api_max_entities_per_page`) is below the scanner's page size: a
/// short page must not read as the last one, or the scan stops early and rows go missing.
/// `--projects` scans take the keyset path, which trusts short pages to mean the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_page_cap_below_the_page_size_loses_no_rows() {
    let site = SimConfig {
        seed: SeedConfig {
            scale: 300,
            ..SeedConfig::default()
        },
        max_entities_per_page: 25,
        ..SimConfig::default()
    };
    // Only Shot is scanned below, so Project (the target of Shot.project) is not implied.
    let entities = "\n  - type: Shot\n    fields: [code, project]\nimplyLinkTargets: false\n";
    let workers = "  scanner:\n    pageSize: 500";
    let env = Env::start_site("scan_cap", site, entities, workers).await;
    let projects: Vec<i64> = site_rows(&env.writer, "Project", &["name".into()])
        .await
        .into_keys()
        .collect();
    let shots = site_rows(&env.writer, "Shot", &["code".into()]).await;
    assert!(shots.len() > 100, "too few shots to span several pages");
    let args = ScannerArgs {
        full: true,
        types: vec!["Shot".into()],
        projects,
    };
    sgcache_worker::scanner::run(&env.spec, args, CancellationToken::new())
        .await
        .unwrap();
    let diffs = compare(&env).await;
    assert!(
        diffs.is_empty(),
        "cache differs from the site:\n{}",
        diffs.join("\n")
    );
    env.stop().await;
}

/// On SQLite (the local default) a full scan of several thousand rows of two types, its pages
/// written while the next ones are read: every write transaction takes the write lock up front,
/// so none fails with "database is locked" (a deferred one did, 100 ms in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_scan_on_sqlite_is_not_stopped_by_its_own_writes() {
    let entities = "\n  - type: Shot\n    fields: [code, sg_status_list, project, description]\n  - type: Task\n    fields: [content, entity, sg_status_list, project]\n";
    let env = Env::start_on("scan_sqlite", 3_000, entities, WORKERS, true).await;
    let args = ScannerArgs {
        full: true,
        ..ScannerArgs::default()
    };
    sgcache_worker::scanner::run(&env.spec, args, CancellationToken::new())
        .await
        .expect("the full scan finishes");
    assert!(env.all_ready().await, "every field ready after the scan");
    let diffs = compare(&env).await;
    assert!(diffs.is_empty(), "cache differs from the site: {diffs:?}");
    env.stop().await;
}

/// A type without `updated_at` (a real site's `Reply`; the site refuses a read or a filter
/// naming a field the type lacks): its backfill reads only its own fields, incremental scans
/// skip it, and the types after it (`Shot`) are still backfilled and scanned. Before, every
/// scanner round failed on `Reply` and backed off: nothing after it was ever scanned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_without_updated_at_is_backfilled_and_does_not_stop_the_scans() {
    let entities = "\n  - type: Reply\n    fields: [content]\n  - type: Shot\n    fields: [code]\nimplyLinkTargets: false\n";
    let env = Env::start("scan_no_updated_at", 300, entities, WORKERS).await;
    let reply = create(&env.writer, "Reply", json!({"content": "first"})).await;
    let stop = CancellationToken::new();
    let tasks = run_workers(&env, &stop);
    assert_backfilled(&env).await;
    let row = cached(&env, "Reply", reply)
        .await
        .expect("the reply is cached");
    assert_eq!(row.1.get("content"), Some(&json!("first")));
    // An incremental round reaches Shot, which comes after Reply.
    let mark = chrono::Utc::now().timestamp_millis();
    let scanned = shots_scanned_since(&env, mark, Duration::from_secs(30)).await;
    assert!(scanned, "no incremental scan of Shot completed");
    let diffs = compare(&env).await;
    assert!(diffs.is_empty(), "cache differs from the site: {diffs:?}");
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    env.stop().await;
}

/// A row an incremental scan finds that the cache lacks (an entity retired and revived
/// without events while the backfill read its type, or created without one) is handled as a
/// revival: the rows it links to are read again. Here the race's aftermath is set up by hand:
/// a shot missing from the cache and from its sequence's `shots`, then changed without an
/// event. Before, the scan wrote the shot back but the sequence's list stayed without it (the
/// site does not touch the sequence's `updated_at`), which the crash test caught once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_missing_from_the_cache_brings_back_the_links_to_it() {
    let (env, shot, seq) = backfilled_shot_in_sequence("scan_missing_row", WORKERS).await;
    let mut sql = env.db.db.sql();
    sql.push("DELETE FROM shot WHERE id = ")
        .push_bind(SqlValue::Int(shot));
    env.db.db.execute(&sql).await.unwrap();
    drop_sequence_link(&env, seq, shot).await;
    assert_eq!(
        compare(&env).await.len(),
        2,
        "the shot and the sequence's list"
    );
    update_silently(&env, shot).await;

    let diffs = diffs_after_a_scan_of_shots(&env).await;
    assert!(diffs.is_empty(), "cache differs from the site: {diffs:?}");
    env.stop().await;
}

/// A script without events retires a shot and revives it between two scans, while its
/// sequence is read (here: the sequence's list set up by hand without the shot, as that read
/// stored it). The next scan finds the shot changed but live, as the cache has it: nothing
/// says it was hidden, so the rows every changed row links to are read again. Before, the
/// sequence's list stayed without the shot until a full scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_hidden_and_back_between_two_scans_brings_back_the_links_to_it() {
    let (env, shot, seq) = backfilled_shot_in_sequence("scan_hidden_row", WORKERS).await;
    retire(&env.silent, "Shot", shot).await;
    revive(&env.silent, "Shot", shot).await;
    drop_sequence_link(&env, seq, shot).await;
    assert_eq!(
        compare(&env).await.len(),
        2,
        "the shot's updated_at and the sequence's list"
    );

    let diffs = diffs_after_a_scan_of_shots(&env).await;
    assert!(diffs.is_empty(), "cache differs from the site: {diffs:?}");
    env.stop().await;
}

/// Runs the scanner until an incremental scan of Shot that started now has completed; the
/// cache's differences from the site then.
async fn diffs_after_a_scan_of_shots(env: &Env) -> Vec<String> {
    let mark = chrono::Utc::now().timestamp_millis();
    let stop = CancellationToken::new();
    let scanner = spawn_scanner(env, &stop);
    let scanned = shots_scanned_since(env, mark, Duration::from_secs(30)).await;
    assert!(scanned, "no incremental scan of Shot completed");
    let diffs = compare(env).await;
    stop.cancel();
    scanner.await.unwrap();
    diffs
}

/// Waits (at most `within`) until a scan of Shot that started at `mark` or later has
/// completed; whether one did.
async fn shots_scanned_since(env: &Env, mark: i64, within: Duration) -> bool {
    eventually(within, || async {
        let at = sgcache::storage::last_scan_start(&env.db.db, "Shot")
            .await
            .unwrap();
        at.is_some_and(|t| t >= mark)
    })
    .await
    .is_some()
}

/// Changes the shot's code as the script that makes no events.
async fn update_silently(env: &Env, shot: i64) {
    env.silent
        .call(
            "update",
            json!({"type": "Shot", "id": shot, "fields": [{"field_name": "code", "value": "silent"}]}),
        )
        .await
        .expect("silent update");
}

/// A full scan (a backfill, `--full`) that finds live a row the cache has retired (the
/// follower applied its retirement, then a script without events revived it) reads again the
/// rows it links to, which were read while it was hidden from them. Set up by hand: the shot
/// retired in the cache and missing from its sequence's `shots`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_scan_that_finds_a_retired_row_live_brings_back_the_links_to_it() {
    let (env, shot, seq) = backfilled_shot_in_sequence("scan_full_revived", WORKERS).await;
    let mut sql = env.db.db.sql();
    sql.push("UPDATE shot SET _retired = true WHERE id = ")
        .push_bind(SqlValue::Int(shot));
    env.db.db.execute(&sql).await.unwrap();
    drop_sequence_link(&env, seq, shot).await;
    assert_eq!(
        compare(&env).await.len(),
        2,
        "the shot and the sequence's list"
    );

    let args = ScannerArgs {
        full: true,
        types: vec!["Shot".into()],
        projects: vec![],
    };
    sgcache_worker::scanner::run(&env.spec, args, CancellationToken::new())
        .await
        .unwrap();
    let diffs = compare(&env).await;
    assert!(diffs.is_empty(), "cache differs from the site: {diffs:?}");
    env.stop().await;
}

/// A first start backfills the declared types at once, not one after another: Ready comes
/// after the longest type's scan rather than after the sum of them (issue 21, a clean start).
/// Read from the site's request log: with types scanned one at a time, each type's reads
/// would follow the whole of another's (Asset alone takes fifteen pages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_declared_types_are_backfilled_at_once() {
    let entities = "\n  - type: Asset\n    fields: [code]\n  - type: Shot\n    fields: [code]\n  - type: Version\n    fields: [code]\nimplyLinkTargets: false\n";
    let env = Env::start("scan_at_once", 300, entities, WORKERS).await;
    env.sim.reset_stats();
    env.sim.set_faults(shotgun_sim::Faults {
        latency_ms: 20,
        ..Default::default()
    });
    let stop = CancellationToken::new();
    let tasks = run_workers(&env, &stop);
    assert_backfilled(&env).await;
    let reads: Vec<String> = env
        .sim
        .requests(10_000)
        .into_iter()
        .filter(|r| r.method == "read")
        .filter_map(|r| r.entity_type)
        .filter(|t| ["Asset", "Shot", "Version"].contains(&t.as_str()))
        .collect();
    let asset_pages = reads.iter().filter(|t| *t == "Asset").count();
    assert!(
        asset_pages >= 15,
        "Asset read in {asset_pages} pages: {reads:?}"
    );
    // One after another, some type's first read would come after another's last. At once,
    // every type's reads begin before any type's end (a fixed position for the first read
    // would hang on how fast each scan's opening statements run on a loaded machine).
    let first = |ty: &str| reads.iter().position(|t| t == ty).unwrap();
    let last = |ty: &str| reads.iter().rposition(|t| t == ty).unwrap();
    let types = ["Asset", "Shot", "Version"];
    for ty in types {
        assert!(reads.iter().any(|t| t == ty), "{ty} never read: {reads:?}");
    }
    let latest_start = types.map(first).into_iter().max().unwrap();
    let earliest_end = types.map(last).into_iter().min().unwrap();
    assert!(
        latest_start < earliest_end,
        "a type's scan began ({latest_start}) only after another's ended ({earliest_end}): {reads:?}"
    );
    let diffs = compare(&env).await;
    assert!(diffs.is_empty(), "cache differs from the site: {diffs:?}");
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    env.stop().await;
}

/// A backfill stopped halfway and resumed counts as a scan from when its first part began: the
/// first incremental scan after it reads what changed since then, not the whole type again
/// (before, a resumed backfill recorded no scan, so the next scan read every row once more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_backfill_counts_from_its_first_start() {
    let entities = "\n  - type: Shot\n    fields: [code]\nimplyLinkTargets: false\n";
    let env = Env::start("scan_resumed", 300, entities, WORKERS).await;
    env.sim.set_faults(shotgun_sim::Faults {
        latency_ms: 100,
        ..Default::default()
    });
    let begun = chrono::Utc::now().timestamp_millis();
    let stop = CancellationToken::new();
    let scanner = spawn_scanner(&env, &stop);
    let halfway = eventually(Duration::from_secs(30), || async {
        field_state(&env, "Shot", "code")
            .await
            .is_some_and(|f| f.backfill_done >= 100)
    })
    .await;
    assert!(halfway.is_some(), "the backfill made no progress");
    stop.cancel();
    scanner.await.unwrap();
    let first = field_state(&env, "Shot", "code").await.unwrap();
    assert_ne!(first.state, FieldState::Ready, "stopped before its end");
    let started = first
        .backfill_started_ms
        .expect("the backfill's start kept");
    assert!((begun..=chrono::Utc::now().timestamp_millis()).contains(&started));
    assert_eq!(
        sgcache::storage::last_scan_start(&env.db.db, "Shot")
            .await
            .unwrap(),
        None
    );

    env.sim.reset_stats();
    let mark = chrono::Utc::now().timestamp_millis();
    let stop = CancellationToken::new();
    let scanner = spawn_scanner(&env, &stop);
    let scanned = shots_scanned_since(&env, mark, Duration::from_secs(60)).await;
    stop.cancel();
    scanner.await.unwrap();
    assert!(scanned, "no incremental scan after the backfill");
    // The rest of the backfill (about 40 reads here: pages of 10, active and retired rows) and
    // one scan of what changed since its first part began (2 reads: nothing changed). Measured:
    // 43 reads; 72 when the first scan after a resumed backfill read the whole type again.
    let reads = env
        .sim
        .requests(10_000)
        .into_iter()
        .filter(|r| r.method == "read" && r.entity_type.as_deref() == Some("Shot"))
        .count();
    assert!(reads <= 55, "{reads} reads of Shot after the resume");
    let diffs = compare(&env).await;
    assert!(diffs.is_empty(), "cache differs from the site: {diffs:?}");
    env.stop().await;
}
