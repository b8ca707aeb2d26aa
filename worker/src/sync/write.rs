//! Writing records read from the site, shared by the scanner and the event follower. Writes go
//! through `storage::upsert_entities`, whose guards keep newer rows: a scan never retires a row
//! the follower has since revived with newer data, and never revives one the proxy retired
//! after the scan's read began.

use serde_json::Value;
use sgcache::plan::DbState;
use sgcache::sql::Tx;
use sgcache::storage::{self, ReadMark, StorageError, WriteOutcome, WriteSource};

/// Writes what a read that began `read_at` returned: `active` rows live, `retired` rows
/// retired, each only where the row holds that data or older and nobody wrote it since the
/// read began, unless the record is newer (`storage::WriteSource::Read`).
pub async fn write_read(
    tx: &mut Tx,
    state: &DbState,
    entity_type: &str,
    (active, retired): (&[Value], &[Value]),
    read_at: ReadMark,
) -> Result<WriteOutcome, StorageError> {
    // Every record is stored: a value a column cannot hold makes its field unservable instead
    // (storage::upsert_entities), so no row of a type is ever missing.
    let mut out = WriteOutcome::default();
    for (rows, retired) in [(active, false), (retired, true)] {
        if rows.is_empty() {
            continue;
        }
        let source = WriteSource::Read {
            at: read_at,
            retired,
        };
        let o = storage::upsert_entities(tx, state, entity_type, rows, source).await?;
        out.written += o.written;
        out.skipped += o.skipped;
        out.unstorable += o.unstorable;
    }
    Ok(out)
}

/// The cached entities `records` link to, by type. The site hides links to retired entities
/// on the other side without touching it (no event, no `updated_at`), so when an entity comes
/// back to life the rows linking to it are read again to get their full lists back.
pub fn link_targets(
    state: &DbState,
    entity_type: &str,
    records: &[&Value],
) -> std::collections::BTreeMap<String, Vec<i64>> {
    use sgcache::schema::Storage;
    let mut out: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    let link_fields: Vec<&String> = state
        .live_fields(entity_type)
        .filter(|(_, r)| matches!(r.storage(), Storage::EntityLink | Storage::MultiEntity))
        .map(|(n, _)| n)
        .collect();
    let mut push = |l: &Value| {
        if let (Some(t), Some(id)) = (
            l.get("type").and_then(Value::as_str),
            l.get("id").and_then(Value::as_i64),
        ) {
            if state.types.contains_key(t) {
                out.entry(t.to_string()).or_default().push(id);
            }
        }
    };
    for r in records {
        for f in &link_fields {
            match r.get(f.as_str()) {
                Some(Value::Array(a)) => a.iter().for_each(&mut push),
                Some(v @ Value::Object(_)) => push(v),
                _ => {}
            }
        }
    }
    for ids in out.values_mut() {
        ids.sort_unstable();
        ids.dedup();
    }
    out
}
