//! End-to-end tests with the OpenTelemetry Rust SDK as the client: metrics recorded through
//! `opentelemetry_sdk` and sent by `opentelemetry-otlp`'s gRPC and HTTP/protobuf exporters must
//! come out of the KEDA external-scaler interface with the values the application recorded.
//!
//! The SDK's `PeriodicReader` exports on its own OS thread, so `force_flush` and `shutdown` block
//! until the export is answered; the tests call them through `spawn_blocking` to keep the Tokio
//! workers (which also run the server) free.

mod common;

use std::time::{Duration, Instant};

use common::*;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::Resource;
use otelscale::scaler::proto::GetMetricSpecResponse;

/// How long a test waits for data it has flushed to become visible to queries (generous: an
/// answer that is there returns at once).
const POLL_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Longer than any test: the reader exports only when a test flushes or shuts down.
const EXPORT_INTERVAL_NEVER: Duration = Duration::from_secs(3600);

/// Time between the two counter flushes of the rate test.
const COUNTER_FLUSH_GAP: Duration = Duration::from_millis(1000);

/// Slack for the server storing sample timestamps in whole milliseconds.
const TIMESTAMP_RESOLUTION_S: f64 = 0.002;

/// A meter provider whose resource says what the product page's ScaledObject selects on.
fn training_meter_provider<E: PushMetricExporter>(exporter: E) -> SdkMeterProvider {
    let resource =
        Resource::builder().with_service_name("trainer").with_attribute(KeyValue::new("job", "training")).build();
    let reader = PeriodicReader::builder(exporter).with_interval(EXPORT_INTERVAL_NEVER).build();
    SdkMeterProvider::builder().with_resource(resource).with_reader(reader).build()
}

fn grpc_meter_provider(server: &TestServer) -> SdkMeterProvider {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", server.otlp_grpc))
        .build()
        .expect("build the OTLP/gRPC metric exporter");
    assert_eq!(exporter.temporality(), Temporality::Cumulative, "the tests rely on the default temporality");
    training_meter_provider(exporter)
}

fn http_meter_provider(server: &TestServer) -> SdkMeterProvider {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_endpoint(server.http_url("/v1/metrics"))
        .with_protocol(Protocol::HttpBinary)
        .build()
        .expect("build the OTLP/HTTP metric exporter");
    assert_eq!(exporter.temporality(), Temporality::Cumulative, "the tests rely on the default temporality");
    training_meter_provider(ExportInTokioRuntime { exporter, runtime: tokio::runtime::Handle::current() })
}

/// Runs an exporter's `export` inside the test's Tokio runtime.
///
/// The dev-dependency enables `opentelemetry-otlp`'s `reqwest-client` feature, so the HTTP
/// exporter uses the async `reqwest::Client`, which needs a Tokio reactor; the `PeriodicReader`
/// polls exports with `futures_executor::block_on` on a plain OS thread that has none.
struct ExportInTokioRuntime<E> {
    exporter: E,
    runtime: tokio::runtime::Handle,
}

impl<E: PushMetricExporter> PushMetricExporter for ExportInTokioRuntime<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        // The reader's thread is not a Tokio worker, so blocking on the runtime here is allowed.
        self.runtime.block_on(self.exporter.export(metrics))
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.exporter.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.exporter.temporality()
    }
}

/// Collects and exports everything recorded so far; returns once the server has answered.
async fn flush(provider: &SdkMeterProvider) {
    let provider = provider.clone();
    tokio::task::spawn_blocking(move || provider.force_flush())
        .await
        .expect("force_flush task")
        .expect("the SDK exported to the server");
}

async fn shutdown(provider: SdkMeterProvider) {
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .expect("shutdown task")
        .expect("the meter provider shut down cleanly");
}

