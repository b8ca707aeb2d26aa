//! `ShotgunCacheSpec`: the spec of the `ShotgunCache` custom resource and, unchanged, the
//! worker's YAML configuration file.
//!
//! Secrets never live in the spec itself: a [`ValueSource`] names an environment variable
//! (local use) or a Kubernetes Secret key (the operator turns it into a `secretKeyRef` env var
//! on the worker pods). The standard variables `SHOTGUN_URL`, `SHOTGUN_SCRIPT_NAME`,
//! `SHOTGUN_API_KEY` and `DATABASE_URL` override whatever the file says.

use std::collections::BTreeSet;
use std::time::Duration;

use schemars::JsonSchema;

pub use crate::event_log_spec::{EventLogSpec, Retain};
use serde::{Deserialize, Serialize};

use crate::ident;

/// Environment variables that override the spec (and are how the operator hands secrets over).
pub mod env {
    pub const SHOTGUN_URL: &str = "SHOTGUN_URL";
    pub const SHOTGUN_SCRIPT_NAME: &str = "SHOTGUN_SCRIPT_NAME";
    pub const SHOTGUN_API_KEY: &str = "SHOTGUN_API_KEY";
    pub const DATABASE_URL: &str = "DATABASE_URL";
}

/// Which entity types and fields to cache, where the Shotgun site and the database are, and
/// how the workers run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShotgunCacheSpec {
    /// The Shotgun / ShotGrid site whose data is cached.
    #[serde(default)]
    pub site: SiteSpec,
    /// The cache database. Without a URL, a SQLite file is used (local use only).
    #[serde(default)]
    pub database: DatabaseSpec,
    /// The entity types to cache, each with the fields to keep.
    #[serde(default)]
    pub entities: Vec<EntitySpec>,
    /// Overrides of the display field (the `name` in entity links) per entity type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub display_fields: Vec<DisplayFieldSpec>,
    /// Whether the target types of cached links that `entities` does not list are cached
    /// too, with what a link needs: the display field (the link's `name`) and whether the
    /// target is retired. Absent or `true`: they are ("implied by links"); `false`: reads
    /// returning such links go to the site (the `Coverage` condition lists them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imply_link_targets: Option<bool>,
    /// Settings of the proxy, event and scanner workers.
    #[serde(default)]
    pub workers: WorkersSpec,
    /// What deleting the resource does to the cache tables.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// How read shapes whose semantics on the site are inferred earn the right to be answered
    /// from the cache.
    #[serde(default)]
    pub trust: TrustSpec,
    /// The site's event log kept by the cache, for event daemons polling through the proxy.
    #[serde(default)]
    pub event_log: EventLogSpec,
}

/// Earned trust: a read shape whose semantics are inferred (a *class*, such as `sort:text`)
/// is answered from the cache only after `samples` of its reads were compared with the site's
/// answers and every one was identical, order included. One difference turns the class off
/// until a person resets it (`sgcache-worker trust reset`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustSpec {
    /// Identical answers a class needs before the cache answers it.
    #[serde(default = "defaults::trust_samples")]
    #[schemars(range(min = 1, max = 100000))]
    pub samples: u32,
    /// Most requests per second (per proxy replica) the checks may add to the site.
    #[serde(default = "defaults::trust_max_site_rate")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub max_site_rate: f64,
    /// Fraction (0–1) of a trusted class's cached reads re-checked against the site.
    #[serde(default = "defaults::trust_recheck_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub recheck_rate: f64,
    /// Classes pinned by a person: `on` (answered without proof) or `off` (always passed
    /// through). Keys are class names, e.g. `sort:text`, `relation:in_last`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub classes: std::collections::BTreeMap<String, TrustPin>,
}

/// A class pinned in the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TrustPin {
    On,
    Off,
}

impl Default for TrustSpec {
    fn default() -> Self {
        TrustSpec {
            samples: defaults::trust_samples(),
            max_site_rate: defaults::trust_max_site_rate(),
            recheck_rate: defaults::trust_recheck_rate(),
            classes: Default::default(),
        }
    }
}

impl TrustSpec {
    /// The pin of a class, if any.
    pub fn pin(&self, class: crate::trust::TrustClass) -> Option<TrustPin> {
        self.classes.get(class.name()).copied()
    }

