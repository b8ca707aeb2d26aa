//! Answers kept in memory: the JSON text of cached reads, keyed by the read's payload (never
//! the credentials: every principal allowed to read from the cache gets the same answer), so
//! a pipeline repeating a read is answered without a query.
//!
//! Sound only while every change reaches us: the cache's tables notify `sgcache_changed` with
//! their name on every write (`sgcache::storage::notify`), and answers are kept only while a
//! listener task hears them and every table carries the trigger. Each answer records the
//! tables its statement reads (every quoted identifier in it: tables are always quoted) with
//! their generation, read before the query ran; a notification bumps its table's generation,
//! so an answer is never served after a table it read changed, nor kept when its query raced
//! such a change. Anything else (the listener reconnecting, the cache's own state tables, the
//! proxy's own write-through, for read-your-writes without waiting for the notification)
//! drops every answer. A TTL bounds the life of an answer in any case. PostgreSQL only: SQLite
//! has no notifications. The listener is [`super::change_listener`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use lru::LruCache;

/// Answers larger than this share of the budget are not kept (one page of 500 with big
/// fields would otherwise push out everything else).
const MAX_SHARE: usize = 8;

/// The generations an answer was computed at: the whole cache's, and each table's it read.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    epoch: u64,
    tables: Vec<(String, u64)>,
}

struct Entry {
    body: Bytes,
    /// The body gzipped, when a client that accepts gzip asked first (kept so that hits do not
    /// compress again: deflate was most of the CPU of a hit).
    gz: Option<Bytes>,
    at: Snapshot,
    kept: Instant,
}

impl Entry {
    fn size(&self, key: &str) -> usize {
        key.len() + self.body.len() + self.gz.as_ref().map_or(0, Bytes::len)
    }
}

/// A kept answer: its JSON text, and the same gzipped if kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    pub body: Bytes,
    pub gz: Option<Bytes>,
}

/// The tables (and, harmlessly, the columns) a statement names: its quoted identifiers.
pub fn quoted_identifiers(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut name = String::new();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    name.push('"');
                    continue;
                }
                break;
            }
            name.push(c);
        }
        out.push(name);
    }
    out.sort();
    out.dedup();
    out
}

struct Inner {
    map: LruCache<String, Entry>,
    bytes: usize,
    /// Bumped by anything that may change every answer.
    epoch: u64,
    /// Bumped by each change notification of the table.
    tables: HashMap<String, u64>,
}

impl Inner {
    fn current(&self, at: &Snapshot) -> bool {
        at.epoch == self.epoch
            && at
                .tables
                .iter()
                .all(|(t, g)| self.tables.get(t).copied().unwrap_or(0) == *g)
    }
}

pub struct ResultCache {
    max_bytes: usize,
    ttl: Duration,
    /// The listener is connected and every table has its trigger.
    live: AtomicBool,
    /// Moves on with every change heard and every invalidation: a statement in flight may be
    /// shared only by reads that arrive before the data it reads changes.
    generation: AtomicU64,
    inner: Mutex<Inner>,
}

