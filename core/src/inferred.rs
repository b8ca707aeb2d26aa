//! Every statement the protocol reference (`docs/shotgun-api3.md`) marks inferred or unknown,
//! and the code's answer to it, in one place. A reading the cache relies on to answer a read
//! is either a trust class (the read is answered from the cache only once the class has
//! proven itself against the site, see [`crate::trust`]) or passes through to the site.
//! Statements about something else (values the cache stores as the site sent them, how the
//! cache keeps up with the site, a person's setting) say so.
//!
//! The test below parses the reference: a statement it marks inferred or unknown that this
//! list lacks, or an entry whose statement is no longer there, fails it.

use crate::trust::TrustClass::{self, *};

/// What the code does with one inferred or unknown statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Reads relying on it carry these classes.
    Class(&'static [TrustClass]),
    /// Reads relying on it go to the site (the translator does not answer them).
    PassThrough,
    /// The cache stores and returns what the site sent; it makes no reading of its own.
    SiteValue,
    /// It concerns how the cache keeps up with the site (event follower, scanner,
    /// write-through), not the answer to a read.
    Upkeep,
    /// A person's setting decides (the named spec key).
    Setting(&'static str),
}

/// One statement: the reference's section, a phrase of it (verbatim), the answer, and why.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    pub section: &'static str,
    pub quote: &'static str,
    pub answer: Answer,
    pub note: &'static str,
}

const fn r(
    section: &'static str,
    quote: &'static str,
    answer: Answer,
    note: &'static str,
) -> Reading {
    Reading {
        section,
        quote,
        answer,
        note,
    }
}

const RELATIVE_DATES: &[TrustClass] = &[
    InLast,
    InNext,
    InCalendarDay,
    InCalendarWeek,
    InCalendarMonth,
    InCalendarYear,
];

const SORTS: &[TrustClass] = &[SortText, SortList, SortEntity, SortMultiEntity, SortScalar];

