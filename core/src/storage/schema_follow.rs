//! Following the site's schema while the cache runs (the scanner's timer and the follower's
//! DisplayColumn events call this): the layout is planned like any migration (fields the site
//! deleted leave the plan's spec, [`crate::plan::narrow_to_site`]) and applied under the same
//! lock. A field the site added to a `"*"` type is added and backfilled, a retyped
//! one rebuilt, a deleted one dropped (reads of it pass through), a revived one revived.
//!
//! Left out on purpose: reviving fields that are `unservable` because a value could not be
//! stored. Their site schema did not change, so reading them again on every check would only
//! repeat a full backfill that ends the same way; `migrate` (a person) retries them.

use super::migrate::{apply_plan, record_migration, spec_hash};
use super::{begin_exclusive, read_state, read_state_tx, StorageError};
use crate::plan::{self, Change, DbState, FieldState, Plan, PlanOptions};
use crate::schema::SiteSchema;
use crate::spec::ShotgunCacheSpec;
use crate::sql::Db;

/// What following the site's schema did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SchemaFollow {
    /// The changes applied (empty when the layout already matched the site).
    pub plan: Plan,
    /// Declared types and fields the site no longer has (`Shot.sg_cut`, `CustomEntity07`).
    pub gone: Vec<String>,
}

/// Brings the layout to `site`'s schema for `spec`. Cheap when nothing changed: the plan is
/// made from a plain read first, and the migration lock is taken only when there is work.
pub async fn follow_site_schema(
    db: &Db,
    spec: &ShotgunCacheSpec,
    site: &SiteSchema,
) -> Result<SchemaFollow, StorageError> {
    let preview = site_plan(spec, site, &read_state(db).await?)?;
    if preview.is_empty() {
        return Ok(SchemaFollow {
            plan: Plan::default(),
            gone: preview.gone,
        });
    }
    let mut tx = begin_exclusive(db).await?;
    let current = read_state_tx(&mut tx).await?;
    let plan = site_plan(spec, site, &current)?;
    if !plan.is_empty() {
        apply_plan(&mut tx, &plan).await?;
        record_migration(&mut tx, &plan, &spec_hash(spec)).await?;
    }
    tx.commit().await?;
    let gone = plan.gone.clone();
    Ok(SchemaFollow { plan, gone })
}

/// The migration plan without the retries of unservable fields (see the module comment).
fn site_plan(
    spec: &ShotgunCacheSpec,
    site: &SiteSchema,
    current: &DbState,
) -> Result<Plan, StorageError> {
    let mut plan = plan::plan(spec, site, current, PlanOptions::default())?;
    plan.changes.retain(|c| match c {
        Change::ReviveField(f) => current
            .field(&f.entity_type, &f.field_name)
            .is_none_or(|r| r.state != FieldState::Unservable),
        _ => true,
    });
    Ok(plan)
}
