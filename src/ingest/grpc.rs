//! OTLP/gRPC receiver: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`.
//!
//! A hand-written service that reads the gRPC message itself instead of through tonic's
//! `Grpc::unary`, for three reasons:
//! - **Inflation off the async runtime.** tonic would inflate a compressed message inside its
//!   codec, on the async worker that GetMetrics answers also need; a 2 KiB zstd message may
//!   inflate to `--max-request-bytes`. Here the handler collects the message as sent (the
//!   length prefix is checked against `--max-request-bytes` before anything else is read) and
//!   hands it, with its `grpc-encoding`, to [`Ingestor::export_body_until`], which inflates it on
//!   the ingest workers under the same limit.
//! - **The decoder owns protobuf parsing**: a malformed body is `INVALID_ARGUMENT`, not tonic's
//!   `INTERNAL`; an oversize message is `RESOURCE_EXHAUSTED` (tonic says `OUT_OF_RANGE`, which
//!   OTLP clients retry).
//! - **Overload and deadlines as OTLP clients expect**: a full ingest queue is `UNAVAILABLE`
//!   (retryable); the `grpc-timeout` deadline is handed to the workers, which drop a request
//!   whose deadline passed before they took it (tonic's server also drops this handler's future
//!   at the deadline, and hyper drops it when the client resets the stream; the workers drop
//!   the work of a dropped handler too).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Frame;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::NamedService;
use tonic::{Code, Status};

use super::decode::{DecodeError, PayloadFormat};
use super::{ExportError, Ingestor, Transport};
use crate::outcome::RequestOutcome;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// The message encodings accepted, as `grpc-accept-encoding` lists them.
const ACCEPTED_ENCODINGS: &str = "gzip,zstd,identity";

/// Bytes of a gRPC message's prefix: the compressed flag and the big-endian length.
const MESSAGE_PREFIX_BYTES: usize = 5;

/// The OTLP MetricsService, ready to add to a tonic router.
#[derive(Debug, Clone)]
pub struct OtlpGrpcService {
    ingestor: Arc<Ingestor>,
}

impl OtlpGrpcService {
    pub fn new(ingestor: Arc<Ingestor>) -> Self {
        OtlpGrpcService { ingestor }
    }
}

impl NamedService for OtlpGrpcService {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

impl<B> Service<http::Request<B>> for OtlpGrpcService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async {
                Ok(Status::unimplemented("unknown method: otelscale serves MetricsService/Export").into_http())
            });
        }
        let ingestor = Arc::clone(&self.ingestor);
        Box::pin(async move {
            match export(&ingestor, request).await {
                Ok(response) => Ok(response),
                Err(status) => {
                    let code = status.code();
                    ingestor.telemetry().record_request(Transport::Grpc, request_outcome(code));
                    let mut response = status.into_http();
                    if code == Code::Unimplemented {
                        response
                            .headers_mut()
                            .insert("grpc-accept-encoding", http::HeaderValue::from_static(ACCEPTED_ENCODINGS));
                    }
                    Ok(response)
                }
            }
        })
    }
}

/// One Export call: the message read and checked, stored through the ingestor, answered.
async fn export<B>(
    ingestor: &Arc<Ingestor>,
    request: http::Request<B>,
) -> Result<http::Response<tonic::body::Body>, Status>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let (parts, body) = request.into_parts();
    let encoding = message_encoding(&parts.headers)?;
    let deadline = grpc_timeout(&parts.headers).and_then(|timeout| tokio::time::Instant::now().checked_add(timeout));
    let (compressed, message) = read_message(body, ingestor.request_bytes_max()).await?;
    let content_encoding = match (compressed, encoding) {
        (false, _) => None,
        (true, Some(encoding)) => Some(encoding.to_owned()),
        (true, None) => {
            return Err(Status::internal("protocol error: a compressed message without a grpc-encoding header"))
        }
    };
    let outcome = ingestor
        .export_body_until(message, content_encoding, PayloadFormat::Protobuf, Transport::Grpc, deadline)
        .await
        .map_err(|err| export_status(&err))?;
    let response = ExportMetricsServiceResponse { partial_success: super::partial_success(&outcome) };
    Ok(unary_response(&response))
}

/// The status of a failed export.
fn export_status(err: &ExportError) -> Status {
    match err {
        ExportError::Decode(DecodeError::TooLarge { .. }) => Status::resource_exhausted(err.to_string()),
        ExportError::Decode(DecodeError::UnsupportedContentEncoding(_)) => Status::unimplemented(err.to_string()),
        ExportError::Decode(_) => Status::invalid_argument(err.to_string()),
        ExportError::Overloaded { .. } => Status::unavailable(err.to_string()),
        ExportError::DeadlinePassed => Status::deadline_exceeded(err.to_string()),
        ExportError::Worker(_) => Status::internal(err.to_string()),
    }
}

