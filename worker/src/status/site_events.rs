//! How far the event follower is behind the site: the site's newest EventLogEntry id, and the
//! age of the oldest event the cache has not applied yet. One attempt each, no retries: a
//! status display must answer even when the site does not.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sgcache::site::{SiteClient, SiteError};

use super::FollowerStatus;

/// Fills the site's figures of `events` (newest id, events behind, lag), or `site_error`.
pub async fn fill(site: &SiteClient, events: &mut FollowerStatus, now: DateTime<Utc>) {
    match read(site, events.applied_event_id).await {
        Ok((newest, oldest_pending)) => {
            events.site_newest_event_id = newest;
            let applied = events.applied_event_id.unwrap_or(0);
            events.events_behind = Some(newest.map_or(0, |n| (n - applied).max(0)));
            events.lag_seconds = Some(match oldest_pending {
                Some(created) => (now - created).num_seconds().max(0),
                None => 0,
            });
        }
        Err(e) => events.site_error = Some(e.to_string()),
    }
}

/// The newest event id, and when the first event after `applied` was created (None when the
/// cache has every event).
async fn read(
    site: &SiteClient,
    applied: Option<i64>,
) -> Result<(Option<i64>, Option<DateTime<Utc>>), SiteError> {
    let newest = first_event(site, vec![], "desc").await?;
    let newest_id = newest
        .as_ref()
        .and_then(|e| e.get("id"))
        .and_then(Value::as_i64);
    let applied = applied.unwrap_or(0);
    if newest_id.is_none_or(|n| n <= applied) {
        return Ok((newest_id, None));
    }
    let after = vec![json!({"path": "id", "relation": "greater_than", "values": [applied]})];
    let oldest = first_event(site, after, "asc").await?;
    let created = oldest
        .as_ref()
        .and_then(|e| e.get("created_at"))
        .and_then(Value::as_str)
        .and_then(sgcache::storage::parse_date_time);
    Ok((newest_id, created))
}

/// The first EventLogEntry matching `conditions` in id order `direction`.
async fn first_event(
    site: &SiteClient,
    conditions: Vec<Value>,
    direction: &str,
) -> Result<Option<Value>, SiteError> {
    let payload = json!({
        "type": "EventLogEntry",
        "filters": {"logical_operator": "and", "conditions": conditions},
        "return_fields": ["id", "created_at"],
        "return_only": "active",
        "paging": {"entities_per_page": 1, "current_page": 1},
        "return_paging_info": false,
        "sorts": [{"field_name": "id", "direction": direction}],
    });
    let answer = site.call("read", payload).await?;
    Ok(answer
        .get("entities")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .cloned())
}
