//! Trust classes: read shapes whose semantics on the real site the protocol reference marks as
//! inferred or unknown. The translator tags every plan with the classes it relied on; the
//! proxy answers such a plan from the cache only once each class has earned trust (its reads
//! compared equal to the site's `trust.samples` times) or is pinned `on` in the spec. Shapes
//! whose semantics are documented and confirmed by the official client's tests carry no class.

use std::fmt;
use std::str::FromStr;

/// One inferred read shape. `name()` is the spec key, the metrics label and the database key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrustClass {
    /// Sorting on a text field: case-insensitive, code point order, nulls last ascending.
    SortText,
    /// Sorting on a list or status_list field: alphabetical (not the configured order).
    SortList,
    /// Sorting on an entity field: by the linked entity's display name.
    SortEntity,
    /// Sorting on a multi_entity field: by the first member's display name.
    SortMultiEntity,
    /// `in_last` / `not_in_last` on the site's clock.
    InLast,
    /// `in_next` / `not_in_next` on the site's clock.
    InNext,
    /// `in_calendar_day` and its negation (whole UTC days).
    InCalendarDay,
    /// `in_calendar_week` and its negation (weeks start on Monday, UTC).
    InCalendarWeek,
    /// `in_calendar_month` and its negation.
    InCalendarMonth,
    /// `in_calendar_year` and its negation.
    InCalendarYear,
    /// Case-insensitive comparison of text outside ASCII (Unicode lower case).
    TextNonAscii,
    /// Relations on tag_list fields.
    TagList,
    /// Filter or return paths of more than one hop.
    MultiHop,
    /// Deep return fields through a multi_entity hop (a list of far values).
    MultiEntityReturn,
    /// Scalar negations that match null values (`is_not`, `not_in`, `not_between`, relative
    /// date negations, `type_is_not` / `name_not_contains` on an empty link).
    NegationNull,
    /// Negations on a multi_entity field or after a multi_entity hop (they match rows with
    /// no linked entity at all).
    NegationMultiEntity,
    /// A filter or sort through an entity hop whose link may be null, of another type or to a
    /// retired row, under a relation a missing far value could satisfy (`is null`, `is_not`,
    /// `not_in`, `not_contains`, a checkbox `is false` / `is_not true`, ...): the cache reads
    /// the far value as null, a site may read the far field's default (doc 5.4).
    NullHop,
    /// A link's display name: `name_*` relations (case-insensitive, doc 5.3) and names of
    /// links to types whose display field the reference does not confirm (doc 6).
    LinkName,
    /// A sort on a number, date, date-time or checkbox field: where nulls go and how ties are
    /// ordered (the `id` tiebreak) are undocumented (doc 5.5).
    SortScalar,
}

impl TrustClass {
    pub const ALL: [TrustClass; 19] = [
        TrustClass::SortText,
        TrustClass::SortList,
        TrustClass::SortEntity,
        TrustClass::SortMultiEntity,
        TrustClass::InLast,
        TrustClass::InNext,
        TrustClass::InCalendarDay,
        TrustClass::InCalendarWeek,
        TrustClass::InCalendarMonth,
        TrustClass::InCalendarYear,
        TrustClass::TextNonAscii,
        TrustClass::TagList,
        TrustClass::MultiHop,
        TrustClass::MultiEntityReturn,
        TrustClass::NegationNull,
        TrustClass::NegationMultiEntity,
        TrustClass::NullHop,
        TrustClass::LinkName,
        TrustClass::SortScalar,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TrustClass::SortText => "sort:text",
            TrustClass::SortList => "sort:list",
            TrustClass::SortEntity => "sort:entity",
            TrustClass::SortMultiEntity => "sort:multi_entity",
            TrustClass::InLast => "relation:in_last",
            TrustClass::InNext => "relation:in_next",
            TrustClass::InCalendarDay => "relation:in_calendar_day",
            TrustClass::InCalendarWeek => "relation:in_calendar_week",
            TrustClass::InCalendarMonth => "relation:in_calendar_month",
            TrustClass::InCalendarYear => "relation:in_calendar_year",
            TrustClass::TextNonAscii => "text:non_ascii",
            TrustClass::TagList => "relation:tag_list",
            TrustClass::MultiHop => "path:multi_hop",
            TrustClass::MultiEntityReturn => "path:multi_entity_return",
            TrustClass::NegationNull => "negation:null",
            TrustClass::NegationMultiEntity => "negation:multi_entity",
            TrustClass::NullHop => "path:null_hop",
            TrustClass::LinkName => "link:name",
            TrustClass::SortScalar => "sort:scalar",
        }
    }

    /// Whether reads of the class depend on the time they are answered at.
    pub fn is_relative_date(self) -> bool {
        matches!(
            self,
            TrustClass::InLast
                | TrustClass::InNext
                | TrustClass::InCalendarDay
                | TrustClass::InCalendarWeek
                | TrustClass::InCalendarMonth
                | TrustClass::InCalendarYear
        )
    }

    /// The class of a relative-date relation (either sign), if it is one.
    pub fn of_relative_date(relation: &str) -> Option<TrustClass> {
        let positive = relation.strip_prefix("not_").unwrap_or(relation);
        Some(match positive {
            "in_last" => TrustClass::InLast,
            "in_next" => TrustClass::InNext,
            "in_calendar_day" => TrustClass::InCalendarDay,
            "in_calendar_week" => TrustClass::InCalendarWeek,
            "in_calendar_month" => TrustClass::InCalendarMonth,
            "in_calendar_year" => TrustClass::InCalendarYear,
            _ => return None,
        })
    }
}

/// Display fields the protocol reference confirms (doc 6: by observation, or as the only
/// mandatory field of the type in the schema fixture). Names of links to other types, or
/// through another field, rely on [`TrustClass::LinkName`].
const CONFIRMED_DISPLAY_FIELDS: &[(&str, &str)] = &[
    ("Asset", "code"),
    ("EventLogEntry", "description"),
    ("HumanUser", "name"),
    ("Note", "subject"),
    ("Playlist", "code"),
    ("Project", "name"),
    ("PublishedFile", "code"),
    ("Reply", "content"),
    ("Sequence", "code"),
    ("Shot", "code"),
    ("Step", "code"),
    ("Task", "content"),
    ("Version", "code"),
];

/// Whether the reference confirms `field` as the display field of `entity_type`.
pub fn display_field_confirmed(entity_type: &str, field: &str) -> bool {
    CONFIRMED_DISPLAY_FIELDS.contains(&(entity_type, field))
}

impl fmt::Display for TrustClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TrustClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TrustClass::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = TrustClass::ALL.iter().map(|c| c.name()).collect();
                format!("unknown trust class {s:?} (known: {})", known.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for c in TrustClass::ALL {
            assert_eq!(c.name().parse::<TrustClass>().unwrap(), c);
            assert!(seen.insert(c.name()), "{c} twice");
        }
        assert!("sort:bogus".parse::<TrustClass>().is_err());
        assert_eq!(
            TrustClass::of_relative_date("not_in_calendar_week"),
            Some(TrustClass::InCalendarWeek)
        );
        assert_eq!(TrustClass::of_relative_date("in"), None);
    }
}
