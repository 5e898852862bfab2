//! otelscale: OpenTelemetry metrics in, KEDA external-scaler answers out.
//!
//! Modules in reading order, following the data:
//! [`config`] (every limit, validated once) → [`ingest`] (OTLP bytes → validated sample batches)
//! → [`store`] (series index and columnar chunks) → [`query`] (metricQuery parse and evaluate)
//! → [`scaler`] (KEDA's ExternalScaler service) and [`admin`] (health, metrics, debug API).
//! [`server`] wires them to sockets; [`telemetry`] holds the server's own counters.

pub mod activity;
pub mod admin;
pub mod clock;
pub mod config;
pub mod ingest;
pub mod outcome;
pub mod panics;
pub mod query;
pub mod scaler;
pub mod self_export;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod tls;
