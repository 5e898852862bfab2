//! In-crate tests of the whole server that need a fault only test builds have: on every port,
//! a request to [`PANIC_TEST_PATH`] panics in its handler. The panic is counted, answered as an
//! internal error (gRPC INTERNAL, HTTP 500), and the same connection and the server keep serving.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::config::IoUringMode;
use crate::scaler::proto::external_scaler_client::ExternalScalerClient;
use crate::scaler::proto::ScaledObjectRef;

/// A generous bound for anything a test waits for: a hang fails, a slow machine does not.
const WAIT_DEADLINE: Duration = Duration::from_secs(30);

struct RunningServer {
    otlp_grpc: SocketAddr,
    otlp_http: SocketAddr,
    scaler: SocketAddr,
    admin: SocketAddr,
    shutdown: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), ServerError>>,
}

async fn start(io_uring: IoUringMode) -> RunningServer {
    let bind = || async { TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let listeners =
        Listeners { otlp_grpc: bind().await, otlp_http: bind().await, scaler: bind().await, admin: bind().await };
    let addr = |listener: &TcpListener| listener.local_addr().unwrap();
    let (otlp_grpc, otlp_http, scaler, admin) =
        (addr(&listeners.otlp_grpc), addr(&listeners.otlp_http), addr(&listeners.scaler), addr(&listeners.admin));
    let config = Config { io_uring, ..Config::default() };
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(run(listeners, config, async {
        let _ = stop.await;
    }));
    let ready = async {
        loop {
            if let Ok(response) = reqwest::get(format!("http://{admin}/readyz")).await {
                if response.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT_DEADLINE, ready).await.expect("the server became ready");
    RunningServer { otlp_grpc, otlp_http, scaler, admin, shutdown, handle }
}

/// Sends one HTTP/1.1 request on `stream` and reads its answer: (status, body).
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> (u16, Vec<u8>) {
    stream.write_all(request).await.unwrap();
    let mut received = Vec::new();
    let read = async {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = response.parse(&received).unwrap() {
                let body_len: usize = response
                    .headers
                    .iter()
                    .find(|header| header.name.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |header| std::str::from_utf8(header.value).unwrap().parse().unwrap());
                if received.len() >= head_len + body_len {
                    return (response.code.unwrap(), received[head_len..head_len + body_len].to_vec());
                }
            }
            let mut chunk = [0u8; 4096];
            let n_bytes = stream.read(&mut chunk).await.unwrap();
            assert!(n_bytes > 0, "closed before an answer: {:?}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&chunk[..n_bytes]);
        }
    };
    tokio::time::timeout(WAIT_DEADLINE, read).await.expect("an answer")
}

async fn grpc_channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

/// Calls the panicking path on `channel`: the status of the answer.
async fn call_panic_path(channel: &tonic::transport::Channel) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(PANIC_TEST_PATH);
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    grpc.unary(tonic::Request::new(()), path, codec).await.expect_err("the handler panicked")
}

#[tokio::test]
async fn a_panicking_handler_is_answered_as_an_internal_error_and_every_port_keeps_serving() {
    for io_uring in [IoUringMode::Off, IoUringMode::Auto] {
        let server = start(io_uring).await;

        // OTLP/gRPC: INTERNAL, then an export on the same connection.
        let channel = grpc_channel(server.otlp_grpc).await;
        assert_eq!(call_panic_path(&channel).await.code(), tonic::Code::Internal, "{io_uring:?}");
        MetricsServiceClient::new(channel).export(ExportMetricsServiceRequest::default()).await.unwrap();

        // Scaler: INTERNAL, then GetMetricSpec on the same connection.
        let channel = grpc_channel(server.scaler).await;
        assert_eq!(call_panic_path(&channel).await.code(), tonic::Code::Internal, "{io_uring:?}");
        let trigger = ScaledObjectRef {
            name: "panic-test".into(),
            namespace: "test".into(),
            scaler_metadata: [("metricQuery", "sum(m)"), ("targetValue", "1")]
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
        };
        ExternalScalerClient::new(channel).get_metric_spec(trigger).await.unwrap();

        // Admin: 500, then /healthz on the same connection.
        let mut admin = TcpStream::connect(server.admin).await.unwrap();
        let panic_request = format!("GET {PANIC_TEST_PATH} HTTP/1.1\r\nHost: admin\r\n\r\n");
        assert_eq!(exchange(&mut admin, panic_request.as_bytes()).await.0, 500, "{io_uring:?}");
        let (status, body) = exchange(&mut admin, b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n").await;
        assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));

        // OTLP/HTTP (the back-end under test): 500, then an export on the same connection.
        let mut otlp_http = TcpStream::connect(server.otlp_http).await.unwrap();
        let panic_request = format!(
            "POST {PANIC_TEST_PATH} HTTP/1.1\r\nHost: otlp\r\nContent-Type: application/x-protobuf\r\n\
             Content-Length: 0\r\n\r\n"
        );
        assert_eq!(exchange(&mut otlp_http, panic_request.as_bytes()).await.0, 500, "{io_uring:?}");
        let export = b"POST /v1/metrics HTTP/1.1\r\nHost: otlp\r\nContent-Type: application/x-protobuf\r\n\
                       Content-Length: 0\r\n\r\n";
        assert_eq!(exchange(&mut otlp_http, export).await.0, 200, "{io_uring:?}");

        let (status, metrics) = exchange(&mut admin, b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n").await;
        assert_eq!(status, 200);
        let metrics = String::from_utf8(metrics).unwrap();
        assert!(metrics.contains("otelscale_panics_total{site=\"handler\"} 4\n"), "{io_uring:?}: {metrics}");

        server.shutdown.send(()).unwrap();
        tokio::time::timeout(WAIT_DEADLINE, server.handle).await.expect("stopped").unwrap().unwrap();
    }
}
