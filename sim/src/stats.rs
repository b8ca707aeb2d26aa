//! Request counters and a bounded request log, so tests can prove what reached the site.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub requests_total: u64,
    pub by_method: BTreeMap<String, u64>,
    pub by_entity_type: BTreeMap<String, u64>,
    /// Requests answered by an injected fault (503, timeout, site down).
    pub faulted: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RequestLogEntry {
    pub seq: u64,
    pub method: String,
    pub entity_type: Option<String>,
    /// `YYYY-MM-DDTHH:MM:SSZ` (wall clock).
    pub at: String,
}

#[derive(Debug, Default)]
pub struct Recorder {
    pub stats: Stats,
    pub log: VecDeque<RequestLogEntry>,
    next_seq: u64,
    capacity: usize,
}

impl Recorder {
    pub fn new(capacity: usize) -> Recorder {
        Recorder {
            capacity,
            ..Default::default()
        }
    }

    /// Counts one request; `types` are the entity types it names (several for a batch).
    pub fn record(&mut self, method: &str, types: &[String]) {
        self.stats.requests_total += 1;
        *self.stats.by_method.entry(method.to_string()).or_default() += 1;
        for t in types {
            *self.stats.by_entity_type.entry(t.clone()).or_default() += 1;
        }
        self.next_seq += 1;
        let entry = RequestLogEntry {
            seq: self.next_seq,
            method: method.to_string(),
            entity_type: (!types.is_empty()).then(|| types.join(",")),
            at: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        };
        if self.capacity > 0 {
            if self.log.len() == self.capacity {
                self.log.pop_front();
            }
            self.log.push_back(entry);
        }
    }

    pub fn reset(&mut self) {
        self.stats = Stats::default();
        self.log.clear();
    }

    /// The most recent `limit` entries, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<RequestLogEntry> {
        let skip = self.log.len().saturating_sub(limit);
        self.log.iter().skip(skip).cloned().collect()
    }
}
