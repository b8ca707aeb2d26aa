//! End to end: the real `reconcile` with the real database step (`SqlCacheDatabase`) against
//! PostgreSQL and the test Shotgun site, the Kubernetes side a mock API server enforcing the
//! chart's RBAC as a real one does (server-side apply of a missing object needs `create`).
//! A field added to the spec is migrated, shows as pending in the status and rolls the workers
//! (new config hash); the real scanner backfills it, and the next reconcile reports it ready.
//! Deleting with `Retain` keeps the tables; a cache created again and deleted with `Delete`
//! drops them.

mod common;

use std::sync::Arc;

use common::{context, Api, PgDb};
use kube::api::ObjectMeta;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use sgcache::spec::{SecretKeyRef, ValueSource};
use sgcache::ShotgunCacheSpec;
use sgcache_operator::crd::{condition, FINALIZER};
use sgcache_operator::reconcile::{reconcile, Context, RESYNC, RESYNC_BACKFILL_YOUNG};
use sgcache_operator::resources::{default_schema, with_defaults};
use sgcache_operator::sqldb::SqlCacheDatabase;
use sgcache_operator::{ShotgunCache, ShotgunCacheResourceSpec, ShotgunCacheStatus};
use sgcache_worker::scanner::ScannerArgs;
use tokio_util::sync::CancellationToken;

fn secret_ref(name: &str, key: &str) -> Option<ValueSource> {
    Some(ValueSource {
        secret_key_ref: Some(SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }),
        ..ValueSource::default()
    })
}

/// `default/cache` for the sim; the site key and database URL come from Secrets.
fn cache(site_url: &str, shot_fields: &str, generation: i64) -> ShotgunCache {
    cache_with(site_url, shot_fields, generation, "Delete", "0000000000e2")
}

fn cache_with(
    site_url: &str,
    shot_fields: &str,
    generation: i64,
    policy: &str,
    uid_tail: &str,
) -> ShotgunCache {
    named("cache", site_url, shot_fields, generation, policy, uid_tail)
}

/// `default/<name>`, its schema left to the operator's default.
fn named(
    name: &str,
    site_url: &str,
    shot_fields: &str,
    generation: i64,
    policy: &str,
    uid_tail: &str,
) -> ShotgunCache {
    let yaml = [
        format!("site:\n  url: {site_url}\n  scriptName: {{value: sgcache_test}}"),
        "database: {}\nentities:".into(),
        format!("  - type: Shot\n    fields: [{shot_fields}]"),
        format!("  - type: Asset\n    fields: [code]\ndeletionPolicy: {policy}\n"),
    ]
    .join("\n");
    let mut spec = ShotgunCacheSpec::from_yaml(&yaml, "e2e").expect("valid spec");
    spec.site.api_key = secret_ref("site", "apiKey");
    spec.database.url = secret_ref("db", "url");
    let mut c = ShotgunCache::new(name, ShotgunCacheResourceSpec(spec));
    c.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some("default".into()),
        uid: Some(format!("6e0c2f1a-0000-4000-8000-{uid_tail}")),
        generation: Some(generation),
        finalizers: Some(vec![FINALIZER.into()]),
        ..ObjectMeta::default()
    };
    c
}

/// One reconcile; returns the status it patched and the requeue delay.
async fn run(
    ctx: &Arc<Context>,
    api: &Api,
    mut c: ShotgunCache,
    previous: Option<ShotgunCacheStatus>,
) -> (ShotgunCacheStatus, Action) {
    c.status = previous;
    {
        let mut st = api.lock().unwrap();
        // As on a real API server every write bumps it; Events name the object at a version.
        st.resource_version += 1;
        c.metadata.resource_version = Some(st.resource_version.to_string());
        st.cache = Some(c.clone());
        st.clear();
    }
    let action = reconcile(Arc::new(c), ctx.clone())
        .await
        .expect("reconcile succeeds");
    let st = api.lock().unwrap();
    st.assert_clean();
    let statuses = st.statuses();
    assert_eq!(statuses.len(), 1, "one status patch per reconcile");
    (statuses.into_iter().next().unwrap(), action)
}

