//! The io_uring back-end: `--http-workers` OS threads, each with its own tokio-uring runtime
//! (a current-thread tokio runtime plus a ring), serving whole connections on its thread and
//! decoding and storing bodies inline (thread-per-core: no hand-off, no blocking pool).
//!
//! Who accepts: every worker, from its own `dup` of the one listening socket, registered with its
//! worker's runtime; the [`AcceptGate`] makes them take turns. Not SO_REUSEPORT: `server::run`
//! takes already bound listeners (the tests bind 127.0.0.1:0 without the option), and a reuseport
//! group cannot be formed around a socket bound without it; with the gate the spread is even
//! for any number of connections, where reuseport hashing puts two connections on one worker
//! half the time. Accepting goes through the runtime's epoll, not the ring: tokio-uring cannot
//! cancel an accept in flight, and one left in the ring at shutdown would take a connection
//! nobody serves. The connection's reads and writes, the hot path, go through the ring.
//!
//! Interrupting: cancelling a tokio-uring read does not withdraw it from the ring, so an
//! interrupted read or write (server shutdown between requests, eviction or the shutdown
//! deadline through the registry, a lingering close) shuts the socket down, which completes the
//! operation at once, and then awaits it. A read interrupted by a connection deadline shuts down
//! only the reading side, so the driver can still send its 408.
//!
//! A worker whose thread panics reports it at once (the server stops on it): its runtime is gone.

use std::io;
use std::net::Shutdown;
use std::sync::{mpsc, Arc};

use bytes::BytesMut;
use tokio::sync::{mpsc as async_mpsc, oneshot};
use tokio_uring::buf::BoundedBuf;
use tokio_util::sync::CancellationToken;

use super::driver::{self, ConnectionIo, DriveContext, Interrupt, Interrupted, ReadOutcome};
use super::otlp::ExportBody;
use super::{
    accept_connections, AcceptContext, AcceptGate, Backend, ConnectionSettings, RunningServer, ServeError, ServeOptions,
};
use crate::ingest::{ExportError, ExportOutcome, Ingestor, Transport};
use crate::server::registry::ConnectionRegistry;

/// Submission queue entries per ring: one read or write in flight per connection; a full queue
/// is submitted and drained by tokio-uring, not refused.
const RING_ENTRIES: u32 = 256;

/// What a worker thread needs.
struct WorkerContext {
    worker_idx: usize,
    listener: std::net::TcpListener,
    shared: WorkerShared,
}

/// A started worker thread.
struct Worker {
    thread: std::thread::JoinHandle<()>,
    /// `true`: start serving; `false`: start-up failed elsewhere, end.
    go: mpsc::SyncSender<bool>,
    /// Resolves when the worker has drained and dropped its runtime; an error means it panicked.
    done: oneshot::Receiver<()>,
}

/// Starts the workers. Each one proves io_uring works by creating its ring and completing a
/// no-op through it; if any cannot, all end and the error says why.
pub(super) async fn start(
    listener: &std::net::TcpListener,
    options: ServeOptions,
    ingestor: &Arc<Ingestor>,
    cancel: &CancellationToken,
) -> io::Result<RunningServer> {
    let worker_count = options.worker_count;
    let gate = AcceptGate::new(worker_count);
    let (failures, failure_receiver) = async_mpsc::unbounded_channel();
    let shared = WorkerShared {
        gate,
        registry: Arc::clone(&options.registry),
        ingestor: Arc::clone(ingestor),
        settings: options.connection_settings(),
        cancel: cancel.clone(),
        failures,
    };
    let mut workers = Vec::with_capacity(worker_count);
    let mut startup_error = None;
    for worker_idx in 0..worker_count {
        match start_worker(worker_idx, listener, &shared).await {
            Ok(worker) => workers.push(worker),
            Err((err, worker)) => {
                workers.extend(worker);
                startup_error = Some(err);
                break;
            }
        }
    }
    if let Some(err) = startup_error {
        for worker in &workers {
            let _ = worker.go.send(false);
        }
        for worker in workers {
            let _ = worker.done.await;
            let _ = tokio::task::spawn_blocking(move || worker.thread.join()).await;
        }
        return Err(err);
    }
    for worker in &workers {
        let _ = worker.go.send(true);
    }
    tracing::info!(
        backend = "io_uring",
        workers = worker_count,
        connections_max = options.registry.connections_max(),
        "OTLP/HTTP serving"
    );
    // Only the workers hold senders now: the channel closes when they all end.
    drop(shared);
    let finished = tokio::spawn(async move {
        let mut result = Ok(());
        for (worker_idx, worker) in workers.into_iter().enumerate() {
            if worker.done.await.is_err() {
                result = Err(ServeError::WorkerFailed { worker_idx });
            }
            let _ = tokio::task::spawn_blocking(move || worker.thread.join()).await;
        }
        tracing::debug!(backend = "io_uring", "OTLP/HTTP stopped");
        result
    });
    Ok(RunningServer { backend: Backend::IoUring { worker_count }, finished, failures: failure_receiver })
}

