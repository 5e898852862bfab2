//! The epoll back-end: the HTTP/1.1 core driven by tokio's `TcpListener`/`TcpStream` on the main
//! runtime. Bodies go through [`Ingestor::export_body`], so large ones are decoded on the
//! low-priority ingest workers and never hold an async worker that a scaler answer is waiting for.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection::Limits;
use super::driver::{self, ConnectionIo, Interrupt, ReadOutcome};
use super::otlp::ExportBody;
use super::{accept_connections, AcceptGate, Backend, RunningServer, ServeOptions};
use crate::ingest::{ExportError, ExportOutcome, Ingestor, Transport};

/// Starts accepting on `listener` in a task of the current runtime.
pub(super) fn start(
    listener: TcpListener,
    options: ServeOptions,
    limits: Limits,
    ingestor: Arc<Ingestor>,
    cancel: CancellationToken,
) -> RunningServer {
    tracing::info!(backend = "epoll", connections_max = options.connections_max, "OTLP/HTTP serving");
    let gate = AcceptGate::new(options.connections_max, 1);
    let connection_cancel = cancel.clone();
    let finished = tokio::spawn(async move {
        let (tls, handshake_timeout) = (options.tls, options.tls_handshake_timeout);
        accept_connections(listener, gate, 0, cancel, move |connections, stream, peer, slot| {
            let ingestor = Arc::clone(&ingestor);
            let cancel = connection_cancel.clone();
            let tls = tls.clone();
            connections.spawn(async move {
                let _slot = slot;
                match tls {
                    None => driver::drive(&mut EpollIo { stream }, peer, &ingestor, limits, &cancel).await,
                    Some(tls) => {
                        if let Some(stream) = tls.accept(stream, handshake_timeout).await {
                            driver::drive(&mut EpollIo { stream }, peer, &ingestor, limits, &cancel).await;
                        }
                    }
                }
            });
        })
        .await;
        tracing::debug!(backend = "epoll", "OTLP/HTTP stopped");
        Ok(())
    });
    RunningServer { backend: Backend::Epoll, finished }
}

/// A connection of the epoll back-end: a TCP stream, or a TLS stream over one.
struct EpollIo<S> {
    stream: S,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ConnectionIo for EpollIo<S> {
    async fn read(&mut self, mut buffer: BytesMut, interrupt: Interrupt<'_>) -> (ReadOutcome, BytesMut) {
        let outcome = tokio::select! {
            biased;
            result = self.stream.read_buf(&mut buffer) => ReadOutcome::from(result),
            interrupted = interrupt.wait() => ReadOutcome::Interrupted(interrupted),
        };
        (outcome, buffer)
    }

    async fn write_all(&mut self, output: Vec<u8>, deadline: Instant) -> (std::io::Result<()>, Vec<u8>) {
        let result = match tokio::time::timeout_at(deadline, self.stream.write_all(&output)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "writing the answer timed out")),
        };
        (result, output)
    }

    async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    async fn export(&mut self, ingestor: &Arc<Ingestor>, export: ExportBody) -> Result<ExportOutcome, ExportError> {
        ingestor.export_body(export.body, export.content_encoding, export.format, Transport::Http).await
    }
}
