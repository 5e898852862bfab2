//! The KEDA side through a real tonic client: the product page's ScaledObject, metric specs,
//! activation, clamping, bad metadata, StreamIsActive pushes, and limits.

use std::time::{Duration, Instant};

use otelscale::scaler::proto::{GetMetricsRequest, IsActiveResponse};
use tonic::Code;

use crate::common::*;

const SECOND_NS: u64 = 1_000_000_000;

const TOKENS_TRIGGER: &[(&str, &str)] = &[
    ("metricQuery", "avg(model_training_tokens{model=my_model, job=training})"),
    ("operationOverTime", "rate"),
    ("targetValue", "500"),
];
const MEMORY_TRIGGER: &[(&str, &str)] =
    &[("metricQuery", "avg(gpu_memory_usage{model=my_model, job=training})"), ("targetValue", "800")];

/// Two training pods report token counters (cumulative) and GPU memory (gauge); a third series
/// belongs to another model and must not count.
async fn push_training_fleet(server: &TestServer) {
    let now = now_unix_nano();
    let t0 = now - 10 * SECOND_NS;
    let mut client = server.otlp_client().await;
    for (pod, tokens_per_s, memory) in [("pod-a", 400.0, 700.0), ("pod-b", 800.0, 1100.0)] {
        let tokens = (0..=10)
            .map(|second| number_point(&[("model", "my_model")], t0 + second * SECOND_NS, tokens_per_s * second as f64))
            .collect();
        let memory_points = vec![number_point(&[("model", "my_model")], now, memory)];
        let resource = [("job", "training"), ("k8s.pod.name", pod)];
        let metrics =
            vec![cumulative_counter("model_training_tokens", tokens), gauge("gpu_memory_usage", memory_points)];
        client.export(request(&resource, metrics)).await.unwrap();
    }
    let other = (0..=10)
        .map(|second| number_point(&[("model", "other")], t0 + second * SECOND_NS, 1e6 * second as f64))
        .collect();
    client
        .export(request(&[("job", "training")], vec![cumulative_counter("model_training_tokens", other)]))
        .await
        .unwrap();
}

#[tokio::test]
async fn product_page_scaled_object() {
    let server = TestServer::start().await;
    push_training_fleet(&server).await;
    let mut scaler = server.scaler_client().await;

    // Trigger 1: avg over the two pods of their token rates (400/s and 800/s).
    let tokens = server.get_metric_value(TOKENS_TRIGGER).await.unwrap();
    assert!((tokens - 600.0).abs() < 1e-9, "{tokens}");
    // Trigger 2: avg of the last GPU memory values.
    let memory = server.get_metric_value(MEMORY_TRIGGER).await.unwrap();
    assert_eq!(memory, 900.0);

    let spec_tokens = scaler.get_metric_spec(scaled_object(TOKENS_TRIGGER)).await.unwrap().into_inner();
    let spec_memory = scaler.get_metric_spec(scaled_object(MEMORY_TRIGGER)).await.unwrap().into_inner();
    assert_eq!(spec_tokens.metric_specs[0].target_size_float, 500.0);
    assert_eq!(spec_tokens.metric_specs[0].target_size, 500);
    assert_eq!(spec_memory.metric_specs[0].target_size_float, 800.0);
    let (name_tokens, name_memory) =
        (&spec_tokens.metric_specs[0].metric_name, &spec_memory.metric_specs[0].metric_name);
    assert_ne!(name_tokens, name_memory);
    for name in [name_tokens, name_memory] {
        assert!(name.len() <= 63 && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }

    // GetMetrics echoes the metric name KEDA asks for and fills the int64 with the ceiling.
    let response = scaler
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(scaled_object(&[
                ("metricQuery", "avg(gpu_memory_usage{model=my_model})"),
                ("targetValue", "800"),
                ("operationOverTime", "last_one"),
            ])),
            metric_name: "s1-otel-gpu".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.metric_values[0].metric_name, "s1-otel-gpu");
    assert_eq!(response.metric_values[0].metric_value_float, 900.0);
    assert_eq!(response.metric_values[0].metric_value, 900);

    assert!(scaler.is_active(scaled_object(TOKENS_TRIGGER)).await.unwrap().into_inner().result);
    let mut high_activation = MEMORY_TRIGGER.to_vec();
    high_activation.push(("activationTargetValue", "900"));
    assert!(!scaler.is_active(scaled_object(&high_activation)).await.unwrap().into_inner().result);
    server.stop().await;
}

