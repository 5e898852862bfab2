//! The bodies of a served request, as the connection lifecycle sees them: [`RateLimitedBody`]
//! holds a request body to [`BodyRate`] (cut off with an error when it falls behind, which is
//! what ends a half-open HTTP/2 stream), and [`TrackedBody`] keeps its connection busy until the
//! response body has ended.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::deadlines::{BodyRate, BodyTooSlow};
use super::registry::InFlight;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a body that is too slow is reported to the router that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlowBodyError {
    /// A `tonic::Status` (DEADLINE_EXCEEDED), which tonic answers the stream with.
    GrpcStatus,
    /// A [`BodyTooSlow`].
    Plain,
}

/// A request body that must keep up with [`BodyRate`]; when it falls behind it ends with an
/// error, and its timer wakes the reader even if no byte ever arrives.
pub(crate) struct RateLimitedBody<B> {
    inner: B,
    rate: BodyRate,
    report_as: SlowBodyError,
    /// Armed while the body waits for bytes, at the moment it falls behind.
    timer: Option<Pin<Box<Sleep>>>,
    failed: bool,
}

impl<B> RateLimitedBody<B> {
    pub(crate) fn new(inner: B, rate: BodyRate, report_as: SlowBodyError) -> Self {
        RateLimitedBody { inner, rate, report_as, timer: None, failed: false }
    }

    fn too_slow(&self) -> BoxError {
        let too_slow: BodyTooSlow = self.rate.too_slow();
        match self.report_as {
            SlowBodyError::GrpcStatus => Box::new(tonic::Status::deadline_exceeded(too_slow.to_string())),
            SlowBodyError::Plain => Box::new(too_slow),
        }
    }
}

impl<B> Body for RateLimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.rate.record(data.len());
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        let Some(deadline) = this.rate.deadline() else { return Poll::Pending };
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        ready!(timer.as_mut().poll(cx));
        this.failed = true;
        Poll::Ready(Some(Err(this.too_slow())))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request in flight until it ends (or is dropped).
pub(crate) struct TrackedBody<B> {
    inner: B,
    in_flight: InFlight,
}

impl<B> TrackedBody<B> {
    pub(crate) fn new(inner: B, in_flight: InFlight) -> Self {
        TrackedBody { inner, in_flight }
    }
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.in_flight.end();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::server::deadlines::Deadlines;

    /// A body that never sends anything and never ends: a half-open stream.
    struct Silent;

    impl Body for Silent {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_silent_body_is_cut_off_after_the_grace_as_a_grpc_status() {
        let deadlines = Deadlines {
            header_read_timeout: Duration::from_millis(50),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            min_body_bytes_per_second: 1024,
        };
        let started = tokio::time::Instant::now();
        let mut body = RateLimitedBody::new(Silent, deadlines.body_rate(started), SlowBodyError::GrpcStatus);
        let frame = tokio::time::timeout(
            Duration::from_secs(30),
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)),
        )
        .await
        .expect("the silent body is cut off");
        assert!(started.elapsed() >= Duration::from_millis(50), "not before the grace ends");
        let err = frame.expect("an error frame").expect_err("cut off");
        let status = err.downcast::<tonic::Status>().expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(body.is_end_stream());
    }
}
