//! The filter tree as a SQL condition (doc section 5).
//!
//! Semantics follow the protocol doc and the test site: every negative relation is the exact
//! negation of its positive twin, so nulls match `is_not`, `not_in`, `not_contains` ...; text
//! compares case-insensitively and a null text is the empty string; an entity hop follows the
//! link only to an active row of the named type (otherwise the far value is null, whatever
//! hops follow); through a multi-entity hop the positive relation is existential and the
//! negation applies after it. Paths take any number of hops. Shapes whose semantics the doc
//! only infers tag the plan with their trust class ([`tag`]).

use serde_json::Value;

use super::catalog::{CatalogField, CatalogType};
use super::dates;
use super::frag::Frag;
use super::text::{self, like_pattern};
use super::values;
use super::{pass, Ctx, PassThrough, Reason};
use crate::api3::{Condition, Filter, LogicalOperator};
use crate::ident;
use crate::schema::{DataType, Storage};
use crate::sql::SqlValue;
use crate::trust::TrustClass;

/// A field reached from a query alias.
#[derive(Clone, Copy)]
pub struct ColRef<'a> {
    pub alias: &'a str,
    pub ty: &'a CatalogType,
    pub field: &'a CatalogField,
}

pub fn filter(ctx: &mut Ctx<'_>, root: &CatalogType, f: &Filter) -> Result<Frag, PassThrough> {
    match f {
        Filter::Condition(c) => condition(ctx, root, c),
        Filter::Group { op, conditions } => {
            if conditions.is_empty() {
                return match op {
                    LogicalOperator::And => Ok(lit("1=1")),
                    LogicalOperator::Or => Err(pass(Reason::Relation, "empty 'or' group")),
                };
            }
            let parts = conditions
                .iter()
                .map(|c| filter(ctx, root, c))
                .collect::<Result<Vec<_>, _>>()?;
            let sep = match op {
                LogicalOperator::And => " AND ",
                LogicalOperator::Or => " OR ",
            };
            let mut out = lit("(");
            out.frag(Frag::join(parts, sep)).lit(")");
            Ok(out)
        }
    }
}

fn lit(s: &'static str) -> Frag {
    let mut f = Frag::new();
    f.lit(s);
    f
}

/// A ready field of a cached type, or a pass-through reason.
pub fn field<'a>(ty: &'a CatalogType, name: &str) -> Result<&'a CatalogField, PassThrough> {
    if ty.fields.get(name).is_some_and(|f| f.unservable) {
        return Err(pass(
            Reason::Unservable,
            format!(
                "{}.{name} holds a value the cache cannot store",
                ty.entity_type
            ),
        ));
    }
    ty.ready_field(name).ok_or_else(|| {
        pass(
            Reason::FieldNotCached,
            format!("{}.{name} is not cached and ready", ty.entity_type),
        )
    })
}

fn condition(ctx: &mut Ctx<'_>, root: &CatalogType, c: &Condition) -> Result<Frag, PassThrough> {
    if c.path.starts_with("$FROM$") {
        return Err(pass(Reason::Path, "$FROM$ paths are answered by the site"));
    }
    let cat = ctx.cat;
    let root = cat
        .types
        .get(&root.entity_type)
        .expect("root is in the catalog");
    let path = resolve(ctx, root, &c.path)?;
    if path.hops.len() > 1 {
        ctx.needs(TrustClass::MultiHop);
    }
    if path.hops.iter().any(|h| !h.multi()) && missing_could_match(path.far, &c.relation, &c.values)
    {
        ctx.needs(TrustClass::NullHop);
    }
    if !path.hops.iter().any(|h| h.multi()) {
        // Entity hops only: the far row is joined once per hop (a null link, one of another
        // type or to a retired row leaves it null) and the relation applies to its column as
        // to a field of the root, negations included.
        let mut alias = "r".to_string();
        for h in &path.hops {
            alias = ctx.filter_hop(&alias, h.field, h.target);
        }
        let col = ColRef {
            alias: &alias,
            ty: path.far_ty,
            field: path.far,
        };
        return relation(ctx, col, &c.relation, &c.values);
    }
    // Through a multi_entity hop the positive relation is existential and a negation applies
    // after it, to the whole path (doc 5.4): "no linked entity satisfies it". That absorbs
    // rows with no linked entity at all, which the doc reports as observed, not documented.
    let (positive, negate) = positive(&c.relation);
    let inner = along(ctx, None, "r", &path.hops, &path, positive, &c.values)?;
    if !negate {
        return Ok(inner);
    }
    ctx.needs(TrustClass::NegationMultiEntity);
    let mut out = Frag::new();
    out.lit("NOT (").frag(inner).lit(")");
    Ok(out)
}

