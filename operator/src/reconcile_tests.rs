//! Reconcile against a mocked API server (tower-test) and a fake database.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::{json, Value};
use sgcache::spec::DeletionPolicy;

use super::*;
use crate::db::{DbError, DbSnapshot, FieldRow, MigrationOutcome};
use crate::fixtures::{expect, finished, secret_json, Expect, Harness, Reply};
use crate::metrics::ErrorLabels;
use kube::runtime::reflector::ObjectRef;

const CACHE: &str = "/apis/sgcache.io/v1alpha1/namespaces/default/shotguncaches/cache";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments";
const PODS: &str = "/api/v1/namespaces/default/pods";

fn secrets_ok() -> Vec<Expect> {
    vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/default/secrets/db",
            Reply::Json(secret_json(
                "db",
                &[("url", "postgres://cache:pw@db/cache")],
            )),
        ),
        expect(
            Method::GET,
            "/api/v1/namespaces/default/secrets/site",
            Reply::Json(secret_json("site", &[("apiKey", "s3cret")])),
        ),
    ]
}

fn children() -> Vec<Expect> {
    vec![
        expect(
            Method::PATCH,
            "/api/v1/namespaces/default/configmaps/cache-config",
            Reply::Echo,
        ),
        expect(
            Method::PATCH,
            &format!("{DEPLOY}/cache-events"),
            Reply::Echo,
        ),
        expect(
            Method::PATCH,
            &format!("{DEPLOY}/cache-scanner"),
            Reply::Echo,
        ),
        expect(Method::PATCH, &format!("{DEPLOY}/cache-proxy"), Reply::Echo),
        expect(
            Method::PATCH,
            "/api/v1/namespaces/default/services/cache",
            Reply::Echo,
        ),
        expect(
            Method::PATCH,
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets/cache-proxy",
            Reply::Echo,
        ),
    ]
}

fn status_patch(cache: &ShotgunCache) -> Expect {
    expect(
        Method::PATCH,
        &format!("{CACHE}/status"),
        Reply::Json(serde_json::to_value(cache).unwrap()),
    )
}

fn event(reason: &str) -> Expect {
    let _ = reason;
    expect(Method::POST, EVENTS, Reply::Echo)
}

/// A repeat of an Event: kube's Recorder patches the first one's series.
fn event_repeat() -> Expect {
    expect(Method::PATCH, &format!("{EVENTS}/*"), Reply::Echo)
}

