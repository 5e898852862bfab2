//! One connection, driven: the loop that feeds a [`Connection`] with socket reads, answers its
//! requests through [`otlp`], and writes the answers. Generic over [`ConnectionIo`], which each
//! back-end implements for its socket type (tokio's `TcpStream`, tokio-uring's `TcpStream`).
//!
//! The driver keeps the connection deadlines of `server::deadlines` (the core has no clock):
//! before the first request, the header deadline from the accept (or the end of the TLS
//! handshake); between requests, the idle timeout; a request head, the header deadline from its
//! first byte (or from the end of the previous request, for pipelined bytes already received),
//! never restarted by later bytes; a request body, the minimum body rate. A request that misses
//! its deadline is answered 408 and closed. It reports the phase to the port's registry (busy
//! while a request is handled and answered) and ends at once when the registry closes it
//! (evicted, or past the shutdown deadline). Request handling is the handler boundary of the
//! panic policy: a panic is answered 500 and the connection keeps serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection::{CloseReason, Connection, Progress, Request, Response, Status, Step};
use super::otlp::{self, Dispatch, ExportBody};
use super::{ConnectionSettings, LINGER_BYTES_MAX, LINGER_TIMEOUT, OUTPUT_FLUSH_BYTES};
use crate::ingest::{ExportError, ExportOutcome, Ingestor, Transport};
use crate::outcome::{PanicSite, RequestOutcome};
use crate::server::deadlines::{after, BodyRate, Deadlines};
use crate::server::registry::{Phase, TrackedConnection};

/// What ends a wait for the socket besides the socket.
#[derive(Debug, Clone, Copy)]
pub(super) struct Interrupt<'a> {
    /// The phase's deadline, if it has one.
    pub(super) deadline: Option<Instant>,
    /// The server shuts down: set while nothing is in progress that should be finished (between
    /// requests, in a request head).
    pub(super) shutdown: Option<&'a CancellationToken>,
    /// The registry closes the connection (evicted, or past the shutdown deadline).
    pub(super) close: &'a CancellationToken,
}

/// Why a wait was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interrupted {
    Shutdown,
    DeadlinePassed,
    Closed,
}

impl Interrupt<'_> {
    pub(super) async fn wait(self) -> Interrupted {
        let shutdown = async {
            match self.shutdown {
                Some(shutdown) => shutdown.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let deadline = async {
            match self.deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = self.close.cancelled() => Interrupted::Closed,
            () = shutdown => Interrupted::Shutdown,
            () = deadline => Interrupted::DeadlinePassed,
        }
    }
}

/// The result of one read.
#[derive(Debug)]
pub(super) enum ReadOutcome {
    /// Bytes appended to the buffer; 0 means the peer closed its side.
    Read(usize),
    Interrupted(Interrupted),
    Failed(std::io::Error),
}

impl From<std::io::Result<usize>> for ReadOutcome {
    fn from(result: std::io::Result<usize>) -> Self {
        match result {
            Ok(n_bytes) => ReadOutcome::Read(n_bytes),
            Err(err) => ReadOutcome::Failed(err),
        }
    }
}

/// The error of a write that was interrupted.
pub(super) fn interrupted_write(interrupted: Interrupted) -> std::io::Error {
    match interrupted {
        Interrupted::Closed => std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "closed by the server"),
        Interrupted::DeadlinePassed | Interrupted::Shutdown => {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "writing the answer timed out (--write-timeout)")
        }
    }
}