/// One hop of a deep path: `field.Target` from the type `field` belongs to.
#[derive(Clone, Copy)]
pub struct PathHop<'a> {
    pub from: &'a CatalogType,
    pub field: &'a CatalogField,
    pub target: &'a CatalogType,
}

impl PathHop<'_> {
    pub fn multi(&self) -> bool {
        self.field.storage == Storage::MultiEntity
    }
}

/// A path resolved against the catalog: its hops, then the far field on the far type.
pub struct ResolvedPath<'a> {
    pub hops: Vec<PathHop<'a>>,
    pub far_ty: &'a CatalogType,
    pub far: &'a CatalogField,
}

/// Resolves `field` or `field.Type.field2[.Type2.field3 ...]` from `root`; every hop must be
/// an entity or multi_entity field (not addressing) that can link to a cached, ready type.
pub fn resolve<'a>(
    ctx: &Ctx<'a>,
    root: &'a CatalogType,
    path: &str,
) -> Result<ResolvedPath<'a>, PassThrough> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.len() % 2 == 0 {
        return Err(pass(
            Reason::Path,
            format!("path {path:?} is not field.Type.field"),
        ));
    }
    let mut cur = root;
    let mut hops = Vec::new();
    for pair in parts[..parts.len() - 1].chunks(2) {
        let (f, t) = hop(ctx, cur, pair[0], pair[1])?;
        if f.storage == Storage::MultiEntity && f.data_type != DataType::MultiEntity {
            return Err(pass(Reason::Path, "deep paths through addressing fields"));
        }
        hops.push(PathHop {
            from: cur,
            field: f,
            target: t,
        });
        cur = t;
    }
    let far = field(cur, parts[parts.len() - 1])?;
    Ok(ResolvedPath {
        hops,
        far_ty: cur,
        far,
    })
}

