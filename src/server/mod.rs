//! Binds nothing itself: [`run`] takes already bound listeners (tests bind 127.0.0.1:0), serves
//! OTLP/gRPC, OTLP/HTTP, the KEDA scaler and the admin port until `shutdown` resolves, then
//! drains in-flight requests.

mod connection_limit;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::activity::ActivityHub;
use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::ingest::grpc::OtlpGrpcService;
use crate::ingest::{self, Ingestor};
use crate::scaler::proto::external_scaler_server::ExternalScalerServer;
use crate::scaler::ScalerService;
use crate::store::Store;
use crate::telemetry::Telemetry;
use crate::tls::{self, ReloadingTls};
use connection_limit::LimitedListener;

/// The four listeners the server needs.
#[derive(Debug)]
pub struct Listeners {
    pub otlp_grpc: TcpListener,
    pub otlp_http: TcpListener,
    pub scaler: TcpListener,
    pub admin: TcpListener,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} for {purpose}: {source}")]
    Bind { purpose: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("{purpose} server failed: {message}")]
    Serve { purpose: &'static str, message: String },
    #[error("cannot start the snapshot writer: {0}")]
    Snapshot(std::io::Error),
    #[error("TLS for {port}: {source}")]
    Tls { port: &'static str, source: Box<crate::tls::TlsError> },
}

/// The TLS configuration of each port that has one.
struct PortTls {
    otlp_grpc: Option<Arc<ReloadingTls>>,
    otlp_http: Option<Arc<ReloadingTls>>,
    scaler: Option<Arc<ReloadingTls>>,
}

impl PortTls {
    fn load(config: &Config, cancel: &CancellationToken) -> Result<PortTls, ServerError> {
        let load = |port: &'static str, files: &Option<crate::config::TlsFiles>, alpn| {
            let Some(files) = files else { return Ok(None) };
            let tls = ReloadingTls::load(port, files.clone(), alpn)
                .map_err(|source| ServerError::Tls { port, source: Box::new(source) })?;
            tls.watch(config.tls.reload_interval, cancel.clone());
            Ok(Some(tls))
        };
        Ok(PortTls {
            otlp_grpc: load("OTLP/gRPC", &config.tls.otlp_grpc, tls::ALPN_GRPC)?,
            otlp_http: load("OTLP/HTTP", &config.tls.otlp_http, tls::ALPN_HTTP1)?,
            scaler: load("KEDA scaler", &config.tls.scaler, tls::ALPN_GRPC)?,
        })
    }
}

/// Serves a tonic router on plaintext or TLS connections.
async fn serve_grpc(
    router: tonic::transport::server::Router,
    listener: LimitedListener,
    tls: Option<Arc<ReloadingTls>>,
    handshake_timeout: Duration,
    cancel: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let plain = listener.into_stream();
    match tls {
        None => router.serve_with_incoming_shutdown(plain, cancel.cancelled_owned()).await,
        Some(tls) => {
            let incoming = tls::incoming(plain, tls, handshake_timeout, cancel.clone());
            router.serve_with_incoming_shutdown(incoming, cancel.cancelled_owned()).await
        }
    }
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &Config) -> Result<Listeners, ServerError> {
        async fn bind_one(purpose: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
            TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { purpose, addr, source })
        }
        Ok(Listeners {
            otlp_grpc: bind_one("OTLP/gRPC", config.otlp_grpc_addr).await?,
            otlp_http: bind_one("OTLP/HTTP", config.otlp_http_addr).await?,
            scaler: bind_one("KEDA external scaler", config.scaler_addr).await?,
            admin: bind_one("admin HTTP", config.admin_addr).await?,
        })
    }
}

/// How often retention runs: an eighth of the retention, between 250 ms and 5 s.
fn retention_interval(retention_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(retention_ms / 8).unwrap_or(0).clamp(250, 5_000))
}

