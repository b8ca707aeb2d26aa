//! Where every answer sits in its field's history: writers and readers for the failover
//! tests and the crash trials. Each (shot, field) has one writer, and each writer writes
//! unique increasing values, so any value read names the write it came from:
//!
//! - `description` by the site's script with events (`e<n>`): the event follower's work;
//! - `sg_cut_in` by the script without events (`<n>`): only a scan brings it in;
//! - `code` through the proxy (`p<n>`): write-through, read-your-writes.
//!
//! Readers read every shot's three fields through the proxy, noting when each read began and
//! ended and whether the cache or the site answered. [`History::judge`] then finds answers
//! older than one already given (a regression) and answers from the cache older than the
//! history allows (a frozen copy served as fresh).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sgcache::site::SiteClient;
use sgcache::spec::SiteConnection;
use tokio_util::sync::CancellationToken;

/// The fields written, and how.
pub const FIELDS: [&str; 3] = ["description", "sg_cut_in", "code"];

/// A regression smaller than this is the follower's poll and the proxy's switch from the
/// site back to the cache (an answer from the site may be a poll newer than the cache that
/// answers next); anything older counts.
pub const REGRESSION_TOLERANCE: Duration = Duration::from_secs(1);

/// The value's place in its field's history (-1: a value no writer of the load wrote).
pub fn index(field: &str, v: &Value) -> i64 {
    match field {
        "sg_cut_in" => v.as_i64().filter(|n| *n >= 1_000_000).unwrap_or(-1),
        "description" => v
            .as_str()
            .and_then(|s| s.strip_prefix('e'))
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1),
        _ => v
            .as_str()
            .and_then(|s| s.strip_prefix('p'))
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1),
    }
}

/// The value of write `n` of `field`.
fn value(field: &str, n: i64) -> Value {
    match field {
        "sg_cut_in" => json!(n),
        "description" => json!(format!("e{n}")),
        _ => json!(format!("p{n}")),
    }
}

