//! Resolving the spec's Secret references into a [`Connection`]. Fetching is one `get` per
//! distinct Secret; turning Secrets into values is pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use sgcache::spec::{SiteConnection, ValueSource};
use sgcache::ShotgunCacheSpec;

use crate::db::Connection;

/// Why the inputs cannot be used: a condition reason and a message (never a secret value).
pub type InputProblem = (String, String);

/// The Secrets the given sources name, fetched once each; absent ones are left out.
pub async fn fetch<'a>(
    client: &Client,
    ns: &str,
    sources: impl IntoIterator<Item = Option<&'a ValueSource>>,
) -> Result<BTreeMap<String, Secret>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut names: Vec<&str> = sources
        .into_iter()
        .flatten()
        .filter_map(|s| s.secret_key_ref.as_ref().map(|r| r.name.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut found = BTreeMap::new();
    for name in names {
        if let Some(secret) = api.get_opt(name).await? {
            found.insert(name.to_string(), secret);
        }
    }
    Ok(found)
}

/// The value of a source: inline, or a key of a fetched Secret.
pub fn value_of(
    path: &str,
    src: Option<&ValueSource>,
    ns: &str,
    secrets: &BTreeMap<String, Secret>,
) -> Result<String, InputProblem> {
    let src = src.ok_or_else(|| ("InvalidSpec".to_string(), format!("{path} is not set")))?;
    let Some(r) = &src.secret_key_ref else {
        return src
            .value
            .clone()
            .ok_or_else(|| ("InvalidSpec".into(), format!("{path} has no value")));
    };
    let secret = secrets.get(&r.name).ok_or_else(|| {
        let msg = format!("Secret {ns}/{} (for {path}) not found", r.name);
        ("SecretNotFound".to_string(), msg)
    })?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.clone());
    let plain = secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|s| s.clone().into_bytes());
    let value = bytes.or(plain).ok_or_else(|| {
        let msg = format!("Secret {ns}/{} has no key {:?} (for {path})", r.name, r.key);
        ("SecretKeyMissing".to_string(), msg)
    })?;
    let value = String::from_utf8(value).map_err(|_| {
        let msg = format!("Secret {ns}/{} key {:?} is not UTF-8", r.name, r.key);
        ("SecretKeyInvalid".to_string(), msg)
    })?;
    Ok(value.trim().to_string())
}

/// The database URL, which must be PostgreSQL on Kubernetes (workers run in several pods),
/// working in the cache's schema.
pub fn database_url(
    spec: &ShotgunCacheSpec,
    ns: &str,
    secrets: &BTreeMap<String, Secret>,
) -> Result<String, InputProblem> {
    let url = value_of("database.url", spec.database.url.as_ref(), ns, secrets)?;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(sgcache::spec::with_schema(
            &url,
            spec.database.schema.as_deref(),
        ))
    } else {
        Err((
            "UnsupportedDatabase".into(),
            "database.url must be a postgres:// URL on Kubernetes".into(),
        ))
    }
}

/// Everything the database step needs.
pub fn connection(
    spec: &ShotgunCacheSpec,
    ns: &str,
    secrets: &BTreeMap<String, Secret>,
) -> Result<Connection, InputProblem> {
    let database_url = database_url(spec, ns, secrets)?;
    let site = SiteConnection {
        url: spec
            .site
            .url
            .clone()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string(),
        script_name: value_of(
            "site.scriptName",
            spec.site.script_name.as_ref(),
            ns,
            secrets,
        )?,
        api_key: value_of("site.apiKey", spec.site.api_key.as_ref(), ns, secrets)?,
        timeout: spec.site.timeout.duration(),
    };
    Ok(Connection {
        database_url,
        site,
        schema: spec.database.schema.clone(),
    })
}

/// Hash of the resolved credential values (never the values themselves): in the pod template,
/// so a rotated Secret rolls the workers, which read the values only at start.
pub fn values_hash(conn: &Connection) -> String {
    let digest = digest_of(&[
        &conn.database_url,
        &conn.site.script_name,
        &conn.site.api_key,
    ]);
    hex::encode(&digest[..8])
}

