//! Helpers shared by the integration tests.

pub mod compare;
pub mod cpu;
pub mod crash_trials;
pub mod history;
pub mod layout;
pub mod loader;
pub mod pg;
pub mod pg_pair;
pub mod proxy;
pub mod relay;
pub mod rss;
pub mod worker;
pub mod wrk;
