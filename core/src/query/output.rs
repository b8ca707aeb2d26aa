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
use super::filter::{field, hop};
use super::frag::Frag;
use super::{pass, Ctx, PassThrough, Reason};
use crate::ident;
use crate::schema::{DataType, Storage};
use crate::sql::{format_datetime, Dialect, SqlValue};

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
    /// A deep field through an entity hop: `ok` says the hop resolved as the site would.
    Deep {
        ok: usize,
        inner: Box<Out>,
    },
}

/// The output of one return field.
pub fn return_field(ctx: &mut Ctx<'_>, root: &CatalogType, path: &str) -> Result<Out, PassThrough> {
    let parts: Vec<&str> = path.split('.').collect();
    match parts.as_slice() {
        [name] => {
            let f = field(root, name)?;
            Ok(column(ctx, "r", root, f))
        }
        [hop_name, target, far] => {
            let cat = ctx.cat;
            let root = cat.types.get(&root.entity_type).expect("root is cached");
            let (h, t) = hop(ctx, root, hop_name, target)?;
            if h.storage != Storage::EntityLink {
                return Err(pass(
                    Reason::Path,
                    "deep return fields through multi-entity fields",
                ));
            }
            let far = field(t, far)?;
            if far.storage == Storage::MultiEntity {
                return Err(pass(Reason::Path, "deep multi-entity return fields"));
            }
            let d = ctx.alias();
            let (tcol, icol) = (format!("{}__type", h.name), format!("{}__id", h.name));
            let mut j = Frag::new();
            j.lit(" LEFT JOIN ")
                .ident(&t.table)
                .lit(" ")
                .alias(&d)
                .lit(" ON ")
                .col("r", &tcol)
                .lit(" = ")
                .bind(SqlValue::Text(t.entity_type.clone()))
                .lit(" AND ")
                .col(&d, "id")
                .lit(" = ")
                .col("r", &icol);
            ctx.output_joins.push(j);
            let mut ok = Frag::new();
            ok.lit("CASE WHEN ")
                .col("r", &icol)
                .lit(" IS NULL OR ")
                .col("r", &tcol)
                .lit(" <> ")
                .bind(SqlValue::Text(t.entity_type.clone()))
                .lit(" THEN 1 WHEN ")
                .col(&d, "id")
                .lit(" IS NOT NULL AND NOT ")
                .col(&d, "_retired")
                .lit(" THEN 1 ELSE 0 END");
            let ok = ctx.push_col(ok);
            let inner = column(ctx, &d, t, far);
            Ok(Out::Deep {
                ok,
                inner: Box::new(inner),
            })
        }
        _ => Err(pass(
            Reason::Path,
            format!("return field {path:?} has more than one hop"),
        )),
    }
}

