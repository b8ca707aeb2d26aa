//! Relative-date windows (`in_last`, `in_next`, `in_calendar_*`), computed in Rust from the
//! site's clock and bound as values, so the answer never depends on the database's clock.
//!
//! The arithmetic is the test site's (sim/src/dates.rs; the protocol reference leaves timezone,
//! week start and alignment open, so these plans carry a trust class):
//! * `in_last n UNIT` is `[now − n·UNIT, now]`, `in_next n UNIT` is `[now, now + n·UNIT]`, not
//!   aligned to day boundaries; HOUR = 3600 s, DAY = 24 h, WEEK = 7 days; MONTH and YEAR are
//!   calendar months (the day clamped to the month's end); the unit is case-insensitive and
//!   defaults to DAY when only the count is given.
//! * `in_calendar_day|week|month|year k`: the whole UTC period `k` periods from the current
//!   one; weeks start on Monday.
//! * `date` fields compare with the calendar dates of the window's ends.
//!
//! The same arithmetic lives in the test site. The site already depends on core, so it could
//! call this module instead; it keeps its own on purpose: it is the reference the translator
//! is compared with (tests/tests/translator_shapes.rs), and a shared window would make that
//! comparison blind to a mistake in it.
//!
//! Anything the site would refuse, or that leaves the range both databases store (years 1 to
//! 9999), passes through: the site answers (or refuses) it.

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, Utc};
use serde_json::Value;

use super::{pass, PassThrough, Reason};

/// An inclusive window of instants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub lo: DateTime<Utc>,
    pub hi: DateTime<Utc>,
}

impl Window {
    /// The calendar dates of the window's ends, for `date` fields.
    pub fn days(&self) -> (NaiveDate, NaiveDate) {
        (self.lo.date_naive(), self.hi.date_naive())
    }
}

fn refuse(rel: &str, why: &str) -> PassThrough {
    pass(Reason::Value, format!("{rel}: {why}"))
}

/// The window of a relative-date relation in its positive form (`in_last`, not `not_in_last`).
pub fn window(rel: &str, values: &[Value], now: DateTime<Utc>) -> Result<Window, PassThrough> {
    let w = match rel {
        "in_last" | "in_next" => {
            let (n, unit) = match values {
                [n, u] => (n.as_i64(), u.as_str()),
                [n] => (n.as_i64(), Some("DAY")),
                _ => (None, None),
            };
            let (Some(n), Some(unit)) = (n, unit) else {
                return Err(refuse(rel, "needs [count, unit]"));
            };
            if rel == "in_last" {
                let lo = shift(now, n.checked_neg(), unit).ok_or_else(|| refuse(rel, "range"))?;
                Window { lo, hi: now }
            } else {
                let hi = shift(now, Some(n), unit).ok_or_else(|| refuse(rel, "range"))?;
                Window { lo: now, hi }
            }
        }
        "in_calendar_day" | "in_calendar_week" | "in_calendar_month" | "in_calendar_year" => {
            let k = match values {
                [k] => k.as_i64(),
                _ => None,
            }
            .ok_or_else(|| refuse(rel, "needs one integer offset"))?;
            calendar(rel, k, now).ok_or_else(|| refuse(rel, "range"))?
        }
        _ => return Err(pass(Reason::Relation, format!("relation {rel:?}"))),
    };
    let storable = |t: DateTime<Utc>| (1..=9999).contains(&t.year());
    if !storable(w.lo) || !storable(w.hi) {
        return Err(refuse(rel, "window outside the years 1 to 9999"));
    }
    Ok(w)
}

/// `now` moved by `n` units (checked: `None` when out of range or the unit is unknown).
fn shift(now: DateTime<Utc>, n: Option<i64>, unit: &str) -> Option<DateTime<Utc>> {
    let n = n?;
    let secs = |per: i64| {
        let s = now.timestamp().checked_add(n.checked_mul(per)?)?;
        DateTime::from_timestamp(s, 0)
    };
    let months = |m: Option<i64>| {
        let m = m?;
        let m32 = u32::try_from(m.unsigned_abs()).ok()?;
        if m >= 0 {
            now.checked_add_months(Months::new(m32))
        } else {
            now.checked_sub_months(Months::new(m32))
        }
    };
    match unit.to_ascii_uppercase().as_str() {
        "HOUR" => secs(3600),
        "DAY" => secs(86_400),
        "WEEK" => secs(7 * 86_400),
        "MONTH" => months(Some(n)),
        "YEAR" => months(n.checked_mul(12)),
        _ => None,
    }
}

