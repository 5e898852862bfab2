//! Zero-copy OTLP metrics decoder: walks the `ExportMetricsServiceRequest` wire format with
//! a protobuf field cursor ([`cursor`]) and feeds what it reads to the [`SampleWriter`] (the
//! conversion policy, shared with the prost path), which writes samples straight into a
//! [`DecodedBatch`] borrowing metric names, label names and string values from the request.
//!
//! This module only parses: field numbers ([`field_numbers`]), wire types, lengths, UTF-8, the
//! order in which a message's fields may arrive. No message tree, no `String` per attribute.
//!
//! **Oracle:** the result is the same as decoding with opentelemetry-proto's prost types and
//! walking them with [`super::prost_walk::convert_request`]: the same samples in the same order,
//! the same rejections, and an error exactly when prost reports one. As both feed the same
//! policy, the tests and the `otlp_decoder` fuzz target check the parsing. To stay exact without
//! re-implementing protobuf's merge rules, the decoder answers [`WireError::NonCanonical`] when a
//! singular message field it interprets occurs twice (an encoding no OTLP exporter produces); the
//! caller then takes the prost path for that request. Sub-messages it does not interpret (scopes,
//! exemplars, entity refs, exponential buckets, array and key-value-list attribute values) are
//! checked or converted with the prost types themselves.

mod cursor;
pub mod field_numbers;

