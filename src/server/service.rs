//! The per-connection service between hyper and a router (tonic's `Routes`, the admin axum
//! `Router`): it counts the connection's requests in flight (until each response body ends), holds
//! each request body to the minimum rate, and is the handler boundary of the panic policy: a
//! panicking handler is counted and answered with an internal error (gRPC INTERNAL, HTTP 500),
//! and the connection and the server keep serving.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{BoxError, RateLimitedBody, SlowBodyError, TrackedBody};
use super::deadlines::Deadlines;
use super::registry::TrackedConnection;
use crate::outcome::PanicSite;
use crate::telemetry::Telemetry;

/// What a port's service wrapper needs besides the router.
pub(crate) struct ServiceSettings<B> {
    pub deadlines: Deadlines,
    pub slow_body_error: SlowBodyError,
    pub telemetry: Arc<Telemetry>,
    /// The answer to a request whose handler panicked.
    pub internal_error: fn() -> Response<B>,
}

/// One connection's view of a router.
pub(crate) struct ConnectionService<S, B> {
    router: S,
    connection: Arc<TrackedConnection>,
    settings: Arc<ServiceSettings<B>>,
}

impl<S, B> ConnectionService<S, B> {
    pub(crate) fn new(router: S, connection: Arc<TrackedConnection>, settings: Arc<ServiceSettings<B>>) -> Self {
        ConnectionService { router, connection, settings }
    }
}

type ResponseFuture<B> = Pin<Box<dyn Future<Output = Result<Response<TrackedBody<B>>, Infallible>> + Send>>;

/// What a port routes its requests to: a tower service over rate-limited request bodies that
/// answers with bodies of type `B` (the bounds hyper's connections need, written once).
pub(crate) trait PortRouter<B>:
    tower_service::Service<
        Request<RateLimitedBody<Incoming>>,
        Response = Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> PortRouter<B> for S where
    S: tower_service::Service<
            Request<RateLimitedBody<Incoming>>,
            Response = Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A response body a port can send.
pub(crate) trait PortBody:
    http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

impl<B> PortBody for B where B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static {}

impl<S: PortRouter<B>, B: PortBody> hyper::service::Service<Request<Incoming>> for ConnectionService<S, B> {
    type Response = Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = ResponseFuture<B>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.connection.request_started();
        let settings = Arc::clone(&self.settings);
        let rate = settings.deadlines.body_rate(Instant::now());
        let request = request.map(|body| RateLimitedBody::new(body, rate, settings.slow_body_error));
        let mut router = self.router.clone();
        Box::pin(async move {
            let handled = crate::panics::catch_async(&settings.telemetry, PanicSite::Handler, async move {
                #[cfg(test)]
                if request.uri().path() == super::PANIC_TEST_PATH {
                    panic!("a panic injected by a test");
                }
                std::future::poll_fn(|cx| router.poll_ready(cx)).await?;
                router.call(request).await
            })
            .await;
            let response = match handled {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_caught) => (settings.internal_error)(),
            };
            Ok(response.map(|body| TrackedBody::new(body, in_flight)))
        })
    }
}