/// The list.
pub const READINGS: &[Reading] = &[
    r("2", "assumed code 102", Answer::PassThrough,
      "error answers are forwarded as they came; cached answers go only to credentials the site accepted"),
    r("3.2", "HTML-escape `<`", Answer::SiteValue,
      "text is stored and returned as the site sent it, never unescaped"),
    r("3.2", "**inferred** from a client test that round-trips", Answer::SiteValue,
      "the same statement's source"),
    r("4", "treat as uncacheable (inferred)", Answer::PassThrough,
      "computed fields are not cached (Storage::Uncacheable): reads naming them go to the site"),
    r("4", "`updated_by` server-side (inferred", Answer::SiteValue,
      "the cache stores the values the site returns for them"),
    r("4.1", "naive datetimes are assumed", Answer::SiteValue,
      "a client-side conversion; date-times are forwarded and returned as sent"),
    r("4.2", "(time-limited, **inferred** from \"signed URL\")", Answer::PassThrough,
      "image fields are not cached"),
    r("4.3", "`url` is a time-limited download link", Answer::PassThrough,
      "a read returning an uploaded file's url value goes to the site"),
    r("5.2", "**probably** accepted too", Answer::PassThrough,
      "not_between on float, percent, duration and timecode fields goes to the site"),
    r("5.2", "(plus a documented-but-odd `name_id`)", Answer::Class(&[TagList]),
      "tag lists: which relations the site takes and how it compares tag names are not shown \
       by the client's tests; `name_id` goes to the site"),
    r("5.3", "`is_not 5` is assumed to also match nulls", Answer::Class(&[NegationNull]), ""),
    r("5.3", "rows with null `v` match unless `null` is listed", Answer::Class(&[NegationNull]), ""),
    r("5.3", "(open range, **inferred**)", Answer::PassThrough,
      "between / not_between with a null bound goes to the site"),
    r("5.3", "which timezone\n  \"now\"/\"today\" uses", Answer::Class(RELATIVE_DATES),
      "windows on the site's clock, from its Date header"),
    r("5.3", "Week start and timezone depend on site preferences", Answer::Class(RELATIVE_DATES), ""),
    r("5.3", "case-insensitive (**inferred**, as for text)", Answer::Class(&[LinkName]), ""),
    r("5.4", "fail positive relations) (**inferred**", Answer::Class(&[NullHop]),
      "relations a missing far value could satisfy, through an entity hop"),
    r("5.4", "Negative relations on such paths behave as", Answer::Class(&[NegationMultiEntity]), ""),
    r("5.4", "Deep return fields through multi_entity are not well defined",
      Answer::Class(&[MultiEntityReturn]), ""),
    r("5.5", "Deep paths are accepted by the server", Answer::Class(&[NullHop]),
      "a sort through an entity hop: where rows whose link is missing go"),
    r("5.5", "Null ordering, collation (case-insensitive?) and tie order are undocumented",
      Answer::Class(SORTS), "sorts on id alone carry no class"),
    r("5.6", "Retired rows are excluded from link resolution", Answer::Class(&[NullHop]),
      "filters through a link to a retired row; returned links to retired rows go to the site"),
    r("6", "| Group | `code` (verify) |", Answer::Class(&[LinkName]), ""),
    r("6", "(`this_file`/`filename`; verify)", Answer::Class(&[LinkName]), ""),
    r("6", "`description` (verify)", Answer::Class(&[LinkName]),
      "EventLogEntry.description is confirmed by the schema fixture (doc 6)"),
    r("8.1", "(sudo target when sudoing, **inferred**)", Answer::SiteValue,
      "event rows are read and stored as the site returns them"),
    r("8.3", "**inferred** cause", Answer::Upkeep,
      "the event follower keeps a backlog of missing ids, as the daemon does"),
    r("8.4", "(placeholder → final, URL re-signing) — **inferred**", Answer::PassThrough,
      "image and computed fields are not cached"),
    r("9", "| Error codes |", Answer::PassThrough, "forwarded verbatim, never cached"),
    r("9", "| Rate limits |", Answer::PassThrough, "upstream statuses are propagated"),
    r("9", "| Page size |", Answer::PassThrough, "pages above 500 go to the site"),
    r("9", "| Relative-date relations |", Answer::Class(RELATIVE_DATES), ""),
    r("9", "| Collation & sort |", Answer::Class(SORTS), ""),
    r("9", "| Text matching |", Answer::Class(&[TextNonAscii]),
      "search values with leading or trailing whitespace go to the site"),
    r("9", "| Null semantics of negated scalar relations |",
      Answer::Class(&[NegationNull, NegationMultiEntity]), ""),
    r("9", "| Deep paths through multi_entity in `return_fields`",
      Answer::Class(&[MultiHop, MultiEntityReturn]), ""),
    r("9", "| Display field per entity type |", Answer::Class(&[LinkName]), ""),
    r("9", "| Permissions |", Answer::Setting("workers.proxy.cacheFor"),
      "the cache holds what its own script sees; cacheFor limits who is answered from it"),
    r("9", "| `image` / upload URLs |", Answer::PassThrough, ""),
    r("9", "| `summarize`, `text_search`", Answer::PassThrough, ""),
    r("9", "| Events for connection entities", Answer::Upkeep,
      "links refetched on retirement and revival; the updated_at scanner"),
    r("9", "| `revive`/`delete` on an already", Answer::PassThrough, "writes are forwarded"),
    r("9", "| Batch failure shape |", Answer::PassThrough, "writes are forwarded"),
    r("9", "| Additional `info` keys |", Answer::PassThrough, "info is forwarded or replayed"),
    r("9", "| New methods / parameters", Answer::PassThrough,
      "unknown methods and unknown read keys go to the site"),
];

