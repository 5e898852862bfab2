//! Zero-copy OTLP metrics decoder: walks the `ExportMetricsServiceRequest` wire format with
//! prost's encoding primitives and writes samples straight into a [`DecodedBatch`], borrowing
//! metric names, label names and string values from the request buffer.
//!
//! No message tree, no `String` per attribute. Per point the work is: read the fields, put the
//! label references in canonical order (a small stable sort in a reused buffer), hash them. A
//! `SeriesKey` is allocated later, by the store, only for a series it has not seen.
//!
//! **Oracle:** the result is the same as decoding with opentelemetry-proto's prost types and
//! running [`super::convert::convert_request`]: the same samples in the same order, the same
//! rejections, and an error exactly when prost reports one. The tests and the `otlp_decoder` fuzz
//! target check this. To stay exact without re-implementing protobuf's merge rules, the decoder
//! answers [`WireError::NonCanonical`] when a singular message field it interprets occurs twice
//! (an encoding no OTLP exporter produces); the caller then takes the prost path for that request.
//! Sub-messages it does not interpret (scopes, exemplars, entity refs, exponential buckets, array
//! and key-value-list attribute values) are checked or converted with the prost types themselves.

use std::fmt::Write as _;

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{AnyValue, EntityRef, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, Exemplar};
use prost::encoding::{check_wire_type, decode_key, decode_varint, skip_field, DecodeContext, WireType};
use prost::Message;

use super::convert::{any_value_to_label, ConvertLimits};
use super::{RejectReason, Rejections};
use crate::store::{needs_normalization, BatchLabel, BatchText, DecodedBatch, SeriesKind};

/// The OTLP flag bit meaning "no recorded value".
const FLAG_NO_RECORDED_VALUE: u32 = 1;

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

/// A cursor over one message's bytes.
#[derive(Clone, Copy)]
struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf }
    }

    #[inline(always)]
    fn next(&mut self) -> Option<WireResult<(u32, WireType)>> {
        let &first = self.buf.first()?;
        // Fast path: a one-byte key (field numbers 1 to 15) with a known wire type. Anything
        // else, errors included, goes through prost's own decoding.
        let wire_type = match first & 0x07 {
            0 => Some(WireType::Varint),
            1 => Some(WireType::SixtyFourBit),
            2 => Some(WireType::LengthDelimited),
            5 => Some(WireType::ThirtyTwoBit),
            _ => None,
        };
        if (0x08..0x80).contains(&first) {
            if let Some(wire_type) = wire_type {
                self.buf = &self.buf[1..];
                return Some(Ok((u32::from(first >> 3), wire_type)));
            }
        }
        Some(decode_key(&mut self.buf).map_err(WireError::from))
    }

    #[inline(always)]
    fn len_delimited(&mut self, wire_type: WireType, message: &'static str) -> WireResult<&'a [u8]> {
        check_wire_type(WireType::LengthDelimited, wire_type)?;
        let len = match self.buf.first() {
            Some(&byte) if byte < 0x80 => {
                self.buf = &self.buf[1..];
                u64::from(byte)
            }
            _ => decode_varint(&mut self.buf)?,
        };
        if len > self.buf.len() as u64 {
            return Err(WireError::Truncated { message });
        }
        let (field, rest) = self.buf.split_at(len as usize);
        self.buf = rest;
        Ok(field)
    }

    #[inline(always)]
    fn string(&mut self, wire_type: WireType, field: &'static str) -> WireResult<&'a str> {
        let bytes = self.len_delimited(wire_type, field)?;
        std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8 { field })
    }

    /// [`Fields::string`], answered from `checked` without a second UTF-8 check when the
    /// string lies inside it.
    #[inline(always)]
    fn checked_string(
        &mut self,
        wire_type: WireType,
        field: &'static str,
        checked: Option<CheckedText<'a>>,
    ) -> WireResult<&'a str> {
        let bytes = self.len_delimited(wire_type, field)?;
        match checked.and_then(|checked| checked.get(bytes)) {
            Some(text) => Ok(text),
            None => std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8 { field }),
        }
    }

    #[inline(always)]
    fn fixed64(&mut self, wire_type: WireType, message: &'static str) -> WireResult<u64> {
        check_wire_type(WireType::SixtyFourBit, wire_type)?;
        if self.buf.len() < 8 {
            return Err(WireError::Truncated { message });
        }
        let (word, rest) = self.buf.split_at(8);
        self.buf = rest;
        Ok(u64::from_le_bytes(word.try_into().expect("eight bytes")))
    }

    #[inline]
    fn varint(&mut self, wire_type: WireType) -> WireResult<u64> {
        check_wire_type(WireType::Varint, wire_type)?;
        Ok(decode_varint(&mut self.buf)?)
    }

    fn skip(&mut self, wire_type: WireType, tag: u32) -> WireResult<()> {
        Ok(skip_field(wire_type, tag, &mut self.buf, DecodeContext::default())?)
    }

    /// A repeated fixed64/double field, packed or not: calls `each` with every element.
    fn repeated_fixed64(
        &mut self,
        wire_type: WireType,
        message: &'static str,
        mut each: impl FnMut(u64),
    ) -> WireResult<()> {
        if wire_type == WireType::LengthDelimited {
            let packed = self.len_delimited(wire_type, message)?;
            if packed.len() % 8 != 0 {
                return Err(WireError::Truncated { message });
            }
            packed.chunks_exact(8).for_each(|word| each(u64::from_le_bytes(word.try_into().expect("eight bytes"))));
            Ok(())
        } else {
            each(self.fixed64(wire_type, message)?);
            Ok(())
        }
    }
}

