//! Configuration: every address, interval and limit, from flags or `OTELSCALE_*` environment
//! variables, validated once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::query::QueryLimits;
use crate::store::{StoreConfig, LABEL_STRING_BYTES_MAX};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: --{flag}: {problem}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub problem: String,
}

/// Which I/O back-end serves OTLP/HTTP (`--io-uring`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoUringMode {
    /// io_uring when the kernel and seccomp allow it (probed by creating a ring), epoll otherwise.
    Auto,
    /// io_uring or refuse to start.
    On,
    /// epoll (tokio) always.
    Off,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("`{text}` is not a duration like 120s or 5m: {err}"))
}

/// `otelscale serve` flags. Each is also read from the environment as `OTELSCALE_<FLAG>`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// OTLP/gRPC listen address.
    #[arg(long, env = "OTELSCALE_OTLP_GRPC_ADDR", default_value = "0.0.0.0:4317")]
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address.
    #[arg(long, env = "OTELSCALE_OTLP_HTTP_ADDR", default_value = "0.0.0.0:4318")]
    pub otlp_http_addr: SocketAddr,
    /// KEDA external scaler gRPC listen address.
    #[arg(long, env = "OTELSCALE_SCALER_ADDR", default_value = "0.0.0.0:8090")]
    pub scaler_addr: SocketAddr,
    /// Admin HTTP listen address (health, /metrics, debug query API).
    #[arg(long, env = "OTELSCALE_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// How long samples are kept; also the largest query window.
    #[arg(long, env = "OTELSCALE_RETENTION", default_value = "120s", value_parser = parse_duration)]
    pub retention: Duration,
    /// Largest request body, measured after decompression.
    #[arg(long, env = "OTELSCALE_MAX_REQUEST_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Most series held at once; points of new series beyond it are rejected.
    #[arg(long, env = "OTELSCALE_MAX_SERIES", default_value_t = 1_000_000)]
    pub max_series: usize,
    /// Most labels (resource plus point attributes) on one series (at most 65,535).
    #[arg(long, env = "OTELSCALE_MAX_LABELS_PER_SERIES", default_value_t = 64)]
    pub max_labels_per_series: usize,
    /// Longest label name, in bytes (at most 65,535).
    #[arg(long, env = "OTELSCALE_MAX_LABEL_NAME_BYTES", default_value_t = 256)]
    pub max_label_name_bytes: usize,
    /// Longest label value, in bytes (at most 65,535).
    #[arg(long, env = "OTELSCALE_MAX_LABEL_VALUE_BYTES", default_value_t = 2048)]
    pub max_label_value_bytes: usize,
    /// Longest metric name, in bytes.
    #[arg(long, env = "OTELSCALE_MAX_METRIC_NAME_BYTES", default_value_t = 512)]
    pub max_metric_name_bytes: usize,
    /// How far in the future a point's timestamp may be.
    #[arg(long, env = "OTELSCALE_MAX_FUTURE_SKEW", default_value = "10s", value_parser = parse_duration)]
    pub max_future_skew: Duration,
    /// Most concurrent StreamIsActive streams.
    #[arg(long, env = "OTELSCALE_MAX_STREAMS", default_value_t = 10_000)]
    pub max_streams: usize,
    /// Distinct triggers (namespace and metadata) kept parsed; up to twice as many are held
    /// while the oldest are aged out.
    #[arg(long, env = "OTELSCALE_MAX_TRIGGERS", default_value_t = 20_000)]
    pub max_triggers: usize,
    /// Most concurrent connections on each listener.
    #[arg(long, env = "OTELSCALE_MAX_CONNECTIONS", default_value_t = 4_096)]
    pub max_connections: usize,
    /// Longest metricQuery, in bytes.
    #[arg(long, env = "OTELSCALE_MAX_QUERY_BYTES", default_value_t = 4096)]
    pub max_query_bytes: usize,
    /// Most label matchers in one metricQuery.
    #[arg(long, env = "OTELSCALE_MAX_QUERY_MATCHERS", default_value_t = 64)]
    pub max_query_matchers: usize,
    /// How often StreamIsActive re-sends the current state even when it did not change.
    #[arg(long, env = "OTELSCALE_STREAM_RESEND_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub stream_resend_interval: Duration,
    /// Answer a query that matches no series with an error (NOT_FOUND) instead of the value 0.
    #[arg(long, env = "OTELSCALE_NO_MATCH_IS_ERROR", default_value_t = false)]
    pub no_match_is_error: bool,
    /// Ingest worker threads that decode large bodies at low priority (0 = one per CPU core).
    #[arg(long, env = "OTELSCALE_INGEST_WORKERS", default_value_t = 0)]
    pub ingest_workers: usize,
    /// Threads of the KEDA scaler port's own runtime (1 = one thread, no work stealing: a
    /// GetMetrics call then wakes no second thread; broad queries still go to the blocking pool;
    /// 0 = no runtime of its own: served by the main runtime's workers).
    #[arg(long, env = "OTELSCALE_SCALER_THREADS", default_value_t = 1)]
    pub scaler_threads: usize,
    /// Store shards (0 = two per CPU core).
    #[arg(long, env = "OTELSCALE_SHARDS", default_value_t = 0)]
    pub shards: usize,
    /// OTLP/HTTP I/O back-end: io_uring thread-per-core runtimes (`on`), tokio's epoll runtime
    /// (`off`), or io_uring when the kernel allows it (`auto`).
    #[arg(long, env = "OTELSCALE_IO_URING", value_enum, default_value_t = IoUringMode::Auto)]
    pub io_uring: IoUringMode,
    /// io_uring OTLP/HTTP worker threads, one runtime and one core each (0 = one per CPU core).
    #[arg(long, env = "OTELSCALE_HTTP_WORKERS", default_value_t = 0)]
    pub http_workers: usize,
    /// Directory for rkyv snapshots of the store; unset = no snapshots. Created if missing.
    #[arg(long, env = "OTELSCALE_SNAPSHOT_DIR")]
    pub snapshot_dir: Option<std::path::PathBuf>,
    /// Time between two background snapshots (one more is written at graceful shutdown).
    #[arg(long, env = "OTELSCALE_SNAPSHOT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub snapshot_interval: Duration,
    /// Complete snapshots kept in the directory (the newest ones); older ones are deleted.
    #[arg(long, env = "OTELSCALE_SNAPSHOT_KEEP", default_value_t = 2)]
    pub snapshot_keep: usize,
    /// PEM certificate chain for TLS on the OTLP/gRPC port (with --otlp-grpc-tls-key).
    #[arg(long, env = "OTELSCALE_OTLP_GRPC_TLS_CERT")]
    pub otlp_grpc_tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the OTLP/gRPC port.
    #[arg(long, env = "OTELSCALE_OTLP_GRPC_TLS_KEY")]
    pub otlp_grpc_tls_key: Option<PathBuf>,
    /// PEM CA bundle: OTLP/gRPC clients must present a certificate it signed (mTLS).
    #[arg(long, env = "OTELSCALE_OTLP_GRPC_TLS_CLIENT_CA")]
    pub otlp_grpc_tls_client_ca: Option<PathBuf>,
    /// PEM certificate chain for TLS on the OTLP/HTTP port (served by the epoll back-end).
    #[arg(long, env = "OTELSCALE_OTLP_HTTP_TLS_CERT")]
    pub otlp_http_tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the OTLP/HTTP port.
    #[arg(long, env = "OTELSCALE_OTLP_HTTP_TLS_KEY")]
    pub otlp_http_tls_key: Option<PathBuf>,
    /// PEM CA bundle: OTLP/HTTP clients must present a certificate it signed (mTLS).
    #[arg(long, env = "OTELSCALE_OTLP_HTTP_TLS_CLIENT_CA")]
    pub otlp_http_tls_client_ca: Option<PathBuf>,
    /// PEM certificate chain for TLS on the KEDA scaler port (KEDA's `caCert` must trust it).
    #[arg(long, env = "OTELSCALE_SCALER_TLS_CERT")]
    pub scaler_tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the KEDA scaler port.
    #[arg(long, env = "OTELSCALE_SCALER_TLS_KEY")]
    pub scaler_tls_key: Option<PathBuf>,
    /// PEM CA bundle: KEDA must present a certificate it signed (`tlsClientCert`, mTLS).
    #[arg(long, env = "OTELSCALE_SCALER_TLS_CLIENT_CA")]
    pub scaler_tls_client_ca: Option<PathBuf>,
    /// How often certificate, key and CA files are checked for changes and reloaded.
    #[arg(long, env = "OTELSCALE_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
    /// Most time a client may take for its TLS handshake.
    #[arg(long, env = "OTELSCALE_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// Log line format on stderr: `text` or `json` (one object per line).
    #[arg(long, env = "OTELSCALE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter: a level (`info`, `debug`, …) or `tracing` directives such as
    /// `otelscale=debug,tower=warn`. `RUST_LOG` is used when this is not set.
    #[arg(long, env = "OTELSCALE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Longest time a client may take to send a request's head: an HTTP/1.1 request line and
    /// headers (from its first byte, or from the accept), an HTTP/2 connection's preface and
    /// first request. A client that takes longer is disconnected.
    #[arg(long, env = "OTELSCALE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Longest time a connection may stay open with no request in flight (HTTP/1.1 keep-alive,
    /// HTTP/2 with no open stream). An open StreamIsActive stream is a request in flight.
    #[arg(long, env = "OTELSCALE_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Slowest request body accepted: after a grace of --header-read-timeout, a body must keep
    /// arriving at least this fast (bytes per second, averaged from its start) or it is cut off.
    #[arg(long, env = "OTELSCALE_MIN_BODY_BYTES_PER_SECOND", default_value_t = 16 * 1024)]
    pub min_body_bytes_per_second: u64,
    /// Longest time writing one answer may take before the connection is closed.
    #[arg(long, env = "OTELSCALE_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection on the OTLP/gRPC port (the scaler port
    /// allows at least --max-streams plus 256, since KEDA multiplexes every trigger's streams
    /// over one connection).
    #[arg(long, env = "OTELSCALE_MAX_CONCURRENT_STREAMS", default_value_t = 128)]
    pub max_concurrent_streams: u32,
    /// Largest request head: HTTP/1.1 request line and headers, HTTP/2 header list.
    #[arg(long, env = "OTELSCALE_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Time between HTTP/2 keep-alive pings the server sends on an otherwise silent connection.
    #[arg(long, env = "OTELSCALE_HTTP2_KEEPALIVE_INTERVAL", default_value = "20s", value_parser = parse_duration)]
    pub http2_keepalive_interval: Duration,
    /// How long an HTTP/2 keep-alive ping may go unanswered before the connection is closed.
    #[arg(long, env = "OTELSCALE_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http2_keepalive_timeout: Duration,
    /// At SIGTERM, how long in-flight requests may take to finish; then the remaining
    /// connections are closed and the final snapshot is written regardless. Keep it well under
    /// the pod's termination grace period.
    #[arg(long, env = "OTELSCALE_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// How long a large request may wait for room in the ingest workers' queue before it is
    /// refused as retryable (gRPC UNAVAILABLE, HTTP 503 with Retry-After).
    #[arg(long, env = "OTELSCALE_INGEST_QUEUE_WAIT", default_value = "500ms", value_parser = parse_duration)]
    pub ingest_queue_wait: Duration,
    /// Most bytes the store may hold (label strings, keys, samples and index); points of new
    /// series beyond it are rejected. Set it to about 70% of the container's memory limit.
    #[arg(long, env = "OTELSCALE_MAX_STORE_BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub max_store_bytes: usize,
    /// Most bytes of one series' identity (metric name plus label names and values).
    #[arg(long, env = "OTELSCALE_MAX_SERIES_KEY_BYTES", default_value_t = 8 * 1024)]
    pub max_series_key_bytes: usize,
    /// Most series of one metric, so one runaway metric cannot take every series slot.
    #[arg(long, env = "OTELSCALE_MAX_SERIES_PER_METRIC", default_value_t = 250_000)]
    pub max_series_per_metric: usize,
    /// Most series one query may visit; a query over more fails with a clear error.
    #[arg(long, env = "OTELSCALE_MAX_QUERY_SERIES", default_value_t = 1_000_000)]
    pub max_query_series: usize,
    /// Longest time one query evaluation may take; a slower one fails with a clear error.
    #[arg(long, env = "OTELSCALE_QUERY_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub query_timeout: Duration,
    /// Admin API queries evaluated at once (off the async runtime); more wait, then get 503.
    #[arg(long, env = "OTELSCALE_ADMIN_QUERY_CONCURRENCY", default_value_t = 2)]
    pub admin_query_concurrency: usize,
    /// Most series one `/api/v1/series` answer lists (its `limit` parameter may ask for fewer).
    #[arg(long, env = "OTELSCALE_MAX_SERIES_LIST", default_value_t = 10_000)]
    pub max_series_list: usize,
    /// Most bytes of series keys (metric name and label strings) one `/api/v1/series` answer
    /// lists; a listing stops at whichever of this and the series count comes first.
    #[arg(long, env = "OTELSCALE_MAX_SERIES_LIST_BYTES", default_value_t = 16 << 20)]
    pub max_series_list_bytes: usize,
    /// OTLP/gRPC endpoint (e.g. `http://otel-collector:4317`) the server pushes its own metrics to.
    #[arg(long, env = "OTELSCALE_SELF_OTLP_ENDPOINT")]
    pub self_otlp_endpoint: Option<String>,
    /// Time between two pushes of the server's own metrics.
    #[arg(long, env = "OTELSCALE_SELF_OTLP_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub self_otlp_interval: Duration,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Certificate, key and optional client CA of one TLS listener (validated: both or none of
