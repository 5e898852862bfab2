//! `--self-otlp-endpoint`: one server (A) pushes its own metrics over OTLP/gRPC into another
//! (B), whose admin API shows them; an endpoint that is down or never answers costs A nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use otelscale::config::SelfExportConfig;
use tokio::net::TcpListener;

use crate::common::*;

/// How long a test waits for pushed metrics to show.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(15);

async fn start_exporting_to(endpoint: String, interval: Duration) -> TestServer {
    TestServer::start_with(|config| config.self_export = Some(SelfExportConfig { endpoint, interval })).await
}

/// Pushes `n_points` gauge points (distinct series) into `server` over OTLP/gRPC in one request.
async fn push_points(server: &TestServer, n_points: usize) {
    let now = now_unix_nano();
    let points = (0..n_points).map(|idx| number_point(&[("gpu", &idx.to_string())], now, 50.0)).collect();
    let mut client = server.otlp_client().await;
    let response = client.export(request(&[("job", "train")], vec![gauge("gpu.util", points)])).await;
    assert_eq!(response.unwrap().into_inner().partial_success, None);
}

/// The last value B holds of one of A's metrics, `None` while B has no such series.
async fn value_in(receiver: &TestServer, metric_query: &str) -> Option<f64> {
    let answer = receiver.admin_query(&[("metricQuery", metric_query)]).await;
    assert!(answer.get("error").is_none(), "{metric_query}: {answer}");
    answer["rawValue"].as_f64()
}

/// Waits until `metric_query` has the value `expected` in `receiver`.
async fn wait_for_value(receiver: &TestServer, metric_query: &str, expected: f64) {
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        let value = value_in(receiver, metric_query).await;
        if value == Some(expected) {
            return;
        }
        assert!(Instant::now() < deadline, "{metric_query} is {value:?}, not {expected}, after {ARRIVAL_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_of_one_server_arrive_in_another_as_counters_gauges_and_histograms() {
    let receiver = TestServer::start().await;
    let exporter = start_exporting_to(format!("http://{}", receiver.otlp_grpc), Duration::from_millis(200)).await;
    push_points(&exporter, 3).await;
    let value = exporter.get_metric_value(&[("metricQuery", "sum(gpu_util)"), ("targetValue", "10")]).await;
    assert_eq!(value.unwrap(), 150.0);

    // Counters, with labels from the point attributes and the resource.
    wait_for_value(&receiver, "max(otelscale_points_received_total{transport=grpc,service.name=otelscale})", 3.0).await;
    let requests_ok = "max(otelscale_requests_total{transport=grpc,outcome=ok})";
    wait_for_value(&receiver, requests_ok, 1.0).await;
    wait_for_value(&receiver, "max(otelscale_scaler_requests_total{method=GetMetrics,outcome=ok})", 1.0).await;
    // A gauge: the exporter holds the three series pushed above.
    wait_for_value(&receiver, "max(otelscale_series)", 3.0).await;
    // The histogram: one query, in one bucket; the receiver turns OTLP's per-bucket counts back
    // into cumulative `le` series, so +Inf holds the total.
    wait_for_value(&receiver, "max(otelscale_query_duration_seconds_count)", 1.0).await;
    wait_for_value(&receiver, "max(otelscale_query_duration_seconds_bucket{le=+Inf})", 1.0).await;
    let sum = value_in(&receiver, "max(otelscale_query_duration_seconds_sum)").await.unwrap();
    assert!(sum > 0.0 && sum < 1.0, "{sum}");
    // A successful push is counted, and shows in the next one.
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    while value_in(&receiver, "max(otelscale_self_exports_total)").await.unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "otelscale_self_exports_total never reached 1 in the receiver");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let series: serde_json::Value =
        reqwest::get(receiver.admin_url("/api/v1/series?match=otelscale_points_received_total"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let series = series.as_array().unwrap();
    assert_eq!(series.len(), 2, "one series per transport: {series:?}");
    for entry in series {
        assert_eq!(entry["kind"], "cumulative_counter", "{entry}");
        let labels = &entry["labels"];
        assert_eq!(labels["service.name"], "otelscale", "{entry}");
        assert_eq!(labels["service.version"], env!("CARGO_PKG_VERSION"), "{entry}");
        assert!(!labels["service.instance.id"].as_str().unwrap().is_empty(), "{entry}");
    }
    let gauges: serde_json::Value = reqwest::get(receiver.admin_url("/api/v1/series?match=otelscale_streams_open"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(gauges[0]["kind"], "gauge", "{gauges}");
    let buckets: serde_json::Value =
        reqwest::get(receiver.admin_url("/api/v1/series?match=otelscale_query_duration_seconds_bucket"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(buckets.as_array().unwrap().len(), 13, "12 bounds and +Inf: {buckets}");

    assert_eq!(exporter.metric("otelscale_self_export_failures_total").await, 0.0);
    exporter.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn the_last_values_are_pushed_at_shutdown() {
    let receiver = TestServer::start().await;
    // No periodic push happens during the test: only the final one.
    let exporter = start_exporting_to(format!("http://{}", receiver.otlp_grpc), Duration::from_secs(3600)).await;
    push_points(&exporter, 4).await;
    exporter.stop().await;
    let received = "max(otelscale_points_received_total{transport=grpc})";
    assert_eq!(value_in(&receiver, received).await, Some(4.0));
    receiver.stop().await;
}

#[tokio::test]
async fn an_endpoint_that_refuses_connections_is_counted_and_harmless() {
    let closed_port: SocketAddr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let exporter = start_exporting_to(format!("http://{closed_port}"), Duration::from_millis(100)).await;
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    while exporter.metric("otelscale_self_export_failures_total").await < 2.0 {
        assert!(Instant::now() < deadline, "failed pushes were not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(exporter.metric("otelscale_self_exports_total").await, 0.0);

    // The server goes on serving, and stops at once.
    push_points(&exporter, 2).await;
    let value = exporter.get_metric_value(&[("metricQuery", "sum(gpu_util)"), ("targetValue", "10")]).await;
    assert_eq!(value.unwrap(), 100.0);
    let stop_started = Instant::now();
    exporter.stop().await;
    assert!(stop_started.elapsed() < Duration::from_secs(2), "stop took {:?}", stop_started.elapsed());
}

#[tokio::test]
async fn an_endpoint_that_never_answers_holds_up_neither_serving_nor_shutdown() {
    // Accepts TCP connections (the kernel's backlog does) and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let exporter =
        start_exporting_to(format!("http://{}", silent.local_addr().unwrap()), Duration::from_millis(100)).await;
    // The channel connects for the first push: once the connection is here, a push is waiting
    // on the silent endpoint (the timeout is 5 s). Held, never read or written.
    let (held_connection, _) = tokio::time::timeout(ARRIVAL_TIMEOUT, silent.accept())
        .await
        .expect("the exporter connected to the silent endpoint")
        .unwrap();
    push_points(&exporter, 1).await;
    let value = exporter.get_metric_value(&[("metricQuery", "sum(gpu_util)"), ("targetValue", "10")]).await;
    assert_eq!(value.unwrap(), 50.0);
    let stop_started = Instant::now();
    exporter.stop().await;
    assert!(stop_started.elapsed() < Duration::from_secs(2), "stop took {:?}", stop_started.elapsed());
    drop(held_connection);
    drop(silent);
}
