//! The scenarios, one module each.

pub mod fleet;
pub mod hostile;
pub mod latency;
pub mod scale_sim;
pub mod throughput;
pub mod triggers;
