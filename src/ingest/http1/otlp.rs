//! The OTLP/HTTP receiver's answers, shared by both I/O back-ends: routing (`POST /v1/metrics`),
//! the checks made before the body is decoded, and the mapping of the export result to a status
//! and body.
//!
//! Answers follow the OTLP/HTTP specification: 200 with an `ExportMetricsServiceResponse` in the
//! request's encoding (a JSON full success is `{}`); on error a `google.rpc.Status` in the
//! request's encoding (plain text when the encoding itself is unknown) with 400, 413, 415, 500
//! (a caught panic), and 503 with `retry-after` when the ingest queue stayed full for
//! `--ingest-queue-wait` (the retryable answer OTLP clients back off on); 404 for other paths,
//! 405 with `allow: POST` for other methods.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;

use super::connection::{Request, RequestHead, Response, Status};
use crate::ingest::decode::{payload_format, DecodeError, PayloadFormat};
use crate::ingest::{ExportError, ExportOutcome, Transport};
use crate::outcome::RequestOutcome;
use crate::telemetry::Telemetry;

/// The path OTLP/HTTP metrics are posted to.
pub const METRICS_PATH: &str = "/v1/metrics";

/// `google.rpc.Status`, the error body OTLP/HTTP specifies (details omitted).
#[derive(Clone, PartialEq, Message, serde::Serialize)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// A request body to decode and store, in the request's encoding.
#[derive(Debug)]
pub struct ExportBody {
    pub body: Bytes,
    pub content_encoding: Option<String>,
    pub format: PayloadFormat,
}

/// What to do with a complete request.
#[derive(Debug)]
pub enum Dispatch {
    /// Answered without touching the body (wrong path, method or content type).
    Respond(Response),
    /// Decode and store the body, then answer with [`export_response`].
    Export(ExportBody),
}

/// Routes a complete request.
pub fn dispatch(request: Request, telemetry: &Telemetry) -> Dispatch {
    match check_head(&request.head, telemetry) {
        Ok(format) => {
            Dispatch::Export(ExportBody { body: request.body, content_encoding: request.head.content_encoding, format })
        }
        Err(response) => Dispatch::Respond(response),
    }
}

/// The answer to a request whose body is over `--max-request-bytes` before decompression (the
/// route and content type are checked first, as for any request).
pub fn body_too_large_response(head: &RequestHead, body_bytes_max: usize, telemetry: &Telemetry) -> Response {
    match check_head(head, telemetry) {
        Ok(format) => {
            error_response(&ExportError::Decode(DecodeError::TooLarge { limit: body_bytes_max }), format, telemetry)
        }
        Err(response) => response,
    }
}

/// Path, method and content type; the payload format when they are right.
fn check_head(head: &RequestHead, telemetry: &Telemetry) -> Result<PayloadFormat, Response> {
    let path = head.path();
    if path != METRICS_PATH {
        let message = format!("no route for {} {path}: OTLP metrics go to POST {METRICS_PATH}", head.method);
        return Err(Response::text(Status::NotFound, message));
    }
    if head.method != "POST" {
        let message = format!("method {} not allowed on {METRICS_PATH}: use POST", head.method);
        return Err(Response { allow: Some("POST"), ..Response::text(Status::MethodNotAllowed, message) });
    }
    payload_format(head.content_type.as_deref()).map_err(|err| {
        telemetry.record_request(Transport::Http, RequestOutcome::Unsupported);
        Response::text(Status::UnsupportedMediaType, err.to_string())
    })
}

/// The answer to an export: the outcome, or the error with its status (counted).
pub fn export_response(
    result: Result<ExportOutcome, ExportError>,
    format: PayloadFormat,
    telemetry: &Telemetry,
) -> Response {
    match result {
        Ok(outcome) => {
            let response = ExportMetricsServiceResponse { partial_success: crate::ingest::partial_success(&outcome) };
            if format == PayloadFormat::Json && response.partial_success.is_none() {
                // OTLP JSON omits unset fields: a full success is `{}`, not `{"partialSuccess":null}`.
                return Response {
                    status: Status::Ok,
                    content_type: format.content_type(),
                    allow: None,
                    retry_after_s: None,
                    body: b"{}".to_vec(),
                };
            }
            encoded_response(Status::Ok, format, &response)
        }
        Err(err) => error_response(&err, format, telemetry),
    }
}

/// The status, counted outcome and gRPC code of an export error.
fn error_status(err: &ExportError) -> (Status, RequestOutcome, tonic::Code) {
    match err {
        ExportError::Decode(DecodeError::TooLarge { .. }) => {
            (Status::PayloadTooLarge, RequestOutcome::TooLarge, tonic::Code::ResourceExhausted)
        }
        ExportError::Decode(DecodeError::UnsupportedContentEncoding(_) | DecodeError::UnsupportedContentType(_)) => {
            (Status::UnsupportedMediaType, RequestOutcome::Unsupported, tonic::Code::InvalidArgument)
        }
        ExportError::Decode(DecodeError::Decompress(_) | DecodeError::Protobuf(_) | DecodeError::Json(_)) => {
            (Status::BadRequest, RequestOutcome::Invalid, tonic::Code::InvalidArgument)
        }
        ExportError::Worker(_) => (Status::InternalServerError, RequestOutcome::Failed, tonic::Code::Internal),
        ExportError::Overloaded { .. } => {
            (Status::ServiceUnavailable, RequestOutcome::Overloaded, tonic::Code::Unavailable)
        }
        ExportError::DeadlinePassed => {
            (Status::ServiceUnavailable, RequestOutcome::Failed, tonic::Code::DeadlineExceeded)
        }
    }
}