/// A span of the request already validated as UTF-8 as a whole: one check for all the labels of
/// a point instead of one per string. A string inside it is valid exactly when its ends are
/// character boundaries of the span, which `str::get` checks.
#[derive(Clone, Copy)]
struct CheckedText<'a> {
    bytes: &'a [u8],
    text: &'a str,
}

impl<'a> CheckedText<'a> {
    /// The span of `parent` from the first to the end of the last of `parts` (sub-slices of
    /// `parent`, in order), if it is valid UTF-8. Usually the attributes of a point are adjacent
    /// and ASCII apart from their strings; when they are not, every string is checked alone.
    fn spanning(parent: &'a [u8], parts: &[&'a [u8]]) -> Option<Self> {
        let (first, last) = (parts.first()?, parts.last()?);
        let base = parent.as_ptr() as usize;
        let start = (first.as_ptr() as usize).checked_sub(base)?;
        let end = (last.as_ptr() as usize).checked_sub(base)?.checked_add(last.len())?;
        let bytes = parent.get(start..end)?;
        let text = std::str::from_utf8(bytes).ok()?;
        Some(CheckedText { bytes, text })
    }

    #[inline(always)]
    fn get(&self, part: &[u8]) -> Option<&'a str> {
        let start = (part.as_ptr() as usize).checked_sub(self.bytes.as_ptr() as usize)?;
        self.text.get(start..start.checked_add(part.len())?)
    }
}

/// The key and string value of a `KeyValue` in the layout every exporter writes for a string
/// attribute: `key` (field 1), then `value` (field 2) holding only `string_value` (field 1), all
/// lengths below 128. Anything else is `None`, and the caller walks the fields one by one.
#[inline(always)]
fn string_key_value(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let [0x0a, key_len, rest @ ..] = bytes else { return None };
    let (key, rest) = rest.split_at_checked(usize::from(*key_len))?;
    let [0x12, value_len, 0x0a, string_len, string @ ..] = rest else { return None };
    let exact = *key_len < 0x80
        && *value_len < 0x80
        && *string_len < 0x80
        && usize::from(*string_len) == string.len()
        && usize::from(*value_len) == string.len() + 2;
    exact.then_some((key, string))
}

/// Checks a sub-message the decoder does not interpret, with its prost type.
fn validate_with_prost<M: Message + Default>(bytes: &[u8]) -> WireResult<()> {
    M::decode(bytes).map(|_| ()).map_err(WireError::from)
}

/// Reusable buffers, so that decoding allocates per request, not per point.
#[derive(Default)]
struct Scratch<'a> {
    resource_labels: Vec<BatchLabel<'a>>,
    point_labels: Vec<BatchLabel<'a>>,
    sample_labels: Vec<BatchLabel<'a>>,
    label_order: Vec<(u64, u32)>,
    /// The label names (in wire order) that `canonical_positions` was computed for.
    order_names: Vec<&'a str>,
    canonical_positions: Vec<u32>,
    attribute_slices: Vec<&'a [u8]>,
    resource_attribute_slices: Vec<&'a [u8]>,
    scope_slices: Vec<&'a [u8]>,
    data_point_slices: Vec<&'a [u8]>,
    bucket_counts: Vec<u64>,
    explicit_bounds: Vec<f64>,
    quantiles: Vec<(f64, f64)>,
    format: String,
}

/// Decodes `body` into `batch` and `rejections`, applying the same validation as
/// [`super::convert::convert_request`].
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
    let mut decoder = Decoder { limits, now_ms, batch, rejections, scratch: Scratch::default() };
    let mut fields = Fields::new(body);
    while let Some(key) = fields.next() {
        let (tag, wire_type) = key?;
        match tag {
            1 => {
                let resource_metrics = fields.len_delimited(wire_type, "ExportMetricsServiceRequest")?;
                decoder.resource_metrics(resource_metrics)?;
            }
            _ => fields.skip(wire_type, tag)?,
        }
    }
    Ok(())
}

struct Decoder<'a, 'b> {
    limits: &'b ConvertLimits,
    now_ms: i64,
    batch: &'b mut DecodedBatch<'a>,
    rejections: &'b mut Rejections,
    scratch: Scratch<'a>,
}