/// The positive relation `rel` along `hops` from the row `alias`, as a condition that is never
/// SQL NULL (so that a caller may negate it). `local` collects the joins of entity hops inside
/// an existential subquery; `None` is the statement's own filter joins.
fn along(
    ctx: &mut Ctx<'_>,
    mut local: Option<&mut Vec<Frag>>,
    alias: &str,
    hops: &[PathHop<'_>],
    path: &ResolvedPath<'_>,
    rel: &str,
    values: &[Value],
) -> Result<Frag, PassThrough> {
    let Some((h, rest)) = hops.split_first() else {
        let col = ColRef {
            alias,
            ty: path.far_ty,
            field: path.far,
        };
        let inner = relation(ctx, col, rel, values)?;
        let mut out = Frag::new();
        out.lit("COALESCE((").frag(inner).lit("), 1=0)");
        return Ok(out);
    };
    if !h.multi() {
        let next = match local.as_deref_mut() {
            None => ctx.filter_hop(alias, h.field, h.target),
            Some(joins) => {
                let a = ctx.alias();
                joins.push(hop_join(alias, h.field, h.target, &a));
                a
            }
        };
        let inner = along(ctx, local, &next, rest, path, rel, values)?;
        if !rest.iter().any(PathHop::multi) {
            return Ok(inner);
        }
        // The site stops at a null link (or one of another type, or to a retired row): the
        // far value is null, whatever hops follow. Joins alone would make a later
        // multi_entity hop find nothing instead.
        let mut out = Frag::new();
        out.lit("((").col(&next, "id");
        if matches_null(rel, values) {
            out.lit(" IS NULL) OR ");
        } else {
            out.lit(" IS NOT NULL) AND ");
        }
        out.frag(inner).lit(")");
        return Ok(out);
    }
    let (a, t) = (ctx.alias(), ctx.alias());
    let mut joins = Vec::new();
    let inner = along(ctx, Some(&mut joins), &t, rest, path, rel, values)?;
    let mut out = Frag::new();
    out.lit("EXISTS (SELECT 1 FROM ")
        .ident(&ident::assoc_table_name(&h.from.entity_type, &h.field.name))
        .lit(" ")
        .alias(&a)
        .lit(" JOIN ")
        .ident(&h.target.table)
        .lit(" ")
        .alias(&t)
        .lit(" ON ")
        .col(&t, "id")
        .lit(" = ")
        .col(&a, "_target_id")
        .lit(" AND NOT ")
        .col(&t, "_retired");
    for j in joins {
        out.frag(j);
    }
    out.lit(" WHERE ")
        .col(&a, "_entity_id")
        .lit(" = ")
        .col(alias, "id")
        .lit(" AND ")
        .col(&a, "_target_type")
        .lit(" = ")
        .bind(SqlValue::Text(h.target.entity_type.clone()))
        .lit(" AND ")
        .frag(inner)
        .lit(")");
    Ok(out)
}

/// `LEFT JOIN target a ON` the active row of type `target` that `from.field` links to.
pub fn hop_join(from: &str, field: &CatalogField, target: &CatalogType, a: &str) -> Frag {
    let mut j = Frag::new();
    j.lit(" LEFT JOIN ")
        .ident(&target.table)
        .lit(" ")
        .alias(a)
        .lit(" ON ")
        .col(from, &format!("{}__type", field.name))
        .lit(" = ")
        .bind(SqlValue::Text(target.entity_type.clone()))
        .lit(" AND ")
        .col(a, "id")
        .lit(" = ")
        .col(from, &format!("{}__id", field.name))
        .lit(" AND NOT ")
        .col(a, "_retired");
    j
}

/// Whether a positive relation holds for a null value (an empty list for multi_entity
/// fields): `is null`, `in` listing null, `type_is null`, and text relations with an empty
/// needle (null text is the empty string).
fn matches_null(rel: &str, values: &[Value]) -> bool {
    let empty_text = || match values {
        [Value::Null] => true,
        [Value::String(s)] => s.is_empty(),
        _ => false,
    };
    match rel {
        "is" | "type_is" => matches!(values, [Value::Null]),
        "in" => values.iter().any(Value::is_null),
        "contains" | "starts_with" | "ends_with" => empty_text(),
        _ => false,
    }
}

/// Whether a missing far value (a null or mistyped link on an entity hop, or one to a retired
/// row) could satisfy the relation under some reading of doc 5.4: the cache's (the far value
/// is null), or a site's that reads the far field's default (a checkbox's `false`). Every
/// negation counts: after a multi_entity hop it applies to what the hop found.
fn missing_could_match(far: &CatalogField, rel: &str, values: &[Value]) -> bool {
    let (pos, negate) = positive(rel);
    negate
        || matches_null(pos, values)
        || (far.data_type == DataType::Checkbox && values.contains(&Value::Bool(false)))
}

/// Resolves `hop.Target` for a deep path: the hop field and the target type.
pub fn hop<'a>(
    ctx: &Ctx<'a>,
    root: &'a CatalogType,
    hop: &str,
    target: &str,
) -> Result<(&'a CatalogField, &'a CatalogType), PassThrough> {
    let f = field(root, hop)?;
    if !matches!(f.storage, Storage::EntityLink | Storage::MultiEntity)
        || !f.valid_types.iter().any(|t| t == target)
    {
        return Err(pass(Reason::Path, format!("{hop} cannot link to {target}")));
    }
    let t = ctx.cat.ready_type(target).ok_or_else(|| {
        pass(
            Reason::TypeNotCached,
            format!("{target} is not cached and ready"),
        )
    })?;
    Ok((f, t))
}

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

