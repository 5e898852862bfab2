//! The second decoder: walks an `ExportMetricsServiceRequest` already decoded into
//! opentelemetry-proto's prost types (the OTLP JSON path, and protobuf in an encoding the
//! zero-copy decoder leaves to prost) and feeds what it finds to the [`SampleWriter`], which
//! owns every conversion rule. Names and string values borrow from the request.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{metric, Metric};

use super::policy::{AttributeValue, ConvertLimits, MetricData, SampleWriter};
use super::Rejections;
use crate::store::DecodedBatch;

/// Converts every metric of `request` into `batch`; points that fail validation are counted in
/// `rejections` and skipped, the rest go on.
pub fn convert_request<'a>(
    request: &'a ExportMetricsServiceRequest,
    limits: &ConvertLimits,
    now_ms: i64,
    batch: &mut DecodedBatch<'a>,
    rejections: &mut Rejections,
) {
    let (n_points, n_labels) = size_hint(request);
    batch.reserve(n_points, n_labels);
    let mut writer = SampleWriter::new(limits, now_ms, batch, rejections);
    for resource_metrics in &request.resource_metrics {
        writer.begin_resource();
        let resource_attributes = resource_metrics.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        for attribute in resource_attributes {
            writer.resource_attribute(&attribute.key, AttributeValue::of(attribute.value.as_ref()));
        }
        writer.end_resource();
        for scope_metrics in &resource_metrics.scope_metrics {
            for metric in &scope_metrics.metrics {
                walk_metric(&mut writer, metric);
            }
        }
    }
}

/// Room for the batch up front: number points and their labels (histogram and summary points
/// produce more samples; they grow the batch as they come), so that the batch allocates per
/// request, not per point.
fn size_hint(request: &ExportMetricsServiceRequest) -> (usize, usize) {
    let (mut n_points, mut n_labels) = (0, 0);
    for resource_metrics in &request.resource_metrics {
        let n_resource_labels = resource_metrics.resource.as_ref().map_or(0, |resource| resource.attributes.len());
        for metric in resource_metrics.scope_metrics.iter().flat_map(|scope| &scope.metrics) {
            let points = match &metric.data {
                Some(metric::Data::Gauge(gauge)) => &gauge.data_points[..],
                Some(metric::Data::Sum(sum)) => &sum.data_points[..],
                _ => continue,
            };
            n_points += points.len();
            n_labels += points.iter().map(|point| n_resource_labels + point.attributes.len()).sum::<usize>();
        }
    }
    (n_points, n_labels)
}

fn walk_metric<'a>(writer: &mut SampleWriter<'a, '_>, metric: &'a Metric) {
    let Some(data) = &metric.data else { return };
    match data {
        metric::Data::Gauge(gauge) => {
            writer.begin_metric(&metric.name, MetricData::Gauge);
            for point in &gauge.data_points {
                point_attributes(writer, &point.attributes);
                writer.number_point(point.time_unix_nano, point.flags, point.value.map(number_value));
            }
        }
        metric::Data::Sum(sum) => {
            let data = MetricData::Sum { temporality: sum.aggregation_temporality, is_monotonic: sum.is_monotonic };
            writer.begin_metric(&metric.name, data);
            for point in &sum.data_points {
                point_attributes(writer, &point.attributes);
                writer.number_point(point.time_unix_nano, point.flags, point.value.map(number_value));
            }
        }
        metric::Data::Histogram(histogram) => {
            writer.begin_metric(&metric.name, MetricData::Histogram { temporality: histogram.aggregation_temporality });
            for point in &histogram.data_points {
                point_attributes(writer, &point.attributes);
                writer.histogram_point(
                    point.time_unix_nano,
                    point.flags,
                    point.count,
                    point.sum,
                    &point.bucket_counts,
                    &point.explicit_bounds,
                );
            }
        }
        metric::Data::ExponentialHistogram(histogram) => {
            let data = MetricData::ExponentialHistogram { temporality: histogram.aggregation_temporality };
            writer.begin_metric(&metric.name, data);
            for point in &histogram.data_points {
                point_attributes(writer, &point.attributes);
                writer.exponential_histogram_point(point.time_unix_nano, point.flags, point.count, point.sum);
            }
        }
        metric::Data::Summary(summary) => {
            writer.begin_metric(&metric.name, MetricData::Summary);
            for point in &summary.data_points {
                point_attributes(writer, &point.attributes);
                let quantiles = point.quantile_values.iter().map(|quantile| (quantile.quantile, quantile.value));
                writer.summary_point(point.time_unix_nano, point.flags, point.count, point.sum, quantiles);
            }
        }
    }
}

fn point_attributes<'a>(writer: &mut SampleWriter<'a, '_>, attributes: &'a [KeyValue]) {
    writer.begin_point();
    for attribute in attributes {
        writer.point_attribute(&attribute.key, AttributeValue::of(attribute.value.as_ref()));
    }
}

fn number_value(value: opentelemetry_proto::tonic::metrics::v1::number_data_point::Value) -> f64 {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    match value {
        Value::AsDouble(value) => value,
        Value::AsInt(value) => value as f64,
    }
}
