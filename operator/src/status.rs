//! Status from what the reconcile found: pure functions from the database snapshot, the
//! Deployments' availability and the step that failed, if any.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::crd::{condition, Condition, EventsStatus, ShotgunCacheStatus, TypeStatus};
use crate::db::DbSnapshot;

/// What the reconcile observed, step by step. A step not reached is `None`.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub generation: Option<i64>,
    /// `Err((reason, message))` when the spec is invalid or a Secret could not be used.
    pub inputs: Option<Result<(), (String, String)>>,
    /// The database connection (and migration) outcome.
    pub database: Option<Result<(), (String, String)>>,
    pub schema: Option<Result<(), (String, String)>>,
    pub snapshot: Option<DbSnapshot>,
    /// Per Deployment: (name, desired, available).
    pub workers: Option<Vec<(String, i32, i32)>>,
    pub config_hash: Option<String>,
}

/// Builds the status; `previous` keeps each condition's `lastTransitionTime` while its status
/// holds.
pub fn build(
    obs: &Observed,
    previous: Option<&ShotgunCacheStatus>,
    now: DateTime<Utc>,
) -> ShotgunCacheStatus {
    let types = obs.snapshot.as_ref().map(type_statuses).unwrap_or_default();
    let fields_ready: i64 = types.iter().map(|t| t.ready).sum();
    let fields_total: i64 = types
        .iter()
        .map(|t| t.pending + t.backfilling + t.ready + t.unservable)
        .sum();
    let conds = conditions(obs, &types);
    let ready = conds.last().is_some_and(|c| c.1 == "True");
    let mut status = ShotgunCacheStatus {
        phase: phase(obs, &types, ready).into(),
        observed_generation: obs.generation,
        conditions: Vec::new(),
        type_count: types.len() as i64,
        fields_ready,
        fields_total,
        fields_summary: format!("{fields_ready}/{fields_total}"),
        events: obs.snapshot.as_ref().and_then(|s| events_status(s, now)),
        types,
        config_hash: obs.config_hash.clone(),
    };
    status.conditions = conds
        .into_iter()
        .map(|(type_, st, reason, message)| {
            let kept = previous
                .and_then(|p| p.condition(type_))
                .filter(|c| c.status == st)
                .and_then(|c| c.last_transition_time.clone());
            Condition {
                type_: type_.into(),
                status: st.into(),
                reason,
                message,
                observed_generation: obs.generation,
                last_transition_time: Some(
                    kept.unwrap_or_else(|| now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                ),
            }
        })
        .collect();
    status
}

/// Per entity type counts, ordered by type.
pub fn type_statuses(snap: &DbSnapshot) -> Vec<TypeStatus> {
    let mut by_type: BTreeMap<&str, TypeStatus> = BTreeMap::new();
    for f in &snap.fields {
        let t = by_type.entry(&f.entity_type).or_insert_with(|| TypeStatus {
            entity_type: f.entity_type.clone(),
            ..TypeStatus::default()
        });
        match f.state.as_str() {
            "pending" => t.pending += 1,
            "backfilling" => {
                t.backfilling += 1;
                t.backfill_done += f.backfill_done;
                t.backfill_total += f.backfill_total.unwrap_or(0);
            }
            "ready" => t.ready += 1,
            "unservable" => t.unservable += 1,
            _ => t.dropped += 1,
        }
    }
    by_type.into_values().collect()
}

fn events_status(snap: &DbSnapshot, now: DateTime<Utc>) -> Option<EventsStatus> {
    let e = snap.events.as_ref()?;
    let lag = e
        .updated_at
        .map(|t| (now - t).num_seconds().max(0))
        .unwrap_or(0);
    Some(EventsStatus {
        last_event_id: e.last_event_id.unwrap_or(0),
        lag: format!("{lag}s"),
        lag_seconds: lag,
        backlog: e.backlog,
    })
}

type Cond = (&'static str, &'static str, String, String);

fn from_step(type_: &'static str, step: &Option<Result<(), (String, String)>>, ok: &str) -> Cond {
    match step {
        Some(Ok(())) => (type_, "True", ok.into(), String::new()),
        Some(Err((reason, message))) => (type_, "False", reason.clone(), message.clone()),
        None => (
            type_,
            "Unknown",
            "NotChecked".into(),
            "an earlier step failed".into(),
        ),
    }
}

fn conditions(obs: &Observed, types: &[TypeStatus]) -> Vec<Cond> {
    let database = match &obs.inputs {
        Some(Err(e)) => from_step(condition::DATABASE_READY, &Some(Err(e.clone())), ""),
        _ => from_step(condition::DATABASE_READY, &obs.database, "Connected"),
    };
    let schema = from_step(condition::SCHEMA_READY, &obs.schema, "Migrated");
    let backfilled = backfill_condition(obs, types);
    let workers = workers_condition(obs);
    let failing = [&database, &schema, &backfilled, &workers]
        .into_iter()
        .find(|c| c.1 != "True")
        .cloned();
    let ready = match failing {
        None => (
            condition::READY,
            "True",
            "Ready".into(),
            "reads are served from the cache".into(),
        ),
        Some((t, _, reason, message)) => (
            condition::READY,
            "False",
            reason,
            if message.is_empty() {
                format!("{t} is not True")
            } else {
                message
            },
        ),
    };
    vec![database, schema, backfilled, workers, ready]
}

fn backfill_condition(obs: &Observed, types: &[TypeStatus]) -> Cond {
    if obs.snapshot.is_none() {
        return from_step(condition::BACKFILLED, &None, "");
    }
    let waiting: i64 = types.iter().map(|t| t.pending + t.backfilling).sum();
    if waiting == 0 {
        return (
            condition::BACKFILLED,
            "True",
            "AllFieldsReady".into(),
            String::new(),
        );
    }
    let names: Vec<&str> = types
        .iter()
        .filter(|t| t.pending + t.backfilling > 0)
        .map(|t| t.entity_type.as_str())
        .collect();
    let msg = format!(
        "{waiting} field(s) pending or backfilling in {}",
        names.join(", ")
    );
    (condition::BACKFILLED, "False", "Backfilling".into(), msg)
}

fn workers_condition(obs: &Observed) -> Cond {
    let Some(workers) = &obs.workers else {
        return from_step(condition::WORKERS_AVAILABLE, &None, "");
    };
    let short: Vec<String> = workers
        .iter()
        .filter(|(_, desired, available)| available < desired)
        .map(|(name, desired, available)| format!("{name} {available}/{desired}"))
        .collect();
    if short.is_empty() {
        (
            condition::WORKERS_AVAILABLE,
            "True",
            "Available".into(),
            String::new(),
        )
    } else {
        let msg = format!("waiting for replicas: {}", short.join(", "));
        (
            condition::WORKERS_AVAILABLE,
            "False",
            "Progressing".into(),
            msg,
        )
    }
}

fn phase(obs: &Observed, types: &[TypeStatus], ready: bool) -> &'static str {
    let failed = |s: &Option<Result<(), (String, String)>>| matches!(s, Some(Err(_)));
    if ready {
        "Ready"
    } else if failed(&obs.inputs) || failed(&obs.database) || failed(&obs.schema) {
        "Degraded"
    } else if obs.schema.is_none() {
        "Migrating"
    } else if types.iter().any(|t| t.pending + t.backfilling > 0) {
        "Backfilling"
    } else {
        "Pending"
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