/// Tags the trust classes one relation on one column relies on.
///
/// Negations (doc 5.3, 5.4, section 9): every negation here is the exact negation of its
/// positive twin, so it matches a null value (an empty list) whenever the positive relation
/// does not. The doc documents that rule for `not_contains` (null text is "") and for `is_not`
/// on an entity field (it matches null links); for every other negation that can match a
/// null (`is_not` on a scalar, `not_in`, `not_between`, relative-date negations,
/// `type_is_not` and `name_not_contains` on an entity link) it is inferred: those plans need
/// [`TrustClass::NegationNull`]. `id` of the row itself is never null. On a multi_entity field
/// a negation that can match an empty list needs [`TrustClass::NegationMultiEntity`]
/// (`is_not null` and `type_is_not null` mean "not empty" and cannot).
fn tag(ctx: &mut Ctx<'_>, col: ColRef<'_>, rel: &str, values: &[Value]) {
    if let Some(class) = TrustClass::of_relative_date(rel) {
        ctx.needs(class);
    }
    if rel.starts_with("name_")
        && matches!(
            col.field.storage,
            Storage::EntityLink | Storage::MultiEntity
        )
    {
        ctx.needs(TrustClass::LinkName);
    }
    let (pos, negate) = positive(rel);
    if !negate || matches_null(pos, values) {
        return;
    }
    let f = col.field;
    let documented = rel == "not_contains" || (f.storage == Storage::EntityLink && rel == "is_not");
    let never_null = col.alias == "r" && f.name == "id";
    if f.storage == Storage::MultiEntity {
        ctx.needs(TrustClass::NegationMultiEntity);
    } else if !documented && !never_null {
        ctx.needs(TrustClass::NegationNull);
    }
}

/// Relations the cache answers, per data type: the documented ones (doc 5.2) minus those whose
/// exact meaning is unknown (`addressing` text search, tag lists).
fn allowed(dt: &DataType, rel: &str) -> bool {
    use DataType::*;
    const EQ: &[&str] = &["is", "is_not", "in", "not_in"];
    const TEXT: &[&str] = &["contains", "not_contains", "starts_with", "ends_with"];
    const ORD: &[&str] = &["less_than", "greater_than", "between", "not_between"];
    // Relative dates on the site's clock (its arithmetic in [`super::dates`]); the site takes
    // no negation of the calendar relations.
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
        // `not_between` is documented for number and currency only (doc 5.2: "probably"
        // accepted on the others, which is not proof).
        Number | Currency => any(&[EQ, ORD]),
        Float | Percent | Duration | Timecode => rel != "not_between" && any(&[EQ, ORD]),
        Date | DateTime => any(&[EQ, ORD, DATES]),
        Checkbox => rel == "is" || rel == "is_not",
        List | StatusList | EntityType | Uuid | Color | Footage | SystemTaskType => any(&[EQ]),
        Entity | MultiEntity => any(&[EQ, LINK, NAME]),
        TagList => super::tags::allowed(rel),
        _ => false,
    }
}

/// One relation on one column.
pub fn relation(
    ctx: &mut Ctx<'_>,
    col: ColRef<'_>,
    rel: &str,
    values: &[Value],
) -> Result<Frag, PassThrough> {
    let f = col.field;
    if !allowed(&f.data_type, rel) {
        return Err(pass(
            Reason::Relation,
            format!(
                "relation {rel:?} on {} field {}",
                f.data_type.api_name(),
                f.name
            ),
        ));
    }
    if super::event_log::retired_reads_null(f) {
        retired_target_filter(ctx, rel, values)?;
    }
    tag(ctx, col, rel, values);
    if TrustClass::of_relative_date(rel).is_some() {
        return relative_date(ctx, col, rel, values);
    }
    match f.storage {
        Storage::EntityLink => entity(ctx, col, rel, values),
        Storage::MultiEntity => multi(ctx, col, rel, values),
        Storage::Json if f.data_type == DataType::TagList => {
            super::tags::relation(ctx, col, rel, values)
        }
        _ => scalar(ctx, col, rel, values),
    }
}

/// A filter on a link that reads null while its target is retired (`EventLogEntry.entity`):
/// the stored link cannot tell which rows the site sees as null, so only positive relations
/// on non-null values are answered, and a returned row linking a retired target passes the
/// read through (the site would not have matched it).
fn retired_target_filter(
    ctx: &mut Ctx<'_>,
    rel: &str,
    values: &[Value],
) -> Result<(), PassThrough> {
    ctx.retired_filtered = true;
    let negative = rel.contains("not") || rel == "is_not";
    if negative || values.iter().any(Value::is_null) {
        return Err(pass(
            Reason::Relation,
            format!("{rel} on a link that reads null once its target is retired"),
        ));
    }
    Ok(())
}

