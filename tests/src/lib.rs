//! Helpers shared by the integration tests.

pub mod cpu;
pub mod layout;
pub mod loader;
pub mod pg;
pub mod proxy;
pub mod relay;
pub mod rss;
pub mod worker;
