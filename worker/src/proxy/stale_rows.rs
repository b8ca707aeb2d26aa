//! Passed-through answers refresh what they show is stale. A read the site answered (it passed
//! through) may hold rows of a cached type; when one of them has a cached field whose value
//! differs from the cache's copy and an `updated_at` newer than the cache's, the cache is
//! behind for that row (a write that logged no event, and the scanner has not come by yet).
//! Such rows are re-read from the site with the cache's own credentials and written through
//! the usual path ([`super::refresh`]): the client's answer itself is never stored, since
//! another principal may see less. Without the cache's own credentials nothing is refreshed
//! (counted in `sgcache_proxy_refreshes_skipped_total`).
//!
//! Bounded: at most [`LOOKS_PER_SECOND`] answers are compared with the cache (one cache
//! query each) and [`REFRESHES_PER_SECOND`] refresh reads sent, per replica; the rest are left
//! to the event follower and the scanner. Refreshed rows are counted in
//! `sgcache_proxy_passthrough_refreshed_entities_total`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use sgcache::api3::ReadRequest;
use sgcache::query::{plan_read_at, Catalog};
use tracing::Instrument;

use super::refresh::{refresh, Missing};
use super::site::SiteResponse;
use super::AppState;

/// Passed-through answers compared with the cache per second.
const LOOKS_PER_SECOND: f64 = 5.0;

/// Refresh reads sent to the site per second.
const REFRESHES_PER_SECOND: f64 = 1.0;

/// Rows of one answer compared at most (one page of the cache's copy).
const MAX_ROWS: usize = 500;

