//! Turning a batch of events into cache writes. Events are folded per entity (the last value
//! of each field wins, link additions/removals accumulate), so a batch of 500 events costs a
//! handful of multi-row statements. Where an event carries too little (no `new_value`, a value
//! of an unexpected shape, a back-reference to a single-entity field, a revival, a row the
//! cache does not hold, an event that arrived late) the entity is fetched from the site
//! instead: the current record supersedes every event in the batch.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use sgcache::ident;
use sgcache::plan::{DbState, FieldState};
use sgcache::schema::{DataType, Storage};
use sgcache::sql::{Db, Tx};
use sgcache::storage::{self, Drift, StorageError, WriteSource};

use super::log::LogWrite;
use super::parse::{meta_date_time, Event, Kind};
use super::position::{lock_position, Position};
use crate::sync::site_reader::{ReadError, SiteReader};
use crate::sync::write::{link_targets, write_read};
use sgcache::sql::format_datetime;
use sgcache::storage::{seen_times, set_retired_if_current};

/// What happens to one entity in a batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Target {
    /// Refetch the whole record from the site.
    pub fetch: bool,
    /// Scalar and single-link values to set (API form).
    pub sets: BTreeMap<String, Value>,
    /// Multi-entity edits in event order: (added?, type, id).
    pub links: BTreeMap<String, Vec<(bool, String, i64)>>,
    pub retire: Option<bool>,
    /// A revival, or a retirement that may have been undone without an event: when read
    /// active, the rows it links to are read again (their lists showed it hidden).
    pub revived: bool,
    /// The newest event time: the row's new `updated_at`.
    pub updated_at: Option<DateTime<Utc>>,
    /// The actor of the newest event: the row's new `updated_by`.
    pub user: Option<Value>,
}

/// The per-entity plan of a batch.
#[derive(Debug, Default)]
pub struct BatchPlan {
    pub targets: BTreeMap<(String, i64), Target>,
    /// Events that touched a cached type and field.
    pub relevant: usize,
    /// Cached fields whose events name another data type than their storage was built for:
    /// the site retyped them since the last migrate (marked unservable with the batch).
    pub drifts: Vec<Drift>,
}

/// The drift an event reveals: a change of a cached field whose `meta.field_data_type` is not
/// the data type the field's storage was built for (back-references describe the other side).
fn drift_of(state: &DbState, e: &Event) -> Option<Drift> {
    if e.kind != Kind::Change || e.backref {
        return None;
    }
    let field = e.attribute.as_deref()?;
    let site_type = e.meta.get("field_data_type")?.as_str()?;
    let record = state.field(&e.entity_type, field)?;
    if matches!(record.state, FieldState::Dropped | FieldState::Unservable) {
        return None;
    }
    let site_type = DataType::from_api(site_type).api_name().to_string();
    (site_type != record.data_type).then(|| Drift {
        entity_type: e.entity_type.clone(),
        field: field.to_string(),
        built_for: record.data_type.clone(),
        site_type: Some(site_type),
    })
}

fn storage_of(state: &DbState, entity_type: &str, field: &str) -> Option<Storage> {
    state
        .live_fields(entity_type)
        .find(|(n, _)| n.as_str() == field)
        .map(|(_, r)| r.storage())
        .filter(|s| !matches!(s, Storage::Uncacheable(_)))
}

/// True when some field of the type still waits for its backfill: then events refetch whole
/// records, so a row the follower writes never lacks a pending field the backfill skips.
/// (Unservable fields are not waiting: they are written as values come, and never served.)
fn has_pending(state: &DbState, entity_type: &str) -> bool {
    state
        .live_fields(entity_type)
        .any(|(_, r)| r.state.to_fill())
}

/// The value to store for a scalar `new_value`, or None when its shape is unexpected.
fn scalar_value(storage: Storage, v: &Value) -> Option<Value> {
    if v.is_null() {
        return Some(Value::Null); // checkboxes too: sites return null for unset ones
    }
    let ok = match storage {
        Storage::Text => v.is_string(),
        Storage::Integer => v.is_i64(),
        Storage::Float => v.is_number(),
        Storage::Boolean => v.is_boolean(),
        Storage::Date => v.as_str().is_some_and(|s| s.len() == 10),
        Storage::DateTime => {
            let s = v.as_str()?;
            return meta_date_time(s)
                .or_else(|| (s.len() == 20 && s.ends_with('Z')).then(|| s.to_string()))
                .map(Value::String);
        }
        Storage::EntityLink => link_of(v).is_some(),
        // JSON-stored values (url, serializable, tag_list) are not spelled reliably in meta.
        Storage::Json | Storage::MultiEntity | Storage::Uncacheable(_) => false,
    };
    ok.then(|| v.clone())
}

