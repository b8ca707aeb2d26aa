//! What a person asks first: is the cache ready, how far behind the site is it, what is it
//! answering. One [`Status`] gathered here from the database's state tables, the site's event
//! log and the proxy's counters, rendered as text by `sgcache-worker status` ([`command`],
//! [`text`]) and as a page by the proxy under `/_sgcache/` ([`page`]).
//!
//! Nothing here reads entity values or shows credentials: only field states, counts, ids and
//! times.

pub mod command;
pub mod page;
pub mod proxy_figures;
pub mod read_rates;
pub mod read_share;
pub mod site_events;
pub mod text;
pub mod trust;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sgcache::plan::FieldState;
use sgcache::site::SiteClient;
use sgcache::spec::ShotgunCacheSpec;
use sgcache::sql::Db;
use sgcache::storage::{self, StorageError};

pub use proxy_figures::ProxyFigures;

/// Why there is no status to show.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot read the cache's state: {0}")]
    Storage(#[from] StorageError),
    #[error("the cache has no state tables yet (run `sgcache-worker migrate`)")]
    NotMigrated,
}

/// Everything the status command and page show.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub generated_at: DateTime<Utc>,
    /// Cached entity types, by name.
    pub types: Vec<TypeStatus>,
    pub events: FollowerStatus,
    /// The proxy's counters; `None` when it was not reached (see `proxy_error`).
    pub proxy: Option<ProxyFigures>,
    pub proxy_error: Option<String>,
    /// Each trust class's progress.
    pub trust: Vec<trust::TrustClassStatus>,
    /// Reads over every proxy replica in the last minutes (from the shared counts).
    pub reads: sgcache::storage::read_counts::ReadShare,
    /// Link targets: types cached for links only, and declared links the cache cannot name;
    /// `None` when gathered without the spec.
    pub links: Option<LinkCoverage>,
}

/// What the links of the spec need, as the cache stands (see `sgcache::plan::state_coverage`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LinkCoverage {
    /// Types the spec does not list, cached for the links to them: `Sequence (code) for
    /// Shot.sg_sequence`.
    pub implied: Vec<String>,
    /// Declared links whose targets the cache cannot name: reads returning them go to the
    /// site (`Shot.sg_sequence -> Sequence (not cached)`).
    pub uncovered: Vec<String>,
}

/// One cached entity type.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TypeStatus {
    pub entity_type: String,
    /// Fields by state (dropped fields are not counted: they are no longer cached).
    pub ready: u32,
    pub pending: u32,
    pub backfilling: u32,
    pub unservable: u32,
    /// Progress of the backfill of the type's pending and backfilling fields, if any.
    pub backfill: Option<BackfillProgress>,
    /// Start of the last complete scan of the type.
    pub last_scan: Option<DateTime<Utc>>,
    /// Values met that the cache could not store.
    pub dead_letters: i64,
    /// For a type the spec does not list: the link fields it is cached for (implied by
    /// links).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub implied_by: Vec<String>,
}

impl TypeStatus {
    /// Every cached field of the type is served from the cache.
    pub fn is_ready(&self) -> bool {
        self.ready > 0 && self.pending + self.backfilling + self.unservable == 0
    }
}

/// Entities backfilled so far, of how many (when the site said).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BackfillProgress {
    pub done: i64,
    pub total: Option<i64>,
}

/// Where the event follower stands against the site's event log.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FollowerStatus {
    /// Last EventLogEntry id applied to the cache.
    pub applied_event_id: Option<i64>,
    /// Newest EventLogEntry id on the site (when the site was reached).
    pub site_newest_event_id: Option<i64>,
    /// Site events after the applied one (0 when caught up).
    pub events_behind: Option<i64>,
    /// Age of the oldest event not applied yet, in seconds; 0 when caught up.
    pub lag_seconds: Option<i64>,
    /// When the follower last had every event the site had.
    pub caught_up_at: Option<DateTime<Utc>>,
    /// Consecutive failed polls of the follower (0 while it works).
    pub failures: i64,
    /// Why the site's event log could not be read, when it could not.
    pub site_error: Option<String>,
    /// The event log kept for event daemons (`eventLog`); `None` while none is kept.
    pub log: Option<KeptLog>,
}

/// The kept event log: what reads of EventLogEntry can be answered from.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KeptLog {
    /// Events with `after_event_id < id <= through_event_id` are all kept.
    pub after_event_id: i64,
    pub through_event_id: i64,
    /// `created_at` of the oldest and newest kept event.
    pub oldest_at: Option<DateTime<Utc>>,
    pub newest_at: Option<DateTime<Utc>>,
    /// Rows held (trimmed ones not yet deleted included).
    pub rows: i64,
    /// Trims that deleted rows, and the rows they deleted.
    pub trims: i64,
    pub trimmed_rows: i64,
}

impl KeptLog {
    fn from_storage(s: storage::event_log::LogStatus) -> Option<KeptLog> {
        let w = s.window?;
        Some(KeptLog {
            after_event_id: w.floor,
            through_event_id: w.through,
            oldest_at: s.oldest_at,
            newest_at: s.newest_at,
            rows: s.rows,
            trims: s.trims,
            trimmed_rows: s.trimmed_rows,
        })
    }
}

