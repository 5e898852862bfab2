//! otelscale's load generator and latency prover, as a library so its tests can run every
//! scenario in-process against the real server.
//!
//! [`payload`] and [`shapes`] build OTLP payloads once and re-stamp them; [`client`] ships them
//! over gRPC or HTTP; [`keda`] plays KEDA's side of the scaler; [`scenarios`] are the runs;
//! [`stats`], [`procstat`], [`server_metrics`] and [`report`] measure and write results.

pub mod client;
pub mod keda;
pub mod payload;
pub mod procstat;
pub mod progress;
pub mod report;
pub mod scenarios;
pub mod server_metrics;
pub mod shapes;
pub mod stats;
