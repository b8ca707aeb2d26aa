//! [`Status`] as plain text for a terminal: one aligned table of types, then one line each for
//! the event follower and the proxy.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::{FollowerStatus, Status, TypeStatus};

/// The whole status, ending with a newline.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sgcache status at {}\n",
        status.generated_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    out.push_str(&types_table(&status.types));
    out.push('\n');
    let _ = writeln!(out, "events  {}", events_line(&status.events));
    let _ = writeln!(out, "log     {}", log_line(status.events.log.as_ref()));
    let proxy = match (&status.proxy, &status.proxy_error) {
        (Some(p), _) => proxy_line(p),
        (None, Some(e)) => format!("not reached: {e}"),
        (None, None) => "not asked".into(),
    };
    let _ = writeln!(
        out,
        "reads   {}",
        super::read_share::share_line(&status.reads)
    );
    let _ = writeln!(out, "proxy   {proxy}");
    if let Some(links) = &status.links {
        let _ = writeln!(out, "links   {}", coverage_line(links));
        for t in &links.implied {
            let _ = writeln!(out, "  implied by links: {t}");
        }
        for u in &links.uncovered {
            let _ = writeln!(out, "  to the site: {u}");
        }
    }
    if !status.trust.is_empty() {
        let _ = writeln!(out, "\ntrust classes");
        for t in &status.trust {
            let line = super::trust::progress_line(t, status.generated_at);
            let _ = writeln!(out, "  {:<26} {:<11} {line}", t.class, t.state);
        }
    }
    out
}

/// One word for where a type is: what a person scanning the table looks for.
pub fn state_word(t: &TypeStatus) -> &'static str {
    if t.is_ready() {
        "ready"
    } else if t.backfilling > 0 {
        "backfilling"
    } else if t.pending > 0 {
        "pending"
    } else if t.unservable > 0 {
        "unservable"
    } else {
        "empty"
    }
}

/// `done/total (pct%)`, `done/?`, `not started`, or `-` when nothing is to be backfilled.
pub fn backfill_text(t: &TypeStatus) -> String {
    match t.backfill {
        None => "-".into(),
        Some(b) if b.done == 0 && b.total.is_none() && t.backfilling == 0 => "not started".into(),
        Some(b) => match b.total {
            Some(total) if total > 0 => {
                let pct = (b.done as f64 / total as f64 * 100.0).min(100.0);
                format!("{}/{} ({pct:.0}%)", b.done, total)
            }
            Some(total) => format!("{}/{}", b.done, total),
            None => format!("{}/?", b.done),
        },
    }
}

/// The type's name, marked when it is cached for links only.
pub fn type_cell(t: &TypeStatus) -> String {
    if t.implied_by.is_empty() {
        t.entity_type.clone()
    } else {
        format!("{} (implied by links)", t.entity_type)
    }
}