impl ResultCache {
    /// `max_bytes` 0 disables it.
    pub fn new(max_bytes: usize, ttl: Duration) -> Self {
        ResultCache {
            max_bytes,
            ttl,
            live: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                map: LruCache::unbounded(),
                bytes: 0,
                epoch: 0,
                tables: HashMap::new(),
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    /// Answers are being kept and served (enabled, listening, every table triggered).
    pub fn is_live(&self) -> bool {
        self.enabled() && self.live.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generations to keep an answer of a statement naming `tables` under, read before
    /// the statement runs; `None` while answers cannot be kept.
    pub fn snapshot(&self, tables: Vec<String>) -> Option<Snapshot> {
        if !self.is_live() {
            return None;
        }
        let inner = self.lock();
        let tables = tables
            .into_iter()
            .map(|t| {
                let g = inner.tables.get(&t).copied().unwrap_or(0);
                (t, g)
            })
            .collect();
        Some(Snapshot {
            epoch: inner.epoch,
            tables,
        })
    }

    /// The kept answer to `key`, if nothing it read has changed since.
    pub fn get(&self, key: &str) -> Option<Kept> {
        if !self.is_live() {
            return None;
        }
        let mut inner = self.lock();
        let entry = inner.map.peek(key)?;
        if inner.current(&entry.at) && entry.kept.elapsed() < self.ttl {
            let entry = inner.map.get(key)?; // marks it recently used
            return Some(Kept {
                body: entry.body.clone(),
                gz: entry.gz.clone(),
            });
        }
        if let Some(old) = inner.map.pop(key) {
            inner.bytes -= old.size(key);
        }
        None
    }

    /// Keeps an answer computed from data at `at`, unless something it read changed since.
    pub fn put(&self, key: String, at: Snapshot, body: Bytes, gz: Option<Bytes>) {
        let entry = Entry {
            body,
            gz,
            at,
            kept: Instant::now(),
        };
        let size = entry.size(&key);
        if size > self.max_bytes / MAX_SHARE || !self.is_live() {
            return;
        }
        let mut inner = self.lock();
        if !inner.current(&entry.at) {
            return;
        }
        inner.bytes += size;
        if let Some((k, old)) = inner.map.push(key, entry) {
            inner.bytes -= old.size(&k);
        }
        while inner.bytes > self.max_bytes {
            let Some((k, old)) = inner.map.pop_lru() else {
                break;
            };
            inner.bytes -= old.size(&k);
        }
    }

    /// `table` changed: answers that read it are not served again. The cache's own state
    /// tables change what may be answered at all, so they drop everything.
    pub fn changed(&self, table: &str) {
        if table.starts_with('~') {
            return; // another proxy's heartbeat
        }
        if table.starts_with('_') {
            return self.invalidate();
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        *self.lock().tables.entry(table.to_string()).or_default() += 1;
    }

    /// Anything may have changed: no answer kept so far is served again.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.map.clear();
        inner.bytes = 0;
    }

    /// The number of changes heard and invalidations so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Starts or stops keeping answers (the change listener is connected or not).
    pub(super) fn set_live(&self, live: bool) {
        self.invalidate();
        self.live.store(live, Ordering::SeqCst);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::gzip::gzip;

    fn live(max: usize) -> ResultCache {
        let c = ResultCache::new(max, Duration::from_secs(60));
        c.set_live(true);
        c
    }

    fn reads(tables: &[&str]) -> Vec<String> {
        tables.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn a_statement_depends_on_its_quoted_identifiers() {
        let sql = r#"SELECT r."code" FROM "shot" r LEFT JOIN "sequence" s ON s."id" = r."sg_sequence__id" WHERE "odd""name" = $1"#;
        assert_eq!(
            quoted_identifiers(sql),
            reads(&[
                "code",
                "id",
                "odd\"name",
                "sequence",
                "sg_sequence__id",
                "shot"
            ])
        );
    }

    #[test]
    fn answers_are_kept_until_a_table_they_read_changes() {
        let c = live(1 << 20);
        let at = c.snapshot(reads(&["shot", "sequence"])).unwrap();
        c.put(
            "a".into(),
            at,
            Bytes::from_static(b"answer"),
            gzip(b"answer"),
        );
        let kept = c.get("a").unwrap();
        assert_eq!(&kept.body[..], b"answer");
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&kept.gz.unwrap()[..]),
            &mut text,
        )
        .unwrap();
        assert_eq!(text, "answer");
        c.changed("task"); // not read by this answer
        c.changed("~heartbeat:another-proxy");
        assert!(c.get("a").is_some());
        c.changed("sequence");
        assert_eq!(c.get("a"), None);
    }

    #[test]
    fn state_tables_and_invalidate_drop_everything() {
        let c = live(1 << 20);
        let at = c.snapshot(reads(&["shot"])).unwrap();
        c.put("a".into(), at, Bytes::from_static(b"x"), None);
        c.changed("_sgcache_fields");
        assert_eq!(c.get("a"), None);
        let at = c.snapshot(reads(&["shot"])).unwrap();
        c.put("a".into(), at, Bytes::from_static(b"x"), None);
        assert!(c.get("a").is_some());
        c.invalidate();
        assert_eq!(c.get("a"), None);
    }

    #[test]
    fn an_answer_that_raced_a_change_is_not_kept() {
        let c = live(1 << 20);
        let at = c.snapshot(reads(&["shot"])).unwrap();
        c.changed("shot"); // a notification while the query ran
        c.put("a".into(), at.clone(), Bytes::from_static(b"old"), None);
        assert_eq!(c.get("a"), None);
        c.invalidate();
        c.put("b".into(), at, Bytes::from_static(b"old"), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn nothing_is_kept_or_served_while_not_listening_or_disabled() {
        let c = ResultCache::new(1 << 20, Duration::from_secs(60));
        assert_eq!(c.snapshot(reads(&["shot"])), None);
        let c = live(1 << 20);
        let at = c.snapshot(reads(&["shot"])).unwrap();
        c.put("a".into(), at.clone(), Bytes::from_static(b"x"), None);
        c.set_live(false);
        assert_eq!(c.get("a"), None);
        c.put("a".into(), at, Bytes::from_static(b"x"), None);
        assert_eq!(c.len(), 0);
        assert_eq!(c.snapshot(reads(&["shot"])), None);
        let off = ResultCache::new(0, Duration::from_secs(60));
        off.set_live(true);
        assert_eq!(off.snapshot(reads(&["shot"])), None);
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used_and_skips_big_answers() {
        let c = live(800); // answers up to 100 bytes (key included) are kept
        for k in ["a", "b", "c", "d", "e", "f", "g", "h"] {
            let at = c.snapshot(reads(&["shot"])).unwrap();
            c.put(k.into(), at, Bytes::from(vec![b'x'; 89]), None);
        }
        assert!(c.get("a").is_some()); // a is now the most recently used
        let at = c.snapshot(reads(&["shot"])).unwrap();
        c.put("i".into(), at, Bytes::from(vec![b'x'; 89]), None);
        assert!(c.get("a").is_some());
        assert!(c.get("b").is_none(), "b was the least recently used");
        assert!(c.lock().bytes <= 800);
        let at = c.snapshot(reads(&["shot"])).unwrap();
        c.put("big".into(), at, Bytes::from(vec![b'x'; 98]), None);
        assert!(c.get("big").is_none());
    }

    #[test]
    fn answers_expire() {
        let c = ResultCache::new(1 << 20, Duration::from_millis(20));
        c.set_live(true);
        let at = c.snapshot(reads(&["shot"])).unwrap();
        c.put("a".into(), at, Bytes::from_static(b"x"), None);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(c.get("a"), None);
    }
}