/// The one value of a relation. `is` with several values passes through too: the site rejects
/// it (doc 5.3), and its error is the site's to give.
pub fn one<'v>(values: &'v [Value], rel: &str) -> Result<&'v Value, PassThrough> {
    match values {
        [v] => Ok(v),
        _ => Err(pass(
            Reason::Value,
            format!("{rel} with {} values", values.len()),
        )),
    }
}

/// Relations that compare text case-insensitively.
fn folds(rel: &str) -> bool {
    matches!(
        rel,
        "is" | "is_not"
            | "in"
            | "not_in"
            | "contains"
            | "not_contains"
            | "starts_with"
            | "ends_with"
    )
}

/// A text value starting or ending with whitespace.
fn edge_space(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace))
}

/// `(values without nulls, whether null was listed)` for in / not_in.
fn split_nulls(values: &[Value]) -> Result<(Vec<&Value>, bool), PassThrough> {
    if values.is_empty() {
        return Err(pass(Reason::Value, "in / not_in without values"));
    }
    Ok((
        values.iter().filter(|v| !v.is_null()).collect(),
        values.iter().any(Value::is_null),
    ))
}

fn scalar(
    ctx: &mut Ctx<'_>,
    col: ColRef<'_>,
    rel: &str,
    values: &[Value],
) -> Result<Frag, PassThrough> {
    let f = col.field;
    let ci = f.storage == Storage::Text;
    let a = col.alias;
    let dialect = ctx.dialect;
    if ci
        && values
            .iter()
            .any(|v| v.as_str().is_some_and(|s| !s.is_ascii()))
    {
        ctx.needs(crate::trust::TrustClass::TextNonAscii);
    }
    if ci && f.non_ascii && folds(rel) && !values.iter().all(Value::is_null) {
        // An ASCII search value compared with text outside ASCII: how the site folds that
        // text is the same unproven reading.
        ctx.needs(crate::trust::TrustClass::TextNonAscii);
    }
    if ci && matches!(rel, "is" | "is_not" | "in" | "not_in") && values.iter().any(edge_space) {
        // Whether the site trims text before comparing is unknown (doc 9).
        return Err(pass(
            Reason::Value,
            "text compared with a value with leading or trailing whitespace",
        ));
    }
    // The compared expression: the column folded as the site folds text.
    let lhs = || {
        let mut x = Frag::new();
        x.col(a, &f.name);
        if ci {
            x = text::eq_operand(dialect, x);
        }
        x
    };
    let is_null = |not: bool| {
        let mut x = Frag::new();
        x.col(a, &f.name)
            .lit(if not { " IS NOT NULL" } else { " IS NULL" });
        x
    };
    let bind = |v: &Value| values::scalar(f.storage, v, &f.name);
    let mut out = Frag::new();
    match rel {
        "is" | "is_not" => {
            let v = one(values, rel)?;
            let not = rel == "is_not";
            if v.is_null() {
                if f.storage == Storage::Boolean {
                    return Err(pass(Reason::Value, "checkbox compared with null"));
                }
                return Ok(is_null(not));
            }
            let b = bind(v)?;
            if not {
                out.lit("(")
                    .frag(is_null(false))
                    .lit(" OR ")
                    .frag(lhs())
                    .lit(" <> ")
                    .bind(b)
                    .lit(")");
            } else {
                out.frag(lhs()).lit(" = ").bind(b);
            }
        }
        "in" | "not_in" => {
            let (vals, has_null) = split_nulls(values)?;
            let mut list = Frag::new();
            for (i, v) in vals.iter().enumerate() {
                if i > 0 {
                    list.lit(", ");
                }
                list.bind(bind(v)?);
            }
            let not = rel == "not_in";
            out.lit("(");
            match (vals.is_empty(), has_null, not) {
                (true, _, false) => out.frag(is_null(false)),
                (true, _, true) => out.frag(is_null(true)),
                (false, false, false) => out.frag(lhs()).lit(" IN (").frag(list).lit(")"),
                (false, true, false) => out
                    .frag(is_null(false))
                    .lit(" OR ")
                    .frag(lhs())
                    .lit(" IN (")
                    .frag(list)
                    .lit(")"),
                (false, false, true) => out
                    .frag(is_null(false))
                    .lit(" OR ")
                    .frag(lhs())
                    .lit(" NOT IN (")
                    .frag(list)
                    .lit(")"),
                (false, true, true) => out
                    .frag(is_null(true))
                    .lit(" AND ")
                    .frag(lhs())
                    .lit(" NOT IN (")
                    .frag(list)
                    .lit(")"),
            };
            out.lit(")");
        }
        "less_than" | "greater_than" => {
            let v = one(values, rel)?;
            if v.is_null() {
                return Err(pass(Reason::Value, format!("{rel} null")));
            }
            out.frag(lhs())
                .lit(if rel == "less_than" { " < " } else { " > " })
                .bind(bind(v)?);
        }
        "between" | "not_between" => {
            let [lo, hi] = values else {
                return Err(pass(Reason::Value, format!("{rel} needs two values")));
            };
            if lo.is_null() || hi.is_null() {
                return Err(pass(Reason::Value, format!("{rel} with an open bound")));
            }
            let (lo, hi) = (bind(lo)?, bind(hi)?);
            if rel == "between" {
                out.lit("(")
                    .frag(lhs())
                    .lit(" >= ")
                    .bind(lo)
                    .lit(" AND ")
                    .frag(lhs())
                    .lit(" <= ")
                    .bind(hi)
                    .lit(")");
            } else {
                out.lit("(")
                    .frag(is_null(false))
                    .lit(" OR ")
                    .frag(lhs())
                    .lit(" < ")
                    .bind(lo)
                    .lit(" OR ")
                    .frag(lhs())
                    .lit(" > ")
                    .bind(hi)
                    .lit(")");
            }
        }
        "contains" | "not_contains" | "starts_with" | "ends_with" => {
            let needle = match one(values, rel)? {
                Value::String(s) => s.as_str(),
                Value::Null => "",
                _ => return Err(pass(Reason::Value, format!("{rel} needs a string"))),
            };
            let needle = text::fold(ctx, needle);
            let pattern = match rel {
                "starts_with" => like_pattern(&needle, false, true),
                "ends_with" => like_pattern(&needle, true, false),
                _ => like_pattern(&needle, true, true),
            };
            // A null text is the empty string for text relations.
            let mut text = Frag::new();
            text.lit("COALESCE(").col(a, &f.name).lit(", '')");
            out.lit(if rel == "not_contains" { "NOT (" } else { "(" })
                .frag(text::like(dialect, text, pattern)?)
                .lit(")");
        }
        _ => {
            return Err(pass(Reason::Relation, format!("relation {rel:?}")));
        }
    }
    Ok(out)
}

