//! The share of reads answered from the cache over every proxy replica: two proxies on one
//! cache each add their counts to the database, and `sgcache-worker status` (the real binary)
//! shows their sum and the reasons reads went to the site.

use crate::freshness_common;
use crate::status_common;

use std::time::Duration;

use freshness_common::*;
use serde_json::{json, Value};
use sgcache::storage::read_counts;
use sgcache_tests::proxy::{post, script_auth};
use status_common::*;
use tokio_util::sync::CancellationToken;

/// Reads of `ty` through `proxy`, each expected on `path`.
async fn reads(http: &reqwest::Client, proxy: &str, plan: &[(&str, &str)]) {
    for (ty, expected) in plan {
        let body = json!({"method_name": "read", "params": [script_auth(), {
            "type": ty, "filters": {"logical_operator": "and", "conditions": []},
            "return_fields": ["code"], "paging": {"entities_per_page": 5, "current_page": 1},
            "return_only": "active"}]})
        .to_string();
        let (status, path, answer) = post(
            http,
            &format!("{proxy}/api3/json"),
            "application/json",
            body,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(path.as_deref(), Some(*expected), "read of {ty}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_every_proxy_are_summed_in_the_status() {
    let env = shot_backfilled("read_share").await;
    let stop = CancellationToken::new();
    let (a_state, a, _) = start_proxy(&env, script_auth().as_object().cloned(), 0.0, &stop).await;
    let (b_state, b, _) = start_proxy(&env, script_auth().as_object().cloned(), 0.0, &stop).await;
    a_state.refresh_catalog().await;
    b_state.refresh_catalog().await;
    let http = reqwest::Client::new();
    // Asset is pending: its reads go to the site (and verify the credentials).
    reads(
        &http,
        &a,
        &[
            ("Asset", "site"),
            ("Shot", "cache"),
            ("Shot", "cache"),
            ("Shot", "cache"),
        ],
    )
    .await;
    reads(
        &http,
        &b,
        &[("Asset", "site"), ("Shot", "cache"), ("Shot", "cache")],
    )
    .await;

    // Each proxy adds its counts every 10 s.
    let db = &env.db.db;
    let summed = eventually(Duration::from_secs(30), || async {
        let minute = read_counts::minute_of(chrono::Utc::now());
        let share = read_counts::read_share(db, minute, 5).await.unwrap();
        (share.cache, share.site, share.replicas) == (5, 2, 2)
    })
    .await;
    let minute = read_counts::minute_of(chrono::Utc::now());
    let share = read_counts::read_share(db, minute, 5).await.unwrap();
    assert!(
        summed.is_some(),
        "never summed to 5 + 2 over 2 replicas: {share:?}"
    );
    assert_eq!(share.reasons.len(), 1, "{share:?}");
    assert_eq!(share.reasons[0].1, 2);

    // More reads are added, not counted twice.
    reads(&http, &b, &[("Shot", "cache")]).await;
    let added = eventually(Duration::from_secs(30), || async {
        let minute = read_counts::minute_of(chrono::Utc::now());
        read_counts::read_share(db, minute, 5).await.unwrap().cache == 6
    })
    .await;
    assert!(added.is_some());
    tokio::time::sleep(Duration::from_secs(11)).await;
    let minute = read_counts::minute_of(chrono::Utc::now());
    let share = read_counts::read_share(db, minute, 5).await.unwrap();
    assert_eq!(
        (share.cache, share.site),
        (6, 2),
        "a later flush adds nothing new"
    );

    let out = worker(&env.config, &["status", "--proxy", &a]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains(
            "reads   75.0% of reads from the cache over the last 5 min, 2 proxies (6 cache, 2 site); passed through: "
        ),
        "{stdout}"
    );
    let out = worker(&env.config, &["status", "--json", "--proxy", &a]).await;
    let status: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(status["reads"]["cache"], 6, "{status}");
    assert_eq!(status["reads"]["site"], 2);
    assert_eq!(status["reads"]["replicas"], 2);
    // The page of either proxy shows the same sum.
    let page = sgcache_tests::proxy::get_json(&http, &format!("{b}/_sgcache/status.json")).await;
    assert!(
        page["text"]["reads"]
            .as_str()
            .is_some_and(|r| r.starts_with("75.0% of reads from the cache")),
        "{page}"
    );
    stop.cancel();
    env.stop().await;
}
