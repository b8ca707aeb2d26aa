//! The proxy's figures a person asks about (hit ratio, why reads go to the site), read from
//! its `/metrics` text: the same text whether the proxy runs in this process (the status page)
//! or elsewhere (`sgcache-worker status` fetches it).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Pass-through reasons shown, most frequent first.
const TOP_REASONS: usize = 5;

/// The counter of API3 requests by method, path and reason (see `proxy::metrics`).
const REQUESTS: &str = "sgcache_proxy_requests_total";

/// Reads answered by the cache and by the site since the proxy started.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProxyFigures {
    pub reads_cache: u64,
    pub reads_site: u64,
    /// Share of reads answered from the cache (None before the first read).
    pub hit_ratio: Option<f64>,
    /// Why reads went to the site, most frequent first.
    pub pass_through: Vec<ReasonCount>,
    /// The proxy's database guard when it cannot vouch for the cache database (every read goes
    /// to the site): its state (`not_writable`, `failover`, …), None while it can.
    pub database_guard: Option<String>,
    /// The guard's reason, when the proxy said it (its `/readyz`, or in-process).
    pub database_guard_reason: Option<String>,
    /// Every reason's count (what this replica adds to the shared read counts).
    #[serde(skip)]
    pub site_by_reason: BTreeMap<String, u64>,
}

/// The gauge of the database guard's state (see `proxy::db_guard`).
const GUARD: &str = "sgcache_proxy_database_state";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    pub reason: String,
    pub reads: u64,
}

impl ProxyFigures {
    /// Reads the `read` requests of the proxy's metrics text.
    pub fn from_metrics(text: &str) -> ProxyFigures {
        let mut out = ProxyFigures::default();
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        for line in text.lines() {
            if let Some((labels, 1)) = sample(line, GUARD) {
                out.database_guard = label(labels, "state")
                    .filter(|s| *s != "ok")
                    .map(String::from);
            }
            let Some((labels, value)) = sample(line, REQUESTS) else {
                continue;
            };
            if label(labels, "method") != Some("read") {
                continue;
            }
            match label(labels, "path") {
                Some("cache") => out.reads_cache += value,
                Some("site") => {
                    out.reads_site += value;
                    let reason = label(labels, "reason").unwrap_or("none");
                    *reasons.entry(reason.to_string()).or_default() += value;
                }
                _ => {}
            }
        }
        out.site_by_reason = reasons.clone();
        let all = out.reads_cache + out.reads_site;
        out.hit_ratio = (all > 0).then(|| out.reads_cache as f64 / all as f64);
        let mut reasons: Vec<ReasonCount> = reasons
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(reason, reads)| ReasonCount { reason, reads })
            .collect();
        reasons.sort_by(|a, b| b.reads.cmp(&a.reads).then(a.reason.cmp(&b.reason)));
        reasons.truncate(TOP_REASONS);
        out.pass_through = reasons;
        out
    }

    /// Fetches `{base}/metrics` from a running proxy.
    pub async fn fetch(base: &str) -> Result<ProxyFigures, String> {
        let url = format!("{}/metrics", base.trim_end_matches('/'));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let response = http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("cannot reach the proxy at {url}: {}", causes(&e)))?;
        if !response.status().is_success() {
            return Err(format!("the proxy at {url} answered {}", response.status()));
        }
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !text.contains(REQUESTS) && !text.contains("sgcache_proxy_") {
            return Err(format!("{url} is not an sgcache proxy's metrics"));
        }
        let mut figures = ProxyFigures::from_metrics(&text);
        if figures.database_guard.is_some() {
            // Why, in the proxy's words (best effort: the state alone says enough).
            let readyz = format!("{}/readyz", base.trim_end_matches('/'));
            if let Ok(r) = http.get(&readyz).send().await {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                figures.database_guard_reason =
                    v["database_guard"]["reason"].as_str().map(String::from);
            }
        }
        Ok(figures)
    }
}

/// An error and its causes on one line ("error sending request" alone does not say why).
fn causes(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text.replace(
        &format!(" for url ({})", e.url().map_or("", |u| u.as_str())),
        "",
    )
}

/// `name{labels} value` → (labels, value) for samples of `name`.
fn sample<'a>(line: &'a str, name: &str) -> Option<(&'a str, u64)> {
    let rest = line.strip_prefix(name)?.strip_prefix('{')?;
    let (labels, value) = rest.rsplit_once('}')?;
    let value: f64 = value.split_whitespace().next()?.parse().ok()?;
    Some((labels, value as u64))
}

/// The value of label `key` in `a="x",b="y"` (label values here never hold quotes).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::reason::Reason;
    use sgcache::query;

    #[test]
    fn reads_hit_ratio_and_top_reasons_from_the_proxys_counters() {
        let metrics = crate::proxy::metrics::Metrics::default();
        for _ in 0..6 {
            metrics.observe("read", "cache", Reason::None, 0.001);
        }
        metrics.observe(
            "read",
            "site",
            Reason::Query(query::Reason::FieldNotCached),
            0.1,
        );
        metrics.observe(
            "read",
            "site",
            Reason::Query(query::Reason::FieldNotCached),
            0.1,
        );
        metrics.observe("read", "site", Reason::Query(query::Reason::Stale), 0.1);
        metrics.observe("update", "site", Reason::Write, 0.1);
        metrics.observe("find_one", "cache", Reason::None, 0.1);
        let f = ProxyFigures::from_metrics(&metrics.encode());
        assert_eq!((f.reads_cache, f.reads_site), (6, 3));
        assert_eq!(f.hit_ratio, Some(6.0 / 9.0));
        let reasons: Vec<(&str, u64)> = f
            .pass_through
            .iter()
            .map(|r| (r.reason.as_str(), r.reads))
            .collect();
        assert_eq!(reasons, [("field_not_cached", 2), ("stale", 1)]);
    }

    #[test]
    fn the_database_guards_verdict_is_read_from_its_gauge() {
        let metrics = crate::proxy::metrics::Metrics::default();
        let f = ProxyFigures::from_metrics(&metrics.encode());
        assert_eq!(f.database_guard, None);
        let text = "sgcache_proxy_database_state{state=\"ok\"} 0\n\
                    sgcache_proxy_database_state{state=\"not_writable\"} 1\n";
        let f = ProxyFigures::from_metrics(text);
        assert_eq!(f.database_guard.as_deref(), Some("not_writable"));
    }

    #[test]
    fn no_reads_is_no_ratio() {
        let f = ProxyFigures::from_metrics("# EOF\n");
        assert_eq!(f.hit_ratio, None);
        assert!(f.pass_through.is_empty());
    }
}
