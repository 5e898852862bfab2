//! Every way in: OTLP/gRPC (plain and gzip), OTLP/HTTP protobuf, JSON and gzip.

use std::io::Write;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use tonic::codec::CompressionEncoding;

use crate::common::*;

#[tokio::test]
async fn grpc_export_plain_and_gzip_is_visible_at_once() {
    let server = TestServer::start().await;
    let now = now_unix_nano();
    let mut client = server.otlp_client().await;
    let plain =
        request(&[("job", "training")], vec![gauge("queue.depth", vec![number_point(&[("pod", "a")], now, 7.0)])]);
    let response = client.export(plain).await.unwrap().into_inner();
    assert_eq!(response.partial_success, None);
    // The promise: once Export returned, the point is visible.
    let answer = server.admin_query(&[("metricQuery", "sum(queue_depth{job=training})")]).await;
    assert_eq!(answer["value"], 7.0);

    let mut gzip_client = server.otlp_client().await.send_compressed(CompressionEncoding::Gzip);
    let compressed =
        request(&[("job", "training")], vec![gauge("queue.depth", vec![number_point(&[("pod", "b")], now, 5.0)])]);
    gzip_client.export(compressed).await.unwrap();
    let answer = server.admin_query(&[("metricQuery", "sum(queue_depth{job=training})")]).await;
    assert_eq!(answer["value"], 12.0);
    assert_eq!(answer["matchedSeries"], 2);
    assert_eq!(server.metric("otelscale_points_received_total{transport=\"grpc\"}").await, 2.0);
    server.stop().await;
}

#[tokio::test]
async fn http_protobuf_json_and_gzip_bodies() {
    for backend in HTTP_BACKENDS {
        http_protobuf_json_and_gzip_bodies_on(backend).await;
    }
}

