//! The finalizer's cleanup, honouring `deletionPolicy`: `Retain` keeps the cache's tables,
//! `Delete` first removes the worker Deployments and waits (at most [`WORKERS_GONE_WAIT`]) for
//! their pods to be gone, then drops the tables, so no worker runs on a dropped schema. It
//! never holds a deletion forever: when the database cannot be reached (the server down, its
//! Secret deleted first with the namespace and its URL not seen by this process) it retries
//! with the controller's backoff, saying why in the status and an Event, for at most
//! [`CLEANUP_GIVE_UP`] after the deletion was asked ([`NAMESPACE_GIVE_UP`] in a namespace
//! being deleted); then it lets the object go, naming what was left in the database in a
//! Warning Event on the cache and on the operator's own pod (a terminating namespace refuses
//! new Events), a log line and a metric.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use sgcache::spec::DeletionPolicy;
use tracing::{info, warn};

use crate::crd::{condition, Condition};
use crate::db::{Connection, DbError};
use crate::error::{Error, Result};
use crate::reconcile::Context;
use crate::resources::{self, Component};
use crate::{secrets, ShotgunCache};

/// How long after the deletion request a failing cleanup is retried before the object is let
/// go: long enough to ride out a database restart or a Secret recreated by hand, short enough
/// that a namespace deletion finishes the same hour.
pub const CLEANUP_GIVE_UP: Duration = Duration::from_secs(10 * 60);
/// The same in a namespace being deleted: nothing can be fixed there any more (its Secrets
/// are going), and a user waits on `kubectl delete namespace`.
pub const NAMESPACE_GIVE_UP: Duration = Duration::from_secs(60);
/// How long the cleanup waits for the worker pods to stop before dropping the tables anyway
/// (a worker that then finds its tables gone exits, once, saying so).
pub const WORKERS_GONE_WAIT: Duration = Duration::from_secs(45);
const WORKERS_POLL: Duration = Duration::from_millis(500);

