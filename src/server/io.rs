//! The socket of a hyper-served connection, watched: a write (or flush) that makes no progress
//! for the write timeout fails the connection, and on HTTP/1.1 the first bytes after an idle
//! spell mark the start of a request head, from which its header deadline runs.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::registry::TrackedConnection;

pub(crate) struct WatchedIo<Io> {
    io: Io,
    connection: Arc<TrackedConnection>,
    /// Report input to the connection (HTTP/1.1; on HTTP/2 bytes arrive while idle anyway).
    reports_input: bool,
    write_timeout: Duration,
    /// Runs while a write waits; reset when one completes.
    write_stall: Pin<Box<Sleep>>,
    write_stalled: bool,
}

impl<Io> WatchedIo<Io> {
    pub(crate) fn new(
        io: Io,
        connection: Arc<TrackedConnection>,
        reports_input: bool,
        write_timeout: Duration,
    ) -> Self {
        WatchedIo {
            io,
            connection,
            reports_input,
            write_timeout,
            write_stall: Box::pin(tokio::time::sleep(write_timeout)),
            write_stalled: false,
        }
    }

    /// Runs a write operation; fails it with `TimedOut` once it has waited the write timeout.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut Io>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>>
    where
        Io: Unpin,
    {
        match write(Pin::new(&mut self.io), cx) {
            Poll::Ready(result) => {
                self.write_stalled = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !self.write_stalled {
                    self.write_stalled = true;
                    let deadline = super::deadlines::after(Instant::now(), self.write_timeout);
                    self.write_stall.as_mut().reset(deadline);
                }
                match self.write_stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("a write made no progress for {} ms (--write-timeout)", self.write_timeout.as_millis()),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for WatchedIo<Io> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled_before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.reports_input && matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > filled_before {
            this.connection.input_arrived(Instant::now());
        }
        polled
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for WatchedIo<Io> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().watch_write(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().watch_write(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().watch_write(cx, |io, cx| io.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().watch_write(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
