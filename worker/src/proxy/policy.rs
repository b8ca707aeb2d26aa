//! What the proxy may answer from the cache and how its answers are checked: the principals
//! it answers for, earned trust of inferred read shapes, sampled verification, and the
//! refreshes passed-through answers trigger (done with the cache's own credentials).
//! Whether the cache *can* answer is [`super::cache_db`].

use serde_json::{Map, Value};
use sgcache::spec::CacheForSpec;

use super::stale_rows::StaleRows;
use super::trust::Trust;
use super::ProxyConfig;

pub struct ReadPolicy {
    /// Principals that may be answered from the cache; `None`: all the site accepts.
    pub cache_for: Option<CacheForSpec>,
    /// Fraction (0–1) of cached reads re-run against the site in the background and compared.
    pub verify_sample_rate: f64,
    /// Which inferred read shapes have earned answers from the cache.
    pub trust: Trust,
    /// Limits of refreshes from passed-through answers.
    pub stale_rows: StaleRows,
    /// The cache's own credentials (`script_name`/`script_key`), for re-reads the proxy makes
    /// on its own behalf; without them the writer's credentials are used.
    pub service_auth: Option<Map<String, Value>>,
}

impl ReadPolicy {
    pub fn new(config: &ProxyConfig) -> ReadPolicy {
        ReadPolicy {
            cache_for: config.cache_for.clone(),
            verify_sample_rate: config.verify_sample_rate,
            trust: Trust::new(config.trust.clone()),
            stale_rows: Default::default(),
            service_auth: config.service_auth.clone(),
        }
    }
}
