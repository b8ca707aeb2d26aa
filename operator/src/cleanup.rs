//! The finalizer's cleanup, honouring `deletionPolicy`: `Retain` keeps the cache's tables,
//! `Delete` drops them. It never holds a deletion forever: when the database cannot be reached
//! (its Secret deleted first with the namespace, the server down) it retries with the
//! controller's backoff, saying why in the status and an Event, for at most
//! [`CLEANUP_GIVE_UP`] after the deletion was asked; then it lets the object go with a Warning
//! Event naming what was left in the database.

use std::time::Duration;

use chrono::Utc;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use sgcache::spec::DeletionPolicy;
use tracing::warn;

use crate::crd::{condition, Condition};
use crate::db::{Connection, DbError};
use crate::error::{Error, Result};
use crate::reconcile::Context;
use crate::{secrets, ShotgunCache};

/// How long after the deletion request a failing cleanup is retried before the object is let
/// go: long enough to ride out a database restart or a Secret recreated by hand, short enough
/// that a namespace deletion finishes the same hour.
pub const CLEANUP_GIVE_UP: Duration = Duration::from_secs(10 * 60);

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
        DeletionPolicy::Delete => drop_tables(cache, ctx).await,
    };
    match done {
        Ok(()) => {
            ctx.events.forget(cache);
            Ok(Action::await_change())
        }
        Err((reason, message)) if given_up(cache) => {
            let note = format!(
                "gave up cleaning up after {} min ({reason}: {message}); left in the database: {}",
                CLEANUP_GIVE_UP.as_secs() / 60,
                left_behind(cache)
            );
            warn!(name = %cache.name_any(), %reason, "cleanup abandoned; releasing the finalizer");
            ctx.event(cache, EventType::Warning, "CleanupAbandoned", note)
                .await;
            ctx.events.forget(cache);
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

/// Drops the cache's tables; `Err((reason, message))` when it cannot.
async fn drop_tables(cache: &ShotgunCache, ctx: &Context) -> Result<(), (String, String)> {
    let ns = cache.namespace().unwrap_or_default();
    let found = secrets::fetch(&ctx.client, &ns, [cache.spec.database.url.as_ref()])
        .await
        .map_err(|e| ("SecretsUnreadable".to_string(), e.to_string()))?;
    let url = secrets::database_url(&cache.spec, &ns, &found)?;
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

/// True once the deletion was asked more than [`CLEANUP_GIVE_UP`] ago.
fn given_up(cache: &ShotgunCache) -> bool {
    let Some(asked) = &cache.metadata.deletion_timestamp else {
        return false;
    };
    let asked_ms = asked.0.as_millisecond();
    let now_ms = Utc::now().timestamp_millis();
    now_ms - asked_ms > CLEANUP_GIVE_UP.as_millis() as i64
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
