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
     served BIGINT NOT NULL DEFAULT 0, detail TEXT, changed_ms BIGINT, last_check_ms BIGINT, \
     skipped_busy BIGINT NOT NULL DEFAULT 0, skipped_budget BIGINT NOT NULL DEFAULT 0)";

/// Columns added to the table since it was first released (same DDL on both dialects);
/// `migrate` adds them, and so does the first write to an older table.
pub(super) const ADDED_TRUST_COLUMNS: &[(&str, &str)] = &[
    ("last_check_ms", "BIGINT"),
    ("skipped_busy", "BIGINT NOT NULL DEFAULT 0"),
    ("skipped_budget", "BIGINT NOT NULL DEFAULT 0"),
];

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
    /// When a check of the class last ended, whatever its outcome (unix ms).
    pub last_check_ms: Option<i64>,
    /// Checks not run because too many ran at once on a replica.
    pub skipped_busy: i64,
    /// Checks not run because the site budget (`trust.maxSiteRate`) was spent.
    pub skipped_budget: i64,
}

/// What a replica saw of one class since its last flush: reads served from the cache,
/// checks skipped and when its last check ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrustProgress {
    pub served: u64,
    pub skipped_busy: u64,
    pub skipped_budget: u64,
    pub last_check_ms: Option<i64>,
}

impl TrustProgress {
    pub fn is_empty(&self) -> bool {
        *self == TrustProgress::default()
    }
}