/// The fields of a metric needed before its data points can be converted.
struct MetricData<'a> {
    tag: u32,
    bytes: &'a [u8],
}

impl<'a> Decoder<'a, '_> {
    fn resource_metrics(&mut self, bytes: &'a [u8]) -> WireResult<()> {
        // The resource may follow the scopes on the wire: find both first.
        let mut resource: Option<&'a [u8]> = None;
        let mut scope_metrics = std::mem::take(&mut self.scratch.scope_slices);
        scope_metrics.clear();
        let mut fields = Fields::new(bytes);
        while let Some(key) = fields.next() {
            let (tag, wire_type) = key?;
            match tag {
                1 => {
                    let field = fields.len_delimited(wire_type, "ResourceMetrics")?;
                    if resource.replace(field).is_some() {
                        return Err(WireError::NonCanonical { message: "ResourceMetrics.resource" });
                    }
                }
                2 => scope_metrics.push(fields.len_delimited(wire_type, "ResourceMetrics")?),
                3 => {
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
                    1 => resource_attributes.push(fields.len_delimited(wire_type, "Resource")?),
                    2 => {
                        fields.varint(wire_type)?;
                    }
                    3 => validate_with_prost::<EntityRef>(fields.len_delimited(wire_type, "Resource")?)?,
                    _ => fields.skip(wire_type, tag)?,
                }
            }
        }
        // Resource labels are validated once; if they are invalid, every point is rejected.
        let mut resource_labels = std::mem::take(&mut self.scratch.resource_labels);
        resource_labels.clear();
        let resource_valid =
            self.attribute_labels(resource.unwrap_or_default(), &resource_attributes, &mut resource_labels)?;
        let resource_rejection = match resource_valid {
            Ok(()) if resource_labels.len() > self.limits.labels_per_series_max => Some(RejectReason::TooManyLabels),
            Ok(()) => None,
            Err(reason) => Some(reason),
        };
        self.scratch.resource_attribute_slices = resource_attributes;
        for &scope in &scope_metrics {
            let mut fields = Fields::new(scope);
            while let Some(key) = fields.next() {
                let (tag, wire_type) = key?;
                match tag {
                    1 => validate_with_prost::<InstrumentationScope>(fields.len_delimited(wire_type, "ScopeMetrics")?)?,
                    2 => {
                        let metric = fields.len_delimited(wire_type, "ScopeMetrics")?;
                        self.metric(metric, &resource_labels, resource_rejection)?;
                    }
                    3 => {
                        fields.string(wire_type, "ScopeMetrics.schema_url")?;
                    }
                    _ => fields.skip(wire_type, tag)?,
                }
            }
        }
        self.scratch.resource_labels = resource_labels;
        self.scratch.scope_slices = scope_metrics;
        Ok(())
    }

    /// Converts attributes to labels (in wire order), checking the label limits.
    /// The outer `Result` is a malformed request; the inner one a rejection of the points.
    /// `attributes` are sub-slices of `parent` (the message that holds them).
    fn attribute_labels(
        &mut self,
        parent: &'a [u8],
        attributes: &[&'a [u8]],
        labels: &mut Vec<BatchLabel<'a>>,
    ) -> WireResult<Result<(), RejectReason>> {
        let mut rejection =
            (attributes.len() > self.limits.labels_per_series_max).then_some(RejectReason::TooManyLabels);
        let checked = CheckedText::spanning(parent, attributes);
        for &attribute in attributes {
            let label = self.key_value(attribute, checked)?;
            if rejection.is_some() {
                continue;
            }
            if label.name.is_empty() || label.name.len() > self.limits.label_name_bytes_max {
                rejection = Some(RejectReason::InvalidLabelName);
            } else if self.batch.resolve(label.value).len() > self.limits.label_value_bytes_max {
                rejection = Some(RejectReason::LabelValueTooLong);
            } else {
                labels.push(label);
            }
        }
        Ok(rejection.map_or(Ok(()), Err))
    }

    #[inline]
    fn key_value(&mut self, bytes: &'a [u8], checked: Option<CheckedText<'a>>) -> WireResult<BatchLabel<'a>> {
        if let Some((name, value)) = string_key_value(bytes) {
            let name = checked.and_then(|checked| checked.get(name));
            let value = checked.and_then(|checked| checked.get(value));
            if let (Some(name), Some(value)) = (name, value) {
                return Ok(BatchLabel { name, value: BatchText::Borrowed(value) });
            }
        }
        let mut name = "";
        let mut value: Option<&'a [u8]> = None;
        let mut fields = Fields::new(bytes);
        while let Some(key) = fields.next() {
            let (tag, wire_type) = key?;
            match tag {
                1 => name = fields.checked_string(wire_type, "KeyValue.key", checked)?,
                2 => {
                    if value.replace(fields.len_delimited(wire_type, "KeyValue")?).is_some() {
                        return Err(WireError::NonCanonical { message: "KeyValue.value" });
                    }
                }
                3 => {
                    fields.varint(wire_type)?;
                }
                _ => fields.skip(wire_type, tag)?,
            }
        }
        let value = match value {
            Some(value) => self.any_value(value, checked)?,
            None => BatchText::Borrowed(""),
        };
        Ok(BatchLabel { name, value })
    }

    #[inline]
    fn any_value(&mut self, bytes: &'a [u8], checked: Option<CheckedText<'a>>) -> WireResult<BatchText<'a>> {
        enum Scalar<'a> {
            None,
            Text(&'a str),
            Bool(bool),
            Int(i64),
            Double(f64),
            Bytes(&'a [u8]),
        }
        let mut scalar = Scalar::None;
        let mut fields = Fields::new(bytes);
        while let Some(key) = fields.next() {
            let (tag, wire_type) = key?;
            match tag {
                1 => scalar = Scalar::Text(fields.checked_string(wire_type, "AnyValue.string_value", checked)?),
                2 => scalar = Scalar::Bool(fields.varint(wire_type)? != 0),
                3 => scalar = Scalar::Int(fields.varint(wire_type)? as i64),
                4 => scalar = Scalar::Double(f64::from_bits(fields.fixed64(wire_type, "AnyValue")?)),
                5 | 6 => {
                    // Arrays and key-value lists (rare): prost's own decoding and merge rules.
                    let value = AnyValue::decode(bytes)?;
                    let text = any_value_to_label(&value);
                    return Ok(self.batch.push_text(&text));
                }
                7 => scalar = Scalar::Bytes(fields.len_delimited(wire_type, "AnyValue")?),
                8 => {
                    fields.varint(wire_type)?;
                    scalar = Scalar::None;
                }
                _ => fields.skip(wire_type, tag)?,
            }
        }
        let format = &mut self.scratch.format;
        format.clear();
        match scalar {
            Scalar::None => return Ok(BatchText::Borrowed("")),
            Scalar::Text(text) => return Ok(BatchText::Borrowed(text)),
            Scalar::Bool(flag) => format.push_str(if flag { "true" } else { "false" }),
            Scalar::Int(number) => {
                let _ = write!(format, "{number}");
            }
            Scalar::Double(number) => {
                let _ = write!(format, "{number}");
            }
            Scalar::Bytes(bytes) => base64::engine::general_purpose::STANDARD.encode_string(bytes, format),
        }
        let text = std::mem::take(&mut self.scratch.format);
        let stored = self.batch.push_text(&text);
        self.scratch.format = text;
        Ok(stored)
    }

    fn metric(
        &mut self,
        bytes: &'a [u8],
        resource_labels: &[BatchLabel<'a>],
        resource_rejection: Option<RejectReason>,
    ) -> WireResult<()> {
        let mut name = "";
        let mut data: Option<MetricData<'a>> = None;
        let mut fields = Fields::new(bytes);
        while let Some(key) = fields.next() {
            let (tag, wire_type) = key?;
            match tag {
                1 => name = fields.string(wire_type, "Metric.name")?,
                2 => {
                    fields.string(wire_type, "Metric.description")?;
                }
                3 => {
                    fields.string(wire_type, "Metric.unit")?;
                }
                5 | 7 | 9 | 10 | 11 => {
                    let field = fields.len_delimited(wire_type, "Metric")?;
                    if data.replace(MetricData { tag, bytes: field }).is_some() {
                        return Err(WireError::NonCanonical { message: "Metric.data" });
                    }
                }
                12 => validate_with_prost::<KeyValue>(fields.len_delimited(wire_type, "Metric")?)?,
                _ => fields.skip(wire_type, tag)?,
            }
        }
        // Normalizing replaces single bytes, so the length is the original's.
        let name_rejection = (name.is_empty() || name.len() > self.limits.metric_name_bytes_max)
            .then_some(RejectReason::InvalidMetricName);
        let Some(data) = data else { return Ok(()) };
        let mut converter = MetricConverter {
            decoder: self,
            resource_labels,
            // The resource's rejection was counted per point by convert in the same way: both
            // reject every sample the metric would produce.
            rejection: resource_rejection.or(name_rejection),
            name,
            metric_idx: [u32::MAX; 4],
        };
        converter.data(data)
    }
}

