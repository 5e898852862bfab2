//! Policy tests, driven through the prost walk: every metric type, temporality, attribute type
//! and validation rule.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point, metric, number_data_point, summary_data_point, AggregationTemporality,
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::*;
use crate::ingest::prost_walk::convert_request;
use crate::ingest::test_support::{attribute, text};
use crate::store::BatchSample;

const NOW_MS: i64 = 1_700_000_000_000;
const NOW_NS: u64 = NOW_MS as u64 * 1_000_000;

fn limits() -> ConvertLimits {
    ConvertLimits {
        labels_per_series_max: 8,
        label_name_bytes_max: 32,
        label_value_bytes_max: 64,
        metric_name_bytes_max: 64,
        future_skew_ms_max: 60_000,
        series_key_bytes_max: 4_096,
    }
}

fn request_of(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: resource, ..Default::default() }),
            scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn metric_of(name: &str, data: metric::Data) -> Metric {
    Metric { name: name.into(), data: Some(data), ..Default::default() }
}

fn point(attributes: Vec<KeyValue>, time_unix_nano: u64, value: number_data_point::Value) -> NumberDataPoint {
    NumberDataPoint { attributes, time_unix_nano, value: Some(value), ..Default::default() }
}

/// The samples `request` becomes, in owned form, and its rejections.
fn convert(request: &ExportMetricsServiceRequest) -> (Vec<BatchSample>, Rejections) {
    let mut batch = DecodedBatch::new();
    let mut rejections = Rejections::default();
    convert_request(request, &limits(), NOW_MS, &mut batch, &mut rejections);
    let samples = batch
        .samples()
        .iter()
        .map(|sample| {
            let owned = BatchSample::new(batch.series_key(sample), sample.kind, sample.timestamp_ms, sample.value);
            assert_eq!(owned.key_hash, sample.key_hash, "the batch's hash is the key's");
            owned
        })
        .collect();
    (samples, rejections)
}

/// `name{k=v,...} kind value @ts` for compact assertions.
fn describe(sample: &BatchSample) -> String {
    let labels: Vec<String> = sample.key.labels().map(|l| format!("{}={}", l.name, l.value)).collect();
    format!(
        "{}{{{}}} {} {} @{}",
        sample.key.metric_name(),
        labels.join(","),
        sample.kind.as_str(),
        sample.value,
        sample.timestamp_ms - NOW_MS
    )
}

#[test]
fn gauges_and_sums_with_every_temporality() {
    let sum = |temporality: AggregationTemporality, monotonic: bool| {
        metric::Data::Sum(Sum {
            data_points: vec![point(vec![], NOW_NS, number_data_point::Value::AsInt(5))],
            aggregation_temporality: temporality as i32,
            is_monotonic: monotonic,
        })
    };
    let request = request_of(
        vec![text("job", "training"), text("model", "from-resource")],
        vec![
            metric_of(
                "gpu.memory/usage",
                metric::Data::Gauge(Gauge {
                    data_points: vec![point(vec![text("model", "m1")], 0, number_data_point::Value::AsDouble(1.5))],
                }),
            ),
            metric_of("tokens", sum(AggregationTemporality::Cumulative, true)),
            metric_of("delta_tokens", sum(AggregationTemporality::Delta, true)),
            metric_of("in_flight", sum(AggregationTemporality::Cumulative, false)),
        ],
    );
    let (samples, rejections) = convert(&request);
    assert_eq!(rejections.total(), 0);
    let described: Vec<String> = samples.iter().map(describe).collect();
    assert_eq!(
        described,
        [
            // Name normalized; the point's `model` wins over the resource's; time 0 = receive time.
            "gpu_memory_usage{job=training,model=m1} gauge 1.5 @0",
            "tokens{job=training,model=from-resource} cumulative_counter 5 @0",
            "delta_tokens{job=training,model=from-resource} delta 5 @0",
            "in_flight{job=training,model=from-resource} gauge 5 @0",
        ]
    );
}

