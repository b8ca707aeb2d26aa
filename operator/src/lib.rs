//! sgcache's Kubernetes operator: the `ShotgunCache` resource, the pure builders of its worker
//! objects, its database step and the reconcile loop.

pub mod backfill_wake;
pub mod cleanup;
pub mod crd;
pub mod crdgen;
pub mod db;
pub mod error;
pub mod events;
pub mod health;
pub mod lease;
pub mod metrics;
pub mod reconcile;
pub mod resources;
pub mod schema_memo;
pub mod secrets;
pub mod sqldb;
pub mod status;

#[cfg(test)]
mod fixtures;

pub use crd::{ShotgunCache, ShotgunCacheResourceSpec, ShotgunCacheStatus};
pub use error::{Error, Result};