/// The real scanner's one-shot full scan (`sgcache-worker scanner --full`), in-process. The
/// workers get the Secrets' values as plain values (as the pods get them by env).
async fn full_scan(c: &ShotgunCache, db_url: &str) {
    // As the pod reads it from the ConfigMap: with the schema the operator gave the cache.
    let mut spec = with_defaults(c).spec.0;
    spec.site.api_key = Some(ValueSource {
        value: Some("test_key".into()),
        ..ValueSource::default()
    });
    spec.database.url = Some(ValueSource {
        value: Some(db_url.into()),
        ..ValueSource::default()
    });
    let args = ScannerArgs {
        full: true,
        ..ScannerArgs::default()
    };
    sgcache_worker::scanner::run(&spec, args, CancellationToken::new())
        .await
        .expect("full scan");
}

/// Deletes `c` (as `kubectl delete` does: a deletion timestamp) and runs the finalizer.
async fn delete(ctx: &Arc<Context>, api: &Api, mut c: ShotgunCache) {
    c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    {
        let mut st = api.lock().unwrap();
        st.cache = Some(c.clone());
        st.clear();
    }
    let action = reconcile(Arc::new(c.clone()), ctx.clone())
        .await
        .expect("cleanup succeeds");
    assert_eq!(action, Action::await_change());
    let st = api.lock().unwrap();
    st.assert_clean();
    assert!(st.cache.is_none(), "finalizer removed: the object is gone");
    let prefix = format!("/{}", c.name_any());
    assert!(
        !st.objects
            .keys()
            .any(|k| k.contains(&format!("{prefix}-")) || k.ends_with(&prefix)),
        "owned objects collected: {:?}",
        st.objects.keys()
    );
}

/// A fresh database, the test site, and the operator's context with the two Secrets the
/// caches name (`db/url`, `site/apiKey`) on the mock API server.
async fn setup(db_prefix: &str) -> (PgDb, shotgun_sim::SimHandle, Arc<Context>, Api) {
    let pg = PgDb::create(db_prefix).await;
    let sim = shotgun_sim::start(
        shotgun_sim::SimConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("test site");
    // These tests change the site between reconciles a moment apart: every migration reads
    // the site's schema (the operator's default reuses one read for 30 s).
    let db = SqlCacheDatabase::reusing_schema_for(std::time::Duration::ZERO);
    let (ctx, api) = context(Arc::new(db));
    {
        let mut st = api.lock().unwrap();
        let pairs = |k: &str, v: &str| [(k.to_string(), v.to_string())].into();
        st.secrets.insert("db".into(), pairs("url", &pg.url));
        st.secrets
            .insert("site".into(), pairs("apiKey", "test_key"));
    }
    (pg, sim, ctx, api)
}

fn cond<'a>(s: &'a ShotgunCacheStatus, t: &str) -> (&'a str, &'a str) {
    let c = s.condition(t).unwrap_or_else(|| panic!("no condition {t}"));
    (c.status.as_str(), c.reason.as_str())
}

