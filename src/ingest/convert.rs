//! OTLP metrics → validated store samples.
//!
//! A series is the normalized metric name plus resource attributes and data point attributes
//! (the point's win on a key clash). Histograms become `_count`, `_sum` and cumulative `_bucket`
//! series with an `le` label; summaries become `_count`, `_sum` and one series per quantile.

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, AggregationTemporality, Metric};

use super::{RejectReason, Rejections};
use crate::store::{normalize_metric_name, BatchSample, LabelPair, SampleBatch, SeriesKey, SeriesKind};

/// The OTLP flag bit meaning "no recorded value" (the point is a staleness marker).
const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// Limits applied to every point, from [`crate::config::Config`].
#[derive(Debug, Clone, Copy)]
pub struct ConvertLimits {
    pub labels_per_series_max: usize,
    pub label_name_bytes_max: usize,
    pub label_value_bytes_max: usize,
    pub metric_name_bytes_max: usize,
    pub future_skew_ms_max: i64,
}

impl ConvertLimits {
    pub fn from_config(config: &crate::config::Config) -> Self {
        ConvertLimits {
            labels_per_series_max: config.labels_per_series_max,
            label_name_bytes_max: config.label_name_bytes_max,
            label_value_bytes_max: config.label_value_bytes_max,
            metric_name_bytes_max: config.metric_name_bytes_max,
            future_skew_ms_max: config.future_skew_ms_max,
        }
    }
}

impl Default for ConvertLimits {
    /// The limits of the default configuration.
    fn default() -> Self {
        ConvertLimits::from_config(&crate::config::Config::default())
    }
}

/// Converts every metric of `request` into `batch`; points that fail validation are counted in
/// `rejections` and skipped, the rest go on.
pub fn convert_request(
    request: &ExportMetricsServiceRequest,
    limits: &ConvertLimits,
    now_ms: i64,
    batch: &mut SampleBatch,
    rejections: &mut Rejections,
) {
    for resource_metrics in &request.resource_metrics {
        let resource_attributes = resource_metrics.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let resource_labels = match labels_from_attributes(resource_attributes, limits) {
            Ok(labels) => labels,
            Err(reason) => {
                let n_points: u64 =
                    resource_metrics.scope_metrics.iter().flat_map(|scope| &scope.metrics).map(samples_in_metric).sum();
                rejections.add(reason, n_points);
                continue;
            }
        };
        for scope_metrics in &resource_metrics.scope_metrics {
            for metric in &scope_metrics.metrics {
                let mut converter =
                    MetricConverter { limits, now_ms, resource_labels: &resource_labels, batch, rejections };
                converter.convert_metric(metric);
            }
        }
    }
}

/// Samples a metric would produce, used to count rejections of a whole metric or resource.
fn samples_in_metric(metric: &Metric) -> u64 {
    let n = match &metric.data {
        Some(metric::Data::Gauge(gauge)) => gauge.data_points.len(),
        Some(metric::Data::Sum(sum)) => sum.data_points.len(),
        Some(metric::Data::Histogram(histogram)) => {
            histogram.data_points.iter().map(|point| 2 + point.bucket_counts.len()).sum()
        }
        Some(metric::Data::ExponentialHistogram(histogram)) => 2 * histogram.data_points.len(),
        Some(metric::Data::Summary(summary)) => {
            summary.data_points.iter().map(|point| 2 + point.quantile_values.len()).sum()
        }
        None => 0,
    };
    n as u64
}

struct MetricConverter<'a> {
    limits: &'a ConvertLimits,
    now_ms: i64,
    resource_labels: &'a [LabelPair],
    batch: &'a mut SampleBatch,
    rejections: &'a mut Rejections,
}

