//! The `ShotgunCache` custom resource (`sgcache.io/v1alpha1`): its spec is the shared
//! [`ShotgunCacheSpec`] (also the worker's config file), its status is defined here.

// `printcolumn(...)` repeats keys such as `type_` by design.
#![allow(clippy::duplicated_attributes)]

use std::ops::Deref;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sgcache::ShotgunCacheSpec;

/// Field manager and finalizer names.
pub const FIELD_MANAGER: &str = "sgcache.io/operator";
pub const FINALIZER: &str = "sgcache.io/cleanup";

/// Which entity types and fields to cache, where the site and database are, and how the workers
/// run. The same document, minus credentials, is the workers' config file.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sgcache.io",
    version = "v1alpha1",
    kind = "ShotgunCache",
    plural = "shotguncaches",
    shortname = "sgc",
    namespaced,
    status = "ShotgunCacheStatus",
    doc = "A cache of a Shotgun site: its database, proxy, event follower and scanner.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        description = "Pending, Migrating, Backfilling, Ready, Degraded or Deleting",
        json_path = ".status.phase"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        description = "why Ready is not True",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Types", type_ = "integer", json_path = ".status.typeCount"),
    printcolumn(
        name = "Fields",
        type_ = "string",
        description = "fields ready / total",
        json_path = ".status.fieldsSummary"
    ),
    printcolumn(
        name = "Cached",
        type_ = "string",
        description = "share of reads answered from the cache over the last minutes, all proxies",
        json_path = ".status.reads.cached"
    ),
    printcolumn(name = "Event lag", type_ = "string", json_path = ".status.events.lag"),
    printcolumn(
        name = "Lag checked",
        type_ = "date",
        description = "when the event lag was measured",
        json_path = ".status.events.checkedAt"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(transparent)]
pub struct ShotgunCacheResourceSpec(pub ShotgunCacheSpec);

impl Deref for ShotgunCacheResourceSpec {
    type Target = ShotgunCacheSpec;
    fn deref(&self) -> &ShotgunCacheSpec {
        &self.0
    }
}

/// Condition types, each `True`, `False` or `Unknown` with a reason.
pub mod condition {
    /// The database is reachable (`False`: Secret missing, bad URL, connection refused).
    pub const DATABASE_READY: &str = "DatabaseReady";
    /// The cache tables match the spec (`False`: the migration failed).
    pub const SCHEMA_READY: &str = "SchemaReady";
    /// Every field in the spec is backfilled (`False` while fields are pending or backfilling).
    pub const BACKFILLED: &str = "Backfilled";
    /// The proxy, events and scanner Deployments have their replicas available.
    pub const WORKERS_AVAILABLE: &str = "WorkersAvailable";
    /// Everything above is true: reads are served from the cache.
    pub const READY: &str = "Ready";
    /// Every type and field the spec names still exists on the site (`False`: the site deleted
    /// some since they were cached; they are dropped and reads of them go to the site). Not
    /// part of `Ready`: the rest of the cache keeps serving.
    pub const SITE_SCHEMA_IN_SYNC: &str = "SiteSchemaInSync";
    /// Every declared link can be named from the cache (`False`: declared links whose target
    /// types the cache cannot name, each with why: opted out with `implyLinkTargets: false`,
    /// a type the site lacks, no text display field). Types implied by links count as cached.
    /// Not part of `Ready`, which says so in its message.
    pub const COVERAGE: &str = "Coverage";
    /// No trust class is off (`False`: a proxy found the cache's answer to an inferred read
    /// shape different from the site's; those reads go to the site until a person resets the
    /// class with `sgcache-worker trust reset`). Not part of `Ready`.
    pub const TRUST_CLASSES_ON: &str = "TrustClassesOn";
    /// All condition types, in the order they are reported.
    pub const ALL: [&str; 8] = [
        DATABASE_READY,
        SCHEMA_READY,
        BACKFILLED,
        WORKERS_AVAILABLE,
        READY,
        COVERAGE,
        SITE_SCHEMA_IN_SYNC,
        TRUST_CLASSES_ON,
    ];
}

