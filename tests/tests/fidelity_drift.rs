//! Schema drift between migrations never makes the cache answer wrong or lose rows: a cached
//! field the site retypes or deletes becomes unservable at once (reads touching it pass
//! through and equal the site), every record of the type is still stored and its other fields
//! served, neither the event follower nor the scanner stalls, and `migrate` brings the field
//! back (rebuilt and backfilled with the site's values) or drops it.

use crate::freshness_common;

use std::time::Duration;

use freshness_common::*;
use serde_json::{json, Value};
use sgcache::plan::FieldState;
use tokio_util::sync::CancellationToken;

const WORKERS: &str = "  scanner:\n    interval: 1s\n    overlap: 2s\n    pageSize: 100";

const ENTITIES: &str = r#"
  - type: Shot
    fields: [code, description, sg_status_list, sg_cut_in, sg_cut_out, project]
  - type: Asset
    fields: [code, description, project]
"#;

/// Every Shot of the site is in the cache, live or retired as on the site, with the site's
/// code: no record was skipped while a field of the type was unservable.
async fn assert_no_row_lost(env: &Env) {
    let site = site_rows(&env.writer, "Shot", &["code".into()]).await;
    assert!(!site.is_empty());
    for (id, (retired, row)) in &site {
        let (c_retired, c_row) = cached(env, "Shot", *id)
            .await
            .unwrap_or_else(|| panic!("Shot {id} missing from the cache"));
        assert_eq!(
            (retired, &row["code"]),
            (&c_retired, &c_row["code"]),
            "Shot {id}"
        );
    }
}

/// Waits until the follower stands at the site's newest event (or past it).
async fn assert_follower_at_head(env: &Env) {
    let newest = newest_event(&env.writer).await;
    assert!(newest > 0, "the site logged no event");
    assert!(
        eventually(Duration::from_secs(20), || async {
            follower_position(env).await >= newest
        })
        .await
        .is_some(),
        "the follower stopped before event {newest}: at {}",
        follower_position(env).await
    );
}