fn events_posted(h: &Harness) -> Vec<String> {
    let log = h.log.lock().unwrap();
    log.iter()
        .filter(|c| c.what == format!("POST {EVENTS}"))
        .map(|c| c.body["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

fn sent_status(h: &Harness) -> ShotgunCacheStatus {
    let call = h.call(&format!("PATCH {CACHE}/status"));
    serde_json::from_value(call.body["status"].clone()).unwrap()
}

fn proxy_hash(h: &Harness) -> String {
    let call = h.call(&format!("PATCH {DEPLOY}/cache-proxy"));
    call.body["spec"]["template"]["metadata"]["annotations"]["sgcache.io/config-hash"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A full successful reconcile of `cache`; returns the harness for inspection.
async fn reconcile_ok(cache: ShotgunCache, schema_changes: &[&str]) -> (Harness, Action) {
    let mut h = Harness::new();
    *h.db.migrate.lock().unwrap() = Ok(MigrationOutcome {
        changes: schema_changes.iter().map(|s| s.to_string()).collect(),
        ..MigrationOutcome::default()
    });
    let mut calls = secrets_ok();
    if !schema_changes.is_empty() {
        calls.push(event("SchemaChanged"));
    }
    calls.extend(children());
    calls.push(status_patch(&cache));
    let server = h.serve(calls);
    let action = reconcile(Arc::new(cache), h.ctx.clone())
        .await
        .expect("reconcile succeeds");
    finished(server).await;
    (h, action)
}

#[tokio::test]
async fn a_new_cache_first_gets_the_finalizer() {
    let mut h = Harness::new();
    let cache = ShotgunCache::test();
    let server = h.serve(vec![expect(
        Method::PATCH,
        CACHE,
        Reply::Json(serde_json::to_value(cache.clone().finalized()).unwrap()),
    )]);
    reconcile(Arc::new(cache), h.ctx.clone()).await.unwrap();
    finished(server).await;
    let patch = h.log.lock().unwrap()[0].body.clone();
    assert!(patch.to_string().contains(crate::crd::FINALIZER), "{patch}");
    assert!(
        h.calls().iter().all(|c| !c.starts_with("db:")),
        "nothing else before the finalizer"
    );
}

#[tokio::test]
async fn create_migrates_then_applies_children_in_order_with_owner_refs() {
    let cache = ShotgunCache::test().finalized();
    let (h, action) =
        reconcile_ok(cache.clone(), &["create table Shot", "add field Shot.code"]).await;
    let calls = h.calls();
    let pos = |what: &str| {
        calls
            .iter()
            .position(|c| c.ends_with(what))
            .unwrap_or_else(|| panic!("{what} in {calls:?}"))
    };
    assert!(pos("db:migrate") < pos("configmaps/cache-config"));
    assert!(pos("configmaps/cache-config") < pos("deployments/cache-events"));
    assert!(pos("deployments/cache-proxy") < pos("services/cache"));
    assert!(pos("db:snapshot") < pos("cache/status"));
    assert_eq!(events_posted(&h), ["SchemaChanged"]);
    let migrate = h.call("db:migrate");
    // The cache works in its own schema: every connection's search_path.
    let schema = crate::resources::default_schema("default", "cache");
    assert_eq!(
        migrate.body["url"],
        format!("postgres://cache:pw@db/cache?options[search_path]={schema}")
    );
    assert_eq!(migrate.body["spec"]["database"]["schema"], schema);
    let cm = h.call("PATCH /api/v1/namespaces/default/configmaps/cache-config");
    assert!(
        cm.body["data"]["sgcache.yaml"]
            .as_str()
            .unwrap()
            .contains(&format!("schema: {schema}")),
        "the workers get the schema through their config"
    );
    for c in h
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.what.starts_with("PATCH /api"))
    {
        assert!(
            c.query.contains("fieldManager=sgcache.io%2Foperator")
                && c.query.contains("force=true"),
            "{c:?}"
        );
        if c.what.ends_with("/status") {
            continue;
        }
        let owner = &c.body["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ShotgunCache", "{}", c.what);
        assert_eq!(owner["uid"], cache.metadata.uid.clone().unwrap());
        assert_eq!(owner["controller"], true);
    }
    let cm = h.call("PATCH /api/v1/namespaces/default/configmaps/cache-config");
    assert!(
        !cm.body.to_string().contains("s3cret"),
        "no secret in the ConfigMap"
    );
    let status = sent_status(&h);
    assert_eq!(status.condition("SchemaReady").unwrap().status, "True");
    let workers = status.condition("WorkersAvailable").unwrap();
    assert_eq!(
        (workers.status.as_str(), workers.reason.as_str()),
        ("False", "Progressing")
    );
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(action, Action::requeue(RESYNC));
}

#[tokio::test]
async fn adding_a_field_migrates_first_then_rolls_the_pods() {
    let before = ShotgunCache::test().finalized();
    let (h1, _) = reconcile_ok(before.clone(), &[]).await;
    let after = before.with_spec(|s| s.entities[0].fields.push("description".into()));
    let (h2, _) = reconcile_ok(after, &["add field Shot.description"]).await;
    assert_ne!(proxy_hash(&h1), proxy_hash(&h2), "the config hash changed");
    let migrated = h2.call("db:migrate").body["spec"]["entities"][0]["fields"].clone();
    assert_eq!(migrated, json!(["code", "sg_status_list", "description"]));
    let calls = h2.calls();
    let migrate = calls.iter().position(|c| c == "db:migrate").unwrap();
    let first_deploy = calls
        .iter()
        .position(|c| c.contains("/deployments/"))
        .unwrap();
    assert!(migrate < first_deploy, "{calls:?}");
    let cm = h2.call("PATCH /api/v1/namespaces/default/configmaps/cache-config");
    assert!(cm.body["data"]["sgcache.yaml"]
        .as_str()
        .unwrap()
        .contains("description"));
}

/// A snapshot of one field, `Shot.sg_status_list`, in `state`, 10 of 50 rows backfilled.
fn one_field(state: &str) -> DbSnapshot {
    DbSnapshot {
        fields: vec![FieldRow {
            entity_type: "Shot".into(),
            field_name: "sg_status_list".into(),
            state: state.into(),
            backfill_done: 10,
            backfill_total: Some(50),
        }],
        ..DbSnapshot::default()
    }
}

#[tokio::test]
async fn backfill_progress_is_reported_and_announced() {
    let mut h = Harness::new();
    *h.db.snapshot.lock().unwrap() = one_field("backfilling");
    let cache = ShotgunCache::test().finalized();
    let mut calls = secrets_ok();
    calls.extend(children());
    calls.push(status_patch(&cache));
    calls.push(event("BackfillStarted"));
    let server = h.serve(calls);
    let action = reconcile(Arc::new(cache), h.ctx.clone()).await.unwrap();
    finished(server).await;
    assert_eq!(events_posted(&h), ["BackfillStarted"]);
    let s = sent_status(&h);
    assert_eq!(
        (s.types[0].backfill_done, s.types[0].backfill_total),
        (10, 50)
    );
    assert_eq!(action, Action::requeue(RESYNC_BACKFILL_YOUNG));
}

/// A backfilling cache is followed: when the database says its backfill progressed, the cache
/// is sent to the controller at once (instead of waiting for the requeue); a ready cache is not.
#[tokio::test]
async fn a_backfill_that_progresses_wakes_its_cache() {
    let mut h = Harness::new();
    *h.db.snapshot.lock().unwrap() = one_field("backfilling");
    *h.db.progressed.lock().unwrap() = true;
    let mut wakes = h.ctx.backfill_wakes.take_receiver().expect("receiver");
    let cache = ShotgunCache::test().finalized();
    let mut calls = secrets_ok();
    calls.extend(children());
    calls.push(status_patch(&cache));
    calls.push(event("BackfillStarted"));
    let server = h.serve(calls);
    reconcile(Arc::new(cache.clone()), h.ctx.clone())
        .await
        .unwrap();
    finished(server).await;
    let woken = tokio::time::timeout(Duration::from_secs(5), wakes.recv())
        .await
        .expect("a wake")
        .expect("the channel is open");
    assert_eq!(woken, ObjectRef::from_obj(&cache));
    let asked = h.call("db:backfill_progressed");
    assert_eq!(asked.body["pending"], 1, "one field left to fill");
    assert!(!h.ctx.backfill_wakes.follows(&cache), "the task ended");

    // Backfilled: nothing is followed.
    let mut h = Harness::new();
    *h.db.snapshot.lock().unwrap() = one_field("ready");
    let cache = ShotgunCache::test().finalized();
    let mut calls = secrets_ok();
    calls.extend(children());
    calls.push(status_patch(&cache));
    let server = h.serve(calls);
    reconcile(Arc::new(cache), h.ctx.clone()).await.unwrap();
    finished(server).await;
    assert!(h.calls().iter().all(|c| c != "db:backfill_progressed"));
}

#[tokio::test]
async fn a_missing_secret_is_a_condition_and_event_not_a_crash() {
    let mut h = Harness::new();
    let cache = ShotgunCache::test().finalized();
    let server = h.serve(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/default/secrets/db",
            Reply::Status(404, "NotFound"),
        ),
        expect(
            Method::GET,
            "/api/v1/namespaces/default/secrets/site",
            Reply::Json(secret_json("site", &[("apiKey", "k")])),
        ),
        event("SecretNotFound"),
        status_patch(&cache),
    ]);
    let action = reconcile(Arc::new(cache), h.ctx.clone())
        .await
        .expect("no error: a user problem");
    finished(server).await;
    assert_eq!(action, Action::requeue(RETRY_INPUTS));
    assert_eq!(events_posted(&h), ["SecretNotFound"]);
    let s = sent_status(&h);
    let d = s.condition("DatabaseReady").unwrap();
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("False", "SecretNotFound")
    );
    assert!(d.message.contains("default/db"), "{}", d.message);
    assert_eq!(s.condition("Ready").unwrap().status, "False");
    assert!(
        !h.calls().iter().any(|c| c.starts_with("db:")),
        "no database step without a URL"
    );
}

#[tokio::test]
async fn an_invalid_spec_is_reported_without_touching_anything() {
    let mut h = Harness::new();
    let cache = ShotgunCache::test()
        .finalized()
        .with_spec(|s| s.site.api_key = None);
    let server = h.serve(vec![event("InvalidSpec"), status_patch(&cache)]);
    reconcile(Arc::new(cache), h.ctx.clone()).await.unwrap();
    finished(server).await;
    let s = sent_status(&h);
    let d = s.condition("DatabaseReady").unwrap();
    assert_eq!(d.reason, "InvalidSpec");
    assert!(
        d.message.contains("site.apiKey is required"),
        "{}",
        d.message
    );
}

#[tokio::test]
async fn a_failed_migration_keeps_the_workers_and_backs_off() {
    let mut h = Harness::new();
    *h.db.migrate.lock().unwrap() = Err(DbError::Migration("column too long".into()));
    let cache = ShotgunCache::test().finalized();
    let mut calls = secrets_ok();
    calls.push(event("MigrationFailed"));
    calls.push(status_patch(&cache));
    let server = h.serve(calls);
    let err = reconcile(Arc::new(cache.clone()), h.ctx.clone())
        .await
        .unwrap_err();
    finished(server).await;
    assert!(
        !h.calls().iter().any(|c| c.contains("/deployments/")),
        "workers unchanged"
    );
    let s = sent_status(&h);
    let c = s.condition("SchemaReady").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "MigrationFailed")
    );
    assert_eq!(
        error_policy(Arc::new(cache), &err, h.ctx.clone()),
        Action::requeue(BACKOFF_MIN)
    );
}

