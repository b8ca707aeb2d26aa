//! Which credentials the site has accepted, and when.
//!
//! Cached data is served only to a principal the site accepted within `ttl` (or within
//! `grace` while the proxy's own probe says the site is unreachable). Only auth objects of
//! the shapes the client sends are principals (one credential family, string values, the
//! known optional keys); anything else, mixed or malformed, passes through to the site and
//! is never remembered. The key is the SHA-256 of the whole auth object in canonical form
//! (sorted keys), so every key counts. Secrets are never stored.
//!
//! The memory is a least-recently-used map with a hard cap, so a client inventing a new
//! credential per request costs one bounded entry each, in O(1). A 102 from the site marks
//! the entry rejected: an acceptance of a request sent before that (still in flight) does
//! not bring it back.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// SHA-256 of the canonical auth object.
pub type CredentialKey = [u8; 32];

/// Most credentials remembered at once: far more than the scripts and users of a studio;
/// past it the least recently used is forgotten (and verified again on its next read).
const MAX_CREDENTIALS: usize = 10_000;

/// The credential families (exactly one per auth object) and their keys.
const FAMILIES: &[&[&str]] = &[
    &["script_name", "script_key"],
    &["user_login", "user_password"],
    &["session_token"],
];

/// Optional keys of any family: string-valued ones, then `reject_if_expired` (a boolean).
const OPTIONAL_TEXT: &[&str] = &["sudo_as_login", "session_uuid", "auth_token"];

/// The key of a request's credentials; `None` when there are none or when the auth object
/// is not one the client would send (such a request is never verified and never served
/// from the cache: the site judges it).
pub fn principal(auth: &Map<String, Value>) -> Option<CredentialKey> {
    well_formed(auth).then(|| credential_key(auth))
}

/// One family, all its keys, string values, and only the known optional keys.
fn well_formed(auth: &Map<String, Value>) -> bool {
    let present: Vec<&&[&str]> = FAMILIES
        .iter()
        .filter(|f| f.iter().any(|k| auth.contains_key(*k)))
        .collect();
    let [family] = present.as_slice() else {
        return false;
    };
    auth.iter().all(|(k, v)| {
        let k = k.as_str();
        if family.contains(&k) || OPTIONAL_TEXT.contains(&k) {
            v.is_string()
        } else {
            k == "reject_if_expired" && v.is_boolean()
        }
    }) && family.iter().all(|k| auth.contains_key(*k))
}

pub fn credential_key(auth: &Map<String, Value>) -> CredentialKey {
    // Sorted keys whatever the map's own order is; values are strings or booleans (checked
    // by `principal`), written as JSON.
    let mut keys: Vec<&String> = auth.keys().collect();
    keys.sort();
    let mut h = Sha256::new();
    for k in keys {
        h.update(serde_json::to_string(k).unwrap_or_default());
        h.update(b":");
        h.update(auth[k].to_string());
        h.update(b",");
    }
    h.finalize().into()
}

/// What the cache may do for a credential right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted by the site within the TTL.
    Fresh,
    /// Accepted within the grace period only: usable while the site is unreachable.
    Grace,
    /// Never accepted, rejected since, or accepted too long ago.
    Unknown,
}

#[derive(Clone, Copy, Debug)]
enum Entry {
    /// The site accepted a request sent at this time.
    Accepted(Instant),
    /// The site answered 102 at this time.
    Rejected(Instant),
}

pub struct AuthCache {
    ttl: Duration,
    grace: Duration,
    entries: Mutex<LruCache<CredentialKey, Entry>>,
}

impl AuthCache {
    pub fn new(ttl: Duration, grace: Duration) -> Self {
        Self::with_capacity(ttl, grace, MAX_CREDENTIALS)
    }

