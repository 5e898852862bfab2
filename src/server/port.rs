//! A port served by hyper from our own accept loop (OTLP/gRPC and the KEDA scaler over HTTP/2,
//! admin over HTTP/1.1), so every connection gets the limits of `config::ConnectionLimits`:
//!
//! - HTTP/2: `MAX_CONCURRENT_STREAMS`, the header-list limit, keep-alive pings (a silent peer
//!   with streams open is closed when it stops answering them);
//! - HTTP/1.1: the head-size and header-count limits;
//! - on both, through the connection's [`TrackedConnection`] in the port's registry and a
//!   watchdog in its task: the header deadline while unfinished (from the accept, the end of
//!   the TLS handshake, or an HTTP/1.1 request's first byte), the idle timeout while nothing is in
//!   flight (then a graceful close: HTTP/2 GOAWAY), none while busy (an open StreamIsActive
//!   stream is busy, not idle); the request body rate ([`super::body::RateLimitedBody`]) and the
//!   write timeout ([`WatchedIo`]).
//!
//! Shutdown: the accept loop stops; each connection gets hyper's graceful shutdown (HTTP/2
//! GOAWAY, HTTP/1.1 close after the current answer), an unfinished one is closed at once, and
//! whatever is left when the server's deadline passes is closed through the registry.

use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::accept::{is_transient, ACCEPT_ERROR_BACKOFF};
use super::body::BoxError;
use super::deadlines::Deadlines;
use super::io::WatchedIo;
use super::registry::{ConnectionRegistry, Phase, Registration, TrackedConnection};
use super::service::{ConnectionService, PortBody, PortRouter, ServiceSettings};
use crate::config::ConnectionLimits;
use crate::tls::ReloadingTls;

/// Most header fields in an HTTP/1.1 request head on the admin port (as on OTLP/HTTP).
const HTTP1_HEADER_COUNT_MAX: usize = crate::ingest::http1::connection::HEADER_COUNT_MAX;

/// hyper's smallest HTTP/1.1 read buffer; the head limit cannot go below it.
const HTTP1_READ_BUFFER_MIN: usize = 8 * 1024;

/// The HTTP version a port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// gRPC: HTTP/2 only, at most this many concurrent streams per connection.
    Http2 {
        concurrent_streams_max: u32,
    },
    Http1,
}

/// How a port serves its connections.
pub(crate) struct PortSettings<B> {
    pub purpose: &'static str,
    pub protocol: Protocol,
    pub limits: ConnectionLimits,
    pub tls: Option<Arc<ReloadingTls>>,
    pub tls_handshake_timeout: Duration,
    pub service: Arc<ServiceSettings<B>>,
}

/// A port being served: its accept loop (the listener's life) and its connections.
pub(crate) struct ServedPort {
    pub purpose: &'static str,
    pub registry: Arc<ConnectionRegistry>,
    accept: Option<JoinHandle<io::Result<()>>>,
}

/// How a listener stopped while it should have been serving.
#[derive(Debug)]
pub(crate) enum ListenerEnd {
    Failed(io::Error),
    /// The accept loop ended without an error (it never should before shutdown).
    Stopped,
    Panicked(String),
}

impl std::fmt::Display for ListenerEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenerEnd::Failed(err) => write!(f, "accepting connections failed: {err}"),
            ListenerEnd::Stopped => write!(f, "the accept loop stopped"),
            ListenerEnd::Panicked(message) => write!(f, "the accept loop panicked: {message}"),
        }
    }
}

impl ServedPort {
    /// Resolves when the accept loop ends. Before shutdown that is always a failure.
    pub(crate) async fn ended(&mut self) -> ListenerEnd {
        let Some(accept) = self.accept.as_mut() else { return std::future::pending().await };
        let ended = accept.await;
        self.accept = None;
        match ended {
            Ok(Ok(())) => ListenerEnd::Stopped,
            Ok(Err(err)) => ListenerEnd::Failed(err),
            Err(join_error) => ListenerEnd::Panicked(join_error.to_string()),
        }
    }