#[tokio::test]
async fn conflicts_and_api_errors_requeue_with_growing_backoff() {
    let mut h = Harness::new();
    let cache = Arc::new(ShotgunCache::test().finalized());
    let mut calls = secrets_ok();
    calls.push(expect(
        Method::PATCH,
        "/api/v1/namespaces/default/configmaps/cache-config",
        Reply::Echo,
    ));
    calls.push(expect(
        Method::PATCH,
        &format!("{DEPLOY}/cache-events"),
        Reply::Status(409, "Conflict"),
    ));
    // Every failure is reported: one Event, then the status.
    calls.push(event("ApplyFailed"));
    calls.push(status_patch(&cache));
    calls.extend(secrets_ok());
    calls.push(expect(
        Method::PATCH,
        "/api/v1/namespaces/default/configmaps/cache-config",
        Reply::Status(500, "InternalError"),
    ));
    // The same reason with a new note (another API error) starts a new Event.
    calls.push(event("ApplyFailed"));
    calls.push(status_patch(&cache));
    let server = h.serve(calls);
    let err = reconcile(cache.clone(), h.ctx.clone()).await.unwrap_err();
    assert_eq!(err.metric_label(), "kube_409");
    assert_eq!(
        error_policy(cache.clone(), &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    let err = reconcile(cache.clone(), h.ctx.clone()).await.unwrap_err();
    assert_eq!(err.metric_label(), "kube_500");
    assert_eq!(
        error_policy(cache.clone(), &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    finished(server).await;
    let failures = |label: &str| {
        h.ctx
            .metrics
            .failures
            .get_or_create(&ErrorLabels {
                error: label.into(),
            })
            .get()
    };
    assert_eq!((failures("kube_409"), failures("kube_500")), (1, 1));
    assert_eq!(h.ctx.metrics.runs.get(), 2);
    assert_eq!(backoff(20), BACKOFF_MAX);
}

/// A `Delete` cleanup first removes the three worker Deployments, then lists the pods left
/// (`pods_left` names, then none).
fn workers_stopped(pods_left: &[&str]) -> Vec<Expect> {
    let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Success"});
    let mut calls: Vec<Expect> = ["cache-events", "cache-scanner", "cache-proxy"]
        .iter()
        .map(|d| {
            expect(
                Method::DELETE,
                &format!("{DEPLOY}/{d}"),
                Reply::Json(gone.clone()),
            )
        })
        .collect();
    let list = |names: &[&str]| {
        let items: Vec<Value> = names
            .iter()
            .map(|n| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": n, "namespace": "default"}}))
            .collect();
        Reply::Json(
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                           "metadata": {}, "items": items}),
        )
    };
    if !pods_left.is_empty() {
        calls.push(expect(Method::GET, PODS, list(pods_left)));
    }
    calls.push(expect(Method::GET, PODS, list(&[])));
    calls
}

fn namespace(terminating: bool) -> Expect {
    let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
    if terminating {
        ns["metadata"]["deletionTimestamp"] = json!("2026-12-06T08:00:00Z");
    }
    expect(Method::GET, "/api/v1/namespaces/default", Reply::Json(ns))
}

fn finalizer_removal(cache: &ShotgunCache) -> Expect {
    let mut done = cache.clone();
    done.metadata.finalizers = None;
    expect(
        Method::PATCH,
        CACHE,
        Reply::Json(serde_json::to_value(done).unwrap()),
    )
}

#[tokio::test]
async fn deletion_with_retain_keeps_the_tables() {
    let mut h = Harness::new();
    let cache = ShotgunCache::test().finalized().deleting();
    assert_eq!(cache.spec.deletion_policy, DeletionPolicy::Retain);
    let server = h.serve(vec![event("CacheRetained"), finalizer_removal(&cache)]);
    reconcile(Arc::new(cache), h.ctx.clone()).await.unwrap();
    finished(server).await;
    assert_eq!(events_posted(&h), ["CacheRetained"]);
    assert!(!h.calls().contains(&"db:drop".to_string()));
    let removal: Value = h.log.lock().unwrap()[1].body.clone();
    assert!(removal.to_string().contains("remove"), "{removal}");
}

#[tokio::test]
async fn deletion_with_delete_drops_the_tables_then_releases() {
    let mut h = Harness::new();
    let cache = ShotgunCache::test()
        .with_spec(|s| s.deletion_policy = DeletionPolicy::Delete)
        .finalized()
        .deleting();
    let mut calls = workers_stopped(&["cache-proxy-1"]);
    calls.extend([
        expect(
            Method::GET,
            "/api/v1/namespaces/default/secrets/db",
            Reply::Json(secret_json(
                "db",
                &[("url", "postgres://cache:pw@db/cache")],
            )),
        ),
        event("CacheDropped"),
        finalizer_removal(&cache),
    ]);
    let server = h.serve(calls);
    reconcile(Arc::new(cache), h.ctx.clone()).await.unwrap();
    finished(server).await;
    let calls = h.calls();
    // The workers are stopped, and their pods gone, before the tables are dropped.
    let pods_gone = calls
        .iter()
        .rposition(|c| c == &format!("GET {PODS}"))
        .expect("pods listed");
    assert!(
        calls[..pods_gone]
            .iter()
            .filter(|c| c.starts_with(&format!("DELETE {DEPLOY}")))
            .count()
            == 3
    );
    let drop = calls
        .iter()
        .position(|c| c == "db:drop")
        .expect("tables dropped");
    assert!(
        pods_gone < drop && drop < calls.len() - 1,
        "workers gone, then the drop, then the finalizer: {calls:?}"
    );
    let schema = crate::resources::default_schema("default", "cache");
    assert_eq!(
        h.call("db:drop").body,
        json!({"url": format!("postgres://cache:pw@db/cache?options[search_path]={schema}"),
               "schema": schema})
    );
    assert_eq!(events_posted(&h), ["CacheDropped"]);
}

#[tokio::test]
async fn an_apply_error_writes_the_status_and_one_event() {
    let mut h = Harness::new();
    let cache = ShotgunCache::test().finalized();
    let mut calls = secrets_ok();
    calls.push(expect(
        Method::PATCH,
        "/api/v1/namespaces/default/configmaps/cache-config",
        Reply::Status(403, "Forbidden"),
    ));
    calls.push(event("ApplyFailed"));
    calls.push(status_patch(&cache));
    let server = h.serve(calls);
    let err = reconcile(Arc::new(cache), h.ctx.clone()).await.unwrap_err();
    finished(server).await;
    assert_eq!(err.metric_label(), "kube_403");
    assert_eq!(events_posted(&h), ["ApplyFailed"]);
    let s = sent_status(&h);
    let w = s.condition("WorkersAvailable").unwrap();
    assert_eq!(
        (w.status.as_str(), w.reason.as_str()),
        ("False", "ApplyFailed")
    );
    assert!(w.message.contains("mock Forbidden"), "{}", w.message);
    assert_eq!(w.observed_generation, Some(1));
    assert_eq!(s.condition("SchemaReady").unwrap().status, "True");
    let r = s.condition("Ready").unwrap();
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "ApplyFailed")
    );
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(s.phase, "Degraded");
}

#[tokio::test]
async fn a_repeated_failure_aggregates_into_one_event() {
    let mut h = Harness::new();
    let cache = Arc::new(ShotgunCache::test().finalized());
    let missing = || {
        vec![
            expect(
                Method::GET,
                "/api/v1/namespaces/default/secrets/db",
                Reply::Status(404, "NotFound"),
            ),
            expect(
                Method::GET,
                "/api/v1/namespaces/default/secrets/site",
                Reply::Json(secret_json("site", &[("apiKey", "k")])),
            ),
        ]
    };
    let mut calls = missing();
    calls.push(event("SecretNotFound"));
    calls.push(status_patch(&cache));
    calls.extend(missing());
    calls.push(event_repeat());
    calls.push(status_patch(&cache));
    let server = h.serve(calls);
    for _ in 0..2 {
        reconcile(cache.clone(), h.ctx.clone()).await.unwrap();
    }
    finished(server).await;
    let log = h.log.lock().unwrap();
    let repeat = log
        .iter()
        .find(|c| c.what.starts_with(&format!("PATCH {EVENTS}/")))
        .expect("the repeat patched the first Event");
    assert_eq!(repeat.body["series"]["count"], 2, "{}", repeat.body);
    assert_eq!(repeat.body["reason"], "SecretNotFound");
    assert!(repeat.body["regarding"]["resourceVersion"].is_null());
}

#[tokio::test]
async fn backfill_started_is_announced_after_an_unknown_backfilled() {
    let mut h = Harness::new();
    *h.db.snapshot.lock().unwrap() = DbSnapshot {
        trust: Vec::new(),
        reads: None,
        fields: vec![FieldRow {
            entity_type: "Shot".into(),
            field_name: "code".into(),
            state: "pending".into(),
            backfill_done: 0,
            backfill_total: None,
        }],
        events: None,
    };
    let mut cache = ShotgunCache::test().finalized();
    // The previous reconcile stopped early: Backfilled was never checked.
    let mut before = ShotgunCacheStatus::default();
    before.conditions.push(crate::crd::Condition {
        type_: "Backfilled".into(),
        status: "Unknown".into(),
        reason: "NotChecked".into(),
        ..Default::default()
    });
    cache.status = Some(before);
    let mut calls = secrets_ok();
    calls.extend(children());
    calls.push(status_patch(&cache));
    calls.push(event("BackfillStarted"));
    let server = h.serve(calls);
    reconcile(Arc::new(cache), h.ctx.clone()).await.unwrap();
    finished(server).await;
    assert_eq!(events_posted(&h), ["BackfillStarted"]);
}

fn deleting_with_delete(asked_ago: chrono::Duration) -> ShotgunCache {
    let mut cache = ShotgunCache::test()
        .with_spec(|s| s.deletion_policy = DeletionPolicy::Delete)
        .finalized()
        .deleting();
    let asked = chrono::Utc::now() - asked_ago;
    let ts = asked.to_rfc3339().parse().unwrap();
    cache.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts));
    cache
}