    fn validate(&self) -> Result<(), SpecError> {
        for name in self.classes.keys() {
            name.parse::<crate::trust::TrustClass>()
                .map_err(|m| SpecError::Invalid(format!("trust.classes: {m}")))?;
        }
        if !(0.0..=1.0).contains(&self.recheck_rate) {
            return Err(SpecError::Invalid(
                "trust.recheckRate must be between 0 and 1".into(),
            ));
        }
        if !(self.max_site_rate >= 0.0 && self.max_site_rate.is_finite()) {
            return Err(SpecError::Invalid(
                "trust.maxSiteRate must be a number of requests per second, 0 or more".into(),
            ));
        }
        if self.samples == 0 {
            return Err(SpecError::Invalid(
                "trust.samples must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The Shotgun site and the script credentials the workers use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteSpec {
    /// Base URL of the site, e.g. `https://studio.shotgrid.autodesk.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Script name (ApiUser) the workers authenticate as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_name: Option<ValueSource>,
    /// The script's API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ValueSource>,
    /// Timeout of one request to the site.
    #[serde(default = "defaults::site_timeout")]
    pub timeout: DurationString,
}

impl Default for SiteSpec {
    fn default() -> Self {
        SiteSpec {
            url: None,
            script_name: None,
            api_key: None,
            timeout: defaults::site_timeout(),
        }
    }
}

/// Where the cache keeps its data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseSpec {
    /// Database URL (`postgres://…` or `sqlite://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<ValueSource>,
    /// SQLite file used when no URL is given.
    #[serde(default = "defaults::sqlite_path")]
    pub sqlite_path: String,
    /// Connections per worker process.
    #[serde(default = "defaults::max_connections")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_connections: u32,
    /// PostgreSQL schema holding this cache's tables (created by `migrate`); every connection
    /// works in it, so caches sharing a database never see each other. Unset: the database's
    /// default (`public`). The Kubernetes operator sets one per ShotgunCache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    pub schema: Option<String>,
}

impl Default for DatabaseSpec {
    fn default() -> Self {
        DatabaseSpec {
            url: None,
            sqlite_path: defaults::sqlite_path(),
            max_connections: defaults::max_connections(),
            schema: None,
        }
    }
}

/// The URL of a PostgreSQL database with every connection working in `schema` (its
/// `search_path`, as a connection option sqlx and libpq both read). SQLite URLs, and no
/// schema, are returned unchanged.
pub fn with_schema(url: &str, schema: Option<&str>) -> String {
    let Some(schema) = schema else {
        return url.to_string();
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options[search_path]={schema}")
}

/// A value given inline, by environment variable, or by Kubernetes Secret key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueSource {
    /// The value itself. Avoid for secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Name of an environment variable holding the value (local use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// A key of a Secret in the resource's namespace (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// A key of a Kubernetes Secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

/// One cached entity type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntitySpec {
    /// Entity type as the API names it, e.g. `Shot`, `CustomEntity01`.
    #[serde(rename = "type")]
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_]{0,62}$"))]
    pub entity_type: String,
    /// Fields to cache, or `["*"]` for every field the site has.
    #[schemars(
        inner(regex(pattern = r"^(\*|[a-z][a-z0-9_]{0,62})$")),
        length(min = 1)
    )]
    pub fields: Vec<String>,
    /// Fields left out when `fields` is `["*"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[a-z][a-z0-9_]{0,62}$")))]
    pub exclude: Vec<String>,
}

impl EntitySpec {
    /// True when the spec asks for every field of the type.
    pub fn all_fields(&self) -> bool {
        self.fields.iter().any(|f| f == "*")
    }
}

/// Which field of an entity type gives the `name` of links to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisplayFieldSpec {
    /// Entity type.
    #[serde(rename = "type")]
    pub entity_type: String,
    /// Its display field.
    pub field: String,
}

/// Worker settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkersSpec {
    /// The API3 proxy.
    #[serde(default)]
    pub proxy: ProxySpec,
    /// The EventLogEntry follower.
    #[serde(default)]
    pub events: EventsSpec,
    /// The `updated_at` scanner and backfill.
    #[serde(default)]
    pub scanner: ScannerSpec,
}

