//! OTLP/gRPC receiver: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`.
//!
//! A hand-written tonic service instead of the generated one, for two reasons: the codec hands
//! the handler the raw request bytes (the decoder, not tonic, owns protobuf parsing, so a
//! malformed body is `INVALID_ARGUMENT` rather than tonic's `INTERNAL`), and an oversize message
//! is reported as `RESOURCE_EXHAUSTED` (tonic says `OUT_OF_RANGE`, which OTLP clients retry).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder};
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Status};

use super::decode::PayloadFormat;
use super::{ExportError, Ingestor, Transport};
use crate::outcome::RequestOutcome;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

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
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            accept.enable(CompressionEncoding::Zstd);
            let request_bytes_max = ingestor.request_bytes_max();
            let mut grpc = tonic::server::Grpc::new(RawRequestCodec)
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(request_bytes_max), None);
            let mut response = grpc.unary(ExportHandler { ingestor: Arc::clone(&ingestor) }, request).await;
            // Errors raised by tonic before the handler runs (size limit, bad compression).
            let status_header = response.headers().get(Status::GRPC_STATUS).cloned();
            if let Some(code) = status_header.and_then(|value| value.to_str().ok().and_then(|s| s.parse::<i32>().ok()))
            {
                let code = Code::from_i32(code);
                if code == Code::OutOfRange {
                    let status = Status::resource_exhausted(format!(
                        "request exceeds {request_bytes_max} bytes (--max-request-bytes)"
                    ));
                    response = status.into_http();
                }
                if code != Code::Ok {
                    ingestor.telemetry().record_request(Transport::Grpc, request_outcome(code));
                }
            }
            Ok(response)
        })
    }
}

struct ExportHandler {
    ingestor: Arc<Ingestor>,
}

impl UnaryService<Bytes> for ExportHandler {
    type Response = ExportMetricsServiceResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let ingestor = Arc::clone(&self.ingestor);
        Box::pin(async move {
            // tonic has already undone the gRPC compression.
            let outcome = ingestor
                .export_body(request.into_inner(), None, PayloadFormat::Protobuf, Transport::Grpc)
                .await
                .map_err(|err| match err {
                    ExportError::Decode(err) => Status::invalid_argument(err.to_string()),
                    ExportError::Worker(_) => Status::internal(err.to_string()),
                })?;
            Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: super::partial_success(&outcome) }))
        })
    }
}

/// Decodes nothing: hands over the (already decompressed) message bytes; encodes responses with prost.
#[derive(Debug, Clone, Copy, Default)]
struct RawRequestCodec;

impl Codec for RawRequestCodec {
    type Encode = ExportMetricsServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawBytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawBytesDecoder
    }
}

#[derive(Debug, Clone, Copy)]
struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportMetricsServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(buf).map_err(|err| Status::internal(format!("encoding the response: {err}")))
    }
}

#[derive(Debug, Clone, Copy)]
struct RawBytesDecoder;

impl Decoder for RawBytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let len = buf.remaining();
        Ok(Some(buf.copy_to_bytes(len)))
    }
}

/// How a gRPC status counts in `otelscale_otlp_requests_total`.
fn request_outcome(code: Code) -> RequestOutcome {
    match code {
        Code::Ok => RequestOutcome::Ok,
        Code::InvalidArgument => RequestOutcome::Invalid,
        Code::ResourceExhausted | Code::OutOfRange => RequestOutcome::TooLarge,
        Code::Unimplemented => RequestOutcome::Unsupported,
        _ => RequestOutcome::Failed,
    }
}
