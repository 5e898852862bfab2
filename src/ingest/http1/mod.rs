//! The OTLP/HTTP receiver: a sans-IO HTTP/1.1 core ([`connection`]) and the OTLP answers
//! ([`otlp`]), driven by one of two I/O back-ends chosen by `--io-uring`:
//!
//! - **io_uring** (`uring.rs`, Linux): `--http-workers` OS threads, each running its own
//!   tokio-uring runtime. Every worker accepts from the one listening socket (a `dup` of it,
//!   registered with the worker's own runtime) and serves its connections start to finish on its
//!   thread, decoding and storing bodies inline: thread-per-core, no hand-off. Socket reads and
//!   writes go through the ring.
//! - **epoll** (`epoll.rs`): the same core on the main tokio runtime; bodies over 8 KiB are
//!   decoded on the low-priority ingest workers ([`Ingestor::export_body`]).
//!
//! Both share the accept gate (the io_uring workers take turns so connections spread evenly),
//! the port's connection registry (`server::registry`: `--max-connections` across all workers,
//! with an unfinished or idle connection evicted to admit a new one), the per-connection driver
//! (`driver.rs`) with the connection deadlines of `server::deadlines` (header, idle, minimum body
//! rate, write), the accept-error policy of `server` (a dead listener is reported at once through
//! `RunningServer::failed`), and graceful shutdown: on cancel the workers stop accepting, close
//! idle connections and unfinished heads, finish the requests in progress, then end; past the
//! server's shutdown deadline the registry closes whatever is left.

pub mod connection;
mod driver;
mod epoll;
pub mod otlp;
#[cfg(target_os = "linux")]
mod uring;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConnectionLimits, IoUringMode};
use crate::ingest::Ingestor;
use crate::server::deadlines::Deadlines;
use crate::server::registry::{ConnectionRegistry, Registration};
use crate::server::{accept_error_is_transient, ACCEPT_ERROR_BACKOFF};
use crate::tls::ReloadingTls;
use connection::Limits;

/// After answering and shutting down the write side of a connection that may still be sending,
/// how long to read (and discard) until the peer closes, so it reads the answer before a reset.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
/// The most bytes discarded while lingering.
const LINGER_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Answers pile up in the output buffer while pipelined requests are handled; past this size
/// they are written before the next request is handled.
const OUTPUT_FLUSH_BYTES: usize = 64 * 1024;

/// What [`serve`] needs from the [`Config`].
#[derive(Clone)]
pub(crate) struct ServeOptions {
    pub io_uring: IoUringMode,
    /// io_uring worker threads.
    pub worker_count: usize,
    /// Deadlines and the head limit of every connection.
    pub connection_limits: ConnectionLimits,
    /// `--max-request-bytes`, the largest body as received.
    pub body_bytes_max: usize,
    /// The port's open connections (`--max-connections` across all workers).
    pub registry: Arc<ConnectionRegistry>,
    /// TLS, served by the epoll back-end (rustls has no io_uring driver here).
    pub tls: Option<Arc<ReloadingTls>>,
    pub tls_handshake_timeout: Duration,
}

impl ServeOptions {
    pub(crate) fn from_config(config: &Config, registry: Arc<ConnectionRegistry>) -> ServeOptions {
        ServeOptions {
            io_uring: config.io_uring,
            worker_count: config.http_worker_count,
            connection_limits: config.connection_limits,
            body_bytes_max: config.request_bytes_max,
            registry,
            tls: None,
            tls_handshake_timeout: config.tls.handshake_timeout,
        }
    }

    fn connection_settings(&self) -> ConnectionSettings {
        ConnectionSettings {
            limits: Limits {
                head_bytes_max: self.connection_limits.header_bytes_max,
                body_bytes_max: self.body_bytes_max,
            },
            deadlines: Deadlines::new(&self.connection_limits),
        }
    }
}

/// The limits and deadlines every connection's driver works with.
#[derive(Debug, Clone, Copy)]
struct ConnectionSettings {
    limits: Limits,
    deadlines: Deadlines,
}

