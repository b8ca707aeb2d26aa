//! Pure builders: from a `ShotgunCache` to the objects its workers need. No I/O; every
//! function here is unit-tested without a cluster.

mod config;
mod network;
mod schema;
mod workloads;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::ShotgunCache;

pub use config::{
    config_hash, config_map, validate_for_kubernetes, worker_config, worker_env, CONFIG_FILE,
};
pub use network::{pod_disruption_budget, service};
pub use schema::{default_schema, with_defaults};
pub use workloads::{deployment, with_secrets_hash, Component};

/// Annotation on the pod template holding the hash of the worker config.
pub const CONFIG_HASH_ANNOTATION: &str = "sgcache.io/config-hash";
/// Annotation on the pod template holding the hash of the resolved Secret values.
pub const SECRETS_HASH_ANNOTATION: &str = "sgcache.io/secrets-hash";

/// Operator-wide settings for the worker pods (from the operator's flags / Helm values).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerSettings {
    /// The `sgcache-worker` image.
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
    /// Requests and limits of each worker container.
    pub resources: ResourceRequirements,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            image: "ghcr.io/sgcache/sgcache-worker:latest".into(),
            image_pull_policy: "IfNotPresent".into(),
            resources: ResourceRequirements::default(),
        }
    }
}

/// Name of a child object: `<cache>-<suffix>`.
pub fn child_name(cache: &ShotgunCache, suffix: &str) -> String {
    format!("{}-{suffix}", cache.name_any())
}

/// Labels shared by every child of a cache; `component` adds `app.kubernetes.io/component`.
pub fn labels(cache: &ShotgunCache, component: Option<&str>) -> BTreeMap<String, String> {
    let mut l = selector_labels(cache, component);
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        "sgcache-operator".into(),
    );
    l
}

/// The labels a Deployment or Service selects on.
/// The proxy pods' label selector as a string (`k=v,k=v`), for the scale subresource.
pub fn proxy_selector(cache: &ShotgunCache) -> String {
    selector_labels(cache, Some("proxy"))
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn selector_labels(cache: &ShotgunCache, component: Option<&str>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("app.kubernetes.io/name".into(), "sgcache".into());
    l.insert("app.kubernetes.io/instance".into(), cache.name_any());
    if let Some(c) = component {
        l.insert("app.kubernetes.io/component".into(), c.into());
    }
    l
}

/// Metadata of a child: name, namespace, labels and the controller owner reference, so the
/// child is garbage-collected with the cache.
pub fn child_meta(cache: &ShotgunCache, name: String, component: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cache.namespace(),
        labels: Some(labels(cache, component)),
        owner_references: cache.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}