#[tokio::test]
async fn a_cleanup_that_cannot_reach_the_database_retries_and_says_why() {
    let mut h = Harness::new();
    let cache = deleting_with_delete(chrono::Duration::seconds(90));
    let mut calls = workers_stopped(&[]);
    calls.extend([
        expect(
            Method::GET,
            "/api/v1/namespaces/default/secrets/db",
            Reply::Status(404, "NotFound"),
        ),
        namespace(false),
        event("CleanupFailed"),
        status_patch(&cache),
    ]);
    let server = h.serve(calls);
    let err = reconcile(Arc::new(cache), h.ctx.clone()).await.unwrap_err();
    finished(server).await;
    assert_eq!(err.metric_label(), "DatabaseUnreachable");
    assert!(!h.calls().contains(&"db:drop".to_string()));
    assert_eq!(events_posted(&h), ["CleanupFailed"]);
    let s = sent_status(&h);
    assert_eq!(s.phase, "Deleting");
    let r = s.condition("Ready").unwrap();
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "CleanupFailed")
    );
    assert!(r.message.contains("SecretNotFound"), "{}", r.message);
}

#[tokio::test]
async fn a_cleanup_failing_past_the_limit_releases_the_finalizer_with_a_warning() {
    let mut h = Harness::new();
    let ago = chrono::Duration::from_std(crate::cleanup::CLEANUP_GIVE_UP).unwrap()
        + chrono::Duration::seconds(5);
    let cache = deleting_with_delete(ago);
    let mut calls = workers_stopped(&[]);
    calls.extend([
        expect(
            Method::GET,
            "/api/v1/namespaces/default/secrets/db",
            Reply::Status(404, "NotFound"),
        ),
        namespace(false),
        event("CleanupAbandoned"),
        finalizer_removal(&cache),
    ]);
    let server = h.serve(calls);
    reconcile(Arc::new(cache), h.ctx.clone()).await.unwrap();
    finished(server).await;
    assert_eq!(events_posted(&h), ["CleanupAbandoned"]);
    let log = h.log.lock().unwrap();
    let ev = log
        .iter()
        .find(|c| c.what == format!("POST {EVENTS}"))
        .unwrap();
    assert_eq!(ev.body["type"], "Warning");
    let note = ev.body["note"].as_str().unwrap();
    assert!(
        note.contains("left in the database") && note.contains("Shot, Asset"),
        "{note}"
    );
    assert!(log.last().unwrap().body.to_string().contains("remove"));
}