/// The whole UTC period `k` periods from the current one: `[first second, last second]`.
fn calendar(rel: &str, k: i64, now: DateTime<Utc>) -> Option<Window> {
    let today = now.date_naive();
    let months = |d: NaiveDate, m: i64| {
        let m32 = u32::try_from(m.unsigned_abs()).ok()?;
        if m >= 0 {
            d.checked_add_months(Months::new(m32))
        } else {
            d.checked_sub_months(Months::new(m32))
        }
    };
    let (start, end) = match rel {
        "in_calendar_day" => {
            let d = today.checked_add_signed(Duration::try_days(k)?)?;
            (d, d.succ_opt()?)
        }
        "in_calendar_week" => {
            let monday = today - Duration::days(today.weekday().num_days_from_monday() as i64);
            let s = monday.checked_add_signed(Duration::try_weeks(k)?)?;
            (s, s.checked_add_signed(Duration::weeks(1))?)
        }
        "in_calendar_month" => {
            let s = months(today.with_day(1)?, k)?;
            (s, months(s, 1)?)
        }
        _ => {
            // The site adds `k as i32` to the year; beyond the storable years it would be
            // out of range anyway.
            let year = i32::try_from(k).ok()?.checked_add(today.year())?;
            (
                NaiveDate::from_ymd_opt(year, 1, 1)?,
                NaiveDate::from_ymd_opt(year.checked_add(1)?, 1, 1)?,
            )
        }
    };
    Some(Window {
        lo: start.and_hms_opt(0, 0, 0)?.and_utc(),
        hi: end.and_hms_opt(0, 0, 0)?.and_utc() - Duration::seconds(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn windows_are_utc_monday_based_and_unaligned() {
        // A Wednesday.
        let now = at("2024-05-15T10:30:00Z");
        let w = window("in_last", &[json!(2), json!("day")], now).unwrap();
        assert_eq!((w.lo, w.hi), (at("2024-05-13T10:30:00Z"), now));
        let w = window("in_last", &[json!(3)], now).unwrap();
        assert_eq!(w.lo, at("2024-05-12T10:30:00Z"));
        let w = window("in_next", &[json!(1), json!("MONTH")], now).unwrap();
        assert_eq!((w.lo, w.hi), (now, at("2024-06-15T10:30:00Z")));
        let w = window("in_calendar_week", &[json!(-1)], now).unwrap();
        assert_eq!(
            (w.lo, w.hi),
            (at("2024-05-06T00:00:00Z"), at("2024-05-12T23:59:59Z"))
        );
        let w = window("in_calendar_month", &[json!(1)], now).unwrap();
        assert_eq!(
            (w.lo, w.hi),
            (at("2024-06-01T00:00:00Z"), at("2024-06-30T23:59:59Z"))
        );
        let w = window("in_calendar_year", &[json!(0)], now).unwrap();
        assert_eq!(w.lo, at("2024-01-01T00:00:00Z"));
        let w = window("in_calendar_day", &[json!(0)], now).unwrap();
        assert_eq!((w.hi - w.lo).num_seconds(), 86_399);
        assert_eq!(
            w.days(),
            (
                now.date_naive(),
                NaiveDate::from_ymd_opt(2024, 5, 15).unwrap()
            )
        );
        // Month arithmetic clamps to the month's end, as the site's does.
        let w = window(
            "in_last",
            &[json!(1), json!("MONTH")],
            at("2024-03-31T00:00:00Z"),
        );
        assert_eq!(w.unwrap().lo, at("2024-02-29T00:00:00Z"));
    }

    #[test]
    fn what_the_site_refuses_or_cannot_store_passes_through() {
        let now = at("2024-05-15T10:30:00Z");
        for (rel, values) in [
            ("in_last", json!([2, "FORTNIGHT"])),
            ("in_last", json!(["2", "DAY"])),
            ("in_last", json!([])),
            ("in_next", json!([i64::MAX, "HOUR"])),
            ("in_last", json!([i64::MIN, "YEAR"])),
            ("in_next", json!([10_000, "YEAR"])),
            ("in_calendar_day", json!([1, 2])),
            ("in_calendar_year", json!([i64::MAX])),
            ("in_calendar_week", json!([i64::MIN])),
            ("in_calendar_month", json!(["0"])),
            ("not_in_calendar_day", json!([0])),
        ] {
            let values = values.as_array().unwrap().clone();
            assert!(window(rel, &values, now).is_err(), "{rel} {values:?}");
        }
    }
}