/// The socket operations and the ingest call of one back-end. The buffers are owned and handed
/// back, as completion-based I/O (io_uring) needs.
pub(super) trait ConnectionIo {
    /// Reads once, appending to `buffer`'s spare capacity.
    async fn read(&mut self, buffer: BytesMut, interrupt: Interrupt<'_>) -> (ReadOutcome, BytesMut);
    /// Writes all of `output`, unless interrupted first (an error then).
    async fn write_all(&mut self, output: Vec<u8>, interrupt: Interrupt<'_>) -> (std::io::Result<()>, Vec<u8>);
    /// Shuts down the sending side (FIN).
    async fn shutdown_write(&mut self);
    /// Decodes and stores a request body.
    async fn export(&mut self, ingestor: &Arc<Ingestor>, export: ExportBody) -> Result<ExportOutcome, ExportError>;
}

/// What a connection is served with.
pub(super) struct DriveContext<'a> {
    pub(super) peer: SocketAddr,
    pub(super) ingestor: &'a Arc<Ingestor>,
    pub(super) settings: ConnectionSettings,
    /// Graceful shutdown of the server.
    pub(super) shutdown: &'a CancellationToken,
    /// The connection's entry in the port's registry.
    pub(super) connection: &'a TrackedConnection,
}

/// Serves one connection until it closes.
pub(super) async fn drive<Io: ConnectionIo>(io: &mut Io, context: &DriveContext<'_>) {
    let telemetry = context.ingestor.telemetry();
    let limits = context.settings.limits;
    let deadlines = context.settings.deadlines;
    let peer = context.peer;
    let mut connection = Connection::new(limits);
    let mut timing = Timing::new(Instant::now());
    loop {
        match connection.next_step(SystemTime::now()) {
            Step::Request(request) => {
                context.connection.set_phase(Phase::Busy, Instant::now());
                let Some(response) = answer(io, context, request).await else {
                    tracing::debug!(%peer, "OTLP/HTTP connection closed by the server while its request was handled");
                    return;
                };
                if context.shutdown.is_cancelled() {
                    // Shutting down: this answer is the connection's last and says so.
                    connection.start_closing();
                }
                connection.send_response(&response, SystemTime::now());
                timing.answered(Instant::now());
                if connection.pending_output() >= OUTPUT_FLUSH_BYTES && !flush(io, &mut connection, context).await {
                    return;
                }
            }
            Step::BodyTooLarge(head) => {
                let response = otlp::body_too_large_response(&head, limits.body_bytes_max, telemetry);
                connection.send_response(&response, SystemTime::now());
            }
            Step::NeedInput => {
                if !flush(io, &mut connection, context).await {
                    return;
                }
                let progress = connection.progress();
                let wait = timing.wait(progress, Instant::now(), &deadlines);
                context.connection.set_phase(wait.phase, wait.since);
                let interrupt = Interrupt {
                    deadline: wait.deadline,
                    shutdown: wait.ends_at_shutdown.then_some(context.shutdown),
                    close: context.connection.close_token(),
                };
                let (outcome, buffer) = io.read(connection.take_read_buffer(), interrupt).await;
                connection.restore_read_buffer(buffer);
                match outcome {
                    ReadOutcome::Read(0) => connection.receive_eof(),
                    ReadOutcome::Read(_) => {}
                    ReadOutcome::Interrupted(Interrupted::Shutdown) => connection.start_closing(),
                    ReadOutcome::Interrupted(Interrupted::DeadlinePassed) => {
                        tracing::debug!(
                            %peer,
                            phase = wait.phase.as_str(),
                            progress = ?progress,
                            phase_age_ms = wait.since.elapsed().as_millis() as u64,
                            "OTLP/HTTP connection deadline passed, closing"
                        );
                        connection.time_out(SystemTime::now());
                    }
                    ReadOutcome::Interrupted(Interrupted::Closed) => {
                        tracing::debug!(%peer, phase = wait.phase.as_str(), "OTLP/HTTP connection closed by the server");
                        return;
                    }
                    ReadOutcome::Failed(err) => {
                        tracing::debug!(%peer, error = %err, "OTLP/HTTP read failed");
                        return;
                    }
                }
            }
            Step::Close(close) => {
                if let CloseReason::Protocol(err) = close.reason {
                    telemetry.record_request(Transport::Http, RequestOutcome::Invalid);
                    tracing::debug!(%peer, error = %err, "malformed OTLP/HTTP request, closing");
                }
                if flush(io, &mut connection, context).await && close.linger {
                    linger(io, context.connection.close_token()).await;
                }
                return;
            }
        }
    }
}

/// Answers one complete request, with panics caught (answered 500). `None` when the registry
/// closed the connection while its body was being stored.
async fn answer<Io: ConnectionIo>(io: &mut Io, context: &DriveContext<'_>, request: Request) -> Option<Response> {
    let telemetry = context.ingestor.telemetry();
    let handled = crate::panics::catch_async(telemetry, PanicSite::Handler, async {
        #[cfg(test)]
        if request.head.path() == crate::server::PANIC_TEST_PATH {
            panic!("a panic injected by a test");
        }
        match otlp::dispatch(request, telemetry) {
            Dispatch::Respond(response) => Some(response),
            Dispatch::Export(export) => {
                let format = export.format;
                let result = tokio::select! {
                    biased;
                    result = io.export(context.ingestor, export) => result,
                    () = context.connection.closed() => return None,
                };
                Some(otlp::export_response(result, format, telemetry))
            }
        }
    })
    .await;
    match handled {
        Ok(answer) => answer,
        Err(_caught) => {
            telemetry.record_request(Transport::Http, RequestOutcome::Failed);
            Some(Response::text(Status::InternalServerError, "internal error: the request handler panicked\n"))
        }
    }
}

/// Writes the pending output within the write timeout; false when the connection is broken.
async fn flush<Io: ConnectionIo>(io: &mut Io, connection: &mut Connection, context: &DriveContext<'_>) -> bool {
    if connection.pending_output() == 0 {
        return true;
    }
    let output = connection.take_output();
    let interrupt = Interrupt {
        deadline: Some(after(Instant::now(), context.settings.deadlines.write_timeout)),
        shutdown: None,
        close: context.connection.close_token(),
    };
    let (result, output) = io.write_all(output, interrupt).await;
    connection.recycle_output(output);
    match result {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(peer = %context.peer, error = %err, "OTLP/HTTP write failed");
            false
        }
    }
}