async fn value_of(server: &TestServer, extra: &[(&str, &str)]) -> Result<f64, tonic::Status> {
    let mut metadata = vec![("targetValue", "1")];
    metadata.extend_from_slice(extra);
    server.get_metric_value(&metadata).await
}

#[tokio::test]
async fn clamping_no_match_and_other_operations() {
    let server = TestServer::start().await;
    push_training_fleet(&server).await;
    let memory = "avg(gpu_memory_usage{model=my_model})";
    assert_eq!(
        value_of(&server, &[("metricQuery", "max(gpu_memory_usage)"), ("clampMax", "1000")]).await.unwrap(),
        1000.0
    );
    assert_eq!(
        value_of(&server, &[("metricQuery", "min(gpu_memory_usage)"), ("clampMin", "750")]).await.unwrap(),
        750.0
    );
    assert_eq!(value_of(&server, &[("metricQuery", "count(gpu_memory_usage)")]).await.unwrap(), 2.0);
    assert_eq!(value_of(&server, &[("metricQuery", memory), ("operationOverTime", "count")]).await.unwrap(), 1.0);
    let tokens_count = value_of(
        &server,
        &[("metricQuery", "sum(model_training_tokens{model!=other})"), ("operationOverTime", "count")],
    );
    assert_eq!(tokens_count.await.unwrap(), 22.0);
    let max_tokens = value_of(&server, &[("metricQuery", "max(model_training_tokens{k8s.pod.name=~\"pod-.*\"})")]);
    assert_eq!(max_tokens.await.unwrap(), 8000.0);
    // Nothing matches: 0, Kedify's default.
    assert_eq!(value_of(&server, &[("metricQuery", "sum(no_such_metric)")]).await.unwrap(), 0.0);
    server.stop().await;

    let strict = TestServer::start_with(|config| config.no_match_is_error = true).await;
    let status = strict.get_metric_value(&[("metricQuery", "sum(no_such_metric)"), ("targetValue", "1")]).await;
    let status = status.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("no_such_metric"), "{}", status.message());
    strict.stop().await;
}

