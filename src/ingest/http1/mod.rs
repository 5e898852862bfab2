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
//! Both share the accept gate (`--max-connections` across all workers, and the io_uring workers
//! take turns so connections spread evenly), the per-connection driver (`driver.rs`) and graceful
//! shutdown: on cancel the workers stop accepting, close idle keep-alive connections, finish the
//! requests in progress (each read bounded by a timeout), then end.

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
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, IoUringMode};
use crate::ingest::Ingestor;
use crate::tls::ReloadingTls;
use connection::Limits;

/// How long a connection may stay silent in the middle of a request before it is closed.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long writing one batch of answers may take before the connection is closed.
const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// After answering and shutting down the write side of a connection that may still be sending,
/// how long to read (and discard) until the peer closes, so it reads the answer before a reset.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
/// The most bytes discarded while lingering.
const LINGER_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Answers pile up in the output buffer while pipelined requests are handled; past this size
/// they are written before the next request is handled.
const OUTPUT_FLUSH_BYTES: usize = 64 * 1024;
/// Pause after a failed accept (such as EMFILE) instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What [`serve`] needs from the [`Config`].
#[derive(Clone)]
pub struct ServeOptions {
    pub io_uring: IoUringMode,
    /// io_uring worker threads.
    pub worker_count: usize,
    /// Most open connections across all workers.
    pub connections_max: usize,
    /// TLS, served by the epoll back-end (rustls has no io_uring driver here).
    pub tls: Option<Arc<ReloadingTls>>,
    pub tls_handshake_timeout: Duration,
}

impl ServeOptions {
    pub fn from_config(config: &Config) -> ServeOptions {
        ServeOptions {
            io_uring: config.io_uring,
            worker_count: config.http_worker_count,
            connections_max: config.connections_max,
            tls: None,
            tls_handshake_timeout: config.tls.handshake_timeout,
        }
    }
}

/// The back-end [`serve`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    IoUring { worker_count: usize },
    Epoll,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--io-uring on, but io_uring is unavailable: {0} (use --io-uring auto or off)")]
    IoUringUnavailable(#[source] io::Error),
    #[error("cannot hand the OTLP/HTTP listener to its workers: {0}")]
    Listener(#[source] io::Error),
    #[error("io_uring OTLP/HTTP worker {worker_idx} ended abnormally (panicked)")]
    WorkerFailed { worker_idx: usize },
    #[error("the OTLP/HTTP accept task ended abnormally: {0}")]
    AcceptTask(String),
}

/// A running OTLP/HTTP receiver.
#[derive(Debug)]
pub struct RunningServer {
    backend: Backend,
    finished: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Resolves once the receiver has stopped after the cancel token fired and every
    /// connection has been answered and closed.
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.finished.await {
            Ok(result) => result,
            Err(join_error) => Err(ServeError::AcceptTask(join_error.to_string())),
        }
    }
}

/// Serves OTLP/HTTP on `listener` until `cancel` fires, with the back-end `options.io_uring`
/// asks for: `auto` probes io_uring by starting the workers' rings and falls back to epoll with
/// a warning naming the reason; `on` fails instead.
pub async fn serve(
    listener: TcpListener,
    options: ServeOptions,
    ingestor: Arc<Ingestor>,
    cancel: CancellationToken,
) -> Result<RunningServer, ServeError> {
    let limits = Limits::new(ingestor.request_bytes_max());
    let listener = match options.io_uring {
        IoUringMode::Off => listener,
        IoUringMode::Auto if options.tls.is_some() => {
            tracing::info!("OTLP/HTTP with TLS is served by the epoll back-end");
            listener
        }
        mode @ (IoUringMode::On | IoUringMode::Auto) => {
            let std_listener = listener.into_std().map_err(ServeError::Listener)?;
            match start_io_uring(&std_listener, options.clone(), limits, &ingestor, &cancel).await {
                Ok(running) => return Ok(running),
                Err(reason) if mode == IoUringMode::Auto => {
                    tracing::warn!(reason = %reason, "io_uring is unavailable: OTLP/HTTP is served with epoll");
                    TcpListener::from_std(std_listener).map_err(ServeError::Listener)?
                }
                Err(reason) => return Err(ServeError::IoUringUnavailable(reason)),
            }
        }
    };
    Ok(epoll::start(listener, options, limits, ingestor, cancel))
}

