//! Switches for the semantics the protocol reference leaves inferred (text case, sort
//! collation, week start, the far value behind a missing link). The defaults are the test site's documented choices; the other
//! settings make the site deliberately disagree with them, so that a test can prove that a
//! cache which learned the defaults notices a site that behaves otherwise. Set in
//! `SimConfig::semantics` or through `PUT /control/quirks`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// How text relations (`is`, `in`, `contains`, `name_*`, tags ...) and text sorts compare.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextCase {
    /// Unicode lower-casing on both sides (the site's default).
    #[default]
    Insensitive,
    /// Exact code points: `"Abc" is "abc"` does not match; a folded sort orders case
    /// variants of the same word by code point instead of leaving them to the id tiebreak.
    Sensitive,
}

/// How text sorts order strings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortCollation {
    /// By the lower-cased string (the site's default).
    #[default]
    Folded,
    /// By raw code points, so `"B" < "a"` (what a database with a C collation does).
    Byte,
}

/// The first day of an `in_calendar_week` week.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeekStart {
    /// ISO weeks (the site's default).
    #[default]
    Monday,
    Sunday,
}

/// What a filter through an entity hop reads when the link is null, of another type or to a
/// retired row (doc 5.4, inferred).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NullHop {
    /// A null far value (the site's default): `is false` on a checkbox does not match,
    /// `is_not true` does.
    #[default]
    Null,
    /// The far field's default value: `false` for a checkbox (so `is false` matches); null
    /// for every other type.
    Default,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Semantics {
    pub text_case: TextCase,
    pub sort_collation: SortCollation,
    pub week_start: WeekStart,
    pub null_hop: NullHop,
}

/// Lower-cases only when needed.
pub fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase() || b >= 0x80) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

impl Semantics {
    /// A text value as text relations compare it.
    pub fn fold<'a>(&self, s: &'a str) -> Cow<'a, str> {
        match self.text_case {
            TextCase::Insensitive => lower(s),
            TextCase::Sensitive => Cow::Borrowed(s),
        }
    }

    /// A text value as sorts compare it: the primary key, then the key that orders values
    /// equal on the primary one (empty when such values are left to the id tiebreak).
    pub fn sort_key(&self, s: &str) -> (String, String) {
        match (self.sort_collation, self.text_case) {
            (SortCollation::Byte, _) => (s.to_string(), String::new()),
            (SortCollation::Folded, TextCase::Insensitive) => {
                (lower(s).into_owned(), String::new())
            }
            (SortCollation::Folded, TextCase::Sensitive) => (lower(s).into_owned(), s.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_fold_and_switches_do_not() {
        let d = Semantics::default();
        assert_eq!(d.fold("ÉCole"), "école");
        assert!(d.sort_key("B") > d.sort_key("a"));
        let s = Semantics {
            text_case: TextCase::Sensitive,
            ..d
        };
        assert_eq!(s.fold("ÉCole"), "ÉCole");
        assert!(s.sort_key("B") > s.sort_key("a"));
        assert!(s.sort_key("Abc") < s.sort_key("abc"));
        let b = Semantics {
            sort_collation: SortCollation::Byte,
            ..d
        };
        assert!(b.sort_key("B") < b.sort_key("a"));
        assert_eq!(b.sort_key("Abc").1, "");
    }

    #[test]
    fn reads_the_wire_names() {
        let s: Semantics = serde_json::from_value(json!({"text_case": "sensitive",
            "sort_collation": "byte", "week_start": "sunday", "null_hop": "default"}))
        .unwrap();
        assert_eq!(s.null_hop, NullHop::Default);
        assert_eq!(s.text_case, TextCase::Sensitive);
        assert_eq!(s.sort_collation, SortCollation::Byte);
        assert_eq!(s.week_start, WeekStart::Sunday);
        assert!(serde_json::from_value::<Semantics>(json!({"text_case": "upper"})).is_err());
        assert_eq!(
            serde_json::to_value(Semantics::default()).unwrap(),
            json!({"text_case": "insensitive", "sort_collation": "folded", "week_start": "monday",
                   "null_hop": "null"})
        );
    }
}
