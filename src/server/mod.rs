//! Binds nothing itself: [`run`] takes already bound listeners (tests bind 127.0.0.1:0), serves
//! OTLP/gRPC, OTLP/HTTP, the KEDA scaler and the admin port until `shutdown` resolves or one of
//! them fails, then drains in-flight requests within `--shutdown-timeout`, closes whatever is
//! left, and writes the final snapshot.
//!
//! The connection lifecycle lives here for every port: `registry.rs` (admission at
//! `--max-connections` with eviction, each connection's phase, closing from outside),
//! `deadlines.rs` (the header, idle, body-rate and write deadlines, one policy), `port.rs` (the
//! hyper-served ports: OTLP/gRPC, scaler, admin), `service.rs` (requests in flight and the
//! handler panic boundary), `body.rs` and `io.rs` (the body rate and write timeout on the wire),
//! `accept.rs` (which accept errors are fatal). The OTLP/HTTP receiver (`ingest::http1`) drives
//! its own HTTP/1.1 core but takes its registry, deadlines and accept policy from here.

mod accept;
mod body;
pub(crate) mod deadlines;
mod io;
mod port;
pub(crate) mod registry;
mod runtime;
mod service;
#[cfg(test)]
mod tests;

pub(crate) use accept::{is_transient as accept_error_is_transient, ACCEPT_ERROR_BACKOFF};

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::activity::ActivityHub;
use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::ingest::grpc::OtlpGrpcService;
use crate::ingest::{self, Ingestor};
use crate::outcome::PanicSite;
use crate::scaler::proto::external_scaler_server::ExternalScalerServer;
use crate::scaler::ScalerService;
use crate::store::Store;
use crate::telemetry::Telemetry;
use crate::tls::{self, ReloadingTls};
use body::SlowBodyError;
use port::{PortSettings, Protocol, ServedPort};
use registry::ConnectionRegistry;
use service::ServiceSettings;

/// A path whose handler panics on every port, compiled into test builds only.
#[cfg(test)]
pub(crate) const PANIC_TEST_PATH: &str = "/__otelscale_test/panic";

