//! Bad input: each case gets the right status and a message naming the problem, the server keeps
//! serving, and what was stored before is intact.

use std::io::Write;

use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::Code;

use crate::common::*;

const LIMIT_BYTES: usize = 64 * 1024;

async fn server_with_baseline() -> TestServer {
    server_with_baseline_on(otelscale::config::IoUringMode::Auto).await
}

async fn server_with_baseline_on(backend: otelscale::config::IoUringMode) -> TestServer {
    let server = TestServer::start_http(backend, |config| config.request_bytes_max = LIMIT_BYTES).await;
    let mut client = server.otlp_client().await;
    let baseline = request(&[("job", "t")], vec![gauge("baseline", vec![number_point(&[], now_unix_nano(), 42.0)])]);
    client.export(baseline).await.unwrap();
    server
}

async fn assert_baseline_intact(server: &TestServer) {
    let answer = server.admin_query(&[("metricQuery", "baseline{job=t}")]).await;
    assert_eq!(answer["value"], 42.0, "earlier data lost: {answer}");
}

/// A valid request of roughly `n_bytes` (many points with distinct labels).
fn big_request(n_bytes: usize) -> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
    let now = now_unix_nano();
    let n_points = n_bytes / 40 + 1;
    let points = (0..n_points).map(|i| number_point(&[("pod", &format!("pod-{i:08}"))], now, i as f64)).collect();
    request(&[], vec![gauge("big", points)])
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn grpc_bad_input() {
    let server = server_with_baseline().await;

    let status = raw_grpc::export_raw(server.otlp_grpc, vec![0xff, 0xff, 0xff, 0x01]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("not a valid ExportMetricsServiceRequest"), "{}", status.message());
    assert_baseline_intact(&server).await;

    let oversize = big_request(2 * LIMIT_BYTES);
    assert!(oversize.encoded_len() > LIMIT_BYTES);
    let status = server.otlp_client().await.export(oversize.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max-request-bytes"), "{}", status.message());
    assert_baseline_intact(&server).await;

    // Compressed it is small, but inflating it crosses the limit: cut off while inflating.
    let status =
        server.otlp_client().await.send_compressed(CompressionEncoding::Gzip).export(oversize).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_baseline_intact(&server).await;
    assert_eq!(server.metric("otelscale_requests_total{transport=\"grpc\",outcome=\"invalid\"}").await, 1.0);
    assert_eq!(server.metric("otelscale_requests_total{transport=\"grpc\",outcome=\"too_large\"}").await, 2.0);
    server.stop().await;
}

#[tokio::test]
async fn http_bad_input() {
    for backend in HTTP_BACKENDS {
        http_bad_input_on(backend).await;
    }
}

async fn http_bad_input_on(backend: otelscale::config::IoUringMode) {
    let server = server_with_baseline_on(backend).await;
    let http = reqwest::Client::new();
    let url = server.http_url("/v1/metrics");
    let post = |content_type: &'static str, body: Vec<u8>| {
        http.post(url.clone()).header("content-type", content_type).body(body).send()
    };

    // Malformed protobuf: 400 with a google.rpc.Status in protobuf.
    let response = post("application/x-protobuf", vec![0xff, 0xff, 0xff]).await.unwrap();
    assert_eq!(response.status(), 400);
    let body = response.bytes().await.unwrap();
    // google.rpc.Status: field 2 is the message; it names the problem.
    assert!(String::from_utf8_lossy(&body).contains("not a valid ExportMetricsServiceRequest"));

    let response = post("application/json", b"{\"resourceMetrics\": [".to_vec()).await.unwrap();
    assert_eq!(response.status(), 400);
    let status: serde_json::Value = response.json().await.unwrap();
    assert!(status["message"].as_str().unwrap().contains("OTLP JSON"), "{status}");
    assert_eq!(status["code"], 3);

    let response = post("text/plain", b"hello".to_vec()).await.unwrap();
    assert_eq!(response.status(), 415);
    assert!(response.text().await.unwrap().contains("text/plain"));

    let response = http.get(url.clone()).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");

    let response = http.post(server.http_url("/v1/traces")).body("x").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.text().await.unwrap().contains("/v1/metrics"));

    let oversize = big_request(2 * LIMIT_BYTES).encode_to_vec();
    let response = post("application/x-protobuf", oversize.clone()).await.unwrap();
    assert_eq!(response.status(), 413);

    // Gzip bomb: small on the wire, over the limit once inflated.
    let bomb = gzip(&vec![0u8; 50 * LIMIT_BYTES]);
    assert!(bomb.len() < LIMIT_BYTES);
    let response = http
        .post(url.clone())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    let response = http
        .post(url.clone())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(b"definitely not gzip".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let response = http
        .post(url.clone())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "br")
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    assert_baseline_intact(&server).await;
    assert_eq!(server.metric("otelscale_requests_total{transport=\"http\",outcome=\"too_large\"}").await, 2.0);
    // Still serving: a good request goes through.
    let good = request(&[("job", "t")], vec![gauge("after", vec![number_point(&[], now_unix_nano(), 1.0)])]);
    let response = post("application/x-protobuf", good.encode_to_vec()).await.unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}
