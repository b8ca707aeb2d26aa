//! Answers kept in memory: the JSON text of cached reads, keyed by the read's payload (never
//! the credentials: every principal allowed to read from the cache gets the same answer), so
//! a pipeline repeating a read is answered without a query.
//!
//! Sound only while every change reaches us: the cache's tables notify `sgcache_changed` on
//! every write (`sgcache::storage::notify`), a listener task drops every answer on each
//! notification, and answers are kept only while that listener is connected and every table
//! carries the trigger. An answer is stored with the generation read before its query ran, so
//! an answer whose query raced a change is never served. The proxy's own write-through drops
//! the answers at once (read-your-writes does not wait for the notification). A TTL bounds the
//! life of an answer in any case. PostgreSQL only: SQLite has no notifications.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use lru::LruCache;
use sgcache::sql::Db;
use sgcache::storage::notify;
use tokio_util::sync::CancellationToken;

use super::AppState;

/// Answers larger than this share of the budget are not kept (one page of 500 with big
/// fields would otherwise push out everything else).
const MAX_SHARE: usize = 8;

struct Entry {
    body: Bytes,
    /// The body gzipped, when a client that accepts gzip asked first (kept so that hits do not
    /// compress again: deflate was most of the CPU of a hit).
    gz: Option<Bytes>,
    generation: u64,
    at: Instant,
}

impl Entry {
    fn size(&self, key: &str) -> usize {
        key.len() + self.body.len() + self.gz.as_ref().map_or(0, Bytes::len)
    }
}

/// A kept answer: its JSON text, and the same gzipped if kept.
#[derive(Debug, PartialEq)]
pub struct Kept {
    pub body: Bytes,
    pub gz: Option<Bytes>,
}

/// Gzips an answer at the fastest level (as the proxy's compression layer does).
pub fn gzip(body: &[u8]) -> Option<Bytes> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(body).ok()?;
    e.finish().ok().map(Bytes::from)
}

struct Inner {
    map: LruCache<String, Entry>,
    bytes: usize,
}

pub struct ResultCache {
    max_bytes: usize,
    ttl: Duration,
    /// Bumped by every change; answers of an older generation are never served.
    generation: AtomicU64,
    /// The listener is connected and every table has its trigger.
    live: AtomicBool,
    inner: Mutex<Inner>,
}