/// Asks the admin query API until `is_expected` holds for the answer or `POLL_TIMEOUT` passes;
/// returns the last answer so the caller's assertion shows what the server had.
async fn admin_query_until(
    server: &TestServer,
    params: &[(&str, &str)],
    is_expected: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + POLL_TIMEOUT;
    loop {
        let answer = server.admin_query(params).await;
        if is_expected(&answer) || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until `metric_query` matches series holding `n_samples_expected` samples in total.
async fn wait_for_samples(server: &TestServer, metric_query: &str, n_samples_expected: f64) {
    let params = [("metricQuery", metric_query), ("operationOverTime", "count")];
    let answer = admin_query_until(server, &params, |answer| answer["rawValue"] == n_samples_expected).await;
    assert_eq!(answer["rawValue"], n_samples_expected, "samples stored for {metric_query}: {answer}");
}

/// The sum of `otelscale_points_rejected_total` over all reasons.
async fn points_rejected_total(server: &TestServer) -> f64 {
    let text = reqwest::get(server.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with("otelscale_points_rejected_total{"))
        .map(|line| line.rsplit_once(' ').expect("sample line").1.parse::<f64>().expect("sample value"))
        .sum()
}

async fn metric_spec(server: &TestServer, metadata: &[(&str, &str)]) -> GetMetricSpecResponse {
    let mut client = server.scaler_client().await;
    client.get_metric_spec(scaled_object(metadata)).await.expect("GetMetricSpec").into_inner()
}

async fn is_active(server: &TestServer, metadata: &[(&str, &str)]) -> bool {
    let mut client = server.scaler_client().await;
    client.is_active(scaled_object(metadata)).await.expect("IsActive").into_inner().result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_grpc_exporter_feeds_the_kedify_scaled_object() {
    let server = TestServer::start().await;
    let provider = grpc_meter_provider(&server);
    let meter = provider.meter("ai-training");
    let tokens = meter.u64_counter("model_training_tokens").build();
    let gpu_memory = meter.f64_gauge("gpu_memory_usage").build();
    let my_model = [KeyValue::new("model", "my_model")];
    let other_model = [KeyValue::new("model", "other_model")];

    tokens.add(1000, &my_model);
    tokens.add(1, &other_model);
    gpu_memory.record(1000.0, &my_model);
    gpu_memory.record(9999.0, &other_model);
    let first_flush_started = Instant::now();
    flush(&provider).await;
    let first_flush_ended = Instant::now();
    wait_for_samples(&server, "sum(model_training_tokens{model=my_model})", 1.0).await;

    tokio::time::sleep(COUNTER_FLUSH_GAP).await;
    tokens.add(1000, &my_model);
    // If other_model leaked into the average, the rate would be about 25 000 per second.
    tokens.add(50_000, &other_model);
    gpu_memory.record(1234.5, &my_model);
    gpu_memory.record(9999.0, &other_model);
    let second_flush_started = Instant::now();
    flush(&provider).await;
    let second_flush_ended = Instant::now();
    wait_for_samples(&server, "sum(model_training_tokens{model=my_model})", 2.0).await;

    // The SDK stamps each cumulative point while collecting, somewhere inside its flush.
    let gap_max_s = (second_flush_ended - first_flush_started).as_secs_f64() + TIMESTAMP_RESOLUTION_S;
    let gap_min_s = (second_flush_started - first_flush_ended).as_secs_f64() - TIMESTAMP_RESOLUTION_S;
    let (rate_min, rate_max) = (1000.0 / gap_max_s, 1000.0 / gap_min_s);

    let tokens_trigger = [
        ("metricQuery", "avg(model_training_tokens{model=my_model, job=training})"),
        ("operationOverTime", "rate"),
        ("targetValue", "500"),
    ];
    let gpu_memory_trigger =
        [("metricQuery", "avg(gpu_memory_usage{model=my_model, job=training})"), ("targetValue", "800")];

    let tokens_per_second = server.get_metric_value(&tokens_trigger).await.expect("GetMetrics for the tokens trigger");
    assert!(
        (rate_min..=rate_max).contains(&tokens_per_second),
        "tokens rate {tokens_per_second} outside [{rate_min}, {rate_max}] for 1000 tokens between flushes"
    );
    let gpu_memory_value =
        server.get_metric_value(&gpu_memory_trigger).await.expect("GetMetrics for the GPU memory trigger");
    assert_eq!(gpu_memory_value, 1234.5);

    let tokens_answer = server.admin_query(&tokens_trigger).await;
    assert_eq!(tokens_answer["matchedSeries"], 1, "only model=my_model matches: {tokens_answer}");
    let gpu_memory_answer = server.admin_query(&gpu_memory_trigger).await;
    assert_eq!(gpu_memory_answer["matchedSeries"], 1, "only model=my_model matches: {gpu_memory_answer}");

    let tokens_spec = metric_spec(&server, &tokens_trigger).await;
    let gpu_memory_spec = metric_spec(&server, &gpu_memory_trigger).await;
    assert_eq!(tokens_spec.metric_specs.len(), 1);
    assert_eq!(gpu_memory_spec.metric_specs.len(), 1);
    assert_eq!(tokens_spec.metric_specs[0].target_size_float, 500.0);
    assert_eq!(gpu_memory_spec.metric_specs[0].target_size_float, 800.0);
    assert_ne!(tokens_spec.metric_specs[0].metric_name, gpu_memory_spec.metric_specs[0].metric_name);

    assert!(is_active(&server, &tokens_trigger).await, "tokens trigger active");
    assert!(is_active(&server, &gpu_memory_trigger).await, "GPU memory trigger active");

    assert!(server.metric("otelscale_requests_total{transport=\"grpc\",outcome=\"ok\"}").await >= 2.0);
    assert_eq!(server.metric("otelscale_requests_total{transport=\"http\",outcome=\"ok\"}").await, 0.0);
    assert_eq!(points_rejected_total(&server).await, 0.0, "the server rejected SDK points");

    shutdown(provider).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_http_exporter_is_accepted() {
    let server = TestServer::start().await;
    let provider = http_meter_provider(&server);
    let meter = provider.meter("ai-training");
    let tokens = meter.u64_counter("model_training_tokens").build();
    let gpu_memory = meter.f64_gauge("gpu_memory_usage").build();
    let my_model = [KeyValue::new("model", "my_model")];

    tokens.add(1500, &my_model);
    gpu_memory.record(512.25, &my_model);
    flush(&provider).await;
    tokens.add(2500, &my_model);
    gpu_memory.record(777.75, &my_model);
    flush(&provider).await;
    wait_for_samples(&server, "sum(model_training_tokens{model=my_model, job=training})", 2.0).await;

    let gpu_memory_value = server
        .get_metric_value(&[
            ("metricQuery", "avg(gpu_memory_usage{model=my_model, job=training})"),
            ("targetValue", "800"),
        ])
        .await
        .expect("GetMetrics for the GPU memory trigger");
    assert_eq!(gpu_memory_value, 777.75);
    let tokens_total = server
        .get_metric_value(&[
            ("metricQuery", "sum(model_training_tokens{model=my_model, job=training})"),
            ("operationOverTime", "last_one"),
            ("targetValue", "500"),
        ])
        .await
        .expect("GetMetrics for the tokens trigger");
    assert_eq!(tokens_total, 4000.0, "a cumulative counter's last sample is its running total");

    assert!(server.metric("otelscale_requests_total{transport=\"http\",outcome=\"ok\"}").await >= 2.0);
    assert_eq!(server.metric("otelscale_requests_total{transport=\"grpc\",outcome=\"ok\"}").await, 0.0);
    assert_eq!(points_rejected_total(&server).await, 0.0, "the server rejected SDK points");

    shutdown(provider).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_metric_with_dots_is_queried_with_underscores() {
    let server = TestServer::start().await;
    let provider = grpc_meter_provider(&server);
    let gpu_temperature = provider.meter("gpu-monitor").f64_gauge("gpu.temperature").build();
    gpu_temperature.record(71.5, &[KeyValue::new("gpu", "0")]);
    gpu_temperature.record(64.0, &[KeyValue::new("gpu", "1")]);
    flush(&provider).await;
    wait_for_samples(&server, "sum(gpu_temperature)", 2.0).await;

    for metric_query in ["max(gpu_temperature)", "max(gpu.temperature)"] {
        let hottest = server
            .get_metric_value(&[("metricQuery", metric_query), ("targetValue", "80")])
            .await
            .unwrap_or_else(|status| panic!("GetMetrics for {metric_query}: {status}"));
        assert_eq!(hottest, 71.5, "{metric_query}");
    }

    shutdown(provider).await;
    server.stop().await;
}
