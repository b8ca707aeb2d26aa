//! Reading entities from the site for the scanner and the event follower: keyset pages
//! (`id > cursor`, id ascending, so a page never shifts under concurrent writes and a crash
//! resumes from the last id), fetches by id, and retries of transient failures with backoff.

use std::time::Duration;

use std::sync::OnceLock;

use serde_json::{json, Value};
use sgcache::site::{SiteClient, SiteError};
use sgcache::sql::Db;
use sgcache::storage;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;

/// Why a read gave up.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("stopped")]
    Stopped,
    #[error(transparent)]
    Site(#[from] SiteError),
    #[error("unexpected read answer: {0}")]
    BadAnswer(String),
}

/// True for failures worth retrying: the site is down, overloaded or answered garbage.
pub fn is_transient(e: &SiteError) -> bool {
    match e {
        SiteError::Unreachable { .. } | SiteError::BadBody { .. } => true,
        SiteError::Status { status, .. } => *status >= 500 || *status == 429,
        SiteError::Api { .. } | SiteError::Schema(_) => false,
    }
}

/// `active` or `retired` rows (a read never returns both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Active,
    Retired,
}

impl Liveness {
    fn as_str(self) -> &'static str {
        match self {
            Liveness::Active => "active",
            Liveness::Retired => "retired",
        }
    }
}

/// A condition in API3 wire form.
pub fn cond(path: &str, relation: &str, values: Value) -> Value {
    json!({"path": path, "relation": relation, "values": values})
}

/// Reads from the site as the spec's script.
pub struct SiteReader {
    client: SiteClient,
    stop: CancellationToken,
    /// Entities per page (the site caps it at its own maximum, usually 500).
    pub page_size: u32,
    max_backoff: Duration,
    /// The cache, where a field the site no longer has is marked unservable.
    db: OnceLock<Db>,
}

/// The requested field an API error says the site does not have, if any. *Inferred* spelling:
/// the test site says `Field 'x' does not exist on entity type 'T'`; the protocol doc only says
/// such errors mention the field (section 8), so any message naming a requested field next to
/// "not exist" or "unknown" counts.
fn gone_field<'a>(message: &str, fields: &'a [String]) -> Option<&'a String> {
    let m = message.to_lowercase();
    if !(m.contains("not exist") || m.contains("unknown")) {
        return None;
    }
    fields
        .iter()
        .filter(|f| f.as_str() != "id")
        .find(|f| message.contains(&format!("'{f}'")) || message.contains(&format!(" {f} ")))
}

impl SiteReader {
    pub fn new(client: SiteClient, stop: CancellationToken, page_size: u32) -> SiteReader {
        SiteReader {
            client,
            stop,
            page_size: page_size.clamp(1, 500),
            max_backoff: Duration::from_secs(10),
            db: OnceLock::new(),
        }
    }

    /// Lets reads mark fields the site no longer has unservable in `db` (and go on without
    /// them) instead of failing every read of the type until the next migrate.
    pub fn attach_db(&self, db: Db) {
        let _ = self.db.set(db);
    }

    /// Marks `entity_type.field` unservable: the site answered that it does not have it.
    async fn field_gone(&self, entity_type: &str, field: &str) -> Result<(), ReadError> {
        let Some(db) = self.db.get() else {
            tracing::warn!(entity_type, field, "the site no longer has a cached field");
            return Ok(());
        };
        let mark = async {
            let mut tx = db.begin().await?;
            let marked = storage::mark_unservable(
                &mut tx,
                entity_type,
                field,
                "the site no longer has this field",
                0,
            )
            .await?;
            tx.commit().await?;
            Ok::<_, storage::StorageError>(marked)
        };
        let marked = mark.await.map_err(|e| {
            ReadError::BadAnswer(format!("marking {entity_type}.{field} unservable: {e}"))
        })?;
        // Every read of the type meets it until the next migrate: said once, not per read.
        if marked {
            tracing::warn!(
                entity_type,
                field,
                "the site no longer has a cached field; it is unservable until the next migrate"
            );
        } else {
            tracing::debug!(
                entity_type,
                field,
                "read again without a field the site deleted"
            );
        }
        Ok(())
    }

    /// The site's schema (no retry: the callers check again on their next round).
    pub async fn schema(&self) -> Result<sgcache::schema::SiteSchema, ReadError> {
        Ok(self.client.schema().await?)
    }

    /// Lowers the page size to the site's `api_max_entities_per_page` (500 when `info` does not
    /// say). A site that caps pages below ours would otherwise return short pages, and a short
    /// page reads as the last one: the scan would stop early and miss rows.
    pub async fn fit_page_size_to_site(&mut self) -> Result<(), ReadError> {
        let info = self.call("info", &Value::Null).await?;
        let cap = info
            .get("api_max_entities_per_page")
            .and_then(Value::as_u64)
            .unwrap_or(500);
        self.page_size = self
            .page_size
            .min(u32::try_from(cap).unwrap_or(u32::MAX).max(1));
        Ok(())
    }