/// Shuts down the sending side, then reads and discards until the peer closes (bounded in time
/// and bytes), so that closing with its unread bytes does not reset the connection before the
/// peer has read the answer.
async fn linger<Io: ConnectionIo>(io: &mut Io, close: &CancellationToken) {
    let deadline = Instant::now() + LINGER_TIMEOUT;
    // A TLS close_notify is a write: bounded like the reads that follow.
    tokio::select! {
        biased;
        () = io.shutdown_write() => {}
        () = close.cancelled() => return,
        () = tokio::time::sleep_until(deadline) => return,
    }
    let mut buffer = BytesMut::with_capacity(16 * 1024);
    let mut discarded_bytes = 0;
    while discarded_bytes <= LINGER_BYTES_MAX {
        buffer.clear();
        let interrupt = Interrupt { deadline: Some(deadline), shutdown: None, close };
        let (outcome, returned) = io.read(buffer, interrupt).await;
        buffer = returned;
        match outcome {
            ReadOutcome::Read(n_bytes) if n_bytes > 0 => discarded_bytes += n_bytes,
            _ => return,
        }
    }
}

/// When the phases of the current exchange began, for their deadlines.
#[derive(Debug)]
struct Timing {
    /// The accept (or the end of the TLS handshake) until the first answer; the last answer after.
    idle_since: Instant,
    answered: bool,
    /// When the first byte of the request being received was seen.
    request_since: Option<Instant>,
    /// The rate rule of the body being received.
    body_rate: Option<BodyRate>,
}

/// What the next read waits for, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wait {
    phase: Phase,
    since: Instant,
    deadline: Option<Instant>,
    /// Whether shutdown ends the wait (nothing worth finishing is in progress).
    ends_at_shutdown: bool,
}

impl Timing {
    fn new(now: Instant) -> Timing {
        Timing { idle_since: now, answered: false, request_since: None, body_rate: None }
    }