/// One answered read: when it began and ended, whether from the cache, each (shot, field)'s
/// index.
#[derive(Clone, Debug)]
pub struct Read {
    pub started: Instant,
    pub finished: Instant,
    pub cache: bool,
    pub values: Vec<((i64, &'static str), i64)>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (shot, field) → (index, when the write was answered).
    writes: BTreeMap<(i64, &'static str), Vec<(i64, Instant)>>,
    reads: Vec<Read>,
    write_errors: usize,
    read_errors: usize,
}

/// Everything written and read.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

/// What [`History::judge`] found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub reads: usize,
    pub cache_reads: usize,
    pub site_reads: usize,
    pub writes: usize,
    pub write_errors: usize,
    pub read_errors: usize,
    /// Answers older than one given before they were asked for (beyond the tolerance).
    pub regressions: Vec<String>,
    /// Of those, any regression at all (no tolerance), for the record.
    pub strict_regressions: usize,
    /// The strict regressions per field and by who answered (`cache`/`site`): how many, and
    /// the most out of date one (how long before the read began its value was superseded).
    pub strict_by_field: BTreeMap<(&'static str, &'static str), (usize, Duration)>,
    /// Answers from the cache older than `bound` allows.
    pub stale: Vec<String>,
    /// Reads after a write through the proxy that answered something older than it.
    pub read_your_writes: Vec<String>,
    /// Per field: the oldest a cache answer was (how long after the next write completed
    /// the read began).
    pub max_staleness: BTreeMap<&'static str, Duration>,
}

impl Verdict {
    /// Nothing wrong.
    pub fn clean(&self) -> bool {
        self.regressions.is_empty() && self.stale.is_empty() && self.read_your_writes.is_empty()
    }
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads that began in `[from, to)`: (from the cache, from the site).
    pub fn reads_between(&self, from: Instant, to: Instant) -> (usize, usize) {
        let inner = self.lock();
        let within = inner
            .reads
            .iter()
            .filter(|r| r.started >= from && r.started < to);
        within.fold(
            (0, 0),
            |(c, s), r| if r.cache { (c + 1, s) } else { (c, s + 1) },
        )
    }

    /// How long after `at` the first read answered from the cache began.
    pub fn first_cache_read_after(&self, at: Instant) -> Option<Duration> {
        self.lock()
            .reads
            .iter()
            .filter(|r| r.cache && r.started >= at)
            .map(|r| r.started - at)
            .min()
    }

    /// Finds regressions, stale cache answers (older than `bound(field)` allows) and reads
    /// older than a write through the proxy answered before they began.
    pub fn judge(&self, bound: impl Fn(&str) -> Duration) -> Verdict {
        let inner = self.lock();
        let mut v = Verdict {
            reads: inner.reads.len(),
            cache_reads: inner.reads.iter().filter(|r| r.cache).count(),
            writes: inner.writes.values().map(Vec::len).sum(),
            write_errors: inner.write_errors,
            read_errors: inner.read_errors,
            ..Verdict::default()
        };
        v.site_reads = v.reads - v.cache_reads;
        // When each write's successor was answered: the moment its value stopped being current.
        let superseded = |key: &(i64, &'static str), index: i64| -> Option<Instant> {
            inner
                .writes
                .get(key)?
                .iter()
                .filter(|(n, _)| *n > index)
                .map(|(_, at)| *at)
                .min()
        };
        // Per (shot, field): the answers in the order they ended, with the running maximum.
        let mut given: BTreeMap<(i64, &'static str), Vec<(Instant, i64)>> = BTreeMap::new();
        let mut by_end: Vec<&Read> = inner.reads.iter().collect();
        by_end.sort_by_key(|r| r.finished);
        for r in &by_end {
            for (key, n) in &r.values {
                let list = given.entry(*key).or_default();
                let high = list.last().map_or(*n, |(_, h)| (*h).max(*n));
                list.push((r.finished, high));
            }
        }
        for r in &inner.reads {
            for (key, n) in &r.values {
                let field = key.1;
                // The newest answer given before this read began.
                let before = given.get(key).and_then(|list| {
                    let i = list.partition_point(|(end, _)| *end < r.started);
                    i.checked_sub(1).map(|i| list[i].1)
                });
                if let Some(high) = before.filter(|h| h > n) {
                    v.strict_regressions += 1;
                    let older_by =
                        superseded(key, *n).map(|at| r.started.saturating_duration_since(at));
                    let path = if r.cache { "cache" } else { "site" };
                    let entry = v.strict_by_field.entry((field, path)).or_default();
                    entry.0 += 1;
                    entry.1 = entry.1.max(older_by.unwrap_or_default());
                    if older_by.is_some_and(|d| d > REGRESSION_TOLERANCE) {
                        v.regressions.push(format!(
                            "shot {} {field}: answered {n} ({}) after {high} had been given, {older_by:?} out of date",
                            key.0,
                            if r.cache { "cache" } else { "site" }
                        ));
                    }
                }
                if field == "code" {
                    let written = inner.writes.get(key).and_then(|w| {
                        w.iter()
                            .filter(|(_, at)| *at < r.started)
                            .map(|(i, _)| *i)
                            .max()
                    });
                    if let Some(w) = written.filter(|w| w > n) {
                        v.read_your_writes.push(format!(
                            "shot {} code: answered {n} ({}) after the proxy had answered the write of {w}",
                            key.0,
                            if r.cache { "cache" } else { "site" }
                        ));
                    }
                }
                if r.cache {
                    if let Some(at) = superseded(key, *n) {
                        let old = r.started.saturating_duration_since(at);
                        let max = v.max_staleness.entry(field).or_default();
                        *max = (*max).max(old);
                        if old > bound(field) {
                            v.stale.push(format!(
                                "shot {} {field}: the cache answered {n}, {old:?} after a newer value was written",
                                key.0
                            ));
                        }
                    }
                }
            }
        }
        v
    }
}

/// Writers and readers running until [`Load::stop`].
pub struct Load {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub history: Arc<History>,
}

/// Where the load writes and reads.
#[derive(Clone, Debug)]
pub struct Target {
    pub site_url: String,
    pub proxy_url: String,
    /// The shots written and read.
    pub shots: Vec<i64>,
    /// Pause between two writes of one writer, and between two reads of one reader.
    pub write_every: Duration,
    pub read_every: Duration,
    pub readers: usize,
}

fn site_client(url: &str, script: &str, key: &str) -> SiteClient {
    SiteClient::new(SiteConnection {
        url: url.into(),
        script_name: script.into(),
        api_key: key.into(),
        timeout: Duration::from_secs(30),
    })
    .expect("site client")
}

impl Load {
    /// Starts one writer per field and `target.readers` readers.
    pub fn start(target: Target) -> Load {
        let history = Arc::new(History::default());
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for field in FIELDS {
            tasks.push(tokio::spawn(write(
                field,
                target.clone(),
                history.clone(),
                stop.clone(),
            )));
        }
        for _ in 0..target.readers {
            tasks.push(tokio::spawn(read(
                target.clone(),
                history.clone(),
                stop.clone(),
            )));
        }
        Load {
            stop,
            tasks,
            history,
        }
    }

    /// Stops the writers and readers (each finishes what it is doing).
    pub async fn stop(self) -> Arc<History> {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.history
    }
}

/// Writes `field` of the shots in turn with increasing values.
async fn write(field: &'static str, t: Target, history: Arc<History>, stop: CancellationToken) {
    let http = reqwest::Client::new();
    let client = match field {
        "sg_cut_in" => site_client(&t.site_url, "silent_script", "silent_key"),
        _ => site_client(&t.site_url, "sgcache_test", "test_key"),
    };
    // sg_cut_in values start high so no seeded value is taken for one of ours.
    let mut n: i64 = if field == "sg_cut_in" { 1_000_000 } else { 0 };
    let mut turn = 0usize;
    while !stop.is_cancelled() {
        n += 1;
        let shot = t.shots[turn % t.shots.len()];
        turn += 1;
        let payload = json!({"type": "Shot", "id": shot,
            "fields": [{"field_name": field, "value": value(field, n)}]});
        let ok = if field == "code" {
            let body = json!({"method_name": "update", "params": [
                {"script_name": "sgcache_test", "script_key": "test_key"}, payload]});
            let url = format!("{}/api3/json", t.proxy_url);
            try_post(&http, &url, body.to_string())
                .await
                .is_some_and(|(status, _, answer)| {
                    status == 200 && answer.get("exception").is_none()
                })
        } else {
            client.call("update", payload).await.is_ok()
        };
        {
            let mut inner = history.inner.lock().unwrap_or_else(|e| e.into_inner());
            if ok {
                inner
                    .writes
                    .entry((shot, field))
                    .or_default()
                    .push((n, Instant::now()));
            } else {
                inner.write_errors += 1;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(t.write_every) => {}
        }
    }
}

/// Reads every shot's fields through the proxy until stopped.
async fn read(t: Target, history: Arc<History>, stop: CancellationToken) {
    let http = reqwest::Client::new();
    let body = json!({"method_name": "read", "params": [
        {"script_name": "sgcache_test", "script_key": "test_key"},
        {"type": "Shot", "filters": {"logical_operator": "and", "conditions": [
            {"path": "id", "relation": "in", "values": t.shots}]},
         "return_fields": FIELDS, "return_only": "active",
         "paging": {"current_page": 1, "entities_per_page": 50}}]})
    .to_string();
    let url = format!("{}/api3/json", t.proxy_url);
    while !stop.is_cancelled() {
        let started = Instant::now();
        let answered = try_post(&http, &url, body.clone()).await;
        let finished = Instant::now();
        {
            let mut inner = history.inner.lock().unwrap_or_else(|e| e.into_inner());
            match answered {
                Some((200, path, answer)) if answer["results"]["entities"].is_array() => {
                    let rows = answer["results"]["entities"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    let mut values = Vec::new();
                    for row in &rows {
                        let Some(shot) = row["id"].as_i64() else {
                            continue;
                        };
                        for field in FIELDS {
                            values.push(((shot, field), index(field, &row[field])));
                        }
                    }
                    inner.reads.push(Read {
                        started,
                        finished,
                        cache: path.as_deref() == Some("cache"),
                        values,
                    });
                }
                _ => inner.read_errors += 1,
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(t.read_every) => {}
        }
    }
}

/// POSTs an API3 request: status, `x-sgcache-path` and body; None when the proxy cannot be
/// reached (it may be restarting).
async fn try_post(
    http: &reqwest::Client,
    url: &str,
    body: String,
) -> Option<(u16, Option<String>, Value)> {
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(30))
        .body(body)
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let path = resp
        .headers()
        .get("x-sgcache-path")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let answer = resp.json().await.ok()?;
    Some((status, path, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(at: Instant, from: u64, to: u64, cache: bool, n: i64) -> Read {
        Read {
            started: at + Duration::from_millis(from),
            finished: at + Duration::from_millis(to),
            cache,
            values: vec![((1, "description"), n)],
        }
    }

    #[test]
    fn an_answer_older_than_one_given_before_is_found() {
        let t0 = Instant::now();
        let h = History::default();
        {
            let mut inner = h.lock();
            inner.writes.insert(
                (1, "description"),
                vec![(1, t0), (2, t0 + Duration::from_millis(100))],
            );
            inner.reads.push(read(t0, 200, 300, false, 2));
            // Older than what the site answered, the newer value written 2.9 s before.
            inner.reads.push(read(t0, 3_000, 3_010, true, 1));
            // Overlapping the site's read: not "already given".
            inner.reads.push(read(t0, 250, 260, true, 1));
        }
        let v = h.judge(|_| Duration::from_secs(10));
        assert_eq!(v.regressions.len(), 1, "{v:?}");
        assert_eq!(v.strict_regressions, 1);
        assert_eq!(
            v.strict_by_field,
            BTreeMap::from([(("description", "cache"), (1, Duration::from_millis(2_900)))])
        );
        assert!(v.stale.is_empty());
        let v = h.judge(|_| Duration::from_secs(2));
        assert_eq!(v.stale.len(), 1, "{v:?}");
    }
}
