//! The reconcile loop: inputs (spec, Secrets) → database (migration) → workers (SSA, owner
//! references) → status; and the finalizer's cleanup honouring `deletionPolicy`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sgcache::spec::DeletionPolicy;
use tracing::{info, instrument, warn};

use crate::crd::{condition, FIELD_MANAGER, FINALIZER};
use crate::db::{CacheDatabase, Connection};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::resources::{self, Component, WorkerSettings};
use crate::status::{self, Observed};
use crate::{secrets, ShotgunCache, ShotgunCacheStatus};

/// Resync interval when all is well, and while backfills run.
pub const RESYNC: Duration = Duration::from_secs(300);
pub const RESYNC_BACKFILLING: Duration = Duration::from_secs(30);
/// Retry interval when the inputs (spec, Secrets) are wrong: they change by a user's hand.
pub const RETRY_INPUTS: Duration = Duration::from_secs(60);
/// Error backoff: doubles from `BACKOFF_MIN` up to `BACKOFF_MAX`.
pub const BACKOFF_MIN: Duration = Duration::from_secs(5);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The Events' reporting controller.
const REPORTER: &str = "sgcache-operator";

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub db: Arc<dyn CacheDatabase>,
    pub settings: WorkerSettings,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object, for the backoff.
    pub failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        db: Arc<dyn CacheDatabase>,
        settings: WorkerSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Context {
            client,
            db,
            settings,
            metrics,
            failures: Mutex::default(),
        }
    }

    async fn event(&self, cache: &ShotgunCache, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        // A fresh Recorder per Event: a shared one folds a repeat of (object, reason) into a
        // series of its *first* Event, keeping the old note, so a second `SchemaChanged` would
        // never say what changed this time (found by the end-to-end test).
        let recorder = Recorder::new(self.client.clone(), REPORTER.into());
        if let Err(e) = recorder.publish(&ev, &cache.object_ref(&())).await {
            warn!(error = %e, reason, "cannot publish event");
        }
    }
}

fn key(cache: &ShotgunCache) -> String {
    format!(
        "{}/{}",
        cache.namespace().unwrap_or_default(),
        cache.name_any()
    )
}