/// The classes the list names.
pub fn classes() -> std::collections::BTreeSet<TrustClass> {
    READINGS
        .iter()
        .filter_map(|r| match r.answer {
            Answer::Class(c) => Some(c.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/shotgun-api3.md"
    ));

    /// How the reference marks a statement inferred or unknown (outside section 9's table,
    /// whose every row is an unknown).
    const MARKS: &[&str] = &[
        "inferred",
        "undocumented",
        "not documented",
        "not well defined",
        "**probably**",
        "assumed",
        "verify)",
    ];

    /// The reference's lines from section 1 on, each with its section number.
    fn sections(doc: &str) -> Vec<(String, &str)> {
        let mut section = None;
        let mut out = Vec::new();
        for line in doc.lines() {
            if let Some(h) = line
                .strip_prefix("## ")
                .or_else(|| line.strip_prefix("### "))
            {
                let n = h.split_whitespace().next().unwrap_or("");
                section = Some(n.trim_end_matches('.').to_string());
            }
            if let Some(s) = &section {
                out.push((s.clone(), line));
            }
        }
        out
    }

    fn normalized(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Every mark (and every row of section 9) with the text around it.
    fn marked(doc: &str) -> Vec<(String, usize, String, usize)> {
        let lines = sections(doc);
        let mut out = Vec::new();
        for (i, (section, line)) in lines.iter().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let n = if section == "9" {
                let row = line.starts_with("| ")
                    && !line.starts_with("| Topic")
                    && !line.starts_with("|---");
                row as usize
            } else {
                let lower = line.to_lowercase();
                MARKS.iter().map(|m| lower.matches(m).count()).sum()
            };
            if n == 0 {
                continue;
            }
            let window = if section == "9" {
                line.to_string()
            } else {
                let lo = i.saturating_sub(2);
                let hi = (i + 3).min(lines.len());
                lines[lo..hi]
                    .iter()
                    .filter(|(s, _)| s == section)
                    .map(|(_, l)| *l)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            out.push((section.clone(), i, window, n));
        }
        out
    }

    /// The marks of `doc` that the list does not answer.
    fn unanswered(doc: &str) -> Vec<String> {
        let mut missing = Vec::new();
        for (section, line, window, n) in &marked(doc) {
            let window = normalized(window);
            let answers = READINGS
                .iter()
                .filter(|r| r.section == section && window.contains(&normalized(r.quote)))
                .count();
            if answers < *n {
                missing.push(format!(
                    "section {section}, line {}: {n} mark(s), {answers} answer(s): {window}",
                    line + 1
                ));
            }
        }
        missing
    }

    #[test]
    fn every_inferred_or_unknown_statement_of_the_reference_has_an_answer() {
        let marks = marked(DOC).len();
        assert!(marks > 30, "the reference's marks were not found: {marks}");
        let missing = unanswered(DOC);
        assert!(
            missing.is_empty(),
            "statements marked inferred or unknown with no answer in sgcache::inferred::READINGS:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn every_answer_names_a_statement_of_the_reference() {
        let lines = sections(DOC);
        for r in READINGS {
            let text = lines
                .iter()
                .filter(|(s, _)| s == r.section)
                .map(|(_, l)| *l)
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                normalized(&text).contains(&normalized(r.quote)),
                "section {} no longer says {:?}",
                r.section,
                r.quote
            );
        }
    }

    #[test]
    fn a_statement_the_list_lacks_fails_the_check() {
        for (at, added) in [
            (
                "### 5.6 Retired rows",
                "Tags sort by creation time (**inferred**).\n\n",
            ),
            (
                "| Additional `info` keys |",
                "| Webhooks | Delivery order is unknown. | Forward. |\n",
            ),
            (
                "### 4.1 Date-time",
                "Durations are assumed to be whole minutes.\n\n",
            ),
        ] {
            let doc = DOC.replacen(at, &format!("{added}{at}"), 1);
            assert_ne!(doc, DOC);
            let missing = unanswered(&doc);
            assert_eq!(missing.len(), 1, "{added}: {missing:?}");
        }
    }

    #[test]
    fn every_class_answers_a_statement() {
        let named = classes();
        for c in TrustClass::ALL {
            assert!(
                named.contains(&c),
                "{c} answers no statement of the reference"
            );
        }
    }
}
