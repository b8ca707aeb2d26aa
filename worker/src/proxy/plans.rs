//! Plans of cached reads kept by their payload's text, so a read sent again with the same
//! payload (a pipeline's everyday reads, a crowd's identical read) is not parsed and
//! translated again: on a read the cache answers from kept answers, parsing and translating
//! were most of the proxy's own work. Why a read passes through is kept the same way: a
//! storm of one uncached read spent about a tenth of the proxy's CPU planning it again on
//! every request (BENCHMARKS.md).
//!
//! A plan depends on the payload, the catalog and the database's dialect, and on the clock
//! only through relative dates: such plans (their classes say so) are never kept, nor
//! verdicts whose reason may come from the clock or the database
//! ([`sgcache::query::Reason::follows_from_catalog`]). Each entry is kept with the catalog it
//! was made from and used only while that catalog is the current one (the catalog is
//! replaced, never changed in place, on every refresh). Bounded in entries and in bytes
//! (payloads, statements and verdicts), least recently used first out.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, Weak};

use lru::LruCache;
use sgcache::query::{Catalog, PassThrough, ReadPlan};

/// Most entries kept: far more than the distinct reads of a studio's pipelines repeat.
const MAX_PLANS: usize = 2048;

/// Bytes kept at most over all entries (payloads, statements, pass-through details).
const MAX_BYTES: usize = 8 << 20;

/// Payloads longer than this are planned every time (a read listing thousands of ids is not
/// the repeated kind, and would take a large share of the budget).
const MAX_PAYLOAD: usize = 8 << 10;

struct Entry {
    /// The catalog the plan was made from; weak, so a kept plan never keeps an old catalog's
    /// contents alive (and its address cannot be reused while the entry holds it).
    catalog: Weak<Catalog>,
    verdict: Verdict,
}

/// What planning the payload gave.
type Verdict = Result<Arc<ReadPlan>, PassThrough>;

impl Entry {
    fn size(&self, payload: &str) -> usize {
        payload.len()
            + match &self.verdict {
                Ok(plan) => plan.sql.text.len() + 64 * plan.sql.binds.len(),
                Err(pass) => 64 + pass.detail.len(),
            }
    }
}

pub struct Plans {
    inner: Mutex<Inner>,
}

struct Inner {
    map: LruCache<Box<str>, Entry>,
    bytes: usize,
}

impl Default for Plans {
    fn default() -> Self {
        Plans {
            inner: Mutex::new(Inner {
                map: LruCache::new(NonZeroUsize::new(MAX_PLANS).unwrap_or(NonZeroUsize::MIN)),
                bytes: 0,
            }),
        }
    }
}

impl Plans {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The plan, or why the cache does not answer, kept for `payload` made from `catalog`.
    pub fn get(&self, payload: &str, catalog: &Arc<Catalog>) -> Option<Verdict> {
        if payload.len() > MAX_PAYLOAD {
            return None;
        }
        let mut inner = self.lock();
        let entry = inner.map.get(payload)?;
        if Weak::ptr_eq(&entry.catalog, &Arc::downgrade(catalog)) {
            return Some(entry.verdict.clone());
        }
        // Made from an older catalog: never used again.
        if let Some((k, old)) = inner.map.pop_entry(payload) {
            inner.bytes -= old.size(&k);
        }
        None
    }