/// Converts one metric's data points; holds the metric's name slots (plain or with the
/// `_count`, `_sum`, `_bucket` suffixes).
struct MetricConverter<'a, 'd, 'b> {
    decoder: &'d mut Decoder<'a, 'b>,
    resource_labels: &'d [BatchLabel<'a>],
    /// When set, every sample of the metric is rejected for this reason (the points are still
    /// read, so that malformed bytes are still an error).
    rejection: Option<RejectReason>,
    name: &'a str,
    metric_idx: [u32; 4],
}

/// Which name a sample belongs to.
#[derive(Clone, Copy)]
enum NameSlot {
    Plain,
    Count,
    Sum,
    Bucket,
}

/// What the point-level checks decided for a point's labels.
enum PointLabels {
    Valid,
    Rejected(RejectReason),
}

impl<'a> MetricConverter<'a, '_, '_> {
    fn metric_idx(&mut self, slot: NameSlot) -> u32 {
        let (cache_idx, suffix) = match slot {
            NameSlot::Plain => (3, ""),
            NameSlot::Count => (0, "_count"),
            NameSlot::Sum => (1, "_sum"),
            NameSlot::Bucket => (2, "_bucket"),
        };
        if self.metric_idx[cache_idx] == u32::MAX {
            let batch = &mut self.decoder.batch;
            let text = if suffix.is_empty() && !needs_normalization(self.name) {
                BatchText::Borrowed(self.name)
            } else {
                let mut normalized = crate::store::normalize_metric_name(self.name);
                normalized.push_str(suffix);
                batch.push_text(&normalized)
            };
            self.metric_idx[cache_idx] = batch.push_metric_name(text);
        }
        self.metric_idx[cache_idx]
    }