/// Finalizer cleanup. Owned objects are garbage-collected through their owner references.
pub async fn cleanup(cache: &ShotgunCache, ctx: &Context) -> Result<Action> {
    let cache = &crate::resources::with_defaults(cache);
    let done = match cache.spec.deletion_policy {
        DeletionPolicy::Retain => {
            let note = "deletionPolicy Retain: the cache tables are kept".to_string();
            ctx.event(cache, EventType::Normal, "CacheRetained", note)
                .await;
            Ok(())
        }
        DeletionPolicy::Delete => match stop_workers(cache, ctx).await {
            Ok(()) => drop_tables(cache, ctx).await,
            Err(e) => Err(("WorkersNotStopped".to_string(), e.to_string())),
        },
    };
    match done {
        Ok(()) => {
            ctx.events.forget(cache);
            ctx.forget_database(cache);
            Ok(Action::await_change())
        }
        Err((reason, message)) if given_up(cache, give_up_after(cache, ctx).await) => {
            let note = format!(
                "gave up cleaning up {} ({reason}: {message}); left in the database: {}",
                key(cache),
                left_behind(cache)
            );
            warn!(cache = %cache.name_any(), namespace = %cache.namespace().unwrap_or_default(),
                %reason, left = %left_behind(cache), "cleanup abandoned; releasing the finalizer");
            ctx.metrics.cleanup_abandoned();
            ctx.event(cache, EventType::Warning, "CleanupAbandoned", note.clone())
                .await;
            ctx.events
                .publish_home(EventType::Warning, "CleanupAbandoned", &note)
                .await;
            ctx.events.forget(cache);
            ctx.forget_database(cache);
            Ok(Action::await_change())
        }
        Err((reason, message)) => {
            let note = format!("cannot drop the cache tables ({reason}): {message}; retrying");
            ctx.event(cache, EventType::Warning, "CleanupFailed", note.clone())
                .await;
            if let Err(e) = report(cache, ctx, &note).await {
                warn!(error = %e, "cannot write the cleanup status");
            }
            Err(Error::Database(DbError::Connect(note)))
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

/// Deletes the worker Deployments, then waits (at most [`WORKERS_GONE_WAIT`]) until none of
/// the cache's pods is left, so no worker is running when the tables go.
async fn stop_workers(cache: &ShotgunCache, ctx: &Context) -> std::result::Result<(), kube::Error> {
    let ns = cache.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    for component in Component::ALL {
        let name = resources::child_name(cache, component.name());
        match deployments.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = ListParams::default().labels(&label_selector(cache));
    let started = std::time::Instant::now();
    loop {
        let left = pods.list_metadata(&selector).await?.items.len();
        if left == 0 {
            return Ok(());
        }
        if started.elapsed() >= WORKERS_GONE_WAIT {
            warn!(cache = %cache.name_any(), pods = left, "worker pods still stopping; dropping the tables anyway");
            return Ok(());
        }
        tokio::time::sleep(WORKERS_POLL).await;
    }
}

/// Every pod of the cache, whatever its component.
fn label_selector(cache: &ShotgunCache) -> String {
    resources::selector_labels(cache, None)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Drops the cache's tables; `Err((reason, message))` when it cannot. The database URL comes
/// from the Secret, or, when the Secret is already gone (a namespace deletion removes it in
/// any order), from the last reconcile of this process.
async fn drop_tables(cache: &ShotgunCache, ctx: &Context) -> Result<(), (String, String)> {
    let ns = cache.namespace().unwrap_or_default();
    let found = secrets::fetch(&ctx.client, &ns, [cache.spec.database.url.as_ref()])
        .await
        .map_err(|e| ("SecretsUnreadable".to_string(), e.to_string()));
    let url = match found.and_then(|found| secrets::database_url(&cache.spec, &ns, &found)) {
        Ok(url) => url,
        Err(problem) => match ctx.remembered_database(cache) {
            Some(url) => {
                info!(cache = %cache.name_any(), reason = %problem.0, "database Secret unreadable; using the URL of the last reconcile");
                url
            }
            None => return Err(problem),
        },
    };
    let conn = Connection {
        database_url: url,
        site: placeholder_site(),
        schema: cache.spec.database.schema.clone(),
    };
    ctx.db
        .drop_cache(&conn)
        .await
        .map_err(|e| (e.reason().to_string(), e.to_string()))?;
    let note = "deletionPolicy Delete: the cache tables were dropped".to_string();
    ctx.event(cache, EventType::Normal, "CacheDropped", note)
        .await;
    Ok(())
}

/// [`NAMESPACE_GIVE_UP`] when the cache's namespace is being deleted, else
/// [`CLEANUP_GIVE_UP`].
async fn give_up_after(cache: &ShotgunCache, ctx: &Context) -> Duration {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api.get(&cache.namespace().unwrap_or_default()).await {
        Ok(ns) if ns.metadata.deletion_timestamp.is_some() => NAMESPACE_GIVE_UP,
        Ok(_) => CLEANUP_GIVE_UP,
        Err(e) => {
            warn!(error = %e, "cannot read the cache's namespace");
            CLEANUP_GIVE_UP
        }
    }
}

/// True once the deletion was asked more than `limit` ago.
fn given_up(cache: &ShotgunCache, limit: Duration) -> bool {
    let Some(asked) = &cache.metadata.deletion_timestamp else {
        return false;
    };
    let asked_ms = asked.0.as_millisecond();
    let now_ms = Utc::now().timestamp_millis();
    now_ms - asked_ms > limit.as_millis() as i64
}

/// What a `Delete` that could not run leaves behind, for the Event.
fn left_behind(cache: &ShotgunCache) -> String {
    let types: Vec<&str> = cache
        .spec
        .entities
        .iter()
        .map(|e| e.entity_type.as_str())
        .collect();
    match &cache.spec.database.schema {
        Some(schema) if schema != "public" => format!(
            "schema {schema} (the tables of {} and the _sgcache_* state tables)",
            types.join(", ")
        ),
        _ => format!(
            "the tables of {} and the _sgcache_* state tables",
            types.join(", ")
        ),
    }
}

/// Says in the status why the deletion waits: phase `Deleting`, `Ready` False.
async fn report(cache: &ShotgunCache, ctx: &Context, message: &str) -> Result<()> {
    let mut status = cache.status.clone().unwrap_or_default();
    status.phase = "Deleting".into();
    status.conditions.retain(|c| c.type_ != condition::READY);
    status.conditions.push(Condition {
        type_: condition::READY.into(),
        status: "False".into(),
        reason: "CleanupFailed".into(),
        message: message.into(),
        observed_generation: cache.metadata.generation,
        last_transition_time: Some(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    });
    crate::reconcile::apply_status(cache, ctx, &status).await
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