    /// Calls `method`, retrying transient failures until the site answers or `stop` fires.
    pub async fn call(&self, method: &str, payload: &Value) -> Result<Value, ReadError> {
        let mut backoff = Backoff::new(Duration::from_millis(200), self.max_backoff);
        loop {
            if self.stop.is_cancelled() {
                return Err(ReadError::Stopped);
            }
            match self.client.call(method, payload.clone()).await {
                Ok(v) => {
                    if backoff.failures > 0 {
                        tracing::info!(failures = backoff.failures, "site reachable again");
                    }
                    return Ok(v);
                }
                Err(e) if is_transient(&e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, failures = backoff.failures,
                        retry_in_ms = delay.as_millis() as u64, "site read failed; backing off");
                    tokio::select! {
                        _ = self.stop.cancelled() => return Err(ReadError::Stopped),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// One `read`: the entities of page 1 of `conditions` sorted by `sort` (id ascending when
    /// `None`), at most `limit` of them.
    pub async fn read(
        &self,
        entity_type: &str,
        fields: &[String],
        conditions: Vec<Value>,
        liveness: Liveness,
        sort: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<Value>, ReadError> {
        let mut fields = fields.to_vec();
        loop {
            let once = self
                .read_once(
                    entity_type,
                    &fields,
                    conditions.clone(),
                    liveness,
                    sort,
                    limit,
                )
                .await;
            let Err(ReadError::Site(SiteError::Api { message, .. })) = &once else {
                return once;
            };
            // A field deleted (or renamed) on the site: every record is still read and stored,
            // without it, and the field is passed through (issue 10, retyped or deleted fields).
            let Some(gone) = gone_field(message, &fields).cloned() else {
                return once;
            };
            self.field_gone(entity_type, &gone).await?;
            fields.retain(|f| *f != gone);
        }
    }

    async fn read_once(
        &self,
        entity_type: &str,
        fields: &[String],
        conditions: Vec<Value>,
        liveness: Liveness,
        sort: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<Value>, ReadError> {
        let (field, direction) = sort.unwrap_or(("id", "asc"));
        let payload = json!({
            "type": entity_type,
            "filters": {"logical_operator": "and", "conditions": conditions},
            "return_fields": fields,
            "return_only": liveness.as_str(),
            "paging": {"entities_per_page": limit, "current_page": 1},
            "return_paging_info": false,
            "sorts": [{"field_name": field, "direction": direction}],
            "api_return_image_urls": true,
        });
        let answer = self.call("read", &payload).await?;
        match answer {
            Value::Object(mut m) => match m.remove("entities") {
                Some(Value::Array(a)) => Ok(a),
                _ => Err(ReadError::BadAnswer(format!(
                    "read of {entity_type} returned no entities list"
                ))),
            },
            _ => Err(ReadError::BadAnswer(format!(
                "read of {entity_type} returned no entities list"
            ))),
        }
    }

    /// The next keyset page: rows with `after < id [<= through]` matching `extra`, id ascending.
    pub async fn page_after(
        &self,
        entity_type: &str,
        fields: &[String],
        after: i64,
        through: Option<i64>,
        extra: &[Value],
        liveness: Liveness,
    ) -> Result<Vec<Value>, ReadError> {
        let mut conditions = vec![cond("id", "greater_than", json!([after]))];
        if let Some(t) = through {
            conditions.push(cond("id", "less_than", json!([t + 1])));
        }
        conditions.extend(extra.iter().cloned());
        self.read(
            entity_type,
            fields,
            conditions,
            liveness,
            None,
            self.page_size,
        )
        .await
    }

    /// The current records of `ids`, active and retired: (active, retired).
    pub async fn fetch_ids(
        &self,
        entity_type: &str,
        fields: &[String],
        ids: &[i64],
    ) -> Result<(Vec<Value>, Vec<Value>), ReadError> {
        let mut sorted: Vec<i64> = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let (mut active, mut retired) = (Vec::new(), Vec::new());
        for chunk in sorted.chunks(self.page_size as usize) {
            let (lo, hi) = (chunk[0], chunk[chunk.len() - 1]);
            // The id range lets the site narrow its scan; `in` alone may not.
            let conditions = vec![
                cond("id", "between", json!([lo, hi])),
                cond("id", "in", json!(chunk)),
            ];
            for (liveness, out) in [
                (Liveness::Active, &mut active),
                (Liveness::Retired, &mut retired),
            ] {
                let rows = self
                    .read(
                        entity_type,
                        fields,
                        conditions.clone(),
                        liveness,
                        None,
                        self.page_size,
                    )
                    .await?;
                out.extend(rows);
            }
        }
        Ok((active, retired))
    }

    /// The newest EventLogEntry id, or None when the site has no events yet.
    pub async fn newest_event_id(&self) -> Result<Option<i64>, ReadError> {
        let rows = self
            .read(
                "EventLogEntry",
                &["id".to_string()],
                vec![],
                Liveness::Active,
                Some(("id", "desc")),
                1,
            )
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.get("id"))
            .and_then(Value::as_i64))
    }
}
