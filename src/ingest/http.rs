//! OTLP/HTTP receiver: `POST /v1/metrics` with protobuf or JSON bodies, optionally gzip.
//!
//! Answers follow the OTLP/HTTP specification: 200 with an `ExportMetricsServiceResponse` in the
//! request's encoding; on error a `google.rpc.Status` in the request's encoding (plain text when
//! the encoding itself is unknown) with 400, 413, 415; 404 for other paths, 405 for other methods.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;

use super::decode::{payload_format, DecodeError, PayloadFormat};
use super::{ExportError, Ingestor, Transport};
use crate::telemetry::RequestOutcome;

/// `google.rpc.Status`, the error body OTLP/HTTP specifies (details omitted).
#[derive(Clone, PartialEq, Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The router for the OTLP/HTTP listener.
pub fn router(ingestor: Arc<Ingestor>) -> Router {
    Router::new()
        .route("/v1/metrics", post(export).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(ingestor)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    let message = format!("no route for {method} {}: OTLP metrics go to POST /v1/metrics", uri.path());
    (StatusCode::NOT_FOUND, message).into_response()
}

async fn method_not_allowed(method: Method) -> Response {
    let message = format!("method {method} not allowed on /v1/metrics: use POST");
    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")], message).into_response()
}

async fn export(State(ingestor): State<Arc<Ingestor>>, headers: HeaderMap, body: Body) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    let format = match payload_format(content_type) {
        Ok(format) => format,
        Err(err) => {
            ingestor.telemetry().record_request(Transport::Http, RequestOutcome::Unsupported);
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, err.to_string()).into_response();
        }
    };
    let content_encoding =
        headers.get(header::CONTENT_ENCODING).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let result = match read_body(&ingestor, &headers, body).await {
        Ok(raw) => ingestor.export_body(raw, content_encoding, format, Transport::Http).await,
        Err(err) => Err(ExportError::Decode(err)),
    };
    match result {
        Ok(outcome) => {
            let response = ExportMetricsServiceResponse { partial_success: outcome.partial_success() };
            if format == PayloadFormat::Json && response.partial_success.is_none() {
                // OTLP JSON omits unset fields: a full success is `{}`, not `{"partialSuccess":null}`.
                return (StatusCode::OK, [(header::CONTENT_TYPE, format.content_type())], "{}").into_response();
            }
            encoded_response(StatusCode::OK, format, &response)
        }
        Err(err) => {
            let (status, outcome, grpc_code) = match &err {
                ExportError::Decode(DecodeError::TooLarge { .. }) => {
                    (StatusCode::PAYLOAD_TOO_LARGE, RequestOutcome::TooLarge, tonic::Code::ResourceExhausted)
                }
                ExportError::Decode(
                    DecodeError::UnsupportedContentEncoding(_) | DecodeError::UnsupportedContentType(_),
                ) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, RequestOutcome::Unsupported, tonic::Code::InvalidArgument),
                ExportError::Decode(DecodeError::Decompress(_) | DecodeError::Protobuf(_) | DecodeError::Json(_)) => {
                    (StatusCode::BAD_REQUEST, RequestOutcome::Invalid, tonic::Code::InvalidArgument)
                }
                ExportError::Worker(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, RequestOutcome::Failed, tonic::Code::Internal)
                }
            };
            ingestor.telemetry().record_request(Transport::Http, outcome);
            let rpc_status = RpcStatus { code: grpc_code as i32, message: err.to_string() };
            encoded_response(status, format, &rpc_status)
        }
    }
}

/// Reads the raw (possibly compressed) body, refusing more than `--max-request-bytes`.
async fn read_body(ingestor: &Ingestor, headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, DecodeError> {
    let limit = ingestor.request_bytes_max();
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > limit as u64) {
        return Err(DecodeError::TooLarge { limit });
    }
    // The compressed body is limited too: it can never usefully be larger than the limit.
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(DecodeError::TooLarge { limit }),
        Err(err) => Err(DecodeError::Decompress(std::io::Error::other(format!("reading the body: {err}")))),
    }
}

fn encoded_response<M: Message + serde::Serialize>(status: StatusCode, format: PayloadFormat, message: &M) -> Response {
    let body = match format {
        PayloadFormat::Protobuf => message.encode_to_vec(),
        PayloadFormat::Json => serde_json::to_vec(message).unwrap_or_default(),
    };
    (status, [(header::CONTENT_TYPE, format.content_type())], body).into_response()
}
