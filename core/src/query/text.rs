//! Case-insensitive text as the test site compares it: both sides lower-cased with Unicode's
//! full lower-case mapping (Rust's `str::to_lowercase`, final sigma included), then compared
//! code point by code point. Neither database does this by default:
//!
//! * PostgreSQL's `lower()` follows the column's collation, so the database's locale would
//!   decide (`C.UTF-8` maps `İ` to `i`, the site to `i̇`). The translator lower-cases with the
//!   ICU root locale (`COLLATE "und-x-icu"`, the same full mapping, checked code point by code
//!   point against Rust on PostgreSQL 15 / ICU 72: identical except characters Unicode 16
//!   added after ICU 72), and orders and compares the result with `COLLATE "C"` (code points).
//! * SQLite's `lower()` is ASCII-only and custom functions need unsafe FFI (forbidden here), so
//!   every SQLite connection gets the collation [`COLLATION`] ([`cmp_folded`], registered in
//!   `crate::sql`): `=`, `IN` and `ORDER BY` under it are exact. `LIKE` cannot use a collation:
//!   with an ASCII pattern, `lower()` after mapping the only two characters whose lower case
//!   holds ASCII (`K` KELVIN SIGN, `İ`) matches exactly as the site does (every other
//!   character stays one non-ASCII character either way, and those never match an ASCII
//!   pattern character); a pattern with non-ASCII text passes through on SQLite.

use std::cmp::Ordering;

use super::frag::Frag;
use super::{pass, Ctx, PassThrough, Reason};
use crate::sql::{Dialect, SqlValue};
use crate::trust::TrustClass;

/// The SQLite collation comparing lower-cased text by code point.
pub const COLLATION: &str = "sgcache_lower";

/// `a` and `b` ordered as their Unicode lower cases (code point order).
pub fn cmp_folded(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        let a = a.bytes().map(|c| c.to_ascii_lowercase());
        return a.cmp(b.bytes().map(|c| c.to_ascii_lowercase()));
    }
    a.to_lowercase().cmp(&b.to_lowercase())
}

/// A filter text lower-cased as the site does; non-ASCII text makes the plan rely on
/// [`TrustClass::TextNonAscii`].
pub fn fold(ctx: &mut Ctx<'_>, s: &str) -> String {
    if !s.is_ascii() {
        ctx.needs(TrustClass::TextNonAscii);
    }
    s.to_lowercase()
}

/// `expr` made comparable with `=` / `<>` / `IN` against a [`fold`]ed value.
pub fn eq_operand(dialect: Dialect, expr: Frag) -> Frag {
    let mut x = Frag::new();
    match dialect {
        Dialect::Postgres => x
            .lit("lower((")
            .frag(expr)
            .lit(") COLLATE \"und-x-icu\") COLLATE \"C\""),
        Dialect::Sqlite => x.lit("(").frag(expr).lit(") COLLATE sgcache_lower"),
    };
    x
}

/// `expr` as a sort key: [`eq_operand`] (both order by code point of the lower case).
pub fn sort_operand(dialect: Dialect, expr: Frag) -> Frag {
    eq_operand(dialect, expr)
}

/// `expr LIKE pattern ESCAPE '\'`, case-insensitive as the site: `pattern` is built from a
/// [`fold`]ed needle by [`like_pattern`]. Passes through on SQLite when the pattern is not
/// ASCII (see the module doc).
pub fn like(dialect: Dialect, expr: Frag, pattern: String) -> Result<Frag, PassThrough> {
    let mut x = Frag::new();
    match dialect {
        Dialect::Postgres => {
            x.lit("lower((")
                .frag(expr)
                .lit(") COLLATE \"und-x-icu\") COLLATE \"C\"");
        }
        Dialect::Sqlite => {
            if !pattern.is_ascii() {
                return Err(pass(
                    Reason::Value,
                    "non-ASCII text search on SQLite (its LIKE cannot fold it)",
                ));
            }
            x.lit("lower(replace(replace((")
                .frag(expr)
                .lit("), '\u{212A}', 'k'), '\u{130}', 'i\u{307}'))");
        }
    }
    x.lit(" LIKE ")
        .bind(SqlValue::Text(pattern))
        .lit(" ESCAPE '\\'");
    Ok(x)
}

/// A LIKE pattern (escape character `\`) matching the folded text `s` anywhere, at the start
/// or at the end.
pub fn like_pattern(s: &str, prefix: bool, suffix: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    if prefix {
        out.push('%');
    }
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    if suffix {
        out.push('%');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_order_is_the_lower_case_code_point_order() {
        assert_eq!(cmp_folded("ABC", "abc"), Ordering::Equal);
        assert_eq!(cmp_folded("abc", "ABD"), Ordering::Less);
        assert_eq!(cmp_folded("Zeta", "alpha"), Ordering::Greater);
        // `_` (0x5F) sorts after upper-case letters but before lower-case ones.
        assert_eq!(cmp_folded("A_", "AB"), Ordering::Less);
        assert_eq!(cmp_folded("Éclair", "éclair"), Ordering::Equal);
        assert_eq!(cmp_folded("Éclair", "zed"), Ordering::Greater);
        assert_eq!(cmp_folded("\u{212A}", "k"), Ordering::Equal);
        assert_eq!(cmp_folded("ΑΣ", "ας"), Ordering::Equal);
        assert_eq!(cmp_folded("ΑΣ", "ασ"), Ordering::Less);
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("a%_\\b", true, true), "%a\\%\\_\\\\b%");
        assert_eq!(like_pattern("ab", false, true), "ab%");
    }
}
