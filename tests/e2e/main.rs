//! End-to-end tests: the real server on 127.0.0.1:0, driven by real clients (tonic, reqwest,
//! the `otelscale` binary). One test binary, so the crate links once.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod hostile_connections;
mod hostile_ingest;
mod hostile_queries;
mod ingest_errors;
mod ingest_http1;
mod ingest_paths;
mod scaler;
mod self_export;
mod snapshot;
mod tls;