/// After the shutdown deadline has closed every connection, how long their tasks may take to end
/// (an io_uring worker finishing the body it is decoding) before the server goes on without them.
const FORCED_CLOSE_GRACE: Duration = Duration::from_secs(5);

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
    /// A listener, its accept loop or its runtime failed while serving.
    #[error("{purpose} stopped serving: {problem}")]
    Stopped { purpose: &'static str, problem: String },
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

/// Serves until `shutdown` resolves or a port fails, then stops accepting, drains in-flight
/// requests for at most `config.shutdown_timeout`, closes the connections left, and writes the
/// final snapshot. A port that failed is the error returned (`ServerError::Stopped`, naming it).
pub async fn run(listeners: Listeners, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let config = Arc::new(config);
    let store = Arc::new(Store::new(config.store_config()));
    let telemetry = Arc::new(Telemetry::default());
    let activity = Arc::new(ActivityHub::default());
    let ingestor = Arc::new(Ingestor::new(&config, Arc::clone(&store), Arc::clone(&telemetry), Arc::clone(&activity)));
    let cancel = CancellationToken::new();
    let scaler = ScalerService::new(
        Arc::clone(&config),
        Arc::clone(&store),
        Arc::clone(&telemetry),
        Arc::clone(&activity),
        cancel.clone(),
    );
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

    let limits = config.connection_limits;
    let handshake_timeout = config.tls.handshake_timeout;
    let otlp_http_registry = ConnectionRegistry::new("OTLP/HTTP", connections_max);
    let mut otlp_http = {
        // io_uring or epoll per --io-uring; the registry holds --max-connections across workers.
        let mut options = ingest::http1::ServeOptions::from_config(&config, Arc::clone(&otlp_http_registry));
        options.tls = port_tls.otlp_http;
        match ingest::http1::serve(listeners.otlp_http, options, Arc::clone(&ingestor), cancel.clone()).await {
            Ok(running) => running,
            Err(err) => {
                // Stop what already started before failing start-up.
                cancel.cancel();
                return Err(ServerError::Serve { purpose: "OTLP/HTTP", message: err.to_string() });
            }
        }
    };
    let grpc_service = |telemetry: &Arc<Telemetry>| {
        Arc::new(ServiceSettings {
            deadlines: deadlines::Deadlines::new(&limits),
            slow_body_error: SlowBodyError::GrpcStatus,
            telemetry: Arc::clone(telemetry),
            internal_error: grpc_internal_error,
        })
    };
    let otlp_grpc = port::serve(
        listeners.otlp_grpc,
        PortSettings {
            purpose: "OTLP/gRPC",
            protocol: Protocol::Http2 { concurrent_streams_max: limits.concurrent_streams_max },
            limits,
            tls: port_tls.otlp_grpc,
            tls_handshake_timeout: handshake_timeout,
            service: grpc_service(&telemetry),
        },
        ConnectionRegistry::new("OTLP/gRPC", connections_max),
        tonic::service::Routes::new(OtlpGrpcService::new(Arc::clone(&ingestor))),
        cancel.clone(),
    );
    // The scaler port runs on a runtime of its own (`--scaler-threads`): see ARCHITECTURE.md.
    let (scaler_runtime, scaler_listener) =
        match runtime::for_port(listeners.scaler, "otelscale-scaler", config.scaler_thread_count) {
            Ok(started) => started,
            Err(err) => {
                cancel.cancel();
                return Err(ServerError::Serve { purpose: "KEDA external scaler", message: err.to_string() });
            }
        };
    // Stream wakes are relayed from the runtime the streams run on (see `activity`).
    let relay = Arc::clone(&activity).relay(cancel.clone());
    match &scaler_runtime {
        Some(runtime) => drop(runtime.handle().spawn(relay)),
        None => drop(tokio::spawn(relay)),
    }
    let scaler_port = {
        // Spawned onto, and served by, the scaler runtime's tasks.
        let _scaler_context = scaler_runtime.as_ref().map(|runtime| runtime.handle().enter());
        port::serve(
            scaler_listener,
            PortSettings {
                purpose: "KEDA external scaler",
                // KEDA multiplexes every trigger's StreamIsActive streams over one connection.
                protocol: Protocol::Http2 { concurrent_streams_max: limits.scaler_concurrent_streams_max },
                limits,
                tls: port_tls.scaler,
                tls_handshake_timeout: handshake_timeout,
                service: grpc_service(&telemetry),
            },
            ConnectionRegistry::new("KEDA external scaler", connections_max),
            tonic::service::Routes::new(ExternalScalerServer::new(scaler)),
            cancel.clone(),
        )
    };
    let admin_port = port::serve(
        listeners.admin,
        PortSettings {
            purpose: "admin HTTP",
            protocol: Protocol::Http1,
            limits,
            tls: None,
            tls_handshake_timeout: handshake_timeout,
            service: Arc::new(ServiceSettings {
                deadlines: deadlines::Deadlines::new(&limits),
                slow_body_error: SlowBodyError::Plain,
                telemetry: Arc::clone(&telemetry),
                internal_error: admin_internal_error,
            }),
        },
        ConnectionRegistry::new("admin HTTP", connections_max),
        admin::router(admin_state),
        cancel.clone(),
    );
    let mut ports = [otlp_grpc, scaler_port, admin_port];
    let retention = {
        let store = Arc::clone(&store);
        let telemetry = Arc::clone(&telemetry);
        let activity = Arc::clone(&activity);
        let cancel = cancel.clone();
        let interval = retention_interval(config.retention_ms);
        tokio::spawn(crate::clock::every(interval, cancel, async move || {
            // A panic skips this pass only (counted); the next tick tries again. Streams that
            // watch a removed series re-evaluate.
            let removed = crate::panics::catch(&telemetry, PanicSite::Background, || {
                store.drop_expired_telling(crate::clock::now_ms(), |key| activity.notify_removed(key))
            })
            .unwrap_or(0);
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
    tracing::info!(otlp_http_backend = ?otlp_http.backend(), "ready");

    let failure = tokio::select! {
        () = shutdown => None,
        failure = first_failure(&mut ports, &mut otlp_http) => Some(failure),
    };
    // Not ready from here on: a dead port, or draining.
    ready.store(false, Ordering::Release);
    match &failure {
        None => tracing::info!(
            shutdown_timeout_ms = config.shutdown_timeout.as_millis() as u64,
            "shutting down: no new connections, draining in-flight requests"
        ),
        Some(err) => tracing::error!(error = %err, "a port failed: shutting the server down"),
    }
    cancel.cancel();
    let drained = drain(&mut ports, otlp_http, &otlp_http_registry, config.shutdown_timeout).await;
    if let Some(scaler_runtime) = scaler_runtime {
        scaler_runtime.stop().await;
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
    match failure.or(drained.err()) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// The first port that stops serving: its accept loop ended (a dead listening socket, a panic)
/// or, on OTLP/HTTP, a worker or its runtime failed.
async fn first_failure(ports: &mut [ServedPort; 3], otlp_http: &mut ingest::http1::RunningServer) -> ServerError {
    let [first, second, third] = ports;
    let purposes = [first.purpose, second.purpose, third.purpose];
    let (purpose, problem) = tokio::select! {
        end = first.ended() => (purposes[0], end.to_string()),
        end = second.ended() => (purposes[1], end.to_string()),
        end = third.ended() => (purposes[2], end.to_string()),
        err = otlp_http.failed() => ("OTLP/HTTP", err.to_string()),
    };
    ServerError::Stopped { purpose, problem }
}

/// Waits for every port to stop accepting and close its connections, at most `timeout`; then
/// closes every remaining connection on every port and waits [`FORCED_CLOSE_GRACE`] more.
/// Returns the OTLP/HTTP receiver's own result (a worker that failed while draining).
async fn drain(
    ports: &mut [ServedPort; 3],
    otlp_http: ingest::http1::RunningServer,
    otlp_http_registry: &Arc<ConnectionRegistry>,
    timeout: Duration,
) -> Result<(), ServerError> {
    let mut registries: Vec<Arc<ConnectionRegistry>> = ports.iter().map(|port| Arc::clone(&port.registry)).collect();
    registries.push(Arc::clone(otlp_http_registry));
    let [first, second, third] = ports;
    let mut drained = pin!(async {
        let (_, _, _, otlp_http) = tokio::join!(first.drained(), second.drained(), third.drained(), otlp_http.wait());
        otlp_http
    });
    let result = match tokio::time::timeout(timeout, &mut drained).await {
        Ok(result) => Some(result),
        Err(_elapsed) => {
            for registry in &registries {
                let open = registry.open_count();
                if open > 0 {
                    tracing::warn!(
                        port = registry.port(),
                        connections = open,
                        shutdown_timeout_ms = timeout.as_millis() as u64,
                        "shutdown deadline passed: closing the remaining connections"
                    );
                }
                registry.close_all();
            }
            let forced = tokio::time::timeout(FORCED_CLOSE_GRACE, &mut drained).await;
            if forced.is_err() {
                tracing::error!(
                    grace_ms = FORCED_CLOSE_GRACE.as_millis() as u64,
                    "connections did not end after being closed; going on without them"
                );
            }
            forced.ok()
        }
    };
    match result {
        Some(Err(err)) => Err(ServerError::Stopped { purpose: "OTLP/HTTP", problem: err.to_string() }),
        Some(Ok(())) | None => Ok(()),
    }
}

/// The answer of a gRPC port when a handler panicked.
fn grpc_internal_error() -> http::Response<tonic::body::Body> {
    tonic::Status::internal("internal error: the handler panicked (counted in otelscale_panics_total)").into_http()
}

/// The answer of the admin port when a handler panicked.
fn admin_internal_error() -> http::Response<axum::body::Body> {
    (http::StatusCode::INTERNAL_SERVER_ERROR, "internal error: the handler panicked\n").into_response()
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