/// SHA-256 of `parts`, each length-prefixed so ("ab", "c") and ("a", "bc") differ: how the
/// operator names secret values (and what depends on them) without holding them.
pub(crate) fn digest_of(parts: &[&str]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for v in parts {
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    h.finalize().into()
}

/// The names of the Secrets a spec refers to.
pub fn referenced(spec: &ShotgunCacheSpec) -> Vec<&str> {
    [
        spec.site.script_name.as_ref(),
        spec.site.api_key.as_ref(),
        spec.database.url.as_ref(),
    ]
    .into_iter()
    .flatten()
    .filter_map(|s| s.secret_key_ref.as_ref().map(|r| r.name.as_str()))
    .collect()
}

/// The caches (of those known) that refer to the Secret `ns/name`: what a change to that
/// Secret must reconcile.
pub fn caches_referencing(
    caches: &[std::sync::Arc<crate::ShotgunCache>],
    ns: &str,
    name: &str,
) -> Vec<kube::runtime::reflector::ObjectRef<crate::ShotgunCache>> {
    use kube::ResourceExt;
    caches
        .iter()
        .filter(|c| c.namespace().as_deref() == Some(ns))
        .filter(|c| referenced(&c.spec).contains(&name))
        .map(|c| kube::runtime::reflector::ObjectRef::from_obj(c.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;
    use crate::ShotgunCache;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        let data = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())));
        Secret {
            data: Some(data.collect()),
            ..Secret::default()
        }
    }

    #[test]
    fn resolves_values_from_secrets_and_names_what_is_missing() {
        let spec = ShotgunCache::test().spec.0;
        let mut secrets = BTreeMap::from([
            ("site".to_string(), secret(&[("apiKey", "k3y\n")])),
            (
                "db".to_string(),
                secret(&[("url", "postgres://u:p@db/cache")]),
            ),
        ]);
        let conn = connection(&spec, "default", &secrets).unwrap();
        assert_eq!(conn.site.api_key, "k3y");
        assert_eq!(conn.site.script_name, "sgcache");
        assert_eq!(conn.database_url, "postgres://u:p@db/cache");
        assert!(!format!("{conn:?}").contains("k3y") && !format!("{conn:?}").contains("u:p"));

        secrets.insert("db".into(), secret(&[("uri", "postgres://x")]));
        let (reason, msg) = connection(&spec, "default", &secrets).unwrap_err();
        assert_eq!(reason, "SecretKeyMissing");
        assert!(
            msg.contains("default/db") && msg.contains("\"url\""),
            "{msg}"
        );

        secrets.insert("db".into(), secret(&[("url", "sqlite://cache.db")]));
        assert_eq!(
            connection(&spec, "default", &secrets).unwrap_err().0,
            "UnsupportedDatabase"
        );

        let before = values_hash(&conn);
        // Pinned: a different hash for the same values would roll every worker on upgrade.
        assert_eq!(before, "e20ed563a0541e65");
        assert!(!before.contains("k3y"));
        let mut rotated = conn.clone();
        rotated.site.api_key = "new".into();
        assert_ne!(
            values_hash(&rotated),
            before,
            "a rotated key rolls the pods"
        );
        assert_eq!(values_hash(&conn.clone()), before, "same values, same hash");

        secrets.remove("site");
        secrets.insert("db".into(), secret(&[("url", "postgres://x")]));
        let (reason, msg) = connection(&spec, "default", &secrets).unwrap_err();
        assert_eq!(reason, "SecretNotFound");
        assert_eq!(msg, "Secret default/site (for site.apiKey) not found");
    }
}

#[cfg(test)]
mod watch_tests {
    use std::sync::Arc;

    use kube::ResourceExt;

    use super::*;
    use crate::ShotgunCache;

    #[test]
    fn a_secret_maps_to_the_caches_of_its_namespace_that_name_it() {
        let a = ShotgunCache::test(); // default/cache: Secrets site and db
        let mut b = ShotgunCache::test();
        b.metadata.name = Some("other".into());
        b.metadata.namespace = Some("studio".into());
        let mut c = ShotgunCache::test().with_spec(|s| s.database.url = None);
        c.metadata.name = Some("nodb".into());
        let caches = [Arc::new(a), Arc::new(b), Arc::new(c)];
        let names = |ns, secret| -> Vec<String> {
            caches_referencing(&caches, ns, secret)
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names("default", "db"), ["cache"]);
        assert_eq!(names("default", "site"), ["cache", "nodb"]);
        assert_eq!(names("studio", "db"), ["other"]);
        assert!(names("default", "unrelated").is_empty());
        assert_eq!(caches[0].name_any(), "cache");
    }
}
