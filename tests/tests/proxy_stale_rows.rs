//! Passed-through answers refresh what they show is stale (issue 22, item 3): a write on the
//! site that logs no event (a script with events off) leaves the cache behind until the next
//! scan; a read the proxy passes through that returns the row newer and different makes the
//! proxy re-read it with the cache's own credentials and write it, so the next cached read
//! is right, with no scanner or follower running. Without the cache's own credentials nothing
//! is refreshed: the client's answer is never stored.

use std::time::Duration;

use serde_json::{json, Value};
use sgcache_tests::proxy::{script_auth, Harness};

const SPEC: &str = "
entities:
  - type: Project
    fields: [name]
  - type: Shot
    fields: [code, project, updated_at]
";

const SHOT: i64 = 5;

fn silent_auth() -> Value {
    json!({"script_name": "silent_script", "script_key": "silent_key"})
}

fn metric(h: &Harness, name: &str) -> f64 {
    h.state
        .telemetry
        .metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const REFRESHED: &str = "sgcache_proxy_passthrough_refreshed_entities_total";
const SKIPPED: &str = "sgcache_proxy_refreshes_skipped_total";

/// The shot's code as the proxy answers a read it serves from the cache.
async fn cached_code(h: &Harness) -> String {
    let (_, path, body) = h
        .proxy(
            "read",
            script_auth(),
            json!({"type": "Shot", "filters": {"logical_operator": "and", "conditions": [
                {"path": "id", "relation": "is", "values": [SHOT]}]}, "return_fields": ["code"]}),
        )
        .await;
    assert_eq!(path.as_deref(), Some("cache"), "{body}");
    body["results"]["entities"][0]["code"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A read the cache does not answer (it asks for `image`, which is never cached): the site's
/// answer holds the shot with its code and `updated_at`.
async fn passed_through_read(h: &Harness) -> Value {
    let (_, path, body) = h
        .proxy(
            "read",
            script_auth(),
            json!({"type": "Shot", "filters": {"logical_operator": "and", "conditions": [
                {"path": "id", "relation": "in", "values": [SHOT, SHOT + 1]}]},
                "return_fields": ["code", "updated_at", "image"]}),
        )
        .await;
    assert_eq!(path.as_deref(), Some("site"));
    body
}

/// Changes the shot's code on the site without an event.
async fn silent_write(h: &Harness, code: &str) {
    // The site's clock moves on, so the write's `updated_at` is newer than the cached one.
    h.sim.advance_clock(60);
    let (_, _, r) = h
        .direct(
            "update",
            silent_auth(),
            json!({"type": "Shot", "id": SHOT, "fields": [{"field_name": "code", "value": code}]}),
        )
        .await;
    assert_eq!(r["results"]["code"], code, "{r}");
}

async fn setup(service_auth: bool) -> (Harness, sgcache_tests::pg::TestDb, String) {
    let (h, db) = Harness::with_cache("sgcache_stale_rows", SPEC, |c| {
        if !service_auth {
            c.service_auth = None;
        }
    })
    .await
    .unwrap();
    // Verifies the credentials (a first read goes to the site).
    passed_through_read(&h).await;
    let before = cached_code(&h).await;
    silent_write(&h, "changed_without_event").await;
    assert_eq!(
        cached_code(&h).await,
        before,
        "the cache saw the silent write"
    );
    (h, db, before)
}

#[tokio::test]
async fn a_passed_through_answer_refreshes_the_row_it_shows_stale() {
    let (h, db, _) = setup(true).await;
    let site = passed_through_read(&h).await;
    assert_eq!(
        site["results"]["entities"][0]["code"], "changed_without_event",
        "{site}"
    );
    // The refresh runs in the background; no scanner or follower runs here.
    let mut refreshed = false;
    for _ in 0..100 {
        if metric(&h, REFRESHED) >= 1.0 {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refreshed, "{}", h.state.telemetry.metrics.encode());
    assert_eq!(cached_code(&h).await, "changed_without_event");
    // Only the stale row was re-read: the other shot of the answer was current.
    assert_eq!(metric(&h, REFRESHED), 1.0);
    assert_eq!(metric(&h, SKIPPED), 0.0);
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn without_the_caches_own_credentials_nothing_is_refreshed() {
    let (h, db, before) = setup(false).await;
    let site = passed_through_read(&h).await;
    assert_eq!(
        site["results"]["entities"][0]["code"],
        "changed_without_event"
    );
    let mut skipped = false;
    for _ in 0..100 {
        if metric(&h, SKIPPED) >= 1.0 {
            skipped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(skipped, "{}", h.state.telemetry.metrics.encode());
    // The client's answer was not stored: the cache still holds what it had.
    assert_eq!(cached_code(&h).await, before);
    assert_eq!(metric(&h, REFRESHED), 0.0);
    h.stop().await;
    db.drop().await;
}