/// A token bucket (burst of one second's worth).
struct Rate {
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl Rate {
    fn new(per_second: f64) -> Mutex<Rate> {
        Mutex::new(Rate {
            per_second,
            tokens: per_second,
            at: Instant::now(),
        })
    }

    fn take(m: &Mutex<Rate>) -> bool {
        let mut r = m.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        r.tokens = (r.tokens + now.duration_since(r.at).as_secs_f64() * r.per_second)
            .min(r.per_second.max(1.0));
        r.at = now;
        if r.tokens >= 1.0 {
            r.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The limits of one replica.
pub struct StaleRows {
    looks: Mutex<Rate>,
    refreshes: Mutex<Rate>,
}

impl Default for StaleRows {
    fn default() -> Self {
        StaleRows {
            looks: Rate::new(LOOKS_PER_SECOND),
            refreshes: Rate::new(REFRESHES_PER_SECOND),
        }
    }
}

/// Looks, in the background, at the rows of an answer the site gave to a passed-through read.
pub fn observe(state: &Arc<AppState>, resp: &SiteResponse) {
    if !resp.status.is_success() || state.cache.db().is_none() || !state.cache.ok() {
        return;
    }
    // Cheap before parsing: only `read` answers hold `entities`.
    if !contains(&resp.body, b"\"entities\"") || !contains(&resp.body, b"\"updated_at\"") {
        return;
    }
    if !Rate::take(&state.policy.stale_rows.looks) {
        return;
    }
    let (state, body) = (state.clone(), resp.body.clone());
    let task = async move {
        let Some(answer) = serde_json::from_slice::<Value>(&body).ok() else {
            return;
        };
        let Some(rows) = answer["results"]["entities"].as_array() else {
            return;
        };
        if let Err(e) = look(&state, rows).await {
            tracing::debug!(error = %e, "could not compare a passed-through answer with the cache");
        }
    };
    tokio::spawn(task.instrument(tracing::Span::current()));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn look(state: &AppState, rows: &[Value]) -> anyhow::Result<()> {
    let Some(db) = state.cache.db() else {
        return Ok(());
    };
    let catalog = state.cache.catalog();
    let Some((ty, fields)) = comparable(&catalog, rows) else {
        return Ok(());
    };
    let site: Vec<&Map<String, Value>> = rows
        .iter()
        .filter_map(Value::as_object)
        .take(MAX_ROWS)
        .collect();
    let ids: Vec<i64> = site.iter().filter_map(|r| r.get("id")?.as_i64()).collect();
    let cached = cached_rows(state, db, &catalog, &ty, &fields, &ids).await?;
    let stale = stale_ids(&site, &cached, &fields);
    if stale.is_empty() {
        return Ok(());
    }
    if !Rate::take(&state.policy.stale_rows.refreshes) {
        tracing::debug!(entity_type = %ty, entities = stale.len(), "stale rows seen; refresh rate spent, left to the scanner");
        return Ok(());
    }
    let n = refresh(state, db, &ty, &stale, Missing::Keep).await?;
    if n > 0 {
        state.cache.results.invalidate();
        state
            .telemetry
            .metrics
            .passthrough_refreshed
            .inc_by(n as u64);
        tracing::debug!(entity_type = %ty, entities = n, "refreshed rows a passed-through answer showed stale");
    }
    Ok(())
}

/// The rows' type, when it is cached and ready, and the fields of the rows the cache holds
/// ready (`updated_at` among them; deep fields are left out).
fn comparable(catalog: &Catalog, rows: &[Value]) -> Option<(String, Vec<String>)> {
    let first = rows.first()?.as_object()?;
    let ty = first.get("type")?.as_str()?;
    let cat = catalog.ready_type(ty)?;
    cat.ready_field("updated_at")?;
    let fields: Vec<String> = first
        .keys()
        .filter(|k| !k.contains('.') && *k != "type")
        .filter(|k| cat.ready_field(k).is_some())
        .cloned()
        .collect();
    fields
        .iter()
        .any(|f| f != "id" && f != "updated_at")
        .then(|| (ty.to_string(), fields))
}

/// The cache's copy of `ids`, answered as the cache would answer the read (links named, values
/// rendered as the site renders them), active or retired.
async fn cached_rows(
    state: &AppState,
    db: &sgcache::sql::Db,
    catalog: &Catalog,
    ty: &str,
    fields: &[String],
    ids: &[i64],
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for return_only in ["active", "retired"] {
        let payload = json!({
            "type": ty,
            "filters": {"logical_operator": "and", "conditions": [
                {"path": "id", "relation": "in", "values": ids}]},
            "return_fields": fields,
            "return_only": return_only,
        });
        let req = ReadRequest::parse(&payload).map_err(|e| anyhow::anyhow!(e.message))?;
        let plan = plan_read_at(&req, catalog, db.dialect(), state.upstream.clock.now())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let answer = plan.run(db).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(rows) = answer["entities"].as_array() {
            out.extend(rows.iter().cloned());
        }
    }
    Ok(out)
}

/// Ids whose row in the site's answer differs from the cache's copy in a compared field and
/// carries a newer `updated_at` (a row the cache lacks is the follower's and scanner's to add).
fn stale_ids(site: &[&Map<String, Value>], cached: &[Value], fields: &[String]) -> Vec<i64> {
    let updated = |r: &Map<String, Value>| -> Option<DateTime<Utc>> {
        r.get("updated_at")?.as_str()?.parse().ok()
    };
    let mut out = BTreeSet::new();
    for s in site {
        let Some(id) = s.get("id").and_then(Value::as_i64) else {
            continue;
        };
        let Some(c) = cached
            .iter()
            .filter_map(Value::as_object)
            .find(|c| c.get("id").and_then(Value::as_i64) == Some(id))
        else {
            continue;
        };
        // `updated_at` alone says the row changed, not that what the cache shows is behind.
        let differs = fields
            .iter()
            .filter(|f| !matches!(f.as_str(), "id" | "updated_at"))
            .any(|f| s.get(f.as_str()) != c.get(f.as_str()));
        let newer = match (updated(s), updated(c)) {
            (Some(site), Some(cache)) => site > cache,
            (Some(_), None) => true,
            _ => false,
        };
        if differs && newer {
            out.insert(id);
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn only_rows_that_differ_and_are_newer_are_stale() {
        let fields: Vec<String> = ["id", "code", "updated_at"].map(String::from).into();
        let site = [
            // Newer and different: stale.
            row(
                json!({"type": "Shot", "id": 1, "code": "b", "updated_at": "2024-05-02T00:00:00Z"}),
            ),
            // Different but older: the cache is ahead (a write it saw first).
            row(
                json!({"type": "Shot", "id": 2, "code": "b", "updated_at": "2024-04-01T00:00:00Z"}),
            ),
            // Newer, same values: nothing the cache shows is behind.
            row(
                json!({"type": "Shot", "id": 3, "code": "a", "updated_at": "2024-05-02T00:00:00Z"}),
            ),
            // Not cached: the follower's and scanner's.
            row(
                json!({"type": "Shot", "id": 4, "code": "a", "updated_at": "2024-05-02T00:00:00Z"}),
            ),
        ];
        let cached = vec![
            json!({"type": "Shot", "id": 1, "code": "a", "updated_at": "2024-05-01T00:00:00Z"}),
            json!({"type": "Shot", "id": 2, "code": "a", "updated_at": "2024-05-01T00:00:00Z"}),
            json!({"type": "Shot", "id": 3, "code": "a", "updated_at": "2024-05-01T00:00:00Z"}),
        ];
        let refs: Vec<&Map<String, Value>> = site.iter().collect();
        assert_eq!(stale_ids(&refs, &cached, &fields), vec![1]);
    }

    #[test]
    fn the_rate_refills() {
        let r = Rate::new(2.0);
        assert!(Rate::take(&r) && Rate::take(&r));
        assert!(!Rate::take(&r));
        r.lock().unwrap().at -= std::time::Duration::from_secs(1);
        assert!(Rate::take(&r));
    }
}