/// certificate and key; a client CA only with them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// TLS of the three client-facing ports; `None` = plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    pub otlp_grpc: Option<TlsFiles>,
    pub otlp_http: Option<TlsFiles>,
    pub scaler: Option<TlsFiles>,
    pub reload_interval: Duration,
    pub handshake_timeout: Duration,
}

/// `--self-otlp-*`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfExportConfig {
    pub endpoint: String,
    pub interval: Duration,
}

fn tls_files(
    port: &'static str,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    client_ca: &Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let flag = |suffix: &str| -> &'static str {
        match (port, suffix) {
            ("otlp-grpc", "cert") => "otlp-grpc-tls-cert",
            ("otlp-grpc", "key") => "otlp-grpc-tls-key",
            ("otlp-grpc", _) => "otlp-grpc-tls-client-ca",
            ("otlp-http", "cert") => "otlp-http-tls-cert",
            ("otlp-http", "key") => "otlp-http-tls-key",
            ("otlp-http", _) => "otlp-http-tls-client-ca",
            (_, "cert") => "scaler-tls-cert",
            (_, "key") => "scaler-tls-key",
            _ => "scaler-tls-client-ca",
        }
    };
    match (cert, key) {
        (Some(cert), Some(key)) => {
            Ok(Some(TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: client_ca.clone() }))
        }
        (None, None) if client_ca.is_some() => Err(ConfigError {
            flag: flag("client-ca"),
            problem: format!("needs --{} and --{}", flag("cert"), flag("key")),
        }),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError { flag: flag("cert"), problem: format!("needs --{}", flag("key")) }),
        (None, Some(_)) => Err(ConfigError { flag: flag("key"), problem: format!("needs --{}", flag("cert")) }),
    }
}