use opentelemetry_proto::tonic::common::v1::{AnyValue, EntityRef, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::Exemplar;
use prost::Message;

use super::policy::{AttributeValue, ConvertLimits, MetricData, SampleWriter};
use super::Rejections;
use crate::store::DecodedBatch;
use cursor::{string_key_value, validate_with_prost, CheckedText, Fields};
use field_numbers as field;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Prost(#[from] prost::DecodeError),
    #[error("invalid string value in {field}: data is not UTF-8 encoded")]
    InvalidUtf8 { field: &'static str },
    #[error("a field of {message} overruns the message")]
    Truncated { message: &'static str },
    /// Not an error in the request: a singular field the decoder interprets occurs twice.
    /// The caller decodes this request with the prost types instead.
    #[error("non-canonical encoding (a singular message field repeated in {message})")]
    NonCanonical { message: &'static str },
}

type WireResult<T> = Result<T, WireError>;

/// Reusable buffers, so that decoding allocates per request, not per point.
#[derive(Default)]
struct Scratch<'a> {
    attribute_slices: Vec<&'a [u8]>,
    resource_attribute_slices: Vec<&'a [u8]>,
    scope_slices: Vec<&'a [u8]>,
    data_point_slices: Vec<&'a [u8]>,
    bucket_counts: Vec<u64>,
    explicit_bounds: Vec<f64>,
    quantiles: Vec<(f64, f64)>,
}

/// Decodes `body` into `batch` and `rejections`.
pub fn decode_request<'a>(
    body: &'a [u8],
    limits: &ConvertLimits,
    now_ms: i64,
    batch: &mut DecodedBatch<'a>,
    rejections: &mut Rejections,
) -> WireResult<()> {
    // Room for a typical request up front (a DCGM-like point is ~280 bytes with 8 labels), so a
    // steady stream of batches allocates a fixed number of times per request, not per point.
    batch.reserve(body.len() / 64, body.len() / 16);
    let mut walker =
        Walker { writer: SampleWriter::new(limits, now_ms, batch, rejections), scratch: Scratch::default() };
    let mut fields = Fields::new(body);
    while let Some(key) = fields.next() {
        let (tag, wire_type) = key?;
        match tag {
            field::export_metrics_service_request::RESOURCE_METRICS => {
                let resource_metrics = fields.len_delimited(wire_type, "ExportMetricsServiceRequest")?;
                walker.resource_metrics(resource_metrics)?;
            }
            _ => fields.skip(wire_type, tag)?,
        }
    }
    Ok(())
}

/// Whose attributes are being read.
#[derive(Clone, Copy)]
enum AttributeOwner {
    Resource,
    Point,
}

struct Walker<'a, 'b> {
    writer: SampleWriter<'a, 'b>,
    scratch: Scratch<'a>,
}

impl<'a> Walker<'a, '_> {
    fn resource_metrics(&mut self, bytes: &'a [u8]) -> WireResult<()> {
        // The resource may follow the scopes on the wire: find both first.
        let mut resource: Option<&'a [u8]> = None;
        let mut scope_metrics = std::mem::take(&mut self.scratch.scope_slices);
        scope_metrics.clear();
        let mut fields = Fields::new(bytes);
        while let Some(key) = fields.next() {
            let (tag, wire_type) = key?;
            match tag {
                field::resource_metrics::RESOURCE => {
                    let field = fields.len_delimited(wire_type, "ResourceMetrics")?;
                    if resource.replace(field).is_some() {
                        return Err(WireError::NonCanonical { message: "ResourceMetrics.resource" });
                    }
                }
                field::resource_metrics::SCOPE_METRICS => {
                    scope_metrics.push(fields.len_delimited(wire_type, "ResourceMetrics")?)
                }
                field::resource_metrics::SCHEMA_URL => {
                    fields.string(wire_type, "ResourceMetrics.schema_url")?;
                }
                _ => fields.skip(wire_type, tag)?,
            }
        }
        let mut resource_attributes = std::mem::take(&mut self.scratch.resource_attribute_slices);
        resource_attributes.clear();
        if let Some(resource) = resource {
            let mut fields = Fields::new(resource);
            while let Some(key) = fields.next() {
                let (tag, wire_type) = key?;
                match tag {
                    field::resource::ATTRIBUTES => {
                        resource_attributes.push(fields.len_delimited(wire_type, "Resource")?)
                    }
                    field::resource::DROPPED_ATTRIBUTES_COUNT => {
                        fields.varint(wire_type)?;
                    }
                    field::resource::ENTITY_REFS => {
                        validate_with_prost::<EntityRef>(fields.len_delimited(wire_type, "Resource")?)?
                    }
                    _ => fields.skip(wire_type, tag)?,
                }
            }
        }
        self.writer.begin_resource();
        let read = self.attributes(resource.unwrap_or_default(), &resource_attributes, AttributeOwner::Resource);
        self.scratch.resource_attribute_slices = resource_attributes;
        read?;
        self.writer.end_resource();
        for &scope in &scope_metrics {
            let mut fields = Fields::new(scope);
            while let Some(key) = fields.next() {
                let (tag, wire_type) = key?;
                match tag {
                    field::scope_metrics::SCOPE => {
                        validate_with_prost::<InstrumentationScope>(fields.len_delimited(wire_type, "ScopeMetrics")?)?
                    }
                    field::scope_metrics::METRICS => {
                        let metric = fields.len_delimited(wire_type, "ScopeMetrics")?;
                        self.metric(metric)?;
                    }
                    field::scope_metrics::SCHEMA_URL => {
                        fields.string(wire_type, "ScopeMetrics.schema_url")?;
                    }
                    _ => fields.skip(wire_type, tag)?,
                }
            }
        }
        self.scratch.scope_slices = scope_metrics;
        Ok(())
    }

    /// Reads `attributes` (sub-slices of `parent`, the message that holds them) and hands each
    /// to the writer as `owner`'s.
    fn attributes(&mut self, parent: &'a [u8], attributes: &[&'a [u8]], owner: AttributeOwner) -> WireResult<()> {
        let checked = CheckedText::spanning(parent, attributes);
        for &attribute in attributes {
            self.key_value(attribute, checked, owner)?;
        }
        Ok(())
    }

    #[inline(always)]
    fn attribute(&mut self, owner: AttributeOwner, name: &'a str, value: AttributeValue<'a, '_>) {
        match owner {
            AttributeOwner::Resource => self.writer.resource_attribute(name, value),
            AttributeOwner::Point => self.writer.point_attribute(name, value),
        }
    }

    #[inline]
    fn key_value(
        &mut self,
        bytes: &'a [u8],
        checked: Option<CheckedText<'a>>,
        owner: AttributeOwner,
    ) -> WireResult<()> {
        if let Some((name, value)) = string_key_value(bytes) {
            let name = checked.and_then(|checked| checked.get(name));
            let value = checked.and_then(|checked| checked.get(value));
            if let (Some(name), Some(value)) = (name, value) {
                self.attribute(owner, name, AttributeValue::Text(value));
                return Ok(());
            }
        }
        let mut name = "";
        let mut value: Option<&'a [u8]> = None;
        let mut fields = Fields::new(bytes);
        while let Some(key) = fields.next() {
            let (tag, wire_type) = key?;
            match tag {
                field::key_value::KEY => name = fields.checked_string(wire_type, "KeyValue.key", checked)?,
                field::key_value::VALUE => {
                    if value.replace(fields.len_delimited(wire_type, "KeyValue")?).is_some() {
                        return Err(WireError::NonCanonical { message: "KeyValue.value" });
                    }
                }
                field::key_value::KEY_STRINDEX => {
                    fields.varint(wire_type)?;
                }
                _ => fields.skip(wire_type, tag)?,
            }
        }
        match value {
            Some(value) => self.any_value(owner, name, value, checked),
            None => {
                self.attribute(owner, name, AttributeValue::Empty);
                Ok(())
            }
        }
    }

    #[inline]
    fn any_value(
        &mut self,
        owner: AttributeOwner,
        name: &'a str,
        bytes: &'a [u8],
        checked: Option<CheckedText<'a>>,
    ) -> WireResult<()> {
        // The last value field wins, as in protobuf's merge of a oneof.
        let mut value = AttributeValue::Empty;
        let mut fields = Fields::new(bytes);
        while let Some(key) = fields.next() {
            let (tag, wire_type) = key?;
            value = match tag {
                field::any_value::STRING_VALUE => {
                    AttributeValue::Text(fields.checked_string(wire_type, "AnyValue.string_value", checked)?)
                }
                field::any_value::BOOL_VALUE => AttributeValue::Bool(fields.varint(wire_type)? != 0),
                field::any_value::INT_VALUE => AttributeValue::Int(fields.varint(wire_type)? as i64),
                field::any_value::DOUBLE_VALUE => {
                    AttributeValue::Double(f64::from_bits(fields.fixed64(wire_type, "AnyValue")?))
                }
                field::any_value::ARRAY_VALUE | field::any_value::KVLIST_VALUE => {
                    // Arrays and key-value lists (rare): prost's own decoding and merge rules.
                    let decoded = AnyValue::decode(bytes)?;
                    self.attribute(owner, name, AttributeValue::Decoded(&decoded));
                    return Ok(());
                }
                field::any_value::BYTES_VALUE => AttributeValue::Bytes(fields.len_delimited(wire_type, "AnyValue")?),
                field::any_value::STRING_VALUE_STRINDEX => {
                    fields.varint(wire_type)?;
                    AttributeValue::Empty
                }
                _ => {
                    fields.skip(wire_type, tag)?;
                    value
                }
            };
        }
        self.attribute(owner, name, value);
        Ok(())
    }

    fn metric(&mut self, bytes: &'a [u8]) -> WireResult<()> {
        let mut name = "";
        let mut data: Option<(u32, &'a [u8])> = None;
        let mut fields = Fields::new(bytes);
        while let Some(key) = fields.next() {
            let (tag, wire_type) = key?;
            match tag {
                field::metric::NAME => name = fields.string(wire_type, "Metric.name")?,
                field::metric::DESCRIPTION => {
                    fields.string(wire_type, "Metric.description")?;
                }
                field::metric::UNIT => {
                    fields.string(wire_type, "Metric.unit")?;
                }
                field::metric::GAUGE
                | field::metric::SUM
                | field::metric::HISTOGRAM
                | field::metric::EXPONENTIAL_HISTOGRAM
                | field::metric::SUMMARY => {
                    let field = fields.len_delimited(wire_type, "Metric")?;
                    if data.replace((tag, field)).is_some() {
                        return Err(WireError::NonCanonical { message: "Metric.data" });
                    }
                }
                field::metric::METADATA => validate_with_prost::<KeyValue>(fields.len_delimited(wire_type, "Metric")?)?,
                _ => fields.skip(wire_type, tag)?,
            }
        }
        match data {
            Some((data_tag, data)) => self.metric_data(name, data_tag, data),
            None => Ok(()),
        }
    }

    /// The data of a metric: its data points, temporality and monotonicity, then each point.
    fn metric_data(&mut self, name: &'a str, data_tag: u32, bytes: &'a [u8]) -> WireResult<()> {
        let mut data_points = std::mem::take(&mut self.scratch.data_point_slices);
        data_points.clear();
        // Room for the points up front (a point takes well over 64 bytes with its labels).
        data_points.reserve(bytes.len() / 64);
        let mut temporality: i32 = 0;
        let mut is_monotonic = false;
        let has_temporality =
            matches!(data_tag, field::metric::SUM | field::metric::HISTOGRAM | field::metric::EXPONENTIAL_HISTOGRAM);
        let mut fields = Fields::new(bytes);
        let parsed: WireResult<()> = (|| {
            while let Some(key) = fields.next() {
                let (tag, wire_type) = key?;
                match tag {
                    field::metric_data::DATA_POINTS => data_points.push(fields.len_delimited(wire_type, "data point")?),
                    field::metric_data::AGGREGATION_TEMPORALITY if has_temporality => {
                        temporality = fields.varint(wire_type)? as i32
                    }
                    field::metric_data::IS_MONOTONIC if data_tag == field::metric::SUM => {
                        is_monotonic = fields.varint(wire_type)? != 0
                    }
                    _ => fields.skip(wire_type, tag)?,
                }
            }
            Ok(())
        })();
        let walked = parsed.and_then(|()| {
            let points = data_points.iter();
            match data_tag {
                field::metric::GAUGE => {
                    self.writer.begin_metric(name, MetricData::Gauge);
                    points.copied().try_for_each(|bytes| self.number_point(bytes))
                }
                field::metric::SUM => {
                    self.writer.begin_metric(name, MetricData::Sum { temporality, is_monotonic });
                    points.copied().try_for_each(|bytes| self.number_point(bytes))
                }
                field::metric::HISTOGRAM => {
                    self.writer.begin_metric(name, MetricData::Histogram { temporality });
                    points.copied().try_for_each(|bytes| self.histogram_point(bytes))
                }
                field::metric::EXPONENTIAL_HISTOGRAM => {
                    self.writer.begin_metric(name, MetricData::ExponentialHistogram { temporality });
                    points.copied().try_for_each(|bytes| self.exponential_histogram_point(bytes))
                }
                _ => {
                    self.writer.begin_metric(name, MetricData::Summary);
                    points.copied().try_for_each(|bytes| self.summary_point(bytes))
                }
            }
        });
        self.scratch.data_point_slices = data_points;
        walked
    }

    /// Hands the point's attributes (collected in `scratch.attribute_slices`) to the writer.
    fn point_attributes(&mut self, point: &'a [u8]) -> WireResult<()> {
        self.writer.begin_point();
        let attributes = std::mem::take(&mut self.scratch.attribute_slices);
        let read = self.attributes(point, &attributes, AttributeOwner::Point);
        self.scratch.attribute_slices = attributes;
        read
    }

    fn number_point(&mut self, bytes: &'a [u8]) -> WireResult<()> {
        use field::number_data_point as f;
        const MESSAGE: &str = "NumberDataPoint";
        let (mut time_unix_nano, mut flags, mut value) = (0u64, 0u32, None);
        self.scratch.attribute_slices.clear();
        let mut fields = Fields::new(bytes);
        while let Some(key) = fields.next() {
            let (tag, wire_type) = key?;
            match tag {
                f::ATTRIBUTES => self.scratch.attribute_slices.push(fields.len_delimited(wire_type, MESSAGE)?),
                f::START_TIME_UNIX_NANO => {
                    fields.fixed64(wire_type, MESSAGE)?;
                }
                f::TIME_UNIX_NANO => time_unix_nano = fields.fixed64(wire_type, MESSAGE)?,
                f::AS_DOUBLE => value = Some(f64::from_bits(fields.fixed64(wire_type, MESSAGE)?)),
                f::AS_INT => value = Some(fields.fixed64(wire_type, MESSAGE)? as i64 as f64),
                f::EXEMPLARS => validate_with_prost::<Exemplar>(fields.len_delimited(wire_type, MESSAGE)?)?,
                f::FLAGS => flags = fields.varint(wire_type)? as u32,
                _ => fields.skip(wire_type, tag)?,
            }
        }
        self.point_attributes(bytes)?;
        self.writer.number_point(time_unix_nano, flags, value);
        Ok(())
    }

    fn histogram_point(&mut self, bytes: &'a [u8]) -> WireResult<()> {
        use field::histogram_data_point as f;
        const MESSAGE: &str = "HistogramDataPoint";
        let (mut time_unix_nano, mut flags, mut count, mut sum) = (0u64, 0u32, 0u64, None);
        self.scratch.attribute_slices.clear();
        let mut bucket_counts = std::mem::take(&mut self.scratch.bucket_counts);
        let mut explicit_bounds = std::mem::take(&mut self.scratch.explicit_bounds);
        bucket_counts.clear();
        explicit_bounds.clear();
        let mut fields = Fields::new(bytes);
        let parsed: WireResult<()> = (|| {
            while let Some(key) = fields.next() {
                let (tag, wire_type) = key?;
                match tag {
                    f::ATTRIBUTES => self.scratch.attribute_slices.push(fields.len_delimited(wire_type, MESSAGE)?),
                    f::START_TIME_UNIX_NANO | f::MIN | f::MAX => {
                        fields.fixed64(wire_type, MESSAGE)?;
                    }
                    f::TIME_UNIX_NANO => time_unix_nano = fields.fixed64(wire_type, MESSAGE)?,
                    f::COUNT => count = fields.fixed64(wire_type, MESSAGE)?,
                    f::SUM => sum = Some(f64::from_bits(fields.fixed64(wire_type, MESSAGE)?)),
                    f::BUCKET_COUNTS => fields.repeated_fixed64(wire_type, MESSAGE, |word| bucket_counts.push(word))?,
                    f::EXPLICIT_BOUNDS => fields
                        .repeated_fixed64(wire_type, MESSAGE, |word| explicit_bounds.push(f64::from_bits(word)))?,
                    f::EXEMPLARS => validate_with_prost::<Exemplar>(fields.len_delimited(wire_type, MESSAGE)?)?,
                    f::FLAGS => flags = fields.varint(wire_type)? as u32,
                    _ => fields.skip(wire_type, tag)?,
                }
            }
            Ok(())
        })();
        let result = parsed.and_then(|()| {
            self.point_attributes(bytes)?;
            self.writer.histogram_point(time_unix_nano, flags, count, sum, &bucket_counts, &explicit_bounds);
            Ok(())
        });
        self.scratch.bucket_counts = bucket_counts;
        self.scratch.explicit_bounds = explicit_bounds;
        result
    }

    fn exponential_histogram_point(&mut self, bytes: &'a [u8]) -> WireResult<()> {
        use field::exponential_histogram_data_point as f;
        const MESSAGE: &str = "ExponentialHistogramDataPoint";
        let (mut time_unix_nano, mut flags, mut count, mut sum) = (0u64, 0u32, 0u64, None);
        self.scratch.attribute_slices.clear();
        let mut fields = Fields::new(bytes);
        while let Some(key) = fields.next() {
            let (tag, wire_type) = key?;
            match tag {
                f::ATTRIBUTES => self.scratch.attribute_slices.push(fields.len_delimited(wire_type, MESSAGE)?),
                f::START_TIME_UNIX_NANO | f::ZERO_COUNT | f::MIN | f::MAX | f::ZERO_THRESHOLD => {
                    fields.fixed64(wire_type, MESSAGE)?;
                }
                f::TIME_UNIX_NANO => time_unix_nano = fields.fixed64(wire_type, MESSAGE)?,
                f::COUNT => count = fields.fixed64(wire_type, MESSAGE)?,
                f::SUM => sum = Some(f64::from_bits(fields.fixed64(wire_type, MESSAGE)?)),
                f::SCALE => {
                    fields.varint(wire_type)?;
                }
                f::POSITIVE | f::NEGATIVE => validate_with_prost::<Buckets>(fields.len_delimited(wire_type, MESSAGE)?)?,
                f::FLAGS => flags = fields.varint(wire_type)? as u32,
                f::EXEMPLARS => validate_with_prost::<Exemplar>(fields.len_delimited(wire_type, MESSAGE)?)?,
                _ => fields.skip(wire_type, tag)?,
            }
        }
        self.point_attributes(bytes)?;
        self.writer.exponential_histogram_point(time_unix_nano, flags, count, sum);
        Ok(())
    }

    fn summary_point(&mut self, bytes: &'a [u8]) -> WireResult<()> {
        use field::summary_data_point as f;
        const MESSAGE: &str = "SummaryDataPoint";
        let (mut time_unix_nano, mut flags, mut count, mut sum) = (0u64, 0u32, 0u64, 0.0f64);
        self.scratch.attribute_slices.clear();
        let mut quantiles = std::mem::take(&mut self.scratch.quantiles);
        quantiles.clear();
        let mut fields = Fields::new(bytes);
        let parsed: WireResult<()> = (|| {
            while let Some(key) = fields.next() {
                let (tag, wire_type) = key?;
                match tag {
                    f::ATTRIBUTES => self.scratch.attribute_slices.push(fields.len_delimited(wire_type, MESSAGE)?),
                    f::START_TIME_UNIX_NANO => {
                        fields.fixed64(wire_type, MESSAGE)?;
                    }
                    f::TIME_UNIX_NANO => time_unix_nano = fields.fixed64(wire_type, MESSAGE)?,
                    f::COUNT => count = fields.fixed64(wire_type, MESSAGE)?,
                    f::SUM => sum = f64::from_bits(fields.fixed64(wire_type, MESSAGE)?),
                    f::QUANTILE_VALUES => {
                        let quantile_bytes = fields.len_delimited(wire_type, MESSAGE)?;
                        quantiles.push(value_at_quantile(quantile_bytes)?);
                    }
                    f::FLAGS => flags = fields.varint(wire_type)? as u32,
                    _ => fields.skip(wire_type, tag)?,
                }
            }
            Ok(())
        })();
        let result = parsed.and_then(|()| {
            self.point_attributes(bytes)?;
            self.writer.summary_point(time_unix_nano, flags, count, sum, quantiles.iter().copied());
            Ok(())
        });
        self.scratch.quantiles = quantiles;
        result
    }
}

/// A summary's `(quantile, value)`.
fn value_at_quantile(bytes: &[u8]) -> WireResult<(f64, f64)> {
    let (mut quantile, mut value) = (0.0, 0.0);
    let mut fields = Fields::new(bytes);
    while let Some(key) = fields.next() {
        let (tag, wire_type) = key?;
        match tag {
            field::value_at_quantile::QUANTILE => {
                quantile = f64::from_bits(fields.fixed64(wire_type, "ValueAtQuantile")?)
            }
            field::value_at_quantile::VALUE => value = f64::from_bits(fields.fixed64(wire_type, "ValueAtQuantile")?),
            _ => fields.skip(wire_type, tag)?,
        }
    }
    Ok((quantile, value))
}

#[cfg(test)]
mod tests;
