//! The filter engine (doc section 5): compiles the wire filter tree against the schema once,
//! then evaluates rows. Every negative relation is the exact negation of its positive twin,
//! so nulls match negative relations (`is_not`, `not_in`, `not_contains`, `not_between`,
//! `not_in_last`, `type_is_not`, `name_not_contains` ...), as the doc states or infers.
//! Through a multi_entity hop the positive relation is existential and the negation is
//! applied after the hop ("no linked entity satisfies it", doc 5.4).

use std::cmp::Ordering;

use serde_json::Value;
use sgcache::api3::{Api3Error, Condition, Filter, LogicalOperator};
use sgcache::schema::DataType;

use crate::codec::tag_name;
use crate::dates;
use crate::semantics::NullHop;
use crate::store::{Row, Store};
use crate::value::*;

/// A path resolved against the schema: zero or more link hops, then a field.
#[derive(Clone, Debug)]
pub struct Path {
    /// The type the path starts from.
    pub root: Ty,
    pub hops: Vec<Hop>,
    /// The final field on the final type; `None` is `id`.
    pub field: Option<u16>,
    pub data_type: DataType,
}

#[derive(Clone, Debug)]
pub struct Hop {
    pub field: u16,
    pub multi: bool,
    pub target: Ty,
}

/// A filter value, normalised for comparison (text folded as the site's
/// [`crate::semantics::TextCase`] says).
#[derive(Clone, Debug, PartialEq)]
pub enum Sc {
    Text(String),
    Num(f64),
    Bool(bool),
    Day(i32),
    Secs(i64),
    Link(Link),
}

#[derive(Clone, Debug)]
pub enum Pred {
    IsNull,
    Eq(Sc),
    In(Vec<Sc>, bool),
    Lt(Sc),
    Gt(Sc),
    Between(Option<Sc>, Option<Sc>),
    Contains(String),
    StartsWith(String),
    EndsWith(String),
    /// `None` tests for an empty field; an unknown type name never matches.
    TypeIs(Option<Option<Ty>>),
    NameIs(String),
    NameContains(String),
    NameStartsWith(String),
    NameEndsWith(String),
}

#[derive(Clone, Debug)]
pub struct Cond {
    pub path: Path,
    pub pred: Pred,
    pub negate: bool,
}

#[derive(Clone, Debug)]
pub enum Compiled {
    Cond(Cond),
    All(Vec<Compiled>),
    Any(Vec<Compiled>),
}

/// Resolves `field` or `field.Type.field2[...]` starting at type `ty`.
pub fn resolve_path(store: &Store, ty: Ty, path: &str) -> Result<Path, Api3Error> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.len() % 2 == 0 {
        return Err(Api3Error::bad_request(format!(
            "Invalid path '{path}': deep paths are field.EntityType.field"
        )));
    }
    let mut cur = ty;
    let mut hops = Vec::new();
    for pair in parts[..parts.len() - 1].chunks(2) {
        let f = store.field(cur, pair[0])?;
        let meta = &store.table(cur).fields[f as usize];
        let multi = match meta.data_type {
            DataType::Entity => false,
            DataType::MultiEntity | DataType::Addressing => true,
            _ => {
                return Err(Api3Error::bad_request(format!(
                    "Invalid path '{path}': '{}' is not an entity field",
                    pair[0]
                )))
            }
        };
        let target = store.ty(pair[1])?;
        if !meta.valid_types.contains(&target) {
            return Err(Api3Error::bad_request(format!(
                "Invalid path '{path}': '{}' cannot link to '{}'",
                pair[0], pair[1]
            )));
        }
        hops.push(Hop {
            field: f,
            multi,
            target,
        });
        cur = target;
    }
    let last = parts[parts.len() - 1];
    let field = store.field(cur, last)?;
    let data_type = store.table(cur).fields[field as usize].data_type.clone();
    let field = (last != "id").then_some(field);
    Ok(Path {
        root: ty,
        hops,
        field,
        data_type,
    })
}

