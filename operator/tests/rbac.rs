//! The chart's RBAC against the mock API server that enforces it (tests/common/rbac.rs): what
//! the reconcile does is allowed, nothing more is granted than it uses, and the enforcement is
//! real — the rules the chart had before (`patch` only for applied objects) are refused with
//! the 403 a real API server gives, and the status and one Event say so.

mod common;

use std::sync::Arc;

use common::rbac::{attributes, Attributes, Rbac};
use common::{context, Api};
use futures::future::BoxFuture;
use http::Method;
use kube::api::ObjectMeta;
use sgcache::ShotgunCacheSpec;
use sgcache_operator::crd::FINALIZER;
use sgcache_operator::db::{
    CacheDatabase, Connection, DbError, DbSnapshot, FieldRow, MigrationOutcome,
};
use sgcache_operator::reconcile::reconcile;
use sgcache_operator::{ShotgunCache, ShotgunCacheResourceSpec};

/// A database where every step succeeds and one field is ready.
struct ReadyDb;

impl CacheDatabase for ReadyDb {
    fn migrate<'a>(
        &'a self,
        _: &'a Connection,
        _: &'a ShotgunCacheSpec,
    ) -> BoxFuture<'a, Result<MigrationOutcome, DbError>> {
        Box::pin(async { Ok(MigrationOutcome::default()) })
    }
    fn snapshot<'a>(&'a self, _: &'a Connection) -> BoxFuture<'a, Result<DbSnapshot, DbError>> {
        let field = FieldRow {
            entity_type: "Shot".into(),
            field_name: "code".into(),
            state: "ready".into(),
            backfill_done: 0,
            backfill_total: None,
        };
        Box::pin(async move {
            Ok(DbSnapshot {
                trust: Vec::new(),
                reads: None,
                fields: vec![field],
                events: None,
            })
        })
    }
    fn backfill_progressed<'a>(
        &'a self,
        _: &'a Connection,
        _: usize,
        _: std::time::Duration,
    ) -> BoxFuture<'a, Result<bool, DbError>> {
        Box::pin(async { Ok(false) })
    }
    fn drop_cache<'a>(&'a self, _: &'a Connection) -> BoxFuture<'a, Result<(), DbError>> {
        Box::pin(async { Ok(()) })
    }
}

const SPEC: &str = r#"
site:
  url: http://127.0.0.1:9
  scriptName: {value: sgcache}
  apiKey: {secretKeyRef: {name: site, key: apiKey}}
database:
  url: {secretKeyRef: {name: db, key: url}}
entities:
  - type: Shot
    fields: [code]
workers:
  proxy: {replicas: 2}
"#;

fn cache() -> ShotgunCache {
    let spec = ShotgunCacheSpec::from_yaml(SPEC, "rbac").expect("valid spec");
    let mut c = ShotgunCache::new("studio", ShotgunCacheResourceSpec(spec));
    c.metadata = ObjectMeta {
        name: Some("studio".into()),
        namespace: Some("default".into()),
        uid: Some("6e0c2f1a-0000-4000-8000-00000000aaaa".into()),
        generation: Some(1),
        resource_version: Some("1".into()),
        finalizers: Some(vec![FINALIZER.into()]),
        ..ObjectMeta::default()
    };
    c
}

fn setup(rbac: Rbac) -> (Arc<sgcache_operator::reconcile::Context>, Api) {
    let (ctx, api) = context(Arc::new(ReadyDb));
    {
        let mut st = api.lock().unwrap();
        st.rbac = Some(rbac);
        let pair = |k: &str, v: &str| [(k.to_string(), v.to_string())].into();
        st.secrets
            .insert("db".into(), pair("url", "postgres://u@db/cache"));
        st.secrets.insert("site".into(), pair("apiKey", "k"));
        st.cache = Some(cache());
    }
    (ctx, api)
}

#[tokio::test]
async fn the_chart_rbac_lets_a_whole_reconcile_through() {
    let (ctx, api) = setup(Rbac::from_chart());
    reconcile(Arc::new(cache()), ctx.clone()).await.unwrap();
    let st = api.lock().unwrap();
    st.assert_clean();
    for (resource, verbs) in [
        ("configmaps", vec!["create"]),
        ("deployments", vec!["create"; 3]),
        ("services", vec!["create"]),
        ("poddisruptionbudgets", vec!["create"]),
    ] {
        assert_eq!(st.verbs_on(resource), verbs, "{resource}");
    }
    assert_eq!(st.statuses().len(), 1);
    assert!(st.calls.iter().all(|c| c.code < 400), "{:?}", st.calls);
}

/// The chart as it was: `patch` only for what the operator applies.
fn patch_only() -> Rbac {
    let mut rbac = Rbac::from_chart();
    for rule in &mut rbac.cluster {
        let applied = [
            "configmaps",
            "services",
            "deployments",
            "poddisruptionbudgets",
        ];
        if rule.resources.iter().any(|r| applied.contains(&r.as_str())) {
            rule.verbs.retain(|v| v != "create");
        }
    }
    rbac
}

