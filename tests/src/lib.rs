//! Helpers shared by the integration tests.

pub mod pg;
pub mod proxy;
pub mod loader;
pub mod layout;
pub mod worker;