#[tokio::test]
async fn bad_metadata_is_invalid_argument_naming_the_key() {
    let server = TestServer::start().await;
    let mut scaler = server.scaler_client().await;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("targetValue", "5")], "metricQuery"),
        (&[("metricQuery", "m")], "targetValue"),
        (&[("metricQuery", "avg(metric_foo_bar{a=1, b=2)"), ("targetValue", "5")], "metricQuery"),
        (&[("metricQuery", "m"), ("targetValue", "-3")], "targetValue"),
        (&[("metricQuery", "m"), ("targetValue", "5"), ("operationOverTime", "p99")], "operationOverTime"),
        (&[("metricQuery", "m"), ("targetValue", "5"), ("windowSeconds", "9999")], "windowSeconds"),
    ];
    for (metadata, key) in cases {
        let checks = [
            scaler.get_metric_spec(scaled_object(metadata)).await.map(|_| ()),
            scaler.is_active(scaled_object(metadata)).await.map(|_| ()),
            server.get_metric_value(metadata).await.map(|_| ()),
            scaler.stream_is_active(scaled_object(metadata)).await.map(|_| ()),
        ];
        for result in checks {
            let status = result.expect_err("bad metadata must fail");
            assert_eq!(status.code(), Code::InvalidArgument, "{metadata:?}");
            assert!(status.message().contains(key), "{metadata:?}: `{}` does not name {key}", status.message());
        }
    }
    let status =
        scaler.get_metrics(GetMetricsRequest { scaled_object_ref: None, metric_name: "x".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    server.stop().await;
}

async fn next_message(stream: &mut tonic::Streaming<IsActiveResponse>, timeout: Duration) -> Option<IsActiveResponse> {
    tokio::time::timeout(timeout, stream.message()).await.ok().and_then(|message| message.unwrap())
}

#[tokio::test]
async fn stream_is_active_pushes_on_a_crossing_write() {
    let server = TestServer::start_with(|config| config.stream_resend_interval = Duration::from_secs(30)).await;
    let mut scaler = server.scaler_client().await;
    let trigger = [
        ("metricQuery", "max(vllm:num_requests_waiting{model_name=llama})"),
        ("targetValue", "10"),
        ("activationTargetValue", "5"),
    ];
    let mut stream = scaler.stream_is_active(scaled_object(&trigger)).await.unwrap().into_inner();

    // The current state at once: nothing stored yet, inactive.
    let first = next_message(&mut stream, Duration::from_secs(5)).await.expect("initial state");
    assert!(!first.result);

    let mut client = server.otlp_client().await;
    let now = now_unix_nano();
    // Below the activation threshold: no message (state unchanged).
    let below = request(
        &[],
        vec![gauge("vllm:num_requests_waiting", vec![number_point(&[("model_name", "llama")], now, 3.0)])],
    );
    client.export(below).await.unwrap();
    assert!(next_message(&mut stream, Duration::from_millis(300)).await.is_none());

    // Crossing write: the activation arrives without waiting for a ticker.
    let above = request(
        &[],
        vec![gauge(
            "vllm:num_requests_waiting",
            // Stamped when sent: a query reads no sample stamped after its own time.
            vec![number_point(&[("model_name", "llama")], now_unix_nano().max(now + 1), 9.0)],
        )],
    );
    let pushed_at = Instant::now();
    client.export(above).await.unwrap();
    let activation = next_message(&mut stream, Duration::from_secs(5)).await.expect("activation message");
    assert!(activation.result);
    let push_to_activation = pushed_at.elapsed();
    // Far below the 30 s resend interval: it was the write that woke the stream.
    assert!(push_to_activation < Duration::from_secs(5), "{push_to_activation:?}");

    // Falling below again deactivates.
    let again = request(
        &[],
        vec![gauge(
            "vllm:num_requests_waiting",
            vec![number_point(&[("model_name", "llama")], now_unix_nano().max(now + 2), 1.0)],
        )],
    );
    client.export(again).await.unwrap();
    let deactivation = next_message(&mut stream, Duration::from_secs(5)).await.expect("deactivation message");
    assert!(!deactivation.result);
    assert_eq!(server.metric("otelscale_streams_open").await, 1.0);
    // Shutdown ends open streams cleanly instead of waiting for KEDA to hang up.
    tokio::time::timeout(Duration::from_secs(10), server.stop()).await.expect("shutdown drains with a stream open");
    assert!(next_message(&mut stream, Duration::from_secs(5)).await.is_none());
}

/// One gauge point per model in `models`, one series per (model, pod) of `pods`.
fn waiting_request(
    models: &[&str],
    pods: usize,
    value: f64,
) -> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
    let now = now_unix_nano();
    let points = models
        .iter()
        .flat_map(|model| {
            (0..pods).map(move |pod| number_point(&[("model_name", model), ("pod", &format!("pod-{pod}"))], now, value))
        })
        .collect();
    request(&[], vec![gauge("vllm:num_requests_waiting", points)])
}