/// Proxy settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxySpec {
    /// Port the proxy listens on.
    #[serde(default = "defaults::proxy_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Address the proxy listens on. Absent: `127.0.0.1` (this machine only); the operator
    /// gives its pods `0.0.0.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<std::net::IpAddr>,
    /// Proxy replicas (Kubernetes).
    #[serde(default = "defaults::proxy_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: u32,
    /// How long a credential the site accepted is trusted without asking again.
    #[serde(default = "defaults::auth_ttl")]
    pub auth_ttl: DurationString,
    /// While the site is unreachable, how long after its last verification a credential may
    /// still read from the cache.
    #[serde(default = "defaults::auth_grace")]
    pub auth_grace: DurationString,
    /// Fraction (0–1) of cached reads re-run against the site and compared.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub verify_sample_rate: f64,
    /// Who may be answered from the cache. Absent: every principal the site accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_for: Option<CacheForSpec>,
    /// Memory (MiB) for answers kept by the proxy, so a repeated read costs no query; 0 turns
    /// it off. Every change to the cache's tables drops them (PostgreSQL notifications; not
    /// kept on SQLite).
    #[serde(default = "defaults::result_cache_mb")]
    #[schemars(range(max = 65536))]
    pub result_cache_mb: u32,
    /// Longest life of a kept answer, whatever the notifications say.
    #[serde(default = "defaults::result_cache_ttl")]
    pub result_cache_ttl: DurationString,
    /// How far behind the site a type may be (since the event follower last caught up, or
    /// the type's last complete scan started) and still be answered from the cache; past it
    /// reads of the type pass through (reason `stale`). `0` turns the check off.
    #[serde(default = "defaults::max_lag")]
    pub max_lag: DurationString,
    /// Limits that keep one client from exhausting the proxy for the others.
    #[serde(default)]
    pub limits: ProxyLimitsSpec,
    /// How this replica's requests reach the site: how many at once, and the fair queue
    /// beyond that.
    #[serde(default)]
    pub site: ProxySiteSpec,
    /// One INFO line per request (path taken, reason, time). Off by default: under a storm it
    /// is a line per request; errors (sampled) and slow requests reach WARN either way.
    #[serde(default)]
    pub access_log: bool,
}

/// The proxy's share of the site: identical reads in flight are sent once, and at most
/// `maxConcurrent` requests are at the site at once; the rest wait in a queue served fairly
/// across principals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxySiteSpec {
    /// Requests this replica sends to the site at once (uploads and downloads not counted:
    /// they stream).
    #[serde(default = "defaults::site_max_concurrent")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_concurrent: u32,
    /// Requests waiting for a turn at the site; past it a request gets a 503 API3 error
    /// ("busy", with `Retry-After`).
    #[serde(default = "defaults::site_max_queued")]
    #[schemars(range(min = 0, max = 1000000))]
    pub max_queued: u32,
    /// Longest wait in that queue before the request gets "busy".
    #[serde(default = "defaults::site_max_wait")]
    pub max_wait: DurationString,
}

impl Default for ProxySiteSpec {
    fn default() -> Self {
        ProxySiteSpec {
            max_concurrent: defaults::site_max_concurrent(),
            max_queued: defaults::site_max_queued(),
            max_wait: defaults::site_max_wait(),
        }
    }
}

/// Limits of the proxy's listener and of the requests it buffers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyLimitsSpec {
    /// Largest API3 request body (MiB, after gzip decoding); a larger one gets an API3 error
    /// before it is read whole. Other requests (uploads, downloads) are streamed, not limited.
    #[serde(default = "defaults::max_body_mb")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_body_mb: u32,
    /// MiB of API3 request bodies buffered at once, over all requests; past it new requests
    /// get a 503 API3 error ("busy") instead of memory.
    #[serde(default = "defaults::buffered_bodies_mb")]
    #[schemars(range(min = 1, max = 65536))]
    pub buffered_bodies_mb: u32,
    /// Requests handled at once; past it a request gets a 503 API3 error ("busy").
    #[serde(default = "defaults::max_in_flight")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_in_flight: u32,
    /// Open client connections; past it new connections wait in the listen backlog.
    #[serde(default = "defaults::max_connections_proxy")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_connections: u32,
    /// Longest wait for a request's headers, counted from the request's first byte.
    #[serde(default = "defaults::header_read_timeout")]
    pub header_read_timeout: DurationString,
    /// How long a keep-alive connection may sit idle between requests before the proxy
    /// closes it. The official `shotgun_api3` client never closes an idle connection itself
    /// and does not retry a request that meets one the server closed (`BrokenPipeError`), so
    /// keep this longer than the pauses of the pipelines using the proxy.
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: DurationString,
    /// Longest pause while reading a request body, and longest read of a whole API3 body.
    #[serde(default = "defaults::body_read_timeout")]
    pub body_read_timeout: DurationString,
}

