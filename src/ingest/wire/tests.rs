//! The zero-copy decoder against its oracle: opentelemetry-proto's prost types walked by
//! `prost_walk`. Both feed the same policy, so these tests check the parsing.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point, metric, number_data_point, summary_data_point, AggregationTemporality,
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::ingest::prost_walk::convert_request;
use crate::ingest::test_support::{attribute, text};

const NOW_MS: i64 = 1_700_000_000_000;
const NOW_NS: u64 = NOW_MS as u64 * 1_000_000;

fn limits() -> ConvertLimits {
    ConvertLimits {
        labels_per_series_max: 6,
        label_name_bytes_max: 16,
        label_value_bytes_max: 24,
        metric_name_bytes_max: 40,
        future_skew_ms_max: 60_000,
        series_key_bytes_max: 200,
    }
}

/// What a decode produced, in a comparable form.
#[derive(Debug, PartialEq)]
struct Decoded {
    samples: Vec<(String, u64, &'static str, i64, u64)>,
    rejections: Rejections,
}

/// The samples of a decoded batch, comparable across decoders.
fn described(batch: &DecodedBatch<'_>) -> Vec<(String, u64, &'static str, i64, u64)> {
    batch
        .samples()
        .iter()
        .map(|sample| {
            (
                format!("{:?}", batch.series_key(sample)),
                sample.key_hash,
                sample.kind.as_str(),
                sample.timestamp_ms,
                sample.value.to_bits(),
            )
        })
        .collect()
}

fn fast(body: &[u8]) -> Result<Decoded, WireError> {
    let mut batch = DecodedBatch::new();
    let mut rejections = Rejections::default();
    decode_request(body, &limits(), NOW_MS, &mut batch, &mut rejections)?;
    Ok(Decoded { samples: described(&batch), rejections })
}

fn oracle(body: &[u8]) -> Result<Decoded, prost::DecodeError> {
    let request = ExportMetricsServiceRequest::decode(body)?;
    let mut batch = DecodedBatch::new();
    let mut rejections = Rejections::default();
    convert_request(&request, &limits(), NOW_MS, &mut batch, &mut rejections);
    Ok(Decoded { samples: described(&batch), rejections })
}

/// Asserts the decoder agrees with the oracle on `body` (both fail, or both give the same).
fn assert_agrees(body: &[u8]) -> bool {
    match (fast(body), oracle(body)) {
        (Ok(fast), Ok(oracle)) => {
            assert_eq!(fast, oracle);
            true
        }
        (Err(WireError::NonCanonical { .. }), Ok(_)) => false,
        (Err(_), Err(_)) => false,
        // prost counts nesting from the top of the request; the decoder hands deep attribute
        // values to prost from their own start, so it allows a few more levels near prost's
        // limit of 100.
        (Ok(_), Err(err)) if err.to_string().contains("recursion limit") => false,
        (fast, oracle) => panic!("decoder and oracle disagree: fast {fast:?}, oracle {oracle:?}"),
    }
}

fn point(
    attributes: Vec<KeyValue>,
    time_unix_nano: u64,
    value: Option<number_data_point::Value>,
    flags: u32,
) -> NumberDataPoint {
    NumberDataPoint { attributes, time_unix_nano, value, flags, ..Default::default() }
}

fn metric_of(name: &str, data: metric::Data) -> Metric {
    Metric { name: name.into(), description: "d".into(), unit: "1".into(), data: Some(data), ..Default::default() }
}

fn request_of(resources: Vec<(Vec<KeyValue>, Vec<Metric>)>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: resources
            .into_iter()
            .map(|(attributes, metrics)| ResourceMetrics {
                resource: Some(Resource { attributes, ..Default::default() }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope { name: "scope".into(), ..Default::default() }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// A request exercising every metric type, attribute type and validation rule.
fn everything_request() -> ExportMetricsServiceRequest {
    let double = |v| Some(number_data_point::Value::AsDouble(v));
    let int = |v| Some(number_data_point::Value::AsInt(v));
    let array = ArrayValue {
        values: vec![
            AnyValue { value: Some(any_value::Value::IntValue(1)) },
            AnyValue { value: Some(any_value::Value::KvlistValue(KeyValueList { values: vec![text("a", "x")] })) },
        ],
    };
    let gauge_points = vec![
        point(vec![text("model", "m1"), text("job", "point-wins")], 0, double(1.5), 0),
        point(
            vec![
                attribute("bool", any_value::Value::BoolValue(true)),
                attribute("int", any_value::Value::IntValue(-7)),
            ],
            NOW_NS,
            int(3),
            0,
        ),
        point(
            vec![
                attribute("double", any_value::Value::DoubleValue(0.25)),
                attribute("bytes", any_value::Value::BytesValue(vec![1, 2, 3])),
            ],
            NOW_NS,
            double(2.0),
            0,
        ),
        point(vec![attribute("arr", any_value::Value::ArrayValue(array))], NOW_NS, double(2.0), 0),
        point(vec![KeyValue { key: "empty".into(), value: None, ..Default::default() }], NOW_NS, double(4.0), 0),
        point(vec![], NOW_NS, double(f64::NAN), 0),
        point(vec![], NOW_NS, None, 0),
        point(vec![], NOW_NS + 61_000_000_000, double(1.0), 0),
        point(vec![text("k", &"v".repeat(25))], NOW_NS, double(1.0), 0),
        point(vec![text(&"k".repeat(17), "v")], NOW_NS, double(1.0), 0),
        point(vec![text("", "v")], NOW_NS, double(1.0), 0),
        point((0..7).map(|i| text(&format!("l{i}"), "x")).collect(), NOW_NS, double(1.0), 0),
        point((0..5).map(|i| text(&format!("l{i}"), "x")).collect(), NOW_NS, double(1.0), 0),
        point(vec![], NOW_NS, double(9.0), 1),
        point(vec![text("dup", "first"), text("dup", "second")], NOW_NS, double(f64::INFINITY), 0),
    ];
    let sum = |temporality: AggregationTemporality, monotonic: bool| {
        metric::Data::Sum(Sum {
            data_points: vec![point(vec![text("pod", "a")], NOW_NS, int(5), 0)],
            aggregation_temporality: temporality as i32,
            is_monotonic: monotonic,
        })
    };
    let histogram = metric::Data::Histogram(Histogram {
        data_points: vec![
            HistogramDataPoint {
                attributes: vec![text("model", "llama"), text("le", "from-attribute")],
                time_unix_nano: NOW_NS,
                count: 6,
                sum: Some(2.5),
                bucket_counts: vec![1, 2, 3],
                explicit_bounds: vec![0.1, 0.5],
                ..Default::default()
            },
            HistogramDataPoint {
                time_unix_nano: NOW_NS,
                count: 1,
                bucket_counts: vec![1, 0, 0],
                explicit_bounds: vec![1.0],
                ..Default::default()
            },
            HistogramDataPoint {
                time_unix_nano: NOW_NS,
                count: 1,
                sum: Some(f64::NAN),
                flags: 1,
                ..Default::default()
            },
            HistogramDataPoint {
                attributes: (0..5).map(|i| text(&format!("l{i}"), "x")).collect(),
                time_unix_nano: NOW_NS,
                count: 2,
                sum: Some(1.0),
                bucket_counts: vec![1, 1],
                explicit_bounds: vec![1.0],
                ..Default::default()
            },
        ],
        aggregation_temporality: AggregationTemporality::Cumulative as i32,
    });
    let exponential = metric::Data::ExponentialHistogram(ExponentialHistogram {
        data_points: vec![ExponentialHistogramDataPoint {
            time_unix_nano: NOW_NS,
            count: 4,
            sum: Some(8.0),
            scale: -2,
            positive: Some(exponential_histogram_data_point::Buckets { offset: -1, bucket_counts: vec![4] }),
            ..Default::default()
        }],
        aggregation_temporality: AggregationTemporality::Delta as i32,
    });
    let summary = metric::Data::Summary(Summary {
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
    });
    request_of(vec![
        (
            vec![text("job", "training"), text("host.name", "n1")],
            vec![
                metric_of("gpu.memory/usage", metric::Data::Gauge(Gauge { data_points: gauge_points })),
                metric_of("tokens", sum(AggregationTemporality::Cumulative, true)),
                metric_of("delta_tokens", sum(AggregationTemporality::Delta, true)),
                metric_of("in_flight", sum(AggregationTemporality::Cumulative, false)),
                metric_of("vllm:ttft_seconds", histogram),
                metric_of("latency", exponential),
                metric_of("rpc.duration", summary),
                metric_of("", metric::Data::Gauge(Gauge { data_points: vec![point(vec![], 0, double(1.0), 0)] })),
                metric_of(&"x".repeat(41), sum(AggregationTemporality::Delta, true)),
                Metric { name: "no_data".into(), ..Default::default() },
            ],
        ),
        // An invalid resource rejects every point of every metric under it.
        (
            (0..7).map(|i| text(&format!("r{i}"), "x")).collect(),
            vec![metric_of(
                "m",
                metric::Data::Gauge(Gauge {
                    data_points: vec![point(vec![], NOW_NS, double(1.0), 1), point(vec![], NOW_NS, double(2.0), 0)],
                }),
            )],
        ),
    ])
}

#[test]
fn every_metric_type_and_rule_matches_the_oracle() {
    let body = everything_request().encode_to_vec();
    assert!(assert_agrees(&body));
    let decoded = fast(&body).unwrap();
    // Sanity: the request does produce samples and rejections of many kinds.
    assert!(decoded.samples.len() > 15, "{}", decoded.samples.len());
    assert!(decoded.rejections.by_reason().count() >= 8, "{:?}", decoded.rejections);
}

#[test]
fn loadgen_payloads_match_the_oracle() {
    for mut template in otelscale_loadgen::shapes::dcgm_templates(2_000, 1_000, 3).unwrap() {
        template.restamp(NOW_NS, 12.0);
        assert!(assert_agrees(template.bytes()));
    }
    let fleet = otelscale_loadgen::shapes::FleetShape { nodes: 3, gpus_per_node: 4, batch_points: 100, seed: 2 };
    for mut template in fleet.templates().unwrap() {
        template.restamp(NOW_NS, 5.0);
        assert!(assert_agrees(template.bytes()));
    }
}

#[test]
fn field_order_and_packing_do_not_matter() {
    // Hand-written encoding: a Metric whose data comes before its name, a data point whose
    // attributes follow its value, and unpacked bucket counts.
    let mut point = Vec::new();
    prost::encoding::double::encode(4, &7.5, &mut point);
    prost::encoding::fixed64::encode(3, &NOW_NS, &mut point);
    prost::encoding::message::encode(7, &text("pod", "a"), &mut point);
    let mut gauge = Vec::new();
    prost::encoding::bytes::encode(1, &point, &mut gauge);
    let mut metric = Vec::new();
    prost::encoding::bytes::encode(5, &gauge, &mut metric);
    prost::encoding::string::encode(1, &"late.name".to_owned(), &mut metric);
    let mut histogram_point = Vec::new();
    for count in [1u64, 2] {
        prost::encoding::fixed64::encode(6, &count, &mut histogram_point);
    }
    prost::encoding::double::encode(7, &0.5, &mut histogram_point);
    prost::encoding::fixed64::encode(4, &3, &mut histogram_point);
    let mut histogram = Vec::new();
    prost::encoding::bytes::encode(1, &histogram_point, &mut histogram);
    let mut histogram_metric = Vec::new();
    prost::encoding::string::encode(1, &"h".to_owned(), &mut histogram_metric);
    prost::encoding::bytes::encode(9, &histogram, &mut histogram_metric);
    let mut scope = Vec::new();
    prost::encoding::bytes::encode(2, &metric, &mut scope);
    prost::encoding::bytes::encode(2, &histogram_metric, &mut scope);
    let mut resource_metrics = Vec::new();
    prost::encoding::bytes::encode(2, &scope, &mut resource_metrics);
    // The resource after its scopes.
    prost::encoding::message::encode(
        1,
        &Resource { attributes: vec![text("job", "j")], ..Default::default() },
        &mut resource_metrics,
    );
    let mut body = Vec::new();
    prost::encoding::bytes::encode(1, &resource_metrics, &mut body);
    // An unknown field at the top level is skipped.
    prost::encoding::string::encode(99, &"unknown".to_owned(), &mut body);
    assert!(assert_agrees(&body));
    let decoded = fast(&body).unwrap();
    assert_eq!(decoded.samples.len(), 1 + 1 + 2);
    assert!(decoded.samples[0].0.contains("late_name"));
}

#[test]
fn repeated_singular_messages_ask_for_the_prost_path() {
    let request = everything_request();
    let mut body = request.encode_to_vec();
    // Append a second ResourceMetrics whose `resource` field appears twice.
    let mut resource_metrics = Vec::new();
    prost::encoding::message::encode(
        1,
        &Resource { attributes: vec![text("a", "1")], ..Default::default() },
        &mut resource_metrics,
    );
    prost::encoding::message::encode(
        1,
        &Resource { attributes: vec![text("b", "2")], ..Default::default() },
        &mut resource_metrics,
    );
    prost::encoding::bytes::encode(1, &resource_metrics, &mut body);
    assert!(matches!(fast(&body), Err(WireError::NonCanonical { message: "ResourceMetrics.resource" })));
    assert!(oracle(&body).is_ok());
}

#[test]
fn malformed_bytes_are_errors_like_prost() {
    let body = everything_request().encode_to_vec();
    for cut in [1, 7, body.len() / 3, body.len() / 2, body.len() - 1] {
        assert_agrees(&body[..cut]);
    }
    let mut bad_utf8 = request_of(vec![(vec![text("k", "v")], vec![])]).encode_to_vec();
    let position = bad_utf8.iter().rposition(|&byte| byte == b'v').unwrap();
    bad_utf8[position] = 0xff;
    assert!(fast(&bad_utf8).is_err() && oracle(&bad_utf8).is_err());
}

#[test]
fn string_attributes_take_the_fast_path_only_in_their_usual_layout() {
    let usual = text("gpu", "0").encode_to_vec();
    assert_eq!(string_key_value(&usual), Some((&b"gpu"[..], &b"0"[..])));
    let empty_value = KeyValue { key: "k".into(), value: Some(AnyValue { value: None }), ..Default::default() };
    let not_text = [
        empty_value.encode_to_vec(),
        attribute("n", any_value::Value::IntValue(3)).encode_to_vec(),
        text("k", &"v".repeat(200)).encode_to_vec(),
        usual[..usual.len() - 1].to_vec(),
        [usual.as_slice(), &[0x18, 0x01]].concat(),
    ];
    for bytes in &not_text {
        assert_eq!(string_key_value(bytes), None, "{bytes:?}");
    }
}

#[test]
fn non_ascii_and_invalid_utf8_labels_agree_with_the_oracle() {
    // Points of one metric with the same names, reordered names, a name shared with the resource
    // and non-ASCII text: the label-order reuse and the one-pass UTF-8 check must not change a thing.
    let points = vec![
        point(vec![text("gpu", "0"), text("modèle", "été")], NOW_NS, Some(number_data_point::Value::AsDouble(1.0)), 0),
        point(vec![text("gpu", "1"), text("modèle", "€")], NOW_NS, Some(number_data_point::Value::AsDouble(2.0)), 0),
        point(vec![text("modèle", "😀"), text("gpu", "2")], NOW_NS, Some(number_data_point::Value::AsDouble(3.0)), 0),
        point(vec![text("host", "b"), text("gpu", "3")], NOW_NS, Some(number_data_point::Value::AsDouble(4.0)), 0),
        point(vec![text("host", "c"), text("gpu", "4")], NOW_NS, Some(number_data_point::Value::AsDouble(5.0)), 0),
    ];
    let gauge = metric_of("util", metric::Data::Gauge(Gauge { data_points: points }));
    let body = request_of(vec![(vec![text("host", "a")], vec![gauge])]).encode_to_vec();
    assert!(assert_agrees(&body));
    assert_eq!(fast(&body).unwrap().samples.len(), 5);

    // Invalid UTF-8 inside one string of a point: an error, as with prost, whichever byte it is.
    for target in ["été", "€", "😀"] {
        let mut bad = body.clone();
        let at = bad.windows(target.len()).position(|window| window == target.as_bytes()).unwrap();
        bad[at + target.len() - 1] = 0xff;
        assert!(matches!(fast(&bad), Err(WireError::InvalidUtf8 { .. })), "{target}");
        assert!(oracle(&bad).is_err());
    }
}

fn any_value_strategy() -> impl Strategy<Value = Option<any_value::Value>> {
    prop_oneof![
        Just(None),
        "[a-zé€😀]{0,30}".prop_map(|s| Some(any_value::Value::StringValue(s))),
        any::<bool>().prop_map(|b| Some(any_value::Value::BoolValue(b))),
        any::<i64>().prop_map(|i| Some(any_value::Value::IntValue(i))),
        any::<f64>().prop_map(|f| Some(any_value::Value::DoubleValue(f))),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(|b| Some(any_value::Value::BytesValue(b))),
    ]
}

fn key_value_strategy() -> impl Strategy<Value = KeyValue> {
    ("[a-eé]{0,3}", any_value_strategy()).prop_map(|(key, value)| KeyValue {
        key,
        value: Some(AnyValue { value }),
        ..Default::default()
    })
}

fn number_point_strategy() -> impl Strategy<Value = NumberDataPoint> {
    (
        proptest::collection::vec(key_value_strategy(), 0..8),
        prop_oneof![
            Just(0u64),
            Just(NOW_NS),
            Just(NOW_NS - 5_000_000_000),
            Just(NOW_NS + 120_000_000_000),
            any::<u64>()
        ],
        prop_oneof![
            Just(None),
            any::<f64>().prop_map(|v| Some(number_data_point::Value::AsDouble(v))),
            any::<i64>().prop_map(|v| Some(number_data_point::Value::AsInt(v))),
        ],
        prop_oneof![Just(0u32), Just(1u32), any::<u32>()],
    )
        .prop_map(|(attributes, time_unix_nano, value, flags)| point(attributes, time_unix_nano, value, flags))
}

fn metric_strategy() -> impl Strategy<Value = Metric> {
    let points = proptest::collection::vec(number_point_strategy(), 0..6);
    (
        prop_oneof!["[a-z./:]{0,12}", Just("x".repeat(41))],
        points,
        0u8..4,
        any::<bool>(),
        proptest::collection::vec(0u64..5, 0..5),
        proptest::collection::vec(-1.0f64..10.0, 0..5),
    )
        .prop_map(|(name, data_points, kind, monotonic, bucket_counts, explicit_bounds)| {
            let data = match kind {
                0 => metric::Data::Gauge(Gauge { data_points }),
                1 => metric::Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: if monotonic { 2 } else { 1 },
                    is_monotonic: monotonic,
                }),
                2 => metric::Data::Histogram(Histogram {
                    data_points: data_points
                        .into_iter()
                        .map(|p| HistogramDataPoint {
                            attributes: p.attributes,
                            time_unix_nano: p.time_unix_nano,
                            count: bucket_counts.iter().sum(),
                            sum: match p.value {
                                Some(number_data_point::Value::AsDouble(v)) => Some(v),
                                _ => None,
                            },
                            bucket_counts: bucket_counts.clone(),
                            explicit_bounds: explicit_bounds.clone(),
                            flags: p.flags,
                            ..Default::default()
                        })
                        .collect(),
                    aggregation_temporality: 2,
                }),
                _ => metric::Data::Summary(Summary {
                    data_points: data_points
                        .into_iter()
                        .map(|p| SummaryDataPoint {
                            attributes: p.attributes,
                            time_unix_nano: p.time_unix_nano,
                            count: 3,
                            sum: 1.5,
                            quantile_values: explicit_bounds
                                .iter()
                                .map(|&q| summary_data_point::ValueAtQuantile { quantile: q, value: q * 2.0 })
                                .collect(),
                            flags: p.flags,
                            ..Default::default()
                        })
                        .collect(),
                }),
            };
            Metric { name, data: Some(data), ..Default::default() }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_requests_match_the_oracle(
        resources in proptest::collection::vec(
            (proptest::collection::vec(key_value_strategy(), 0..8), proptest::collection::vec(metric_strategy(), 0..4)),
            0..3,
        ),
    ) {
        let body = request_of(resources).encode_to_vec();
        prop_assert!(assert_agrees(&body));
    }

    #[test]
    fn mutated_bytes_agree_with_the_oracle(
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        truncate_to in any::<prop::sample::Index>(),
    ) {
        let mut body = everything_request().encode_to_vec();
        for (index, byte) in mutations {
            let position = index.index(body.len());
            body[position] = byte;
        }
        let cut = truncate_to.index(body.len() + 1).max(body.len() / 2);
        assert_agrees(&body[..cut.min(body.len())]);
    }
}
