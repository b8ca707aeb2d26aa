//! Relative-date relations, computed from the site clock in UTC (doc 5.3 leaves timezone,
//! week start and alignment open; these are the test site's choices):
//! * `in_last n UNIT`: `[now - n·UNIT, now]`; `in_next n UNIT`: `[now, now + n·UNIT]`, not
//!   aligned to day boundaries. HOUR = 3600 s, DAY = 24 h, WEEK = 7 days, MONTH and YEAR are
//!   calendar months (day clamped to the month's end). `date` fields compare with the
//!   calendar dates of the window's ends.
//! * `in_calendar_day|week|month|year k`: the whole UTC calendar period `k` periods from the
//!   current one; weeks start on Monday (ISO) unless the site's `week_start` says Sunday.

use chrono::{Datelike, Duration, Months, NaiveDate};
use serde_json::Value;

use crate::semantics::WeekStart;
use crate::value::{days_from_date, to_utc};

pub fn day_of(secs: i64) -> i32 {
    secs.div_euclid(86_400) as i32
}

fn midnight(d: NaiveDate) -> i64 {
    days_from_date(d) as i64 * 86_400
}

fn shift(now: i64, n: i64, unit: &str) -> Result<i64, String> {
    let t = to_utc(now);
    let months = |m: i64| -> Result<i64, String> {
        let m32 = u32::try_from(m.unsigned_abs()).map_err(|_| "period too large".to_string())?;
        let r = if m >= 0 {
            t.checked_add_months(Months::new(m32))
        } else {
            t.checked_sub_months(Months::new(m32))
        };
        r.map(|d| d.timestamp())
            .ok_or_else(|| "date out of range".into())
    };
    match unit.to_ascii_uppercase().as_str() {
        "HOUR" => Ok(now + n * 3600),
        "DAY" => Ok(now + n * 86_400),
        "WEEK" => Ok(now + n * 7 * 86_400),
        "MONTH" => months(n),
        "YEAR" => months(n * 12),
        other => Err(format!(
            "unknown unit '{other}' (HOUR, DAY, WEEK, MONTH, YEAR)"
        )),
    }
}

/// The inclusive `[lo, hi]` window in seconds for a relative-date relation (positive form).
pub fn window(
    rel: &str,
    values: &[Value],
    now: i64,
    week_start: WeekStart,
) -> Result<(i64, i64), String> {
    match rel {
        "in_last" | "in_next" => {
            let (n, unit) = match values {
                [n, u] => (n.as_i64(), u.as_str()),
                [n] => (n.as_i64(), Some("DAY")),
                _ => (None, None),
            };
            let (Some(n), Some(unit)) = (n, unit) else {
                return Err("needs [count, unit]".into());
            };
            if rel == "in_last" {
                Ok((shift(now, -n, unit)?, now))
            } else {
                Ok((now, shift(now, n, unit)?))
            }
        }
        "in_calendar_day" | "in_calendar_week" | "in_calendar_month" | "in_calendar_year" => {
            let k = match values {
                [k] => k.as_i64().ok_or("needs an integer offset")?,
                _ => return Err("needs one integer offset".into()),
            };
            calendar(rel, k, now, week_start)
        }
        _ => Err(format!("unknown relation '{rel}'")),
    }
}

