//! The site's clock, as its answers tell it (`Date` header): relative-date relations
//! (`in_last 7 DAY`) are evaluated on the site's "now", and this machine's clock may be off.
//! The header has whole seconds; the offset is re-learned from every answer.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use axum::http::{header, HeaderMap};
use chrono::{DateTime, Duration, Utc};

#[derive(Default)]
pub struct SiteClock {
    /// Site time minus local time, in milliseconds.
    offset_ms: AtomicI64,
    known: AtomicBool,
}

impl SiteClock {
    /// Learns the offset from an answer's `Date` header, received at `local`.
    pub fn observe(&self, headers: &HeaderMap, local: DateTime<Utc>) {
        let Some(site) = headers
            .get(header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| DateTime::parse_from_rfc2822(s).ok())
        else {
            return;
        };
        // The header truncates to the second: the site's time is, on average, half a second
        // later than it says.
        let site = site.with_timezone(&Utc) + Duration::milliseconds(500);
        self.offset_ms
            .store((site - local).num_milliseconds(), Ordering::Relaxed);
        self.known.store(true, Ordering::Relaxed);
    }

    /// The site's current time (this machine's until an answer told otherwise).
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Whether an answer of the site has set the clock.
    pub fn known(&self) -> bool {
        self.known.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_offset_comes_from_the_date_header() {
        let clock = SiteClock::default();
        assert!(!clock.known());
        let mut h = HeaderMap::new();
        h.insert(header::DATE, HeaderValue::from_static("not a date"));
        clock.observe(&h, Utc::now());
        assert!(!clock.known());
        // A site three days ahead of this machine.
        let local = Utc::now();
        let site = local + Duration::days(3);
        let text = site.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        h.insert(header::DATE, HeaderValue::from_str(&text).unwrap());
        clock.observe(&h, local);
        assert!(clock.known());
        let off = clock.now() - Utc::now();
        assert!(
            (off - Duration::days(3)).num_milliseconds().abs() < 2_000,
            "{off}"
        );
    }
}