#[tokio::test]
async fn in_a_namespace_being_deleted_a_failing_cleanup_gives_up_within_a_minute() {
    let mut h = Harness::new();
    let ago = chrono::Duration::from_std(crate::cleanup::NAMESPACE_GIVE_UP).unwrap()
        + chrono::Duration::seconds(5);
    assert!(crate::cleanup::NAMESPACE_GIVE_UP < crate::cleanup::CLEANUP_GIVE_UP);
    let cache = deleting_with_delete(ago);
    let mut calls = workers_stopped(&[]);
    calls.extend([
        expect(
            Method::GET,
            "/api/v1/namespaces/default/secrets/db",
            Reply::Status(404, "NotFound"),
        ),
        namespace(true),
        event("CleanupAbandoned"),
        finalizer_removal(&cache),
    ]);
    let server = h.serve(calls);
    reconcile(Arc::new(cache), h.ctx.clone()).await.unwrap();
    finished(server).await;
    assert_eq!(events_posted(&h), ["CleanupAbandoned"]);
    assert_eq!(h.ctx.metrics.cleanups_abandoned.get(), 1);
    assert!(h
        .ctx
        .metrics
        .encode()
        .contains("cleanups_abandoned_total 1"));
}

#[tokio::test]
async fn a_delete_whose_secret_went_first_drops_with_the_url_of_the_last_reconcile() {
    let mut h = Harness::new();
    let cache = deleting_with_delete(chrono::Duration::seconds(5));
    h.ctx.remember_database(
        &cache,
        "postgres://cache:pw@db/cache?options[search_path]=s",
    );
    let mut calls = workers_stopped(&[]);
    calls.extend([
        expect(
            Method::GET,
            "/api/v1/namespaces/default/secrets/db",
            Reply::Status(404, "NotFound"),
        ),
        event("CacheDropped"),
        finalizer_removal(&cache),
    ]);
    let server = h.serve(calls);
    reconcile(Arc::new(cache.clone()), h.ctx.clone())
        .await
        .unwrap();
    finished(server).await;
    assert_eq!(
        h.call("db:drop").body["url"],
        "postgres://cache:pw@db/cache?options[search_path]=s"
    );
    assert_eq!(
        h.ctx.remembered_database(&cache),
        None,
        "forgotten once dropped"
    );
}

