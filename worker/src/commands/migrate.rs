//! `sgcache-worker migrate`: plan the layout the spec asks for, print the plan, apply it.
//!
//! Exit codes: 0 done; 2 the spec does not match the site (unknown type or field...), with
//! one line naming the offending item and nothing changed; 1 any other failure.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use sgcache::plan::{self, DbState, Plan, PlanError, PlanOptions};
use sgcache::schema::SiteSchema;
use sgcache::site::SiteClient;
use sgcache::spec::{process_env, ShotgunCacheSpec};
use sgcache::sql::Db;
use sgcache::storage::{self, redact_url, StorageError};

use crate::cli::EXIT_BAD_CONFIG;

/// The options of `migrate`.
#[derive(Clone, Debug, Default)]
pub struct MigrateArgs<'a> {
    pub dry_run: bool,
    pub prune: bool,
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
    let site = site_schema(spec, args.schema_dir).await?;
    let options = PlanOptions { prune: args.prune };
    // Check the spec against the site before touching the database.
    plan::plan(spec, &site, &DbState::default(), options)?;
    let url = spec.database_url(&process_env);
    tracing::info!(database = %redact_url(&url), dry_run = args.dry_run, "migrating");
    let db = Db::connect(&url, 2).await.map_err(|e| {
        Failure::Other(format!(
            "cannot connect to the database {}: {e}",
            redact_url(&url)
        ))
    })?;
    let result = if args.dry_run {
        let current = storage::read_state(&db).await?;
        Ok(plan::plan(spec, &site, &current, options)?)
    } else {
        storage::migrate(&db, spec, &site, options)
            .await
            .map_err(Failure::from)
    };
    db.close().await;
    result
}

async fn site_schema(
    spec: &ShotgunCacheSpec,
    schema_dir: Option<&Path>,
) -> Result<SiteSchema, Failure> {
    if let Some(dir) = schema_dir {
        return SiteSchema::load_dir(dir).map_err(|e| Failure::Other(e.to_string()));
    }
    let conn = spec
        .site_connection(&process_env)
        .map_err(|e| Failure::BadSpec(e.to_string()))?;
    tracing::info!(site = %conn.url, "reading the site schema");
    let client = SiteClient::new(conn).map_err(|e| Failure::Other(e.to_string()))?;
    client
        .schema()
        .await
        .map_err(|e| Failure::Other(e.to_string()))
}
