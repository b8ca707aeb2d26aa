//! Each trust class's progress for `status` and the status page: its state (or pin), samples
//! of those needed, the last check, why checks were skipped, and what the last difference
//! touched (type and field names). From `_sgcache_trust`, so every replica's checks count.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sgcache::spec::TrustSpec;
use sgcache::storage::TrustRecord;
use sgcache::trust::TrustClass;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrustClassStatus {
    pub class: String,
    /// `learning`, `trusted`, `off`, or `pinned on` / `pinned off`.
    pub state: String,
    pub samples: i64,
    /// Identical answers needed to be trusted (`trust.samples`; unknown to the status page
    /// of a process without the spec).
    pub needed: Option<u32>,
    pub checks: i64,
    pub differences: i64,
    pub served: i64,
    pub last_check: Option<DateTime<Utc>>,
    /// Checks not run because every check slot was taken.
    pub skipped_busy: i64,
    /// Checks not run because the site budget (`trust.maxSiteRate`) was spent.
    pub skipped_budget: i64,
    pub detail: Option<String>,
}

/// One line per class, in the classes' order, with the spec's pins and sample count.
pub fn classes(
    records: &std::collections::BTreeMap<TrustClass, TrustRecord>,
    spec: Option<&TrustSpec>,
) -> Vec<TrustClassStatus> {
    TrustClass::ALL
        .iter()
        .map(|c| {
            let r = records.get(c).cloned().unwrap_or_default();
            let state = match spec.and_then(|s| s.pin(*c)) {
                Some(p) => format!("pinned {}", format!("{p:?}").to_lowercase()),
                None => r.state.name().to_string(),
            };
            TrustClassStatus {
                class: c.name().into(),
                state,
                samples: r.samples,
                needed: spec.map(|s| s.samples),
                checks: r.checks,
                differences: r.differences,
                served: r.served,
                last_check: r.last_check_ms.and_then(DateTime::from_timestamp_millis),
                skipped_busy: r.skipped_busy,
                skipped_budget: r.skipped_budget,
                detail: r.detail,
            }
        })
        .collect()
}

/// Applies the settings of the process showing the status: samples needed and pins.
pub fn apply_settings(
    classes: &mut [TrustClassStatus],
    needed: u32,
    pin: impl Fn(TrustClass) -> Option<sgcache::spec::TrustPin>,
) {
    for t in classes {
        t.needed = Some(needed);
        if let Some(p) = t.class.parse().ok().and_then(&pin) {
            t.state = format!("pinned {}", format!("{p:?}").to_lowercase());
        }
    }
}

/// `12/20 samples, last check 3s ago, skipped: busy 2, budget 40`.
pub fn progress_line(t: &TrustClassStatus, now: DateTime<Utc>) -> String {
    let samples = match t.needed {
        Some(n) => format!("{}/{n}", t.samples),
        None => t.samples.to_string(),
    };
    let last = match t.last_check {
        Some(at) => format!("last check {}s ago", (now - at).num_seconds().max(0)),
        None => "never checked".into(),
    };
    let mut skipped = Vec::new();
    if t.skipped_busy > 0 {
        skipped.push(format!("busy {}", t.skipped_busy));
    }
    if t.skipped_budget > 0 {
        skipped.push(format!("site budget {}", t.skipped_budget));
    }
    let mut out = format!("{samples} samples, {last}");
    if !skipped.is_empty() {
        out.push_str(&format!(", skipped: {}", skipped.join(", ")));
    }
    if let Some(d) = &t.detail {
        out.push_str(&format!(", last difference: {d}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sgcache::storage::TrustState;
    use std::collections::BTreeMap;

    #[test]
    fn lines_show_samples_of_needed_last_check_and_skips() {
        let now = Utc::now();
        let records = BTreeMap::from([(
            TrustClass::NullHop,
            TrustRecord {
                state: TrustState::Learning,
                samples: 12,
                checks: 12,
                last_check_ms: Some(now.timestamp_millis() - 3_000),
                skipped_busy: 2,
                skipped_budget: 40,
                ..TrustRecord::default()
            },
        )]);
        let mut spec = TrustSpec::default();
        spec.classes
            .insert("sort:text".into(), sgcache::spec::TrustPin::On);
        let all = classes(&records, Some(&spec));
        assert_eq!(all.len(), TrustClass::ALL.len());
        let hop = all.iter().find(|t| t.class == "path:null_hop").unwrap();
        assert_eq!(
            progress_line(hop, now),
            "12/20 samples, last check 3s ago, skipped: busy 2, site budget 40"
        );
        let text = all.iter().find(|t| t.class == "sort:text").unwrap();
        assert_eq!(text.state, "pinned on");
        assert_eq!(progress_line(text, now), "0/20 samples, never checked");
    }
}