    /// A request was answered at `now`.
    fn answered(&mut self, now: Instant) {
        *self = Timing { idle_since: now, answered: true, request_since: None, body_rate: None };
    }

    fn wait(&mut self, progress: Progress, now: Instant, deadlines: &Deadlines) -> Wait {
        match progress {
            Progress::BetweenRequests => {
                self.request_since = None;
                self.body_rate = None;
                // Before the first request the connection is unfinished (the header deadline runs
                // from the accept); after an answer, idle.
                let phase = if self.answered { Phase::Idle } else { Phase::Unfinished };
                let deadline = deadlines.phase_deadline(phase, self.idle_since);
                Wait { phase, since: self.idle_since, deadline, ends_at_shutdown: true }
            }
            Progress::Head => {
                let since = *self.request_since.get_or_insert(now);
                let deadline = deadlines.phase_deadline(Phase::Unfinished, since);
                Wait { phase: Phase::Unfinished, since, deadline, ends_at_shutdown: true }
            }
            Progress::Body { received_bytes } => {
                let since = *self.request_since.get_or_insert(now);
                let rate = self.body_rate.get_or_insert_with(|| deadlines.body_rate(now));
                rate.set_received(received_bytes);
                Wait { phase: Phase::Unfinished, since, deadline: rate.deadline(), ends_at_shutdown: false }
            }
            Progress::Answering => Wait { phase: Phase::Busy, since: now, deadline: None, ends_at_shutdown: false },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DEADLINES: Deadlines = Deadlines {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        write_timeout: Duration::from_secs(30),
        min_body_bytes_per_second: 1000,
    };

    fn seconds(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn deadlines_follow_the_exchange_and_are_not_restarted_by_bytes() {
        let accepted = Instant::now();
        let mut timing = Timing::new(accepted);
        // Nothing yet: the header deadline runs from the accept; shutdown closes it.
        let wait = timing.wait(Progress::BetweenRequests, seconds(accepted, 1), &DEADLINES);
        assert_eq!((wait.phase, wait.deadline), (Phase::Unfinished, Some(seconds(accepted, 10))));
        assert!(wait.ends_at_shutdown);
        // A head arrives a byte at a time: the deadline runs from its first byte, unchanged.
        let first_byte = seconds(accepted, 2);
        let wait = timing.wait(Progress::Head, first_byte, &DEADLINES);
        assert_eq!(wait.deadline, Some(seconds(first_byte, 10)));
        let wait = timing.wait(Progress::Head, seconds(first_byte, 5), &DEADLINES);
        assert_eq!(wait.deadline, Some(seconds(first_byte, 10)), "later bytes do not restart it");
        // The body: a grace of the header timeout from its start, then 1,000 bytes a second.
        let body_start = seconds(first_byte, 6);
        let wait = timing.wait(Progress::Body { received_bytes: 0 }, body_start, &DEADLINES);
        assert_eq!((wait.phase, wait.deadline), (Phase::Unfinished, Some(seconds(body_start, 10))));
        assert!(!wait.ends_at_shutdown, "a request in progress is finished at shutdown");
        let wait = timing.wait(Progress::Body { received_bytes: 5_000 }, seconds(body_start, 12), &DEADLINES);
        assert_eq!(wait.deadline, Some(seconds(body_start, 15)));
        // Answered: idle from the answer, with the idle timeout.
        let answered = seconds(body_start, 13);
        timing.answered(answered);
        let wait = timing.wait(Progress::BetweenRequests, seconds(answered, 1), &DEADLINES);
        assert_eq!((wait.phase, wait.deadline), (Phase::Idle, Some(seconds(answered, 60))));
        // A pipelined head already received: its deadline runs from the end of the previous one.
        let next_answered = seconds(answered, 2);
        timing.answered(next_answered);
        let wait = timing.wait(Progress::Head, next_answered, &DEADLINES);
        assert_eq!(wait.deadline, Some(seconds(next_answered, 10)));
    }
}