/// What every worker shares.
#[derive(Clone)]
struct WorkerShared {
    gate: Arc<AcceptGate>,
    registry: Arc<ConnectionRegistry>,
    ingestor: Arc<Ingestor>,
    settings: ConnectionSettings,
    cancel: CancellationToken,
    failures: async_mpsc::UnboundedSender<ServeError>,
}

/// Spawns worker `worker_idx` and waits until its ring works (or not). On failure the worker,
/// if its thread started, is returned too so the caller can end it.
async fn start_worker(
    worker_idx: usize,
    listener: &std::net::TcpListener,
    shared: &WorkerShared,
) -> Result<Worker, (io::Error, Option<Worker>)> {
    let listener = listener.try_clone().map_err(|err| (err, None))?;
    let context = WorkerContext { worker_idx, listener, shared: shared.clone() };
    let (ready_sender, ready) = oneshot::channel();
    let (go, go_receiver) = mpsc::sync_channel(1);
    let (done_sender, done) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("http-uring-{worker_idx}"))
        .spawn(move || run_worker(context, ready_sender, go_receiver, done_sender))
        .map_err(|err| (err, None))?;
    let worker = Worker { thread, go, done };
    match ready.await {
        Ok(Ok(())) => Ok(worker),
        Ok(Err(err)) => Err((err, Some(worker))),
        Err(_) => Err((io::Error::other(format!("io_uring worker {worker_idx} ended during start-up")), Some(worker))),
    }
}

/// A worker thread: ring, then (after `go`) accept and serve until cancelled and drained.
fn run_worker(
    context: WorkerContext,
    ready: oneshot::Sender<io::Result<()>>,
    go: mpsc::Receiver<bool>,
    done: oneshot::Sender<()>,
) {
    let WorkerContext {
        worker_idx,
        listener,
        shared: WorkerShared { gate, registry, ingestor, settings, cancel, failures },
    } = context;
    // However the thread ends, the other workers stop waiting for its turn (and a panic is
    // reported at once).
    let _retire = RetireOnDrop { gate: Arc::clone(&gate), worker_idx, failures: failures.clone() };
    let runtime = match tokio_uring::Runtime::new(tokio_uring::builder().entries(RING_ENTRIES)) {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = ready.send(Err(err));
            let _ = done.send(());
            return;
        }
    };
    // A no-op through the ring proves submission works: a seccomp filter may allow creating a
    // ring and still refuse io_uring_enter.
    let listener = runtime.block_on(async move {
        tokio_uring::no_op().await?;
        tokio::net::TcpListener::from_std(listener)
    });
    let listener = match listener {
        Ok(listener) => listener,
        Err(err) => {
            let _ = ready.send(Err(err));
            drop(runtime);
            let _ = done.send(());
            return;
        }
    };
    let _ = ready.send(Ok(()));
    if go.recv() == Ok(true) {
        runtime.block_on(async move {
            let connection_cancel = cancel.clone();
            let context = AcceptContext { gate, worker_idx, registry, cancel, failures };
            accept_connections(listener, context, move |connections, stream, peer, slot| {
                let stream = match into_uring_stream(stream) {
                    Ok(stream) => stream,
                    Err(err) => {
                        tracing::warn!(worker_idx, %peer, error = %err, "cannot hand a connection to io_uring");
                        return;
                    }
                };
                let ingestor = Arc::clone(&ingestor);
                let shutdown = connection_cancel.clone();
                connections.spawn_local(async move {
                    let connection = Arc::clone(slot.registration().connection());
                    let context = DriveContext {
                        peer,
                        ingestor: &ingestor,
                        settings,
                        shutdown: &shutdown,
                        connection: &connection,
                    };
                    let mut io = UringIo { stream };
                    driver::drive(&mut io, &context).await;
                    drop(slot);
                });
            })
            .await;
        });
    } else {
        // Registered with this runtime's reactor: deregister while it still runs.
        runtime.block_on(async move { drop(listener) });
    }
    // Dropping the runtime cancels whatever is left in the ring before the worker reports.
    drop(runtime);
    let _ = done.send(());
}

