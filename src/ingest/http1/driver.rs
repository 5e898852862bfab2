//! One connection, driven: the loop that feeds a [`Connection`] with socket reads, answers its
//! requests through [`otlp`], and writes the answers. Generic over [`ConnectionIo`], which each
//! back-end implements for its socket type (tokio's `TcpStream`, tokio-uring's `TcpStream`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection::{CloseReason, Connection, Limits, Step};
use super::otlp::{self, Dispatch, ExportBody};
use super::{LINGER_BYTES_MAX, LINGER_TIMEOUT, OUTPUT_FLUSH_BYTES, REQUEST_READ_TIMEOUT, RESPONSE_WRITE_TIMEOUT};
use crate::ingest::{ExportError, ExportOutcome, Ingestor, Transport};
use crate::outcome::RequestOutcome;

/// What ends a wait for input besides input.
#[derive(Debug, Clone, Copy)]
pub(super) enum Interrupt<'a> {
    /// The server shuts down (used between requests: an idle connection just closes).
    Shutdown(&'a CancellationToken),
    /// A deadline (in the middle of a request, while writing, while lingering).
    Deadline(Instant),
}

/// Why a wait was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interrupted {
    Shutdown,
    DeadlinePassed,
}

impl Interrupt<'_> {
    pub(super) async fn wait(self) -> Interrupted {
        match self {
            Interrupt::Shutdown(cancel) => {
                cancel.cancelled().await;
                Interrupted::Shutdown
            }
            Interrupt::Deadline(deadline) => {
                tokio::time::sleep_until(deadline).await;
                Interrupted::DeadlinePassed
            }
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

/// The socket operations and the ingest call of one back-end. The buffers are owned and handed
/// back, as completion-based I/O (io_uring) needs.
pub(super) trait ConnectionIo {
    /// Reads once, appending to `buffer`'s spare capacity.
    async fn read(&mut self, buffer: BytesMut, interrupt: Interrupt<'_>) -> (ReadOutcome, BytesMut);
    /// Writes all of `output` before `deadline`.
    async fn write_all(&mut self, output: Vec<u8>, deadline: Instant) -> (std::io::Result<()>, Vec<u8>);
    /// Shuts down the sending side (FIN).
    async fn shutdown_write(&mut self);
    /// Decodes and stores a request body.
    async fn export(&mut self, ingestor: &Arc<Ingestor>, export: ExportBody) -> Result<ExportOutcome, ExportError>;
}

/// Serves one connection until it closes.
pub(super) async fn drive<Io: ConnectionIo>(
    io: &mut Io,
    peer: SocketAddr,
    ingestor: &Arc<Ingestor>,
    limits: Limits,
    cancel: &CancellationToken,
) {
    let telemetry = ingestor.telemetry();
    let mut connection = Connection::new(limits);
    loop {
        match connection.next_step(SystemTime::now()) {
            Step::Request(request) => {
                let response = match otlp::dispatch(request, telemetry) {
                    Dispatch::Respond(response) => response,
                    Dispatch::Export(export) => {
                        let format = export.format;
                        let result = io.export(ingestor, export).await;
                        otlp::export_response(result, format, telemetry)
                    }
                };
                if cancel.is_cancelled() {
                    // Shutting down: this answer is the connection's last and says so.
                    connection.start_closing();
                }
                connection.send_response(&response, SystemTime::now());
                if connection.pending_output() >= OUTPUT_FLUSH_BYTES && !flush(io, &mut connection, peer).await {
                    return;
                }
            }
            Step::BodyTooLarge(head) => {
                let response = otlp::body_too_large_response(&head, limits.body_bytes_max, telemetry);
                connection.send_response(&response, SystemTime::now());
            }
            Step::NeedInput => {
                if !flush(io, &mut connection, peer).await {
                    return;
                }
                let interrupt = if connection.is_between_requests() {
                    Interrupt::Shutdown(cancel)
                } else {
                    Interrupt::Deadline(Instant::now() + REQUEST_READ_TIMEOUT)
                };
                let (outcome, buffer) = io.read(connection.take_read_buffer(), interrupt).await;
                connection.restore_read_buffer(buffer);
                match outcome {
                    ReadOutcome::Read(0) => connection.receive_eof(),
                    ReadOutcome::Read(_) => {}
                    ReadOutcome::Interrupted(Interrupted::Shutdown) => connection.start_closing(),
                    ReadOutcome::Interrupted(Interrupted::DeadlinePassed) => {
                        tracing::debug!(%peer, timeout_s = REQUEST_READ_TIMEOUT.as_secs(), "OTLP/HTTP request stalled, closing");
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
                if flush(io, &mut connection, peer).await && close.linger {
                    linger(io).await;
                }
                return;
            }
        }
    }
}

/// Writes the pending output; false when the connection is broken.
async fn flush<Io: ConnectionIo>(io: &mut Io, connection: &mut Connection, peer: SocketAddr) -> bool {
    if connection.pending_output() == 0 {
        return true;
    }
    let output = connection.take_output();
    let (result, output) = io.write_all(output, Instant::now() + RESPONSE_WRITE_TIMEOUT).await;
    connection.recycle_output(output);
    match result {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(%peer, error = %err, "OTLP/HTTP write failed");
            false
        }
    }
}

/// Shuts down the sending side, then reads and discards until the peer closes (bounded in time
/// and bytes), so that closing with its unread bytes does not reset the connection before the
/// peer has read the answer.
async fn linger<Io: ConnectionIo>(io: &mut Io) {
    io.shutdown_write().await;
    let deadline = Instant::now() + LINGER_TIMEOUT;
    let mut buffer = BytesMut::with_capacity(16 * 1024);
    let mut discarded_bytes = 0;
    while discarded_bytes <= LINGER_BYTES_MAX {
        buffer.clear();
        let (outcome, returned) = io.read(buffer, Interrupt::Deadline(deadline)).await;
        buffer = returned;
        match outcome {
            ReadOutcome::Read(n_bytes) if n_bytes > 0 => discarded_bytes += n_bytes,
            _ => return,
        }
    }
}
