//! End to end: the real `reconcile` with the real database step (`SqlCacheDatabase`) against
//! PostgreSQL and the test Shotgun site, the Kubernetes side mocked. A field added to the spec
//! is migrated, shows as pending in the status and rolls the workers (new config hash); the
//! real scanner backfills it, and the next reconcile reports it ready.

mod common;

use std::sync::Arc;

use common::{context, Api, PgDb};
use kube::api::ObjectMeta;
use kube::runtime::controller::Action;
use sgcache::spec::{SecretKeyRef, ValueSource};
use sgcache::ShotgunCacheSpec;
use sgcache_operator::crd::{condition, FINALIZER};
use sgcache_operator::reconcile::{reconcile, Context, RESYNC, RESYNC_BACKFILLING};
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
    let yaml = [
        format!("site:\n  url: {site_url}\n  scriptName: {{value: sgcache_test}}"),
        "database: {}\nentities:".into(),
        format!("  - type: Shot\n    fields: [{shot_fields}]"),
        "  - type: Asset\n    fields: [code]\ndeletionPolicy: Delete\n".into(),
    ]
    .join("\n");
    let mut spec = ShotgunCacheSpec::from_yaml(&yaml, "e2e").expect("valid spec");
    spec.site.api_key = secret_ref("site", "apiKey");
    spec.database.url = secret_ref("db", "url");
    let mut c = ShotgunCache::new("cache", ShotgunCacheResourceSpec(spec));
    c.metadata = ObjectMeta {
        name: Some("cache".into()),
        namespace: Some("default".into()),
        uid: Some("6e0c2f1a-0000-4000-8000-0000000000e2".into()),
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
    assert!(
        st.unexpected.is_empty(),
        "unexpected calls {:?}",
        st.unexpected
    );
    let statuses = st.statuses();
    assert_eq!(statuses.len(), 1, "one status patch per reconcile");
    (statuses.into_iter().next().unwrap(), action)
}

/// The real scanner's one-shot full scan (`sgcache-worker scanner --full`), in-process. The
/// workers get the Secrets' values as plain values (as the pods get them by env).
async fn full_scan(c: &ShotgunCache, db_url: &str) {
    let mut spec = c.spec.0.clone();
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
    let pg = PgDb::create("op_e2e").await;
    let sim = shotgun_sim::start(
        shotgun_sim::SimConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("test site");
    let (ctx, api) = context(Arc::new(SqlCacheDatabase));
    {
        let mut st = api.lock().unwrap();
        let pairs = |k: &str, v: &str| [(k.to_string(), v.to_string())].into();
        st.secrets.insert("db".into(), pairs("url", &pg.url));
        st.secrets
            .insert("site".into(), pairs("apiKey", "test_key"));
    }

    // 1. A new cache: migrated, every field pending until the first scan.
    let v1 = cache(&sim.url(), "code, sg_status_list", 1);
    let (s, action) = run(&ctx, &api, v1.clone(), None).await;
    assert_eq!(
        action,
        Action::requeue(RESYNC_BACKFILLING),
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
    assert!(pg.tables().await.iter().any(|t| t == "_sgcache_fields"));

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
    assert_eq!(action, Action::requeue(RESYNC_BACKFILLING));
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
    assert!(events.lag_seconds < 60, "written moments ago: {events:?}");

    sim.shutdown().await;
    pg.drop().await;
}