fn calendar(rel: &str, k: i64, now: i64, week_start: WeekStart) -> Result<(i64, i64), String> {
    let today = to_utc(now).date_naive();
    let range = |start: Option<NaiveDate>, end: Option<NaiveDate>| match (start, end) {
        (Some(s), Some(e)) => Ok((midnight(s), midnight(e) - 1)),
        _ => Err("date out of range".to_string()),
    };
    let months = |d: NaiveDate, m: i64| {
        let m32 = u32::try_from(m.unsigned_abs()).ok()?;
        if m >= 0 {
            d.checked_add_months(Months::new(m32))
        } else {
            d.checked_sub_months(Months::new(m32))
        }
    };
    match rel {
        "in_calendar_day" => {
            let d = today.checked_add_signed(Duration::days(k));
            range(d, d.and_then(|d| d.succ_opt()))
        }
        "in_calendar_week" => {
            let into_week = match week_start {
                WeekStart::Monday => today.weekday().num_days_from_monday(),
                WeekStart::Sunday => today.weekday().num_days_from_sunday(),
            };
            let first = today - Duration::days(into_week as i64);
            let s = first.checked_add_signed(Duration::weeks(k));
            range(s, s.and_then(|s| s.checked_add_signed(Duration::weeks(1))))
        }
        "in_calendar_month" => {
            let first = today.with_day(1);
            let s = first.and_then(|f| months(f, k));
            range(s, s.and_then(|s| months(s, 1)))
        }
        _ => {
            let s = NaiveDate::from_ymd_opt(today.year() + k as i32, 1, 1);
            range(
                s,
                NaiveDate::from_ymd_opt(today.year() + k as i32 + 1, 1, 1),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{format_date_time, parse_date_time};
    use serde_json::json;

    #[test]
    fn windows_are_utc_and_monday_based() {
        // A Wednesday.
        let now = parse_date_time("2024-05-15T10:30:00Z").unwrap();
        let (lo, hi) =
            window("in_last", &[json!(2), json!("DAY")], now, WeekStart::Monday).unwrap();
        assert_eq!(format_date_time(lo), "2024-05-13T10:30:00Z");
        assert_eq!(hi, now);
        let (lo, hi) = window(
            "in_next",
            &[json!(1), json!("MONTH")],
            now,
            WeekStart::Monday,
        )
        .unwrap();
        assert_eq!(
            (lo, format_date_time(hi).as_str()),
            (now, "2024-06-15T10:30:00Z")
        );
        let (lo, hi) = window("in_calendar_week", &[json!(-1)], now, WeekStart::Monday).unwrap();
        assert_eq!(format_date_time(lo), "2024-05-06T00:00:00Z");
        assert_eq!(format_date_time(hi), "2024-05-12T23:59:59Z");
        let (lo, hi) = window("in_calendar_month", &[json!(1)], now, WeekStart::Monday).unwrap();
        assert_eq!(format_date_time(lo), "2024-06-01T00:00:00Z");
        assert_eq!(format_date_time(hi), "2024-06-30T23:59:59Z");
        let (lo, _) = window("in_calendar_year", &[json!(0)], now, WeekStart::Monday).unwrap();
        assert_eq!(format_date_time(lo), "2024-01-01T00:00:00Z");
        let (lo, hi) = window("in_calendar_day", &[json!(0)], now, WeekStart::Monday).unwrap();
        assert_eq!(hi - lo, 86_399);
        assert!(window(
            "in_last",
            &[json!(2), json!("FORTNIGHT")],
            now,
            WeekStart::Monday
        )
        .is_err());
    }

    #[test]
    fn sunday_weeks_start_a_day_earlier() {
        let week = |day: &str, start| {
            let now = parse_date_time(day).unwrap();
            let (lo, hi) = window("in_calendar_week", &[json!(0)], now, start).unwrap();
            (format_date_time(lo), format_date_time(hi))
        };
        let span = |a: &str, b: &str| (a.to_string(), b.to_string());
        // A Wednesday: the Sunday week starts the day before the Monday week.
        assert_eq!(
            week("2024-05-15T10:30:00Z", WeekStart::Sunday),
            span("2024-05-12T00:00:00Z", "2024-05-18T23:59:59Z")
        );
        // A Sunday ends the Monday week and starts the Sunday week.
        assert_eq!(
            week("2024-05-19T08:00:00Z", WeekStart::Monday),
            span("2024-05-13T00:00:00Z", "2024-05-19T23:59:59Z")
        );
        assert_eq!(
            week("2024-05-19T08:00:00Z", WeekStart::Sunday),
            span("2024-05-19T00:00:00Z", "2024-05-25T23:59:59Z")
        );
    }
}