#[test]
fn histograms_become_count_sum_and_cumulative_buckets() {
    let histogram = metric_of(
        "vllm:time_to_first_token_seconds",
        metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: vec![text("model", "llama")],
                time_unix_nano: NOW_NS,
                count: 6,
                sum: Some(2.5),
                bucket_counts: vec![1, 2, 3],
                explicit_bounds: vec![0.1, 0.5],
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
    );
    let exponential = metric_of(
        "latency",
        metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                time_unix_nano: NOW_NS,
                count: 4,
                sum: Some(8.0),
                positive: Some(exponential_histogram_data_point::Buckets { offset: 0, bucket_counts: vec![4] }),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        }),
    );
    let (samples, rejections) = convert(&request_of(vec![], vec![histogram, exponential]));
    assert_eq!(rejections.total(), 0);
    let described: Vec<String> = samples.iter().map(describe).collect();
    assert_eq!(
        described,
        [
            "vllm:time_to_first_token_seconds_count{model=llama} cumulative_counter 6 @0",
            "vllm:time_to_first_token_seconds_sum{model=llama} cumulative_counter 2.5 @0",
            "vllm:time_to_first_token_seconds_bucket{le=0.1,model=llama} cumulative_counter 1 @0",
            "vllm:time_to_first_token_seconds_bucket{le=0.5,model=llama} cumulative_counter 3 @0",
            "vllm:time_to_first_token_seconds_bucket{le=+Inf,model=llama} cumulative_counter 6 @0",
            "latency_count{} delta 4 @0",
            "latency_sum{} delta 8 @0",
        ]
    );
}

#[test]
fn summaries_become_count_sum_and_quantiles() {
    let summary = metric_of(
        "rpc.duration",
        metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                time_unix_nano: NOW_NS - 1_000_000_000,
                count: 10,
                sum: 3.0,
                quantile_values: vec![
                    summary_data_point::ValueAtQuantile { quantile: 0.5, value: 0.2 },
                    summary_data_point::ValueAtQuantile { quantile: 0.99, value: 0.9 },
                ],
                ..Default::default()
            }],
        }),
    );
    let (samples, _) = convert(&request_of(vec![], vec![summary]));
    let described: Vec<String> = samples.iter().map(describe).collect();
    assert_eq!(
        described,
        [
            "rpc_duration_count{} cumulative_counter 10 @-1000",
            "rpc_duration_sum{} cumulative_counter 3 @-1000",
            "rpc_duration{quantile=0.5} gauge 0.2 @-1000",
            "rpc_duration{quantile=0.99} gauge 0.9 @-1000",
        ]
    );
}