impl Default for ProxyLimitsSpec {
    fn default() -> Self {
        ProxyLimitsSpec {
            max_body_mb: defaults::max_body_mb(),
            buffered_bodies_mb: defaults::buffered_bodies_mb(),
            max_in_flight: defaults::max_in_flight(),
            max_connections: defaults::max_connections_proxy(),
            header_read_timeout: defaults::header_read_timeout(),
            idle_timeout: defaults::idle_timeout(),
            body_read_timeout: defaults::body_read_timeout(),
        }
    }
}

/// The principals whose reads may come from the cache. The cache holds what the cache's own
/// script can read; the site may show other principals less (permission groups, per-project
/// visibility), and the proxy cannot see those rules. List here the scripts and users with
/// full read access to the cached types; every other principal's reads pass through to the
/// site (metric reason `principal`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheForSpec {
    /// Script names (`script_name`) answered from the cache, unless they act as a user
    /// (`sudo_as_login`) who is not in `logins`.
    #[serde(default)]
    pub scripts: Vec<String>,
    /// HumanUser logins answered from the cache: `user_login`, or the `sudo_as_login` a listed
    /// script acts as. Session-token requests name no login and always pass through.
    #[serde(default)]
    pub logins: Vec<String>,
}

impl CacheForSpec {
    /// Whether a request with this auth object may be answered from the cache.
    pub fn allows(&self, auth: &serde_json::Map<String, serde_json::Value>) -> bool {
        let text = |k: &str| auth.get(k).and_then(serde_json::Value::as_str);
        let listed = |list: &[String], v: &str| list.iter().any(|x| x == v);
        // Permissions are those of the user acted as, whoever authenticates.
        if let Some(login) = text("sudo_as_login") {
            if !listed(&self.logins, login) {
                return false;
            }
        }
        match (text("script_name"), text("user_login")) {
            (Some(script), None) => listed(&self.scripts, script),
            (None, Some(login)) => listed(&self.logins, login),
            _ => false,
        }
    }
}

impl Default for ProxySpec {
    fn default() -> Self {
        ProxySpec {
            port: defaults::proxy_port(),
            bind: None,
            replicas: defaults::proxy_replicas(),
            auth_ttl: defaults::auth_ttl(),
            auth_grace: defaults::auth_grace(),
            verify_sample_rate: 0.0,
            cache_for: None,
            result_cache_mb: defaults::result_cache_mb(),
            result_cache_ttl: defaults::result_cache_ttl(),
            limits: ProxyLimitsSpec::default(),
            max_lag: defaults::max_lag(),
            site: ProxySiteSpec::default(),
            access_log: false,
        }
    }
}

/// Event follower settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventsSpec {
    /// Pause between polls of EventLogEntry when the last poll was not a full page.
    #[serde(default = "defaults::poll_interval")]
    pub poll_interval: DurationString,
    /// How long a missing event id is waited for before it is given up on.
    #[serde(default = "defaults::gap_window")]
    pub gap_window: DurationString,
    /// Port of the follower's `/metrics`, `/healthz` and `/readyz` (on `workers.proxy.bind`);
    /// 0: none. `all` serves them on the proxy's port instead.
    #[serde(default = "defaults::events_metrics_port")]
    #[schemars(range(min = 0, max = 65535))]
    pub metrics_port: u16,
}

impl Default for EventsSpec {
    fn default() -> Self {
        EventsSpec {
            poll_interval: defaults::poll_interval(),
            gap_window: defaults::gap_window(),
            metrics_port: defaults::events_metrics_port(),
        }
    }
}