impl ResultCache {
    /// `max_bytes` 0 disables it.
    pub fn new(max_bytes: usize, ttl: Duration) -> Self {
        ResultCache {
            max_bytes,
            ttl,
            generation: AtomicU64::new(0),
            live: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                map: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    /// Answers are being kept and served (enabled, listening, every table triggered).
    pub fn is_live(&self) -> bool {
        self.generation().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation to store an answer under, read before its query runs; `None` while
    /// answers cannot be kept.
    pub fn generation(&self) -> Option<u64> {
        (self.enabled() && self.live.load(Ordering::SeqCst))
            .then(|| self.generation.load(Ordering::SeqCst))
    }

    /// The kept answer to `key`, if it is still current.
    pub fn get(&self, key: &str) -> Option<Kept> {
        let generation = self.generation()?;
        let mut inner = self.lock();
        let entry = inner.map.get(key)?;
        if entry.generation == generation && entry.at.elapsed() < self.ttl {
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

    /// Keeps an answer computed from data at `generation`, unless something changed since.
    pub fn put(&self, key: String, generation: u64, body: Bytes, gz: Option<Bytes>) {
        let entry = Entry {
            body,
            gz,
            generation,
            at: Instant::now(),
        };
        let size = entry.size(&key);
        if size > self.max_bytes / MAX_SHARE {
            return;
        }
        let mut inner = self.lock();
        // Checked under the lock: `invalidate` bumps the generation before it clears the map.
        if self.generation() != Some(generation) {
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

    /// Something changed: no answer kept so far may be served again.
    pub fn invalidate(&self) {
        let mut inner = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        inner.map.clear();
        inner.bytes = 0;
    }

    fn set_live(&self, live: bool) {
        self.invalidate();
        self.live.store(live, Ordering::SeqCst);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

/// Listens for change notifications while the proxy runs and keeps `state.results` live only
/// while it hears them. Reconnects after losing the connection (answers kept meanwhile are
/// dropped: notifications may have been missed).
pub async fn listen(state: Arc<AppState>, stop: CancellationToken) {
    if !state.results.enabled() {
        return;
    }
    let mut delay = Duration::from_millis(500);
    loop {
        if let Some(Db::Postgres(pool)) = state.db() {
            match follow(&state, pool, &stop).await {
                Ok(()) => return, // stopped
                Err(e) => {
                    tracing::warn!(error = %e, "change notifications lost; answers are not kept in memory until they are back")
                }
            }
            state.results.set_live(false);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// One connection's worth of listening; returns `Ok` when stopped, `Err` when the connection
/// is lost or a table lacks its trigger.
async fn follow(
    state: &AppState,
    pool: &sqlx::PgPool,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(notify::CHANNEL).await?;
    let missing = notify::untriggered_tables(state.db().expect("a pool")).await?;
    if !missing.is_empty() {
        anyhow::bail!(
            "tables without a change trigger (run `sgcache-worker migrate`): {missing:?}"
        );
    }
    state.results.set_live(true);
    tracing::info!("listening for changes; keeping answers in memory");
    loop {
        let note = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            n = listener.try_recv() => n?,
        };
        match note {
            Some(_) => state.results.invalidate(),
            None => anyhow::bail!("the notification connection closed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(max: usize) -> ResultCache {
        let c = ResultCache::new(max, Duration::from_secs(60));
        c.set_live(true);
        c
    }

    #[test]
    fn answers_are_kept_until_something_changes() {
        let c = live(1 << 20);
        let g = c.generation().unwrap();
        c.put(
            "a".into(),
            g,
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
        c.invalidate();
        assert_eq!(c.get("a"), None);
    }

    #[test]
    fn an_answer_that_raced_a_change_is_not_kept() {
        let c = live(1 << 20);
        let g = c.generation().unwrap();
        c.invalidate(); // a notification while the query ran
        c.put("a".into(), g, Bytes::from_static(b"old"), None);
        assert_eq!(c.get("a"), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn nothing_is_kept_or_served_while_not_listening_or_disabled() {
        let c = ResultCache::new(1 << 20, Duration::from_secs(60));
        assert_eq!(c.generation(), None);
        let c = live(1 << 20);
        let g = c.generation().unwrap();
        c.put("a".into(), g, Bytes::from_static(b"x"), None);
        c.set_live(false);
        assert_eq!(c.get("a"), None);
        assert_eq!(c.generation(), None);
        let off = ResultCache::new(0, Duration::from_secs(60));
        off.set_live(true);
        assert_eq!(off.generation(), None);
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used_and_skips_big_answers() {
        let c = live(800); // answers up to 100 bytes (key included) are kept
        let g = c.generation().unwrap();
        for k in ["a", "b", "c", "d", "e", "f", "g", "h"] {
            c.put(k.into(), g, Bytes::from(vec![b'x'; 89]), None);
        }
        assert!(c.get("a").is_some()); // a is now the most recently used
        c.put("i".into(), g, Bytes::from(vec![b'x'; 89]), None);
        assert!(c.get("a").is_some());
        assert!(c.get("b").is_none(), "b was the least recently used");
        assert!(c.lock().bytes <= 800);
        c.put("big".into(), g, Bytes::from(vec![b'x'; 98]), None);
        assert!(c.get("big").is_none());
    }

    #[test]
    fn answers_expire() {
        let c = ResultCache::new(1 << 20, Duration::from_millis(20));
        c.set_live(true);
        let g = c.generation().unwrap();
        c.put("a".into(), g, Bytes::from_static(b"x"), None);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(c.get("a"), None);
    }
}