/// Reads the cache's state from `db` and, when given, the site's event log. A site that cannot
/// be reached leaves the site's figures empty with the reason; a database that cannot be read
/// is an error.
pub async fn gather(
    db: &Db,
    site: Option<&SiteClient>,
    spec: Option<&ShotgunCacheSpec>,
) -> Result<Status, StatusError> {
    let state = storage::read_state(db).await?;
    if state.types.is_empty() && state.fields.is_empty() {
        return Err(StatusError::NotMigrated);
    }
    let fields = storage::list_fields(db).await?;
    let freshness = storage::read_freshness(db).await?;
    let dead_letters = storage::count_dead_letters(db).await?;
    let position = storage::read_event_position(db).await?;
    let trust = trust::classes(&storage::read_trust(db).await?, None);
    let mut types = type_statuses(&fields, &freshness.scanned_at, &dead_letters);
    // Types migrated with no fields yet still show (as not ready).
    for name in state.types.keys() {
        if !types.iter().any(|t| &t.entity_type == name) {
            types.push(TypeStatus {
                entity_type: name.clone(),
                ..TypeStatus::default()
            });
        }
    }
    types.sort_by(|a, b| a.entity_type.cmp(&b.entity_type));
    let links = spec.map(|spec| {
        let targets = sgcache::plan::state_coverage(spec, &state);
        for implied in &targets.implied {
            if let Some(t) = types
                .iter_mut()
                .find(|t| t.entity_type == implied.entity_type)
            {
                t.implied_by = implied.linked_from.clone();
            }
        }
        LinkCoverage {
            implied: targets.implied.iter().map(ToString::to_string).collect(),
            uncovered: targets.gaps.iter().map(ToString::to_string).collect(),
        }
    });
    let mut events = FollowerStatus {
        applied_event_id: position.and_then(|p| p.last_event_id),
        caught_up_at: freshness.caught_up_at,
        failures: freshness.follower_failures,
        log: KeptLog::from_storage(storage::event_log::log_status(db).await?),
        ..FollowerStatus::default()
    };
    if let Some(site) = site {
        site_events::fill(site, &mut events, Utc::now()).await;
    }
    Ok(Status {
        generated_at: Utc::now(),
        types,
        events,
        proxy: None,
        proxy_error: None,
        trust,
        links,
        reads: read_share::gather(db).await?,
    })
}

/// Field counts and backfill progress per type, from `_sgcache_fields`.
fn type_statuses(
    fields: &[storage::FieldStatus],
    scanned_at: &BTreeMap<String, DateTime<Utc>>,
    dead_letters: &BTreeMap<String, i64>,
) -> Vec<TypeStatus> {
    let mut out: BTreeMap<&str, TypeStatus> = BTreeMap::new();
    for f in fields {
        if f.state == FieldState::Dropped {
            continue;
        }
        let t = out
            .entry(f.entity_type.as_str())
            .or_insert_with(|| TypeStatus {
                entity_type: f.entity_type.clone(),
                last_scan: scanned_at.get(&f.entity_type).copied(),
                dead_letters: dead_letters.get(&f.entity_type).copied().unwrap_or(0),
                ..TypeStatus::default()
            });
        match f.state {
            FieldState::Ready => t.ready += 1,
            FieldState::Pending => t.pending += 1,
            FieldState::Backfilling => t.backfilling += 1,
            FieldState::Unservable => t.unservable += 1,
            FieldState::Dropped => {}
        }
        if f.state.to_fill() {
            // The fields of one backfill share their progress; a field added later starts
            // over, so the least advanced one says how far the type is.
            let this = BackfillProgress {
                done: f.backfill_done,
                total: f.backfill_total,
            };
            t.backfill = Some(match t.backfill {
                Some(b) if b.done <= this.done => b,
                _ => this,
            });
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn field(ty: &str, name: &str, state: FieldState, done: i64) -> storage::FieldStatus {
        storage::FieldStatus {
            entity_type: ty.into(),
            field_name: name.into(),
            data_type: "text".into(),
            storage: "column".into(),
            state,
            schema: Value::Null,
            backfill_cursor: None,
            backfill_done: done,
            backfill_total: Some(40),
            backfill_started_ms: None,
            unservable_reason: None,
            unservable_id: None,
        }
    }

    #[test]
    fn counts_fields_by_state_and_keeps_the_least_advanced_backfill() {
        let fields = [
            field("Asset", "code", FieldState::Backfilling, 30),
            field("Asset", "description", FieldState::Pending, 0),
            field("Asset", "old", FieldState::Dropped, 0),
            field("Shot", "code", FieldState::Ready, 40),
            field("Shot", "sg_cut_in", FieldState::Unservable, 40),
        ];
        let letters = BTreeMap::from([("Shot".to_string(), 3)]);
        let types = type_statuses(&fields, &BTreeMap::new(), &letters);
        assert_eq!(types.len(), 2);
        let asset = &types[0];
        assert_eq!(
            (
                asset.ready,
                asset.pending,
                asset.backfilling,
                asset.unservable
            ),
            (0, 1, 1, 0)
        );
        assert_eq!(
            asset.backfill,
            Some(BackfillProgress {
                done: 0,
                total: Some(40)
            })
        );
        let shot = &types[1];
        assert_eq!((shot.ready, shot.unservable, shot.dead_letters), (1, 1, 3));
        assert_eq!(shot.backfill, None);
        assert!(!shot.is_ready());
    }
}