fn link_of(v: &Value) -> Option<(String, i64)> {
    let t = v.get("type")?.as_str()?;
    let id = v.get("id")?.as_i64()?;
    ident::validate_entity_type(t).ok()?;
    Some((t.to_string(), id))
}

fn links_of(v: Option<&Value>) -> Vec<(String, i64)> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(link_of).collect())
        .unwrap_or_default()
}

/// Folds `events` into per-entity targets. `late` ids (seen after newer ones) are refetched.
pub fn plan(state: &DbState, events: &[Event], late: &BTreeSet<i64>) -> BatchPlan {
    let mut out = BatchPlan::default();
    for e in events {
        if e.kind == Kind::Other || !state.types.contains_key(&e.entity_type) {
            continue; // uncached types cost one map lookup
        }
        let Some(id) = e.entity_id else { continue };
        if let Some(d) = drift_of(state, e).filter(|d| !out.drifts.contains(d)) {
            out.drifts.push(d);
        }
        let key = (e.entity_type.clone(), id);
        let relevant = match e.kind {
            Kind::New | Kind::Revival => Some(Op::Fetch),
            Kind::Retirement => Some(Op::Retire),
            Kind::Change => change_op(state, e),
            Kind::Other => None,
        };
        let Some(op) = relevant else { continue };
        out.relevant += 1;
        let t = out.targets.entry(key).or_default();
        if late.contains(&e.id) || has_pending(state, &e.entity_type) {
            t.fetch = true;
        }
        if e.created_at > t.updated_at {
            t.updated_at = e.created_at;
            t.user = Some(e.user.clone()).filter(|u| link_of(u).is_some());
        }
        match op {
            Op::Fetch => {
                t.fetch = true;
                t.revived |= e.kind == Kind::Revival;
            }
            Op::Retire => {
                // Read rather than flagged: an entity revived since without an event (a script
                // with events off) is active again on the site, and rows of other types read
                // while it was retired lack their links to it. Read active, it is a revival:
                // the rows it links to are read again.
                t.retire = Some(true);
                t.fetch = true;
                t.revived = true;
            }
            Op::Set(field, v) => {
                t.links.remove(&field);
                t.sets.insert(field, v);
            }
            Op::Links(field, added, removed) => {
                let ops = t.links.entry(field).or_default();
                ops.extend(removed.into_iter().map(|(ty, i)| (false, ty, i)));
                ops.extend(added.into_iter().map(|(ty, i)| (true, ty, i)));
            }
        }
    }
    out
}

enum Op {
    Fetch,
    Retire,
    Set(String, Value),
    Links(String, Vec<(String, i64)>, Vec<(String, i64)>),
}

fn change_op(state: &DbState, e: &Event) -> Option<Op> {
    let field = e.attribute.as_deref()?;
    if !e.backref && field == "retirement_date" {
        return None; // the Retirement event that follows carries the flip
    }
    let storage = storage_of(state, &e.entity_type, field)?;
    let meta = &e.meta;
    if storage == Storage::MultiEntity {
        let (added, removed) = (links_of(meta.get("added")), links_of(meta.get("removed")));
        if added.is_empty() && removed.is_empty() {
            return Some(Op::Fetch); // a reorder or a shape we do not know: take the site's list
        }
        return Some(Op::Links(field.to_string(), added, removed));
    }
    if e.backref {
        return Some(Op::Fetch); // single-link back-reference: the holder may have moved
    }
    match meta.get("new_value").and_then(|v| scalar_value(storage, v)) {
        Some(v) => Some(Op::Set(field.to_string(), v)),
        None => Some(Op::Fetch),
    }
}

/// Why a batch was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the saved event position moved under this follower (another instance is active)")]
    PositionMoved,
    #[error("the cache layout changed while the batch was prepared; retrying")]
    LayoutChanged,
}

/// Counts of an applied batch.
#[derive(Clone, Copy, Debug, Default)]
pub struct Applied {
    pub relevant: usize,
    pub entities: usize,
    pub fetched: usize,
    pub written: u64,
    /// Values the cache could not store (each left a dead letter; its field is unservable).
    pub unstorable: u64,
    /// Events added to the kept log.
    pub logged: u64,
}

