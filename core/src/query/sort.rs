//! The order of a read, as the test site sorts (sim/README.md "Semantic choices"): each key
//! ascending with nulls last or descending with nulls first, then `id asc`.
//!
//! * number, float, date, date_time, checkbox: the stored value.
//! * text and the other text-stored types (list, status_list, ...): the Unicode lower case,
//!   code point order (see `super::text`). A list sorts alphabetically like text, not in its
//!   configured order.
//! * entity: the linked entity's display name, lower-cased (a target with no name sorts as "").
//! * multi_entity: the display name of its first member (in the site's order).
//! * `link.Type.field` through an entity field: the far column of the active target, null
//!   through a null link or one of another type.
//!
//! A link whose target the cache cannot name as links render (type not cached or without a
//! display field, row missing or retired) has an unknown place in the order, wherever it is
//! among the matching rows: the page then carries a flag, the minimum over every matching row
//! (a window over the filtered rows, before LIMIT), and a page with a 0 flag passes through.
//!
//! A computed key (folded text, a link's name) is a column of the page (`_sk0`, ...), computed
//! once per row, that both the page and the outer query order by; an entity key's names come
//! from LEFT JOINs of the target tables in the page (a correlated probe per row cost 5 times
//! as much on 100 000 rows).

use super::catalog::CatalogType;
use super::filter::{field, hop};
use super::frag::Frag;
use super::text;
use super::{pass, Ctx, PassThrough, Reason};
use crate::api3::{Sort, SortDirection};
use crate::ident;
use crate::schema::{DataType, Storage};
use crate::sql::SqlValue;
use crate::trust::TrustClass;

/// The planned order.
pub struct Order {
    /// `ORDER BY` terms of the page query.
    pub page_terms: Frag,
    /// `ORDER BY` terms of the outer query, over the page's rows (alias `r`).
    pub outer_terms: Frag,
    /// Extra select columns of the page (`, key AS _sk0` ...), empty when none.
    pub select: Frag,
    /// LEFT JOINs the page's keys need.
    pub joins: Frag,
    /// A 0/1 expression per row of the page: its sort keys are known. `None`: always known.
    pub known: Option<Frag>,
}

