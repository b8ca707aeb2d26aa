//! Relations on `tag_list` fields (doc 5.2 / 5.3). The cache stores a tag list as the JSON
//! array the site returned (tag names; `{"name": ...}` objects are read by their name, as the
//! site reads tag values). As on the test site: `is X` means "some tag is X" (case-insensitive),
//! `is null` "no tags", `name_contains s` "some tag contains s"; `is_not` and
//! `name_not_contains` are their exact negations (so they match empty lists). Other relations
//! are the site's to reject. Every such plan relies on [`TrustClass::TagList`].

use serde_json::Value;

use super::filter::{one, ColRef};
use super::frag::Frag;
use super::text::{self, like_pattern};
use super::{pass, Ctx, PassThrough, Reason};
use crate::sql::{Dialect, SqlValue};
use crate::trust::TrustClass;

/// Relations the test site accepts on tag lists.
pub fn allowed(rel: &str) -> bool {
    matches!(rel, "is" | "is_not" | "name_contains" | "name_not_contains")
}

pub fn relation(
    ctx: &mut Ctx<'_>,
    col: ColRef<'_>,
    rel: &str,
    values: &[Value],
) -> Result<Frag, PassThrough> {
    ctx.needs(TrustClass::TagList);
    let negate = matches!(rel, "is_not" | "name_not_contains");
    let v = one(values, rel)?;
    let t = ctx.alias();
    let tag = tag_text(ctx.dialect, &t);
    let cond = match rel {
        "is" | "is_not" => match v {
            Value::Null => None,
            v => {
                let name = v
                    .as_str()
                    .or_else(|| v.get("name")?.as_str())
                    .ok_or_else(|| pass(Reason::Value, "a tag value that is not a name"))?;
                let name = text::fold(ctx, name);
                let mut c = text::eq_operand(ctx.dialect, tag);
                c.lit(" = ").bind(SqlValue::Text(name));
                Some(c)
            }
        },
        _ => {
            let needle = match v {
                Value::String(s) => text::fold(ctx, s),
                Value::Null => String::new(),
                _ => return Err(pass(Reason::Value, format!("{rel} needs a string"))),
            };
            Some(text::like(
                ctx.dialect,
                tag,
                like_pattern(&needle, true, true),
            )?)
        }
    };
    // `is null` is "no tags": the negation of "some tag".
    let negate = negate ^ cond.is_none();
    let mut out = Frag::new();
    out.lit(if negate {
        "NOT EXISTS (SELECT 1 FROM "
    } else {
        "EXISTS (SELECT 1 FROM "
    });
    match ctx.dialect {
        Dialect::Postgres => {
            out.lit("jsonb_array_elements(CASE WHEN jsonb_typeof(")
                .col(col.alias, &col.field.name)
                .lit(") = 'array' THEN ")
                .col(col.alias, &col.field.name)
                .lit(" ELSE '[]'::jsonb END) AS ")
                .alias(&t)
                .lit("(e)");
        }
        Dialect::Sqlite => {
            out.lit("json_each(CASE WHEN json_type(")
                .col(col.alias, &col.field.name)
                .lit(") = 'array' THEN ")
                .col(col.alias, &col.field.name)
                .lit(" ELSE '[]' END) ")
                .alias(&t);
        }
    }
    if let Some(c) = cond {
        out.lit(" WHERE ").frag(c);
    }
    out.lit(")");
    Ok(out)
}

/// The name of one tag (element of alias `t`): the string, or an object's `name`.
fn tag_text(dialect: Dialect, t: &str) -> Frag {
    let mut x = Frag::new();
    match dialect {
        Dialect::Postgres => x
            .lit("CASE WHEN jsonb_typeof(")
            .alias(t)
            .lit(".e) = 'string' THEN ")
            .alias(t)
            .lit(".e #>> '{}' ELSE ")
            .alias(t)
            .lit(".e ->> 'name' END"),
        Dialect::Sqlite => x
            .lit("CASE WHEN ")
            .alias(t)
            .lit(".type = 'text' THEN ")
            .alias(t)
            .lit(".value ELSE json_extract(")
            .alias(t)
            .lit(".value, '$.name') END"),
    };
    x
}
