//! The worker config (the spec, minus anything secret), its hash, and the env vars that carry
//! the Secret values to the workers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, EnvVarSource, SecretKeySelector};
use sgcache::spec::{env, ValueSource};
use sgcache::ShotgunCacheSpec;
use sha2::{Digest, Sha256};

use super::{child_meta, child_name, WorkerSettings};
use crate::ShotgunCache;

/// File name of the worker config inside the ConfigMap and the pod.
pub const CONFIG_FILE: &str = "sgcache.yaml";

/// The spec as the workers read it: credentials and the database URL are removed (they arrive
/// as env vars), so the ConfigMap never holds a secret.
pub fn worker_config(spec: &ShotgunCacheSpec) -> ShotgunCacheSpec {
    let mut c = spec.clone();
    c.site.script_name = None;
    c.site.api_key = None;
    c.database.url = None;
    // Pods are reached through their Service: the proxy listens on every interface there.
    c.workers
        .proxy
        .bind
        .get_or_insert(std::net::Ipv4Addr::UNSPECIFIED.into());
    c
}

/// The worker config as YAML.
pub fn worker_config_yaml(spec: &ShotgunCacheSpec) -> String {
    serde_saphyr::to_string(&worker_config(spec)).expect("the spec always serializes")
}

/// The ConfigMap `<cache>-config` holding the worker config.
pub fn config_map(cache: &ShotgunCache) -> ConfigMap {
    let data = BTreeMap::from([(CONFIG_FILE.to_string(), worker_config_yaml(&cache.spec))]);
    ConfigMap {
        metadata: child_meta(cache, child_name(cache, "config"), None),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// Hash of everything the worker pods run with: the config (proxy replicas left out, so
/// scaling does not restart pods; `deletionPolicy` is not in it), the env they get and the
/// image. A change rolls the pods.
pub fn config_hash(cache: &ShotgunCache, settings: &WorkerSettings) -> String {
    let mut spec = worker_config(&cache.spec);
    spec.workers.proxy.replicas = 0;
    // Only the operator acts on it (at deletion): the documented way to drop a cache must
    // not restart it first.
    spec.deletion_policy = Default::default();
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&spec).expect("the spec always serializes"));
    h.update(serde_json::to_vec(&worker_env(&cache.spec)).expect("env serializes"));
    h.update(settings.image.as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// The env vars giving the workers their credentials and database URL: `secretKeyRef`s for
/// Secret-backed values, plain values only for what may be inline (the script name).
pub fn worker_env(spec: &ShotgunCacheSpec) -> Vec<EnvVar> {
    let sources = [
        (env::SHOTGUN_SCRIPT_NAME, spec.site.script_name.as_ref()),
        (env::SHOTGUN_API_KEY, spec.site.api_key.as_ref()),
        (env::DATABASE_URL, spec.database.url.as_ref()),
    ];
    sources
        .into_iter()
        .filter_map(|(name, src)| Some(env_var(name, src?)))
        .collect()
}

fn env_var(name: &str, src: &ValueSource) -> EnvVar {
    let value_from = src.secret_key_ref.as_ref().map(|r| EnvVarSource {
        secret_key_ref: Some(SecretKeySelector {
            name: r.name.clone(),
            key: r.key.clone(),
            optional: Some(false),
        }),
        ..EnvVarSource::default()
    });
    EnvVar {
        name: name.into(),
        value: if value_from.is_some() {
            None
        } else {
            src.value.clone()
        },
        value_from,
    }
}

/// What the schema cannot express, plus what only holds on Kubernetes: the shared rules of
/// `ShotgunCacheSpec::validate`, a site URL, a PostgreSQL database from a Secret, and an API
/// key from a Secret (never inline, never a local env var). Returns every problem found.
pub fn validate_for_kubernetes(spec: &ShotgunCacheSpec) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = spec.validate() {
        problems.push(e.to_string());
    }
    if spec.site.url.as_deref().is_none_or(str::is_empty) {
        problems.push("site.url is required".into());
    }
    for (path, src, inline_ok) in [
        ("site.scriptName", spec.site.script_name.as_ref(), true),
        ("site.apiKey", spec.site.api_key.as_ref(), false),
        ("database.url", spec.database.url.as_ref(), false),
    ] {
        if let Some(p) = check_source(path, src, inline_ok) {
            problems.push(p);
        }
    }
    if spec.entities.is_empty() {
        problems.push("entities lists no entity type to cache".into());
    }
    problems
}

fn check_source(path: &str, src: Option<&ValueSource>, inline_ok: bool) -> Option<String> {
    let Some(src) = src else {
        return Some(format!("{path} is required (a secretKeyRef)"));
    };
    if src.env.is_some() {
        return Some(format!(
            "{path}.env is for local use; use secretKeyRef on Kubernetes"
        ));
    }
    match (&src.secret_key_ref, &src.value) {
        (Some(_), Some(_)) => Some(format!(
            "{path}: give either value or secretKeyRef, not both"
        )),
        (Some(_), None) => None,
        (None, Some(_)) if inline_ok => None,
        (None, Some(_)) => Some(format!(
            "{path} must come from a secretKeyRef, not an inline value"
        )),
        (None, None) => Some(format!("{path} is required (a secretKeyRef)")),
    }
}
