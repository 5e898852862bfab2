//! The hostile scenario's requests, built with the OTLP types and encoded with prost: the
//! decompression bombs (many tiny points under a resource of large labels), the large series
//! (every series carries the same large labels), junk series for the flood, and the one-point
//! gauges the probes, the future-point producer and the legitimate pod send.

use std::io::Write as _;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

/// Metric of the bombs' tiny points.
pub const BOMB_METRIC: &str = "otelscale_loadgen_hostile_bomb";
/// Metric of the large series (series-bytes, and the costly query's seed).
pub const LARGE_METRIC: &str = "otelscale_loadgen_hostile_large";
/// Prefix of the flood's junk metrics.
pub const JUNK_METRIC_PREFIX: &str = "otelscale_loadgen_hostile_junk_";
/// Metric the legitimate pod of the series flood exports.
pub const LEGIT_METRIC: &str = "vllm:num_requests_waiting";

/// The large labels a hostile resource carries: `resource_labels` labels `r00`, `r01`, … of
/// `value_bytes` bytes each (letters only, so that `\d` never matches them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LargeLabels {
    pub resource_labels: usize,
    pub value_bytes: usize,
}

fn text(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// `r{idx:02}` = letters of a 26-byte cycle starting at a different letter per label: distinct
/// values that compress as well as the attacker wants.
fn large_resource(labels: LargeLabels) -> Vec<KeyValue> {
    (0..labels.resource_labels)
        .map(|label_idx| {
            let value: String =
                (0..labels.value_bytes).map(|byte_idx| (b'a' + ((label_idx + byte_idx) % 26) as u8) as char).collect();
            text(&format!("r{label_idx:02}"), value)
        })
        .collect()
}

fn gauge_metric(name: &str, data_points: Vec<NumberDataPoint>) -> Metric {
    Metric { name: name.into(), data: Some(metric::Data::Gauge(Gauge { data_points })), ..Default::default() }
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: resource, ..Default::default() }),
            scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn point(attributes: Vec<KeyValue>, time_unix_nano: u64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        time_unix_nano,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

/// A decompression bomb's inflated body: a resource of large labels and as many tiny points
/// (no labels, no timestamp: 11 bytes each) as fit in `inflated_bytes_max`. Returns the
/// encoding and its number of points.
pub fn bomb(labels: LargeLabels, inflated_bytes_max: usize) -> (Vec<u8>, usize) {
    let tiny = point(Vec::new(), 0, 1.0);
    // Field tag, length byte, then the point's own bytes.
    let bytes_per_point = 2 + tiny.encoded_len();
    let empty = request(large_resource(labels), vec![gauge_metric(BOMB_METRIC, Vec::new())]);
    // Each enclosing message's length prefix grows to at most 4 bytes more with the points.
    let room = inflated_bytes_max.saturating_sub(empty.encoded_len() + 16);
    let n_points = room / bytes_per_point;
    let mut bomb = empty;
    bomb.resource_metrics[0].scope_metrics[0].metrics[0] = gauge_metric(BOMB_METRIC, vec![tiny; n_points]);
    let bytes = bomb.encode_to_vec();
    assert!(bytes.len() <= inflated_bytes_max, "{} > {inflated_bytes_max}", bytes.len());
    (bytes, n_points)
}

/// `n_series` series of [`LARGE_METRIC`] that differ only in a short label `i`, each carrying
/// every large label of the resource, at the server's receive time.
pub fn large_series(labels: LargeLabels, n_series: usize, value: f64) -> Vec<u8> {
    let points = (0..n_series).map(|series_idx| point(vec![text("i", series_idx.to_string())], 0, value)).collect();
    request(large_resource(labels), vec![gauge_metric(LARGE_METRIC, points)]).encode_to_vec()
}

/// Junk series `first_idx..first_idx + n`, spread over `n_metrics` metric names, each with one
/// short label.
pub fn junk_series(first_idx: u64, n: usize, n_metrics: usize, run_id: &str) -> ExportMetricsServiceRequest {
    let mut by_metric: Vec<Vec<NumberDataPoint>> = vec![Vec::new(); n_metrics.max(1)];
    for junk_idx in first_idx..first_idx + n as u64 {
        let metric_idx = (junk_idx % by_metric.len() as u64) as usize;
        by_metric[metric_idx].push(point(vec![text("junk", format!("{run_id}-{junk_idx}"))], 0, 1.0));
    }
    let metrics = by_metric
        .into_iter()
        .enumerate()
        .filter(|(_, points)| !points.is_empty())
        .map(|(metric_idx, points)| gauge_metric(&format!("{JUNK_METRIC_PREFIX}{metric_idx}"), points))
        .collect();
    request(vec![text("service.name", "junk")], metrics)
}

/// One point of `metric{labels}`; `time_unix_nano` 0 = the server's receive time.
pub fn one_point(
    metric: &str,
    labels: &[(&str, &str)],
    time_unix_nano: u64,
    value: f64,
) -> ExportMetricsServiceRequest {
    let attributes = labels.iter().map(|(key, value)| text(key, *value)).collect();
    request(Vec::new(), vec![gauge_metric(metric, vec![point(attributes, time_unix_nano, value)])])
}

/// gzip at the best ratio, as an attacker would.
pub fn gzip_best(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// zstd at level 19, as an attacker would.
pub fn zstd_best(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 19).unwrap_or_default()
}

/// A metricQuery over [`LARGE_METRIC`] with `n_matchers` matchers that every series passes, so
/// that each one is evaluated on each series: `z00!=x` on labels the series lack (a scan of all
/// its labels to find none), alternating with `r01!~".*\d{20}.*"` on its large labels (a regex
/// that must read the whole value to find no 20 digits).
pub fn costly_query(n_matchers: usize, resource_labels: usize) -> String {
    let matchers: Vec<String> = (0..n_matchers)
        .map(|matcher_idx| {
            if matcher_idx % 2 == 0 || resource_labels == 0 {
                format!("z{matcher_idx:02}!=x")
            } else {
                format!(r#"r{:02}!~".*\d{{20}}.*""#, (matcher_idx / 2) % resource_labels)
            }
        })
        .collect();
    format!("count({LARGE_METRIC}{{{}}})", matchers.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bomb_fills_its_budget_and_compresses_like_a_bomb() {
        let labels = LargeLabels { resource_labels: 8, value_bytes: 256 };
        let (bytes, n_points) = bomb(labels, 64 * 1024);
        assert!(bytes.len() <= 64 * 1024 && bytes.len() > 63 * 1024, "{}", bytes.len());
        let decoded = ExportMetricsServiceRequest::decode(&bytes[..]).unwrap();
        let metric = &decoded.resource_metrics[0].scope_metrics[0].metrics[0];
        let Some(metric::Data::Gauge(gauge)) = &metric.data else { panic!("{metric:?}") };
        assert_eq!(gauge.data_points.len(), n_points);
        assert_eq!(decoded.resource_metrics[0].resource.as_ref().unwrap().attributes.len(), 8);
        assert!(gzip_best(&bytes).len() * 100 < bytes.len());
        assert!(zstd_best(&bytes).len() * 100 < bytes.len());
    }

    #[test]
    fn large_series_carry_every_large_label() {
        let labels = LargeLabels { resource_labels: 3, value_bytes: 100 };
        let decoded = ExportMetricsServiceRequest::decode(&large_series(labels, 5, 2.0)[..]).unwrap();
        let attributes = &decoded.resource_metrics[0].resource.as_ref().unwrap().attributes;
        assert_eq!(attributes.len(), 3);
        let Some(any_value::Value::StringValue(value)) = &attributes[2].value.as_ref().unwrap().value else { panic!() };
        assert_eq!((attributes[2].key.as_str(), value.len()), ("r02", 100));
        assert!(value.bytes().all(|byte| byte.is_ascii_lowercase()));
        let metric = &decoded.resource_metrics[0].scope_metrics[0].metrics[0];
        let Some(metric::Data::Gauge(gauge)) = &metric.data else { panic!() };
        assert_eq!(gauge.data_points.len(), 5);
    }

    #[test]
    fn costly_query_fits_the_default_limits() {
        // The server accepting it is checked by the scenario test; here its size: at most
        // 4096 bytes (--max-query-bytes) and 64 matchers (--max-query-matchers).
        let query = costly_query(64, 63);
        assert!(query.len() <= 4096, "{}", query.len());
        assert_eq!(query.matches("!=").count() + query.matches("!~").count(), 64);
        assert!(query.starts_with("count(otelscale_loadgen_hostile_large{z00!=x,r00!~\".*\\d{20}.*\",z02!=x"));
    }

    #[test]
    fn junk_spreads_over_metrics() {
        let request = junk_series(10, 7, 3, "run");
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 3);
        let points: usize = metrics
            .iter()
            .map(|metric| match &metric.data {
                Some(metric::Data::Gauge(gauge)) => gauge.data_points.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(points, 7);
    }
}