    /// Resolves once the accept loop has stopped and every connection has closed.
    pub(crate) async fn drained(&mut self) {
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        self.registry.all_closed().await;
    }
}

/// Starts serving `router` on `listener` until `shutdown` fires.
pub(crate) fn serve<S, B>(
    listener: TcpListener,
    settings: PortSettings<B>,
    registry: Arc<ConnectionRegistry>,
    router: S,
    shutdown: CancellationToken,
) -> ServedPort
where
    S: PortRouter<B>,
    B: PortBody,
{
    let purpose = settings.purpose;
    tracing::info!(
        port = purpose,
        connections_max = registry.connections_max(),
        tls = settings.tls.is_some(),
        "serving"
    );
    let accept = tokio::spawn(accept_loop(listener, Arc::new(settings), Arc::clone(&registry), router, shutdown));
    ServedPort { purpose, registry, accept: Some(accept) }
}

async fn accept_loop<S, B>(
    listener: TcpListener,
    settings: Arc<PortSettings<B>>,
    registry: Arc<ConnectionRegistry>,
    router: S,
    shutdown: CancellationToken,
) -> io::Result<()>
where
    S: PortRouter<B>,
    B: PortBody,
{
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) if is_transient(&err) => {
                tracing::warn!(port = settings.purpose, error = %err, "accept failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                }
            }
            Err(err) => return Err(err),
        };
        // Scaler answers and small requests should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let registration = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            registration = registry.admit(peer) => registration,
        };
        let connection = ServedConnection {
            settings: Arc::clone(&settings),
            registration,
            router: router.clone(),
            shutdown: shutdown.clone(),
        };
        tokio::spawn(connection.run(stream));
    }
}

/// One accepted connection and what serving it needs.
struct ServedConnection<S, B> {
    settings: Arc<PortSettings<B>>,
    registration: Registration,
    router: S,
    shutdown: CancellationToken,
}

impl<S, B> ServedConnection<S, B>
where
    S: PortRouter<B>,
    B: PortBody,
{
    async fn run(self, stream: TcpStream) {
        let connection = Arc::clone(self.registration.connection());
        let Some(tls) = self.settings.tls.clone() else {
            self.serve_io(stream, connection).await;
            return;
        };
        let handshake = tokio::select! {
            biased;
            () = connection.closed() => return,
            () = self.shutdown.cancelled() => return,
            handshake = tls.accept(stream, self.settings.tls_handshake_timeout) => handshake,
        };
        if let Some(stream) = handshake {
            // The same deadlines as on a plaintext connection, from the end of the handshake.
            connection.set_phase(Phase::Unfinished, Instant::now());
            self.serve_io(stream, connection).await;
        }
    }

    async fn serve_io<Io>(self, io: Io, connection: Arc<TrackedConnection>)
    where
        Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let settings = &self.settings;
        let limits = &settings.limits;
        let deadlines = Deadlines::new(limits);
        // A graceful close waits for the client to answer a ping (HTTP/2), as long as a
        // keep-alive ping may go unanswered.
        let closing_grace = limits.http2_keepalive_timeout;
        let reports_input = settings.protocol == Protocol::Http1;
        let io = TokioIo::new(WatchedIo::new(io, Arc::clone(&connection), reports_input, limits.write_timeout));
        let service = ConnectionService::new(self.router, Arc::clone(&connection), Arc::clone(&settings.service));
        let end = match settings.protocol {
            Protocol::Http2 { concurrent_streams_max } => {
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                builder
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(concurrent_streams_max)
                    .max_header_list_size(u32::try_from(limits.header_bytes_max).unwrap_or(u32::MAX))
                    .keep_alive_interval(limits.http2_keepalive_interval)
                    .keep_alive_timeout(limits.http2_keepalive_timeout);
                let served = builder.serve_connection(io, service);
                watch(served, &connection, &deadlines, closing_grace, &self.shutdown).await
            }
            Protocol::Http1 => {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    // The watchdog keeps the header deadline (hyper's would also cut idle
                    // keep-alive connections at the header timeout).
                    .header_read_timeout(None)
                    .keep_alive(true)
                    .max_headers(HTTP1_HEADER_COUNT_MAX)
                    .max_buf_size(limits.header_bytes_max.max(HTTP1_READ_BUFFER_MIN));
                let served = builder.serve_connection(io, service);
                watch(served, &connection, &deadlines, closing_grace, &self.shutdown).await
            }
        };
        let (phase, since) = connection.phase();
        tracing::debug!(
            port = settings.purpose,
            peer = %connection.peer(),
            connection_id = connection.id(),
            phase = phase.as_str(),
            phase_age_ms = since.elapsed().as_millis() as u64,
            end = %end,
            "connection closed"
        );
        drop(self.registration);
    }
}

