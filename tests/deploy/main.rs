//! The deployment files under `deploy/`, checked against the real server without a cluster:
//! every YAML and JSON file parses; every flag of `otelscale serve --help` is a key of the Helm
//! chart's `config` values with the server's default and is an argument of the plain manifests'
//! Deployment; ports and probe paths are the server's own; the plain manifests agree with the
//! chart's values; every example ScaledObject's trigger metadata is accepted by the scaler; the
//! Grafana dashboard queries only metrics the server exports. Where the `helm-python-sdk`
//! package is installed, the chart is also rendered by Helm's engine (`deploy/helm/render.py`)
//! and compared with the committed manifests. In CI (`CI` set) it must be installed (`.ci/run`
//! installs it): there a missing renderer fails the Helm tests instead of skipping them.

//!
//! One test binary, so the crate links once. `deploy_files`, `serve_flags` and `chart_values`
//! hold what the checks share; the other modules hold the checks, one concern each.

#[path = "../common/mod.rs"]
mod common;

mod chart_values;
mod dashboard;
mod deploy_files;
mod examples;
mod helm_rendering;
mod plain_manifests;
mod serve_flags;
mod tls;
