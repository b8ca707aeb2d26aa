//! `_sgcache_trust`: what each trust class (see [`crate::trust`]) has earned, shared by every
//! proxy replica and kept across restarts. A class without a row is learning with no samples.
//! Created by `migrate` with the other state tables, and additively here for caches made
//! before; dropped with them when the cache is bound to another site (trust is per site).

use std::collections::BTreeMap;
use std::fmt;

use super::StorageError;
use crate::sql::{Db, SqlValue, Tx};
use crate::trust::TrustClass;

/// The table's name.
pub const TRUST_TABLE: &str = "_sgcache_trust";

/// The same DDL on both dialects (`BIGINT` is `INTEGER` affinity on SQLite).
pub(super) const CREATE_TRUST: &str = "CREATE TABLE IF NOT EXISTS \"_sgcache_trust\" \
     (class TEXT PRIMARY KEY, state TEXT NOT NULL, samples BIGINT NOT NULL DEFAULT 0, \
     checks BIGINT NOT NULL DEFAULT 0, differences BIGINT NOT NULL DEFAULT 0, \
     served BIGINT NOT NULL DEFAULT 0, detail TEXT, changed_ms BIGINT)";

/// Where a class stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrustState {
    /// Its reads go to the site and are compared with the cache's answers.
    #[default]
    Learning,
    /// Its reads are answered from the cache (and re-checked now and then).
    Trusted,
    /// A difference was found: its reads go to the site until a person resets it.
    Off,
}

impl TrustState {
    pub fn name(self) -> &'static str {
        match self {
            TrustState::Learning => "learning",
            TrustState::Trusted => "trusted",
            TrustState::Off => "off",
        }
    }

    fn parse(s: &str) -> Option<TrustState> {
        [TrustState::Learning, TrustState::Trusted, TrustState::Off]
            .into_iter()
            .find(|t| t.name() == s)
    }
}

impl fmt::Display for TrustState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One class's row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustRecord {
    pub state: TrustState,
    /// Checks that found the cache's answer identical to the site's.
    pub samples: i64,
    /// Checks completed (identical or not).
    pub checks: i64,
    /// Checks that found a difference (confirmed, see the proxy's trust module).
    pub differences: i64,
    /// Reads of the class answered from the cache, as flushed by the proxies.
    pub served: i64,
    /// What the last difference touched: type and field names, never values.
    pub detail: Option<String>,
    /// When the state last changed (unix ms).
    pub changed_ms: Option<i64>,
}