/// A relative-date relation: the window is computed from the site's clock and bound; the
/// negation is exact (a null date matches it).
fn relative_date(
    ctx: &Ctx<'_>,
    col: ColRef<'_>,
    rel: &str,
    values: &[Value],
) -> Result<Frag, PassThrough> {
    let (pos, negate) = positive(rel);
    let w = dates::window(pos, values, ctx.now)?;
    let (lo, hi) = match col.field.storage {
        Storage::Date => {
            let (lo, hi) = w.days();
            (SqlValue::Date(lo), SqlValue::Date(hi))
        }
        Storage::DateTime => (SqlValue::DateTime(w.lo), SqlValue::DateTime(w.hi)),
        _ => return Err(pass(Reason::Relation, format!("{rel} on a non-date field"))),
    };
    let (a, name) = (col.alias, &col.field.name);
    let mut out = Frag::new();
    if negate {
        out.lit("(")
            .col(a, name)
            .lit(" IS NULL OR ")
            .col(a, name)
            .lit(" < ")
            .bind(lo)
            .lit(" OR ")
            .col(a, name)
            .lit(" > ")
            .bind(hi)
            .lit(")");
    } else {
        out.lit("(")
            .col(a, name)
            .lit(" >= ")
            .bind(lo)
            .lit(" AND ")
            .col(a, name)
            .lit(" <= ")
            .bind(hi)
            .lit(")");
    }
    Ok(out)
}