/// Most io_uring OTLP/HTTP worker threads (`--http-workers`).
pub const HTTP_WORKER_COUNT_MAX: usize = 1024;

/// The validated configuration the server runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    pub scaler_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub retention_ms: i64,
    pub request_bytes_max: usize,
    pub series_count_max: usize,
    pub labels_per_series_max: usize,
    pub label_name_bytes_max: usize,
    pub label_value_bytes_max: usize,
    pub metric_name_bytes_max: usize,
    pub future_skew_ms_max: i64,
    pub streams_max: usize,
    pub triggers_max: usize,
    pub connections_max: usize,
    pub query_limits: QueryLimits,
    pub stream_resend_interval: Duration,
    pub no_match_is_error: bool,
    pub shard_count: usize,
    pub io_uring: IoUringMode,
    /// Threads of the io_uring OTLP/HTTP back-end (resolved: never 0).
    pub http_worker_count: usize,
    /// Low-priority threads that decode large bodies for gRPC and epoll HTTP (resolved: never 0).
    pub ingest_worker_count: usize,
    /// Threads of the scaler port's runtime (`--scaler-threads`, at most 64; 0 = the main runtime).
    pub scaler_thread_count: usize,
    /// Snapshots: where, how often, how many kept. `None` = off.
    pub snapshot: Option<SnapshotConfig>,
    pub tls: TlsConfig,
    pub self_export: Option<SelfExportConfig>,
    /// Per-connection deadlines and HTTP limits of every port.
    pub connection_limits: ConnectionLimits,
    pub shutdown_timeout: Duration,
    pub ingest_queue_wait: Duration,
    pub store_bytes_max: usize,
    pub series_key_bytes_max: usize,
    pub series_per_metric_max: usize,
    /// Series one query may visit.
    pub query_series_max: usize,
    pub query_timeout: Duration,
    pub admin_query_concurrency: usize,
    pub series_list_max: usize,
    pub series_list_bytes_max: usize,
}

