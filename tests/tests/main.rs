//! The integration tests: one binary, a module per subject (a real PostgreSQL, the test
//! Shotgun site and real HTTP in each). `cargo test -p sgcache-tests --test integration
//! proxy_cache::` runs one subject's tests.

mod freshness_common;
mod status_common;

mod crash_trials;
mod event_log_crash;
mod event_log_proxy;
mod event_log_store;
mod events_follow;
mod failover;
mod failover_standby;
mod fidelity_drift;
mod fidelity_poison;
mod fidelity_staleness;
mod freshness_crash;
mod freshness_field_add;
mod freshness_standby;
mod freshness_verify;
mod link_targets;
mod migrate_evolve;
mod migrate_layout;
mod migrate_rebuild;
mod migrate_site;
mod pg_values;
mod proxy_adversarial;
mod proxy_cache;
mod proxy_crowd;
mod proxy_passthrough;
mod proxy_refresh_auth;
mod proxy_stale_rows;
mod read_share;
mod scanner_backfill;
mod scanner_schema_check;
mod schema_follow;
mod site_binding;
mod status_command;
mod status_page;
mod storage_write;
mod translator_shapes;
mod translator_sorts;
mod trust;
mod trust_null_hop;
mod trust_starvation;
mod worker_all;
mod worker_observe;
