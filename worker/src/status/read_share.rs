//! The share of reads answered from the cache over every proxy replica: each proxy adds what
//! it counted to `_sgcache_read_counts` every [`FLUSH_EVERY`] (see
//! `sgcache::storage::read_counts`), and the status sums the last [`WINDOW_MINUTES`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sgcache::sql::Db;
use sgcache::storage::read_counts::{self, MinuteReads, ReadShare};

use super::ProxyFigures;

/// How often a proxy adds its counts.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// The window the status reports: the current minute and the four before it.
pub const WINDOW_MINUTES: i64 = 5;

/// This replica's name in the counts: the pod's name on Kubernetes (`HOSTNAME`), else the
/// process; a second proxy in one process (tests) gets `#2`, and so on.
pub fn replica_id() -> String {
    static STARTED: AtomicU32 = AtomicU32::new(0);
    let base = match std::env::var("HOSTNAME") {
        Ok(h) if !h.is_empty() => h,
        _ => format!("pid-{}", std::process::id()),
    };
    match STARTED.fetch_add(1, Ordering::Relaxed) {
        0 => base,
        n => format!("{base}#{}", n + 1),
    }
}

/// What this replica has added so far, to add only what is new.
#[derive(Debug, Default)]
pub struct Flushed {
    cache: u64,
    site: BTreeMap<String, u64>,
}

impl Flushed {
    /// The reads counted since the last successful flush, for `minute`.
    pub fn pending(&self, figures: &ProxyFigures, minute: i64) -> MinuteReads {
        let site = figures
            .site_by_reason
            .iter()
            .map(|(r, n)| (r.clone(), n.saturating_sub(*self.site.get(r).unwrap_or(&0))))
            .filter(|(_, n)| *n > 0)
            .collect();
        MinuteReads {
            minute,
            cache: figures.reads_cache.saturating_sub(self.cache),
            site,
        }
    }

    /// Adds what is new in `figures` to the shared counts; on failure it is added next time.
    pub async fn flush(
        &mut self,
        db: &Db,
        replica: &str,
        figures: &ProxyFigures,
        minute: i64,
    ) -> Result<(), sgcache::storage::StorageError> {
        let reads = self.pending(figures, minute);
        if !reads.is_empty() {
            read_counts::add_reads(db, replica, &reads).await?;
        }
        self.cache = figures.reads_cache;
        self.site = figures.site_by_reason.clone();
        Ok(())
    }
}

/// Every replica's reads over the window ending now.
pub async fn gather(db: &Db) -> Result<ReadShare, sgcache::storage::StorageError> {
    let minute = read_counts::minute_of(chrono::Utc::now());
    read_counts::read_share(db, minute, WINDOW_MINUTES).await
}

/// `97.0% of reads from the cache over the last 5 min, 2 proxies (970 cache, 30 site);
/// passed through: link_name 20, stale 10`.
pub fn share_line(share: &ReadShare) -> String {
    let Some(ratio) = share.ratio() else {
        return format!("no reads in the last {} min", share.minutes);
    };
    let mut line = format!(
        "{} of reads from the cache over the last {} min, {} prox{} ({} cache, {} site)",
        super::text::percent(ratio),
        share.minutes,
        share.replicas,
        if share.replicas == 1 { "y" } else { "ies" },
        share.cache,
        share.site
    );
    if !share.reasons.is_empty() {
        let top: Vec<String> = share
            .reasons
            .iter()
            .take(5)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        line.push_str(&format!("; passed through: {}", top.join(", ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::proxy::reason::Reason;
    use sgcache::query;

    #[test]
    fn only_what_is_new_since_the_last_flush_is_added() {
        let metrics = crate::proxy::metrics::Metrics::default();
        metrics.observe("read", "cache", Reason::None, 0.001);
        metrics.observe("read", "site", Reason::Query(query::Reason::Stale), 0.1);
        let first = ProxyFigures::from_metrics(&metrics.encode());
        let mut flushed = Flushed::default();
        let p = flushed.pending(&first, 7);
        assert_eq!((p.minute, p.cache), (7, 1));
        assert_eq!(p.site, BTreeMap::from([("stale".to_string(), 1)]));
        flushed.cache = first.reads_cache;
        flushed.site = first.site_by_reason.clone();
        metrics.observe("read", "cache", Reason::None, 0.001);
        metrics.observe("read", "site", Reason::Query(query::Reason::LinkName), 0.1);
        let second = ProxyFigures::from_metrics(&metrics.encode());
        let p = flushed.pending(&second, 8);
        assert_eq!(p.cache, 1);
        assert_eq!(p.site, BTreeMap::from([("link_name".to_string(), 1)]));
    }
}