fn types_table(types: &[TypeStatus]) -> String {
    let header = [
        "TYPE",
        "STATE",
        "READY",
        "PENDING",
        "BACKFILLING",
        "UNSERVABLE",
        "BACKFILL",
        "LAST SCAN",
        "DEAD LETTERS",
    ];
    let rows: Vec<[String; 9]> = types
        .iter()
        .map(|t| {
            [
                type_cell(t),
                state_word(t).into(),
                t.ready.to_string(),
                t.pending.to_string(),
                t.backfilling.to_string(),
                t.unservable.to_string(),
                backfill_text(t),
                t.last_scan.map_or("-".into(), time),
                t.dead_letters.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(String::from);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            // Names and words left-aligned, numbers right-aligned.
            if matches!(i, 0 | 1 | 7) {
                let _ = write!(line, "{cell:<w$}  ");
            } else {
                let _ = write!(line, "{cell:>w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no cached types)\n");
    }
    out
}

/// The kept event log: the ids and times it covers, its rows and trims.
pub fn log_line(log: Option<&super::KeptLog>) -> String {
    let Some(l) = log else {
        return "not kept (EventLogEntry reads go to the site)".into();
    };
    let mut line = format!(
        "events {}..={} kept, {} rows",
        l.after_event_id + 1,
        l.through_event_id,
        l.rows
    );
    if let (Some(a), Some(b)) = (l.oldest_at, l.newest_at) {
        let _ = write!(line, " ({} to {})", time(a), time(b));
    }
    let _ = write!(line, "; {} trims removed {} rows", l.trims, l.trimmed_rows);
    line
}

/// Whether every declared link can be named from the cache, and how many types are cached
/// for links only.
pub fn coverage_line(links: &super::LinkCoverage) -> String {
    let implied = match links.implied.len() {
        0 => String::new(),
        n => format!("; {n} type(s) cached for links only (implied by links)"),
    };
    if links.uncovered.is_empty() {
        format!("every declared link is served from the cache{implied}")
    } else {
        format!(
            "coverage degraded: reads returning {} declared link(s) go to the site (the cache \
             cannot name their targets){implied}",
            links.uncovered.len()
        )
    }
}

/// Where the follower is: applied id, how far behind, since when caught up.
pub fn events_line(e: &FollowerStatus) -> String {
    let applied = e
        .applied_event_id
        .map_or("no event applied yet".into(), |id| format!("applied {id}"));
    let mut line = match (e.site_newest_event_id, &e.site_error) {
        (Some(newest), _) => format!("{applied}, site newest {newest}"),
        (None, Some(err)) => format!("{applied}; site not reached: {err}"),
        (None, None) if e.events_behind.is_some() => format!("{applied}, the site has no events"),
        (None, None) => format!("{applied}; site not asked"),
    };
    if let (Some(behind), Some(lag)) = (e.events_behind, e.lag_seconds) {
        if behind == 0 {
            line.push_str(": caught up (lag 0 s)");
        } else {
            let _ = write!(line, ": {behind} behind, lag {lag} s");
        }
    }
    if let Some(at) = e.caught_up_at {
        let _ = write!(line, "; last caught up {}", time(at));
    }
    if e.failures > 0 {
        let _ = write!(line, "; {} failed polls in a row", e.failures);
    }
    line
}

/// Hit ratio and the reasons reads went to the site.
pub fn proxy_line(p: &super::ProxyFigures) -> String {
    let ratio = p.hit_ratio.map_or("no reads yet".into(), |r| {
        format!("hit ratio {}", percent(r))
    });
    let mut line = String::new();
    if let Some(state) = &p.database_guard {
        // First: while it holds, every read goes to the site, whatever the ratio says.
        let why = p.database_guard_reason.as_deref().unwrap_or(state);
        let _ = write!(line, "every read goes to the site ({state}: {why}); ");
    }
    let _ = write!(
        line,
        "{ratio} ({} reads from the cache, {} from the site)",
        p.reads_cache, p.reads_site
    );
    if !p.pass_through.is_empty() {
        let reasons: Vec<String> = p
            .pass_through
            .iter()
            .map(|r| format!("{} {}", r.reason, r.reads))
            .collect();
        let _ = write!(line, "; passed through: {}", reasons.join(", "));
    }
    line
}

/// A ratio as a percentage with one decimal: `66.7%`.
pub fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::super::{BackfillProgress, ProxyFigures};
    use super::*;

    #[test]
    fn renders_an_aligned_table_and_the_follower_and_proxy_lines() {
        let status = Status {
            generated_at: Utc::now(),
            types: vec![
                TypeStatus {
                    entity_type: "Asset".into(),
                    pending: 2,
                    backfilling: 3,
                    backfill: Some(BackfillProgress {
                        done: 10,
                        total: Some(40),
                    }),
                    ..TypeStatus::default()
                },
                TypeStatus {
                    entity_type: "CustomEntity01".into(),
                    ready: 12,
                    ..TypeStatus::default()
                },
            ],
            events: FollowerStatus {
                applied_event_id: Some(90),
                site_newest_event_id: Some(96),
                events_behind: Some(6),
                lag_seconds: Some(42),
                ..FollowerStatus::default()
            },
            proxy: Some(ProxyFigures::from_metrics(
                "sgcache_proxy_requests_total{method=\"read\",path=\"cache\",reason=\"none\"} 2\n\
                 sgcache_proxy_requests_total{method=\"read\",path=\"site\",reason=\"stale\"} 1\n",
            )),
            proxy_error: None,
            trust: vec![],
            reads: Default::default(),
            links: Some(super::super::LinkCoverage {
                implied: vec!["Sequence (code) for Shot.sg_sequence".into()],
                uncovered: vec!["Task.entity -> Note (not cached)".into()],
            }),
        };
        let text = render(&status);
        let lines: Vec<&str> = text.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("TYPE")).unwrap();
        assert!(lines[header + 1].starts_with("Asset           backfilling"));
        assert!(lines[header + 1].contains("10/40 (25%)"));
        assert!(lines[header + 2].starts_with("CustomEntity01  ready"));
        // Right-aligned counts end in the same column.
        let col = lines[header].find("READY").unwrap() + "READY".len();
        assert_eq!(&lines[header + 2][col - 2..col], "12");
        assert!(text.contains("events  applied 90, site newest 96: 6 behind, lag 42 s"));
        assert!(text.contains("log     not kept"));
        assert!(text.contains(
            "proxy   hit ratio 66.7% (2 reads from the cache, 1 from the site); passed through: stale 1"
        ));
        assert!(text.contains("links   coverage degraded: reads returning 1 declared link(s)"));
        assert!(text.contains("  implied by links: Sequence (code) for Shot.sg_sequence\n"));
        assert!(text.contains("  to the site: Task.entity -> Note (not cached)\n"));
    }
}