/// What a connection may cost on any port, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub min_body_bytes_per_second: u64,
    pub write_timeout: Duration,
    /// HTTP/2 streams per connection on the OTLP/gRPC port (admin serves HTTP/1.1 only).
    pub concurrent_streams_max: u32,
    /// HTTP/2 streams per connection on the scaler port: at least `--max-streams` + 256.
    pub scaler_concurrent_streams_max: u32,
    pub header_bytes_max: usize,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
}

/// Streams per scaler connection beyond `--max-streams`: KEDA's GetMetrics and IsActive calls
/// share the connection with every StreamIsActive stream.
pub const SCALER_STREAM_HEADROOM: u32 = 256;

/// `--snapshot-*`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotConfig {
    pub dir: std::path::PathBuf,
    pub interval: Duration,
    pub keep: usize,
}

fn duration_ms(flag: &'static str, duration: Duration) -> Result<i64, ConfigError> {
    i64::try_from(duration.as_millis()).map_err(|_| ConfigError { flag, problem: format!("{duration:?} is too long") })
}

fn positive(flag: &'static str, value: usize) -> Result<usize, ConfigError> {
    if value == 0 {
        return Err(ConfigError { flag, problem: "must be greater than 0".into() });
    }
    Ok(value)
}

/// A positive value a stored label set can hold: its strings' lengths and its label count are
/// 16 bits ([`LABEL_STRING_BYTES_MAX`]).
fn within_label_set(flag: &'static str, value: usize) -> Result<usize, ConfigError> {
    if value > LABEL_STRING_BYTES_MAX {
        return Err(ConfigError { flag, problem: format!("must be at most {LABEL_STRING_BYTES_MAX}") });
    }
    positive(flag, value)
}