/// Creates the table if it is missing: checked first, since the proxies write here several
/// times a minute and PostgreSQL logs an "already exists" notice for every `IF NOT EXISTS`.
async fn ensure_table(tx: &mut Tx) -> Result<(), StorageError> {
    // One query in the usual case: the newest column is there, so is the table.
    if super::state::has_column(tx, TRUST_TABLE, "last_check_ms").await? {
        return Ok(());
    }
    if super::site_binding::table_exists(tx, TRUST_TABLE).await? {
        // A table made before the progress columns: added here too, since a proxy may run
        // on a cache migrated by an older release.
        return super::state::add_columns(tx, TRUST_TABLE, ADDED_TRUST_COLUMNS).await;
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
    // A table made before the progress columns reads them as none yet.
    let progress = if super::state::has_column(&mut tx, TRUST_TABLE, "last_check_ms").await? {
        "last_check_ms, skipped_busy, skipped_budget"
    } else {
        "NULL, 0, 0"
    };
    let mut sql = tx.sql();
    sql.push(&format!(
        "SELECT class, state, samples, checks, differences, served, detail, changed_ms, \
         {progress} FROM \"_sgcache_trust\""
    ));
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
        let [SqlValue::Text(class), SqlValue::Text(state), samples, checks, differences, served, detail, changed, last_check, busy, budget] =
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
                last_check_ms: match last_check {
                    SqlValue::Int(n) => Some(*n),
                    _ => None,
                },
                skipped_busy: int(busy)?,
                skipped_budget: int(budget)?,
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
        "INSERT INTO \"_sgcache_trust\" AS t \
         (class, state, samples, checks, changed_ms, last_check_ms) VALUES (",
    )
    .push_bind(text(class))
    .push(", CASE WHEN 1 >= ")
    .push_bind(needed.clone())
    .push(" THEN 'trusted' ELSE 'learning' END, 1, 1, ")
    .push_bind(now.clone())
    .push(", ")
    .push_bind(now.clone())
    .push(") ON CONFLICT (class) DO UPDATE SET last_check_ms = ")
    .push_bind(now.clone())
    // An off class stays off (a check that began before it was turned off may end after).
    .push(
        ", checks = t.checks + 1, \
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
         (class, state, checks, differences, detail, changed_ms, last_check_ms) VALUES (",
    )
    .push_bind(text(class))
    .push(", 'off', 1, 1, ")
    .push_bind(detail.clone())
    .push(", ")
    .push_bind(now.clone())
    .push(", ")
    .push_bind(now.clone())
    .push(") ON CONFLICT (class) DO UPDATE SET last_check_ms = ")
    .push_bind(now.clone())
    .push(
        ", state = 'off', checks = t.checks + 1, \
         differences = t.differences + 1, detail = ",
    )
    .push_bind(detail)
    .push(", changed_ms = ")
    .push_bind(now);
    tx.execute(&sql).await?;
    tx.commit().await?;
    Ok(())
}

/// Adds what replicas saw of each class since their last flush: reads served from the cache,
/// skipped checks, and the end of their last check (the later one is kept).
pub async fn add_progress(
    db: &Db,
    progress: &[(TrustClass, TrustProgress)],
) -> Result<(), StorageError> {
    if progress.iter().all(|(_, p)| p.is_empty()) {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    ensure_table(&mut tx).await?;
    for (class, p) in progress.iter().filter(|(_, p)| !p.is_empty()) {
        let int = |n: u64| SqlValue::Int(n as i64);
        let last = p.last_check_ms.map_or(SqlValue::Null, SqlValue::Int);
        let mut sql = tx.sql();
        sql.push(
            "INSERT INTO \"_sgcache_trust\" AS t \
             (class, state, served, skipped_busy, skipped_budget, last_check_ms) VALUES (",
        )
        .push_bind(text(*class))
        .push(", 'learning', ")
        .push_bind(int(p.served))
        .push(", ")
        .push_bind(int(p.skipped_busy))
        .push(", ")
        .push_bind(int(p.skipped_budget))
        .push(", ")
        .push_bind(last.clone())
        .push(") ON CONFLICT (class) DO UPDATE SET served = t.served + ")
        .push_bind(int(p.served))
        .push(", skipped_busy = t.skipped_busy + ")
        .push_bind(int(p.skipped_busy))
        .push(", skipped_budget = t.skipped_budget + ")
        .push_bind(int(p.skipped_budget))
        .push(", last_check_ms = CASE WHEN t.last_check_ms IS NULL OR t.last_check_ms < ")
        .push_bind(last.clone())
        .push(" THEN ")
        .push_bind(last)
        .push(" ELSE t.last_check_ms END");
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
        let served = |n, busy, last| TrustProgress {
            served: n,
            skipped_busy: busy,
            skipped_budget: 1,
            last_check_ms: last,
        };
        add_progress(
            db,
            &[
                (c, served(5, 0, Some(1))),
                (TrustClass::InLast, TrustProgress::default()),
            ],
        )
        .await
        .unwrap();
        let checked = read_trust(db).await.unwrap()[&c].last_check_ms.unwrap();
        assert!(
            checked > 1_000,
            "a match's time is not replaced by an older flush"
        );
        add_progress(db, &[(c, served(2, 3, None))]).await.unwrap();
        let rows = read_trust(db).await.unwrap();
        let r = &rows[&c];
        assert_eq!(
            (r.state, r.samples, r.checks, r.served),
            (TrustState::Trusted, 3, 3, 7)
        );
        assert_eq!(
            (r.skipped_busy, r.skipped_budget, r.last_check_ms),
            (3, 2, Some(checked))
        );
        assert!(!rows.contains_key(&TrustClass::InLast));
        add_progress(db, &[(c, served(0, 0, Some(checked + 5)))])
            .await
            .unwrap();
        assert_eq!(
            read_trust(db).await.unwrap()[&c].last_check_ms,
            Some(checked + 5)
        );

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

    /// A table made by an older release (no progress columns) is read as it is and gains the
    /// columns at the first write.
    async fn an_older_table_gains_the_progress_columns(dialect: Dialect) {
        let scratch = Scratch::new(dialect).await;
        let db = &scratch.db;
        let mut tx = db.begin().await.unwrap();
        let mut sql = tx.sql();
        sql.push(
            "CREATE TABLE \"_sgcache_trust\" (class TEXT PRIMARY KEY, state TEXT NOT NULL, \
             samples BIGINT NOT NULL DEFAULT 0, checks BIGINT NOT NULL DEFAULT 0, \
             differences BIGINT NOT NULL DEFAULT 0, served BIGINT NOT NULL DEFAULT 0, \
             detail TEXT, changed_ms BIGINT)",
        );
        tx.execute(&sql).await.unwrap();
        let mut sql = tx.sql();
        sql.push("INSERT INTO \"_sgcache_trust\" (class, state, samples) VALUES ('sort:text', 'learning', 4)");
        tx.execute(&sql).await.unwrap();
        tx.commit().await.unwrap();
        let r = &read_trust(db).await.unwrap()[&TrustClass::SortText];
        assert_eq!((r.samples, r.last_check_ms, r.skipped_busy), (4, None, 0));
        record_match(db, TrustClass::SortText, 20).await.unwrap();
        let r = &read_trust(db).await.unwrap()[&TrustClass::SortText];
        assert_eq!(r.samples, 5);
        assert!(r.last_check_ms.is_some());
        scratch.drop().await;
    }

    #[tokio::test]
    async fn an_older_table_on_sqlite() {
        an_older_table_gains_the_progress_columns(Dialect::Sqlite).await;
    }

    #[tokio::test]
    async fn an_older_table_on_postgres() {
        an_older_table_gains_the_progress_columns(Dialect::Postgres).await;
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