async fn http_protobuf_json_and_gzip_bodies_on(backend: otelscale::config::IoUringMode) {
    let server = TestServer::start_http(backend, |_| {}).await;
    let http = reqwest::Client::new();
    let now = now_unix_nano();

    // Protobuf: the response is an ExportMetricsServiceResponse in protobuf.
    let body = request(&[("host.name", "n1")], vec![gauge("gpu_util", vec![number_point(&[("gpu", "0")], now, 40.0)])])
        .encode_to_vec();
    let response = http
        .post(server.http_url("/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let decoded = ExportMetricsServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(decoded.partial_success, None);

    // OTLP JSON as a collector's otlphttp exporter writes it: camelCase, 64-bit ints as strings.
    let json = format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"host.name","value":{{"stringValue":"n1"}}}}]}},
        "scopeMetrics":[{{"metrics":[{{"name":"gpu_util","gauge":{{"dataPoints":[
          {{"attributes":[{{"key":"gpu","value":{{"stringValue":"1"}}}}],"timeUnixNano":"{now}","asInt":"60"}}]}}}}]}}]}}]}}"#
    );
    let response = http
        .post(server.http_url("/v1/metrics"))
        .header("content-type", "application/json")
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer, serde_json::json!({}));

    // Gzip-compressed protobuf.
    let body = request(&[("host.name", "n1")], vec![gauge("gpu_util", vec![number_point(&[("gpu", "2")], now, 80.0)])])
        .encode_to_vec();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&body).unwrap();
    let response = http
        .post(server.http_url("/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(encoder.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let answer = server.admin_query(&[("metricQuery", "avg(gpu_util{host.name=n1})")]).await;
    assert_eq!(answer["matchedSeries"], 3);
    assert_eq!(answer["value"], 60.0);
    let answer = server.admin_query(&[("metricQuery", "max(gpu_util{gpu=~\"[01]\"})")]).await;
    assert_eq!(answer["value"], 60.0);
    server.stop().await;
}

#[tokio::test]
async fn partial_success_names_each_rejection_and_keeps_the_rest() {
    let server = TestServer::start_with(|config| {
        config.series_count_max = 3;
        config.labels_per_series_max = 4;
        config.label_value_bytes_max = 16;
    })
    .await;
    let now = now_unix_nano();
    let mut client = server.otlp_client().await;
    let long_value = "x".repeat(17);
    let far_future = now + 3_600 * 1_000_000_000;
    let points = vec![
        number_point(&[("pod", "a")], now, 1.0),
        number_point(&[("pod", "b")], now, 2.0),
        number_point(&[("pod", "c")], now, f64::NAN),
        number_point(&[("pod", "d")], far_future, 4.0),
        number_point(&[("pod", "e"), ("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")], now, 5.0),
        number_point(&[("pod", &long_value)], now, 6.0),
    ];
    let response = client.export(request(&[], vec![gauge("m", points)])).await.unwrap().into_inner();
    let partial = response.partial_success.expect("partial success");
    assert_eq!(partial.rejected_data_points, 4);
    for reason in ["nan_value", "future_timestamp", "too_many_labels", "label_value_too_long"] {
        assert!(partial.error_message.contains(reason), "{reason} missing in `{}`", partial.error_message);
        assert_eq!(server.metric(&format!("otelscale_points_rejected_total{{reason=\"{reason}\"}}")).await, 1.0);
    }

    // Series limit: one more series fits, the next is refused; existing series keep flowing.
    // Stamped now (not ahead of the server's clock: a query ignores samples after its time).
    let later = now_unix_nano().max(now + 1);
    let points = vec![
        number_point(&[("pod", "f")], later, 10.0),
        number_point(&[("pod", "g")], later, 20.0),
        number_point(&[("pod", "a")], later, 30.0),
    ];
    let response = client.export(request(&[], vec![gauge("m", points)])).await.unwrap().into_inner();
    let partial = response.partial_success.expect("series limit is a partial success");
    assert_eq!(partial.rejected_data_points, 1);
    assert!(partial.error_message.contains("series_limit"), "{}", partial.error_message);
    let answer = server.admin_query(&[("metricQuery", "sum(m)")]).await;
    assert_eq!(answer["matchedSeries"], 3);
    // Which of the two new series got the last slot depends on shard order: exactly one did.
    let new_series = server.admin_query(&[("metricQuery", "count(m{pod=~\"f|g\"})")]).await;
    assert_eq!(new_series["value"], 1.0);
    let value = answer["value"].as_f64().unwrap();
    assert!(value == 30.0 + 2.0 + 10.0 || value == 30.0 + 2.0 + 20.0, "{value}");
    assert_eq!(server.metric("otelscale_series").await, 3.0);
    assert_eq!(server.metric("otelscale_requests_total{transport=\"grpc\",outcome=\"partial_success\"}").await, 2.0);
    server.stop().await;
}

#[tokio::test]
async fn zstd_bodies_over_grpc_and_http() {
    for backend in HTTP_BACKENDS {
        let server = TestServer::start_http(backend, |_| {}).await;
        let now = now_unix_nano();
        let mut zstd_client = server.otlp_client().await.send_compressed(CompressionEncoding::Zstd);
        let over_grpc = request(&[], vec![gauge("queue_depth", vec![number_point(&[("via", "grpc")], now, 3.0)])]);
        zstd_client.export(over_grpc).await.unwrap();

        let over_http = request(&[], vec![gauge("queue_depth", vec![number_point(&[("via", "http")], now, 4.0)])]);
        let response = reqwest::Client::new()
            .post(server.http_url("/v1/metrics"))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "zstd")
            .body(zstd::encode_all(&over_http.encode_to_vec()[..], 1).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{backend:?}");
        let answer = server.admin_query(&[("metricQuery", "sum(queue_depth)")]).await;
        assert_eq!(answer["value"], 7.0, "{backend:?}");
        assert_eq!(answer["matchedSeries"], 2);
        server.stop().await;
    }
}