impl ServeArgs {
    /// Checks every value and builds the [`Config`].
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let retention_ms = duration_ms("retention", self.retention)?;
        if retention_ms < 1_000 {
            return Err(ConfigError { flag: "retention", problem: "must be at least 1s".into() });
        }
        if self.stream_resend_interval < Duration::from_millis(100) {
            return Err(ConfigError { flag: "stream-resend-interval", problem: "must be at least 100ms".into() });
        }
        if self.max_request_bytes < 1024 {
            return Err(ConfigError { flag: "max-request-bytes", problem: "must be at least 1024".into() });
        }
        let shard_count = match self.shards {
            0 => 2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let http_worker_count = match self.http_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        if http_worker_count > HTTP_WORKER_COUNT_MAX {
            return Err(ConfigError {
                flag: "http-workers",
                problem: format!("must be at most {HTTP_WORKER_COUNT_MAX}"),
            });
        }
        if self.snapshot_interval < Duration::from_millis(100) {
            return Err(ConfigError { flag: "snapshot-interval", problem: "must be at least 100ms".into() });
        }
        let snapshot = match &self.snapshot_dir {
            Some(dir) if dir.as_os_str().is_empty() => {
                return Err(ConfigError { flag: "snapshot-dir", problem: "must not be empty".into() })
            }
            Some(dir) => Some(SnapshotConfig {
                dir: dir.clone(),
                interval: self.snapshot_interval,
                keep: positive("snapshot-keep", self.snapshot_keep)?,
            }),
            None => None,
        };
        for (flag, interval) in [
            ("tls-reload-interval", self.tls_reload_interval),
            ("tls-handshake-timeout", self.tls_handshake_timeout),
            ("self-otlp-interval", self.self_otlp_interval),
        ] {
            if interval < Duration::from_millis(100) {
                return Err(ConfigError { flag, problem: "must be at least 100ms".into() });
            }
        }
        let tls = TlsConfig {
            otlp_grpc: tls_files(
                "otlp-grpc",
                &self.otlp_grpc_tls_cert,
                &self.otlp_grpc_tls_key,
                &self.otlp_grpc_tls_client_ca,
            )?,
            otlp_http: tls_files(
                "otlp-http",
                &self.otlp_http_tls_cert,
                &self.otlp_http_tls_key,
                &self.otlp_http_tls_client_ca,
            )?,
            scaler: tls_files("scaler", &self.scaler_tls_cert, &self.scaler_tls_key, &self.scaler_tls_client_ca)?,
            reload_interval: self.tls_reload_interval,
            handshake_timeout: self.tls_handshake_timeout,
        };
        if tls.otlp_http.is_some() && self.io_uring == IoUringMode::On {
            return Err(ConfigError {
                flag: "io-uring",
                problem: "`on` cannot serve OTLP/HTTP with TLS (the epoll back-end does); use `auto` or `off`".into(),
            });
        }
        let self_export = match &self.self_otlp_endpoint {
            Some(endpoint) if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) => {
                return Err(ConfigError {
                    flag: "self-otlp-endpoint",
                    problem: format!("`{endpoint}` is not an http:// or https:// URL"),
                })
            }
            Some(endpoint) => Some(SelfExportConfig { endpoint: endpoint.clone(), interval: self.self_otlp_interval }),
            None => None,
        };
        for (flag, interval) in [
            ("header-read-timeout", self.header_read_timeout),
            ("idle-timeout", self.idle_timeout),
            ("write-timeout", self.write_timeout),
            ("http2-keepalive-interval", self.http2_keepalive_interval),
            ("http2-keepalive-timeout", self.http2_keepalive_timeout),
            ("shutdown-timeout", self.shutdown_timeout),
            ("query-timeout", self.query_timeout),
        ] {
            if interval < Duration::from_millis(10) {
                return Err(ConfigError { flag, problem: "must be at least 10ms".into() });
            }
        }
        if self.max_header_bytes < 1024 {
            return Err(ConfigError { flag: "max-header-bytes", problem: "must be at least 1024".into() });
        }
        let streams_max = positive("max-streams", self.max_streams)?;
        let concurrent_streams_max = u32::try_from(positive(
            "max-concurrent-streams",
            usize::try_from(self.max_concurrent_streams).unwrap_or(usize::MAX),
        )?)
        .unwrap_or(u32::MAX);
        let connection_limits = ConnectionLimits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            min_body_bytes_per_second: self.min_body_bytes_per_second,
            write_timeout: self.write_timeout,
            concurrent_streams_max,
            scaler_concurrent_streams_max: u32::try_from(streams_max)
                .unwrap_or(u32::MAX)
                .saturating_add(SCALER_STREAM_HEADROOM)
                .max(concurrent_streams_max),
            header_bytes_max: self.max_header_bytes,
            http2_keepalive_interval: self.http2_keepalive_interval,
            http2_keepalive_timeout: self.http2_keepalive_timeout,
        };
        let series_key_bytes_max = positive("max-series-key-bytes", self.max_series_key_bytes)?;
        if self.max_store_bytes < 1024 * 1024 {
            return Err(ConfigError { flag: "max-store-bytes", problem: "must be at least 1048576 (1 MiB)".into() });
        }
        Ok(Config {
            connection_limits,
            shutdown_timeout: self.shutdown_timeout,
            ingest_queue_wait: self.ingest_queue_wait,
            store_bytes_max: self.max_store_bytes,
            series_key_bytes_max,
            series_per_metric_max: positive("max-series-per-metric", self.max_series_per_metric)?,
            query_series_max: positive("max-query-series", self.max_query_series)?,
            query_timeout: self.query_timeout,
            admin_query_concurrency: positive("admin-query-concurrency", self.admin_query_concurrency)?,
            series_list_max: positive("max-series-list", self.max_series_list)?,
            series_list_bytes_max: positive("max-series-list-bytes", self.max_series_list_bytes)?,
            tls,
            self_export,
            snapshot,
            otlp_grpc_addr: self.otlp_grpc_addr,
            otlp_http_addr: self.otlp_http_addr,
            scaler_addr: self.scaler_addr,
            admin_addr: self.admin_addr,
            retention_ms,
            request_bytes_max: self.max_request_bytes,
            series_count_max: positive("max-series", self.max_series)?,
            labels_per_series_max: within_label_set("max-labels-per-series", self.max_labels_per_series)?,
            label_name_bytes_max: within_label_set("max-label-name-bytes", self.max_label_name_bytes)?,
            label_value_bytes_max: within_label_set("max-label-value-bytes", self.max_label_value_bytes)?,
            metric_name_bytes_max: positive("max-metric-name-bytes", self.max_metric_name_bytes)?,
            future_skew_ms_max: duration_ms("max-future-skew", self.max_future_skew)?,
            streams_max,
            triggers_max: positive("max-triggers", self.max_triggers)?,
            connections_max: positive("max-connections", self.max_connections)?,
            query_limits: QueryLimits {
                query_bytes_max: positive("max-query-bytes", self.max_query_bytes)?,
                matchers_max: positive("max-query-matchers", self.max_query_matchers)?,
                ..QueryLimits::default()
            },
            stream_resend_interval: self.stream_resend_interval,
            no_match_is_error: self.no_match_is_error,
            shard_count: positive("shards", shard_count)?,
            ingest_worker_count: match self.ingest_workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n if n > 1024 => {
                    return Err(ConfigError { flag: "ingest-workers", problem: "must be at most 1024".into() })
                }
                n => n,
            },
            scaler_thread_count: match self.scaler_threads {
                n if n > 64 => {
                    return Err(ConfigError { flag: "scaler-threads", problem: "must be at most 64".into() })
                }
                n => n,
            },
            io_uring: self.io_uring,
            http_worker_count: positive("http-workers", http_worker_count)?,
        })
    }
}

