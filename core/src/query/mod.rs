//! The read translator: an API3 `read` plus the catalog of what the cache holds becomes one
//! SQL statement, or a reason to pass the request through to the site.
//!
//! The cache answers only when the whole request is answerable from `ready` data with the
//! site's exact semantics (protocol doc sections 5, 6 and 9); everything else passes through.
//! Identifiers reach SQL only from the catalog (validated names), values only as binds.

pub mod catalog;
mod dates;
pub mod event_log;
mod filter;
mod frag;
mod output;
mod sort;
mod tags;
pub mod text;
mod values;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

pub use catalog::{Catalog, CatalogField, CatalogType};
pub use frag::Frag;
use output::Out;

use crate::api3::{PagingStyle, ReadRequest, ReturnOnly};
use crate::schema::Storage;
use crate::sql::{Cell, Db, Dialect, Rows, Sql, SqlValue};
use crate::trust::TrustClass;

/// The largest page the cache serves; the site caps pages at `api_max_entities_per_page`
/// (500 by default), so larger pages go to the site, which knows its own cap.
pub const MAX_PER_PAGE: u64 = 500;

/// Why a read is passed through. `label()` is the metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The payload has keys, presets or shapes the cache does not interpret.
    Payload,
    TypeNotCached,
    FieldNotCached,
    Relation,
    Value,
    Path,
    Sort,
    Paging,
    ArchivedProjects,
    /// A link (or deep field) whose target the cache cannot render as the site would.
    LinkName,
    /// The cache database failed; the site answers instead.
    Database,
    /// The statement would be beyond what the database takes: more bound values than its
    /// protocol allows, or U+0000 in a text value (PostgreSQL text cannot hold it).
    DatabaseLimit,
    /// A field the read touches holds a value the cache could not store (state `unservable`).
    Unservable,
    /// The type is further behind the site than `workers.proxy.maxLag`.
    Stale,
    /// An EventLogEntry read reaching below the event log the cache keeps (or the log is not
    /// kept now).
    EventLogWindow,
}

impl Reason {
    /// Every reason, for vocabularies built on this one (the proxy's, its tests).
    pub const ALL: &'static [Reason] = &[
        Reason::Payload,
        Reason::TypeNotCached,
        Reason::FieldNotCached,
        Reason::Relation,
        Reason::Value,
        Reason::Path,
        Reason::Sort,
        Reason::Paging,
        Reason::ArchivedProjects,
        Reason::LinkName,
        Reason::Database,
        Reason::DatabaseLimit,
        Reason::Unservable,
        Reason::Stale,
        Reason::EventLogWindow,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::Payload => "payload",
            Reason::TypeNotCached => "type_not_cached",
            Reason::FieldNotCached => "field_not_cached",
            Reason::Relation => "relation",
            Reason::Value => "value",
            Reason::Path => "path",
            Reason::Sort => "sort",
            Reason::Paging => "paging",
            Reason::ArchivedProjects => "archived_projects",
            Reason::LinkName => "link_name",
            Reason::Database => "database",
            Reason::DatabaseLimit => "database_limit",
            Reason::Unservable => "unservable",
            Reason::Stale => "stale",
            Reason::EventLogWindow => "event_log_window",
        }
    }

    /// Whether planning refuses for this reason only because of the payload, the catalog and
    /// the dialect, so the same payload is refused again for as long as the catalog is the
    /// same one (the proxy keeps such verdicts). Not so for `Value` (a relative date's window
    /// is out of range only at some times), nor for the reasons found while answering
    /// (`Database`, `EventLogWindow`'s check of the kept log).
    pub fn follows_from_catalog(self) -> bool {
        !matches!(
            self,
            Reason::Value | Reason::Database | Reason::EventLogWindow
        )
    }
}

/// A read the cache will not answer, and why (for logs and metrics, never for clients).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassThrough {
    pub reason: Reason,
    pub detail: String,
}

impl std::fmt::Display for PassThrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.label(), self.detail)
    }
}

pub fn pass(reason: Reason, detail: impl Into<String>) -> PassThrough {
    PassThrough {
        reason,
        detail: detail.into(),
    }
}