#[test]
fn a_young_backfill_is_polled_every_second_an_old_one_every_30_s() {
    let now = chrono::Utc::now();
    let started = |ago: i64| crate::crd::Condition {
        type_: "Backfilled".into(),
        status: "False".into(),
        reason: "Backfilling".into(),
        message: String::new(),
        observed_generation: None,
        last_transition_time: Some(
            (now - chrono::Duration::seconds(ago))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
    };
    assert_eq!(backfill_resync(&started(2), now), RESYNC_BACKFILL_YOUNG);
    assert_eq!(backfill_resync(&started(600), now), RESYNC_BACKFILLING);
}

/// The cache as a new operator process finds it: the status the last reconcile wrote.
fn with_status(cache: &ShotgunCache, status: ShotgunCacheStatus) -> ShotgunCache {
    let mut c = cache.clone();
    c.status = Some(status);
    c
}

#[tokio::test]
async fn a_restarted_operator_does_not_repeat_a_failure_the_status_reports() {
    let cache = ShotgunCache::test().finalized();
    let missing = || {
        vec![
            expect(
                Method::GET,
                "/api/v1/namespaces/default/secrets/db",
                Reply::Status(404, "NotFound"),
            ),
            expect(
                Method::GET,
                "/api/v1/namespaces/default/secrets/site",
                Reply::Json(secret_json("site", &[("apiKey", "k")])),
            ),
        ]
    };
    let mut first = Harness::new();
    let mut calls = missing();
    calls.push(event("SecretNotFound"));
    calls.push(status_patch(&cache));
    let server = first.serve(calls);
    reconcile(Arc::new(cache.clone()), first.ctx.clone())
        .await
        .unwrap();
    finished(server).await;
    assert_eq!(events_posted(&first), ["SecretNotFound"]);

    // A new process (its own Event publisher, nothing in memory) reads the stored status.
    let stored = with_status(&cache, sent_status(&first));
    let mut second = Harness::new();
    let mut calls = missing();
    calls.push(status_patch(&stored));
    let server = second.serve(calls);
    reconcile(Arc::new(stored.clone()), second.ctx.clone())
        .await
        .unwrap();
    finished(server).await;
    assert!(events_posted(&second).is_empty(), "announced already");

    // Another failure than the one reported is news.
    let mut third = Harness::new();
    let mut calls = vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/default/secrets/db",
            Reply::Json(secret_json("db", &[("other", "x")])),
        ),
        expect(
            Method::GET,
            "/api/v1/namespaces/default/secrets/site",
            Reply::Json(secret_json("site", &[("apiKey", "k")])),
        ),
    ];
    calls.push(event("SecretKeyNotFound"));
    calls.push(status_patch(&stored));
    let server = third.serve(calls);
    reconcile(Arc::new(stored), third.ctx.clone())
        .await
        .unwrap();
    finished(server).await;
    assert_eq!(events_posted(&third).len(), 1);
}