/// Relations accepted per data type (doc 5.2).
fn allowed(dt: &DataType, rel: &str) -> bool {
    use DataType::*;
    const EQ: &[&str] = &["is", "is_not", "in", "not_in"];
    const TEXT: &[&str] = &["contains", "not_contains", "starts_with", "ends_with"];
    const NUM: &[&str] = &["less_than", "greater_than", "between", "not_between"];
    const DATES: &[&str] = &[
        "in_last",
        "not_in_last",
        "in_next",
        "not_in_next",
        "in_calendar_day",
        "in_calendar_week",
        "in_calendar_month",
        "in_calendar_year",
    ];
    const LINK: &[&str] = &["type_is", "type_is_not"];
    const NAME: &[&str] = &[
        "name_is",
        "name_contains",
        "name_not_contains",
        "name_starts_with",
        "name_ends_with",
    ];
    let any = |sets: &[&[&str]]| sets.iter().any(|s| s.contains(&rel));
    match dt {
        Text => any(&[EQ, TEXT]),
        Number | Float | Currency | Percent | Duration | Timecode => any(&[EQ, NUM]),
        Date | DateTime => any(&[EQ, NUM, DATES]),
        Checkbox => rel == "is" || rel == "is_not",
        List | StatusList | EntityType | Uuid | Color | Footage | SystemTaskType => any(&[EQ]),
        Entity | MultiEntity => any(&[EQ, LINK, NAME]),
        Addressing => any(&[EQ, LINK, NAME, &["contains", "not_contains"]]),
        TagList => any(&[&["is", "is_not"], &["name_contains", "name_not_contains"]]),
        Image => rel == "is" || rel == "is_not",
        _ => false,
    }
}

pub fn compile(store: &Store, ty: Ty, filter: &Filter, now: i64) -> Result<Compiled, Api3Error> {
    Ok(match filter {
        Filter::Condition(c) => Compiled::Cond(compile_cond(store, ty, c, now)?),
        Filter::Group { op, conditions } => {
            let parts = conditions
                .iter()
                .map(|f| compile(store, ty, f, now))
                .collect::<Result<Vec<_>, _>>()?;
            match op {
                LogicalOperator::And => Compiled::All(parts),
                LogicalOperator::Or => Compiled::Any(parts),
            }
        }
    })
}

fn invalid(c: &Condition, why: impl std::fmt::Display) -> Api3Error {
    Api3Error::bad_request(format!(
        "Invalid filter: {} {} {}: {why}",
        c.path,
        c.relation,
        Value::Array(c.values.clone())
    ))
}

fn compile_cond(store: &Store, ty: Ty, c: &Condition, now: i64) -> Result<Cond, Api3Error> {
    let path = resolve_path(store, ty, &c.path)?;
    let dt = &path.data_type;
    if !allowed(dt, &c.relation) {
        return Err(invalid(
            c,
            format!("relation not valid for a {} field", dt.api_name()),
        ));
    }
    let (rel, negate) = positive(&c.relation);
    let pred = build_pred(store, dt, rel, c, now)?;
    Ok(Cond { path, pred, negate })
}

/// Splits a relation into its positive form and whether it is negated.
fn positive(rel: &str) -> (&str, bool) {
    match rel {
        "is_not" => ("is", true),
        "not_in" => ("in", true),
        "not_contains" => ("contains", true),
        "not_between" => ("between", true),
        "not_in_last" => ("in_last", true),
        "not_in_next" => ("in_next", true),
        "type_is_not" => ("type_is", true),
        "name_not_contains" => ("name_contains", true),
        other => (other, false),
    }
}

fn one(c: &Condition) -> Result<&Value, Api3Error> {
    match c.values.as_slice() {
        [v] => Ok(v),
        [] => Err(invalid(c, "needs a value")),
        _ => Err(invalid(c, "takes exactly one value")),
    }
}

fn text_arg(store: &Store, c: &Condition) -> Result<String, Api3Error> {
    match one(c)? {
        Value::String(s) => Ok(store.semantics.fold(s).into_owned()),
        Value::Null => Ok(String::new()),
        v => Err(invalid(c, format!("{v} is not a string"))),
    }
}