/// hyper's server connections, HTTP/1.1 and HTTP/2 alike.
trait ServerConnection: std::future::Future<Output = hyper::Result<()>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, E, B> ServerConnection for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self);
    }
}

impl<I, S, B> ServerConnection for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::Connection::graceful_shutdown(self);
    }
}

/// Why a connection's task ended.
enum ConnectionEnd {
    /// hyper finished it (the peer closed, or a graceful shutdown completed).
    Served,
    Failed(hyper::Error),
    /// Its phase outlived its deadline.
    DeadlinePassed,
    /// Closed from outside: evicted, or past the shutdown deadline.
    Closed,
    /// Unfinished when the server began to shut down.
    Shutdown,
}

impl std::fmt::Display for ConnectionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectionEnd::Served => write!(f, "served"),
            ConnectionEnd::Failed(err) => write!(f, "failed: {err}"),
            ConnectionEnd::DeadlinePassed => write!(f, "deadline passed"),
            ConnectionEnd::Closed => write!(f, "closed by the server (evicted or shutdown deadline)"),
            ConnectionEnd::Shutdown => write!(f, "shutdown"),
        }
    }
}

/// Drives `served` until it ends, its phase deadline passes, or it is closed from outside; at
/// shutdown starts its graceful shutdown. A connection idle too long is closed gracefully too
/// (HTTP/2 GOAWAY, so a client racing it retries elsewhere), within `closing_grace`. Returning
/// drops the connection: the socket closes.
async fn watch<C: ServerConnection>(
    served: C,
    connection: &TrackedConnection,
    deadlines: &Deadlines,
    closing_grace: Duration,
    shutdown: &CancellationToken,
) -> ConnectionEnd {
    let mut served = pin!(served);
    let mut shutting_down = false;
    // Set when an idle connection's graceful close began: unless busy again, it ends by then.
    let mut close_by: Option<Instant> = None;
    loop {
        let changed = connection.changed();
        let (phase, since) = connection.phase();
        if shutting_down && phase == Phase::Unfinished {
            return ConnectionEnd::Shutdown;
        }
        let deadline = match close_by {
            Some(close_by) if phase != Phase::Busy => Some(close_by),
            _ => deadlines.phase_deadline(phase, since),
        };
        let now = Instant::now();
        if deadline.is_some_and(|deadline| deadline <= now) {
            if phase == Phase::Idle && close_by.is_none() {
                served.as_mut().graceful_shutdown();
                close_by = Some(super::deadlines::after(now, closing_grace));
                continue;
            }
            return ConnectionEnd::DeadlinePassed;
        }
        let sleep = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = connection.closed() => return ConnectionEnd::Closed,
            ended = served.as_mut() => {
                return match ended {
                    Ok(()) => ConnectionEnd::Served,
                    Err(err) => ConnectionEnd::Failed(err),
                };
            }
            () = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                served.as_mut().graceful_shutdown();
            }
            () = changed => {}
            () = sleep => {}
        }
    }
}