/// The back-end [`serve`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    IoUring { worker_count: usize },
    Epoll,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    #[error("--io-uring on, but io_uring is unavailable: {0} (use --io-uring auto or off)")]
    IoUringUnavailable(#[source] io::Error),
    #[error("cannot hand the OTLP/HTTP listener to its workers: {0}")]
    Listener(#[source] io::Error),
    #[error("io_uring OTLP/HTTP worker {worker_idx} ended abnormally (panicked)")]
    WorkerFailed { worker_idx: usize },
    #[error("the OTLP/HTTP accept task ended abnormally: {0}")]
    AcceptTask(String),
    #[error("the OTLP/HTTP listener failed: {0}")]
    Accept(#[source] io::Error),
}

/// A running OTLP/HTTP receiver.
#[derive(Debug)]
pub(crate) struct RunningServer {
    backend: Backend,
    finished: JoinHandle<Result<(), ServeError>>,
    /// Failures while serving (a dead listener, a worker that panicked), reported at once.
    failures: mpsc::UnboundedReceiver<ServeError>,
}

impl RunningServer {
    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// Resolves at the first failure of a listener, an accept loop or a worker's runtime while
    /// serving (or when every accept loop has ended, which before shutdown is a failure too).
    pub(crate) async fn failed(&mut self) -> ServeError {
        match self.failures.recv().await {
            Some(err) => err,
            None => ServeError::AcceptTask("every OTLP/HTTP accept loop ended".into()),
        }
    }

    /// Resolves once the receiver has stopped after the cancel token fired and every
    /// connection has been answered and closed.
    pub(crate) async fn wait(self) -> Result<(), ServeError> {
        match self.finished.await {
            Ok(result) => result,
            Err(join_error) => Err(ServeError::AcceptTask(join_error.to_string())),
        }
    }
}

/// Serves OTLP/HTTP on `listener` until `cancel` fires, with the back-end `options.io_uring`
/// asks for: `auto` probes io_uring by starting the workers' rings and falls back to epoll with
/// a warning naming the reason; `on` fails instead.
pub(crate) async fn serve(
    listener: TcpListener,
    options: ServeOptions,
    ingestor: Arc<Ingestor>,
    cancel: CancellationToken,
) -> Result<RunningServer, ServeError> {
    let listener = match options.io_uring {
        IoUringMode::Off => listener,
        IoUringMode::Auto if options.tls.is_some() => {
            tracing::info!("OTLP/HTTP with TLS is served by the epoll back-end");
            listener
        }
        mode @ (IoUringMode::On | IoUringMode::Auto) => {
            let std_listener = listener.into_std().map_err(ServeError::Listener)?;
            match start_io_uring(&std_listener, options.clone(), &ingestor, &cancel).await {
                Ok(running) => return Ok(running),
                Err(reason) if mode == IoUringMode::Auto => {
                    tracing::warn!(reason = %reason, "io_uring is unavailable: OTLP/HTTP is served with epoll");
                    TcpListener::from_std(std_listener).map_err(ServeError::Listener)?
                }
                Err(reason) => return Err(ServeError::IoUringUnavailable(reason)),
            }
        }
    };
    Ok(epoll::start(listener, options, ingestor, cancel))
}

#[cfg(target_os = "linux")]
async fn start_io_uring(
    listener: &std::net::TcpListener,
    options: ServeOptions,
    ingestor: &Arc<Ingestor>,
    cancel: &CancellationToken,
) -> io::Result<RunningServer> {
    uring::start(listener, options, ingestor, cancel).await
}

#[cfg(not(target_os = "linux"))]
async fn start_io_uring(
    _listener: &std::net::TcpListener,
    _options: ServeOptions,
    _ingestor: &Arc<Ingestor>,
    _cancel: &CancellationToken,
) -> io::Result<RunningServer> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "io_uring exists only on Linux"))
}

/// Turns across the workers of one listener: a worker accepts only while no other running
/// worker has fewer open connections, so the kernel waking whichever worker polls first does not
/// pile the connections onto one core. (How many connections may be open is the registry's.)
#[derive(Debug)]
struct AcceptGate {
    open_by_worker: Box<[AtomicUsize]>,
    /// Workers that stopped (or failed) no longer take turns.
    retired_by_worker: Box<[AtomicBool]>,
    changed: Notify,
}