    fn data(&mut self, data: MetricData<'a>) -> WireResult<()> {
        let mut data_points = std::mem::take(&mut self.decoder.scratch.data_point_slices);
        data_points.clear();
        // Room for the points up front (a point takes well over 64 bytes with its labels).
        data_points.reserve(data.bytes.len() / 64);
        let mut temporality: i32 = 0;
        let mut is_monotonic = false;
        let mut fields = Fields::new(data.bytes);
        while let Some(key) = fields.next() {
            let (tag, wire_type) = key?;
            match (data.tag, tag) {
                (_, 1) => data_points.push(fields.len_delimited(wire_type, "data point")?),
                (7 | 9 | 10, 2) => temporality = fields.varint(wire_type)? as i32,
                (7, 3) => is_monotonic = fields.varint(wire_type)? != 0,
                _ => fields.skip(wire_type, tag)?,
            }
        }
        let delta = temporality == AggregationTemporality::Delta as i32;
        let counter_kind = if delta { SeriesKind::Delta } else { SeriesKind::CumulativeCounter };
        let converted = match data.tag {
            5 => data_points.iter().try_for_each(|&point| self.number_point(point, SeriesKind::Gauge)),
            7 => {
                let kind = if delta {
                    SeriesKind::Delta
                } else if is_monotonic {
                    SeriesKind::CumulativeCounter
                } else {
                    SeriesKind::Gauge
                };
                data_points.iter().try_for_each(|&point| self.number_point(point, kind))
            }
            9 => data_points.iter().try_for_each(|&point| self.histogram_point(point, counter_kind)),
            10 => data_points.iter().try_for_each(|&point| self.exponential_histogram_point(point, counter_kind)),
            _ => data_points.iter().try_for_each(|&point| self.summary_point(point)),
        };
        self.decoder.scratch.data_point_slices = data_points;
        converted
    }

    /// Decodes the point's attributes into `scratch.point_labels` (resource labels first, then
    /// the point's, in wire order) and their canonical order into `scratch.canonical_positions`
    /// canonical order) and applies the label limits.
    fn point_labels(&mut self, point: &'a [u8]) -> WireResult<PointLabels> {
        let decoder = &mut *self.decoder;
        let attributes = std::mem::take(&mut decoder.scratch.attribute_slices);
        let mut labels = std::mem::take(&mut decoder.scratch.point_labels);
        labels.clear();
        labels.extend_from_slice(self.resource_labels);
        let checked = decoder.attribute_labels(point, &attributes, &mut labels);
        decoder.scratch.attribute_slices = attributes;
        let outcome = match checked? {
            Err(reason) => PointLabels::Rejected(reason),
            Ok(()) => {
                // Points of a metric almost always carry the same names in the same order: reuse
                // the previous point's canonical order when the names match, sort otherwise.
                let scratch = &mut decoder.scratch;
                let same_names = scratch.order_names.len() == labels.len()
                    && scratch.order_names.iter().zip(labels.iter()).all(|(&name, label)| name == label.name);
                if !same_names {
                    canonical_positions(&labels, &mut scratch.label_order, &mut scratch.canonical_positions);
                    scratch.order_names.clear();
                    scratch.order_names.extend(labels.iter().map(|label| label.name));
                }
                PointLabels::Valid
            }
        };
        decoder.scratch.point_labels = labels;
        Ok(outcome)
    }