#[test]
fn attribute_values_of_every_type_become_strings() {
    let nested = AnyValue { value: Some(any_value::Value::KvlistValue(KeyValueList { values: vec![text("a", "x")] })) };
    let array = ArrayValue {
        values: vec![
            AnyValue { value: Some(any_value::Value::IntValue(1)) },
            AnyValue { value: Some(any_value::Value::StringValue("two".into())) },
            nested,
        ],
    };
    let attributes = vec![
        attribute("bool", any_value::Value::BoolValue(true)),
        attribute("int", any_value::Value::IntValue(-7)),
        attribute("double", any_value::Value::DoubleValue(0.25)),
        attribute("bytes", any_value::Value::BytesValue(vec![0xde, 0xad])),
        attribute("array", any_value::Value::ArrayValue(array)),
        KeyValue { key: "empty".into(), value: None, ..Default::default() },
    ];
    let gauge =
        metric::Data::Gauge(Gauge { data_points: vec![point(attributes, NOW_NS, number_data_point::Value::AsInt(1))] });
    let (samples, _) = convert(&request_of(vec![], vec![metric_of("m", gauge)]));
    let key = &samples[0].key;
    assert_eq!(key.label_value("bool"), Some("true"));
    assert_eq!(key.label_value("int"), Some("-7"));
    assert_eq!(key.label_value("double"), Some("0.25"));
    assert_eq!(key.label_value("bytes"), Some("3q0="));
    assert_eq!(key.label_value("array"), Some(r#"[1,"two",{"a":"x"}]"#));
    assert_eq!(key.label_value("empty"), Some(""));
}

#[test]
fn validation_rejects_points_and_keeps_the_rest() {
    let long_value = "v".repeat(65);
    let long_name = "k".repeat(33);
    let many_labels: Vec<KeyValue> = (0..9).map(|i| text(&format!("l{i}"), "x")).collect();
    let points = vec![
        point(vec![], NOW_NS, number_data_point::Value::AsDouble(f64::NAN)),
        point(vec![], NOW_NS + 61_000_000_000, number_data_point::Value::AsDouble(1.0)),
        point(vec![text("k", &long_value)], NOW_NS, number_data_point::Value::AsDouble(1.0)),
        point(vec![text(&long_name, "v")], NOW_NS, number_data_point::Value::AsDouble(1.0)),
        point(vec![text("", "v")], NOW_NS, number_data_point::Value::AsDouble(1.0)),
        point(many_labels, NOW_NS, number_data_point::Value::AsDouble(1.0)),
        NumberDataPoint { time_unix_nano: NOW_NS, ..Default::default() },
        // "No recorded value" flag: skipped silently, not an error.
        NumberDataPoint {
            time_unix_nano: NOW_NS,
            flags: 1,
            value: Some(number_data_point::Value::AsInt(1)),
            ..Default::default()
        },
        point(vec![text("ok", "yes")], NOW_NS, number_data_point::Value::AsDouble(f64::INFINITY)),
    ];
    let histogram = metric::Data::Histogram(Histogram {
        data_points: vec![HistogramDataPoint {
            time_unix_nano: NOW_NS,
            count: 1,
            bucket_counts: vec![1, 0, 0],
            explicit_bounds: vec![1.0],
            ..Default::default()
        }],
        aggregation_temporality: AggregationTemporality::Cumulative as i32,
    });
    let request = request_of(
        vec![],
        vec![
            metric_of("m", metric::Data::Gauge(Gauge { data_points: points })),
            metric_of(
                "",
                metric::Data::Gauge(Gauge { data_points: vec![point(vec![], 0, number_data_point::Value::AsInt(1))] }),
            ),
            metric_of("h", histogram),
        ],
    );
    let (samples, rejections) = convert(&request);
    let described: Vec<String> = samples.iter().map(describe).collect();
    assert_eq!(described, ["m{ok=yes} gauge inf @0", "h_count{} cumulative_counter 1 @0"]);
    assert_eq!(rejections.count(RejectReason::NanValue), 1);
    assert_eq!(rejections.count(RejectReason::FutureTimestamp), 1);
    assert_eq!(rejections.count(RejectReason::LabelValueTooLong), 1);
    assert_eq!(rejections.count(RejectReason::InvalidLabelName), 2);
    assert_eq!(rejections.count(RejectReason::TooManyLabels), 1);
    assert_eq!(rejections.count(RejectReason::MissingValue), 1);
    assert_eq!(rejections.count(RejectReason::InvalidMetricName), 1);
    assert_eq!(rejections.count(RejectReason::InvalidHistogram), 3);
    assert!(rejections.message().contains("nan_value"));
}

#[test]
fn an_invalid_resource_rejects_all_its_points() {
    let many: Vec<KeyValue> = (0..9).map(|i| text(&format!("r{i}"), "x")).collect();
    let gauge = metric::Data::Gauge(Gauge {
        data_points: vec![
            point(vec![], NOW_NS, number_data_point::Value::AsInt(1)),
            point(vec![], NOW_NS, number_data_point::Value::AsInt(2)),
        ],
    });
    let (samples, rejections) = convert(&request_of(many, vec![metric_of("m", gauge)]));
    assert!(samples.is_empty());
    assert_eq!(rejections.count(RejectReason::TooManyLabels), 2);
}