/// The `grpc-encoding` of the request's message: `None` for identity.
fn message_encoding(headers: &http::HeaderMap) -> Result<Option<&'static str>, Status> {
    let Some(value) = headers.get("grpc-encoding") else { return Ok(None) };
    let value = value.to_str().unwrap_or("").trim();
    match value {
        "" | "identity" => Ok(None),
        "gzip" => Ok(Some("gzip")),
        "zstd" => Ok(Some("zstd")),
        other => {
            Err(Status::unimplemented(format!("grpc-encoding `{other}` is not supported: use gzip, zstd or identity")))
        }
    }
}

/// The `grpc-timeout` header: digits (at most eight) and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let digits = value.get(..value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match value.as_bytes()[value.len() - 1] {
        b'H' => Duration::from_secs(amount.checked_mul(3_600)?),
        b'M' => Duration::from_secs(amount.checked_mul(60)?),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Reads the one message of a unary call: `(compressed, bytes as sent)`. The length prefix is
/// checked against `limit` as soon as it arrives; more than one message, or bytes beyond the
/// message, is an error, so the body read is at most the message.
async fn read_message<B>(body: B, limit: usize) -> Result<(bool, Bytes), Status>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let too_large = || Status::resource_exhausted(format!("request exceeds {limit} bytes (--max-request-bytes)"));
    let mut body = std::pin::pin!(body);
    let mut received = BytesMut::new();
    let mut message_len: Option<usize> = None;
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        // A body cut off by the server (too slow: `server::body`) carries its own status.
        let frame = frame.map_err(|err| match err.into().downcast::<Status>() {
            Ok(status) => *status,
            Err(err) => Status::cancelled(format!("reading the request: {err}")),
        })?;
        let Ok(mut data) = frame.into_data() else { continue };
        while data.has_remaining() {
            let chunk = data.chunk();
            let take = chunk.len();
            if let Some(message_len) = message_len {
                if received.len() + take > MESSAGE_PREFIX_BYTES + message_len {
                    return Err(Status::invalid_argument("an Export call carries exactly one request message"));
                }
            }
            received.extend_from_slice(chunk);
            data.advance(take);
            if message_len.is_none() && received.len() >= MESSAGE_PREFIX_BYTES {
                let declared = u32::from_be_bytes(received[1..MESSAGE_PREFIX_BYTES].try_into().expect("4 bytes"));
                let declared = usize::try_from(declared).unwrap_or(usize::MAX);
                if declared > limit {
                    return Err(too_large());
                }
                if received.len() > MESSAGE_PREFIX_BYTES + declared {
                    return Err(Status::invalid_argument("an Export call carries exactly one request message"));
                }
                message_len = Some(declared);
            }
        }
    }
    let Some(message_len) = message_len else {
        return Err(Status::invalid_argument("the Export call carried no request message"));
    };
    if received.len() < MESSAGE_PREFIX_BYTES + message_len {
        return Err(Status::invalid_argument("the request message ended before its declared length"));
    }
    let compressed = match received[0] {
        0 => false,
        1 => true,
        flag => return Err(Status::invalid_argument(format!("invalid gRPC message flag {flag}"))),
    };
    Ok((compressed, received.freeze().slice(MESSAGE_PREFIX_BYTES..)))
}

/// A successful unary answer: the response message, then `grpc-status: 0` in the trailers.
fn unary_response(response: &ExportMetricsServiceResponse) -> http::Response<tonic::body::Body> {
    let message_len = response.encoded_len();
    let mut frame = BytesMut::with_capacity(MESSAGE_PREFIX_BYTES + message_len);
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message_len).expect("a response message is small"));
    response.encode(&mut frame).expect("the buffer has room for the message");
    let mut trailers = http::HeaderMap::new();
    trailers.insert(Status::GRPC_STATUS, http::HeaderValue::from_static("0"));
    let body = UnaryBody { message: Some(frame.freeze()), trailers: Some(trailers) };
    let mut answer = http::Response::new(tonic::body::Body::new(body));
    answer.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    answer
}