    /// Emits one sample (or counts its rejection), checking in convert's order: value missing,
    /// NaN, timestamp too far ahead, labels; then the label count with `extra_label` added.
    #[allow(clippy::too_many_arguments)]
    fn sample(
        &mut self,
        slot: NameSlot,
        labels: &PointLabels,
        extra_label: Option<BatchLabel<'a>>,
        time_unix_nano: u64,
        kind: SeriesKind,
        value: Option<f64>,
    ) {
        if let Some(reason) = self.rejection {
            self.decoder.rejections.add(reason, 1);
            return;
        }
        let now_ms = self.decoder.now_ms;
        let reason = match value {
            None => Some(RejectReason::MissingValue),
            Some(value) if value.is_nan() => Some(RejectReason::NanValue),
            Some(_) => {
                let timestamp_ms = timestamp_ms(time_unix_nano, now_ms);
                if timestamp_ms > now_ms.saturating_add(self.decoder.limits.future_skew_ms_max) {
                    Some(RejectReason::FutureTimestamp)
                } else if let PointLabels::Rejected(reason) = labels {
                    Some(*reason)
                } else {
                    None
                }
            }
        };
        if let Some(reason) = reason {
            self.decoder.rejections.add(reason, 1);
            return;
        }
        let metric_idx = self.metric_idx(slot);
        let decoder = &mut *self.decoder;
        let timestamp_ms = timestamp_ms(time_unix_nano, now_ms);
        let value = value.expect("checked above");
        let Some(extra) = extra_label else {
            // The common case: the point's own labels, no copy.
            let scratch = &decoder.scratch;
            if scratch.canonical_positions.len() > decoder.limits.labels_per_series_max {
                decoder.rejections.add(RejectReason::TooManyLabels, 1);
            } else {
                let (labels, order) = (&scratch.point_labels, &scratch.canonical_positions);
                decoder.batch.push_sample_in_order(metric_idx, labels, order, kind, timestamp_ms, value);
            }
            return;
        };
        let mut sample_labels = std::mem::take(&mut decoder.scratch.sample_labels);
        sample_labels.clear();
        let point_labels = &decoder.scratch.point_labels;
        sample_labels.extend(decoder.scratch.canonical_positions.iter().map(|&idx| point_labels[idx as usize]));
        {
            match sample_labels.binary_search_by(|label| label.name.cmp(extra.name)) {
                Ok(existing_idx) => sample_labels[existing_idx] = extra,
                Err(insert_idx) => sample_labels.insert(insert_idx, extra),
            }
        }
        if sample_labels.len() > decoder.limits.labels_per_series_max {
            decoder.rejections.add(RejectReason::TooManyLabels, 1);
        } else {
            decoder.batch.push_sample(metric_idx, &sample_labels, kind, timestamp_ms, value);
        }
        decoder.scratch.sample_labels = sample_labels;
    }

    fn number_point(&mut self, bytes: &'a [u8], kind: SeriesKind) -> WireResult<()> {
        let (mut time_unix_nano, mut flags, mut value) = (0u64, 0u32, None);
        self.decoder.scratch.attribute_slices.clear();
        let mut fields = Fields::new(bytes);
        while let Some(key) = fields.next() {
            let (tag, wire_type) = key?;
            match tag {
                7 => {
                    let attribute = fields.len_delimited(wire_type, "NumberDataPoint")?;
                    self.decoder.scratch.attribute_slices.push(attribute);
                }
                2 => {
                    fields.fixed64(wire_type, "NumberDataPoint")?;
                }
                3 => time_unix_nano = fields.fixed64(wire_type, "NumberDataPoint")?,
                4 => value = Some(f64::from_bits(fields.fixed64(wire_type, "NumberDataPoint")?)),
                6 => value = Some(fields.fixed64(wire_type, "NumberDataPoint")? as i64 as f64),
                5 => validate_with_prost::<Exemplar>(fields.len_delimited(wire_type, "NumberDataPoint")?)?,
                8 => flags = fields.varint(wire_type)? as u32,
                _ => fields.skip(wire_type, tag)?,
            }
        }
        let labels = self.point_labels(bytes)?;
        // A rejected metric counts every point, flagged or not, as convert does.
        if flags & FLAG_NO_RECORDED_VALUE != 0 && self.rejection.is_none() {
            return Ok(());
        }
        self.sample(NameSlot::Plain, &labels, None, time_unix_nano, kind, value);
        Ok(())
    }

