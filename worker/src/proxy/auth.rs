//! Which credentials the site has accepted, and when.
//!
//! Cached data is served only to a principal the site accepted within `ttl` (or within
//! `grace` while the site is unreachable). The key is the SHA-256 of the whole auth object
//! in canonical form (sorted keys), so every key counts: family, login or script name,
//! secret, `sudo_as_login`, session token and any extra keys. Secrets are never stored.
//! Failures are not remembered; a 102 from the site drops the entry at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// SHA-256 of the canonical auth object.
pub type CredentialKey = [u8; 32];

/// The key of a request's credentials; `None` without any (such a request is never
/// verified and never served from the cache).
pub fn principal(auth: &Map<String, Value>) -> Option<CredentialKey> {
    (!auth.is_empty()).then(|| credential_key(auth))
}

pub fn credential_key(auth: &Map<String, Value>) -> CredentialKey {
    // BTreeMap gives sorted keys whatever the map's own order is; nested objects are
    // canonicalised the same way.
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, canonical(v))).collect();
                let mut out = Map::new();
                for (k, v) in sorted {
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    let text = canonical(&Value::Object(auth.clone())).to_string();
    Sha256::digest(text.as_bytes()).into()
}

/// What the cache may do for a credential right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted by the site within the TTL.
    Fresh,
    /// Accepted within the grace period only: usable while the site is unreachable.
    Grace,
    /// Never accepted, or too long ago.
    Unknown,
}

pub struct AuthCache {
    ttl: Duration,
    grace: Duration,
    verified: Mutex<HashMap<CredentialKey, Instant>>,
}

impl AuthCache {
    pub fn new(ttl: Duration, grace: Duration) -> Self {
        AuthCache {
            ttl,
            grace: grace.max(ttl),
            verified: Mutex::new(HashMap::new()),
        }
    }

    pub fn verdict(&self, key: &CredentialKey) -> Verdict {
        let map = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(key) {
            Some(t) if t.elapsed() < self.ttl => Verdict::Fresh,
            Some(t) if t.elapsed() < self.grace => Verdict::Grace,
            _ => Verdict::Unknown,
        }
    }

    /// The site accepted this credential just now.
    pub fn accepted(&self, key: CredentialKey) {
        let mut map = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        // Keep the map bounded: forget entries past the grace period.
        if map.len() > 10_000 {
            let grace = self.grace;
            map.retain(|_, t| t.elapsed() < grace);
        }
        map.insert(key, Instant::now());
    }

    /// The site rejected this credential (error 102).
    pub fn rejected(&self, key: &CredentialKey) {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn auth(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_key_of_the_auth_object_counts_and_order_does_not() {
        let a = credential_key(&auth(json!({"script_name": "s", "script_key": "k"})));
        let b = credential_key(&auth(json!({"script_key": "k", "script_name": "s"})));
        let c = credential_key(&auth(json!({"script_name": "s", "script_key": "k2"})));
        let d = credential_key(&auth(
            json!({"script_name": "s", "script_key": "k", "sudo_as_login": "bob"}),
        ));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(principal(&Map::new()), None);
    }

    #[test]
    fn ttl_grace_and_rejection() {
        let cache = AuthCache::new(Duration::from_millis(30), Duration::from_millis(200));
        let k = credential_key(&auth(json!({"script_name": "s", "script_key": "k"})));
        assert_eq!(cache.verdict(&k), Verdict::Unknown);
        cache.accepted(k);
        assert_eq!(cache.verdict(&k), Verdict::Fresh);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(cache.verdict(&k), Verdict::Grace);
        cache.rejected(&k);
        assert_eq!(cache.verdict(&k), Verdict::Unknown);
    }
}