pub fn order(ctx: &mut Ctx<'_>, root: &CatalogType, sorts: &[Sort]) -> Result<Order, PassThrough> {
    let mut page_terms = Vec::new();
    let mut outer_terms = Vec::new();
    let mut select = Frag::new();
    let mut joins = Frag::new();
    let mut known = Vec::new();
    for (i, s) in sorts.iter().enumerate() {
        let key = if s.field.contains('.') {
            deep_key(ctx, root, &s.field, &mut joins, &mut known)?
        } else {
            let f = field(root, &s.field).map_err(|e| pass(Reason::Sort, e.detail))?;
            match f.storage {
                Storage::Integer
                | Storage::Float
                | Storage::Date
                | Storage::DateTime
                | Storage::Boolean => {
                    // A stored column: both queries order by it directly. Where nulls go and
                    // how ties are ordered are undocumented, except for `id` (never null,
                    // unique).
                    if f.name != "id" {
                        ctx.needs(TrustClass::SortScalar);
                    }
                    let dir = match s.direction {
                        SortDirection::Asc => " ASC",
                        SortDirection::Desc => " DESC",
                    };
                    let mut o = Frag::new();
                    o.lit("(").col("r", &f.name).lit(" IS NULL)").lit(dir);
                    o.lit(", ").col("r", &f.name).lit(dir);
                    page_terms.push(o.clone());
                    outer_terms.push(o);
                    continue;
                }
                Storage::Text => {
                    ctx.needs(match f.data_type {
                        DataType::List | DataType::StatusList => TrustClass::SortList,
                        _ => TrustClass::SortText,
                    });
                    let mut k = Frag::new();
                    k.col("r", &f.name);
                    text::sort_operand(ctx.dialect, k)
                }
                Storage::EntityLink => {
                    ctx.needs(TrustClass::SortEntity);
                    let tcol = format!("{}__type", f.name);
                    let icol = format!("{}__id", f.name);
                    let arms = name_joins(ctx, &mut joins, &tcol, &icol, &f.valid_types);
                    let mut k = Frag::new();
                    k.lit("CASE WHEN ")
                        .col("r", &icol)
                        .lit(" IS NULL THEN NULL ELSE ")
                        .frag(arms.name)
                        .lit(" END");
                    let mut ok = Frag::new();
                    ok.lit("CASE WHEN ")
                        .col("r", &icol)
                        .lit(" IS NULL OR ")
                        .frag(arms.ok)
                        .lit(" THEN 1 ELSE 0 END");
                    known.push(ok);
                    text::sort_operand(ctx.dialect, k)
                }
                Storage::MultiEntity => {
                    ctx.needs(TrustClass::SortMultiEntity);
                    let a = ctx.alias();
                    let arms = name_arms(
                        ctx,
                        (&a, "_target_type"),
                        (&a, "_target_id"),
                        &f.valid_types,
                    );
                    let first = |what: Frag| {
                        let mut x = Frag::new();
                        x.lit("(SELECT ")
                            .frag(what)
                            .lit(" FROM ")
                            .ident(&ident::assoc_table_name(&root.entity_type, &f.name))
                            .lit(" ")
                            .alias(&a)
                            .lit(" WHERE ")
                            .col(&a, "_entity_id")
                            .lit(" = ")
                            .col("r", "id")
                            .lit(" ORDER BY ")
                            .col(&a, "_position")
                            .lit(" LIMIT 1)");
                        x
                    };
                    let mut ok = Frag::new();
                    ok.lit("CASE WHEN ").frag(arms.ok).lit(" THEN 1 ELSE 0 END");
                    let mut ok_or_empty = Frag::new();
                    ok_or_empty.lit("COALESCE(").frag(first(ok)).lit(", 1)");
                    known.push(ok_or_empty);
                    text::sort_operand(ctx.dialect, first(arms.name))
                }
                _ => {
                    return Err(pass(
                        Reason::Sort,
                        format!("sorting on {} field {}", f.data_type.api_name(), f.name),
                    ))
                }
            }
        };
        let name = format!("_sk{i}");
        select.lit(", ").frag(key).lit(" AS ").alias(&name);
        let dir = match s.direction {
            SortDirection::Asc => " ASC NULLS LAST",
            SortDirection::Desc => " DESC NULLS FIRST",
        };
        let mut o = Frag::new();
        o.alias(&name).lit(dir);
        page_terms.push(o);
        let mut o = Frag::new();
        o.alias("r").lit(".").alias(&name).lit(dir);
        outer_terms.push(o);
    }
    for terms in [&mut page_terms, &mut outer_terms] {
        let mut id_order = Frag::new();
        id_order.col("r", "id").lit(" ASC");
        terms.push(id_order);
    }
    let known = (!known.is_empty()).then(|| {
        let mut k = Frag::new();
        k.lit("(").frag(Frag::join(known, " * ")).lit(")");
        k
    });
    Ok(Order {
        page_terms: Frag::join(page_terms, ", "),
        outer_terms: Frag::join(outer_terms, ", "),
        select,
        joins,
        known,
    })
}