/// Translation state: the catalog, generated aliases and the joins collected on the way.
pub struct Ctx<'a> {
    pub cat: &'a Catalog,
    pub dialect: Dialect,
    /// The site's current time (relative-date relations are evaluated on the site's clock).
    pub now: DateTime<Utc>,
    /// The inferred shapes the plan relies on (see [`crate::trust`]).
    classes: BTreeSet<TrustClass>,
    next_alias: usize,
    /// Joins needed by the filter (deep paths), inside the row-selecting subquery.
    filter_joins: Vec<Frag>,
    /// Entity hops already joined: (from alias, hop field, target type) and the alias.
    filter_hops: Vec<((String, String, String), String)>,
    /// Joins needed by the returned columns (link names, deep return fields).
    output_joins: Vec<Frag>,
    select: Vec<Frag>,
    /// The read filters on a field whose retired targets read as null: such targets then
    /// pass the read through instead (the filter saw the stored link).
    retired_filtered: bool,
}

impl<'a> Ctx<'a> {
    fn new(cat: &'a Catalog, dialect: Dialect, now: DateTime<Utc>) -> Self {
        Ctx {
            cat,
            dialect,
            now,
            classes: BTreeSet::new(),
            next_alias: 0,
            filter_joins: Vec::new(),
            filter_hops: Vec::new(),
            output_joins: Vec::new(),
            select: Vec::new(),
            retired_filtered: false,
        }
    }

    /// Records that the plan relies on an inferred shape: the proxy answers it from the
    /// cache only while that class is trusted.
    pub fn needs(&mut self, class: TrustClass) {
        self.classes.insert(class);
    }

    /// A fresh alias: `j1`, `j2`, ...
    pub fn alias(&mut self) -> String {
        self.next_alias += 1;
        format!("j{}", self.next_alias)
    }

    /// The alias of the active row an entity hop of the filter leads to from the row `from`,
    /// joined once.
    fn filter_hop(&mut self, from: &str, hop: &CatalogField, target: &CatalogType) -> String {
        let key = (
            from.to_string(),
            hop.name.clone(),
            target.entity_type.clone(),
        );
        if let Some((_, a)) = self.filter_hops.iter().find(|(k, _)| *k == key) {
            return a.clone();
        }
        let a = self.alias();
        self.filter_joins
            .push(filter::hop_join(from, hop, target, &a));
        self.filter_hops.push((key, a.clone()));
        a
    }

    /// Adds a select column; returns its index.
    fn push_col(&mut self, f: Frag) -> usize {
        self.select.push(f);
        self.select.len() - 1
    }
}

/// A translated read: the statement and how to turn its rows into the site's answer.
#[derive(Clone, Debug)]
pub struct ReadPlan {
    pub sql: Sql,
    entity_type: String,
    fields: Vec<(String, Out)>,
    /// Column 0 is the total match count (old-style paging).
    counted: bool,
    per_page: Option<u64>,
    style: PagingStyle,
    /// The column saying every matching row's sort keys are known (see `sort`).
    sort_known: Option<usize>,
    /// The inferred shapes this plan relies on; empty when every shape is exact.
    pub classes: BTreeSet<TrustClass>,
    /// Checks of a read of the kept event log.
    log: Option<event_log::LogCheck>,
}

/// Translates a read, or says why it must go to the site, with this machine's clock as the
/// site's (see [`plan_read_at`]).
pub fn plan_read(
    req: &ReadRequest,
    cat: &Catalog,
    dialect: Dialect,
) -> Result<ReadPlan, PassThrough> {
    plan_read_at(req, cat, dialect, Utc::now())
}