impl Config {
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            shard_count: self.shard_count,
            series_count_max: self.series_count_max,
            retention_ms: self.retention_ms,
            bytes_max: self.store_bytes_max,
            series_per_metric_max: self.series_per_metric_max,
            future_skew_ms_max: self.future_skew_ms_max,
        }
    }
}

impl Default for Config {
    /// The default of every flag (an `OTELSCALE_*` variable set in the environment still applies).
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct DefaultsOnly {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let defaults = <DefaultsOnly as clap::Parser>::parse_from(["otelscale"]);
        defaults.serve.validate().expect("the default configuration is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let config = Config::default();
        assert_eq!(config.retention_ms, 120_000);
        assert_eq!(config.request_bytes_max, 16 * 1024 * 1024);
        assert_eq!(config.series_count_max, 1_000_000);
        assert_eq!(config.otlp_grpc_addr.port(), 4317);
        assert_eq!(config.otlp_http_addr.port(), 4318);
        assert_eq!(config.scaler_addr.port(), 8090);
        assert_eq!(config.admin_addr.port(), 8080);
        assert_eq!(config.io_uring, IoUringMode::Auto);
        assert!(config.http_worker_count >= 1);
        assert_eq!(config.scaler_thread_count, 1);
        assert_eq!(config.future_skew_ms_max, 10_000);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(20));
        let connection = config.connection_limits;
        assert_eq!(connection.header_read_timeout, Duration::from_secs(10));
        assert_eq!(connection.concurrent_streams_max, 128);
        assert_eq!(connection.scaler_concurrent_streams_max, 10_000 + SCALER_STREAM_HEADROOM);
        assert_eq!(config.series_per_metric_max, 250_000);
    }