fn build_pred(
    store: &Store,
    dt: &DataType,
    rel: &str,
    c: &Condition,
    now: i64,
) -> Result<Pred, Api3Error> {
    let scalar = |v: &Value| scalar(store, dt, c, v);
    Ok(match rel {
        "is" => match one(c)? {
            Value::Null if *dt == DataType::Checkbox => {
                return Err(invalid(c, "a checkbox cannot be compared with null"))
            }
            Value::Null => Pred::IsNull,
            v if *dt == DataType::Image => {
                return Err(invalid(
                    c,
                    format!("{v}: image fields only compare with null"),
                ))
            }
            v => Pred::Eq(scalar(v)?),
        },
        "in" => {
            let has_null = c.values.iter().any(Value::is_null);
            let vals = c.values.iter().filter(|v| !v.is_null()).map(scalar);
            Pred::In(vals.collect::<Result<_, _>>()?, has_null)
        }
        "less_than" | "greater_than" => {
            let v = one(c)?;
            if v.is_null() {
                return Err(invalid(c, "needs a non-null value"));
            }
            let s = scalar(v)?;
            if rel == "less_than" {
                Pred::Lt(s)
            } else {
                Pred::Gt(s)
            }
        }
        "between" => match c.values.as_slice() {
            [lo, hi] => {
                let opt = |v: &Value| (!v.is_null()).then(|| scalar(v)).transpose();
                Pred::Between(opt(lo)?, opt(hi)?)
            }
            _ => return Err(invalid(c, "needs two values")),
        },
        "contains" if matches!(dt, DataType::Addressing) => Pred::Eq(scalar(one(c)?)?),
        "contains" => Pred::Contains(text_arg(store, c)?),
        "starts_with" => Pred::StartsWith(text_arg(store, c)?),
        "ends_with" => Pred::EndsWith(text_arg(store, c)?),
        "name_is" => Pred::NameIs(text_arg(store, c)?),
        "name_contains" => Pred::NameContains(text_arg(store, c)?),
        "name_starts_with" => Pred::NameStartsWith(text_arg(store, c)?),
        "name_ends_with" => Pred::NameEndsWith(text_arg(store, c)?),
        "type_is" => match one(c)? {
            Value::Null => Pred::TypeIs(None),
            Value::String(t) => Pred::TypeIs(Some(store.by_name.get(t).copied())),
            v => return Err(invalid(c, format!("{v} is not an entity type name"))),
        },
        _ => {
            let (lo, hi) = dates::window(rel, &c.values, now, store.semantics.week_start)
                .map_err(|e| invalid(c, e))?;
            match dt {
                DataType::Date => Pred::Between(
                    Some(Sc::Day(dates::day_of(lo))),
                    Some(Sc::Day(dates::day_of(hi))),
                ),
                _ => Pred::Between(Some(Sc::Secs(lo)), Some(Sc::Secs(hi))),
            }
        }
    })
}

/// A filter value for a field of type `dt`.
fn scalar(store: &Store, dt: &DataType, c: &Condition, v: &Value) -> Result<Sc, Api3Error> {
    use DataType::*;
    let wrong = |what: &str| invalid(c, format!("{v} is not {what}"));
    Ok(match dt {
        Text | Footage | Color | EntityType | Uuid | SystemTaskType | List | StatusList => {
            let text = v.as_str().ok_or_else(|| wrong("a string"))?;
            Sc::Text(store.semantics.fold(text).into_owned())
        }
        Number | Float | Currency | Percent | Duration | Timecode => {
            Sc::Num(v.as_f64().ok_or_else(|| wrong("a number"))?)
        }
        Checkbox => Sc::Bool(v.as_bool().ok_or_else(|| wrong("true or false"))?),
        Date => Sc::Day(
            v.as_str()
                .and_then(|s| parse_date(s).or_else(|| parse_date_time(s).map(dates::day_of)))
                .ok_or_else(|| wrong("a date 'YYYY-MM-DD'"))?,
        ),
        DateTime => Sc::Secs(
            v.as_str()
                .and_then(|s| {
                    parse_date_time(s).or_else(|| parse_date(s).map(|d| d as i64 * 86_400))
                })
                .ok_or_else(|| wrong("a date_time 'YYYY-MM-DDTHH:MM:SSZ'"))?,
        ),
        Entity | MultiEntity | Addressing => {
            let t = v.get("type").and_then(Value::as_str);
            let id = v.get("id").and_then(Value::as_u64);
            let (Some(t), Some(id)) = (t, id) else {
                return Err(wrong("an entity {\"type\", \"id\"}"));
            };
            Sc::Link(Link {
                ty: store.ty(t)?,
                id: u32::try_from(id).map_err(|_| wrong("a valid id"))?,
            })
        }
        TagList => Sc::Text(
            store
                .semantics
                .fold(tag_name(v).ok_or_else(|| wrong("a tag name"))?)
                .into_owned(),
        ),
        _ => return Err(wrong("filterable")),
    })
}