    /// Keeps `verdict`, made from `catalog` for `payload`, unless it may depend on the time
    /// or on the database.
    pub fn put(&self, payload: &str, catalog: &Arc<Catalog>, verdict: &Verdict) {
        let lasting = match verdict {
            Ok(plan) => !plan.classes.iter().any(|c| c.is_relative_date()),
            Err(pass) => pass.reason.follows_from_catalog(),
        };
        if payload.len() > MAX_PAYLOAD || !lasting {
            return;
        }
        let entry = Entry {
            catalog: Arc::downgrade(catalog),
            verdict: verdict.clone(),
        };
        let size = entry.size(payload);
        let mut inner = self.lock();
        inner.bytes += size;
        if let Some((k, old)) = inner.map.push(payload.into(), entry) {
            inner.bytes -= old.size(&k);
        }
        while inner.bytes > MAX_BYTES {
            let Some((k, old)) = inner.map.pop_lru() else {
                break;
            };
            inner.bytes -= old.size(&k);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sgcache::api3::ReadRequest;
    use sgcache::query::{plan_read, CatalogField, CatalogType};
    use sgcache::schema::{DataType, Storage};
    use sgcache::sql::Dialect;

    fn catalog() -> Arc<Catalog> {
        let field = |name: &str, data_type, storage| CatalogField {
            name: name.into(),
            data_type,
            storage,
            ready: true,
            unservable: false,
            non_ascii: false,
            valid_types: Vec::new(),
            retired_reads_null: false,
        };
        let mut shot = CatalogType {
            entity_type: "Shot".into(),
            table: "shot".into(),
            display_field: Some("code".into()),
            ready: true,
            stale: false,
            event_log: false,
            fields: Default::default(),
        };
        for f in [
            field("id", DataType::Number, Storage::Integer),
            field("code", DataType::Text, Storage::Text),
            field("created_at", DataType::DateTime, Storage::DateTime),
        ] {
            shot.fields.insert(f.name.clone(), f);
        }
        let mut c = Catalog::default();
        c.types.insert("Shot".into(), shot);
        Arc::new(c)
    }

    fn plan(payload: &str, cat: &Catalog) -> Verdict {
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        let read = ReadRequest::parse(&v).unwrap();
        plan_read(&read, cat, Dialect::Postgres).map(Arc::new)
    }

    const CODE: &str = r#"{"type":"Shot","return_fields":["code"],"filters":{"logical_operator":"and","conditions":[{"path":"code","relation":"is","values":["a"]}]},"return_only":"active","paging":{"entities_per_page":50,"current_page":1}}"#;
    const RECENT: &str = r#"{"type":"Shot","return_fields":["code"],"filters":{"logical_operator":"and","conditions":[{"path":"created_at","relation":"in_last","values":[1,"DAY"]}]},"return_only":"active","paging":{"entities_per_page":50,"current_page":1}}"#;
    const PLAYLIST: &str = r#"{"type":"Playlist","return_fields":["code"],"filters":{"logical_operator":"and","conditions":[]},"return_only":"active","paging":{"entities_per_page":50,"current_page":1}}"#;
    /// A relative date too far out to have a window: refused because of the clock.
    const FAR: &str = r#"{"type":"Shot","return_fields":["code"],"filters":{"logical_operator":"and","conditions":[{"path":"created_at","relation":"in_last","values":[9223372036854775807,"DAY"]}]},"return_only":"active","paging":{"entities_per_page":50,"current_page":1}}"#;

    #[test]
    fn a_plan_is_used_only_with_the_catalog_it_was_made_from() {
        let plans = Plans::default();
        let cat = catalog();
        let p = plan(CODE, &cat);
        plans.put(CODE, &cat, &p);
        let kept = plans.get(CODE, &cat).expect("kept").expect("a plan");
        assert!(Arc::ptr_eq(&kept, p.as_ref().unwrap()));
        assert!(plans.get(&CODE.replace("\"a\"", "\"b\""), &cat).is_none());
        // A refresh stores a new catalog, even an equal one: the plan is made again.
        let refreshed = Arc::new((*cat).clone());
        assert!(plans.get(CODE, &refreshed).is_none());
        assert_eq!(plans.len(), 0, "a plan of an older catalog is dropped");
        drop(cat);
        plans.put(CODE, &refreshed, &p);
        assert!(plans.get(CODE, &refreshed).is_some());
    }

    #[test]
    fn why_a_read_passes_through_is_kept_while_the_catalog_is() {
        let plans = Plans::default();
        let cat = catalog();
        let verdict = plan(PLAYLIST, &cat);
        let reason = verdict.as_ref().map_err(|p| p.reason).unwrap_err();
        assert_eq!(reason, sgcache::query::Reason::TypeNotCached);
        plans.put(PLAYLIST, &cat, &verdict);
        let kept = plans.get(PLAYLIST, &cat).expect("kept");
        assert_eq!(kept.map(|_| ()), verdict.clone().map(|_| ()));
        // Playlist cached after a refresh: the verdict of the old catalog is not used.
        let refreshed = Arc::new((*cat).clone());
        assert!(plans.get(PLAYLIST, &refreshed).is_none());
    }

    #[test]
    fn verdicts_that_depend_on_the_time_or_large_payloads_are_not_kept() {
        let plans = Plans::default();
        let cat = catalog();
        let p = plan(RECENT, &cat);
        assert!(p
            .as_ref()
            .unwrap()
            .classes
            .iter()
            .any(|c| c.is_relative_date()));
        plans.put(RECENT, &cat, &p);
        assert!(plans.get(RECENT, &cat).is_none());
        let far = plan(FAR, &cat);
        let reason = far.as_ref().map_err(|p| p.reason).unwrap_err();
        assert_eq!(reason, sgcache::query::Reason::Value);
        plans.put(FAR, &cat, &far);
        assert!(plans.get(FAR, &cat).is_none());
        let long = format!("{CODE}{}", " ".repeat(MAX_PAYLOAD));
        plans.put(&long, &cat, &plan(CODE, &cat));
        let long = format!("{PLAYLIST}{}", " ".repeat(MAX_PAYLOAD));
        plans.put(&long, &cat, &plan(PLAYLIST, &cat));
        assert_eq!(plans.len(), 0);
    }

    #[test]
    fn the_byte_budget_evicts_the_least_recently_used() {
        let plans = Plans::default();
        let cat = catalog();
        let p = plan(CODE, &cat);
        let each = Entry {
            catalog: Arc::downgrade(&cat),
            verdict: p.clone(),
        }
        .size(&format!("{CODE}{:>6}", 0));
        let fit = MAX_BYTES / each;
        for i in 0..fit.min(MAX_PLANS) + 10 {
            plans.put(&format!("{CODE}{i:>6}"), &cat, &p);
        }
        let inner = plans.lock();
        assert!(inner.bytes <= MAX_BYTES);
        assert!(inner.map.len() <= MAX_PLANS);
        drop(inner);
        assert!(plans.get(&format!("{CODE}{:>6}", 0), &cat).is_none());
    }
}