    fn with_capacity(ttl: Duration, grace: Duration, cap: usize) -> Self {
        AuthCache {
            ttl,
            grace: grace.max(ttl),
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<CredentialKey, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn verdict(&self, key: &CredentialKey) -> Verdict {
        match self.lock().get(key) {
            Some(Entry::Accepted(t)) if t.elapsed() < self.ttl => Verdict::Fresh,
            Some(Entry::Accepted(t)) if t.elapsed() < self.grace => Verdict::Grace,
            _ => Verdict::Unknown,
        }
    }

    /// The site accepted this credential on a request sent at `sent` (before the answer:
    /// the credential was good then, not necessarily now).
    pub fn accepted(&self, key: CredentialKey, sent: Instant) {
        let mut map = self.lock();
        match map.peek(&key) {
            // A 102 that came later than this request left wins.
            Some(Entry::Rejected(at)) if *at >= sent => {}
            Some(Entry::Accepted(at)) if *at >= sent => {}
            _ => {
                map.put(key, Entry::Accepted(sent));
            }
        }
    }

    /// The site rejected this credential (error 102): it is never served from the cache
    /// again unless a request sent after now is accepted.
    pub fn rejected(&self, key: &CredentialKey) {
        self.lock().put(*key, Entry::Rejected(Instant::now()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
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
        // Values cannot run into keys: a different split of the same characters differs.
        let e = credential_key(&auth(
            json!({"script_name": "s\",\"script_key", "script_key": "k"}),
        ));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_ne!(a, e);
        assert_eq!(principal(&Map::new()), None);
    }

    #[test]
    fn only_the_shapes_the_client_sends_are_principals() {
        for good in [
            json!({"script_name": "s", "script_key": "k"}),
            json!({"script_name": "s", "script_key": "k", "sudo_as_login": "bob", "session_uuid": "u"}),
            json!({"user_login": "u", "user_password": "p", "auth_token": "123456"}),
            json!({"session_token": "t", "reject_if_expired": true}),
        ] {
            assert!(principal(&auth(good.clone())).is_some(), "{good}");
        }
        for bad in [
            json!({"script_name": "s", "script_key": "k", "sudo_as_login": 7}),
            json!({"script_name": "s", "script_key": "k", "session_token": "t"}),
            json!({"script_name": "s", "script_key": "k", "x-random-1234": "y"}),
            json!({"script_name": "s"}),
            json!({"script_name": ["s"], "script_key": "k"}),
            json!({"user_login": "u", "user_password": {"p": 1}}),
            json!({"session_token": "t", "reject_if_expired": "yes"}),
            json!({"sudo_as_login": "bob"}),
        ] {
            assert_eq!(principal(&auth(bad.clone())), None, "{bad}");
        }
    }

    #[test]
    fn ttl_grace_and_rejection() {
        let cache = AuthCache::new(Duration::from_millis(30), Duration::from_millis(200));
        let k = credential_key(&auth(json!({"script_name": "s", "script_key": "k"})));
        assert_eq!(cache.verdict(&k), Verdict::Unknown);
        let sent = Instant::now();
        cache.accepted(k, sent);
        assert_eq!(cache.verdict(&k), Verdict::Fresh);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(cache.verdict(&k), Verdict::Grace);
        cache.rejected(&k);
        assert_eq!(cache.verdict(&k), Verdict::Unknown);
        // An answer to a request sent before the rejection does not undo it ...
        cache.accepted(k, sent);
        assert_eq!(cache.verdict(&k), Verdict::Unknown);
        // ... one sent after it does (the key was restored on the site).
        cache.accepted(k, Instant::now());
        assert_eq!(cache.verdict(&k), Verdict::Fresh);
    }

    #[test]
    fn the_memory_is_bounded() {
        let cache = AuthCache::with_capacity(Duration::from_secs(60), Duration::from_secs(60), 100);
        let first = credential_key(&auth(json!({"session_token": "0"})));
        for i in 0..1000 {
            let k = credential_key(&auth(json!({"session_token": i.to_string()})));
            cache.accepted(k, Instant::now());
        }
        assert_eq!(cache.len(), 100);
        assert_eq!(cache.verdict(&first), Verdict::Unknown);
    }
}