fn cmp(store: &Store, v: &Val, s: &Sc) -> Option<Ordering> {
    match (v, s) {
        (Val::Int(i), Sc::Num(x)) => (*i as f64).partial_cmp(x),
        (Val::Float(f), Sc::Num(x)) => f.partial_cmp(x),
        (Val::Date(d), Sc::Day(x)) => Some(d.cmp(x)),
        (Val::DateTime(t), Sc::Secs(x)) => Some(t.cmp(x)),
        (Val::Str(a), Sc::Text(b)) => Some(store.semantics.fold(a).as_ref().cmp(b.as_str())),
        (Val::Bool(a), Sc::Bool(b)) => Some(a.cmp(b)),
        (Val::Link(a), Sc::Link(b)) => (a == b).then_some(Ordering::Equal),
        _ => None,
    }
}

fn eq(store: &Store, v: &Val, s: &Sc) -> bool {
    cmp(store, v, s) == Some(Ordering::Equal)
}

fn text_test(store: &Store, pred: &Pred, s: &str) -> bool {
    let s = store.semantics.fold(s);
    match pred {
        Pred::Contains(n) | Pred::NameContains(n) => s.contains(n.as_str()),
        Pred::StartsWith(n) | Pred::NameStartsWith(n) => s.starts_with(n.as_str()),
        Pred::EndsWith(n) | Pred::NameEndsWith(n) => s.ends_with(n.as_str()),
        Pred::NameIs(n) => s.as_ref() == n.as_str(),
        _ => false,
    }
}

/// The positive relation on one stored value (`None` = null / empty).
fn test_scalar(store: &Store, pred: &Pred, v: Option<&Val>) -> bool {
    match pred {
        Pred::IsNull => v.is_none(),
        Pred::Eq(s) => v.is_some_and(|v| eq(store, v, s)),
        Pred::In(list, has_null) => match v {
            None => *has_null,
            Some(v) => list.iter().any(|s| eq(store, v, s)),
        },
        Pred::Lt(s) => v.and_then(|v| cmp(store, v, s)) == Some(Ordering::Less),
        Pred::Gt(s) => v.and_then(|v| cmp(store, v, s)) == Some(Ordering::Greater),
        Pred::Between(lo, hi) => v.is_some_and(|v| {
            lo.as_ref()
                .is_none_or(|lo| cmp(store, v, lo).is_some_and(|o| o != Ordering::Less))
                && hi
                    .as_ref()
                    .is_none_or(|hi| cmp(store, v, hi).is_some_and(|o| o != Ordering::Greater))
        }),
        // Null text is the empty string for text relations (doc 5.3).
        Pred::Contains(_) | Pred::StartsWith(_) | Pred::EndsWith(_) => {
            text_test(store, pred, v.and_then(Val::as_str).unwrap_or(""))
        }
        Pred::TypeIs(t) => match (v, t) {
            (None, None) => true,
            (Some(Val::Link(l)), Some(Some(t))) => l.ty == *t,
            _ => false,
        },
        Pred::NameIs(_)
        | Pred::NameContains(_)
        | Pred::NameStartsWith(_)
        | Pred::NameEndsWith(_) => v
            .and_then(Val::as_link)
            .and_then(|l| store.display_name(l))
            .is_some_and(|n| text_test(store, pred, n)),
    }
}

/// The positive relation on a multi_entity / addressing / tag_list value.
fn test_list(store: &Store, pred: &Pred, links: &[Link], tags: &[Box<str>]) -> bool {
    let empty = links.is_empty() && tags.is_empty();
    let any_link = |f: &dyn Fn(Option<&Val>) -> bool| links.iter().any(|l| f(Some(&Val::Link(*l))));
    let any_tag = |f: &dyn Fn(&str) -> bool| tags.iter().any(|t| f(t));
    match pred {
        Pred::IsNull | Pred::TypeIs(None) => empty,
        Pred::In(_, has_null) if empty => *has_null,
        Pred::Eq(Sc::Text(x)) => any_tag(&|t| store.semantics.fold(t) == x.as_str()),
        Pred::NameContains(_) if !tags.is_empty() => any_tag(&|t| text_test(store, pred, t)),
        _ => any_link(&|v| test_scalar(store, pred, v)),
    }
}

/// Evaluates the positive relation of `cond` along its path, starting at `row`.
fn test_path(store: &Store, cond: &Cond, hops: &[Hop], id: u32, row: &Row) -> bool {
    let Some((hop, rest)) = hops.split_first() else {
        return test_field(store, cond, id, row);
    };
    let links = row.get(hop.field).map(Val::links).unwrap_or(&[]);
    let mut targets = links
        .iter()
        .filter(|l| l.ty == hop.target)
        .filter_map(|l| store.active(*l).map(|r| (l.id, r)));
    if hop.multi {
        targets.any(|(id, r)| test_path(store, cond, rest, id, r))
    } else {
        match targets.next() {
            Some((id, r)) => test_path(store, cond, rest, id, r),
            // A null link (or one of another type, or to a retired row) gives the deep path a
            // null value, or the far field's default (the `null_hop` switch).
            None => test_value(store, cond, missing_far_value(store, cond)),
        }
    }
}

