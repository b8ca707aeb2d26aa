//! `EventLogEntry` answered from the event log the follower keeps (`storage::event_log`),
//! through the same translator as every cached type. What differs from an entity table:
//!
//! * rows are only those the follower's contiguous position covers (`id <= through`, read in
//!   the statement itself): an answer never has a hole a late commit could fill;
//! * the log is kept only above `floor` (retention), so a read must show it reaches no lower:
//!   an `id` lower bound at or above the floor (checked against the floor the statement
//!   reads), or a page-1 read sorted by `id desc` whose page is full above the floor (the
//!   daemon's newest-id `find_one`); anything else passes through;
//! * `entity` reads `null` while its target is retired (protocol doc 8.1: as of the read);
//!   the cache knows that only for cached types (their `_retired`), and only when the read
//!   does not filter on `entity` (then a retired target passes the read through, as every
//!   link to an unknown target does);
//! * events cannot be retired: `return_only: retired` passes through;
//! * a record some column could not hold (`_unstorable`) passes a read returning it through.

use serde_json::Value;

use super::catalog::{Catalog, CatalogField, CatalogType};
use super::frag::Frag;
use super::{pass, PassThrough, Reason};
use crate::api3::{Filter, LogicalOperator, ReadRequest, SortDirection};
use crate::schema::{DataType, Storage};
use crate::sql::{Cell, Rows};
use crate::storage::event_log::{LOG_TABLE, WINDOW_TABLE};

pub const ENTITY_TYPE: &str = "EventLogEntry";

fn field(name: &str, data_type: DataType, valid_types: Vec<String>) -> CatalogField {
    CatalogField {
        name: name.into(),
        storage: data_type.storage(),
        data_type,
        ready: true,
        unservable: false,
        valid_types,
        retired_reads_null: name == "entity",
        // Event types, attribute names and session ids are made by the site from entity and
        // field names and uuids (ASCII); anything else may hold any text.
        non_ascii: !matches!(name, "event_type" | "attribute_name" | "session_uuid"),
    }
}

impl Catalog {
    /// Adds `EventLogEntry`, answered from the kept log (the proxy calls this while the
    /// follower keeps one). Links of `entity` may name any other cached type.
    pub fn add_event_log(&mut self) {
        if self.types.contains_key(ENTITY_TYPE) {
            return; // declared in the spec as an entity type: read from its table
        }
        let others: Vec<String> = self
            .types
            .keys()
            .filter(|t| *t != ENTITY_TYPE)
            .cloned()
            .collect();
        let fields = [
            field("id", DataType::Number, vec![]),
            field("event_type", DataType::Text, vec![]),
            field("attribute_name", DataType::Text, vec![]),
            field("meta", DataType::Serializable, vec![]),
            field("entity", DataType::Entity, others),
            field(
                "user",
                DataType::Entity,
                vec!["HumanUser".into(), "ApiUser".into()],
            ),
            field("project", DataType::Entity, vec!["Project".into()]),
            field("session_uuid", DataType::Uuid, vec![]),
            field("created_at", DataType::DateTime, vec![]),
        ];
        self.types.insert(
            ENTITY_TYPE.into(),
            CatalogType {
                entity_type: ENTITY_TYPE.into(),
                table: LOG_TABLE.into(),
                display_field: None,
                ready: true,
                stale: false,
                event_log: true,
                fields: fields.into_iter().map(|f| (f.name.clone(), f)).collect(),
            },
        );
    }
}

/// How far down a read of the log reaches, decided before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Every row has `id > n` (a top-level `id` bound).
    Above(i64),
    /// Page 1 of an `id desc` read: answerable when the page fills above the floor.
    NewestPage,
}

/// The render-time checks of a log read: the columns holding the floor the statement read
/// and each row's `_unstorable` flag.
#[derive(Clone, Copy, Debug)]
pub struct LogCheck {
    pub reach: Reach,
    pub floor_col: usize,
    pub unstorable_col: usize,
}