/// Translates a read, or says why it must go to the site; `now` is the site's current time,
/// for relative-date relations.
pub fn plan_read_at(
    req: &ReadRequest,
    cat: &Catalog,
    dialect: Dialect,
    now: DateTime<Utc>,
) -> Result<ReadPlan, PassThrough> {
    if !req.unknown_keys.is_empty() {
        return Err(pass(
            Reason::Payload,
            format!("unknown keys {:?}", req.unknown_keys),
        ));
    }
    if req
        .additional_filter_presets
        .as_ref()
        .is_some_and(|v| !v.is_null())
    {
        return Err(pass(Reason::Payload, "additional_filter_presets"));
    }
    if cat.types.get(&req.entity_type).is_some_and(|t| t.stale) {
        return Err(pass(
            Reason::Stale,
            format!(
                "{} is further behind the site than allowed",
                req.entity_type
            ),
        ));
    }
    let root = cat.ready_type(&req.entity_type).ok_or_else(|| {
        pass(
            Reason::TypeNotCached,
            format!("{} is not cached and ready", req.entity_type),
        )
    })?;
    let mut ctx = Ctx::new(cat, dialect, now);
    let log_reach = root.event_log.then(|| event_log::reach(req)).transpose()?;

    // Which rows: retired or not (events: the follower's contiguous position), archived
    // projects, the filter.
    let mut conds = Vec::new();
    if log_reach.is_some() {
        conds.push(event_log::through_cond());
    } else {
        let mut retired = Frag::new();
        retired.lit(match req.return_only {
            ReturnOnly::Active => "NOT ",
            ReturnOnly::Retired => "",
        });
        retired.col("r", "_retired");
        conds.push(retired);
    }
    if !req.include_archived_projects {
        conds.push(archived(cat, root)?);
    }
    conds.push(filter::filter(&mut ctx, root, &req.filters)?);
    let where_ = Frag::join(conds, " AND ");

    // Order: the requested keys, nulls last ascending (first descending), then id.
    let sort::Order {
        page_terms,
        outer_terms,
        select: sort_select,
        joins: sort_joins,
        known: sort_known,
    } = sort::order(&mut ctx, root, &req.sorts)?;

    // Paging: one extra row tells whether there is a next page.
    let (limit, offset) = match req.paging {
        None => (None, 0),
        Some(p) => {
            if p.entities_per_page > MAX_PER_PAGE {
                return Err(pass(
                    Reason::Paging,
                    "entities_per_page above the site's cap",
                ));
            }
            let offset = (p.current_page - 1)
                .checked_mul(p.entities_per_page)
                .filter(|o| *o < i64::MAX as u64)
                .ok_or_else(|| pass(Reason::Paging, "page out of range"))?;
            (Some(p.entities_per_page), offset)
        }
    };

    // What to return.
    let mut fields: Vec<(String, Out)> = Vec::new();
    for rf in &req.return_fields {
        if rf == "type" || rf == "id" || fields.iter().any(|(k, _)| k == rf) {
            continue;
        }
        let out = output::return_field(&mut ctx, root, rf)?;
        fields.push((rf.clone(), out));
    }

    // Whether every matching row's sort keys are known (see `sort`), on every returned row.
    let sort_known_col = sort_known.as_ref().map(|_| {
        let mut c = Frag::new();
        c.lit("r._sort_known");
        ctx.push_col(c)
    });

    let log = log_reach.map(|reach| {
        let floor_col = ctx.push_col(event_log::floor_col());
        let mut u = Frag::new();
        u.col("r", "_unstorable");
        event_log::LogCheck {
            reach,
            floor_col,
            unstorable_col: ctx.push_col(u),
        }
    });

    let counted = req.paging_style == PagingStyle::EntityCount;
    let mut filter_joins = Frag::new();
    for j in std::mem::take(&mut ctx.filter_joins) {
        filter_joins.frag(j);
    }
    let mut from = Frag::new();
    from.ident(&root.table).lit(" r").frag(filter_joins);

    // The page selects whole rows, and the outer query joins link targets to those rows only:
    // re-joining the entity table by id lets PostgreSQL hash-join every row before paging.
    let mut page = Frag::new();
    page.lit("SELECT r.*").frag(sort_select);
    if let Some(k) = sort_known {
        page.lit(", MIN(").frag(k).lit(") OVER () AS _sort_known");
    }
    page.lit(" FROM ")
        .frag(from.clone())
        .frag(sort_joins)
        .lit(" WHERE ")
        .frag(where_.clone())
        .lit(" ORDER BY ")
        .frag(page_terms);
    if let Some(per) = limit {
        page.lit(" LIMIT ")
            .bind(SqlValue::Int(per as i64 + 1))
            .lit(" OFFSET ")
            .bind(SqlValue::Int(offset as i64));
    }

    let mut stmt = Frag::new();
    stmt.lit("SELECT ");
    if counted {
        stmt.lit("(SELECT COUNT(*) FROM ")
            .frag(from)
            .lit(" WHERE ")
            .frag(where_)
            .lit("), ");
    }
    stmt.col("r", "id");
    for c in std::mem::take(&mut ctx.select) {
        stmt.lit(", ").frag(c);
    }
    // One row even when no row matches: it carries a count, or a log read's floor.
    if counted || log.is_some() {
        stmt.lit(" FROM (SELECT 1 AS _one) _o LEFT JOIN (")
            .frag(page)
            .lit(") r ON 1=1");
    } else {
        stmt.lit(" FROM (").frag(page).lit(") r");
    }
    for j in std::mem::take(&mut ctx.output_joins) {
        stmt.frag(j);
    }
    stmt.lit(" ORDER BY ").frag(outer_terms);

    let mut sql = Sql::new(dialect);
    stmt.emit(&mut sql);
    bindable(&sql)?;
    // Output columns were numbered from 0 after `r.id` (and the count).
    let shift = 1 + counted as usize;
    let fields = fields
        .into_iter()
        .map(|(k, o)| (k, shift_out(o, shift)))
        .collect();
    Ok(ReadPlan {
        sql,
        entity_type: root.entity_type.clone(),
        fields,
        counted,
        per_page: limit,
        style: req.paging_style,
        sort_known: sort_known_col.map(|c| c + shift),
        classes: std::mem::take(&mut ctx.classes),
        log: log.map(|l| event_log::LogCheck {
            floor_col: l.floor_col + shift,
            unstorable_col: l.unstorable_col + shift,
            ..l
        }),
    })
}

