//! What every worker shows of itself, shared by the event follower and the scanner (and by
//! the proxy in `all`): a heartbeat its loop beats on each completed iteration, its role
//! (leader or standby), and a small HTTP server for `/metrics`, `/healthz` and `/readyz`.

pub mod heartbeat;
pub mod loop_gauges;
pub mod server;

pub use heartbeat::{allowed_quiet, Heartbeat, Role};
pub use loop_gauges::LoopGauges;
pub use server::{Observed, Probes};