/// Binds the link filter values of is / in (null handled by the caller).
fn link_eq(
    type_col: (&str, String),
    id_col: (&str, String),
    v: &Value,
    field: &str,
) -> Result<Frag, PassThrough> {
    let (t, id) = values::link(v, field)?;
    let mut out = Frag::new();
    out.lit("(")
        .col(type_col.0, &type_col.1)
        .lit(" = ")
        .bind(SqlValue::Text(t))
        .lit(" AND ")
        .col(id_col.0, &id_col.1)
        .lit(" = ")
        .bind(SqlValue::Int(id))
        .lit(")");
    Ok(out)
}

/// `name_*` on the display name of the linked row, for whichever valid target type it has.
/// Every valid target type must be cached with a ready display field.
fn name_test(
    ctx: &mut Ctx<'_>,
    type_col: (&str, &str),
    id_col: (&str, &str),
    valid_types: &[String],
    rel: &str,
    values: &[Value],
) -> Result<Frag, PassThrough> {
    let needle = match one(values, rel)? {
        Value::String(s) => s.as_str(),
        Value::Null => "",
        _ => return Err(pass(Reason::Value, format!("{rel} needs a string"))),
    };
    let needle = text::fold(ctx, needle);
    let pattern = match rel {
        "name_is" => None,
        "name_starts_with" => Some(like_pattern(&needle, false, true)),
        "name_ends_with" => Some(like_pattern(&needle, true, false)),
        _ => Some(like_pattern(&needle, true, true)),
    };
    let mut arms = Vec::new();
    for t in valid_types {
        let ty = ctx.cat.ready_type(t).ok_or_else(|| {
            pass(
                Reason::LinkName,
                format!("links to {t} cannot be named from the cache"),
            )
        })?;
        let name = ty
            .name_field()
            .ok_or_else(|| pass(Reason::LinkName, format!("{t} has no ready display field")))?;
        if name.non_ascii {
            ctx.needs(TrustClass::TextNonAscii);
        }
        let n = format!("n{}", arms.len());
        let mut arm = Frag::new();
        arm.lit("(")
            .col(type_col.0, type_col.1)
            .lit(" = ")
            .bind(SqlValue::Text(t.clone()))
            .lit(" AND EXISTS (SELECT 1 FROM ")
            .ident(&ty.table)
            .lit(" ")
            .alias(&n)
            .lit(" WHERE ")
            .col(&n, "id")
            .lit(" = ")
            .col(id_col.0, id_col.1)
            .lit(" AND ");
        let mut name_col = Frag::new();
        name_col.col(&n, &name.name);
        match &pattern {
            None => {
                arm.frag(text::eq_operand(ctx.dialect, name_col))
                    .lit(" = ")
                    .bind(SqlValue::Text(needle.clone()));
            }
            Some(p) => {
                arm.frag(text::like(ctx.dialect, name_col, p.clone())?);
            }
        }
        arm.lit("))");
        arms.push(arm);
    }
    if arms.is_empty() {
        return Err(pass(Reason::LinkName, "field has no valid target types"));
    }
    let mut out = Frag::new();
    out.lit("(").frag(Frag::join(arms, " OR ")).lit(")");
    Ok(out)
}

fn entity(
    ctx: &mut Ctx<'_>,
    col: ColRef<'_>,
    rel: &str,
    values: &[Value],
) -> Result<Frag, PassThrough> {
    let f = col.field;
    let a = col.alias;
    let tcol = format!("{}__type", f.name);
    let icol = format!("{}__id", f.name);
    let is_null = |not: bool| {
        let mut x = Frag::new();
        x.col(a, &icol)
            .lit(if not { " IS NOT NULL" } else { " IS NULL" });
        x
    };
    let (positive, negate) = positive(rel);
    let pos = match positive {
        "is" => {
            let v = one(values, rel)?;
            if v.is_null() {
                is_null(false)
            } else {
                link_eq((a, tcol.clone()), (a, icol.clone()), v, &f.name)?
            }
        }
        "in" => {
            let (vals, has_null) = split_nulls(values)?;
            let mut arms = vals
                .iter()
                .map(|v| link_eq((a, tcol.clone()), (a, icol.clone()), v, &f.name))
                .collect::<Result<Vec<_>, _>>()?;
            if has_null {
                arms.push(is_null(false));
            }
            let mut x = Frag::new();
            x.lit("(").frag(Frag::join(arms, " OR ")).lit(")");
            x
        }
        "type_is" => {
            let v = one(values, rel)?;
            match v {
                Value::Null => is_null(false),
                Value::String(t) if ident::validate_entity_type(t).is_ok() => {
                    let mut x = Frag::new();
                    x.lit("(")
                        .col(a, &tcol)
                        .lit(" = ")
                        .bind(SqlValue::Text(t.clone()))
                        .lit(")");
                    x
                }
                _ => return Err(pass(Reason::Value, "type_is needs an entity type")),
            }
        }
        r if r.starts_with("name_") => {
            name_test(ctx, (a, &tcol), (a, &icol), &f.valid_types, r, values)?
        }
        _ => return Err(pass(Reason::Relation, format!("relation {rel:?}"))),
    };
    if !negate {
        return Ok(pos);
    }
    // Exact negation; a null link makes the positive form false (or true for `is null`), so
    // only the null case needs care: NOT over a possibly-NULL SQL value must be made total.
    let mut out = Frag::new();
    out.lit("(NOT COALESCE(").frag(pos).lit(", 1=0))");
    Ok(out)
}

