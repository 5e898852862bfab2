//! Ingest tests of the path both receivers share: the panic policy, with a fault injected in
//! test builds only (`store::PANIC_METRIC_FOR_TESTS`), on the worker path, the inline path and
//! through the real server's gRPC and HTTP answers; and the decoder's memory bound on hostile
//! request shapes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::decode::PayloadFormat;
use super::test_support::text;
use super::*;
use crate::outcome::PanicSite;
use crate::store::{BATCH_BYTES_CONSTANT, BATCH_BYTES_PER_REQUEST_BYTE_MAX, PANIC_METRIC_FOR_TESTS};

fn now_ns() -> u64 {
    crate::clock::now_ms() as u64 * 1_000_000
}

/// A request with `n_points` gauge points (one series each, `pod` label) per metric.
fn request(metrics: &[(&str, usize)]) -> ExportMetricsServiceRequest {
    let time_unix_nano = now_ns();
    let metrics = metrics
        .iter()
        .map(|&(name, n_points)| Metric {
            name: name.into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: (0..n_points)
                    .map(|idx| NumberDataPoint {
                        attributes: vec![text("pod", &format!("pod-{idx:05}"))],
                        time_unix_nano,
                        value: Some(number_data_point::Value::AsDouble(idx as f64)),
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: vec![text("job", "test")], ..Default::default() }),
            scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn body(metrics: &[(&str, usize)]) -> Bytes {
    Bytes::from(request(metrics).encode_to_vec())
}

fn one_worker_config() -> Config {
    Config { ingest_worker_count: 1, ..Config::default() }
}

fn ingestor(config: &Config) -> (Arc<Ingestor>, Arc<Store>, Arc<Telemetry>) {
    let store = Arc::new(Store::new(config.store_config()));
    let telemetry = Arc::new(Telemetry::default());
    let activity = Arc::new(ActivityHub::default());
    let ingestor = Arc::new(Ingestor::new(config, Arc::clone(&store), Arc::clone(&telemetry), activity));
    (ingestor, store, telemetry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_mid_append_is_an_internal_error_and_the_worker_serves_on() {
    let (ingestor, store, telemetry) = ingestor(&one_worker_config());
    let export = |body: Bytes| ingestor.export_body(body, None, PayloadFormat::Protobuf, Transport::Grpc);
    let earlier = body(&[("earlier", 300)]);
    assert!(earlier.len() > INLINE_BODY_BYTES_MAX, "the worker path");
    assert_eq!(export(earlier).await.unwrap().accepted_points, 300);

    // New series before the poisoned one are appended, the panic fires mid-append.
    let poisoned = body(&[("before", 200), (PANIC_METRIC_FOR_TESTS, 1), ("after", 200)]);
    let err = export(poisoned).await.unwrap_err();
    assert!(matches!(err, ExportError::Worker(_)), "{err:?}");
    assert!(err.to_string().contains("ingest_worker") && err.to_string().contains("fault injected"), "{err}");
    assert_eq!(telemetry.panics(PanicSite::IngestWorker), 1);
    assert_eq!(store.counts(), store.recount(), "the store's counts are in step with its shards");
    assert_eq!(store.metric_series_count("earlier"), 300, "earlier data is intact");
    assert_eq!(store.metric_series_count(PANIC_METRIC_FOR_TESTS), 0);

    // The one worker thread serves on.
    for round in 0..3 {
        let later = body(&[(&format!("later_{round}"), 300)]);
        assert_eq!(export(later).await.unwrap().accepted_points, 300);
    }
    // The inline path (a small body) is caught as well.
    let small = body(&[(PANIC_METRIC_FOR_TESTS, 1)]);
    assert!(small.len() <= INLINE_BODY_BYTES_MAX, "the inline path");
    assert!(matches!(export(small.clone()).await.unwrap_err(), ExportError::Worker(_)));
    assert_eq!(telemetry.panics(PanicSite::IngestInline), 1);
    // The same small body compressed goes to the worker: what it inflates to is not known
    // until it is inflated.
    let compressed = Bytes::from(zstd::encode_all(&small[..], 3).unwrap());
    let encoding = Some("zstd".to_owned());
    let err = ingestor.export_body(compressed, encoding, PayloadFormat::Protobuf, Transport::Http).await.unwrap_err();
    assert!(matches!(err, ExportError::Worker(_)), "{err:?}");
    assert_eq!((telemetry.panics(PanicSite::IngestWorker), telemetry.panics(PanicSite::IngestInline)), (2, 1));
    assert_eq!(export(body(&[("small", 3)])).await.unwrap().accepted_points, 3);
    assert_eq!(store.counts(), store.recount());
}

/// The real server on 127.0.0.1:0, and its addresses (gRPC, HTTP, admin).
async fn start_server(
    config: Config,
) -> (std::net::SocketAddr, std::net::SocketAddr, std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let listeners = crate::server::Listeners {
        otlp_grpc: bind().await,
        otlp_http: bind().await,
        scaler: bind().await,
        admin: bind().await,
    };
    let addrs = (
        listeners.otlp_grpc.local_addr().unwrap(),
        listeners.otlp_http.local_addr().unwrap(),
        listeners.admin.local_addr().unwrap(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(crate::server::run(listeners, config, async {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !reqwest::get(format!("http://{}/readyz", addrs.2)).await.is_ok_and(|answer| answer.status().is_success()) {
        assert!(std::time::Instant::now() < deadline, "the server did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (addrs.0, addrs.1, addrs.2, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_server_answers_a_panic_with_internal_and_500_and_keeps_serving() {
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;

    let config = Config { io_uring: crate::config::IoUringMode::Off, ..one_worker_config() };
    let (grpc, http, admin, stop) = start_server(config).await;
    let mut client = MetricsServiceClient::connect(format!("http://{grpc}")).await.unwrap();
    client.export(request(&[("earlier", 300)])).await.unwrap();

    let status = client.export(request(&[("before", 400), (PANIC_METRIC_FOR_TESTS, 1)])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    assert!(status.message().contains("internal error"), "{}", status.message());
    let answer = reqwest::Client::new()
        .post(format!("http://{http}/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(body(&[(PANIC_METRIC_FOR_TESTS, 1), ("after", 400)]).to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 500);

    // Both receivers serve on, and the panics are counted.
    client.export(request(&[("later", 300)])).await.unwrap();
    let metrics = reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap();
    // Both bodies are over the inline size: both panicked on the ingest worker.
    assert!(metrics.contains("otelscale_panics_total{site=\"ingest_worker\"} 2"), "{metrics}");
    let _ = stop.send(());
}

/// Decodes `body` with `limits` and returns the batch's heap bytes and sample count.
fn decoded_batch_bytes(body: &[u8], limits: &ConvertLimits) -> (usize, usize) {
    let mut batch = DecodedBatch::new();
    let mut rejections = Rejections::default();
    wire::decode_request(body, limits, crate::clock::now_ms(), &mut batch, &mut rejections).unwrap();
    assert_eq!(rejections.total(), 0, "{}", rejections.message());
    (batch.heap_bytes(), batch.len())
}

fn bound(body_bytes: usize) -> usize {
    BATCH_BYTES_PER_REQUEST_BYTE_MAX * body_bytes + BATCH_BYTES_CONSTANT
}

#[test]
fn a_request_of_many_tiny_points_under_large_resource_labels_decodes_in_proportion_to_its_bytes() {
    // Row 2 of the hostile-input measurements, scaled down: 63 resource labels of 2 KiB and
    // tiny points (a value, nothing else). Copying the labels per point took 2.5 KB a point.
    let resource: Vec<_> = (0..63).map(|idx| text(&format!("label_{idx:02}"), &"v".repeat(2_048))).collect();
    let points: Vec<_> = (0..100_000)
        .map(|idx| NumberDataPoint {
            value: Some(number_data_point::Value::AsDouble(idx as f64)),
            ..Default::default()
        })
        .collect();
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: resource, ..Default::default() }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "tiny".into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points: points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let body = request.encode_to_vec();
    let limits = ConvertLimits { series_key_bytes_max: 1024 * 1024, ..ConvertLimits::default() };
    let (heap_bytes, samples) = decoded_batch_bytes(&body, &limits);
    assert_eq!(samples, 100_000);
    assert!(heap_bytes <= bound(body.len()), "{heap_bytes} bytes of batch for {} bytes of request", body.len());
    // Far below the general bound: a sample, and the room reserved for labels.
    assert!(heap_bytes <= 12 * body.len(), "{heap_bytes} bytes of batch for {} bytes of request", body.len());
    // With the default --max-series-key-bytes (8 KiB) the resource is refused whole, at once.
    let mut batch = DecodedBatch::new();
    let mut rejections = Rejections::default();
    let defaults = ConvertLimits::default();
    wire::decode_request(&body, &defaults, crate::clock::now_ms(), &mut batch, &mut rejections).unwrap();
    assert_eq!((batch.len(), rejections.count(RejectReason::SeriesKeyTooLarge)), (0, 100_000));
}

#[test]
fn the_worst_shapes_stay_within_the_stated_bound() {
    // Empty summary points: 2 bytes each, 2 samples each.
    let summary = |n_points: usize| ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "s".into(),
                    data: Some(metric::Data::Summary(Summary {
                        data_points: vec![SummaryDataPoint::default(); n_points],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    for n_points in [1_000, 33_000, 100_000] {
        let body = summary(n_points).encode_to_vec();
        let (heap_bytes, samples) = decoded_batch_bytes(&body, &ConvertLimits::default());
        assert_eq!(samples, 2 * n_points);
        assert!(heap_bytes <= bound(body.len()), "{n_points} points: {heap_bytes} bytes for {}", body.len());
    }
    // Histogram points with many labels and buckets: the labels are stored once per point, not
    // once per bucket.
    use opentelemetry_proto::tonic::metrics::v1::{Histogram, HistogramDataPoint};
    let point = |idx: usize| HistogramDataPoint {
        attributes: (0..60).map(|label| text(&format!("l{label:02}"), &format!("{idx}-{label}"))).collect(),
        bucket_counts: vec![1; 200],
        explicit_bounds: (0..199).map(f64::from).collect(),
        time_unix_nano: now_ns(),
        ..Default::default()
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "h".into(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: (0..50).map(point).collect(),
                        aggregation_temporality: 2,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let body = request.encode_to_vec();
    let (heap_bytes, samples) = decoded_batch_bytes(&body, &ConvertLimits::default());
    assert_eq!(samples, 50 * 201, "a _count and 200 buckets a point");
    assert!(heap_bytes <= 16 * body.len() + BATCH_BYTES_CONSTANT, "{heap_bytes} bytes for {}", body.len());
}