/// Scanner settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScannerSpec {
    /// Pause between incremental `updated_at` scans.
    #[serde(default = "defaults::scan_interval")]
    pub interval: DurationString,
    /// How far before the last scan each incremental scan starts, to cover clock skew and
    /// late commits.
    #[serde(default = "defaults::scan_overlap")]
    pub overlap: DurationString,
    /// Entities per page in scans and backfills.
    #[serde(default = "defaults::page_size")]
    #[schemars(range(min = 1, max = 5000))]
    pub page_size: u32,
    /// How often the site's schema is read again, so that fields the site adds (to `"*"`
    /// types), retypes or deletes are followed without a restart. The event follower also
    /// checks at once when the site logs a field created or changed (DisplayColumn events).
    #[serde(default = "defaults::schema_interval")]
    pub schema_interval: DurationString,
    /// Port of the scanner's `/metrics`, `/healthz` and `/readyz` (on `workers.proxy.bind`);
    /// 0: none. `all` serves them on the proxy's port instead.
    #[serde(default = "defaults::scanner_metrics_port")]
    #[schemars(range(min = 0, max = 65535))]
    pub metrics_port: u16,
}

impl Default for ScannerSpec {
    fn default() -> Self {
        ScannerSpec {
            interval: defaults::scan_interval(),
            overlap: defaults::scan_overlap(),
            page_size: defaults::page_size(),
            schema_interval: defaults::schema_interval(),
            metrics_port: defaults::scanner_metrics_port(),
        }
    }
}

/// What happens to the cache tables when the resource is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the tables (the default).
    #[default]
    Retain,
    /// Drop the tables.
    Delete,
}

/// A duration written as a number and a unit: `500ms`, `1s`, `5m`, `1h`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DurationString(String);

impl JsonSchema for DurationString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DurationString".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"})
    }
}

impl DurationString {
    pub fn duration(&self) -> Duration {
        parse_duration(&self.0).expect("validated when deserialized")
    }
}

impl TryFrom<String> for DurationString {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        parse_duration(&s).map(|_| DurationString(s.clone()))
    }
}

impl From<DurationString> for String {
    fn from(d: DurationString) -> String {
        d.0
    }
}

impl From<&str> for DurationString {
    fn from(s: &str) -> Self {
        DurationString::try_from(s.to_string()).expect("literal durations are valid")
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    let bad = || format!("invalid duration {s:?}: expected a number and ms, s, m or h (e.g. 5s)");
    let n: u64 = num.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(bad()),
    }
}

mod defaults {
    use super::DurationString;
    pub fn site_timeout() -> DurationString {
        "30s".into()
    }
    pub fn sqlite_path() -> String {
        "sgcache.db".into()
    }
    pub fn max_connections() -> u32 {
        10
    }
    pub fn proxy_port() -> u16 {
        8010
    }
    pub fn proxy_replicas() -> u32 {
        2
    }
    pub fn auth_ttl() -> DurationString {
        "60s".into()
    }
    pub fn auth_grace() -> DurationString {
        "1h".into()
    }
    pub fn trust_samples() -> u32 {
        20
    }
    pub fn trust_max_site_rate() -> f64 {
        1.0
    }
    pub fn trust_recheck_rate() -> f64 {
        0.02
    }

    pub fn result_cache_mb() -> u32 {
        64
    }

    pub fn result_cache_ttl() -> DurationString {
        "60s".into()
    }

    pub fn max_body_mb() -> u32 {
        8
    }
    pub fn buffered_bodies_mb() -> u32 {
        64
    }
    /// Requests waiting on one identical read in flight cost little, so a render farm's
    /// storm of thousands of connections is taken in rather than refused.
    pub fn max_in_flight() -> u32 {
        10000
    }
    pub fn max_connections_proxy() -> u32 {
        10000
    }
    pub fn site_max_concurrent() -> u32 {
        32
    }
    pub fn site_max_queued() -> u32 {
        2000
    }
    pub fn site_max_wait() -> DurationString {
        "30s".into()
    }
    pub fn header_read_timeout() -> DurationString {
        "30s".into()
    }
    pub fn idle_timeout() -> DurationString {
        "5m".into()
    }
    pub fn body_read_timeout() -> DurationString {
        "30s".into()
    }
    pub fn max_lag() -> DurationString {
        "5m".into()
    }
    pub fn events_metrics_port() -> u16 {
        9101
    }
    pub fn scanner_metrics_port() -> u16 {
        9102
    }
    pub fn poll_interval() -> DurationString {
        "1s".into()
    }
    pub fn gap_window() -> DurationString {
        "5m".into()
    }
    pub fn scan_interval() -> DurationString {
        "60s".into()
    }
    pub fn scan_overlap() -> DurationString {
        "30s".into()
    }
    pub fn schema_interval() -> DurationString {
        "5m".into()
    }
    pub fn page_size() -> u32 {
        500
    }
}

