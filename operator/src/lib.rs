//! sgcache's Kubernetes operator: the `ShotgunCache` resource, the pure builders of its worker
//! objects, its database step and the reconcile loop.

pub mod crd;
pub mod crdgen;
pub mod db;
pub mod resources;
pub mod status;

#[cfg(test)]
mod fixtures;

pub use crd::{ShotgunCache, ShotgunCacheResourceSpec, ShotgunCacheStatus};