#[tokio::test]
async fn without_create_server_side_apply_of_a_new_object_is_forbidden_and_reported() {
    let (ctx, api) = setup(patch_only());
    let err = reconcile(Arc::new(cache()), ctx.clone()).await.unwrap_err();
    assert_eq!(err.metric_label(), "kube_403");
    let st = api.lock().unwrap();
    assert_eq!(
        st.forbidden,
        ["PATCH /api/v1/namespaces/default/configmaps/studio-config"]
    );
    let status = st.statuses().pop().expect("the status was written");
    let w = status.condition("WorkersAvailable").unwrap();
    assert_eq!(
        (w.status.as_str(), w.reason.as_str()),
        ("False", "ApplyFailed")
    );
    assert!(
        w.message.contains("cannot create resource \"configmaps\""),
        "{}",
        w.message
    );
    assert_eq!(status.condition("Ready").unwrap().reason, "ApplyFailed");
    assert_eq!(st.event_reasons(), ["ApplyFailed"]);
}

#[tokio::test]
async fn the_status_subresource_and_the_main_resource_are_separate_grants() {
    let mut rbac = Rbac::from_chart();
    rbac.cluster
        .retain(|r| !r.resources.contains(&"shotguncaches/status".to_string()));
    let (ctx, api) = setup(rbac);
    let err = reconcile(Arc::new(cache()), ctx.clone()).await.unwrap_err();
    assert_eq!(err.metric_label(), "kube_403");
    let st = api.lock().unwrap();
    let refused = &st.forbidden;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].ends_with("/shotguncaches/studio/status"));
    // A status that could not be written is said in an Event.
    assert_eq!(st.event_reasons(), ["StatusUpdateFailed"]);
}

#[test]
fn requests_map_to_the_verbs_a_real_api_server_authorizes() {
    let a = |m: Method, p: &str, q: &str| attributes(&m, p, q).unwrap();
    let status = a(
        Method::PATCH,
        "/apis/sgcache.io/v1alpha1/namespaces/ns/shotguncaches/c/status",
        "",
    );
    assert_eq!(
        status,
        Attributes {
            verb: "patch".into(),
            group: "sgcache.io".into(),
            resource: "shotguncaches/status".into(),
            namespace: Some("ns".into()),
            name: Some("c".into()),
        }
    );
    assert_eq!(
        a(Method::GET, "/api/v1/secrets", "watch=true").verb,
        "watch"
    );
    assert_eq!(
        a(Method::GET, "/api/v1/namespaces/ns/secrets", "").verb,
        "list"
    );
    assert_eq!(
        a(Method::GET, "/api/v1/namespaces/ns/secrets/s", "").verb,
        "get"
    );
    let lease = a(
        Method::PUT,
        "/apis/coordination.k8s.io/v1/namespaces/sgcache-system/leases/l",
        "",
    );
    assert_eq!(
        (lease.verb.as_str(), lease.group.as_str()),
        ("update", "coordination.k8s.io")
    );
    let chart = Rbac::from_chart();
    assert!(chart.allows(&lease), "the Lease Role covers its namespace");
    let elsewhere = Attributes {
        namespace: Some("default".into()),
        ..lease
    };
    assert!(!chart.allows(&elsewhere), "and only its namespace");
}

#[test]
fn the_chart_grants_exactly_what_the_operator_uses() {
    let chart = Rbac::from_chart();
    let mut granted = Vec::new();
    for r in chart.cluster.iter().chain(&chart.release_namespace) {
        for g in &r.groups {
            for res in &r.resources {
                for v in &r.verbs {
                    granted.push(format!("{g}/{res}:{v}"));
                }
            }
        }
    }
    granted.sort();
    let mut used: Vec<String> = [
        // The controller's watches, the finalizer's JSON patch, the status subresource.
        "sgcache.io/shotguncaches:get",
        "sgcache.io/shotguncaches:list",
        "sgcache.io/shotguncaches:watch",
        "sgcache.io/shotguncaches:patch",
        "sgcache.io/shotguncaches/status:patch",
        // Secrets the caches name: read, and watched.
        "/secrets:get",
        "/secrets:list",
        "/secrets:watch",
        // Owned and applied (server-side apply: create + patch), watched.
        "/configmaps:list",
        "/configmaps:watch",
        "/configmaps:create",
        "/configmaps:patch",
        "/services:list",
        "/services:watch",
        "/services:create",
        "/services:patch",
        "apps/deployments:list",
        "apps/deployments:watch",
        "apps/deployments:create",
        "apps/deployments:patch",
        // A `Delete` cleanup: the workers stopped, their pods waited for, before the drop; a
        // failing one reads the namespace (being deleted: it gives up sooner).
        "apps/deployments:delete",
        "/pods:list",
        "/namespaces:get",
        "policy/poddisruptionbudgets:create",
        "policy/poddisruptionbudgets:patch",
        "policy/poddisruptionbudgets:delete",
        // kube's Recorder: create, then patch a series.
        "events.k8s.io/events:create",
        "events.k8s.io/events:patch",
        // The leader Lease (lease.rs: get, create, replace).
        "coordination.k8s.io/leases:get",
        "coordination.k8s.io/leases:create",
        "coordination.k8s.io/leases:update",
    ]
    .map(String::from)
    .to_vec();
    used.sort();
    assert_eq!(granted, used);
}
