//! Status from what the reconcile found: pure functions from the database snapshot, the
//! Deployments' availability and the step that failed, if any.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sgcache::plan::ImpliedType;
use sgcache::ShotgunCacheSpec;

use crate::crd::{
    condition, Condition, EventsStatus, ReadsStatus, ReasonReads, ShotgunCacheStatus, TypeStatus,
};
use crate::db::{DbSnapshot, SiteLag};

/// The fields a spec declares, per entity type (`None`: every field, `["*"]`), and the types
/// implied by links with their display field. The status counts these only: the cache also
/// keeps fields of its own (`id`, `updated_at`, the display field) that the user did not ask
/// for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Declared {
    types: BTreeMap<String, Option<BTreeSet<String>>>,
    /// Implied type → the link fields it is cached for.
    implied: BTreeMap<String, Vec<String>>,
}

impl Declared {
    pub fn of(spec: &ShotgunCacheSpec) -> Declared {
        let types = spec.entities.iter().map(|e| {
            let fields = (!e.all_fields()).then(|| e.fields.iter().cloned().collect());
            (e.entity_type.clone(), fields)
        });
        Declared {
            types: types.collect(),
            implied: BTreeMap::new(),
        }
    }

    /// Also counts the types implied by links (their display field).
    pub fn with_implied(mut self, implied: &[ImpliedType]) -> Declared {
        for t in implied {
            let fields = BTreeSet::from([t.display_field.clone()]);
            self.types.insert(t.entity_type.clone(), Some(fields));
            self.implied
                .insert(t.entity_type.clone(), t.linked_from.clone());
        }
        self
    }

    fn contains(&self, entity_type: &str, field: &str) -> bool {
        match self.types.get(entity_type) {
            Some(Some(fields)) => fields.contains(field),
            Some(None) => true,
            None => false,
        }
    }

    fn implied_by(&self, entity_type: &str) -> Vec<String> {
        self.implied.get(entity_type).cloned().unwrap_or_default()
    }
}

/// A step's failure: (condition reason, message).
pub type StepError = (String, String);

/// A worker Deployment as applied: (name, desired replicas, available replicas).
pub type WorkerReplicas = (String, i32, i32);

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
    /// Per Deployment: (name, desired, available); `Err` when applying the children failed.
    pub workers: Option<Result<Vec<WorkerReplicas>, StepError>>,
    pub config_hash: Option<String>,
    /// What the spec declares; `None` counts every field the cache keeps.
    pub declared: Option<Declared>,
    /// Label selector of the proxy pods (`k=v,k=v`).
    pub proxy_selector: Option<String>,
    /// Declared names the site deleted since they were cached; `None` when not checked.
    pub gone_from_site: Option<Vec<String>>,
    /// Declared links whose targets the cache cannot name (`Shot.sg_sequence -> Sequence
    /// (why)`); `None` when not checked.
    pub uncovered: Option<Vec<String>>,
    /// Types cached for links only (`Sequence (code) for Shot.sg_sequence`).
    pub implied: Vec<String>,
}