fn type_counts(s: &ShotgunCacheStatus, ty: &str) -> (i64, i64, i64) {
    let t = s.types.iter().find(|t| t.entity_type == ty).expect("type");
    (t.pending + t.backfilling, t.ready, t.dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_added_to_the_spec_goes_pending_then_ready_after_the_scanner() {
    let (pg, sim, ctx, api) = setup("op_e2e").await;

    // 1. A new cache: migrated, every field pending until the first scan.
    let v1 = cache(&sim.url(), "code, sg_status_list", 1);
    let (s, action) = run(&ctx, &api, v1.clone(), None).await;
    assert_eq!(
        api.lock().unwrap().verbs_on("configmaps"),
        ["create"],
        "applying a missing object is a create"
    );
    assert_eq!(
        action,
        Action::requeue(RESYNC_BACKFILL_YOUNG),
        "polls while backfilling"
    );
    assert_eq!(cond(&s, condition::DATABASE_READY), ("True", "Connected"));
    assert_eq!(cond(&s, condition::SCHEMA_READY), ("True", "Migrated"));
    assert_eq!(cond(&s, condition::BACKFILLED), ("False", "Backfilling"));
    assert_eq!(s.phase, "Backfilling");
    assert_eq!(s.fields_ready, 0);
    assert!(
        s.events.is_none(),
        "no worker has recorded an event position yet"
    );
    assert!(s.fields_total >= 3, "Shot code+status, Asset code: {s:?}");
    assert!(api
        .lock()
        .unwrap()
        .event_reasons()
        .contains(&"SchemaChanged".to_string()));
    let schema = default_schema("default", "cache");
    assert!(pg
        .tables_in(&schema)
        .await
        .iter()
        .any(|t| t == "_sgcache_fields"));
    assert!(
        pg.tables().await.is_empty(),
        "nothing in public: the cache has its own schema"
    );

    full_scan(&v1, &pg.url).await;
    let (s, action) = run(&ctx, &api, v1.clone(), Some(s)).await;
    assert_eq!(action, Action::requeue(RESYNC));
    assert_eq!(cond(&s, condition::BACKFILLED), ("True", "AllFieldsReady"));
    assert_eq!(cond(&s, condition::READY), ("True", "Ready"));
    assert_eq!(s.phase, "Ready");
    assert_eq!(s.fields_ready, s.fields_total);
    let total_before = s.fields_total;
    let hash_before = api.lock().unwrap().proxy_hash();
    assert_eq!(s.config_hash.as_deref(), Some(hash_before.as_str()));
    assert!(api
        .lock()
        .unwrap()
        .event_reasons()
        .contains(&"BackfillFinished".into()));

    // 2. The spec gains Shot.description: migration, the field pending, the workers rolled.
    let v2 = cache(&sim.url(), "code, sg_status_list, description", 2);
    let (s, action) = run(&ctx, &api, v2.clone(), Some(s)).await;
    assert_eq!(action, Action::requeue(RESYNC_BACKFILL_YOUNG));
    {
        let st = api.lock().unwrap();
        let notes = st.event_notes("SchemaChanged").join("; ");
        assert!(
            notes.contains("description"),
            "schema change published: {notes}"
        );
        assert!(st.event_reasons().contains(&"BackfillStarted".into()));
        assert_ne!(
            st.proxy_hash(),
            hash_before,
            "a new config hash rolls the pods"
        );
        assert_eq!(s.config_hash.as_deref(), Some(st.proxy_hash().as_str()));
    }
    assert_eq!(s.observed_generation, Some(2));
    assert_eq!(s.fields_total, total_before + 1);
    assert_eq!(s.fields_ready, total_before);
    assert_eq!(
        type_counts(&s, "Shot").0,
        1,
        "description waits for its backfill"
    );
    assert_eq!(cond(&s, condition::BACKFILLED), ("False", "Backfilling"));
    assert_eq!(cond(&s, condition::READY).0, "False");
    assert_eq!(s.phase, "Backfilling");

    // 3. The scanner backfills it; the next reconcile reports every field ready.
    full_scan(&v2, &pg.url).await;
    let (s, action) = run(&ctx, &api, v2.clone(), Some(s)).await;
    assert_eq!(action, Action::requeue(RESYNC));
    assert_eq!(s.fields_ready, total_before + 1);
    assert_eq!(s.fields_ready, s.fields_total);
    assert_eq!(s.fields_summary, format!("{0}/{0}", total_before + 1));
    let (waiting, ready, dropped) = type_counts(&s, "Shot");
    assert_eq!((waiting, dropped), (0, 0));
    assert!(ready >= 3, "code, sg_status_list, description ready");
    assert_eq!(cond(&s, condition::BACKFILLED), ("True", "AllFieldsReady"));
    assert_eq!(cond(&s, condition::READY), ("True", "Ready"));
    {
        let st = api.lock().unwrap();
        assert!(st.event_reasons().contains(&"BackfillFinished".into()));
        assert!(
            st.event_notes("SchemaChanged").is_empty(),
            "nothing left to migrate"
        );
    }
    // The scanner recorded the follower's starting position; its age comes from PostgreSQL.
    let events = s
        .events
        .as_ref()
        .expect("the scanner set the event position");
    assert_eq!(events.backlog, 0);
    assert_eq!(
        (events.lag.as_str(), events.lag_seconds),
        ("0s", 0),
        "no site event after the position: caught up"
    );
    assert_eq!(api.lock().unwrap().verbs_on("configmaps"), ["patch"]);

    // 4. Deleted with Retain: the finalizer goes, the tables stay.
    let tables = pg.tables_in(&schema).await;
    let retained = cache_with(
        &sim.url(),
        "code, sg_status_list, description",
        3,
        "Retain",
        "0000000000e2",
    );
    delete(&ctx, &api, retained).await;
    assert_eq!(api.lock().unwrap().event_reasons(), ["CacheRetained"]);
    assert_eq!(
        pg.tables_in(&schema).await,
        tables,
        "Retain keeps every table"
    );

    // 5. Created again over the kept tables (every child created anew), then deleted with
    //    Delete: every table goes.
    let again = cache_with(
        &sim.url(),
        "code, sg_status_list, description",
        1,
        "Delete",
        "0000000000e3",
    );
    let (s, _) = run(&ctx, &api, again.clone(), None).await;
    assert_eq!(cond(&s, condition::SCHEMA_READY), ("True", "Migrated"));
    assert_eq!(api.lock().unwrap().verbs_on("deployments"), ["create"; 3]);
    delete(&ctx, &api, again).await;
    assert_eq!(api.lock().unwrap().event_reasons(), ["CacheDropped"]);
    assert!(
        !pg.schema_exists(&schema).await,
        "Delete drops the cache's schema whole"
    );

    sim.shutdown().await;
    pg.drop().await;
}

/// Two ShotgunCaches on one PostgreSQL database: each migrates, backfills and is served from
/// its own schema; deleting one with `Delete` drops its schema only, the other (`Retain`)
/// keeps everything, and neither marks the other's fields dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_caches_on_one_database_never_touch_each_other() {
    let (pg, sim, ctx, api) = setup("op_e2e_two").await;
    // Different fields of the same type: each would mark the other's dropped if they shared.
    let a = named(
        "alpha",
        &sim.url(),
        "code, sg_status_list",
        1,
        "Retain",
        "00000000a001",
    );
    let b = named(
        "beta",
        &sim.url(),
        "code, description",
        1,
        "Delete",
        "00000000b002",
    );
    let (sa, sb) = (
        default_schema("default", "alpha"),
        default_schema("default", "beta"),
    );

    run(&ctx, &api, a.clone(), None).await;
    run(&ctx, &api, b.clone(), None).await;
    full_scan(&a, &pg.url).await;
    full_scan(&b, &pg.url).await;
    let (status_a, _) = run(&ctx, &api, a.clone(), None).await;
    let (status_b, _) = run(&ctx, &api, b.clone(), None).await;
    for s in [&status_a, &status_b] {
        assert_eq!(cond(s, condition::READY), ("True", "Ready"), "{s:?}");
        assert_eq!(
            type_counts(s, "Shot").2,
            0,
            "no field of the other marked dropped"
        );
    }
    let tables_a = pg.tables_in(&sa).await;
    let tables_b = pg.tables_in(&sb).await;
    for t in [
        "_sgcache_fields",
        "_sgcache_events",
        "_sgcache_scans",
        "shot",
        "asset",
    ] {
        assert!(
            tables_a.contains(&t.to_string()),
            "{t} in {sa}: {tables_a:?}"
        );
        assert!(
            tables_b.contains(&t.to_string()),
            "{t} in {sb}: {tables_b:?}"
        );
    }
    assert!(pg.tables().await.is_empty(), "nothing in public");
    assert_eq!(
        pg.function_schemas("_sgcache_notify_change").await,
        {
            let mut both = vec![sa.clone(), sb.clone()];
            both.sort();
            both
        },
        "each schema has its own notify function"
    );
    // A reconcile of one does not flip the other (the bug: fields dropped and revived).
    let (again_a, _) = run(&ctx, &api, a.clone(), Some(status_a.clone())).await;
    assert!(api.lock().unwrap().event_notes("SchemaChanged").is_empty());
    assert_eq!(again_a.fields_summary, status_a.fields_summary);

    delete(&ctx, &api, b).await;
    assert!(!pg.schema_exists(&sb).await, "beta's schema dropped");
    assert_eq!(pg.tables_in(&sa).await, tables_a, "alpha untouched");
    assert_eq!(
        pg.function_schemas("_sgcache_notify_change").await,
        std::slice::from_ref(&sa)
    );
    let (after, _) = run(&ctx, &api, a.clone(), Some(again_a)).await;
    assert_eq!(cond(&after, condition::READY), ("True", "Ready"));

    delete(&ctx, &api, a).await;
    assert_eq!(
        pg.tables_in(&sa).await,
        tables_a,
        "Retain keeps alpha's schema"
    );

    sim.shutdown().await;
    pg.drop().await;
}

/// A field the spec names is deleted on the site: the next reconcile drops it (reads of it go
/// to the site), says so in `SiteSchemaInSync` and a `SiteSchemaDrift` Event, and the cache
/// stays Ready; revived on the site, the next reconcile brings it back (pending, then ready).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_deleted_on_the_site_is_drift_not_a_failed_migration() {
    let (pg, sim, ctx, api) = setup("op_drift").await;
    let site = sgcache::site::SiteClient::new(sgcache::spec::SiteConnection {
        url: sim.url(),
        script_name: "sgcache_test".into(),
        api_key: "test_key".into(),
        timeout: std::time::Duration::from_secs(10),
    })
    .unwrap();
    let created = site
        .call(
            "schema_field_create",
            serde_json::json!({"type": "Shot", "data_type": "text",
                "properties": [{"property_name": "name", "value": "E2E Note"}]}),
        )
        .await
        .expect("field created");
    assert_eq!(created, "sg_e2e_note");
    let c = cache(&sim.url(), "code, sg_e2e_note", 1);
    let (s, _) = run(&ctx, &api, c.clone(), None).await;
    full_scan(&c, &pg.url).await;
    let (s, _) = run(&ctx, &api, c.clone(), Some(s)).await;
    assert_eq!(cond(&s, condition::READY), ("True", "Ready"));
    assert_eq!(cond(&s, condition::SITE_SCHEMA_IN_SYNC), ("True", "InSync"));

    let field = serde_json::json!({"type": "Shot", "field_name": "sg_e2e_note"});
    site.call("schema_field_delete", field.clone())
        .await
        .expect("field deleted");
    let (s, _) = run(&ctx, &api, c.clone(), Some(s)).await;
    assert_eq!(
        cond(&s, condition::SITE_SCHEMA_IN_SYNC),
        ("False", "DeletedOnSite")
    );
    assert_eq!(cond(&s, condition::SCHEMA_READY), ("True", "Migrated"));
    assert_eq!(cond(&s, condition::READY), ("True", "Ready"));
    assert_eq!(type_counts(&s, "Shot").2, 1, "the deleted field is dropped");
    let drift = api.lock().unwrap().event_notes("SiteSchemaDrift");
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert!(drift[0].contains("Shot.sg_e2e_note"), "{drift:?}");

    site.call("schema_field_revive", field)
        .await
        .expect("field revived");
    let (s, _) = run(&ctx, &api, c.clone(), Some(s)).await;
    assert_eq!(cond(&s, condition::SITE_SCHEMA_IN_SYNC), ("True", "InSync"));
    assert_eq!(type_counts(&s, "Shot").0, 1, "revived: pending again");
    full_scan(&c, &pg.url).await;
    let (s, _) = run(&ctx, &api, c.clone(), Some(s)).await;
    assert_eq!(cond(&s, condition::READY), ("True", "Ready"));
    assert_eq!(type_counts(&s, "Shot"), (0, 2, 0));

    sim.shutdown().await;
    pg.drop().await;
}