#[tokio::test]
async fn streams_wake_only_for_the_series_they_match_and_on_expiry() {
    // A resend interval far beyond the test: every message below is woken by a change. Queries
    // read the last 3 s (the retention), and retention runs every 375 ms.
    let server = TestServer::start_with(|config| {
        config.stream_resend_interval = Duration::from_secs(60);
        config.retention_ms = 3_000;
    })
    .await;
    let mut scaler = server.scaler_client().await;
    let trigger = [
        ("metricQuery", "max(vllm:num_requests_waiting{model_name=model-a})"),
        ("targetValue", "10"),
        ("activationTargetValue", "5"),
    ];
    // Opened before any series of its model exists.
    let mut stream = scaler.stream_is_active(scaled_object(&trigger)).await.unwrap().into_inner();
    assert!(!next_message(&mut stream, Duration::from_secs(5)).await.expect("initial state").result);
    assert_eq!(server.metric("otelscale_stream_evaluations_total").await, 1.0);

    // Other models of the same metric, pushed many times: the stream is not evaluated.
    let mut client = server.otlp_client().await;
    for _ in 0..20 {
        client.export(waiting_request(&["model-b", "model-c"], 4, 9.0)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.metric("otelscale_stream_evaluations_total").await, 1.0, "woken by series it does not match");

    // Its model's series appear, 100 of them in one request: one evaluation for the burst (two
    // if the second raise races the first wake), and the activation.
    client.export(waiting_request(&["model-a"], 100, 9.0)).await.unwrap();
    assert!(next_message(&mut stream, Duration::from_secs(5)).await.expect("activation").result);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let evaluations = server.metric("otelscale_stream_evaluations_total").await;
    assert!((2.0..=3.0).contains(&evaluations), "{evaluations} evaluations for one request");

    // Pushes stop; retention removes the series, which wakes the stream: inactive, long before
    // the resend interval.
    let started = Instant::now();
    let expired = next_message(&mut stream, Duration::from_secs(15)).await.expect("deactivation on expiry");
    assert!(!expired.result);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn stream_resends_periodically_and_streams_are_limited() {
    let server = TestServer::start_with(|config| {
        config.stream_resend_interval = Duration::from_millis(200);
        config.streams_max = 1;
    })
    .await;
    let mut scaler = server.scaler_client().await;
    let trigger = [("metricQuery", "m"), ("targetValue", "1")];
    let mut stream = scaler.stream_is_active(scaled_object(&trigger)).await.unwrap().into_inner();
    for _ in 0..3 {
        let message = next_message(&mut stream, Duration::from_secs(5)).await.expect("periodic resend");
        assert!(!message.result);
    }
    let status = scaler.stream_is_active(scaled_object(&trigger)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("--max-streams"));
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn a_trigger_is_parsed_once_for_every_call_that_names_it() {
    let server = TestServer::start().await;
    push_training_fleet(&server).await;
    let mut client = server.scaler_client().await;
    // GetMetrics, IsActive and GetMetricSpec of one ScaledObject's trigger, polled a few times.
    for _ in 0..5 {
        let value = server.get_metric_value(TOKENS_TRIGGER).await.unwrap();
        assert!(value > 0.0, "{value}");
        client.is_active(scaled_object(TOKENS_TRIGGER)).await.unwrap();
        client.get_metric_spec(scaled_object(TOKENS_TRIGGER)).await.unwrap();
    }
    assert_eq!(server.metric("otelscale_trigger_parses_total").await, 1.0);
    assert_eq!(server.metric("otelscale_triggers_known").await, 1.0);
    // The same metadata in another namespace is another trigger; invalid metadata is parsed
    // (and refused) on every call, never kept.
    let mut elsewhere = scaled_object(TOKENS_TRIGGER);
    elsewhere.namespace = "other-team".into();
    client.is_active(elsewhere.clone()).await.unwrap();
    client.is_active(elsewhere).await.unwrap();
    let broken = [("metricQuery", "avg(m{"), ("targetValue", "1")];
    for _ in 0..2 {
        let status = client.is_active(scaled_object(&broken)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    assert_eq!(server.metric("otelscale_trigger_parses_total").await, 4.0);
    assert_eq!(server.metric("otelscale_triggers_known").await, 2.0);
    server.stop().await;
}