fn multi(
    ctx: &mut Ctx<'_>,
    col: ColRef<'_>,
    rel: &str,
    values: &[Value],
) -> Result<Frag, PassThrough> {
    let f = col.field;
    if f.data_type != DataType::MultiEntity {
        return Err(pass(Reason::Relation, "relations on addressing fields"));
    }
    let (positive, negate) = positive(rel);
    let a = ctx.alias();
    let table = ident::assoc_table_name(&col.ty.entity_type, &f.name);
    // EXISTS (SELECT 1 FROM assoc a WHERE a._entity_id = owner.id [AND cond]).
    let exists = |cond: Option<Frag>| {
        let mut x = Frag::new();
        x.lit("EXISTS (SELECT 1 FROM ")
            .ident(&table)
            .lit(" ")
            .alias(&a)
            .lit(" WHERE ")
            .col(&a, "_entity_id")
            .lit(" = ")
            .col(col.alias, "id");
        if let Some(c) = cond {
            x.lit(" AND ").frag(c);
        }
        x.lit(")");
        x
    };
    let tc = (a.as_str(), "_target_type".to_string());
    let ic = (a.as_str(), "_target_id".to_string());
    let pos = match positive {
        "is" => {
            let v = one(values, rel)?;
            if v.is_null() {
                let mut x = Frag::new();
                x.lit("NOT ").frag(exists(None));
                x
            } else {
                exists(Some(link_eq(tc, ic, v, &f.name)?))
            }
        }
        "in" => {
            let (vals, has_null) = split_nulls(values)?;
            let arms = vals
                .iter()
                .map(|v| link_eq(tc.clone(), ic.clone(), v, &f.name))
                .collect::<Result<Vec<_>, _>>()?;
            let mut x = Frag::new();
            x.lit("(");
            if !arms.is_empty() {
                let mut any = Frag::new();
                any.lit("(").frag(Frag::join(arms, " OR ")).lit(")");
                x.frag(exists(Some(any)));
            }
            if has_null {
                if !vals.is_empty() {
                    x.lit(" OR ");
                }
                x.lit("NOT ").frag(exists(None));
            }
            x.lit(")");
            x
        }
        "type_is" => match one(values, rel)? {
            Value::Null => {
                let mut x = Frag::new();
                x.lit("NOT ").frag(exists(None));
                x
            }
            Value::String(t) if ident::validate_entity_type(t).is_ok() => {
                let mut c = Frag::new();
                c.col(&a, "_target_type")
                    .lit(" = ")
                    .bind(SqlValue::Text(t.clone()));
                exists(Some(c))
            }
            _ => return Err(pass(Reason::Value, "type_is needs an entity type")),
        },
        r @ ("name_contains" | "name_is" | "name_starts_with" | "name_ends_with") => {
            let c = name_test(
                ctx,
                (&a, "_target_type"),
                (&a, "_target_id"),
                &f.valid_types,
                r,
                values,
            )?;
            exists(Some(c))
        }
        _ => return Err(pass(Reason::Relation, format!("relation {rel:?}"))),
    };
    if negate {
        let mut out = Frag::new();
        out.lit("NOT ").frag(pos);
        Ok(out)
    } else {
        Ok(pos)
    }
}
