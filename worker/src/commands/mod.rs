//! The worker's one-shot commands.

pub mod migrate;
pub mod probe;
pub mod trust;