    #[test]
    fn connection_and_cost_limits_are_validated() {
        assert_eq!(parse(&["--header-read-timeout", "1ms"]).unwrap_err().flag, "header-read-timeout");
        assert_eq!(parse(&["--shutdown-timeout", "0s"]).unwrap_err().flag, "shutdown-timeout");
        assert_eq!(parse(&["--max-concurrent-streams", "0"]).unwrap_err().flag, "max-concurrent-streams");
        assert_eq!(parse(&["--max-header-bytes", "100"]).unwrap_err().flag, "max-header-bytes");
        assert_eq!(parse(&["--max-store-bytes", "1000"]).unwrap_err().flag, "max-store-bytes");
        assert_eq!(parse(&["--max-series-per-metric", "0"]).unwrap_err().flag, "max-series-per-metric");
        assert_eq!(parse(&["--admin-query-concurrency", "0"]).unwrap_err().flag, "admin-query-concurrency");
        assert_eq!(parse(&["--scaler-threads", "0"]).unwrap().scaler_thread_count, 0);
        assert_eq!(parse(&["--scaler-threads", "65"]).unwrap_err().flag, "scaler-threads");
        assert_eq!(parse(&["--scaler-threads", "4"]).unwrap().scaler_thread_count, 4);
        // A stored label set's lengths are 16 bits.
        assert_eq!(parse(&["--max-label-value-bytes", "65536"]).unwrap_err().flag, "max-label-value-bytes");
        assert_eq!(parse(&["--max-label-name-bytes", "70000"]).unwrap_err().flag, "max-label-name-bytes");
        assert_eq!(parse(&["--max-labels-per-series", "65536"]).unwrap_err().flag, "max-labels-per-series");
        assert_eq!(parse(&["--max-label-value-bytes", "65535"]).unwrap().label_value_bytes_max, 65_535);
        // The scaler port always has room for every stream KEDA may open plus its calls.
        let config = parse(&["--max-streams", "10", "--max-concurrent-streams", "500"]).unwrap();
        assert_eq!(config.connection_limits.scaler_concurrent_streams_max, 500);
        let config = parse(&["--max-streams", "1000", "--max-concurrent-streams", "16"]).unwrap();
        assert_eq!(config.connection_limits.scaler_concurrent_streams_max, 1000 + SCALER_STREAM_HEADROOM);
    }

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let args = std::iter::once("otelscale").chain(args.iter().copied());
        <Cli as clap::Parser>::parse_from(args).serve.validate()
    }

    #[test]
    fn tls_flags_come_in_pairs_and_name_the_missing_one() {
        let config =
            parse(&["--scaler-tls-cert", "c.pem", "--scaler-tls-key", "k.pem", "--scaler-tls-client-ca", "ca.pem"])
                .unwrap();
        let scaler = config.tls.scaler.unwrap();
        assert_eq!(scaler.client_ca, Some(PathBuf::from("ca.pem")));
        assert!(config.tls.otlp_grpc.is_none() && config.tls.otlp_http.is_none());
        let err = parse(&["--otlp-grpc-tls-cert", "c.pem"]).unwrap_err();
        assert_eq!((err.flag, err.problem.as_str()), ("otlp-grpc-tls-cert", "needs --otlp-grpc-tls-key"));
        let err = parse(&["--otlp-http-tls-key", "k.pem"]).unwrap_err();
        assert_eq!(err.flag, "otlp-http-tls-key");
        let err = parse(&["--scaler-tls-client-ca", "ca.pem"]).unwrap_err();
        assert_eq!(err.flag, "scaler-tls-client-ca");
        let err = parse(&["--otlp-http-tls-cert", "c", "--otlp-http-tls-key", "k", "--io-uring", "on"]).unwrap_err();
        assert_eq!(err.flag, "io-uring");
    }

    #[test]
    fn logging_and_self_export_flags() {
        let config = parse(&["--self-otlp-endpoint", "http://collector:4317", "--self-otlp-interval", "2s"]).unwrap();
        let export = config.self_export.unwrap();
        assert_eq!((export.endpoint.as_str(), export.interval), ("http://collector:4317", Duration::from_secs(2)));
        assert_eq!(parse(&["--self-otlp-endpoint", "collector:4317"]).unwrap_err().flag, "self-otlp-endpoint");
        assert_eq!(parse(&["--tls-reload-interval", "1ms"]).unwrap_err().flag, "tls-reload-interval");
        assert!(parse(&[]).unwrap().self_export.is_none());
    }

    #[test]
    fn io_uring_mode_and_http_workers() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cli = <Cli as clap::Parser>::parse_from(["otelscale", "--io-uring", "off", "--http-workers", "3"]);
        let config = cli.serve.validate().unwrap();
        assert_eq!(config.io_uring, IoUringMode::Off);
        assert_eq!(config.http_worker_count, 3);
        assert!(<Cli as clap::Parser>::try_parse_from(["otelscale", "--io-uring", "maybe"]).is_err());
        let cli = <Cli as clap::Parser>::parse_from(["otelscale", "--http-workers", "5000"]);
        assert_eq!(cli.serve.validate().unwrap_err().flag, "http-workers");
    }

    #[test]
    fn bad_values_name_the_flag() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cli = <Cli as clap::Parser>::parse_from(["otelscale", "--max-series", "0"]);
        let err = cli.serve.validate().unwrap_err();
        assert_eq!(err.flag, "max-series");
        assert!(err.to_string().contains("--max-series"));
        let cli = <Cli as clap::Parser>::parse_from(["otelscale", "--retention", "10ms"]);
        assert_eq!(cli.serve.validate().unwrap_err().flag, "retention");
        assert!(<Cli as clap::Parser>::try_parse_from(["otelscale", "--retention", "soon"]).is_err());
    }
}