/// An error in a spec: one line naming the offending item.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl ShotgunCacheSpec {
    /// Parses a YAML (or JSON) spec. `origin` names the source in errors, which are one line:
    /// every unknown key at once (with "did you mean" for near misses), else the first bad
    /// value with its line and column.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, SpecError> {
        let parse_error = |e: serde_saphyr::Error| SpecError::Parse {
            path: origin.to_string(),
            message: parse_message(&e),
        };
        let options = serde_saphyr::options! { with_snippet: false };
        let doc: serde_json::Value =
            serde_saphyr::from_str_with_options(text, options.clone()).map_err(parse_error)?;
        let unknown = crate::unknown_names::unknown_keys(
            schemars::schema_for!(ShotgunCacheSpec).as_value(),
            &doc,
        );
        if !unknown.is_empty() {
            return Err(SpecError::Parse {
                path: origin.to_string(),
                message: unknown.join("; "),
            });
        }
        let spec: ShotgunCacheSpec =
            serde_saphyr::from_str_with_options(text, options).map_err(|e| {
                // The parser says where (line, column); the same document read again says
                // which key, and the value in words (`invalid type: string "lots"`).
                let message = match serde_path_to_error::deserialize::<_, Self>(doc) {
                    Err(by_key) => {
                        let at = e.location().map_or(String::new(), |l| {
                            format!(" at line {}, column {}", l.line(), l.column())
                        });
                        let key = by_key.path().to_string();
                        let key = if key == "." {
                            String::new()
                        } else {
                            format!("{key}: ")
                        };
                        format!("{key}{}{at}", by_key.inner())
                    }
                    Ok(_) => parse_message(&e),
                };
                SpecError::Parse {
                    path: origin.to_string(),
                    message,
                }
            })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads and parses a spec file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Checks what the schema cannot: names are identifiers, nothing is declared twice.
    /// Whether the types and fields exist on the site is the planner's job.
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut seen = BTreeSet::new();
        for e in &self.entities {
            ident::validate_entity_type(&e.entity_type).map_err(SpecError::Invalid)?;
            if !seen.insert(e.entity_type.as_str()) {
                return Err(SpecError::Invalid(format!(
                    "entity type {} is declared twice",
                    e.entity_type
                )));
            }
            if e.fields.is_empty() {
                return Err(SpecError::Invalid(format!(
                    "entity type {} lists no fields (use [\"*\"] for all)",
                    e.entity_type
                )));
            }
            for f in e.fields.iter().filter(|f| *f != "*").chain(&e.exclude) {
                ident::validate_field_name(f)
                    .map_err(|m| SpecError::Invalid(format!("{}: {m}", e.entity_type)))?;
            }
        }
        for d in &self.display_fields {
            ident::validate_entity_type(&d.entity_type).map_err(SpecError::Invalid)?;
            ident::validate_field_name(&d.field).map_err(SpecError::Invalid)?;
        }
        if !(0.0..=1.0).contains(&self.workers.proxy.verify_sample_rate) {
            return Err(SpecError::Invalid(
                "workers.proxy.verifySampleRate must be between 0 and 1".into(),
            ));
        }
        self.trust.validate()
    }

    /// Whether link targets the spec does not list are cached (`implyLinkTargets`, default on).
    pub fn implies_link_targets(&self) -> bool {
        self.imply_link_targets != Some(false)
    }

    /// The entity spec for a type, if declared.
    pub fn entity(&self, entity_type: &str) -> Option<&EntitySpec> {
        self.entities.iter().find(|e| e.entity_type == entity_type)
    }
}

/// A parser error on one line, without the parser's own `error:` prefix.
fn parse_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_string()
}