/// Waits until the cache holds each Shot's new `code` (written with and without events), then
/// checks the follower is at the site's newest event and no row was lost: nothing stalled.
async fn assert_codes_arrive(env: &Env, codes: &[(i64, &str)]) {
    assert!(
        eventually(Duration::from_secs(20), || async {
            for (id, code) in codes {
                if cached(env, "Shot", *id).await.unwrap().1["code"] != *code {
                    return false;
                }
            }
            true
        })
        .await
        .is_some(),
        "changes never reached the cache: {codes:?}"
    );
    assert_follower_at_head(env).await;
    assert_no_row_lost(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_field_retyped_on_the_site_passes_through_until_migrate_rebuilds_it_postgres() {
    retyped_field(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_field_retyped_on_the_site_passes_through_until_migrate_rebuilds_it_sqlite() {
    retyped_field(true).await;
}

async fn retyped_field(sqlite: bool) {
    let env = Env::start_on("sgcache_retype", 40, ENTITIES, WORKERS, sqlite).await;
    let stop = CancellationToken::new();
    let workers = run_workers(&env, &stop);
    assert_backfilled(&env).await;
    let (_state, proxy, _task) = start_script_proxy(&env, &stop).await;
    let http = reqwest::Client::new();
    let shots = live_shots(&env).await;
    let (a, b, c) = (shots[0], shots[1], shots[2]);
    let site_cut_in =
        site_rows(&env.writer, "Shot", &["sg_cut_in".into()]).await[&a].1["sg_cut_in"].clone();
    assert!(
        site_cut_in.is_i64(),
        "seeded Shots have a cut in: {site_cut_in}"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            read_field(&http, &proxy, "Shot", a, "sg_cut_in").await
                == ("cache".to_string(), site_cut_in.clone())
        })
        .await
        .is_some(),
        "served from the cache before the retype"
    );

    // The site makes sg_cut_in a text field: its values are gone, with no event and no
    // updated_at, so no scan or event would ever correct the cached numbers.
    env.sim.retype_field("Shot", "sg_cut_in", "text").unwrap();
    let f = wait_unservable(&env, "Shot", "sg_cut_in").await;
    let reason = f.unservable_reason.unwrap();
    assert!(reason.contains("number -> text"), "{reason}");
    // The cache's numbers are never served again: reads pass through and equal the site.
    assert!(
        eventually(Duration::from_secs(5), || async {
            read_field(&http, &proxy, "Shot", a, "sg_cut_in").await
                == ("site".to_string(), Value::Null)
        })
        .await
        .is_some(),
        "the proxy served the cached value of a retyped field"
    );

    // Values of the new type: through an event, and by a script without events; other
    // changes of the type go on being applied.
    update(&env.writer, "Shot", a, json!({"sg_cut_in": "A-12"})).await;
    update(
        &env.silent,
        "Shot",
        b,
        json!({"sg_cut_in": "B-7", "code": "b_after_retype"}),
    )
    .await;
    update(&env.writer, "Shot", c, json!({"code": "c_after_retype"})).await;
    assert_codes_arrive(&env, &[(b, "b_after_retype"), (c, "c_after_retype")]).await;
    // The other fields of those rows are still served from the cache, with the site's values.
    assert_eq!(
        read_field(&http, &proxy, "Shot", b, "code").await,
        ("cache".to_string(), json!("b_after_retype"))
    );
    assert_eq!(
        read_field(&http, &proxy, "Shot", c, "code").await,
        ("cache".to_string(), json!("c_after_retype"))
    );
    assert_eq!(
        read_field(&http, &proxy, "Asset", 1, "code").await.0,
        "cache"
    );
    for (id, want) in [(a, "A-12"), (b, "B-7")] {
        assert_eq!(
            read_field(&http, &proxy, "Shot", id, "sg_cut_in").await,
            ("site".to_string(), json!(want))
        );
    }
    // Still unservable: a value of the new type does not make the old column right.
    let f = field_state(&env, "Shot", "sg_cut_in").await.unwrap();
    assert_eq!(f.state, FieldState::Unservable);
    let readyz: Value = sgcache_tests::proxy::get_json(&http, &format!("{proxy}/readyz")).await;
    assert_eq!(
        readyz["unservable_fields"],
        json!(["Shot.sg_cut_in"]),
        "{readyz}"
    );

    // migrate rebuilds the field for text; the backfill brings it back with the site's values.
    env.migrate(&env.spec).await;
    let f = field_state(&env, "Shot", "sg_cut_in").await.unwrap();
    assert_eq!(f.data_type, "text");
    assert!(
        eventually(Duration::from_secs(30), || env.all_ready())
            .await
            .is_some(),
        "the rebuilt field never became ready"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            read_field(&http, &proxy, "Shot", a, "sg_cut_in").await
                == ("cache".to_string(), json!("A-12"))
        })
        .await
        .is_some(),
        "the rebuilt field is not served from the cache"
    );
    assert_eq!(
        read_field(&http, &proxy, "Shot", b, "sg_cut_in").await,
        ("cache".to_string(), json!("B-7"))
    );
    assert_eq!(compare(&env).await, Vec::<String>::new());
    stop.cancel();
    for w in workers {
        w.await.unwrap();
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_field_deleted_on_the_site_is_never_served_stale_and_stalls_nothing() {
    let env = Env::start("sgcache_field_gone", 40, ENTITIES, WORKERS).await;
    let stop = CancellationToken::new();
    let workers = run_workers(&env, &stop);
    assert_backfilled(&env).await;
    let (_state, proxy, _task) = start_script_proxy(&env, &stop).await;
    let http = reqwest::Client::new();
    let shots = live_shots(&env).await;
    let (a, b) = (shots[0], shots[1]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            read_field(&http, &proxy, "Shot", a, "sg_cut_out").await.0 == "cache"
        })
        .await
        .is_some(),
        "served from the cache before the deletion"
    );

    call(
        &env.writer,
        "schema_field_delete",
        json!({"type": "Shot", "field_name": "sg_cut_out"}),
    )
    .await;
    let f = wait_unservable(&env, "Shot", "sg_cut_out").await;
    assert!(f
        .unservable_reason
        .unwrap()
        .contains("no longer has this field"));
    // Reads of it go to the site (which refuses them), never to the cached values.
    assert!(
        eventually(Duration::from_secs(5), || async {
            read_field(&http, &proxy, "Shot", a, "sg_cut_out").await.0 == "site"
        })
        .await
        .is_some(),
        "the proxy served a field the site deleted"
    );

    // Neither worker stalls on the type: an evented change and a silent one both arrive.
    update(&env.writer, "Shot", a, json!({"code": "a_after_delete"})).await;
    update(&env.silent, "Shot", b, json!({"code": "b_after_delete"})).await;
    assert_codes_arrive(&env, &[(a, "a_after_delete"), (b, "b_after_delete")]).await;
    assert_eq!(
        read_field(&http, &proxy, "Shot", a, "code").await,
        ("cache".to_string(), json!("a_after_delete"))
    );

    // A migrate with the spec that still names the field drops it (the plan says it is gone
    // from the site) instead of refusing the whole spec: every remaining field is served.
    let site = env.writer.schema().await.unwrap();
    let plan = sgcache::storage::migrate(
        &env.db.db,
        &env.spec,
        &site,
        sgcache::plan::PlanOptions::default(),
    )
    .await
    .expect("migrate drops what the site deleted");
    assert_eq!(plan.gone, vec!["Shot.sg_cut_out".to_string()]);
    assert!(
        eventually(Duration::from_secs(30), || env.all_ready())
            .await
            .is_some(),
        "fields never ready after the migrate"
    );
    assert_eq!(
        field_state(&env, "Shot", "sg_cut_out").await.unwrap().state,
        FieldState::Dropped
    );
    assert_eq!(compare(&env).await, Vec::<String>::new());
    stop.cancel();
    for w in workers {
        w.await.unwrap();
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_event_follower_alone_sees_a_retyped_field_in_its_events() {
    let env = Env::start("sgcache_retype_event", 40, ENTITIES, WORKERS).await;
    let stop = CancellationToken::new();
    let scan_stop = CancellationToken::new();
    let follower = {
        let (spec, stop) = (env.spec.clone(), stop.clone());
        tokio::spawn(async move { sgcache_worker::events::run(&spec, stop).await.unwrap() })
    };
    let scanner = spawn_scanner(&env, &scan_stop);
    assert_backfilled(&env).await;
    // Only the follower runs from here: no schema check by the scanner.
    scan_stop.cancel();
    scanner.await.unwrap();
    let a = live_shots(&env).await[0];
    env.sim.retype_field("Shot", "sg_cut_in", "text").unwrap();
    update(&env.writer, "Shot", a, json!({"sg_cut_in": "A-12"})).await;
    let f = wait_unservable(&env, "Shot", "sg_cut_in").await;
    let reason = f.unservable_reason.unwrap();
    assert!(reason.contains("number -> text"), "{reason}");
    assert_follower_at_head(&env).await;
    // The row is stored with the event's other effects (updated_at moved with it).
    let row = cached(&env, "Shot", a).await.unwrap().1;
    let site =
        site_rows(&env.writer, "Shot", &["updated_at".into()]).await[&a].1["updated_at"].clone();
    assert_eq!(row["updated_at"], site);
    stop.cancel();
    follower.await.unwrap();
    env.stop().await;
}