/// An open connection's share of the [`AcceptGate`] and its place in the registry; both are
/// returned when it is dropped.
#[derive(Debug)]
struct ConnectionSlot {
    gate: Arc<AcceptGate>,
    worker_idx: usize,
    registration: Registration,
}

impl ConnectionSlot {
    fn registration(&self) -> &Registration {
        &self.registration
    }
}

impl AcceptGate {
    fn new(worker_count: usize) -> Arc<AcceptGate> {
        assert!(worker_count > 0, "an accept gate needs a worker");
        Arc::new(AcceptGate {
            open_by_worker: (0..worker_count).map(|_| AtomicUsize::new(0)).collect(),
            retired_by_worker: (0..worker_count).map(|_| AtomicBool::new(false)).collect(),
            changed: Notify::new(),
        })
    }

    /// Waits for `worker_idx`'s turn.
    async fn take_turn(&self, worker_idx: usize) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change between the check and the wait wakes it.
            changed.as_mut().enable();
            if self.is_least_loaded(worker_idx) {
                return;
            }
            changed.await;
        }
    }

    fn is_least_loaded(&self, worker_idx: usize) -> bool {
        let mine = self.open_by_worker[worker_idx].load(Ordering::Acquire);
        self.open_by_worker
            .iter()
            .zip(self.retired_by_worker.iter())
            .all(|(open, retired)| retired.load(Ordering::Acquire) || open.load(Ordering::Acquire) >= mine)
    }

    /// Counts an admitted connection of `worker_idx`.
    fn open(self: &Arc<Self>, worker_idx: usize, registration: Registration) -> ConnectionSlot {
        self.open_by_worker[worker_idx].fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        ConnectionSlot { gate: Arc::clone(self), worker_idx, registration }
    }

    /// `worker_idx` stopped accepting: the others no longer wait for its turn.
    fn retire(&self, worker_idx: usize) {
        self.retired_by_worker[worker_idx].store(true, Ordering::Release);
        self.changed.notify_waiters();
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.gate.open_by_worker[self.worker_idx].fetch_sub(1, Ordering::AcqRel);
        self.gate.changed.notify_waiters();
    }
}

/// What an accept loop needs besides its listener.
struct AcceptContext {
    gate: Arc<AcceptGate>,
    worker_idx: usize,
    registry: Arc<ConnectionRegistry>,
    cancel: CancellationToken,
    /// Where a dead listener is reported, at once (the server stops on it).
    failures: mpsc::UnboundedSender<ServeError>,
}

/// Accepts connections for worker `worker_idx` until `cancel` fires or the listener fails;
/// `spawn` starts a task per connection in the given set. Returns after every connection task
/// has ended.
async fn accept_connections<Spawn>(listener: TcpListener, context: AcceptContext, mut spawn: Spawn)
where
    Spawn: FnMut(&mut tokio::task::JoinSet<()>, tokio::net::TcpStream, std::net::SocketAddr, ConnectionSlot),
{
    let AcceptContext { gate, worker_idx, registry, cancel, failures } = context;
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Reap the finished connection tasks so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            accepted = async {
                gate.take_turn(worker_idx).await;
                listener.accept().await
            } => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Answers are written whole; Nagle would only delay them.
                let _ = stream.set_nodelay(true);
                let registration = tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    registration = registry.admit(peer) => registration,
                };
                spawn(&mut connections, stream, peer, gate.open(worker_idx, registration));
            }
            Err(err) if accept_error_is_transient(&err) => {
                tracing::warn!(worker_idx, error = %err, "OTLP/HTTP accept failed; retrying");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                }
            }
            Err(err) => {
                tracing::error!(worker_idx, error = %err, "the OTLP/HTTP listener failed");
                let _ = failures.send(ServeError::Accept(err));
                break;
            }
        }
    }
    drop(listener);
    gate.retire(worker_idx);
    let draining = connections.len();
    if draining > 0 {
        tracing::debug!(worker_idx, connections = draining, "OTLP/HTTP draining connections");
    }
    while connections.join_next().await.is_some() {}
}