impl MetricConverter<'_> {
    fn convert_metric(&mut self, metric: &Metric) {
        let metric_name = normalize_metric_name(&metric.name);
        if metric_name.is_empty() || metric_name.len() > self.limits.metric_name_bytes_max {
            self.rejections.add(RejectReason::InvalidMetricName, samples_in_metric(metric));
            return;
        }
        let Some(data) = &metric.data else { return };
        match data {
            metric::Data::Gauge(gauge) => {
                for point in &gauge.data_points {
                    let value = point.value.map(number_value);
                    self.add_point(
                        &metric_name,
                        &point.attributes,
                        point.time_unix_nano,
                        point.flags,
                        SeriesKind::Gauge,
                        value,
                    );
                }
            }
            metric::Data::Sum(sum) => {
                let kind = if sum.aggregation_temporality == AggregationTemporality::Delta as i32 {
                    SeriesKind::Delta
                } else if sum.is_monotonic {
                    SeriesKind::CumulativeCounter
                } else {
                    SeriesKind::Gauge
                };
                for point in &sum.data_points {
                    let value = point.value.map(number_value);
                    self.add_point(&metric_name, &point.attributes, point.time_unix_nano, point.flags, kind, value);
                }
            }
            metric::Data::Histogram(histogram) => {
                let kind = counter_kind(histogram.aggregation_temporality);
                let count_name = format!("{metric_name}_count");
                let sum_name = format!("{metric_name}_sum");
                let bucket_name = format!("{metric_name}_bucket");
                for point in &histogram.data_points {
                    let (attributes, time, flags) = (&point.attributes, point.time_unix_nano, point.flags);
                    self.add_point(&count_name, attributes, time, flags, kind, Some(point.count as f64));
                    if let Some(sum) = point.sum {
                        self.add_point(&sum_name, attributes, time, flags, kind, Some(sum));
                    }
                    if point.bucket_counts.is_empty() {
                        continue;
                    }
                    if point.bucket_counts.len() != point.explicit_bounds.len() + 1 {
                        self.rejections.add(RejectReason::InvalidHistogram, point.bucket_counts.len() as u64);
                        continue;
                    }
                    let mut cumulative_count = 0u64;
                    for (bucket_idx, &bucket_count) in point.bucket_counts.iter().enumerate() {
                        cumulative_count = cumulative_count.saturating_add(bucket_count);
                        let upper_bound = point.explicit_bounds.get(bucket_idx).copied().unwrap_or(f64::INFINITY);
                        let le = LabelPair::new("le", format_bound(upper_bound));
                        self.add_point_with_label(
                            &bucket_name,
                            attributes,
                            le,
                            time,
                            flags,
                            kind,
                            Some(cumulative_count as f64),
                        );
                    }
                }
            }
            metric::Data::ExponentialHistogram(histogram) => {
                let kind = counter_kind(histogram.aggregation_temporality);
                let count_name = format!("{metric_name}_count");
                let sum_name = format!("{metric_name}_sum");
                for point in &histogram.data_points {
                    let (attributes, time, flags) = (&point.attributes, point.time_unix_nano, point.flags);
                    self.add_point(&count_name, attributes, time, flags, kind, Some(point.count as f64));
                    if let Some(sum) = point.sum {
                        self.add_point(&sum_name, attributes, time, flags, kind, Some(sum));
                    }
                }
            }
            metric::Data::Summary(summary) => {
                let count_name = format!("{metric_name}_count");
                let sum_name = format!("{metric_name}_sum");
                for point in &summary.data_points {
                    let (attributes, time, flags) = (&point.attributes, point.time_unix_nano, point.flags);
                    let kind = SeriesKind::CumulativeCounter;
                    self.add_point(&count_name, attributes, time, flags, kind, Some(point.count as f64));
                    self.add_point(&sum_name, attributes, time, flags, kind, Some(point.sum));
                    for quantile in &point.quantile_values {
                        let label = LabelPair::new("quantile", format_bound(quantile.quantile));
                        self.add_point_with_label(
                            &metric_name,
                            attributes,
                            label,
                            time,
                            flags,
                            SeriesKind::Gauge,
                            Some(quantile.value),
                        );
                    }
                }
            }
        }
    }

    fn add_point(
        &mut self,
        metric_name: &str,
        attributes: &[KeyValue],
        time_unix_nano: u64,
        flags: u32,
        kind: SeriesKind,
        value: Option<f64>,
    ) {
        self.add_sample(metric_name, attributes, None, time_unix_nano, flags, kind, value);
    }

    #[allow(clippy::too_many_arguments)]
    fn add_point_with_label(
        &mut self,
        metric_name: &str,
        attributes: &[KeyValue],
        extra_label: LabelPair,
        time_unix_nano: u64,
        flags: u32,
        kind: SeriesKind,
        value: Option<f64>,
    ) {
        self.add_sample(metric_name, attributes, Some(extra_label), time_unix_nano, flags, kind, value);
    }

    #[allow(clippy::too_many_arguments)]
    fn add_sample(
        &mut self,
        metric_name: &str,
        attributes: &[KeyValue],
        extra_label: Option<LabelPair>,
        time_unix_nano: u64,
        flags: u32,
        kind: SeriesKind,
        value: Option<f64>,
    ) {
        if flags & FLAG_NO_RECORDED_VALUE != 0 {
            return;
        }
        match self.validated_sample(metric_name, attributes, extra_label, time_unix_nano, kind, value) {
            Ok(sample) => self.batch.samples.push(sample),
            Err(reason) => self.rejections.add(reason, 1),
        }
    }

    fn validated_sample(
        &self,
        metric_name: &str,
        attributes: &[KeyValue],
        extra_label: Option<LabelPair>,
        time_unix_nano: u64,
        kind: SeriesKind,
        value: Option<f64>,
    ) -> Result<BatchSample, RejectReason> {
        let value = value.ok_or(RejectReason::MissingValue)?;
        if value.is_nan() {
            return Err(RejectReason::NanValue);
        }
        let timestamp_ms = match time_unix_nano {
            0 => self.now_ms,
            nanos => i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX),
        };
        if timestamp_ms > self.now_ms.saturating_add(self.limits.future_skew_ms_max) {
            return Err(RejectReason::FutureTimestamp);
        }
        let mut labels = Vec::with_capacity(self.resource_labels.len() + attributes.len() + 1);
        labels.extend_from_slice(self.resource_labels);
        append_attribute_labels(attributes, self.limits, &mut labels)?;
        labels.extend(extra_label);
        let key = SeriesKey::new(metric_name, labels);
        if key.label_count() > self.limits.labels_per_series_max {
            return Err(RejectReason::TooManyLabels);
        }
        Ok(BatchSample::new(key, kind, timestamp_ms, value))
    }
}