/// Observed state of a `ShotgunCache`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShotgunCacheStatus {
    /// A one-word summary: `Pending`, `Migrating`, `Backfilling`, `Ready`, `Degraded`.
    #[serde(default)]
    pub phase: String,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `DatabaseReady`, `SchemaReady`, `Backfilled`, `WorkersAvailable`, `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Number of cached entity types.
    #[serde(default)]
    pub type_count: i64,
    /// Declared fields in state ready, over all types.
    #[serde(default)]
    pub fields_ready: i64,
    /// Fields the spec declares (not the cache's own `id`, `updated_at`, display field).
    #[serde(default)]
    pub fields_total: i64,
    /// `ready/total`, for the printer column.
    #[serde(default)]
    pub fields_summary: String,
    /// Per entity type field states and backfill progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<TypeStatus>,
    /// The event follower's position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventsStatus>,
    /// Hash of the worker config the Deployments run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Available proxy replicas (the `scale` subresource's status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_replicas: Option<i32>,
    /// Label selector of the proxy pods (the `scale` subresource's, for an autoscaler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_selector: Option<String>,
    /// Trust classes (read shapes whose semantics on the site are inferred) that have been
    /// checked: their state, samples, reads served from the cache and differences found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust: Vec<TrustClassStatus>,
    /// Reads over every proxy replica in the last minutes: how many the cache answered, how
    /// many went to the site and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads: Option<ReadsStatus>,
}

/// Reads over every proxy replica (the proxies add their counts to the cache database).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadsStatus {
    /// The window, in minutes up to the reconcile that wrote it.
    pub window_minutes: i64,
    /// Proxy replicas that counted reads in the window.
    pub replicas: i64,
    pub from_cache: i64,
    pub to_site: i64,
    /// Share answered from the cache, e.g. `97%` (`-` without reads), for the printer column.
    pub cached: String,
    /// Why reads went to the site, most first (at most five reasons).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pass_through: Vec<ReasonReads>,
}

/// Reads passed through for one reason.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReasonReads {
    /// The reason, as in the proxy's metrics (`link_name`, `stale`, ...).
    pub reason: String,
    pub reads: i64,
}

/// What one trust class has earned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrustClassStatus {
    /// The class, e.g. `sort:text`.
    pub class: String,
    /// `learning`, `trusted` or `off`.
    pub state: String,
    /// Checks that found the cache's answer identical to the site's.
    pub samples: i64,
    /// Reads answered from the cache, over all proxies.
    pub served: i64,
    /// Checks that found a difference.
    pub differences: i64,
    /// What the last difference touched (type and field names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A condition, as in `metav1.Condition`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason, e.g. `SecretNotFound`.
    pub reason: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// Field states of one entity type.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeStatus {
    /// Entity type, e.g. `Shot`.
    #[serde(rename = "type")]
    pub entity_type: String,
    pub pending: i64,
    pub backfilling: i64,
    pub ready: i64,
    /// Fields dropped from the spec (no longer served).
    #[serde(default)]
    pub dropped: i64,
    /// Fields holding a value the cache cannot store (passed through until the next migrate
    /// backfills them again).
    #[serde(default)]
    pub unservable: i64,
    /// Entities backfilled so far, over fields still backfilling.
    #[serde(default)]
    pub backfill_done: i64,
    /// Entities to backfill, over fields still backfilling.
    #[serde(default)]
    pub backfill_total: i64,
    /// For a type the spec does not list: the cached link fields it is cached for (implied
    /// by links, with its display field only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub implied_by: Vec<String>,
}

/// The event follower's position in EventLogEntry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventsStatus {
    /// Highest EventLogEntry id applied.
    pub last_event_id: i64,
    /// How far the cache is behind the site: the age of the oldest site event not yet applied
    /// (`0s` when caught up, a `+` when more events wait, `unknown` when the site did not
    /// answer).
    pub lag: String,
    /// The same in seconds (-1 when unknown).
    pub lag_seconds: i64,
    /// Event ids missed and still awaited.
    #[serde(default)]
    pub backlog: i64,
    /// When the lag was measured (RFC 3339): the reconcile that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<String>,
}

impl ShotgunCacheStatus {
    /// The condition of a type, if reported.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}