/// Resolved connection settings after environment overrides.
#[derive(Clone, PartialEq)]
pub struct SiteConnection {
    pub url: String,
    pub script_name: String,
    pub api_key: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for SiteConnection {
    // The API key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteConnection")
            .field("url", &self.url)
            .field("script_name", &self.script_name)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

impl ValueSource {
    /// The value from the named env var, else the inline value.
    fn resolve(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        self.env
            .as_deref()
            .and_then(lookup)
            .or_else(|| self.value.clone())
    }
}

impl ShotgunCacheSpec {
    /// Resolves the site connection: the standard `SHOTGUN_*` variables win, then the spec.
    pub fn site_connection(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SiteConnection, SpecError> {
        let missing = |what: &str, var: &str| {
            SpecError::Invalid(format!("site {what} is not set (set {var} or site.{what})"))
        };
        let url = lookup(env::SHOTGUN_URL)
            .or_else(|| self.site.url.clone())
            .ok_or_else(|| missing("url", env::SHOTGUN_URL))?;
        let script_name = lookup(env::SHOTGUN_SCRIPT_NAME)
            .or_else(|| self.site.script_name.as_ref()?.resolve(lookup))
            .ok_or_else(|| missing("scriptName", env::SHOTGUN_SCRIPT_NAME))?;
        let api_key = lookup(env::SHOTGUN_API_KEY)
            .or_else(|| self.site.api_key.as_ref()?.resolve(lookup))
            .ok_or_else(|| missing("apiKey", env::SHOTGUN_API_KEY))?;
        Ok(SiteConnection {
            url: url.trim_end_matches('/').to_string(),
            script_name,
            api_key,
            timeout: self.site.timeout.duration(),
        })
    }

    /// Resolves the database URL: `DATABASE_URL` wins, then the spec, then the SQLite file;
    /// on PostgreSQL, connections work in `database.schema` when set.
    pub fn database_url(&self, lookup: &dyn Fn(&str) -> Option<String>) -> String {
        let url = lookup(env::DATABASE_URL)
            .or_else(|| self.database.url.as_ref()?.resolve(lookup))
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", self.database.sqlite_path));
        with_schema(&url, self.database.schema.as_deref())
    }
}

/// Looks variables up in the process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_spec_with_defaults() {
        let spec = ShotgunCacheSpec::from_yaml(
            "entities:\n  - type: Shot\n    fields: [code, sg_status_list]\n",
            "t",
        )
        .unwrap();
        assert_eq!(spec.entities[0].fields, vec!["code", "sg_status_list"]);
        assert_eq!(spec.workers.proxy.port, 8010);
        assert_eq!(
            spec.workers.events.poll_interval.duration(),
            Duration::from_secs(1)
        );
        assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
    }

    #[test]
    fn cache_for_names_scripts_logins_and_sudo_targets() {
        let spec = ShotgunCacheSpec::from_yaml(
            "workers:\n  proxy:\n    cacheFor:\n      scripts: [pipeline]\n      logins: [ana]\n",
            "t",
        )
        .unwrap();
        let allow = spec.workers.proxy.cache_for.expect("cacheFor");
        let auth = |v: serde_json::Value| v.as_object().unwrap().clone();
        let allows = |v| allow.allows(&auth(v));
        assert!(allows(
            serde_json::json!({"script_name": "pipeline", "script_key": "k"})
        ));
        assert!(!allows(
            serde_json::json!({"script_name": "other", "script_key": "k"})
        ));
        assert!(allows(
            serde_json::json!({"user_login": "ana", "user_password": "p"})
        ));
        assert!(!allows(
            serde_json::json!({"user_login": "bo", "user_password": "p"})
        ));
        // Acting as a user: that user's permissions apply.
        assert!(allows(
            serde_json::json!({"script_name": "pipeline", "script_key": "k", "sudo_as_login": "ana"})
        ));
        assert!(!allows(
            serde_json::json!({"script_name": "pipeline", "script_key": "k", "sudo_as_login": "bo"})
        ));
        assert!(!allows(
            serde_json::json!({"script_name": "other", "script_key": "k", "sudo_as_login": "ana"})
        ));
        // No login to check, or two families at once: pass through.
        assert!(!allows(serde_json::json!({"session_token": "t"})));
        assert!(!allows(
            serde_json::json!({"script_name": "pipeline", "user_login": "ana"})
        ));
        assert_eq!(
            ShotgunCacheSpec::from_yaml("{}", "t")
                .unwrap()
                .workers
                .proxy
                .cache_for,
            None
        );
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values_in_one_line() {
        let err = ShotgunCacheSpec::from_yaml("entitys: []\n", "cache.yaml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("entitys"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let err = ShotgunCacheSpec::from_yaml("workers:\n  proxy:\n    port: lots\n", "cache.yaml")
            .unwrap_err();
        assert!(err.to_string().contains("cache.yaml"), "{err}");
        let err = ShotgunCacheSpec::from_yaml(
            "workers:\n  events:\n    pollInterval: soon\n",
            "cache.yaml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn every_unknown_key_is_reported_at_once_with_suggestions_and_the_file_name() {
        let yaml = "entities:\n  - type: Shot\n    feilds: [code]\nworkers:\n  proxy:\n    \
                    prot: 8011\n  scaner: {}\n  colour: red\n";
        let msg = ShotgunCacheSpec::from_yaml(yaml, "typo.yaml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "invalid config typo.yaml: unknown key entities[0].feilds (did you mean fields?); \
             unknown key workers.proxy.prot (did you mean port?); \
             unknown key workers.scaner (did you mean scanner?); unknown key workers.colour"
        );
    }

    #[test]
    fn a_bad_value_is_one_clean_line_with_the_file_and_position() {
        let msg = ShotgunCacheSpec::from_yaml("workers:\n  proxy:\n    port: lots\n", "cache.yaml")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("invalid config cache.yaml: "), "{msg}");
        assert!(!msg.contains('\n') && !msg.contains("error:"), "{msg}");
        assert!(
            !msg.contains("-->") && !msg.contains(" | "),
            "no snippet: {msg}"
        );
        assert!(msg.contains("line 3"), "{msg}");
        let msg = ShotgunCacheSpec::from_yaml("entities:\n  - {type: Shot, fields: code}\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("invalid config t: entities[0].fields: "),
            "{msg}"
        );
    }

    #[test]
    fn rejects_duplicate_and_invalid_names() {
        let dup = "entities:\n  - {type: Shot, fields: [code]}\n  - {type: Shot, fields: [id]}\n";
        assert!(ShotgunCacheSpec::from_yaml(dup, "t")
            .unwrap_err()
            .to_string()
            .contains("Shot is declared twice"));
        let bad = "entities:\n  - {type: Shot, fields: [\"code; drop\"]}\n";
        assert!(ShotgunCacheSpec::from_yaml(bad, "t")
            .unwrap_err()
            .to_string()
            .contains("code; drop"));
    }

    #[test]
    fn env_overrides_spec_and_key_is_redacted() {
        let spec = ShotgunCacheSpec::from_yaml(
            "site:\n  url: https://a.example\n  scriptName: {value: cache}\n  apiKey: {env: MY_KEY}\n",
            "t",
        )
        .unwrap();
        let vars = |k: &str| match k {
            "MY_KEY" => Some("secret".to_string()),
            "SHOTGUN_URL" => Some("http://127.0.0.1:9/".to_string()),
            _ => None,
        };
        let conn = spec.site_connection(&vars).unwrap();
        assert_eq!(conn.url, "http://127.0.0.1:9");
        assert_eq!(conn.script_name, "cache");
        assert_eq!(conn.api_key, "secret");
        assert!(!format!("{conn:?}").contains("secret"));
        assert_eq!(spec.database_url(&vars), "sqlite://sgcache.db?mode=rwc");
        assert_eq!(
            with_schema("postgres://u@h/db", Some("sgc_a")),
            "postgres://u@h/db?options[search_path]=sgc_a"
        );
        assert_eq!(
            with_schema("postgres://u@h/db?sslmode=disable", Some("s")),
            "postgres://u@h/db?sslmode=disable&options[search_path]=s"
        );
        assert_eq!(with_schema("sqlite://x.db", Some("s")), "sqlite://x.db");
        assert_eq!(with_schema("postgres://u@h/db", None), "postgres://u@h/db");
    }
}