fn error_response(err: &ExportError, format: PayloadFormat, telemetry: &Telemetry) -> Response {
    let (status, outcome, grpc_code) = error_status(err);
    telemetry.record_request(Transport::Http, outcome);
    let rpc_status = RpcStatus { code: grpc_code as i32, message: err.to_string() };
    let mut response = encoded_response(status, format, &rpc_status);
    response.retry_after_s = match err {
        ExportError::Overloaded { retry_after, .. } => Some(retry_after.as_secs().max(1)),
        ExportError::DeadlinePassed => Some(1),
        _ => None,
    };
    response
}

fn encoded_response<M: Message + serde::Serialize>(status: Status, format: PayloadFormat, message: &M) -> Response {
    let body = match format {
        PayloadFormat::Protobuf => message.encode_to_vec(),
        // Serializing these derived messages into a Vec cannot fail.
        PayloadFormat::Json => serde_json::to_vec(message).unwrap_or_default(),
    };
    Response { status, content_type: format.content_type(), allow: None, retry_after_s: None, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, target: &str, content_type: Option<&str>) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: target.into(),
            content_type: content_type.map(str::to_owned),
            content_encoding: None,
        }
    }

    fn respond(head: RequestHead) -> Response {
        match dispatch(Request { head, body: Bytes::new() }, &Telemetry::default()) {
            Dispatch::Respond(response) => response,
            Dispatch::Export(export) => panic!("expected an answer, got an export of {:?}", export.format),
        }
    }

    #[test]
    fn routes_and_early_answers() {
        let protobuf = Some("application/x-protobuf");
        let cases: &[(RequestHead, Status)] = &[
            (head("POST", "/v1/traces", protobuf), Status::NotFound),
            (head("POST", "/v1/metrics/", protobuf), Status::NotFound),
            (head("GET", "/v1/metrics", None), Status::MethodNotAllowed),
            (head("HEAD", "/v1/metrics", None), Status::MethodNotAllowed),
            (head("POST", "/v1/metrics", Some("text/plain")), Status::UnsupportedMediaType),
            (head("POST", "/v1/metrics", None), Status::UnsupportedMediaType),
        ];
        for (head, status) in cases {
            let response = respond(head.clone());
            assert_eq!(response.status, *status, "{head:?}");
            assert_eq!(response.allow.is_some(), *status == Status::MethodNotAllowed, "{head:?}");
        }
        let response = respond(head("POST", "/v1/traces", protobuf));
        assert!(String::from_utf8(response.body).unwrap().contains("/v1/metrics"));
    }

    #[test]
    fn metrics_path_with_query_or_absolute_target_is_exported() {
        for target in ["/v1/metrics", "/v1/metrics?tenant=a", "http://otelscale:4318/v1/metrics"] {
            let request = Request { head: head("POST", target, Some("application/json")), body: Bytes::new() };
            assert!(matches!(dispatch(request, &Telemetry::default()), Dispatch::Export(_)), "{target}");
        }
    }

    #[test]
    fn export_results_map_to_statuses() {
        let telemetry = Telemetry::default();
        let ok = export_response(Ok(ExportOutcome::default()), PayloadFormat::Json, &telemetry);
        assert_eq!((ok.status, ok.body.as_slice()), (Status::Ok, &b"{}"[..]));
        let ok = export_response(Ok(ExportOutcome::default()), PayloadFormat::Protobuf, &telemetry);
        assert_eq!((ok.status, ok.body.len()), (Status::Ok, 0));
        let too_large = ExportError::Decode(DecodeError::TooLarge { limit: 10 });
        let response = export_response(Err(too_large), PayloadFormat::Json, &telemetry);
        assert_eq!(response.status, Status::PayloadTooLarge);
        let status: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(status["code"], tonic::Code::ResourceExhausted as i32);
        let bad_gzip = ExportError::Decode(DecodeError::Decompress(std::io::Error::other("bad header")));
        assert_eq!(export_response(Err(bad_gzip), PayloadFormat::Protobuf, &telemetry).status, Status::BadRequest);
        let encoding = ExportError::Decode(DecodeError::UnsupportedContentEncoding("br".into()));
        assert_eq!(
            export_response(Err(encoding), PayloadFormat::Protobuf, &telemetry).status,
            Status::UnsupportedMediaType
        );
        let worker = ExportError::Worker("panicked".into());
        assert_eq!(
            export_response(Err(worker), PayloadFormat::Protobuf, &telemetry).status,
            Status::InternalServerError
        );
        let overloaded = ExportError::Overloaded {
            waited: std::time::Duration::from_millis(500),
            retry_after: std::time::Duration::from_secs(2),
        };
        let response = export_response(Err(overloaded), PayloadFormat::Protobuf, &telemetry);
        assert_eq!((response.status, response.retry_after_s), (Status::ServiceUnavailable, Some(2)));
        let status = RpcStatus::decode(response.body.as_slice()).unwrap();
        assert_eq!(status.code, tonic::Code::Unavailable as i32);
        assert!(status.message.contains("--ingest-queue-wait"), "{}", status.message);
        assert_eq!(telemetry.requests(Transport::Http, RequestOutcome::Overloaded), 1);
    }

    #[test]
    fn too_large_checks_the_route_and_content_type_first() {
        let telemetry = Telemetry::default();
        let response = body_too_large_response(&head("POST", "/v1/metrics", Some("text/plain")), 10, &telemetry);
        assert_eq!(response.status, Status::UnsupportedMediaType);
        let response =
            body_too_large_response(&head("POST", "/v1/metrics", Some("application/x-protobuf")), 10, &telemetry);
        assert_eq!(response.status, Status::PayloadTooLarge);
        let status = RpcStatus::decode(response.body.as_slice()).unwrap();
        assert!(status.message.contains("max-request-bytes"), "{}", status.message);
    }
}