/// The plan-time part: which reads of the log may be answered at all.
pub fn reach(req: &ReadRequest) -> Result<Reach, PassThrough> {
    if req.return_only == crate::api3::ReturnOnly::Retired {
        return Err(pass(Reason::Payload, "retired event log entries"));
    }
    if let Some(n) = id_lower_bound(&req.filters) {
        return Ok(Reach::Above(n));
    }
    let newest_first = req
        .sorts
        .first()
        .is_some_and(|s| s.field == "id" && s.direction == SortDirection::Desc);
    if newest_first && req.paging.is_some_and(|p| p.current_page == 1) {
        return Ok(Reach::NewestPage);
    }
    Err(pass(
        Reason::EventLogWindow,
        "an event log read without an id lower bound",
    ))
}

/// The highest `n` such that the filter only matches ids above `n`, from its top-level
/// conditions on `id` (an `and` group or a single condition).
pub fn id_lower_bound(f: &Filter) -> Option<i64> {
    let conds: Vec<&Filter> = match f {
        Filter::Condition(_) => vec![f],
        Filter::Group {
            op: LogicalOperator::And,
            conditions,
        } => conditions.iter().collect(),
        Filter::Group { .. } => return None,
    };
    conds
        .into_iter()
        .filter_map(|c| match c {
            Filter::Condition(c) if c.path == "id" => bound_of(&c.relation, &c.values),
            _ => None,
        })
        .max()
}

fn bound_of(relation: &str, values: &[Value]) -> Option<i64> {
    let ints: Option<Vec<i64>> = values.iter().map(Value::as_i64).collect();
    let ints = ints.filter(|v| !v.is_empty())?;
    match relation {
        "greater_than" if ints.len() == 1 => Some(ints[0]),
        "is" if ints.len() == 1 => ints[0].checked_sub(1),
        "between" if ints.len() == 2 => ints[0].checked_sub(1),
        "in" => ints.iter().min()?.checked_sub(1),
        _ => None,
    }
}

/// `r.id <= through`: the follower's contiguous position, read by the statement itself (no
/// window: no rows, and the floor column says so).
pub fn through_cond() -> Frag {
    let mut f = Frag::new();
    f.col("r", "id")
        .lit(" <= (SELECT w.through FROM ")
        .ident(WINDOW_TABLE)
        .lit(" w WHERE w.id = 1)");
    f
}

/// The floor as the statement reads it (one value per row; null without a window).
pub fn floor_col() -> Frag {
    let mut f = Frag::new();
    f.lit("(SELECT w.floor FROM ")
        .ident(WINDOW_TABLE)
        .lit(" w WHERE w.id = 1)");
    f
}

fn int(v: Cell<'_>) -> Option<i64> {
    match v {
        Cell::Int(i) => Some(i),
        _ => None,
    }
}

impl LogCheck {
    /// A pass-through when the answer could miss events the cache no longer (or not yet)
    /// keeps, or holds a record it could not store.
    pub fn verify(
        &self,
        rows: &Rows<'_>,
        id_col: usize,
        per_page: Option<u64>,
    ) -> Result<(), PassThrough> {
        let Some(floor) = rows.first().and_then(|r| int(r[self.floor_col])) else {
            return Err(pass(
                Reason::EventLogWindow,
                "the event log is not kept now",
            ));
        };
        let page: Vec<i64> = rows
            .iter()
            .filter_map(|r| int(r[id_col]))
            .take(per_page.map_or(usize::MAX, |p| p as usize))
            .collect();
        let reaches = match self.reach {
            _ if floor == 0 => true,
            Reach::Above(n) => n >= floor,
            Reach::NewestPage => {
                per_page.is_some_and(|p| page.len() as u64 >= p)
                    && page.iter().min().is_some_and(|m| *m > floor)
            }
        };
        if !reaches {
            return Err(pass(
                Reason::EventLogWindow,
                "the read reaches below the kept event log",
            ));
        }
        let flagged = rows
            .iter()
            .any(|r| matches!(r[self.unstorable_col], Cell::Bool(true) | Cell::Int(1)));
        if flagged {
            return Err(pass(
                Reason::Unservable,
                "an event the cache could not store",
            ));
        }
        Ok(())
    }
}

/// Whether a field renders a retired target as null (only `EventLogEntry.entity`).
pub fn retired_reads_null(f: &CatalogField) -> bool {
    f.retired_reads_null && f.storage == Storage::EntityLink
}
