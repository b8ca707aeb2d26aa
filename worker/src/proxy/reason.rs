//! Why a request was answered the way it was: one vocabulary for the metrics' `reason`
//! label, the access log, the sampled warnings and the status page. The planner's reasons
//! ([`sgcache::query::Reason`]), the intake's refusals and the site queue's "busy" are parts
//! of it, so a label can only be one the proxy knows and documents (docs/proxy.md).

use sgcache::query;

use super::intake::Refusal;
use super::upstream::gate::Busy;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Nothing to explain: a read answered from the cache, or a request that is not a read
    /// and went where it always goes.
    None,
    /// The read asks what the cache does not answer (shape, fields, freshness, database).
    Query(query::Reason),
    /// The read carries no credentials the proxy can key an answer on.
    Credentials,
    /// The principal is not one the cache answers for (`workers.proxy.cacheFor`).
    Principal,
    /// The read relies on an inferred reading still being compared with the site.
    TrustLearning,
    /// The read relies on an inferred reading found to differ from the site.
    TrustOff,
    /// The site has not accepted these credentials recently: the read itself asks it.
    VerifyAuth,
    /// The cached statement failed while the database still answers (that read's problem).
    Statement,
    /// A write: the site answers it, the cache stores what it wrote.
    Write,
    /// The body is not an API3 request the proxy can read; the site answers with its error.
    Malformed,
    /// The site is unreachable; the last good `info` answer was replayed.
    SiteUnavailable,
    /// Handling the request panicked; it got an API3 error.
    Panic,
    /// This replica's share of the site was taken and the wait too long or the queue full.
    Busy(Busy),
    /// The request was refused before it was read (size, time, too many at once).
    Refused(Refusal),
}

impl Reason {
    /// The metric label and log field.
    pub fn label(self) -> &'static str {
        match self {
            Reason::None => "none",
            Reason::Query(r) => r.label(),
            Reason::Credentials => "credentials",
            Reason::Principal => "principal",
            Reason::TrustLearning => "trust_learning",
            Reason::TrustOff => "trust_off",
            Reason::VerifyAuth => "verify_auth",
            Reason::Statement => "statement",
            Reason::Write => "write",
            Reason::Malformed => "malformed",
            Reason::SiteUnavailable => "site_unavailable",
            Reason::Panic => "panic",
            Reason::Busy(b) => b.label(),
            Reason::Refused(r) => r.label(),
        }
    }
}

impl From<query::Reason> for Reason {
    fn from(r: query::Reason) -> Reason {
        Reason::Query(r)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every label is distinct: a metric series never mixes two reasons.
    #[test]
    fn labels_are_distinct() {
        let mut all = vec![
            Reason::None,
            Reason::Credentials,
            Reason::Principal,
            Reason::TrustLearning,
            Reason::TrustOff,
            Reason::VerifyAuth,
            Reason::Statement,
            Reason::Write,
            Reason::Malformed,
            Reason::SiteUnavailable,
            Reason::Panic,
            Reason::Busy(Busy::QueueFull),
            Reason::Busy(Busy::WaitExpired),
            Reason::Refused(Refusal::Busy),
            Reason::Refused(Refusal::Timeout),
            Reason::Refused(Refusal::TooLarge { limit: 1 }),
            Reason::Refused(Refusal::Unreadable("x")),
        ];
        all.extend(query::Reason::ALL.iter().map(|r| Reason::Query(*r)));
        let mut labels: Vec<&str> = all.iter().map(|r| r.label()).collect();
        let n = labels.len();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), n, "duplicate labels: {labels:?}");
    }
}
