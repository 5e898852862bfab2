//! The epoll back-end: the HTTP/1.1 core driven by tokio's `TcpListener`/`TcpStream` on the main
//! runtime. Bodies go through [`Ingestor::export_body`], so large ones are decoded on the
//! low-priority ingest workers and never hold an async worker that a scaler answer is waiting for.
//! TLS connections are served here too: the handshake runs in the connection's task, with its own
//! timeout, and the connection's deadlines start after it.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::driver::{self, ConnectionIo, DriveContext, Interrupt, ReadOutcome};
use super::otlp::ExportBody;
use super::{accept_connections, AcceptContext, AcceptGate, Backend, RunningServer, ServeOptions};
use crate::ingest::{ExportError, ExportOutcome, Ingestor, Transport};

/// Starts accepting on `listener` in a task of the current runtime.
pub(super) fn start(
    listener: TcpListener,
    options: ServeOptions,
    ingestor: Arc<Ingestor>,
    cancel: CancellationToken,
) -> RunningServer {
    let settings = options.connection_settings();
    let registry = Arc::clone(&options.registry);
    tracing::info!(backend = "epoll", connections_max = registry.connections_max(), "OTLP/HTTP serving");
    let (failures, failure_receiver) = mpsc::unbounded_channel();
    let context = AcceptContext { gate: AcceptGate::new(1), worker_idx: 0, registry, cancel: cancel.clone(), failures };
    let finished = tokio::spawn(async move {
        let (tls, handshake_timeout) = (options.tls, options.tls_handshake_timeout);
        accept_connections(listener, context, move |connections, stream, peer, slot| {
            let ingestor = Arc::clone(&ingestor);
            let shutdown = cancel.clone();
            let tls = tls.clone();
            connections.spawn(async move {
                let connection = Arc::clone(slot.registration().connection());
                let context =
                    DriveContext { peer, ingestor: &ingestor, settings, shutdown: &shutdown, connection: &connection };
                match tls {
                    None => driver::drive(&mut EpollIo { stream }, &context).await,
                    Some(tls) => {
                        let handshake = tokio::select! {
                            biased;
                            () = connection.closed() => None,
                            () = shutdown.cancelled() => None,
                            handshake = tls.accept(stream, handshake_timeout) => handshake,
                        };
                        if let Some(stream) = handshake {
                            driver::drive(&mut EpollIo { stream }, &context).await;
                        }
                    }
                }
                drop(slot);
            });
        })
        .await;
        tracing::debug!(backend = "epoll", "OTLP/HTTP stopped");
        Ok(())
    });
    RunningServer { backend: Backend::Epoll, finished, failures: failure_receiver }
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

    async fn write_all(&mut self, output: Vec<u8>, interrupt: Interrupt<'_>) -> (std::io::Result<()>, Vec<u8>) {
        let result = tokio::select! {
            biased;
            result = self.stream.write_all(&output) => result,
            interrupted = interrupt.wait() => Err(driver::interrupted_write(interrupted)),
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
