//! The reconcile loop: inputs (spec, Secrets) → database (migration) → workers (SSA, owner
//! references) → status; and the finalizer's cleanup honouring `deletionPolicy`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info, instrument, warn};

use crate::backfill_wake::BackfillWakes;
use crate::cleanup;
use crate::crd::{condition, FIELD_MANAGER, FINALIZER};
use crate::db::{CacheDatabase, Connection};
use crate::error::{Error, Result};
use crate::events::Events;
use crate::metrics::Metrics;
use crate::resources::{self, Component, WorkerSettings};
use crate::status::{self, Declared, Observed};
use crate::{secrets, ShotgunCache, ShotgunCacheStatus};

/// Resync interval when all is well (the event lag in the status is at most this old, and
/// says when it was measured), and while backfills run.
pub const RESYNC: Duration = Duration::from_secs(60);
pub const RESYNC_BACKFILLING: Duration = Duration::from_secs(30);
/// While a backfill is young (it usually finishes in seconds), checked every second so Ready
/// follows it at once; a long one falls back to [`RESYNC_BACKFILLING`].
pub const RESYNC_BACKFILL_YOUNG: Duration = Duration::from_secs(1);
pub const BACKFILL_YOUNG_FOR: Duration = Duration::from_secs(60);
/// Retry interval when the inputs (spec, Secrets) are wrong: they change by a user's hand.
pub const RETRY_INPUTS: Duration = Duration::from_secs(60);
/// Error backoff: doubles from `BACKOFF_MIN` up to `BACKOFF_MAX`.
pub const BACKOFF_MIN: Duration = Duration::from_secs(5);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub db: Arc<dyn CacheDatabase>,
    pub settings: WorkerSettings,
    pub metrics: Arc<Metrics>,
    /// The one Event publisher of the controller (repeats aggregate).
    pub events: Events,
    /// Consecutive failures per object, for the backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// Per object, the database URL of its last reconcile: a `Delete` cleanup can still drop
    /// the tables when a namespace deletion removed the Secret first.
    databases: Mutex<HashMap<String, String>>,
    /// Reconciles a backfilling cache as soon as its backfill progresses.
    pub backfill_wakes: Arc<BackfillWakes>,
}

impl Context {
    pub fn new(
        client: Client,
        db: Arc<dyn CacheDatabase>,
        settings: WorkerSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Context {
            events: Events::new(client.clone(), None),
            client,
            db,
            settings,
            metrics,
            failures: Mutex::default(),
            databases: Mutex::default(),
            backfill_wakes: Arc::default(),
        }
    }

    fn remember_database(&self, cache: &ShotgunCache, url: &str) {
        let mut known = self.databases.lock().expect("lock");
        known.insert(key(cache), url.to_string());
    }

    /// The database URL of the cache's last reconcile by this process.
    pub(crate) fn remembered_database(&self, cache: &ShotgunCache) -> Option<String> {
        self.databases
            .lock()
            .expect("lock")
            .get(&key(cache))
            .cloned()
    }

    pub(crate) fn forget_database(&self, cache: &ShotgunCache) {
        self.databases.lock().expect("lock").remove(&key(cache));
    }

    pub(crate) async fn event(
        &self,
        cache: &ShotgunCache,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        self.events.publish(cache, type_, reason, &note).await;
    }
}

/// Why a step stopped the reconcile: what its condition and its one Warning Event say, and how
/// it is retried.
struct Failure {
    reason: String,
    message: String,
    retry: Retry,
}

enum Retry {
    /// The user must fix the spec or a Secret: retried slowly (and at once when they change).
    Inputs,
    /// A database, site or API error: the controller's backoff.
    Backoff(Error),
}

