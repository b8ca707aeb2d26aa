//! `sgcache-worker migrate`: plan the layout the spec asks for, print the plan, apply it.
//!
//! Exit codes: 0 done; 2 the spec does not match the site (unknown type or field...) or the
//! cache was filled from another site, with one line naming the offending item and nothing
//! changed; 1 any other failure. `--dry-run` writes nothing (not even a new SQLite file);
//! `--reset` drops the cache's tables first.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;

use sgcache::plan::{self, DbState, Plan, PlanError, PlanOptions};
use sgcache::schema::SiteSchema;
use sgcache::site::SiteClient;
use sgcache::spec::{process_env, ShotgunCacheSpec, SiteConnection};
use sgcache::sql::Db;
use sgcache::storage::{self, redact_url, StorageError};
use sqlx::sqlite::SqliteConnectOptions;

use crate::cli::EXIT_BAD_CONFIG;
use crate::site_binding;

/// The options of `migrate`.
#[derive(Clone, Debug, Default)]
pub struct MigrateArgs<'a> {
    pub dry_run: bool,
    pub prune: bool,
    /// Drop every table of the cache first (a cache of another site, or starting over).
    pub reset: bool,
    pub schema_dir: Option<&'a Path>,
}

/// Why a migration failed, and so which exit code it gets.
#[derive(Debug)]
enum Failure {
    /// The spec asks for something the site does not have, or lacks a setting.
    BadSpec(String),
    Other(String),
}

impl From<PlanError> for Failure {
    fn from(e: PlanError) -> Self {
        Failure::BadSpec(e.to_string())
    }
}

impl Failure {
    /// A cache bound to another site is a configuration error (exit code 2).
    fn from_binding(e: anyhow::Error) -> Failure {
        match e.downcast::<site_binding::OtherSite>() {
            Ok(other) => Failure::BadSpec(other.to_string()),
            Err(e) => Failure::Other(format!("{e:#}")),
        }
    }
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Plan(p) => p.into(),
            other => Failure::Other(other.to_string()),
        }
    }
}

/// Runs the command and maps the outcome to the exit code; errors go to stderr on one line.
pub async fn run(spec: &ShotgunCacheSpec, args: MigrateArgs<'_>) -> ExitCode {
    match migrate(spec, &args).await {
        Ok(plan) => {
            // The plan is the command's output, not a log line.
            let mut out = std::io::stdout().lock();
            match write!(out, "{plan}").and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(Failure::BadSpec(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
        Err(Failure::Other(m)) => {
            eprintln!("error: {m}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(spec: &ShotgunCacheSpec, args: &MigrateArgs<'_>) -> Result<Plan, Failure> {
    let read = site_schema(spec, args.schema_dir).await?;
    let options = PlanOptions { prune: args.prune };
    // Check the spec against the site before touching the database.
    let fresh = plan::plan(spec, &read.schema, &DbState::default(), options)?;
    let url = spec.database_url(&process_env);
    if args.dry_run && sqlite_file_missing(&url) {
        return Ok(fresh); // an empty cache, and opening it would create the file
    }
    let db = Db::connect(&url, 2).await.map_err(|e| {
        Failure::Other(format!(
            "cannot connect to the database {}: {e}",
            redact_url(&url)
        ))
    })?;
    let result = apply(&db, &url, spec, read, args).await;
    db.close().await;
    result
}

/// Checks the cache belongs to the site, then plans (`--dry-run`) or resets, migrates and
/// binds the cache to the site.
async fn apply(
    db: &Db,
    url: &str,
    spec: &ShotgunCacheSpec,
    read: SchemaRead,
    args: &MigrateArgs<'_>,
) -> Result<Plan, Failure> {
    let SchemaRead {
        schema: site,
        conn,
        read_ms,
    } = read;
    let options = PlanOptions { prune: args.prune };
    if let (Some(conn), false) = (&conn, args.reset) {
        site_binding::check(db, &conn.url)
            .await
            .map_err(Failure::from_binding)?;
    }
    if args.dry_run {
        let current = storage::read_state(db).await?;
        return Ok(plan::plan(spec, &site, &current, options)?);
    }
    if args.reset {
        let dropped = storage::drop_cache(db).await?;
        tracing::info!(database = %redact_url(url), tables = dropped.len(), "reset: dropped the cache's tables");
    }
    tracing::info!(database = %redact_url(url), "migrating");
    let plan = storage::migrate(db, spec, &site, options).await?;
    if let Some(ms) = read_ms {
        // A scanner starting now need not read the schema again before its first backfill
        // (not recorded, it reads it once more: the migration itself succeeded).
        if let Err(e) = storage::record_schema_check(db, spec, ms).await {
            tracing::warn!(error = %e, "cannot record when the site's schema was read");
        }
    }
    if let Some(conn) = conn {
        site_binding::bind(db, conn)
            .await
            .map_err(Failure::from_binding)?;
    }
    Ok(plan)
}

/// True for a SQLite URL whose file does not exist yet.
pub(crate) fn sqlite_file_missing(url: &str) -> bool {
    url.starts_with("sqlite:")
        && SqliteConnectOptions::from_str(url)
            .is_ok_and(|o| o.get_filename() != Path::new(":memory:") && !o.get_filename().exists())
}

/// The site's schema as read, and where from.
struct SchemaRead {
    schema: SiteSchema,
    /// The connection to bind the cache with (None when only a schema folder is known).
    conn: Option<SiteConnection>,
    /// When the read from the site began (unix ms); None for a schema folder.
    read_ms: Option<i64>,
}

/// The site schema, from `schema_dir` or else the site.
async fn site_schema(
    spec: &ShotgunCacheSpec,
    schema_dir: Option<&Path>,
) -> Result<SchemaRead, Failure> {
    if let Some(dir) = schema_dir {
        let schema = SiteSchema::load_dir(dir).map_err(|e| Failure::Other(e.to_string()))?;
        let conn = spec
            .site_connection(&process_env)
            .ok()
            .or_else(|| site_binding::anonymous(spec));
        return Ok(SchemaRead {
            schema,
            conn,
            read_ms: None,
        });
    }
    let conn = spec
        .site_connection(&process_env)
        .map_err(|e| Failure::BadSpec(e.to_string()))?;
    tracing::info!(site = %conn.url, "reading the site schema");
    let client = SiteClient::new(conn.clone()).map_err(|e| Failure::Other(e.to_string()))?;
    let read_ms = chrono::Utc::now().timestamp_millis();
    let schema = client
        .schema()
        .await
        .map_err(|e| Failure::Other(e.to_string()))?;
    Ok(SchemaRead {
        schema,
        conn: Some(conn),
        read_ms: Some(read_ms),
    })
}