/// Marks a worker retired in the [`AcceptGate`] when its thread ends, even by panic, and reports
/// a panic as the worker's failure.
struct RetireOnDrop {
    gate: Arc<AcceptGate>,
    worker_idx: usize,
    failures: async_mpsc::UnboundedSender<ServeError>,
}

impl Drop for RetireOnDrop {
    fn drop(&mut self) {
        self.gate.retire(self.worker_idx);
        if std::thread::panicking() {
            let _ = self.failures.send(ServeError::WorkerFailed { worker_idx: self.worker_idx });
        }
    }
}

/// Moves an accepted stream from the runtime's epoll to the ring. The socket is made blocking
/// again (tokio made it non-blocking): the ring then waits for data itself (it polls the socket
/// internally, no thread blocks), where a non-blocking socket may complete a read with EAGAIN.
fn into_uring_stream(stream: tokio::net::TcpStream) -> io::Result<tokio_uring::net::TcpStream> {
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(tokio_uring::net::TcpStream::from_std(stream))
}

struct UringIo {
    stream: tokio_uring::net::TcpStream,
}

impl UringIo {
    /// Ends the socket so an operation in flight on it completes at once.
    fn abort_in_flight(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Ends the reading side only, which completes a read in flight at once and leaves the
    /// connection able to send an answer (the 408 to a request that timed out). Reads from then
    /// on return what already arrived, then end.
    fn abort_read_in_flight(&self) {
        let _ = self.stream.shutdown(Shutdown::Read);
    }
}

impl ConnectionIo for UringIo {
    async fn read(&mut self, buffer: BytesMut, interrupt: Interrupt<'_>) -> (ReadOutcome, BytesMut) {
        let filled = buffer.len();
        let read = self.stream.read(buffer.slice(filled..));
        tokio::pin!(read);
        let interrupted = tokio::select! {
            biased;
            (result, slice) = &mut read => return (ReadOutcome::from(result), slice.into_inner()),
            interrupted = interrupt.wait() => interrupted,
        };
        match interrupted {
            // The driver answers a request that ran out of time: keep the sending side.
            Interrupted::DeadlinePassed => self.abort_read_in_flight(),
            Interrupted::Shutdown | Interrupted::Closed => self.abort_in_flight(),
        }
        let (_, slice) = read.await;
        (ReadOutcome::Interrupted(interrupted), slice.into_inner())
    }

    async fn write_all(&mut self, output: Vec<u8>, interrupt: Interrupt<'_>) -> (io::Result<()>, Vec<u8>) {
        let write = self.stream.write_all(output);
        tokio::pin!(write);
        let interrupted = tokio::select! {
            biased;
            (result, output) = &mut write => return (result, output),
            interrupted = interrupt.wait() => interrupted,
        };
        self.abort_in_flight();
        let (_, output) = write.await;
        (Err(driver::interrupted_write(interrupted)), output)
    }

    async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Small uncompressed bodies are decoded inline on this ring's thread (thread-per-core);
    /// compressed or large ones go to the ingest workers and this connection's task awaits
    /// them, so a heavy body does not stall the ring's other connections while it inflates and
    /// decodes ([`Ingestor::export_body`] decides, and catches panics either way).
    async fn export(&mut self, ingestor: &Arc<Ingestor>, export: ExportBody) -> Result<ExportOutcome, ExportError> {
        ingestor.export_body(export.body, export.content_encoding, export.format, Transport::Http).await
    }
}