/// Serves until `shutdown` resolves, then stops accepting and drains in-flight requests.
pub async fn run(listeners: Listeners, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let config = Arc::new(config);
    let store = Arc::new(Store::new(config.store_config()));
    let telemetry = Arc::new(Telemetry::default());
    let activity = Arc::new(ActivityHub::default());
    let ingestor = Arc::new(Ingestor::new(&config, Arc::clone(&store), Arc::clone(&telemetry), Arc::clone(&activity)));
    let cancel = CancellationToken::new();
    let scaler =
        ScalerService::new(Arc::clone(&config), Arc::clone(&store), Arc::clone(&telemetry), activity, cancel.clone());
    let ready = Arc::new(AtomicBool::new(false));
    let admin_state =
        AdminState::new(Arc::clone(&config), Arc::clone(&store), Arc::clone(&telemetry), Arc::clone(&ready));
    let connections_max = config.connections_max;
    // Certificates first: a bad file stops start-up before anything else happens.
    let port_tls = PortTls::load(&config, &cancel).inspect_err(|_| cancel.cancel())?;
    // Before any listener serves: a restored store is complete before the first request.
    if let Some(snapshot) = &config.snapshot {
        restore_snapshot(&store, &telemetry, &snapshot.dir).await;
    }
    let snapshotter = match &config.snapshot {
        Some(snapshot) => Some(
            crate::snapshot::Snapshotter::start(Arc::clone(&store), Arc::clone(&telemetry), snapshot.clone())
                .map_err(ServerError::Snapshot)?,
        ),
        None => None,
    };

    tracing::info!(
        otlp_grpc = %local_addr(&listeners.otlp_grpc),
        otlp_http = %local_addr(&listeners.otlp_http),
        scaler = %local_addr(&listeners.scaler),
        admin = %local_addr(&listeners.admin),
        retention_ms = config.retention_ms,
        series_count_max = config.series_count_max,
        "otelscale serving"
    );

    let handshake_timeout = config.tls.handshake_timeout;
    let otlp_grpc = {
        let listener = LimitedListener::new(listeners.otlp_grpc, connections_max);
        let router = tonic::transport::Server::builder().add_service(OtlpGrpcService::new(Arc::clone(&ingestor)));
        let served = serve_grpc(router, listener, port_tls.otlp_grpc, handshake_timeout, cancel.clone());
        tokio::spawn(async move {
            served.await.map_err(|err| ServerError::Serve { purpose: "OTLP/gRPC", message: err.to_string() })
        })
    };
    let scaler_server = {
        let listener = LimitedListener::new(listeners.scaler, connections_max);
        let router = tonic::transport::Server::builder().add_service(ExternalScalerServer::new(scaler));
        let served = serve_grpc(router, listener, port_tls.scaler, handshake_timeout, cancel.clone());
        tokio::spawn(async move {
            served.await.map_err(|err| ServerError::Serve { purpose: "KEDA external scaler", message: err.to_string() })
        })
    };
    let otlp_http = {
        // io_uring or epoll per --io-uring; --max-connections is applied across its workers.
        let mut options = ingest::http1::ServeOptions::from_config(&config);
        options.tls = port_tls.otlp_http;
        let running =
            match ingest::http1::serve(listeners.otlp_http, options, Arc::clone(&ingestor), cancel.clone()).await {
                Ok(running) => running,
                Err(err) => {
                    // Stop what already started before failing start-up.
                    cancel.cancel();
                    return Err(ServerError::Serve { purpose: "OTLP/HTTP", message: err.to_string() });
                }
            };
        tokio::spawn(async move {
            running.wait().await.map_err(|err| ServerError::Serve { purpose: "OTLP/HTTP", message: err.to_string() })
        })
    };
    let admin_server = {
        let listener = LimitedListener::new(listeners.admin, connections_max);
        let router = admin::router(admin_state);
        let cancel = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
                .map_err(|err| ServerError::Serve { purpose: "admin HTTP", message: err.to_string() })
        })
    };
    let retention = {
        let store = Arc::clone(&store);
        let telemetry = Arc::clone(&telemetry);
        let cancel = cancel.clone();
        let interval = retention_interval(config.retention_ms);
        tokio::spawn(crate::clock::every(interval, cancel, async move || {
            let removed = store.drop_expired(crate::clock::now_ms());
            if removed > 0 {
                telemetry.series_expired(removed);
                tracing::debug!(series_removed = removed, series = store.series_count(), "retention applied");
            }
        }))
    };
    // Its own token, cancelled after the listeners have drained: the final push counts every
    // request that was answered.
    let self_export_cancel = CancellationToken::new();
    let self_export = config.self_export.clone().map(|self_export| {
        crate::self_export::spawn(self_export, Arc::clone(&telemetry), Arc::clone(&store), self_export_cancel.clone())
    });
    ready.store(true, Ordering::Release);

    shutdown.await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    cancel.cancel();
    let mut first_error = None;
    for handle in [otlp_grpc, scaler_server, otlp_http, admin_server] {
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                first_error.get_or_insert(err);
            }
            Err(join_error) => {
                first_error
                    .get_or_insert(ServerError::Serve { purpose: "listener task", message: join_error.to_string() });
            }
        }
    }
    let _ = retention.await;
    self_export_cancel.cancel();
    if let Some(self_export) = self_export {
        let _ = self_export.await;
    }
    // The last step: listeners have stopped, so the final snapshot holds every acknowledged point.
    if let Some(snapshotter) = snapshotter {
        if let Ok(Some(written)) = tokio::task::spawn_blocking(move || snapshotter.finish()).await {
            tracing::info!(file = %written.path.display(), series = written.series, "final snapshot written");
        }
    }
    tracing::info!(series = store.series_count(), "otelscale stopped");
    match first_error {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

async fn restore_snapshot(store: &Arc<Store>, telemetry: &Telemetry, dir: &std::path::Path) {
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (restore_store, restore_dir) = (Arc::clone(store), dir.to_path_buf());
    let restored = tokio::task::spawn_blocking(move || {
        crate::snapshot::restore_newest(&restore_store, &restore_dir, crate::clock::now_ms(), threads)
    })
    .await;
    match restored {
        Ok(Some(report)) => {
            telemetry.snapshot_restored(started.elapsed(), report.series);
            tracing::info!(
                file = %report.file.display(),
                series = report.series,
                samples = report.samples,
                samples_expired = report.samples_expired,
                series_over_limit = report.series_over_limit,
                duration_ms = started.elapsed().as_millis() as u64,
                "snapshot restored"
            );
        }
        Ok(None) => tracing::info!(dir = %dir.display(), "no snapshot to restore; starting empty"),
        Err(err) => tracing::error!(error = %err, "snapshot restore failed; starting empty"),
    }
}

fn local_addr(listener: &TcpListener) -> String {
    listener.local_addr().map_or_else(|err| format!("unknown ({err})"), |addr| addr.to_string())
}