/// Applies `events` and saves `next` as the position, in one transaction, provided the saved
/// position is still `current` and the layout still `state`.
pub async fn apply_batch(
    db: &Db,
    reader: &SiteReader,
    state: &DbState,
    events: &[Event],
    late: &BTreeSet<i64>,
    (current, next): (&Position, &Position),
    log: &LogWrite<'_>,
) -> Result<Applied, ApplyError> {
    let mut plan = plan(state, events, late);
    let batch_max = events.iter().map(|e| e.id).max().unwrap_or(next.last);
    // Rows the cache does not hold are fetched whole: a partial row would be served wrong.
    // So are rows already holding data of the event's second or later: timestamps have
    // one-second precision, and the row may hold a newer write (e.g. by a script without
    // events) made in that same second, which the event must not overwrite.
    // What the follower reads below never undoes a write made since (WriteSource::Read).
    let read_at = {
        let mut tx = db.begin().await?;
        let read_at = storage::read_mark_tx(&mut tx).await?;
        let mut by_type: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for ((ty, id), t) in &plan.targets {
            if !t.fetch {
                by_type.entry(ty).or_default().push(*id);
            }
        }
        let mut refetch = Vec::new();
        for (ty, ids) in by_type {
            let seen = seen_times(&mut tx, ty, &ids).await?;
            for id in ids {
                let key = (ty.to_string(), id);
                let event_time = plan.targets.get(&key).and_then(|t| t.updated_at);
                let stale = match seen.get(&id) {
                    None => true,
                    Some(Some(s)) => event_time.is_none_or(|e| *s >= e),
                    Some(None) => false,
                };
                if stale {
                    refetch.push(key);
                }
            }
        }
        for key in refetch {
            if let Some(t) = plan.targets.get_mut(&key) {
                t.fetch = true;
            }
        }
        read_at
    };
    let mut fetched: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    let mut to_fetch: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for ((ty, id), t) in &plan.targets {
        if t.fetch {
            to_fetch.entry(ty).or_default().push(*id);
        }
    }
    let mut fetched_count = 0;
    for (ty, ids) in to_fetch {
        let fields: Vec<String> = state.live_fields(ty).map(|(n, _)| n.clone()).collect();
        let got = reader.fetch_ids(ty, &fields, &ids).await?;
        fetched_count += ids.len();
        fetched.insert(ty.to_string(), got);
    }

    // Rows linking to revived entities: the site showed them without it while it was retired.
    let mut others: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (ty, (active, _)) in &fetched {
        let back: Vec<&Value> = active
            .iter()
            .filter(|r| {
                let id = r.get("id").and_then(Value::as_i64).unwrap_or(0);
                plan.targets
                    .get(&(ty.clone(), id))
                    .is_some_and(|t| t.revived)
            })
            .collect();
        for (t, ids) in link_targets(state, ty, &back) {
            others.entry(t).or_default().extend(ids);
        }
    }
    let mut linked = Vec::new();
    for (ty, ids) in others {
        let fields: Vec<String> = state.live_fields(&ty).map(|(n, _)| n.clone()).collect();
        linked.push((ty.clone(), reader.fetch_ids(&ty, &fields, &ids).await?));
    }

    let mut tx = db.begin().await?;
    if lock_position(&mut tx).await?.as_ref() != Some(current) {
        return Err(ApplyError::PositionMoved);
    }
    if &storage::read_state_tx(&mut tx).await? != state {
        return Err(ApplyError::LayoutChanged);
    }
    for d in &plan.drifts {
        if storage::mark_drifted(&mut tx, d).await? {
            tracing::warn!(entity_type = %d.entity_type, field = %d.field,
                built_for = %d.built_for, site_type = d.site_type.as_deref().unwrap_or(""),
                "an event shows the site retyped a cached field: it is unservable (reads pass through) until migrate rebuilds it");
        }
    }
    let (mut written, mut unstorable) = (0, 0);
    for (ty, (active, retired)) in fetched.iter().chain(linked.iter().map(|(t, r)| (t, r))) {
        let out = write_read(&mut tx, state, ty, (active, retired), read_at).await?;
        written += out.written;
        unstorable += out.unstorable;
    }
    let records = build_records(&mut tx, state, &plan).await?;
    for (ty, recs) in &records {
        let source = WriteSource::Event {
            event_id: batch_max,
        };
        // A value the cache cannot store makes its field unservable and leaves a dead letter
        // with this event id (storage::upsert_entities); the batch and the position go on.
        let out = storage::upsert_entities(&mut tx, state, ty, recs, source).await?;
        written += out.written;
        unstorable += out.unstorable;
    }
    let mut flags: BTreeMap<&str, (Flags, Flags)> = BTreeMap::new();
    for ((ty, id), t) in &plan.targets {
        match (t.fetch, t.retire) {
            (false, Some(true)) => flags.entry(ty).or_default().0.push((*id, t.updated_at)),
            (false, Some(false)) => flags.entry(ty).or_default().1.push((*id, t.updated_at)),
            _ => {}
        }
    }
    for (ty, (retire, revive)) in flags {
        written += set_retired_if_current(&mut tx, ty, &retire, true).await?;
        written += set_retired_if_current(&mut tx, ty, &revive, false).await?;
    }
    // Every event read (of every type) joins the kept log with the position that covers it.
    let logged = log.apply(&mut tx).await?;
    storage::write_event_position(&mut tx, &next.to_saved()).await?;
    tx.commit().await?;
    Ok(Applied {
        relevant: plan.relevant,
        entities: plan.targets.len(),
        fetched: fetched_count,
        written,
        unstorable,
        logged,
    })
}