/// Most values one statement may bind: PostgreSQL's protocol counts them in 16 bits (sqlx
/// refuses 65 535 and more); SQLite's default limit is 32 766. The lower of the two, so a
/// read planned on either database fits both.
pub const MAX_BINDS: usize = 32_766;

/// Refuses, before it runs, a statement the database would reject for its values (a
/// statement error is the read's own problem, but it is cheaper not to send it).
fn bindable(sql: &Sql) -> Result<(), PassThrough> {
    if sql.binds.len() > MAX_BINDS {
        return Err(pass(
            Reason::DatabaseLimit,
            format!("{} bound values (at most {MAX_BINDS})", sql.binds.len()),
        ));
    }
    let nul = sql.binds.iter().any(|b| match b {
        SqlValue::Text(t) => t.contains('\0'),
        SqlValue::Json(j) => json_has_nul(j),
        _ => false,
    });
    if nul {
        return Err(pass(Reason::DatabaseLimit, "U+0000 in a text value"));
    }
    Ok(())
}

fn json_has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(json_has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

fn shift_out(o: Out, by: usize) -> Out {
    match o {
        Out::Scalar { col, storage } => Out::Scalar {
            col: col + by,
            storage,
        },
        Out::Link { col } => Out::Link { col: col + by },
        Out::FileLink { col } => Out::FileLink { col: col + by },
        Out::Multi { col } => Out::Multi { col: col + by },
        Out::Deep { ok, inner } => Out::Deep {
            ok: ok + by,
            inner: Box::new(shift_out(*inner, by)),
        },
        // The item's columns are numbered within the item.
        Out::List { col, ok, inner } => Out::List {
            col: col + by,
            ok,
            inner,
        },
    }
}

/// `include_archived_projects: false`: hide rows whose project is archived (Project rows
/// themselves when reading projects).
fn archived(cat: &Catalog, root: &CatalogType) -> Result<Frag, PassThrough> {
    let project = cat
        .ready_type("Project")
        .filter(|p| p.ready_field("archived").is_some())
        .ok_or_else(|| pass(Reason::ArchivedProjects, "Project.archived is not cached"))?;
    let mut out = Frag::new();
    if root.entity_type == "Project" {
        // A null checkbox (sites return null for unset ones) is not archived.
        out.lit("(")
            .col("r", "archived")
            .lit(" IS NULL OR NOT ")
            .col("r", "archived")
            .lit(")");
        return Ok(out);
    }
    let f = root
        .ready_field("project")
        .filter(|f| f.storage == Storage::EntityLink)
        .ok_or_else(|| {
            pass(
                Reason::ArchivedProjects,
                format!("{}.project is not cached", root.entity_type),
            )
        })?;
    out.lit("NOT EXISTS (SELECT 1 FROM ")
        .ident(&project.table)
        .lit(" ap WHERE ")
        .col("r", &format!("{}__type", f.name))
        .lit(" = ")
        .bind(SqlValue::Text("Project".into()))
        .lit(" AND ap.")
        .ident("id")
        .lit(" = ")
        .col("r", &format!("{}__id", f.name))
        .lit(" AND ap.")
        .ident("archived")
        .lit(")");
    Ok(out)
}

impl ReadPlan {
    /// The entity type read.
    pub fn entity_type(&self) -> &str {
        &self.entity_type
    }

    /// A pass-through when some matching row sorts on a link the cache cannot name: every row
    /// carries the same flag (a window over all matching rows).
    fn order_known(&self, rows: &Rows<'_>) -> Result<(), PassThrough> {
        let Some(col) = self.sort_known else {
            return Ok(());
        };
        let unknown = rows
            .iter()
            .any(|r| matches!(r[col], Cell::Int(0) | Cell::Bool(false)));
        if unknown {
            return Err(pass(
                Reason::LinkName,
                "a sort key links to a target the cache cannot name",
            ));
        }
        Ok(())
    }

    /// A pass-through when a read of the kept event log could miss events (see
    /// [`event_log`]).
    fn log_known(&self, rows: &Rows<'_>) -> Result<(), PassThrough> {
        match &self.log {
            Some(check) => check.verify(rows, self.counted as usize, self.per_page),
            None => Ok(()),
        }
    }

    /// Turns the statement's rows into the `read` result (`{"entities", "paging_info"}`),
    /// or a pass-through when a row cannot be rendered exactly.
    pub fn render(&self, rows: &Rows<'_>) -> Result<Value, PassThrough> {
        self.order_known(rows)?;
        self.log_known(rows)?;
        let id_col = self.counted as usize;
        let total = if self.counted {
            match rows.first().map(|r| r[0]) {
                Some(Cell::Int(n)) => n,
                _ => 0,
            }
        } else {
            0
        };
        let mut entities = Vec::new();
        let mut more = false;
        for row in rows.iter() {
            let Cell::Int(id) = row[id_col] else {
                continue; // the empty page of a counted read
            };
            if self.per_page.is_some_and(|p| entities.len() as u64 >= p) {
                more = true;
                break;
            }
            entities.push(output::entity(&self.entity_type, id, &self.fields, row)?);
        }
        let paging_info = match self.style {
            PagingStyle::EntityCount => json!({ "entity_count": total }),
            _ => json!({ "has_next_page": more }),
        };
        Ok(json!({"entities": entities, "paging_info": paging_info}))
    }

    /// Like [`ReadPlan::render`], as the JSON text of the whole API3 answer
    /// (`{"results": {...}}`), written directly: the same JSON, without building it as a value.
    pub fn render_response(&self, rows: &Rows<'_>) -> Result<Vec<u8>, PassThrough> {
        self.order_known(rows)?;
        self.log_known(rows)?;
        let id_col = self.counted as usize;
        let total = match (self.counted, rows.first().map(|r| r[0])) {
            (true, Some(Cell::Int(n))) => n,
            _ => 0,
        };
        let mut out = Vec::with_capacity(64 + rows.len() * 160 * (1 + self.fields.len()) / 4);
        out.extend_from_slice(b"{\"results\":{\"entities\":[");
        let mut n = 0u64;
        let mut more = false;
        for row in rows.iter() {
            let Cell::Int(id) = row[id_col] else {
                continue; // the empty page of a counted read
            };
            if self.per_page.is_some_and(|p| n >= p) {
                more = true;
                break;
            }
            if n > 0 {
                out.push(b',');
            }
            output::text::entity(&mut out, &self.entity_type, id, &self.fields, row)?;
            n += 1;
        }
        out.extend_from_slice(b"],\"paging_info\":");
        match self.style {
            PagingStyle::EntityCount => {
                out.extend_from_slice(format!("{{\"entity_count\":{total}}}").as_bytes())
            }
            _ => out.extend_from_slice(if more {
                b"{\"has_next_page\":true}"
            } else {
                b"{\"has_next_page\":false}"
            }),
        }
        out.extend_from_slice(b"}}");
        Ok(out)
    }

    /// Runs the statement and returns the JSON text of the API3 answer (see
    /// [`ReadPlan::render_response`]). `Err` is a pass-through, as for [`ReadPlan::run`].
    /// The answer is written from cells borrowed from the rows (no value per cell).
    pub async fn run_response(&self, db: &Db) -> Result<Vec<u8>, PassThrough> {
        db.fetch_rows(&self.sql, |rows| self.render_response(rows))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "cached read failed; passing through");
                pass(Reason::Database, "the cache database failed")
            })?
    }

    /// Runs the statement and renders the answer. `Err` is a pass-through (database failure
    /// included); the caller forwards the request to the site.
    pub async fn run(&self, db: &Db) -> Result<Value, PassThrough> {
        let values = db.fetch_all(&self.sql).await.map_err(|e| {
            tracing::warn!(error = %e, "cached read failed; passing through");
            pass(Reason::Database, "the cache database failed")
        })?;
        let rows = Rows::of_values(&values);
        let value = self.render(&rows);
        // Every read the tests and the fuzzer run also checks that the text written directly
        // is the text of the value (or fails the same way).
        #[cfg(test)]
        match (&value, self.render_response(&rows)) {
            (Ok(v), Ok(text)) => assert_eq!(
                String::from_utf8(text).unwrap(),
                crate::api3::results(v.clone()).to_string()
            ),
            (Err(a), Err(b)) => assert_eq!(a, &b),
            (a, b) => panic!("render and render_response disagree: {a:?} / {b:?}"),
        }
        value
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod trust_tests;