/// Builds the status; `previous` keeps each condition's `lastTransitionTime` while its status
/// holds.
pub fn build(
    obs: &Observed,
    previous: Option<&ShotgunCacheStatus>,
    now: DateTime<Utc>,
) -> ShotgunCacheStatus {
    let types = obs
        .snapshot
        .as_ref()
        .map(|s| type_statuses(s, obs.declared.as_ref()))
        .unwrap_or_default();
    let waiting = obs
        .snapshot
        .as_ref()
        .map(waiting_fields)
        .unwrap_or_default();
    let fields_ready: i64 = types.iter().map(|t| t.ready).sum();
    let fields_total: i64 = types
        .iter()
        .map(|t| t.pending + t.backfilling + t.ready + t.unservable)
        .sum();
    let conds = conditions(obs, &waiting);
    let ready = conds
        .iter()
        .any(|c| c.0 == condition::READY && c.1 == "True");
    let mut status = ShotgunCacheStatus {
        phase: phase(obs, !waiting.is_empty(), ready).into(),
        observed_generation: obs.generation,
        conditions: Vec::new(),
        type_count: types.len() as i64,
        fields_ready,
        fields_total,
        fields_summary: format!("{fields_ready}/{fields_total}"),
        events: obs.snapshot.as_ref().and_then(|s| events_status(s, now)),
        types,
        config_hash: obs.config_hash.clone(),
        proxy_replicas: proxy_available(obs),
        proxy_selector: obs.proxy_selector.clone(),
        trust: obs
            .snapshot
            .as_ref()
            .map(|s| s.trust.clone())
            .unwrap_or_default(),
        reads: obs
            .snapshot
            .as_ref()
            .and_then(|s| s.reads.as_ref())
            .map(reads_status),
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

/// The read counts of every proxy, as the status shows them.
pub fn reads_status(share: &sgcache::storage::read_counts::ReadShare) -> ReadsStatus {
    ReadsStatus {
        window_minutes: share.minutes,
        replicas: share.replicas as i64,
        from_cache: share.cache as i64,
        to_site: share.site as i64,
        // Floored, so 99.6% is not shown as every read.
        cached: share
            .ratio()
            .map_or("-".into(), |r| format!("{}%", (r * 100.0).floor() as i64)),
        pass_through: share
            .reasons
            .iter()
            .take(5)
            .map(|(reason, reads)| ReasonReads {
                reason: reason.clone(),
                reads: *reads as i64,
            })
            .collect(),
    }
}

/// The proxy Deployment's available replicas.
fn proxy_available(obs: &Observed) -> Option<i32> {
    let workers = obs.workers.as_ref()?.as_ref().ok()?;
    workers
        .iter()
        .find(|(name, _, _)| name.ends_with("-proxy"))
        .map(|(_, _, available)| *available)
}

/// Per entity type counts of the declared fields (all with `None`), ordered by type.
pub fn type_statuses(snap: &DbSnapshot, declared: Option<&Declared>) -> Vec<TypeStatus> {
    let mut by_type: BTreeMap<&str, TypeStatus> = BTreeMap::new();
    let counted = |f: &&crate::db::FieldRow| {
        f.state == "dropped" || declared.is_none_or(|d| d.contains(&f.entity_type, &f.field_name))
    };
    for f in snap.fields.iter().filter(counted) {
        let t = by_type.entry(&f.entity_type).or_insert_with(|| TypeStatus {
            entity_type: f.entity_type.clone(),
            implied_by: declared
                .map(|d| d.implied_by(&f.entity_type))
                .unwrap_or_default(),
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

/// Per entity type, the number of fields (declared or kept by the cache) still pending or
/// backfilling: any of them keeps reads of that type from the cache.
pub(crate) fn waiting_fields(snap: &DbSnapshot) -> BTreeMap<String, i64> {
    let mut waiting = BTreeMap::new();
    for f in &snap.fields {
        if f.state == "pending" || f.state == "backfilling" {
            *waiting.entry(f.entity_type.clone()).or_insert(0) += 1;
        }
    }
    waiting
}

/// How far the cache is behind the site: the age of the oldest site event not yet applied,
/// 0 when every event is applied (a quiet site is not a lagging cache).
fn events_status(snap: &DbSnapshot, now: DateTime<Utc>) -> Option<EventsStatus> {
    let e = snap.events.as_ref()?;
    let (lag, seconds) = match &e.lag {
        SiteLag::CaughtUp => ("0s".to_string(), 0),
        SiteLag::Behind { since, pending } => {
            let secs = (now - *since).num_seconds().max(0);
            let more = if *pending { "+" } else { "" };
            (format!("{secs}s{more}"), secs)
        }
        SiteLag::Unknown => ("unknown".to_string(), -1),
    };
    Some(EventsStatus {
        last_event_id: e.last_event_id.unwrap_or(0),
        lag,
        lag_seconds: seconds,
        backlog: e.backlog,
        checked_at: Some(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
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

fn conditions(obs: &Observed, waiting: &BTreeMap<String, i64>) -> Vec<Cond> {
    let database = match &obs.inputs {
        Some(Err(e)) => from_step(condition::DATABASE_READY, &Some(Err(e.clone())), ""),
        _ => from_step(condition::DATABASE_READY, &obs.database, "Connected"),
    };
    let schema = from_step(condition::SCHEMA_READY, &obs.schema, "Migrated");
    let backfilled = backfill_condition(obs, waiting);
    let workers = workers_condition(obs);
    // The step that failed names Ready's reason, not the checks it left Unknown.
    let all = [&database, &schema, &backfilled, &workers];
    let failing = all
        .iter()
        .find(|c| c.1 == "False")
        .or_else(|| all.iter().find(|c| c.1 != "True"))
        .map(|c| (*c).clone());
    let coverage = coverage(obs);
    let ready = match failing {
        None if coverage.1 == "False" => (
            condition::READY,
            "True",
            "Ready".into(),
            format!(
                "reads are served from the cache, except: {}",
                uncovered_sentence(obs.uncovered.as_deref().unwrap_or_default())
            ),
        ),
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
    vec![
        database,
        schema,
        backfilled,
        workers,
        ready,
        coverage,
        site_schema(obs),
        trust_classes(obs),
    ]
}

/// Whether `previous` (the status the object holds) already reports this failure: a
/// condition `False` with its reason and message.
pub fn reports_failure(previous: Option<&ShotgunCacheStatus>, reason: &str, message: &str) -> bool {
    previous.is_some_and(|p| {
        p.conditions
            .iter()
            .any(|c| c.status == "False" && c.reason == reason && c.message == message)
    })
}

/// The classes a difference turned off, if any.
pub fn classes_off(obs: &Observed) -> Vec<String> {
    obs.snapshot
        .iter()
        .flat_map(|s| &s.trust)
        .filter(|t| t.state == "off")
        .map(|t| match &t.detail {
            Some(d) => format!("{} ({d})", t.class),
            None => t.class.clone(),
        })
        .collect()
}

fn trust_classes(obs: &Observed) -> Cond {
    if obs.snapshot.is_none() {
        return from_step(condition::TRUST_CLASSES_ON, &None, "");
    }
    let off = classes_off(obs);
    if off.is_empty() {
        return (
            condition::TRUST_CLASSES_ON,
            "True",
            "NoneOff".into(),
            String::new(),
        );
    }
    (
        condition::TRUST_CLASSES_ON,
        "False",
        "DifferenceFound".into(),
        format!(
            "the cache answered differently from the site; these classes go to the site until reset: {}",
            off.join(", ")
        ),
    )
}

/// `Coverage`: whether every declared link can be named from the cache.
fn coverage(obs: &Observed) -> Cond {
    let implied = if obs.implied.is_empty() {
        String::new()
    } else {
        format!("; implied by links: {}", obs.implied.join("; "))
    };
    match &obs.uncovered {
        None => from_step(condition::COVERAGE, &None, ""),
        Some(gaps) if gaps.is_empty() => (
            condition::COVERAGE,
            "True",
            "AllDeclaredServed".into(),
            format!("every declared link is served from the cache{implied}"),
        ),
        Some(gaps) => (
            condition::COVERAGE,
            "False",
            "LinkTargetsNotCached".into(),
            format!("{}{implied}", uncovered_sentence(gaps)),
        ),
    }
}

/// The sentence the Coverage condition and its Event say about links not served.
pub fn uncovered_sentence(gaps: &[String]) -> String {
    format!(
        "reads returning these declared links go to the site, the cache cannot name their \
         targets: {} (list the target types in spec.entities, or leave implyLinkTargets on)",
        gaps.join("; ")
    )
}

fn site_schema(obs: &Observed) -> Cond {
    match &obs.gone_from_site {
        None => from_step(condition::SITE_SCHEMA_IN_SYNC, &None, ""),
        Some(gone) if gone.is_empty() => (
            condition::SITE_SCHEMA_IN_SYNC,
            "True",
            "InSync".into(),
            String::new(),
        ),
        Some(gone) => (
            condition::SITE_SCHEMA_IN_SYNC,
            "False",
            "DeletedOnSite".into(),
            format!(
                "the site deleted {} since they were cached: dropped, reads of them go to the \
                 site; remove them from the spec or revive them on the site",
                gone.join(", ")
            ),
        ),
    }
}

fn backfill_condition(obs: &Observed, by_type: &BTreeMap<String, i64>) -> Cond {
    if obs.snapshot.is_none() {
        return from_step(condition::BACKFILLED, &None, "");
    }
    let waiting: i64 = by_type.values().sum();
    if waiting == 0 {
        return (
            condition::BACKFILLED,
            "True",
            "AllFieldsReady".into(),
            String::new(),
        );
    }
    let names: Vec<&str> = by_type.keys().map(String::as_str).collect();
    let msg = format!(
        "{waiting} field(s) pending or backfilling in {}",
        names.join(", ")
    );
    (condition::BACKFILLED, "False", "Backfilling".into(), msg)
}

fn workers_condition(obs: &Observed) -> Cond {
    let workers = match &obs.workers {
        None => return from_step(condition::WORKERS_AVAILABLE, &None, ""),
        Some(Err(e)) => return from_step(condition::WORKERS_AVAILABLE, &Some(Err(e.clone())), ""),
        Some(Ok(workers)) => workers,
    };
    // A proxy scaled to zero serves nothing: the cache is not Ready, whatever else holds.
    if let Some((name, ..)) = workers
        .iter()
        .find(|(name, desired, _)| name.ends_with("-proxy") && *desired == 0)
    {
        return (
            condition::WORKERS_AVAILABLE,
            "False",
            "ScaledToZero".into(),
            format!("{name} has 0 replicas: no proxy serves reads"),
        );
    }
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

fn phase(obs: &Observed, backfilling: bool, ready: bool) -> &'static str {
    let failed = |s: &Option<Result<(), (String, String)>>| matches!(s, Some(Err(_)));
    if ready {
        "Ready"
    } else if failed(&obs.inputs)
        || failed(&obs.database)
        || failed(&obs.schema)
        || matches!(obs.workers, Some(Err(_)))
    {
        "Degraded"
    } else if obs.schema.is_none() {
        "Migrating"
    } else if backfilling {
        "Backfilling"
    } else {
        "Pending"
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