#[tokio::test]
async fn coverage_is_announced_once_per_transition_not_per_process() {
    let cache = ShotgunCache::test().finalized();
    let degraded = MigrationOutcome {
        uncovered: vec![
            "Shot.sg_sequence -> Sequence (not listed; implyLinkTargets is false)".into(),
        ],
        ..MigrationOutcome::default()
    };
    let run = |cache: ShotgunCache, outcome: MigrationOutcome, events: Vec<&'static str>| async move {
        let mut h = Harness::new();
        *h.db.migrate.lock().unwrap() = Ok(outcome);
        let mut calls = secrets_ok();
        calls.extend(children());
        calls.push(status_patch(&cache));
        calls.extend(events.iter().map(|r| event(r)));
        let server = h.serve(calls);
        reconcile(Arc::new(cache), h.ctx.clone()).await.unwrap();
        finished(server).await;
        h
    };
    let h = run(cache.clone(), degraded.clone(), vec!["CoverageDegraded"]).await;
    assert_eq!(events_posted(&h), ["CoverageDegraded"]);
    let status = sent_status(&h);
    let c = status.condition("Coverage").unwrap();
    assert_eq!(c.status, "False");
    assert!(
        c.message.contains("Shot.sg_sequence -> Sequence"),
        "{}",
        c.message
    );

    // Restarted: the stored status says it already; nothing is published.
    let stored = with_status(&cache, status.clone());
    let h = run(stored.clone(), degraded.clone(), vec![]).await;
    assert!(events_posted(&h).is_empty(), "{:?}", events_posted(&h));

    // Fixed, then degraded again: a new transition, announced again.
    let h = run(stored, MigrationOutcome::default(), vec![]).await;
    let fixed = sent_status(&h);
    assert_eq!(fixed.condition("Coverage").unwrap().status, "True");
    let h = run(
        with_status(&cache, fixed),
        degraded,
        vec!["CoverageDegraded"],
    )
    .await;
    assert_eq!(events_posted(&h), ["CoverageDegraded"]);
}