/// The far value of a path whose entity hop found no row: null, or with
/// [`NullHop::Default`] a checkbox's `false`.
fn missing_far_value(store: &Store, cond: &Cond) -> Option<&'static Val> {
    const FALSE: &Val = &Val::Bool(false);
    match (store.semantics.null_hop, &cond.path.data_type) {
        (NullHop::Default, DataType::Checkbox) => Some(FALSE),
        _ => None,
    }
}

fn test_field(store: &Store, cond: &Cond, id: u32, row: &Row) -> bool {
    match cond.path.field {
        None => test_scalar(store, &cond.pred, Some(&Val::Int(id as i64))),
        Some(f) => test_value(
            store,
            cond,
            checkbox_value(store, &cond.path.data_type, row.get(f)),
        ),
    }
}

/// An unset checkbox of an existing row is `false` (what reads return), unless the site reads
/// unset checkboxes as null ([`Store::null_checkboxes`]); a checkbox behind a null link stays
/// null (no row to default).
pub fn checkbox_value<'a>(store: &Store, dt: &DataType, v: Option<&'a Val>) -> Option<&'a Val> {
    const FALSE: &Val = &Val::Bool(false);
    match (dt, v) {
        (DataType::Checkbox, None) if !store.null_checkboxes => Some(FALSE),
        _ => v,
    }
}

fn test_value(store: &Store, cond: &Cond, v: Option<&Val>) -> bool {
    match (&cond.path.data_type, v) {
        (DataType::MultiEntity | DataType::Addressing, v) => {
            let links: Vec<Link> = v
                .map(Val::links)
                .unwrap_or(&[])
                .iter()
                .copied()
                .filter(|l| store.active(*l).is_some())
                .collect();
            test_list(store, &cond.pred, &links, &[])
        }
        (DataType::TagList, Some(Val::Tags(t))) => test_list(store, &cond.pred, &[], t),
        (DataType::TagList, _) => test_list(store, &cond.pred, &[], &[]),
        (DataType::Entity, Some(Val::Link(l))) if store.active(*l).is_none() => {
            test_scalar(store, &cond.pred, None)
        }
        (_, v) => test_scalar(store, &cond.pred, v),
    }
}

impl Compiled {
    pub fn matches(&self, store: &Store, id: u32, row: &Row) -> bool {
        match self {
            Compiled::Cond(c) => c.negate ^ test_path(store, c, &c.path.hops, id, row),
            Compiled::All(parts) => parts.iter().all(|p| p.matches(store, id, row)),
            Compiled::Any(parts) => parts.iter().any(|p| p.matches(store, id, row)),
        }
    }

    /// Inclusive id bounds implied by top-level `id` conditions, to skip rows cheaply.
    pub fn id_bounds(&self) -> (u32, u32) {
        let mut lo = 1u32;
        let mut hi = u32::MAX;
        let parts = match self {
            Compiled::All(p) => p.as_slice(),
            c @ Compiled::Cond(_) => std::slice::from_ref(c),
            Compiled::Any(_) => return (lo, hi),
        };
        for p in parts {
            let Compiled::Cond(c) = p else { continue };
            if c.negate || c.path.field.is_some() || !c.path.hops.is_empty() {
                continue;
            }
            let clamp = |x: f64| x.clamp(0.0, u32::MAX as f64);
            match &c.pred {
                Pred::Eq(Sc::Num(n)) => {
                    lo = lo.max(clamp(n.ceil()) as u32);
                    hi = hi.min(clamp(n.floor()) as u32);
                }
                Pred::Gt(Sc::Num(n)) => lo = lo.max(clamp(n.floor() + 1.0) as u32),
                Pred::Lt(Sc::Num(n)) => hi = hi.min(clamp(n.ceil() - 1.0) as u32),
                Pred::Between(a, b) => {
                    if let Some(Sc::Num(n)) = a {
                        lo = lo.max(clamp(n.ceil()) as u32);
                    }
                    if let Some(Sc::Num(n)) = b {
                        hi = hi.min(clamp(n.floor()) as u32);
                    }
                }
                _ => {}
            }
        }
        (lo, hi)
    }
}