    fn histogram_point(&mut self, bytes: &'a [u8], kind: SeriesKind) -> WireResult<()> {
        let (mut time_unix_nano, mut flags, mut count, mut sum) = (0u64, 0u32, 0u64, None);
        self.decoder.scratch.attribute_slices.clear();
        let mut bucket_counts = std::mem::take(&mut self.decoder.scratch.bucket_counts);
        let mut explicit_bounds = std::mem::take(&mut self.decoder.scratch.explicit_bounds);
        bucket_counts.clear();
        explicit_bounds.clear();
        let mut fields = Fields::new(bytes);
        let parsed: WireResult<()> = (|| {
            while let Some(key) = fields.next() {
                let (tag, wire_type) = key?;
                match tag {
                    9 => {
                        let attribute = fields.len_delimited(wire_type, "HistogramDataPoint")?;
                        self.decoder.scratch.attribute_slices.push(attribute);
                    }
                    2 | 11 | 12 => {
                        fields.fixed64(wire_type, "HistogramDataPoint")?;
                    }
                    3 => time_unix_nano = fields.fixed64(wire_type, "HistogramDataPoint")?,
                    4 => count = fields.fixed64(wire_type, "HistogramDataPoint")?,
                    5 => sum = Some(f64::from_bits(fields.fixed64(wire_type, "HistogramDataPoint")?)),
                    6 => fields.repeated_fixed64(wire_type, "HistogramDataPoint", |word| bucket_counts.push(word))?,
                    7 => fields.repeated_fixed64(wire_type, "HistogramDataPoint", |word| {
                        explicit_bounds.push(f64::from_bits(word))
                    })?,
                    8 => validate_with_prost::<Exemplar>(fields.len_delimited(wire_type, "HistogramDataPoint")?)?,
                    10 => flags = fields.varint(wire_type)? as u32,
                    _ => fields.skip(wire_type, tag)?,
                }
            }
            Ok(())
        })();
        let result = parsed.and_then(|()| {
            let labels = self.point_labels(bytes)?;
            if let Some(reason) = self.rejection {
                // convert counts 2 + buckets for a rejected metric, whatever the flags.
                self.decoder.rejections.add(reason, 2 + bucket_counts.len() as u64);
                return Ok(());
            }
            // Flagged points emit nothing, but a malformed bucket layout is still counted (as convert does).
            let flagged = flags & FLAG_NO_RECORDED_VALUE != 0;
            if !flagged {
                self.sample(NameSlot::Count, &labels, None, time_unix_nano, kind, Some(count as f64));
                if let Some(sum) = sum {
                    self.sample(NameSlot::Sum, &labels, None, time_unix_nano, kind, Some(sum));
                }
            }
            if bucket_counts.is_empty() {
                return Ok(());
            }
            if bucket_counts.len() != explicit_bounds.len() + 1 {
                self.decoder.rejections.add(RejectReason::InvalidHistogram, bucket_counts.len() as u64);
                return Ok(());
            }
            if flagged {
                return Ok(());
            }
            let mut cumulative_count = 0u64;
            for (bucket_idx, &bucket_count) in bucket_counts.iter().enumerate() {
                cumulative_count = cumulative_count.saturating_add(bucket_count);
                let upper_bound = explicit_bounds.get(bucket_idx).copied().unwrap_or(f64::INFINITY);
                let le = self.bound_label("le", upper_bound);
                self.sample(NameSlot::Bucket, &labels, Some(le), time_unix_nano, kind, Some(cumulative_count as f64));
            }
            Ok(())
        });
        self.decoder.scratch.bucket_counts = bucket_counts;
        self.decoder.scratch.explicit_bounds = explicit_bounds;
        result
    }

    fn exponential_histogram_point(&mut self, bytes: &'a [u8], kind: SeriesKind) -> WireResult<()> {
        let (mut time_unix_nano, mut flags, mut count, mut sum) = (0u64, 0u32, 0u64, None);
        self.decoder.scratch.attribute_slices.clear();
        let mut fields = Fields::new(bytes);
        while let Some(key) = fields.next() {
            let (tag, wire_type) = key?;
            match tag {
                1 => {
                    let attribute = fields.len_delimited(wire_type, "ExponentialHistogramDataPoint")?;
                    self.decoder.scratch.attribute_slices.push(attribute);
                }
                2 | 7 | 12 | 13 | 14 => {
                    fields.fixed64(wire_type, "ExponentialHistogramDataPoint")?;
                }
                3 => time_unix_nano = fields.fixed64(wire_type, "ExponentialHistogramDataPoint")?,
                4 => count = fields.fixed64(wire_type, "ExponentialHistogramDataPoint")?,
                5 => sum = Some(f64::from_bits(fields.fixed64(wire_type, "ExponentialHistogramDataPoint")?)),
                6 => {
                    fields.varint(wire_type)?;
                }
                8 | 9 => {
                    validate_with_prost::<Buckets>(fields.len_delimited(wire_type, "ExponentialHistogramDataPoint")?)?
                }
                10 => flags = fields.varint(wire_type)? as u32,
                11 => {
                    validate_with_prost::<Exemplar>(fields.len_delimited(wire_type, "ExponentialHistogramDataPoint")?)?
                }
                _ => fields.skip(wire_type, tag)?,
            }
        }
        let labels = self.point_labels(bytes)?;
        if let Some(reason) = self.rejection {
            self.decoder.rejections.add(reason, 2);
            return Ok(());
        }
        if flags & FLAG_NO_RECORDED_VALUE != 0 {
            return Ok(());
        }
        self.sample(NameSlot::Count, &labels, None, time_unix_nano, kind, Some(count as f64));
        if let Some(sum) = sum {
            self.sample(NameSlot::Sum, &labels, None, time_unix_nano, kind, Some(sum));
        }
        Ok(())
    }