/// Creates the table if it is missing: checked first, since the proxies write here several
/// times a minute and PostgreSQL logs an "already exists" notice for every `IF NOT EXISTS`.
async fn ensure_table(tx: &mut Tx) -> Result<(), StorageError> {
    if super::site_binding::table_exists(tx, TRUST_TABLE).await? {
        return Ok(());
    }
    let mut sql = tx.sql();
    sql.push(CREATE_TRUST);
    tx.execute(&sql).await?;
    Ok(())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn text(c: TrustClass) -> SqlValue {
    SqlValue::Text(c.name().to_string())
}

/// Every class with a row; classes this build does not know (a newer sgcache wrote them) are
/// left out.
pub async fn read_trust(db: &Db) -> Result<BTreeMap<TrustClass, TrustRecord>, StorageError> {
    let mut tx = db.begin().await?;
    // Read-only: a cache never migrated (or a reader without DDL rights) has no classes yet.
    if !super::site_binding::table_exists(&mut tx, TRUST_TABLE).await? {
        return Ok(BTreeMap::new());
    }
    let mut sql = tx.sql();
    sql.push(
        "SELECT class, state, samples, checks, differences, served, detail, changed_ms \
         FROM \"_sgcache_trust\"",
    );
    let rows = tx.fetch_all(&sql).await?;
    tx.commit().await?;
    let corrupt = |message: String| StorageError::CorruptState {
        table: TRUST_TABLE,
        message,
    };
    let int = |v: &SqlValue| match v {
        SqlValue::Int(n) => Ok(*n),
        other => Err(corrupt(format!("expected a number, found {other:?}"))),
    };
    let mut out = BTreeMap::new();
    for row in rows {
        let [SqlValue::Text(class), SqlValue::Text(state), samples, checks, differences, served, detail, changed] =
            row.as_slice()
        else {
            return Err(corrupt(format!("unexpected row {row:?}")));
        };
        let Ok(class) = class.parse::<TrustClass>() else {
            continue;
        };
        let state = TrustState::parse(state).ok_or_else(|| corrupt(format!("state {state:?}")))?;
        out.insert(
            class,
            TrustRecord {
                state,
                samples: int(samples)?,
                checks: int(checks)?,
                differences: int(differences)?,
                served: int(served)?,
                detail: match detail {
                    SqlValue::Text(t) => Some(t.clone()),
                    _ => None,
                },
                changed_ms: match changed {
                    SqlValue::Int(n) => Some(*n),
                    _ => None,
                },
            },
        );
    }
    Ok(out)
}

/// Counts a check that found the answers identical; a learning class with `needed` such
/// samples becomes trusted. Returns the class's state after the count.
pub async fn record_match(
    db: &Db,
    class: TrustClass,
    needed: u32,
) -> Result<TrustState, StorageError> {
    let needed = SqlValue::Int(needed.max(1) as i64);
    let now = SqlValue::Int(now_ms());
    let mut tx = db.begin().await?;
    ensure_table(&mut tx).await?;
    let mut sql = tx.sql();
    sql.push(
        "INSERT INTO \"_sgcache_trust\" AS t (class, state, samples, checks, changed_ms) VALUES (",
    )
    .push_bind(text(class))
    .push(", CASE WHEN 1 >= ")
    .push_bind(needed.clone())
    .push(" THEN 'trusted' ELSE 'learning' END, 1, 1, ")
    .push_bind(now.clone())
    // An off class stays off (a check that began before it was turned off may end after).
    .push(
        ") ON CONFLICT (class) DO UPDATE SET checks = t.checks + 1, \
         samples = CASE WHEN t.state = 'off' THEN t.samples ELSE t.samples + 1 END, \
         changed_ms = CASE WHEN t.state = 'learning' AND t.samples + 1 >= ",
    )
    .push_bind(needed.clone())
    .push(" THEN ")
    .push_bind(now)
    .push(" ELSE t.changed_ms END, state = CASE WHEN t.state = 'learning' AND t.samples + 1 >= ")
    .push_bind(needed)
    .push(" THEN 'trusted' ELSE t.state END RETURNING state");
    let rows = tx.fetch_all(&sql).await?;
    tx.commit().await?;
    match rows.first().and_then(|r| r.first()) {
        Some(SqlValue::Text(s)) => TrustState::parse(s).ok_or_else(|| StorageError::CorruptState {
            table: TRUST_TABLE,
            message: format!("state {s:?}"),
        }),
        other => Err(StorageError::CorruptState {
            table: TRUST_TABLE,
            message: format!("no state returned: {other:?}"),
        }),
    }
}

/// Turns a class off after a confirmed difference; `detail` names what differed (type and
/// field names, never values).
pub async fn record_difference(
    db: &Db,
    class: TrustClass,
    detail: &str,
) -> Result<(), StorageError> {
    let now = SqlValue::Int(now_ms());
    let detail = SqlValue::Text(detail.to_string());
    let mut tx = db.begin().await?;
    ensure_table(&mut tx).await?;
    let mut sql = tx.sql();
    sql.push(
        "INSERT INTO \"_sgcache_trust\" AS t \
         (class, state, checks, differences, detail, changed_ms) VALUES (",
    )
    .push_bind(text(class))
    .push(", 'off', 1, 1, ")
    .push_bind(detail.clone())
    .push(", ")
    .push_bind(now.clone())
    .push(
        ") ON CONFLICT (class) DO UPDATE SET state = 'off', checks = t.checks + 1, \
         differences = t.differences + 1, detail = ",
    )
    .push_bind(detail)
    .push(", changed_ms = ")
    .push_bind(now);
    tx.execute(&sql).await?;
    tx.commit().await?;
    Ok(())
}

/// Adds reads answered from the cache to each class's `served`.
pub async fn add_served(db: &Db, served: &[(TrustClass, u64)]) -> Result<(), StorageError> {
    if served.iter().all(|(_, n)| *n == 0) {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    ensure_table(&mut tx).await?;
    for (class, n) in served.iter().filter(|(_, n)| *n > 0) {
        let n = SqlValue::Int(*n as i64);
        let mut sql = tx.sql();
        sql.push("INSERT INTO \"_sgcache_trust\" AS t (class, state, served) VALUES (")
            .push_bind(text(*class))
            .push(", 'learning', ")
            .push_bind(n.clone())
            .push(") ON CONFLICT (class) DO UPDATE SET served = t.served + ")
            .push_bind(n);
        tx.execute(&sql).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Puts classes back to learning with no samples (a person's decision after a difference was
/// understood); `None` resets every class. Returns how many rows changed.
pub async fn reset_trust(db: &Db, class: Option<TrustClass>) -> Result<u64, StorageError> {
    let mut tx = db.begin().await?;
    ensure_table(&mut tx).await?;
    let mut sql = tx.sql();
    sql.push("UPDATE \"_sgcache_trust\" SET state = 'learning', samples = 0, detail = NULL, changed_ms = ")
        .push_bind(SqlValue::Int(now_ms()));
    if let Some(c) = class {
        sql.push(" WHERE class = ").push_bind(text(c));
    }
    let n = tx.execute(&sql).await?;
    tx.commit().await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::tests::Scratch;
    use crate::sql::Dialect;

    async fn learns_turns_off_and_resets(dialect: Dialect) {
        let scratch = Scratch::new(dialect).await;
        let db = &scratch.db;
        assert!(read_trust(db).await.unwrap().is_empty());
        let c = TrustClass::SortText;
        assert_eq!(record_match(db, c, 3).await.unwrap(), TrustState::Learning);
        assert_eq!(record_match(db, c, 3).await.unwrap(), TrustState::Learning);
        assert_eq!(record_match(db, c, 3).await.unwrap(), TrustState::Trusted);
        add_served(db, &[(c, 5), (TrustClass::InLast, 0)])
            .await
            .unwrap();
        add_served(db, &[(c, 2)]).await.unwrap();
        let rows = read_trust(db).await.unwrap();
        let r = &rows[&c];
        assert_eq!(
            (r.state, r.samples, r.checks, r.served),
            (TrustState::Trusted, 3, 3, 7)
        );
        assert!(!rows.contains_key(&TrustClass::InLast));

        record_difference(db, c, "Shot: code").await.unwrap();
        // A check that ends after the class was turned off does not turn it back on.
        assert_eq!(record_match(db, c, 1).await.unwrap(), TrustState::Off);
        let r = &read_trust(db).await.unwrap()[&c];
        assert_eq!((r.state, r.differences), (TrustState::Off, 1));
        assert_eq!(r.detail.as_deref(), Some("Shot: code"));

        record_difference(db, TrustClass::InLast, "Version: created_at")
            .await
            .unwrap();
        assert_eq!(reset_trust(db, Some(c)).await.unwrap(), 1);
        let rows = read_trust(db).await.unwrap();
        assert_eq!(
            (rows[&c].state, rows[&c].samples),
            (TrustState::Learning, 0)
        );
        assert_eq!(rows[&TrustClass::InLast].state, TrustState::Off);
        assert_eq!(reset_trust(db, None).await.unwrap(), 2);
        assert_eq!(
            read_trust(db).await.unwrap()[&TrustClass::InLast].state,
            TrustState::Learning
        );
        scratch.drop().await;
    }

    #[tokio::test]
    async fn trust_state_on_sqlite() {
        learns_turns_off_and_resets(Dialect::Sqlite).await;
    }

    #[tokio::test]
    async fn trust_state_on_postgres() {
        learns_turns_off_and_resets(Dialect::Postgres).await;
    }
}