/// The key of a deep sort `hop.Target.far` through an entity field: the far value of the
/// active target of that type, null when the link is null or of another type (as the site
/// follows links). A target the cache lacks or holds retired makes the order unknown. The far
/// field must be a stored column (number, date, text, ...).
fn deep_key(
    ctx: &mut Ctx<'_>,
    root: &CatalogType,
    path: &str,
    joins: &mut Frag,
    known: &mut Vec<Frag>,
) -> Result<Frag, PassThrough> {
    let parts: Vec<&str> = path.split('.').collect();
    let [hop_name, target, far] = parts.as_slice() else {
        return Err(pass(
            Reason::Sort,
            format!("sorting on {path:?}: more than one hop"),
        ));
    };
    let cat = ctx.cat;
    let root = cat
        .types
        .get(&root.entity_type)
        .expect("root is in the catalog");
    let (h, t) = hop(ctx, root, hop_name, target).map_err(|e| pass(Reason::Sort, e.detail))?;
    if h.storage != Storage::EntityLink {
        return Err(pass(Reason::Sort, "sorting through a multi-entity field"));
    }
    let f = field(t, far).map_err(|e| pass(Reason::Sort, e.detail))?;
    // Rows whose link is null, of another type or to a retired row sort as a null far value.
    ctx.needs(TrustClass::SortEntity);
    ctx.needs(TrustClass::NullHop);
    let j = ctx.alias();
    let (tcol, icol) = (format!("{}__type", h.name), format!("{}__id", h.name));
    joins
        .lit(" LEFT JOIN ")
        .ident(&t.table)
        .lit(" ")
        .alias(&j)
        .lit(" ON ")
        .col("r", &tcol)
        .lit(" = ")
        .bind(SqlValue::Text(t.entity_type.clone()))
        .lit(" AND ")
        .col(&j, "id")
        .lit(" = ")
        .col("r", &icol);
    let mut ok = Frag::new();
    ok.lit("CASE WHEN ")
        .col("r", &icol)
        .lit(" IS NULL OR ")
        .col("r", &tcol)
        .lit(" <> ")
        .bind(SqlValue::Text(t.entity_type.clone()))
        .lit(" OR (")
        .col(&j, "id")
        .lit(" IS NOT NULL AND NOT ")
        .col(&j, "_retired")
        .lit(") THEN 1 ELSE 0 END");
    known.push(ok);
    let mut value = Frag::new();
    value
        .lit("CASE WHEN NOT ")
        .col(&j, "_retired")
        .lit(" THEN ")
        .col(&j, &f.name)
        .lit(" END");
    Ok(match f.storage {
        Storage::Integer
        | Storage::Float
        | Storage::Date
        | Storage::DateTime
        | Storage::Boolean => {
            ctx.needs(TrustClass::SortScalar);
            value
        }
        Storage::Text => {
            ctx.needs(match f.data_type {
                DataType::List | DataType::StatusList => TrustClass::SortList,
                _ => TrustClass::SortText,
            });
            text::sort_operand(ctx.dialect, value)
        }
        _ => {
            return Err(pass(
                Reason::Sort,
                format!("sorting on {} field {path}", f.data_type.api_name()),
            ))
        }
    })
}

/// The sort name of a link and whether it is known, per nameable target type.
struct NameArms {
    /// The lower-casable name: the display field, "" when null; NULL for unknown targets.
    name: Frag,
    /// True when the target is cached, nameable and active (as rendered links require).
    ok: Frag,
}

/// Like [`name_arms`], for an entity field of the page's row `r`: each nameable target type is
/// LEFT JOINed (by `joins`) instead of probed.
fn name_joins(
    ctx: &mut Ctx<'_>,
    joins: &mut Frag,
    tcol: &str,
    icol: &str,
    valid_types: &[String],
) -> NameArms {
    let (js, names, oks) =
        super::output::join_arms(ctx, ("r", tcol), ("r", icol), valid_types, true);
    for j in js {
        joins.frag(j);
    }
    arms_of(names, oks)
}

fn name_arms(
    ctx: &mut Ctx<'_>,
    type_col: (&str, &str),
    id_col: (&str, &str),
    valid_types: &[String],
) -> NameArms {
    let (names, oks) = super::output::probe_arms(ctx, type_col, id_col, valid_types, true);
    arms_of(names, oks)
}

/// The `CASE` of the name arms and the disjunction of the known arms.
fn arms_of(names: Vec<Frag>, oks: Vec<Frag>) -> NameArms {
    if names.is_empty() {
        let mut name = Frag::new();
        name.lit("NULL");
        let mut ok = Frag::new();
        ok.lit("1=0");
        return NameArms { name, ok };
    }
    let mut name = Frag::new();
    name.lit("CASE");
    for n in names {
        name.frag(n);
    }
    name.lit(" END");
    let mut ok = Frag::new();
    ok.lit("(").frag(Frag::join(oks, " OR ")).lit(")");
    NameArms { name, ok }
}