    fn summary_point(&mut self, bytes: &'a [u8]) -> WireResult<()> {
        let (mut time_unix_nano, mut flags, mut count, mut sum) = (0u64, 0u32, 0u64, 0.0f64);
        self.decoder.scratch.attribute_slices.clear();
        let mut quantiles = std::mem::take(&mut self.decoder.scratch.quantiles);
        quantiles.clear();
        let mut fields = Fields::new(bytes);
        let parsed: WireResult<()> = (|| {
            while let Some(key) = fields.next() {
                let (tag, wire_type) = key?;
                match tag {
                    7 => {
                        let attribute = fields.len_delimited(wire_type, "SummaryDataPoint")?;
                        self.decoder.scratch.attribute_slices.push(attribute);
                    }
                    2 => {
                        fields.fixed64(wire_type, "SummaryDataPoint")?;
                    }
                    3 => time_unix_nano = fields.fixed64(wire_type, "SummaryDataPoint")?,
                    4 => count = fields.fixed64(wire_type, "SummaryDataPoint")?,
                    5 => sum = f64::from_bits(fields.fixed64(wire_type, "SummaryDataPoint")?),
                    6 => {
                        let quantile_bytes = fields.len_delimited(wire_type, "SummaryDataPoint")?;
                        let (mut quantile, mut value) = (0.0, 0.0);
                        let mut quantile_fields = Fields::new(quantile_bytes);
                        while let Some(key) = quantile_fields.next() {
                            let (tag, wire_type) = key?;
                            match tag {
                                1 => quantile = f64::from_bits(quantile_fields.fixed64(wire_type, "ValueAtQuantile")?),
                                2 => value = f64::from_bits(quantile_fields.fixed64(wire_type, "ValueAtQuantile")?),
                                _ => quantile_fields.skip(wire_type, tag)?,
                            }
                        }
                        quantiles.push((quantile, value));
                    }
                    8 => flags = fields.varint(wire_type)? as u32,
                    _ => fields.skip(wire_type, tag)?,
                }
            }
            Ok(())
        })();
        let result = parsed.and_then(|()| {
            let labels = self.point_labels(bytes)?;
            if let Some(reason) = self.rejection {
                self.decoder.rejections.add(reason, 2 + quantiles.len() as u64);
                return Ok(());
            }
            if flags & FLAG_NO_RECORDED_VALUE != 0 {
                return Ok(());
            }
            let kind = SeriesKind::CumulativeCounter;
            self.sample(NameSlot::Count, &labels, None, time_unix_nano, kind, Some(count as f64));
            self.sample(NameSlot::Sum, &labels, None, time_unix_nano, kind, Some(sum));
            for &(quantile, value) in &quantiles {
                let label = self.bound_label("quantile", quantile);
                self.sample(NameSlot::Plain, &labels, Some(label), time_unix_nano, SeriesKind::Gauge, Some(value));
            }
            Ok(())
        });
        self.decoder.scratch.quantiles = quantiles;
        result
    }

    /// An `le` or `quantile` label, formatted as Prometheus writes bounds.
    fn bound_label(&mut self, name: &'static str, bound: f64) -> BatchLabel<'a> {
        let value = if bound == f64::INFINITY {
            BatchText::Borrowed("+Inf")
        } else if bound == f64::NEG_INFINITY {
            BatchText::Borrowed("-Inf")
        } else {
            let format = &mut self.decoder.scratch.format;
            format.clear();
            let _ = write!(format, "{bound}");
            let text = std::mem::take(format);
            let stored = self.decoder.batch.push_text(&text);
            self.decoder.scratch.format = text;
            stored
        };
        BatchLabel { name, value }
    }
}

/// The first eight bytes of a name as a big-endian integer (zero-padded): comparing these
/// orders names as byte-wise comparison does, except for ties, which need the full names.
#[inline]
/// Fills `positions` with the indices of `labels` in canonical order: sorted by name, and for a
/// name given more than once, the last one (a point's attribute overrides the resource's).
fn canonical_positions(labels: &[BatchLabel<'_>], order: &mut Vec<(u64, u32)>, positions: &mut Vec<u32>) {
    // Sort small (name prefix, position) keys rather than the labels themselves; the position
    // breaks ties, so equal names stay in precedence order.
    order.clear();
    order.extend(labels.iter().enumerate().map(|(idx, label)| (name_prefix(label.name), idx as u32)));
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| labels[a.1 as usize].name.cmp(labels[b.1 as usize].name)).then_with(|| a.1.cmp(&b.1))
    });
    positions.clear();
    for &(_, idx) in order.iter() {
        match positions.last_mut() {
            Some(last) if labels[*last as usize].name == labels[idx as usize].name => *last = idx,
            _ => positions.push(idx),
        }
    }
}

fn name_prefix(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let mut word = [0u8; 8];
    let n = bytes.len().min(8);
    word[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(word)
}

fn timestamp_ms(time_unix_nano: u64, now_ms: i64) -> i64 {
    match time_unix_nano {
        0 => now_ms,
        nanos => i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests;
