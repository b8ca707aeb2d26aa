//! sgcache's shared library: the `ShotgunCache` spec (also the worker's config file), the
//! site schema model, the API3 wire types, identifier rules, schema planning and storage.

pub mod api3;
mod event_log_spec;
pub mod ident;
pub mod inferred;
pub mod pg_server;
pub mod plan;
pub mod query;
pub mod schema;
pub mod site;
pub mod spec;
pub mod sql;
pub mod storage;
pub mod trust;
pub mod unknown_names;

pub use spec::ShotgunCacheSpec;
