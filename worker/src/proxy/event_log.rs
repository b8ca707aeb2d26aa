//! Reads of `EventLogEntry` (event daemons polling the site's log) counted by the path they
//! took: the proxy answers them from the log the follower keeps (`sgcache::query::event_log`),
//! so `sgcache_proxy_event_log_reads_total{path="site"}` is what daemons still cost the site.

use super::answer::Outcome;
use super::envelope::Envelope;
use super::metrics::{Metrics, RequestLabels};

/// Counts `outcome` when the read was of EventLogEntry; returns it unchanged.
pub fn counted(metrics: &Metrics, env: &Envelope<'_>, outcome: Outcome) -> Outcome {
    // The payload is parsed only when its text names the type at all.
    let is_log = env.payload_text().contains("EventLogEntry")
        && env
            .payload_value()
            .is_some_and(|p| p.get("type").and_then(|t| t.as_str()) == Some("EventLogEntry"));
    if is_log {
        metrics
            .event_log_reads
            .get_or_create(&RequestLabels {
                method: "read".into(),
                path: outcome.path.label().into(),
                reason: outcome.reason.label().into(),
            })
            .inc();
    }
    outcome
}
