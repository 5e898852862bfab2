//! The four scenarios, one module each.

pub mod fleet;
pub mod latency;
pub mod scale_sim;
pub mod throughput;