fn column(ctx: &mut Ctx<'_>, alias: &str, ty: &CatalogType, f: &CatalogField) -> Out {
    match f.storage {
        Storage::EntityLink => {
            let tcol = format!("{}__type", f.name);
            let icol = format!("{}__id", f.name);
            let (name, ok) = link_name(ctx, (alias, &tcol), (alias, &icol), &f.valid_types);
            let mut t = Frag::new();
            t.col(alias, &tcol);
            let col = ctx.push_col(t);
            let mut i = Frag::new();
            i.col(alias, &icol);
            ctx.push_col(i);
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
                .lit(") FROM ")
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

/// Joins each nameable target type and returns the `name` and `ok` expressions.
fn link_name(
    ctx: &mut Ctx<'_>,
    type_col: (&str, &str),
    id_col: (&str, &str),
    valid_types: &[String],
) -> (Frag, Frag) {
    let mut names = Vec::new();
    let mut oks = Vec::new();
    for t in valid_types {
        let Some(ty) = ctx.cat.ready_type(t) else {
            continue;
        };
        let Some(nf) = ty.name_field() else {
            continue;
        };
        let j = ctx.alias();
        let mut join = Frag::new();
        join.lit(" LEFT JOIN ")
            .ident(&ty.table)
            .lit(" ")
            .alias(&j)
            .lit(" ON ")
            .col(type_col.0, type_col.1)
            .lit(" = ")
            .bind(SqlValue::Text(t.clone()))
            .lit(" AND ")
            .col(&j, "id")
            .lit(" = ")
            .col(id_col.0, id_col.1);
        ctx.output_joins.push(join);
        let mut n = Frag::new();
        n.lit(" WHEN ")
            .col(&j, "id")
            .lit(" IS NOT NULL THEN ")
            .col(&j, &nf.name);
        names.push(n);
        let mut o = Frag::new();
        o.lit("(")
            .col(&j, "id")
            .lit(" IS NOT NULL AND NOT ")
            .col(&j, "_retired")
            .lit(")");
        oks.push(o);
    }
    case_of(names, oks)
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
    let mut names = Vec::new();
    let mut oks = Vec::new();
    for t in valid_types {
        let Some(ty) = ctx.cat.ready_type(t) else {
            continue;
        };
        let Some(nf) = ty.name_field() else {
            continue;
        };
        let (n, o) = (ctx.alias(), ctx.alias());
        let mut name = Frag::new();
        name.lit(" WHEN ")
            .col(type_col.0, type_col.1)
            .lit(" = ")
            .bind(SqlValue::Text(t.clone()))
            .lit(" THEN (SELECT ")
            .col(&n, &nf.name)
            .lit(" FROM ")
            .ident(&ty.table)
            .lit(" ")
            .alias(&n)
            .lit(" WHERE ")
            .col(&n, "id")
            .lit(" = ")
            .col(id_col.0, id_col.1)
            .lit(")");
        names.push(name);
        let mut ok = Frag::new();
        ok.lit("(")
            .col(type_col.0, type_col.1)
            .lit(" = ")
            .bind(SqlValue::Text(t.clone()))
            .lit(" AND EXISTS (SELECT 1 FROM ")
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
    case_of(names, oks)
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

fn as_bool(v: &SqlValue) -> bool {
    match v {
        SqlValue::Bool(b) => *b,
        SqlValue::Int(i) => *i != 0,
        _ => false,
    }
}

fn link_json(t: &SqlValue, id: &SqlValue, name: &SqlValue, ok: bool) -> Result<Value, PassThrough> {
    let (SqlValue::Text(t), SqlValue::Int(id)) = (t, id) else {
        return Ok(Value::Null);
    };
    if !ok {
        return Err(unrenderable("a link's target is not cached, or is retired"));
    }
    let name = match name {
        SqlValue::Text(s) => json!(s),
        _ => Value::Null,
    };
    Ok(json!({"type": t, "id": id, "name": name}))
}

/// Decodes one returned key from a row.
pub fn decode(out: &Out, row: &[SqlValue]) -> Result<Value, PassThrough> {
    match out {
        Out::Scalar { col, storage } => scalar(*storage, &row[*col]),
        Out::FileLink { col } => {
            let v = scalar(Storage::Json, &row[*col])?;
            if v.get("link_type").and_then(Value::as_str) == Some("upload") {
                return Err(unrenderable("an uploaded file's signed URL"));
            }
            Ok(v)
        }
        Out::Link { col } => link_json(
            &row[*col],
            &row[col + 1],
            &row[col + 2],
            as_bool(&row[col + 3]),
        ),
        Out::Multi { col } => {
            let arr = match &row[*col] {
                SqlValue::Null => return Ok(json!([])),
                SqlValue::Json(v) => v.clone(),
                SqlValue::Text(s) => serde_json::from_str(s)
                    .map_err(|_| unrenderable("an unreadable multi-entity value"))?,
                _ => return Err(unrenderable("an unreadable multi-entity value")),
            };
            let Value::Array(items) = arr else {
                return Err(unrenderable("an unreadable multi-entity value"));
            };
            items
                .iter()
                .map(|item| {
                    let get = |i: usize| item.get(i).cloned().unwrap_or(Value::Null);
                    let t = get(0).as_str().map(|s| SqlValue::Text(s.into()));
                    let id = get(1).as_i64().map(SqlValue::Int);
                    let name = get(2).as_str().map(|s| SqlValue::Text(s.into()));
                    let ok = get(3).as_i64() == Some(1) || get(3) == Value::Bool(true);
                    link_json(
                        &t.unwrap_or(SqlValue::Null),
                        &id.unwrap_or(SqlValue::Null),
                        &name.unwrap_or(SqlValue::Null),
                        ok,
                    )
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
    }
}

fn scalar(storage: Storage, v: &SqlValue) -> Result<Value, PassThrough> {
    let bad = || unrenderable("a cached value of an unexpected kind");
    Ok(match (storage, v) {
        (_, SqlValue::Null) => Value::Null,
        (Storage::Integer, SqlValue::Int(i)) => json!(i),
        (Storage::Float, SqlValue::Float(f)) => {
            Value::Number(Number::from_f64(*f).ok_or_else(bad)?)
        }
        (Storage::Float, SqlValue::Int(i)) => json!(*i as f64),
        (Storage::Boolean, v) => Value::Bool(as_bool(v)),
        (Storage::Date, SqlValue::Date(d)) => json!(d.format("%Y-%m-%d").to_string()),
        (Storage::Date, SqlValue::Text(s)) if NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => {
            json!(s)
        }
        (Storage::DateTime, SqlValue::DateTime(t)) => json!(format_datetime(t)),
        (Storage::DateTime, SqlValue::Text(s)) if s.len() == 20 => json!(s),
        (Storage::Json, SqlValue::Json(j)) => j.clone(),
        (Storage::Json, SqlValue::Text(s)) => serde_json::from_str(s).map_err(|_| bad())?,
        (Storage::Text, SqlValue::Text(s)) => json!(s),
        _ => return Err(bad()),
    })
}

/// Builds `{"type": T, "id": N, ...fields}` for one row.
pub fn entity(
    entity_type: &str,
    id: i64,
    fields: &[(String, Out)],
    row: &[SqlValue],
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
    use std::io::Write;

    use chrono::{Datelike, Timelike};
    use serde_json::Value;

    use super::{as_bool, scalar, unrenderable, Out};
    use crate::query::PassThrough;
    use crate::schema::Storage;
    use crate::sql::SqlValue;

    pub fn str(out: &mut Vec<u8>, s: &str) {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec");
    }

    fn int(out: &mut Vec<u8>, i: i64) {
        write!(out, "{i}").expect("writing to a Vec");
    }

    fn value(out: &mut Vec<u8>, v: &Value) {
        serde_json::to_writer(&mut *out, v).expect("writing to a Vec");
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`, as [`crate::sql::format_datetime`] spells it.
    fn datetime(out: &mut Vec<u8>, t: &chrono::DateTime<chrono::Utc>) {
        if (0..=9999).contains(&t.year()) {
            write!(
                out,
                "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z\"",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
            .expect("writing to a Vec");
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

    fn text_of(v: &SqlValue) -> Option<&str> {
        match v {
            SqlValue::Text(s) => Some(s),
            _ => None,
        }
    }

    /// One returned key's value, as [`super::decode`] would give it.
    pub fn decode(out: &mut Vec<u8>, o: &Out, row: &[SqlValue]) -> Result<(), PassThrough> {
        match o {
            Out::Scalar { col, storage } => match (storage, &row[*col]) {
                (_, SqlValue::Null) => out.extend_from_slice(b"null"),
                (Storage::Integer, SqlValue::Int(i)) => int(out, *i),
                (Storage::Text, SqlValue::Text(s)) => str(out, s),
                (Storage::DateTime, SqlValue::DateTime(t)) => datetime(out, t),
                (storage, v) => value(out, &scalar(*storage, v)?),
            },
            Out::Link { col } => {
                let id = match &row[col + 1] {
                    SqlValue::Int(i) => Some(*i),
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
                let parsed;
                let arr = match &row[*col] {
                    SqlValue::Null => {
                        out.extend_from_slice(b"[]");
                        return Ok(());
                    }
                    SqlValue::Json(v) => v,
                    SqlValue::Text(s) => {
                        parsed = serde_json::from_str::<Value>(s)
                            .map_err(|_| unrenderable("an unreadable multi-entity value"))?;
                        &parsed
                    }
                    _ => return Err(unrenderable("an unreadable multi-entity value")),
                };
                let Value::Array(items) = arr else {
                    return Err(unrenderable("an unreadable multi-entity value"));
                };
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    let get = |i: usize| item.get(i).unwrap_or(&Value::Null);
                    let ok = get(3).as_i64() == Some(1) || *get(3) == Value::Bool(true);
                    link(out, get(0).as_str(), get(1).as_i64(), get(2).as_str(), ok)?;
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
            Out::FileLink { .. } => value(out, &super::decode(o, row)?),
        }
        Ok(())
    }

    /// `{"type": T, "id": N, ...fields}` for one row.
    pub fn entity(
        out: &mut Vec<u8>,
        entity_type: &str,
        id: i64,
        fields: &[(String, Out)],
        row: &[SqlValue],
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
}
