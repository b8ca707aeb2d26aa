//! Return fields as select columns, and result rows back into API3 JSON.
//!
//! Links carry `name` from the linked type's display field and an "ok" flag: the linked row
//! is cached and active. A link whose flag is false cannot be rendered as the site would
//! (the target is retired, missing, or of a type the cache cannot name), so the whole read
//! falls back to the site; that keeps answers exact without forcing every target type into
//! the cache.

use chrono::NaiveDate;
use serde_json::{json, Map, Number, Value};

use super::catalog::{CatalogField, CatalogType};
use super::filter::{resolve, PathHop, ResolvedPath};
use super::frag::Frag;
use super::{pass, Ctx, PassThrough, Reason};
use crate::ident;
use crate::schema::{DataType, Storage};
use crate::sql::{format_datetime, Cell, Dialect, SqlValue};
use crate::trust::TrustClass;

/// How one returned key is decoded from the row.
#[derive(Clone, Debug)]
pub enum Out {
    Scalar {
        col: usize,
        storage: Storage,
    },
    /// Four columns from `col`: type, id, name, ok.
    Link {
        col: usize,
    },
    /// A `url` (file/link) field: uploaded files carry a signed, expiring download URL, which
    /// the cache must not replay.
    FileLink {
        col: usize,
    },
    /// One column: JSON array of `[type, id, name, ok]`.
    Multi {
        col: usize,
    },
    /// A deep field through entity hops: `ok` says the hops resolved as the site would.
    Deep {
        ok: usize,
        inner: Box<Out>,
    },
    /// A deep field through a multi_entity hop: one column, a JSON array of items, each an
    /// array whose element `ok` is its flag and whose elements `inner` reads as a row.
    List {
        col: usize,
        ok: usize,
        inner: Box<Out>,
    },
}

/// The output of one return field.
pub fn return_field(ctx: &mut Ctx<'_>, root: &CatalogType, path: &str) -> Result<Out, PassThrough> {
    let cat = ctx.cat;
    let root = cat.types.get(&root.entity_type).expect("root is cached");
    let p = resolve(ctx, root, path)?;
    if p.hops.is_empty() {
        return Ok(column(ctx, "r", root, p.far));
    }
    if p.hops.len() > 1 {
        ctx.needs(TrustClass::MultiHop);
    }
    if p.hops[1..].iter().any(PathHop::multi) {
        return Err(pass(
            Reason::Path,
            "return fields through a multi-entity hop after the first",
        ));
    }
    if p.far.storage == Storage::MultiEntity {
        return Err(pass(Reason::Path, "deep multi-entity return fields"));
    }
    if p.hops[0].multi() {
        return through_multi(ctx, &p);
    }
    let mut joins = Vec::new();
    let (ok, far_alias) = entity_chain(ctx, &mut joins, "r", &p.hops);
    ctx.output_joins.extend(joins);
    let ok = ctx.push_col(ok);
    let inner = column(ctx, &far_alias, p.far_ty, p.far);
    Ok(Out::Deep {
        ok,
        inner: Box::new(inner),
    })
}