/// Records (API form) for the targets that are not refetched, grouped by type.
async fn build_records(
    tx: &mut Tx,
    state: &DbState,
    plan: &BatchPlan,
) -> Result<BTreeMap<String, Vec<Value>>, StorageError> {
    let current = current_links(tx, plan).await?;
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for ((ty, id), t) in &plan.targets {
        if t.fetch || (t.sets.is_empty() && t.links.is_empty()) {
            continue;
        }
        let mut rec = Map::new();
        rec.insert("type".into(), json!(ty));
        rec.insert("id".into(), json!(id));
        for (f, v) in &t.sets {
            rec.insert(f.clone(), v.clone());
        }
        for (f, ops) in &t.links {
            let mut list = current
                .get(&(ty.clone(), *id, f.clone()))
                .cloned()
                .unwrap_or_default();
            for (add, lt, lid) in ops {
                let here = list.iter().position(|(a, b)| a == lt && b == lid);
                match (add, here) {
                    (true, None) => list.push((lt.clone(), *lid)),
                    (false, Some(i)) => {
                        list.remove(i);
                    }
                    _ => {}
                }
            }
            let links: Vec<Value> = list
                .iter()
                .map(|(a, b)| json!({"type": a, "id": b}))
                .collect();
            rec.insert(f.clone(), Value::Array(links));
        }
        // Changes bump updated_at/updated_by on the site without events of their own.
        if let Some(t_at) = t.updated_at {
            if storage_of(state, ty, "updated_at").is_some() {
                rec.insert("updated_at".into(), json!(format_datetime(&t_at)));
            }
            if let (Some(u), Some(_)) = (&t.user, storage_of(state, ty, "updated_by")) {
                rec.insert("updated_by".into(), u.clone());
            }
        }
        out.entry(ty.clone()).or_default().push(Value::Object(rec));
    }
    Ok(out)
}

type LinkKey = (String, i64, String);

/// Rows to flag, with the time of the event that says so.
type Flags = Vec<(i64, Option<DateTime<Utc>>)>;

/// The cached links of every (entity, multi-entity field) the plan edits, in order.
async fn current_links(
    tx: &mut Tx,
    plan: &BatchPlan,
) -> Result<BTreeMap<LinkKey, Vec<(String, i64)>>, StorageError> {
    let mut wanted: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for ((ty, id), t) in &plan.targets {
        if t.fetch {
            continue;
        }
        for f in t.links.keys() {
            wanted.entry((ty.clone(), f.clone())).or_default().push(*id);
        }
    }
    let mut out = BTreeMap::new();
    for ((ty, f), ids) in wanted {
        for (e, links) in storage::multi_entity_links(tx, &ty, &f, &ids).await? {
            out.insert((ty.clone(), e, f.clone()), links);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sgcache::plan::{FieldRecord, TypeState};

    fn event(id: i64, field: &str, data_type: &str, backref: bool) -> Event {
        Event {
            id,
            kind: Kind::Change,
            entity_type: "Shot".into(),
            entity_id: Some(3),
            attribute: Some(field.into()),
            backref,
            meta: json!({"field_data_type": data_type, "new_value": "x"}),
            user: Value::Null,
            created_at: None,
        }
    }

    #[test]
    fn an_event_of_another_data_type_reveals_a_retyped_field() {
        let mut state = DbState::default();
        state.types.insert(
            "Shot".into(),
            TypeState {
                table_name: "shot".into(),
                display_field: None,
            },
        );
        for (name, data_type) in [("sg_cut_in", "number"), ("code", "text")] {
            state.fields.entry("Shot".into()).or_default().insert(
                name.into(),
                FieldRecord {
                    data_type: data_type.into(),
                    state: FieldState::Ready,
                    schema: Value::Null,
                },
            );
        }
        let events = [
            event(1, "sg_cut_in", "text", false),
            event(2, "sg_cut_in", "text", false),
            event(3, "code", "text", false),
            event(4, "code", "number", true),
        ];
        let plan = plan(&state, &events, &BTreeSet::new());
        let drifts: Vec<(&str, &str, Option<&str>)> = plan
            .drifts
            .iter()
            .map(|d| {
                (
                    d.field.as_str(),
                    d.built_for.as_str(),
                    d.site_type.as_deref(),
                )
            })
            .collect();
        assert_eq!(drifts, vec![("sg_cut_in", "number", Some("text"))]);
        // The events are still applied (the value is refetched: it does not fit the column).
        assert_eq!(plan.relevant, 4);
    }
}