impl Failure {
    fn backoff(reason: &str, message: String, error: Error) -> Self {
        Failure {
            reason: reason.into(),
            message,
            retry: Retry::Backoff(error),
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
#[instrument(skip(cache, ctx), fields(cache = %cache.name_any(), namespace = cache.namespace().unwrap_or_default()))]
pub async fn reconcile(cache: Arc<ShotgunCache>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.start();
    let ns = cache.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<ShotgunCache> = Api::namespaced(ctx.client.clone(), &ns);
    let action = finalizer(&api, FINALIZER, cache.clone(), |event| async {
        match event {
            Finalizer::Apply(c) => apply(&c, &ctx).await,
            Finalizer::Cleanup(c) => cleanup::cleanup(&c, &ctx).await,
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
    warn!(cache = %cache.name_any(), error = %error, failures = n, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// The delay after `n` consecutive failures.
pub fn backoff(n: u32) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(10);
    (BACKOFF_MIN * factor).min(BACKOFF_MAX)
}

/// Runs the steps, then always writes the status (each condition with its reason, message and
/// observedGeneration) and, when a step failed, publishes one Warning Event saying why.
async fn apply(cache: &ShotgunCache, ctx: &Context) -> Result<Action> {
    let cache = &resources::with_defaults(cache);
    let ns = cache.namespace().ok_or(Error::NoNamespace)?;
    let mut obs = Observed {
        generation: cache.metadata.generation,
        declared: Some(Declared::of(&cache.spec)),
        proxy_selector: Some(resources::proxy_selector(cache)),
        ..Observed::default()
    };
    let mut took = StepTimes::default();
    let outcome = steps(cache, ctx, &ns, &mut obs, &mut took).await;
    if let Err(f) = &outcome {
        // Once per failure: a status that already says it (written by this process or an
        // earlier one) was announced already.
        if !status::reports_failure(cache.status.as_ref(), &f.reason, &f.message) {
            ctx.event(cache, EventType::Warning, &f.reason, f.message.clone())
                .await;
        }
    }
    let (status, t) = timed(patch_status(cache, ctx, &obs)).await;
    took.status = t;
    debug!(
        inputs_ms = ms(took.inputs),
        migrate_ms = ms(took.migrate),
        children_ms = ms(took.children),
        snapshot_ms = ms(took.snapshot),
        status_ms = ms(took.status),
        "reconcile steps"
    );
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            if outcome.is_ok() {
                let note = format!("cannot write the status: {e}");
                ctx.event(cache, EventType::Warning, "StatusUpdateFailed", note)
                    .await;
            }
            return Err(e);
        }
    };
    degraded_events(cache, ctx, &status).await;
    match outcome {
        Err(Failure {
            retry: Retry::Inputs,
            ..
        }) => Ok(Action::requeue(RETRY_INPUTS)),
        Err(Failure {
            retry: Retry::Backoff(e),
            ..
        }) => Err(e),
        Ok(conn) => {
            backfill_events(cache, ctx, &status).await;
            let backfilling = status
                .condition(condition::BACKFILLED)
                .filter(|c| c.status != "True");
            if backfilling.is_some() {
                let pending = obs.snapshot.as_ref().map_or(0, |snap| {
                    status::waiting_fields(snap).values().sum::<i64>() as usize
                });
                ctx.backfill_wakes
                    .follow(ctx.db.clone(), cache, conn, pending);
            }
            Ok(Action::requeue(match backfilling {
                Some(c) => backfill_resync(c, Utc::now()),
                None => RESYNC,
            }))
        }
    }
}

/// Inputs → database (migration) → children → snapshot, each recording its outcome in `obs`;
/// the connection they used.
async fn steps(
    cache: &ShotgunCache,
    ctx: &Context,
    ns: &str,
    obs: &mut Observed,
    took: &mut StepTimes,
) -> Result<Connection, Failure> {
    let (resolved, t) = timed(inputs(cache, ctx, ns)).await;
    took.inputs = t;
    let conn = match resolved {
        Ok(Ok(conn)) => conn,
        Ok(Err((reason, message))) => {
            obs.inputs = Some(Err((reason.clone(), message.clone())));
            return Err(Failure {
                reason,
                message,
                retry: Retry::Inputs,
            });
        }
        Err(e) => {
            let message = format!("cannot read the Secrets: {e}");
            obs.inputs = Some(Err(("SecretsUnreadable".into(), message.clone())));
            return Err(Failure::backoff("SecretsUnreadable", message, e));
        }
    };
    obs.inputs = Some(Ok(()));
    ctx.remember_database(cache, &conn.database_url);
    let (migrated, t) = timed(database(cache, ctx, &conn, obs)).await;
    took.migrate = t;
    migrated?;
    obs.config_hash = Some(resources::config_hash(cache, &ctx.settings));
    let secrets_hash = secrets::values_hash(&conn);
    let (children, t) = timed(apply_children(cache, ctx, ns, &secrets_hash)).await;
    took.children = t;
    match children {
        Ok(workers) => obs.workers = Some(Ok(workers)),
        Err(e) => {
            let message = format!("cannot apply the worker objects: {e}");
            obs.workers = Some(Err(("ApplyFailed".into(), message.clone())));
            return Err(Failure::backoff("ApplyFailed", message, e));
        }
    }
    let (snapshot, t) = timed(ctx.db.snapshot(&conn)).await;
    took.snapshot = t;
    match snapshot {
        Ok(s) => obs.snapshot = Some(s),
        Err(e) => {
            obs.database = Some(Err((e.reason().into(), e.to_string())));
            return Err(Failure::backoff(
                e.reason(),
                e.to_string(),
                Error::Database(e),
            ));
        }
    }
    Ok(conn)
}

/// How long each step of one reconcile took (logged at debug: where a slow start goes).
#[derive(Default)]
struct StepTimes {
    inputs: Duration,
    migrate: Duration,
    children: Duration,
    snapshot: Duration,
    status: Duration,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// What `f` returns, and how long it took.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let t = Instant::now();
    (f.await, t.elapsed())
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
) -> Result<(), Failure> {
    match ctx.db.migrate(conn, &cache.spec).await {
        Ok(outcome) => {
            obs.database = Some(Ok(()));
            obs.schema = Some(Ok(()));
            obs.gone_from_site = Some(outcome.gone);
            obs.uncovered = Some(outcome.uncovered);
            obs.implied = outcome.implied.iter().map(ToString::to_string).collect();
            obs.declared = obs
                .declared
                .take()
                .map(|d| d.with_implied(&outcome.implied));
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
            Err(Failure::backoff(
                e.reason(),
                e.to_string(),
                Error::Database(e),
            ))
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
    secrets_hash: &str,
) -> Result<Vec<(String, i32, i32)>> {
    let client = &ctx.client;
    ssa(client, ns, &resources::config_map(cache)).await?;
    let mut workers = Vec::new();
    for component in Component::ALL {
        let built = resources::deployment(cache, component, &ctx.settings);
        let d: Deployment = ssa(
            client,
            ns,
            &resources::with_secrets_hash(built, secrets_hash),
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
    apply_status(cache, ctx, &status).await?;
    Ok(status)
}

/// Writes `status` by server-side apply under the operator's field manager.
pub(crate) async fn apply_status(
    cache: &ShotgunCache,
    ctx: &Context,
    status: &ShotgunCacheStatus,
) -> Result<()> {
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
    Ok(())
}

/// How soon to look again at a backfill that started at `backfilled`'s transition.
pub fn backfill_resync(backfilled: &crate::crd::Condition, now: chrono::DateTime<Utc>) -> Duration {
    let started = backfilled
        .last_transition_time
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    match started {
        Some(t)
            if (now - t.with_timezone(&Utc)).to_std().unwrap_or_default() < BACKFILL_YOUNG_FOR =>
        {
            RESYNC_BACKFILL_YOUNG
        }
        _ => RESYNC_BACKFILLING,
    }
}

/// The conditions outside `Ready` that a Warning Event announces when they turn `False` (or
/// their message changes), with the Event's reason.
const DEGRADED: [(&str, &str); 3] = [
    (condition::COVERAGE, "CoverageDegraded"),
    (condition::SITE_SCHEMA_IN_SYNC, "SiteSchemaDrift"),
    (condition::TRUST_CLASSES_ON, "TrustClassOff"),
];

/// One Warning Event per transition of a [`DEGRADED`] condition, observed against the status
/// the object held before this reconcile: what it already said (whichever process wrote it)
/// is not announced again, so an operator restart repeats nothing.
async fn degraded_events(cache: &ShotgunCache, ctx: &Context, new: &ShotgunCacheStatus) {
    for (type_, reason) in DEGRADED {
        let Some(now) = new.condition(type_).filter(|c| c.status == "False") else {
            continue;
        };
        let was = cache.status.as_ref().and_then(|s| s.condition(type_));
        if was.is_some_and(|w| w.status == "False" && w.message == now.message) {
            continue;
        }
        if type_ == condition::SITE_SCHEMA_IN_SYNC {
            warn!(message = %now.message, "the site deleted cached types or fields");
        }
        ctx.event(cache, EventType::Warning, reason, now.message.clone())
            .await;
    }
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
        // From True, from no condition yet, and from Unknown (an earlier step had failed).
        (was, "False") if now.reason == "Backfilling" && was != Some("False") => {
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

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
