//! Earned trust through the real proxy, the test site and PostgreSQL: a read shape whose
//! semantics are inferred (here `sort:text`) goes to the site while its class learns, is
//! answered from the cache once trusted, and is turned off for good by a site that answers
//! differently. The state is shared by two proxies and survives a restart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sgcache::sql::Db;
use sgcache::storage::{self, TrustState};
use sgcache::trust::TrustClass;
use sgcache_tests::proxy::{script_auth, site_client, test_config, Harness};
use sgcache_worker::proxy::trust::TrustConfig;
use sgcache_worker::proxy::{serve, AppState};
use tokio_util::sync::CancellationToken;

const SPEC: &str = "
entities:
  - type: Project
    fields: [name, archived]
  - type: Shot
    fields: [code, project, sg_status_list]
";

const SAMPLES: u32 = 3;

fn learning(recheck_rate: f64) -> TrustConfig {
    TrustConfig {
        samples: SAMPLES,
        max_site_rate: 100.0,
        recheck_rate,
        pins: BTreeMap::new(),
        confirm_delay: Duration::from_millis(100),
    }
}

/// Shots sorted by code: relies on `sort:text` only.
fn by_code() -> Value {
    json!({
        "type": "Shot",
        "filters": {"logical_operator": "and", "conditions": []},
        "return_fields": ["code"],
        "sorts": [{"field_name": "code", "direction": "asc"}],
        "paging": {"entities_per_page": 50, "current_page": 1},
        "return_paging_info_without_counts": true,
    })
}

async fn class_state(db: &Db, class: TrustClass) -> (TrustState, i64) {
    let r = storage::read_trust(db)
        .await
        .unwrap()
        .remove(&class)
        .unwrap_or_default();
    (r.state, r.samples)
}

