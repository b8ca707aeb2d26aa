//! The worker's parts as a library, so integration tests can run them in-process.

pub mod backfill_bar;
pub mod cli;
pub mod commands;
pub mod events;
pub mod observe;
pub mod proxy;
pub mod ready_signal;
pub mod scanner;
pub mod shutdown;
pub mod site_binding;
pub mod status;
pub mod sync;
pub mod telemetry;