/// Entry point for the controller.
#[instrument(skip(cache, ctx), fields(name = %cache.name_any(), namespace = cache.namespace().unwrap_or_default()))]
pub async fn reconcile(cache: Arc<ShotgunCache>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.start();
    let ns = cache.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<ShotgunCache> = Api::namespaced(ctx.client.clone(), &ns);
    let action = finalizer(&api, FINALIZER, cache.clone(), |event| async {
        match event {
            Finalizer::Apply(c) => apply(&c, &ctx).await,
            Finalizer::Cleanup(c) => cleanup(&c, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.failures.lock().expect("lock").remove(&key(&cache));
    Ok(action)
}

/// Logs, counts and requeues with a backoff doubling per consecutive failure.
pub fn error_policy(cache: Arc<ShotgunCache>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(&error.metric_label());
    let n = {
        let mut f = ctx.failures.lock().expect("lock");
        let n = f.entry(key(&cache)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(n);
    warn!(name = %cache.name_any(), error = %error, failures = n, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The delay after `n` consecutive failures.
pub fn backoff(n: u32) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(10);
    (BACKOFF_MIN * factor).min(BACKOFF_MAX)
}

async fn apply(cache: &ShotgunCache, ctx: &Context) -> Result<Action> {
    let ns = cache.namespace().ok_or(Error::NoNamespace)?;
    let mut obs = Observed {
        generation: cache.metadata.generation,
        ..Observed::default()
    };
    let conn = match inputs(cache, ctx, &ns).await? {
        Ok(conn) => conn,
        Err((reason, message)) => {
            ctx.event(cache, EventType::Warning, &reason, message.clone())
                .await;
            obs.inputs = Some(Err((reason, message)));
            patch_status(cache, ctx, &obs).await?;
            return Ok(Action::requeue(RETRY_INPUTS));
        }
    };
    obs.inputs = Some(Ok(()));
    if let Err(e) = database(cache, ctx, &conn, &mut obs).await {
        patch_status(cache, ctx, &obs).await?;
        return Err(e);
    }
    obs.config_hash = Some(resources::config_hash(cache, &ctx.settings));
    obs.workers = Some(apply_children(cache, ctx, &ns).await?);
    obs.snapshot = match ctx.db.snapshot(&conn).await {
        Ok(s) => Some(s),
        Err(e) => {
            obs.database = Some(Err((e.reason().into(), e.to_string())));
            None
        }
    };
    let status = patch_status(cache, ctx, &obs).await?;
    backfill_events(cache, ctx, &status).await;
    let backfilling = status
        .condition(condition::BACKFILLED)
        .is_some_and(|c| c.status != "True");
    Ok(Action::requeue(if backfilling {
        RESYNC_BACKFILLING
    } else {
        RESYNC
    }))
}

/// Validates the spec and resolves its Secrets. `Ok(Err(_))` is a user error (condition +
/// Event, slow retry); `Err(_)` an API error (backoff).
async fn inputs(
    cache: &ShotgunCache,
    ctx: &Context,
    ns: &str,
) -> Result<Result<Connection, secrets::InputProblem>> {
    let problems = resources::validate_for_kubernetes(&cache.spec);
    if !problems.is_empty() {
        return Ok(Err(("InvalidSpec".into(), problems.join("; "))));
    }
    let spec = &cache.spec;
    let sources = [
        spec.site.script_name.as_ref(),
        spec.site.api_key.as_ref(),
        spec.database.url.as_ref(),
    ];
    let found = secrets::fetch(&ctx.client, ns, sources)
        .await
        .map_err(Error::Kube)?;
    Ok(secrets::connection(spec, ns, &found))
}

/// Runs the migration before any worker changes; publishes the schema changes.
async fn database(
    cache: &ShotgunCache,
    ctx: &Context,
    conn: &Connection,
    obs: &mut Observed,
) -> Result<()> {
    match ctx.db.migrate(conn, &cache.spec).await {
        Ok(outcome) => {
            obs.database = Some(Ok(()));
            obs.schema = Some(Ok(()));
            if !outcome.changes.is_empty() {
                info!(changes = outcome.changes.len(), "schema changed");
                let note = outcome.changes.join("; ");
                ctx.event(cache, EventType::Normal, "SchemaChanged", note)
                    .await;
            }
            Ok(())
        }
        Err(e) => {
            let failed = Some(Err((e.reason().to_string(), e.to_string())));
            if matches!(e, crate::db::DbError::Connect(_)) {
                obs.database = failed;
            } else {
                obs.database = Some(Ok(()));
                obs.schema = failed;
            }
            ctx.event(cache, EventType::Warning, e.reason(), e.to_string())
                .await;
            Err(Error::Database(e))
        }
    }
}

async fn ssa<K>(client: &Client, ns: &str, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&obj.name_any(), &params, &Patch::Apply(obj))
        .await
        .map_err(Error::Kube)
}

/// Applies the ConfigMap, the Deployments (events, scanner, proxy), the Service and the PDB,
/// in that order; returns each Deployment's desired and available replicas.
async fn apply_children(
    cache: &ShotgunCache,
    ctx: &Context,
    ns: &str,
) -> Result<Vec<(String, i32, i32)>> {
    let client = &ctx.client;
    ssa(client, ns, &resources::config_map(cache)).await?;
    let mut workers = Vec::new();
    for component in Component::ALL {
        let d: Deployment = ssa(
            client,
            ns,
            &resources::deployment(cache, component, &ctx.settings),
        )
        .await?;
        let desired = d.spec.replicas.unwrap_or(1);
        let available = d
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        workers.push((d.name_any(), desired, available));
    }
    ssa(client, ns, &resources::service(cache)).await?;
    match resources::pod_disruption_budget(cache) {
        Some(pdb) => {
            ssa(client, ns, &pdb).await?;
        }
        None => {
            let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
            let name = resources::child_name(cache, "proxy");
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Error::Kube(e)),
            }
        }
    }
    Ok(workers)
}

async fn patch_status(
    cache: &ShotgunCache,
    ctx: &Context,
    obs: &Observed,
) -> Result<ShotgunCacheStatus> {
    let status = status::build(obs, cache.status.as_ref(), Utc::now());
    let api: Api<ShotgunCache> = Api::namespaced(
        ctx.client.clone(),
        &cache.namespace().ok_or(Error::NoNamespace)?,
    );
    let patch = serde_json::json!({
        "apiVersion": "sgcache.io/v1alpha1",
        "kind": "ShotgunCache",
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&cache.name_any(), &params, &Patch::Apply(&patch))
        .await
        .map_err(Error::Kube)?;
    Ok(status)
}

/// `BackfillStarted` / `BackfillFinished` when the `Backfilled` condition flips.
async fn backfill_events(cache: &ShotgunCache, ctx: &Context, new: &ShotgunCacheStatus) {
    let was = cache
        .status
        .as_ref()
        .and_then(|s| s.condition(condition::BACKFILLED))
        .map(|c| c.status.as_str());
    let Some(now) = new.condition(condition::BACKFILLED) else {
        return;
    };
    match (was, now.status.as_str()) {
        (Some("True") | None, "False") if now.reason == "Backfilling" => {
            ctx.event(
                cache,
                EventType::Normal,
                "BackfillStarted",
                now.message.clone(),
            )
            .await;
        }
        (Some("False"), "True") => {
            let note = format!("all {} field(s) ready", new.fields_total);
            ctx.event(cache, EventType::Normal, "BackfillFinished", note)
                .await;
        }
        _ => {}
    }
}

/// Finalizer cleanup: `Retain` keeps the tables, `Delete` drops them. Owned objects are then
/// garbage-collected through their owner references.
async fn cleanup(cache: &ShotgunCache, ctx: &Context) -> Result<Action> {
    let ns = cache.namespace().ok_or(Error::NoNamespace)?;
    if cache.spec.deletion_policy == DeletionPolicy::Retain {
        let note = "deletionPolicy Retain: the cache tables are kept".to_string();
        ctx.event(cache, EventType::Normal, "CacheRetained", note)
            .await;
        return Ok(Action::await_change());
    }
    let found = secrets::fetch(&ctx.client, &ns, [cache.spec.database.url.as_ref()])
        .await
        .map_err(Error::Kube)?;
    let url = match secrets::database_url(&cache.spec, &ns, &found) {
        Ok(url) => url,
        Err((reason, message)) => {
            let note = format!("cannot drop the cache tables: {message}");
            ctx.event(cache, EventType::Warning, &reason, note.clone())
                .await;
            return Err(Error::Database(crate::db::DbError::Connect(note)));
        }
    };
    let conn = Connection {
        database_url: url,
        site: placeholder_site(),
    };
    if let Err(e) = ctx.db.drop_cache(&conn).await {
        ctx.event(cache, EventType::Warning, "DropFailed", e.to_string())
            .await;
        return Err(Error::Database(e));
    }
    ctx.event(
        cache,
        EventType::Normal,
        "CacheDropped",
        "deletionPolicy Delete: the cache tables were dropped".into(),
    )
    .await;
    Ok(Action::await_change())
}

/// Dropping tables needs no site; the connection carries an empty one.
fn placeholder_site() -> sgcache::spec::SiteConnection {
    sgcache::spec::SiteConnection {
        url: String::new(),
        script_name: String::new(),
        api_key: String::new(),
        timeout: Duration::from_secs(30),
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