fn counter_kind(aggregation_temporality: i32) -> SeriesKind {
    if aggregation_temporality == AggregationTemporality::Delta as i32 {
        SeriesKind::Delta
    } else {
        SeriesKind::CumulativeCounter
    }
}

fn number_value(value: number_data_point::Value) -> f64 {
    match value {
        number_data_point::Value::AsDouble(value) => value,
        number_data_point::Value::AsInt(value) => value as f64,
    }
}

/// Formats a bucket bound or quantile the way Prometheus writes them (`0.5`, `1`, `+Inf`).
fn format_bound(bound: f64) -> String {
    if bound == f64::INFINITY {
        "+Inf".to_owned()
    } else if bound == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        bound.to_string()
    }
}

fn labels_from_attributes(attributes: &[KeyValue], limits: &ConvertLimits) -> Result<Vec<LabelPair>, RejectReason> {
    let mut labels = Vec::with_capacity(attributes.len());
    append_attribute_labels(attributes, limits, &mut labels)?;
    if labels.len() > limits.labels_per_series_max {
        return Err(RejectReason::TooManyLabels);
    }
    Ok(labels)
}

fn append_attribute_labels(
    attributes: &[KeyValue],
    limits: &ConvertLimits,
    labels: &mut Vec<LabelPair>,
) -> Result<(), RejectReason> {
    if attributes.len() > limits.labels_per_series_max {
        return Err(RejectReason::TooManyLabels);
    }
    for attribute in attributes {
        if attribute.key.is_empty() || attribute.key.len() > limits.label_name_bytes_max {
            return Err(RejectReason::InvalidLabelName);
        }
        let value = attribute.value.as_ref().map(any_value_to_label).unwrap_or_default();
        if value.len() > limits.label_value_bytes_max {
            return Err(RejectReason::LabelValueTooLong);
        }
        labels.push(LabelPair::new(attribute.key.as_str(), value));
    }
    Ok(())
}

/// An attribute value as a label string: strings as they are, numbers and booleans in their
/// usual text form, bytes as base64, arrays and key-value lists as compact JSON.
pub fn any_value_to_label(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::DoubleValue(number)) => number.to_string(),
        Some(any_value::Value::BytesValue(bytes)) => base64::engine::general_purpose::STANDARD.encode(bytes),
        Some(any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_)) => {
            any_value_to_json(value).to_string()
        }
        Some(any_value::Value::StringValueStrindex(_)) | None => String::new(),
    }
}

fn any_value_to_json(value: &AnyValue) -> serde_json::Value {
    use serde_json::Value as Json;
    match &value.value {
        Some(any_value::Value::StringValue(text)) => Json::String(text.clone()),
        Some(any_value::Value::BoolValue(flag)) => Json::Bool(*flag),
        Some(any_value::Value::IntValue(number)) => Json::from(*number),
        Some(any_value::Value::DoubleValue(number)) => {
            serde_json::Number::from_f64(*number).map_or_else(|| Json::String(number.to_string()), Json::Number)
        }
        Some(any_value::Value::BytesValue(bytes)) => {
            Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        Some(any_value::Value::ArrayValue(array)) => Json::Array(array.values.iter().map(any_value_to_json).collect()),
        Some(any_value::Value::KvlistValue(list)) => Json::Object(
            list.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Json::Null, any_value_to_json)))
                .collect(),
        ),
        Some(any_value::Value::StringValueStrindex(_)) | None => Json::Null,
    }
}

#[cfg(test)]
mod tests;