/// Waits (10 s at most) for `class` to reach `state` in the database.
async fn wait_for_state(db: &Db, class: TrustClass, state: TrustState) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = class_state(db, class).await;
        if now.0 == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{class} stayed {now:?}, wanted {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A read through `proxy_url` (path header and body) and the site's answer to it.
async fn read_both(h: &Harness, proxy_url: &str) -> (Option<String>, Value, Value) {
    let (_, path, via) = h.call_at(proxy_url, "read", script_auth(), by_code()).await;
    let (_, _, site) = h.direct("read", script_auth(), by_code()).await;
    (path, via, site)
}

/// A second proxy on the same site and cache (another replica, or the first one restarted).
struct Replica {
    url: String,
    stop: CancellationToken,
}

async fn replica(h: &Harness, db: &Db, trust: TrustConfig) -> Replica {
    let mut config = test_config(h.sim.url());
    config.trust = trust;
    let state = AppState::new(&config, Some(db.clone())).unwrap();
    state.refresh_catalog().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(serve(state, config, listener, stop.clone()));
    verify_credentials(h, &url).await;
    Replica { url, stop }
}

/// A first read through a proxy goes to the site whatever its shape: the site must accept the
/// credentials before anything cached is served to them.
async fn verify_credentials(h: &Harness, proxy_url: &str) {
    let payload = json!({"type": "Project",
        "filters": {"logical_operator": "and", "conditions": []}, "return_fields": ["name"]});
    let (_, path, _) = h.call_at(proxy_url, "read", script_auth(), payload).await;
    assert_eq!(path.as_deref(), Some("site"));
}

#[tokio::test]
async fn a_class_learns_then_answers_from_the_cache_on_every_replica() {
    let (h, db) = Harness::with_cache("sgcache_trust", SPEC, |c| c.trust = learning(0.0))
        .await
        .unwrap();
    let class = TrustClass::SortText;
    let proxy = h.proxy_url.clone();

    // Learning: every read goes to the site and its answer is the site's.
    for i in 0..SAMPLES {
        let (path, via, site) = read_both(&h, &proxy).await;
        assert_eq!(path.as_deref(), Some("site"), "read {i} while learning");
        assert_eq!(via, site);
        assert!(via["results"]["entities"].as_array().unwrap().len() > 5);
        // The check runs in the background; the next read is another sample.
        let deadline = Instant::now() + Duration::from_secs(10);
        while class_state(&db.db, class).await.1 < i as i64 + 1 {
            assert!(Instant::now() < deadline, "sample {i} was never counted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_for_state(&db.db, class, TrustState::Trusted).await;

    // Trusted: answered from the cache, identical, without asking the site.
    tokio::time::sleep(Duration::from_millis(300)).await; // a catalog refresh
    let before = h.site_requests();
    let (_, path, via) = h.proxy("read", script_auth(), by_code()).await;
    assert_eq!(path.as_deref(), Some("cache"));
    assert_eq!(h.site_requests(), before, "a trusted read reached the site");
    let (_, _, site) = h.direct("read", script_auth(), by_code()).await;
    assert_eq!(via, site);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"sgcache_proxy_trust_class_state{class="sort:text",state="trusted"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"sgcache_proxy_trust_class_samples{class="sort:text"} 3"#));
    assert!(metrics
        .contains(r#"sgcache_proxy_trust_checks_total{class="sort:text",outcome="match"} 3"#));

    // Another replica (or this one restarted): the state comes from the database.
    let other = replica(&h, &db.db, learning(0.0)).await;
    let (path, via, site) = read_both(&h, &other.url).await;
    assert_eq!(
        path.as_deref(),
        Some("cache"),
        "the other replica did not share the state"
    );
    assert_eq!(via, site);

    // A reset by a person sends both back to learning at their next refresh.
    storage::reset_trust(&db.db, Some(class)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    for url in [&proxy, &other.url] {
        let (path, via, site) = read_both(&h, url).await;
        assert_eq!(
            path.as_deref(),
            Some("site"),
            "{url} still trusted after a reset"
        );
        assert_eq!(via, site);
    }
    // The served reads were counted in the database.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served = storage::read_trust(&db.db).await.unwrap()[&class].served;
    assert!(served >= 2, "served {served}");
    other.stop.cancel();
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn a_pinned_class_is_answered_without_proof_or_never() {
    let mut pins = learning(0.0);
    pins.pins
        .insert(class_of_sort(), sgcache::spec::TrustPin::On);
    let (h, db) = Harness::with_cache("sgcache_trust", SPEC, |c| c.trust = pins)
        .await
        .unwrap();
    verify_credentials(&h, &h.proxy_url.clone()).await;
    let (path, via, site) = read_both(&h, &h.proxy_url.clone()).await;
    assert_eq!(path.as_deref(), Some("cache"));
    assert_eq!(via, site);
    let mut off = learning(0.0);
    off.pins
        .insert(class_of_sort(), sgcache::spec::TrustPin::Off);
    let other = replica(&h, &db.db, off).await;
    for _ in 0..3 {
        let (path, via, site) = read_both(&h, &other.url).await;
        assert_eq!(path.as_deref(), Some("site"));
        assert_eq!(via, site);
    }
    // Pinned classes need no samples: none were taken.
    assert_eq!(
        class_state(&db.db, class_of_sort()).await,
        (TrustState::Learning, 0)
    );
    other.stop.cancel();
    h.stop().await;
    db.drop().await;
}

fn class_of_sort() -> TrustClass {
    TrustClass::SortText
}

/// Adds shots whose codes sort differently by code point than case-insensitively ("alpha"
/// after every upper-case "SH…" by code point, before them folded).
async fn mixed_case_codes(h: &Harness, db: &Db) {
    for code in ["alpha", "Beta", "gamma"] {
        let (_, _, r) = h
            .direct(
                "create",
                script_auth(),
                json!({"type": "Shot", "fields": [{"field_name": "code", "value": code}],
                       "return_fields": ["code"]}),
            )
            .await;
        assert!(r["results"]["id"].is_i64(), "{r}");
    }
    let site = site_client(h.sim.url());
    sgcache_tests::loader::load_all(db, &site).await.unwrap();
    h.state.refresh_catalog().await;
}

fn byte_order(h: &Harness) {
    h.sim.set_semantics(shotgun_sim::Semantics {
        sort_collation: shotgun_sim::SortCollation::Byte,
        ..h.sim.semantics()
    });
}

#[tokio::test]
async fn a_site_that_answers_differently_turns_a_learning_class_off_before_it_serves() {
    let (h, db) = Harness::with_cache("sgcache_trust", SPEC, |c| c.trust = learning(0.0))
        .await
        .unwrap();
    mixed_case_codes(&h, &db.db).await;
    byte_order(&h);
    let class = TrustClass::SortText;
    // Every read is the site's; the background checks find the cache's order different.
    for _ in 0..5 {
        let (path, via, site) = read_both(&h, &h.proxy_url.clone()).await;
        assert_ne!(path.as_deref(), Some("cache"));
        assert_eq!(via, site);
    }
    wait_for_state(&db.db, class, TrustState::Off).await;
    let record = storage::read_trust(&db.db).await.unwrap()[&class].clone();
    assert_eq!(record.samples, 0, "a differing answer counted as a sample");
    assert_eq!(record.detail.as_deref(), Some("Shot: order or paging"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            r#"sgcache_proxy_trust_checks_total{class="sort:text",outcome="difference"}"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"sgcache_proxy_trust_class_state{class="sort:text",state="off"} 1"#));
    // Off: the site answers, whatever the site does next.
    for _ in 0..5 {
        let (path, via, site) = read_both(&h, &h.proxy_url.clone()).await;
        assert_eq!(path.as_deref(), Some("site"));
        assert_eq!(via, site);
    }
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn a_trusted_class_is_turned_off_by_its_rechecks_and_never_serves_after() {
    let (h, db) = Harness::with_cache("sgcache_trust", SPEC, |c| c.trust = learning(1.0))
        .await
        .unwrap();
    mixed_case_codes(&h, &db.db).await;
    let class = TrustClass::SortText;
    for _ in 0..SAMPLES {
        read_both(&h, &h.proxy_url.clone()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_state(&db.db, class, TrustState::Trusted).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (path, via, site) = read_both(&h, &h.proxy_url.clone()).await;
    assert_eq!(path.as_deref(), Some("cache"));
    assert_eq!(via, site);

    // The site changes its collation: the next cached answer is re-checked (recheckRate 1),
    // the difference confirmed, and the class turned off.
    byte_order(&h);
    let (path, _, _) = read_both(&h, &h.proxy_url.clone()).await;
    assert_eq!(
        path.as_deref(),
        Some("cache"),
        "served before the site's change was seen"
    );
    wait_for_state(&db.db, class, TrustState::Off).await;
    // From the moment it is off, no answer comes from the cache, and each is the site's.
    for _ in 0..10 {
        let (path, via, site) = read_both(&h, &h.proxy_url.clone()).await;
        assert_eq!(path.as_deref(), Some("site"));
        assert_eq!(via, site);
    }
    h.stop().await;
    db.drop().await;
}

/// The hits on kept answers, from the proxy's metrics.
async fn kept_hits(h: &Harness) -> u64 {
    let m = h.metrics().await;
    m.lines()
        .find_map(|l| l.strip_prefix("sgcache_proxy_result_cache_hits_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[tokio::test]
async fn answers_that_depend_on_the_time_are_not_kept() {
    // Every class pinned on: the answers themselves come from the cache.
    let (h, db) = Harness::with_cache("sgcache_trust", SPEC, |_| {})
        .await
        .unwrap();
    verify_credentials(&h, &h.proxy_url.clone()).await;
    let recent = json!({
        "type": "Project",
        "filters": {"logical_operator": "and", "conditions": [
            {"path": "updated_at", "relation": "in_last", "values": [3650, "DAY"]}]},
        "return_fields": ["name"],
    });
    let plain = json!({"type": "Project",
        "filters": {"logical_operator": "and", "conditions": []}, "return_fields": ["name"]});
    for (payload, kept) in [(plain, true), (recent, false)] {
        let before = kept_hits(&h).await;
        for _ in 0..3 {
            let (_, path, via) = h.proxy("read", script_auth(), payload.clone()).await;
            let (_, _, site) = h.direct("read", script_auth(), payload.clone()).await;
            assert_eq!(path.as_deref(), Some("cache"), "{payload}");
            assert_eq!(via, site);
        }
        let hits = kept_hits(&h).await - before;
        assert_eq!(hits > 0, kept, "{payload}: {hits} kept answers");
    }
    h.stop().await;
    db.drop().await;
}