/// The body of a successful unary answer: one data frame, then the trailers.
struct UnaryBody {
    message: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl Body for UnaryBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        Poll::Ready(self.trailers.take().map(|trailers| Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && self.trailers.is_none()
    }
}

/// How a gRPC status counts in `otelscale_otlp_requests_total`.
fn request_outcome(code: Code) -> RequestOutcome {
    match code {
        Code::Ok => RequestOutcome::Ok,
        Code::InvalidArgument => RequestOutcome::Invalid,
        Code::ResourceExhausted | Code::OutOfRange => RequestOutcome::TooLarge,
        Code::Unimplemented => RequestOutcome::Unsupported,
        Code::Unavailable => RequestOutcome::Overloaded,
        _ => RequestOutcome::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs.iter().map(|&(name, value)| (name.parse().unwrap(), http::HeaderValue::from_static(value))).collect()
    }

    #[test]
    fn grpc_timeouts_parse_as_the_grpc_spec_writes_them() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("5S", Some(Duration::from_secs(5))),
            ("100m", Some(Duration::from_millis(100))),
            ("2H", Some(Duration::from_secs(7_200))),
            ("3M", Some(Duration::from_secs(180))),
            ("7u", Some(Duration::from_micros(7))),
            ("9n", Some(Duration::from_nanos(9))),
            ("123456789S", None),
            ("S", None),
            ("5s", None),
            ("-1S", None),
            ("", None),
        ];
        for &(value, expected) in cases {
            let map = headers(&[("grpc-timeout", Box::leak(value.to_owned().into_boxed_str()))]);
            assert_eq!(grpc_timeout(&map), expected, "{value:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn message_encodings() {
        assert_eq!(message_encoding(&http::HeaderMap::new()).unwrap(), None);
        assert_eq!(message_encoding(&headers(&[("grpc-encoding", "identity")])).unwrap(), None);
        assert_eq!(message_encoding(&headers(&[("grpc-encoding", "gzip")])).unwrap(), Some("gzip"));
        assert_eq!(message_encoding(&headers(&[("grpc-encoding", "zstd")])).unwrap(), Some("zstd"));
        let status = message_encoding(&headers(&[("grpc-encoding", "br")])).unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented);
    }

    /// A request body of the given frames.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|bytes| Ok(Frame::data(bytes))))
        }
    }

    fn frames(parts: &[&[u8]]) -> Frames {
        Frames(parts.iter().map(|part| Bytes::copy_from_slice(part)).collect())
    }

    #[tokio::test]
    async fn a_message_is_read_across_frames_and_checked_against_its_prefix_and_the_limit() {
        let (compressed, message) = read_message(frames(&[&[1, 0, 0], &[0, 3, b'a'], b"bc"]), 16).await.unwrap();
        assert!(compressed);
        assert_eq!(&message[..], b"abc");
        let cases: &[(&[&[u8]], Code, &str)] = &[
            (&[&[0, 0, 0, 0, 17]], Code::ResourceExhausted, "--max-request-bytes"),
            (&[], Code::InvalidArgument, "no request message"),
            (&[&[0, 0, 0]], Code::InvalidArgument, "no request message"),
            (&[&[0, 0, 0, 0, 3, b'a']], Code::InvalidArgument, "ended before"),
            (&[&[0, 0, 0, 0, 1, b'a'], &[0]], Code::InvalidArgument, "exactly one"),
            (&[&[0, 0, 0, 0, 1, b'a', 0]], Code::InvalidArgument, "exactly one"),
            (&[&[2, 0, 0, 0, 0]], Code::InvalidArgument, "flag"),
        ];
        for (parts, code, message) in cases {
            let status = read_message(frames(parts), 16).await.unwrap_err();
            assert_eq!(status.code(), *code, "{parts:?}: {status:?}");
            assert!(status.message().contains(message), "{parts:?}: {}", status.message());
        }
    }

    #[test]
    fn export_errors_map_to_otlp_statuses() {
        let cases = [
            (ExportError::Decode(DecodeError::TooLarge { limit: 1 }), Code::ResourceExhausted),
            (
                ExportError::Overloaded { waited: Duration::from_millis(500), retry_after: Duration::from_secs(1) },
                Code::Unavailable,
            ),
            (ExportError::DeadlinePassed, Code::DeadlineExceeded),
            (ExportError::Worker("panicked".into()), Code::Internal),
        ];
        for (err, code) in cases {
            assert_eq!(export_status(&err).code(), code, "{err}");
        }
        assert!(export_status(&cases_overloaded()).message().contains("--ingest-queue-wait"));
        assert_eq!(request_outcome(Code::Unavailable), RequestOutcome::Overloaded);
    }

    fn cases_overloaded() -> ExportError {
        ExportError::Overloaded { waited: Duration::from_millis(500), retry_after: Duration::from_secs(1) }
    }
}