#[cfg(target_os = "linux")]
async fn start_io_uring(
    listener: &std::net::TcpListener,
    options: ServeOptions,
    limits: Limits,
    ingestor: &Arc<Ingestor>,
    cancel: &CancellationToken,
) -> io::Result<RunningServer> {
    uring::start(listener, options, limits, ingestor, cancel).await
}

#[cfg(not(target_os = "linux"))]
async fn start_io_uring(
    _listener: &std::net::TcpListener,
    _options: ServeOptions,
    _limits: Limits,
    _ingestor: &Arc<Ingestor>,
    _cancel: &CancellationToken,
) -> io::Result<RunningServer> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "io_uring exists only on Linux"))
}

/// Admission of connections across the workers of one listener: a permit per open connection
/// (`--max-connections`), and turns: a worker accepts only while no other running worker has
/// fewer open connections, so the kernel waking whichever worker polls first does not pile the
/// connections onto one core.
#[derive(Debug)]
struct AcceptGate {
    permits: Arc<Semaphore>,
    open_by_worker: Box<[AtomicUsize]>,
    /// Workers that stopped (or failed) no longer take turns.
    retired_by_worker: Box<[AtomicBool]>,
    changed: Notify,
}

/// An open connection's share of the [`AcceptGate`]; returned when dropped.
#[derive(Debug)]
struct ConnectionSlot {
    gate: Arc<AcceptGate>,
    worker_idx: usize,
    _permit: OwnedSemaphorePermit,
}

impl AcceptGate {
    fn new(connections_max: usize, worker_count: usize) -> Arc<AcceptGate> {
        assert!(worker_count > 0, "an accept gate needs a worker");
        Arc::new(AcceptGate {
            permits: Arc::new(Semaphore::new(connections_max.min(Semaphore::MAX_PERMITS))),
            open_by_worker: (0..worker_count).map(|_| AtomicUsize::new(0)).collect(),
            retired_by_worker: (0..worker_count).map(|_| AtomicBool::new(false)).collect(),
            changed: Notify::new(),
        })
    }

    /// Waits for `worker_idx`'s turn and a free connection permit.
    async fn admit(&self, worker_idx: usize) -> OwnedSemaphorePermit {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change between the check and the wait wakes it.
            changed.as_mut().enable();
            if self.is_least_loaded(worker_idx) {
                break;
            }
            changed.await;
        }
        Arc::clone(&self.permits).acquire_owned().await.expect("the accept gate never closes its semaphore")
    }

    fn is_least_loaded(&self, worker_idx: usize) -> bool {
        let mine = self.open_by_worker[worker_idx].load(Ordering::Acquire);
        self.open_by_worker
            .iter()
            .zip(self.retired_by_worker.iter())
            .all(|(open, retired)| retired.load(Ordering::Acquire) || open.load(Ordering::Acquire) >= mine)
    }

    /// Counts an accepted connection of `worker_idx`.
    fn open(self: &Arc<Self>, worker_idx: usize, permit: OwnedSemaphorePermit) -> ConnectionSlot {
        self.open_by_worker[worker_idx].fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        ConnectionSlot { gate: Arc::clone(self), worker_idx, _permit: permit }
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

/// Accepts connections for worker `worker_idx` until `cancel` fires; `spawn` starts a task per
/// connection in the given set. Returns after every connection task has ended.
async fn accept_connections<Spawn>(
    listener: TcpListener,
    gate: Arc<AcceptGate>,
    worker_idx: usize,
    cancel: CancellationToken,
    mut spawn: Spawn,
) where
    Spawn: FnMut(&mut tokio::task::JoinSet<()>, tokio::net::TcpStream, std::net::SocketAddr, ConnectionSlot),
{
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Reap the finished connection tasks so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            accepted = async {
                let permit = gate.admit(worker_idx).await;
                listener.accept().await.map(|(stream, peer)| (stream, peer, permit))
            } => accepted,
        };
        match accepted {
            Ok((stream, peer, permit)) => {
                // Answers are written whole; Nagle would only delay them.
                let _ = stream.set_nodelay(true);
                spawn(&mut connections, stream, peer, gate.open(worker_idx, permit));
            }
            Err(err) => {
                tracing::warn!(worker_idx, error = %err, "OTLP/HTTP accept failed");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                }
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