/// Joins the rows a chain of entity hops leads to from `from` (retired rows included, so the
/// flag can tell them apart) and returns the 0/1 flag "the chain resolves as the site would"
/// and the far row's alias. The chain stops, with a null far value, at a null link or one
/// of another type; a link to a row the cache lacks or holds retired clears the flag.
fn entity_chain(
    ctx: &mut Ctx<'_>,
    joins: &mut Vec<Frag>,
    from: &str,
    hops: &[PathHop<'_>],
) -> (Frag, String) {
    let mut ok = Frag::new();
    if hops.is_empty() {
        ok.lit("1");
        return (ok, from.to_string());
    }
    ok.lit("CASE");
    let mut cur = from.to_string();
    for h in hops {
        let d = ctx.alias();
        let target = SqlValue::Text(h.target.entity_type.clone());
        let (tcol, icol) = (
            format!("{}__type", h.field.name),
            format!("{}__id", h.field.name),
        );
        let mut j = Frag::new();
        j.lit(" LEFT JOIN ")
            .ident(&h.target.table)
            .lit(" ")
            .alias(&d)
            .lit(" ON ")
            .col(&cur, &tcol)
            .lit(" = ")
            .bind(target.clone())
            .lit(" AND ")
            .col(&d, "id")
            .lit(" = ")
            .col(&cur, &icol);
        joins.push(j);
        ok.lit(" WHEN ")
            .col(&cur, &icol)
            .lit(" IS NULL OR ")
            .col(&cur, &tcol)
            .lit(" <> ")
            .bind(target)
            .lit(" THEN 1 WHEN ")
            .col(&d, "id")
            .lit(" IS NULL OR ")
            .col(&d, "_retired")
            .lit(" THEN 0");
        cur = d;
    }
    ok.lit(" ELSE 1 END");
    (ok, cur)
}

/// A deep return field through a multi_entity first hop: the list of the far values of the
/// linked entities of the hop's type, in the list's order (the test site's shape; the doc
/// leaves it undefined, hence the trust class). One column: a JSON array with one
/// `[ok, value columns...]` array per linked entity of that type. Far values are limited to
/// kinds whose JSON spelling both databases write the same way as the cache reads them.
fn through_multi(ctx: &mut Ctx<'_>, p: &ResolvedPath<'_>) -> Result<Out, PassThrough> {
    ctx.needs(TrustClass::MultiEntityReturn);
    let kind_ok = matches!(
        p.far.storage,
        Storage::Integer | Storage::Text | Storage::Boolean | Storage::Date | Storage::DateTime
    ) || (p.far.storage == Storage::EntityLink);
    if !kind_ok || p.far.data_type == DataType::Url {
        return Err(pass(
            Reason::Path,
            format!(
                "{} values through a multi-entity hop",
                p.far.data_type.api_name()
            ),
        ));
    }
    let h = p.hops[0];
    let (a, t) = (ctx.alias(), ctx.alias());
    // The item's columns and joins are built apart from the statement's.
    let outer_select = std::mem::take(&mut ctx.select);
    let outer_joins = std::mem::take(&mut ctx.output_joins);
    let mut joins = Vec::new();
    let (chain_ok, far_alias) = entity_chain(ctx, &mut joins, &t, &p.hops[1..]);
    let mut ok = Frag::new();
    ok.lit("CASE WHEN ")
        .col(&t, "id")
        .lit(" IS NULL OR ")
        .col(&t, "_retired")
        .lit(" THEN 0 ELSE ")
        .frag(chain_ok)
        .lit(" END");
    let ok = ctx.push_col(ok);
    let inner = column(ctx, &far_alias, p.far_ty, p.far);
    let item_cols = std::mem::replace(&mut ctx.select, outer_select);
    let name_joins = std::mem::replace(&mut ctx.output_joins, outer_joins);
    let mut x = Frag::new();
    x.lit(match ctx.dialect {
        Dialect::Postgres => "(SELECT json_agg(json_build_array(",
        Dialect::Sqlite => "(SELECT json_group_array(json_array(",
    })
    .frag(Frag::join(item_cols, ", "))
    .lit(") ORDER BY ")
    .col(&a, "_position")
    .lit(") FROM ")
    .ident(&ident::assoc_table_name(&h.from.entity_type, &h.field.name))
    .lit(" ")
    .alias(&a)
    .lit(" LEFT JOIN ")
    .ident(&h.target.table)
    .lit(" ")
    .alias(&t)
    .lit(" ON ")
    .col(&t, "id")
    .lit(" = ")
    .col(&a, "_target_id");
    for j in joins.into_iter().chain(name_joins) {
        x.frag(j);
    }
    x.lit(" WHERE ")
        .col(&a, "_entity_id")
        .lit(" = ")
        .col("r", "id")
        .lit(" AND ")
        .col(&a, "_target_type")
        .lit(" = ")
        .bind(SqlValue::Text(h.target.entity_type.clone()))
        .lit(")");
    Ok(Out::List {
        col: ctx.push_col(x),
        ok,
        inner: Box::new(inner),
    })
}

fn column(ctx: &mut Ctx<'_>, alias: &str, ty: &CatalogType, f: &CatalogField) -> Out {
    match f.storage {
        Storage::EntityLink => {
            let tcol = format!("{}__type", f.name);
            let icol = format!("{}__id", f.name);
            let (name, ok) = link_name(ctx, (alias, &tcol), (alias, &icol), &f.valid_types);
            let retired = (super::event_log::retired_reads_null(f) && !ctx.retired_filtered)
                .then(|| retired_target(ctx, (alias, &tcol), (alias, &icol), &f.valid_types))
                .flatten();
            // A link that reads null once its target is retired: null type and id then.
            let unless_retired = |c: &str| {
                let mut x = Frag::new();
                if let Some(r) = &retired {
                    x.lit("CASE WHEN ")
                        .frag(r.clone())
                        .lit(" THEN NULL ELSE ")
                        .col(alias, c)
                        .lit(" END");
                } else {
                    x.col(alias, c);
                }
                x
            };
            let col = ctx.push_col(unless_retired(&tcol));
            ctx.push_col(unless_retired(&icol));
            ctx.push_col(name);
            ctx.push_col(ok);
            Out::Link { col }
        }
        Storage::MultiEntity => {
            let a = ctx.alias();
            let (name, ok) = link_name_probe(
                ctx,
                (&a, "_target_type"),
                (&a, "_target_id"),
                &f.valid_types,
            );
            let mut x = Frag::new();
            let agg = match ctx.dialect {
                Dialect::Postgres => "(SELECT json_agg(json_build_array(",
                Dialect::Sqlite => "(SELECT json_group_array(json_array(",
            };
            x.lit(agg)
                .col(&a, "_target_type")
                .lit(", ")
                .col(&a, "_target_id")
                .lit(", ")
                .frag(name)
                .lit(", ")
                .frag(ok)
                .lit(") ORDER BY ")
                .col(&a, "_position")
                // As text: the proxy reads the members straight from it (`text::decode`)
                // instead of building a JSON value of every one first.
                .lit(match ctx.dialect {
                    Dialect::Postgres => ")::text FROM ",
                    Dialect::Sqlite => ") FROM ",
                })
                .ident(&ident::assoc_table_name(&ty.entity_type, &f.name))
                .lit(" ")
                .alias(&a)
                .lit(" WHERE ")
                .col(&a, "_entity_id")
                .lit(" = ")
                .col(alias, "id")
                .lit(")");
            Out::Multi {
                col: ctx.push_col(x),
            }
        }
        _ if f.data_type == DataType::Url => {
            let mut x = Frag::new();
            x.col(alias, &f.name);
            Out::FileLink {
                col: ctx.push_col(x),
            }
        }
        storage => {
            let mut x = Frag::new();
            x.col(alias, &f.name);
            Out::Scalar {
                col: ctx.push_col(x),
                storage,
            }
        }
    }
}

/// The condition "the link's target is a cached row, retired" (None when no valid type is
/// cached), joining each cached target type.
fn retired_target(
    ctx: &mut Ctx<'_>,
    type_col: (&str, &str),
    id_col: (&str, &str),
    valid_types: &[String],
) -> Option<Frag> {
    let mut arms = Vec::new();
    for t in valid_types {
        let Some(ty) = ctx.cat.ready_type(t).filter(|ty| !ty.event_log) else {
            continue;
        };
        let j = ctx.alias();
        let join = target_join(&ty.table, &j, type_col, id_col, t);
        ctx.output_joins.push(join);
        let mut arm = Frag::new();
        arm.lit("(")
            .col(&j, "id")
            .lit(" IS NOT NULL AND ")
            .col(&j, "_retired")
            .lit(")");
        arms.push(arm);
    }
    (!arms.is_empty()).then(|| {
        let mut x = Frag::new();
        x.lit("(").frag(Frag::join(arms, " OR ")).lit(")");
        x
    })
}

/// `LEFT JOIN <table> <j>` on the link's type column naming `target` and its id column
/// holding the target's id: the join of one valid target type of a link.
fn target_join(
    table: &str,
    j: &str,
    type_col: (&str, &str),
    id_col: (&str, &str),
    target: &str,
) -> Frag {
    let mut join = Frag::new();
    join.lit(" LEFT JOIN ")
        .ident(table)
        .lit(" ")
        .alias(j)
        .lit(" ON ")
        .col(type_col.0, type_col.1)
        .lit(" = ")
        .bind(SqlValue::Text(target.to_string()))
        .lit(" AND ")
        .col(j, "id")
        .lit(" = ")
        .col(id_col.0, id_col.1);
    join
}

/// Joins each nameable target type and returns the `name` and `ok` expressions.
fn link_name(
    ctx: &mut Ctx<'_>,
    type_col: (&str, &str),
    id_col: (&str, &str),
    valid_types: &[String],
) -> (Frag, Frag) {
    let (joins, names, oks) = join_arms(ctx, type_col, id_col, valid_types, false);
    ctx.output_joins.extend(joins);
    case_of(names, oks)
}

/// The field naming links to `ty` (see [`CatalogType::name_field`]); a display field the
/// reference does not confirm makes the plan rely on [`TrustClass::LinkName`].
fn named_by<'a>(ctx: &mut Ctx<'_>, ty: &'a CatalogType) -> Option<&'a CatalogField> {
    let nf = ty.name_field()?;
    if !crate::trust::display_field_confirmed(&ty.entity_type, &nf.name) {
        ctx.needs(TrustClass::LinkName);
    }
    Some(nf)
}

/// Per valid target type that the cache can name: a `LEFT JOIN` of the target table, the
/// `WHEN` arm of its name (`''` for a null name when `null_as_empty`, as sorting needs) and
/// the condition that the link resolves to an active row of it.
pub(super) fn join_arms(
    ctx: &mut Ctx<'_>,
    type_col: (&str, &str),
    id_col: (&str, &str),
    valid_types: &[String],
    null_as_empty: bool,
) -> (Vec<Frag>, Vec<Frag>, Vec<Frag>) {
    let (mut joins, mut names, mut oks) = (Vec::new(), Vec::new(), Vec::new());
    for t in valid_types {
        let Some(ty) = ctx.cat.ready_type(t) else {
            continue;
        };
        let Some(nf) = named_by(ctx, ty) else {
            continue;
        };
        let j = ctx.alias();
        let join = target_join(&ty.table, &j, type_col, id_col, t);
        joins.push(join);
        let mut n = Frag::new();
        n.lit(" WHEN ").col(&j, "id").lit(" IS NOT NULL THEN ");
        if null_as_empty {
            n.lit("COALESCE(").col(&j, &nf.name).lit(", '')");
        } else {
            n.col(&j, &nf.name);
        }
        names.push(n);
        let mut o = Frag::new();
        o.lit("(")
            .col(&j, "id")
            .lit(" IS NOT NULL AND NOT ")
            .col(&j, "_retired")
            .lit(")");
        oks.push(o);
    }
    (joins, names, oks)
}

/// Like [`link_name`], for the targets of a multi-entity list: each name and flag is a probe of
/// the target's primary key (correlated scalar subqueries) instead of a join. Inside the
/// per-row aggregate PostgreSQL costed the join of a small target table as a hash join and
/// scanned the whole target table once per returned row; a key probe costs the same at any size.
fn link_name_probe(
    ctx: &mut Ctx<'_>,
    type_col: (&str, &str),
    id_col: (&str, &str),
    valid_types: &[String],
) -> (Frag, Frag) {
    let (names, oks) = probe_arms(ctx, type_col, id_col, valid_types, false);
    case_of(names, oks)
}

/// Per valid target type that the cache can name: the `WHEN` arm of its name (a key probe
/// of the target table; `''` for a null name when `null_as_empty`, as sorting needs) and the
/// condition that the link resolves to an active row of it.
pub(super) fn probe_arms(
    ctx: &mut Ctx<'_>,
    type_col: (&str, &str),
    id_col: (&str, &str),
    valid_types: &[String],
    null_as_empty: bool,
) -> (Vec<Frag>, Vec<Frag>) {
    let mut names = Vec::new();
    let mut oks = Vec::new();
    for t in valid_types {
        let Some(ty) = ctx.cat.ready_type(t) else {
            continue;
        };
        let Some(nf) = named_by(ctx, ty) else {
            continue;
        };
        let (n, o) = (ctx.alias(), ctx.alias());
        let is_type = |f: &mut Frag| {
            f.col(type_col.0, type_col.1)
                .lit(" = ")
                .bind(SqlValue::Text(t.clone()));
        };
        let mut name = Frag::new();
        name.lit(" WHEN ");
        is_type(&mut name);
        name.lit(if null_as_empty {
            " THEN COALESCE((SELECT "
        } else {
            " THEN (SELECT "
        })
        .col(&n, &nf.name)
        .lit(" FROM ")
        .ident(&ty.table)
        .lit(" ")
        .alias(&n)
        .lit(" WHERE ")
        .col(&n, "id")
        .lit(" = ")
        .col(id_col.0, id_col.1)
        .lit(if null_as_empty { "), '')" } else { ")" });
        names.push(name);
        let mut ok = Frag::new();
        ok.lit("(");
        is_type(&mut ok);
        ok.lit(" AND EXISTS (SELECT 1 FROM ")
            .ident(&ty.table)
            .lit(" ")
            .alias(&o)
            .lit(" WHERE ")
            .col(&o, "id")
            .lit(" = ")
            .col(id_col.0, id_col.1)
            .lit(" AND NOT ")
            .col(&o, "_retired")
            .lit("))");
        oks.push(ok);
    }
    (names, oks)
}

/// The name expression (`CASE` over the `WHEN` arms in `names`, or `NULL` without any) and
/// the 0/1 flag (1 when any of `oks` holds) of [`link_name`] and [`link_name_probe`].
fn case_of(names: Vec<Frag>, oks: Vec<Frag>) -> (Frag, Frag) {
    let mut name = Frag::new();
    let mut ok = Frag::new();
    if names.is_empty() {
        name.lit("NULL");
        ok.lit("0");
    } else {
        name.lit("CASE");
        for n in names {
            name.frag(n);
        }
        name.lit(" END");
        ok.lit("CASE WHEN ")
            .frag(Frag::join(oks, " OR "))
            .lit(" THEN 1 ELSE 0 END");
    }
    (name, ok)
}

/// Why a row could not be rendered from the cache.
pub fn unrenderable(what: &str) -> PassThrough {
    pass(Reason::LinkName, what.to_string())
}

fn as_bool(v: &Cell<'_>) -> bool {
    match v {
        Cell::Bool(b) => *b,
        Cell::Int(i) => *i != 0,
        _ => false,
    }
}

fn link_json(t: Cell<'_>, id: Cell<'_>, name: Cell<'_>, ok: bool) -> Result<Value, PassThrough> {
    let (Cell::Text(t), Cell::Int(id)) = (t, id) else {
        return Ok(Value::Null);
    };
    if !ok {
        return Err(unrenderable("a link's target is not cached, or is retired"));
    }
    let name = match name {
        Cell::Text(s) => json!(s),
        _ => Value::Null,
    };
    Ok(json!({"type": t, "id": id, "name": name}))
}

/// Decodes one returned key from a row.
pub fn decode(out: &Out, row: &[Cell<'_>]) -> Result<Value, PassThrough> {
    match out {
        Out::Scalar { col, storage } => scalar(*storage, row[*col]),
        Out::FileLink { col } => {
            let v = scalar(Storage::Json, row[*col])?;
            if v.get("link_type").and_then(Value::as_str) == Some("upload") {
                return Err(unrenderable("an uploaded file's signed URL"));
            }
            Ok(v)
        }
        Out::Link { col } => link_json(
            row[*col],
            row[col + 1],
            row[col + 2],
            as_bool(&row[col + 3]),
        ),
        Out::Multi { col } => {
            let arr = match row[*col] {
                Cell::Null => return Ok(json!([])),
                c => {
                    json_value(c).ok_or_else(|| unrenderable("an unreadable multi-entity value"))?
                }
            };
            let Value::Array(items) = arr else {
                return Err(unrenderable("an unreadable multi-entity value"));
            };
            items
                .iter()
                .map(|item| {
                    let get = |i: usize| item.get(i).unwrap_or(&Value::Null);
                    let t = get(0).as_str().map_or(Cell::Null, Cell::Text);
                    let id = get(1).as_i64().map_or(Cell::Null, Cell::Int);
                    let name = get(2).as_str().map_or(Cell::Null, Cell::Text);
                    let ok = get(3).as_i64() == Some(1) || get(3) == &Value::Bool(true);
                    link_json(t, id, name, ok)
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        Out::Deep { ok, inner } => {
            if !as_bool(&row[*ok]) {
                return Err(unrenderable(
                    "a deep field's link target is not cached or is retired",
                ));
            }
            decode(inner, row)
        }
        Out::List { col, ok, inner } => {
            let bad = || unrenderable("an unreadable list of deep values");
            let arr = match row[*col] {
                Cell::Null => return Ok(json!([])),
                c => json_value(c).ok_or_else(bad)?,
            };
            let Value::Array(items) = arr else {
                return Err(bad());
            };
            items
                .iter()
                .map(|item| {
                    let Value::Array(cells) = item else {
                        return Err(bad());
                    };
                    let cells: Vec<Cell<'_>> = cells.iter().map(json_cell).collect();
                    if !cells.get(*ok).is_some_and(as_bool) {
                        return Err(unrenderable(
                            "a deep field's link target is not cached or is retired",
                        ));
                    }
                    decode(inner, &item_row(inner, cells))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
    }
}

/// A JSON cell's value: parsed already, or parsed from its text (PostgreSQL's, or SQLite's,
/// which keeps JSON as text); None for any other cell or text that is not JSON.
fn json_value(c: Cell<'_>) -> Option<Value> {
    match c {
        Cell::Json(v) => Some(v.clone()),
        Cell::Text(s) | Cell::JsonText(s) => serde_json::from_str(s).ok(),
        _ => None,
    }
}

/// One cell of a [`Out::List`] item as the database would have returned it as a column.
fn json_cell(v: &Value) -> Cell<'_> {
    match v {
        Value::Bool(b) => Cell::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cell::Int(i),
            None => n.as_f64().map_or(Cell::Null, Cell::Float),
        },
        Value::String(s) => Cell::Text(s),
        _ => Cell::Null,
    }
}

/// PostgreSQL writes a timestamptz in JSON as `2024-05-15T10:30:00+00:00`; SQLite keeps the
/// cache's own text. Both become the instant the scalar reader expects.
fn item_row<'a>(inner: &Out, mut cells: Vec<Cell<'a>>) -> Vec<Cell<'a>> {
    if let Out::Scalar {
        col,
        storage: Storage::DateTime,
    } = inner
    {
        if let Some(Cell::Text(s)) = cells.get(*col) {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                cells[*col] = Cell::DateTime(t.to_utc());
            }
        }
    }
    cells
}

fn scalar(storage: Storage, v: Cell<'_>) -> Result<Value, PassThrough> {
    let bad = || unrenderable("a cached value of an unexpected kind");
    Ok(match (storage, v) {
        (_, Cell::Null) => Value::Null,
        (Storage::Integer, Cell::Int(i)) => json!(i),
        (Storage::Float, Cell::Float(f)) => Value::Number(Number::from_f64(f).ok_or_else(bad)?),
        (Storage::Float, Cell::Int(i)) => json!(i as f64),
        (Storage::Boolean, v) => Value::Bool(as_bool(&v)),
        (Storage::Date, Cell::Date(d)) => json!(d.format("%Y-%m-%d").to_string()),
        (Storage::Date, Cell::Text(s)) if NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => {
            json!(s)
        }
        (Storage::DateTime, Cell::DateTime(t)) => json!(format_datetime(&t)),
        (Storage::DateTime, Cell::Text(s)) if s.len() == 20 => json!(s),
        (Storage::Json, v) => json_value(v).ok_or_else(bad)?,
        (Storage::Text, Cell::Text(s)) => json!(s),
        _ => return Err(bad()),
    })
}

/// Builds `{"type": T, "id": N, ...fields}` for one row.
pub fn entity(
    entity_type: &str,
    id: i64,
    fields: &[(String, Out)],
    row: &[Cell<'_>],
) -> Result<Value, PassThrough> {
    let mut m = Map::new();
    m.insert("type".into(), json!(entity_type));
    m.insert("id".into(), json!(id));
    for (key, out) in fields {
        m.insert(key.clone(), decode(out, row)?);
    }
    Ok(Value::Object(m))
}

/// Writes JSON text straight into a buffer: the same text `serde_json` writes for the value
/// [`entity`] builds (same keys in the same order, same spelling of every value), without
/// building the value first. A page of 50 built as a `Value` cost the proxy more CPU (maps,
/// hashing, allocations) than the database spent answering it.
pub mod text {
    use chrono::{Datelike, Timelike};
    use serde_json::Value;

    use super::{as_bool, scalar, unrenderable, Out};
    use crate::query::PassThrough;
    use crate::schema::Storage;
    use crate::sql::Cell;

    pub fn str(out: &mut Vec<u8>, s: &str) {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec");
    }

    /// Through `itoa`: `write!` goes through the formatting machinery, which was a tenth
    /// of the proxy's CPU on a page of 50 (ids, and every part of every date).
    fn int(out: &mut Vec<u8>, i: i64) {
        out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
    }

    /// `n` (< 10^width) in `width` digits, zero-padded.
    fn digits(out: &mut Vec<u8>, n: u32, width: usize) {
        let mut buf = [b'0'; 4];
        let mut n = n;
        for d in buf[..width].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&buf[..width]);
    }

    fn value(out: &mut Vec<u8>, v: &Value) {
        serde_json::to_writer(&mut *out, v).expect("writing to a Vec");
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`, as [`crate::sql::format_datetime`] spells it.
    fn datetime(out: &mut Vec<u8>, t: &chrono::DateTime<chrono::Utc>) {
        if (0..=9999).contains(&t.year()) {
            out.push(b'"');
            digits(out, t.year() as u32, 4);
            for (sep, n) in [
                (b'-', t.month()),
                (b'-', t.day()),
                (b'T', t.hour()),
                (b':', t.minute()),
                (b':', t.second()),
            ] {
                out.push(sep);
                digits(out, n, 2);
            }
            out.extend_from_slice(b"Z\"");
        } else {
            str(out, &crate::sql::format_datetime(t));
        }
    }

    fn link(
        out: &mut Vec<u8>,
        t: Option<&str>,
        id: Option<i64>,
        name: Option<&str>,
        ok: bool,
    ) -> Result<(), PassThrough> {
        let (Some(t), Some(id)) = (t, id) else {
            out.extend_from_slice(b"null");
            return Ok(());
        };
        if !ok {
            return Err(unrenderable("a link's target is not cached, or is retired"));
        }
        out.extend_from_slice(b"{\"type\":");
        str(out, t);
        out.extend_from_slice(b",\"id\":");
        int(out, id);
        out.extend_from_slice(b",\"name\":");
        match name {
            Some(n) => str(out, n),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
        Ok(())
    }

    fn text_of<'a>(v: &Cell<'a>) -> Option<&'a str> {
        match v {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }

    /// One returned key's value, as [`super::decode`] would give it.
    pub fn decode(out: &mut Vec<u8>, o: &Out, row: &[Cell<'_>]) -> Result<(), PassThrough> {
        match o {
            Out::Scalar { col, storage } => match (storage, row[*col]) {
                (_, Cell::Null) => out.extend_from_slice(b"null"),
                (Storage::Integer, Cell::Int(i)) => int(out, i),
                (Storage::Text, Cell::Text(s)) => str(out, s),
                (Storage::DateTime, Cell::DateTime(t)) => datetime(out, &t),
                (storage, v) => value(out, &scalar(*storage, v)?),
            },
            Out::Link { col } => {
                let id = match row[col + 1] {
                    Cell::Int(i) => Some(i),
                    _ => None,
                };
                link(
                    out,
                    text_of(&row[*col]),
                    id,
                    text_of(&row[col + 2]),
                    as_bool(&row[col + 3]),
                )?;
            }
            Out::Multi { col } => {
                let parsed: Option<Value>;
                let members = match row[*col] {
                    Cell::Null => {
                        out.extend_from_slice(b"[]");
                        return Ok(());
                    }
                    // A string with escapes cannot be borrowed: through a value then.
                    Cell::Text(s) | Cell::JsonText(s) => match Members::parse(s) {
                        Some(m) => Some(m),
                        None => {
                            parsed = serde_json::from_str(s).ok();
                            parsed.as_ref().and_then(Members::of_value)
                        }
                    },
                    Cell::Json(v) => Members::of_value(v),
                    _ => None,
                }
                .ok_or_else(|| unrenderable("an unreadable multi-entity value"))?;
                out.push(b'[');
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    link(out, m.0, m.1, m.2, m.renderable())?;
                }
                out.push(b']');
            }
            Out::Deep { ok, inner } => {
                if !as_bool(&row[*ok]) {
                    return Err(unrenderable(
                        "a deep field's link target is not cached or is retired",
                    ));
                }
                decode(out, inner, row)?;
            }
            Out::FileLink { .. } | Out::List { .. } => value(out, &super::decode(o, row)?),
        }
        Ok(())
    }

    /// A multi-entity value as the statement aggregates it: `[type, id, name, ok]` per
    /// member. Read from the text without building a JSON value per member: the strings
    /// are borrowed from it (text whose strings hold escapes is read through a value).
    struct Members<'a>(Vec<Member<'a>>);

    /// The last: the member's "renderable" column, 1/0 from PostgreSQL, true/false or 1/0
    /// from SQLite.
    #[derive(serde::Deserialize)]
    struct Member<'a>(Option<&'a str>, Option<i64>, Option<&'a str>, Value);

    impl Member<'_> {
        fn renderable(&self) -> bool {
            self.3 == Value::Bool(true) || self.3.as_i64() == Some(1)
        }
    }

    impl<'a> Members<'a> {
        fn parse(text: &'a str) -> Option<Members<'a>> {
            serde_json::from_str::<Vec<Member<'a>>>(text)
                .ok()
                .map(Members)
        }

        /// A value decoded already (a JSON column).
        fn of_value(v: &'a Value) -> Option<Members<'a>> {
            let items = v.as_array()?;
            Some(Members(
                items
                    .iter()
                    .map(|item| {
                        let get = |i: usize| item.get(i).unwrap_or(&Value::Null);
                        Member(
                            get(0).as_str(),
                            get(1).as_i64(),
                            get(2).as_str(),
                            get(3).clone(),
                        )
                    })
                    .collect(),
            ))
        }

        fn iter(&self) -> impl Iterator<Item = &Member<'a>> {
            self.0.iter()
        }
    }

    /// `{"type": T, "id": N, ...fields}` for one row.
    pub fn entity(
        out: &mut Vec<u8>,
        entity_type: &str,
        id: i64,
        fields: &[(String, Out)],
        row: &[Cell<'_>],
    ) -> Result<(), PassThrough> {
        out.extend_from_slice(b"{\"type\":");
        str(out, entity_type);
        out.extend_from_slice(b",\"id\":");
        int(out, id);
        for (key, o) in fields {
            out.push(b',');
            str(out, key);
            out.push(b':');
            decode(out, o, row)?;
        }
        out.push(b'}');
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use serde_json::{json, Value};

        use super::super::Out;
        use crate::sql::Cell;

        /// The text written for one multi-entity cell, and the value the slower path builds.
        fn both(cell: Cell<'_>) -> (Result<Value, String>, Result<Value, String>) {
            let out = Out::Multi { col: 0 };
            let row = [cell];
            let mut text = Vec::new();
            let written = super::decode(&mut text, &out, &row)
                .map(|()| serde_json::from_slice(&text).unwrap())
                .map_err(|e| e.detail);
            let value = super::super::decode(&out, &row).map_err(|e| e.detail);
            (written, value)
        }

        #[test]
        fn multi_entity_text_is_read_as_the_value_path_reads_it() {
            let cases = [
                // PostgreSQL's spelling (spaces, 1/0), SQLite's (true/false, no spaces).
                r#"[["Asset", 1, "a", 1], ["Asset", 2, null, 1]]"#,
                r#"[["Asset",1,"a",true]]"#,
                // Escapes: not borrowable, read through a value.
                r#"[["Asset", 3, "say \"hi\"\n\u00e9", 1]]"#,
                // A member that cannot be rendered, and ones that do not have the shape.
                r#"[["Asset", 4, "x", 0]]"#,
                r#"[["Asset", 5, "x", false]]"#,
                r#"[["Asset", 6.5, "x", 1]]"#,
                r#"[["Asset", 7]]"#,
                r#"{"not": "a list"}"#,
                r#"[null, null, "#,
                "[]",
            ];
            for case in cases {
                let (written, value) = both(Cell::Text(case));
                assert_eq!(written, value, "{case}");
                assert_eq!(both(Cell::JsonText(case)).0, written, "{case} as JSON text");
                if let Ok(v) = serde_json::from_str::<Value>(case) {
                    let (from_json, _) = both(Cell::Json(&v));
                    assert_eq!(from_json, written, "{case} as a JSON column");
                }
            }
            assert_eq!(
                both(Cell::Text(r#"[["Asset", 3, "say \"hi\"", 1]]"#)).0,
                Ok(json!([{"type": "Asset", "id": 3, "name": "say \"hi\""}]))
            );
            assert_eq!(both(Cell::Null).0, Ok(json!([])));
        }
    }
}
