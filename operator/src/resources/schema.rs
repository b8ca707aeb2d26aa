//! The PostgreSQL schema each ShotgunCache owns: `database.schema` when the spec sets it, else
//! one derived from the namespace and name, so caches sharing a database never meet.

use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::ShotgunCache;

/// PostgreSQL's longest identifier (NAMEDATALEN - 1).
const MAX_IDENT: usize = 63;
/// Readable part of a derived name: the rest is `sgc_` and `_` plus the hash.
const READABLE: usize = MAX_IDENT - 4 - 1 - HASH_HEX;
/// Hex digits of the hash of `namespace/name` that make a derived name unique (`a-b`/`c` and
/// `a`/`b-c` read the same once sanitized).
const HASH_HEX: usize = 8;

/// `sgc_<namespace>_<name>_<hash>`, lowercase `[a-z0-9_]`, at most 63 characters: a valid
/// identifier that never needs quoting, unique per namespace/name.
pub fn default_schema(namespace: &str, name: &str) -> String {
    let readable: String = format!("{namespace}_{name}")
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .take(READABLE)
        .collect();
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sgc_{readable}_{}", &hash[..HASH_HEX])
}

/// The cache with its Kubernetes defaults applied (its own schema): what the reconcile, the
/// worker config and the cleanup all use.
pub fn with_defaults(cache: &ShotgunCache) -> ShotgunCache {
    let mut c = cache.clone();
    if c.spec.database.schema.is_none() {
        let schema = default_schema(&c.namespace().unwrap_or_default(), &c.name_any());
        c.spec.0.database.schema = Some(schema);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_schemas_are_valid_unique_and_bounded() {
        let s = default_schema("default", "studio");
        assert!(s.starts_with("sgc_default_studio_"), "{s}");
        let valid = regex_like(&s);
        assert!(valid, "{s}");
        assert_ne!(default_schema("a-b", "c"), default_schema("a", "b-c"));
        let long = default_schema(&"n".repeat(63), &"x".repeat(253));
        assert_eq!(long.len(), MAX_IDENT);
        assert!(regex_like(&long));
        assert_eq!(default_schema("Ns", "N.a"), default_schema("Ns", "N.a"));
    }

    /// `^[a-z_][a-z0-9_]{0,62}$`, the pattern of `database.schema`.
    fn regex_like(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && s.len() <= MAX_IDENT
    }

    #[test]
    fn a_schema_set_in_the_spec_wins() {
        let c = ShotgunCache::test();
        assert_eq!(
            with_defaults(&c).spec.database.schema.as_deref(),
            Some(default_schema("default", "cache").as_str())
        );
        let set = c.with_spec(|s| s.database.schema = Some("shared".into()));
        assert_eq!(
            with_defaults(&set).spec.database.schema.as_deref(),
            Some("shared")
        );
    }
}
