//! The OTLP-to-sample policy: every rule that decides which samples an OTLP request becomes.
//!
//! Both decoders ([`super::wire`], zero-copy over the protobuf bytes, and [`super::prost_walk`],
//! over opentelemetry-proto's message types for OTLP JSON and non-canonical protobuf) only walk
//! their input and tell a [`SampleWriter`] what they found: a resource and its attributes, a
//! metric's name and data type, each data point's attributes and fields. The writer owns the
//! rules:
//! - names: a metric name is normalized (`.` and `/` become `_`) and must be non-empty and at
//!   most `metric_name_bytes_max`; histograms and summaries add `_count`, `_sum`, `_bucket`;
//! - kinds: gauges are gauges; sums are delta, cumulative counters (monotonic) or gauges;
//!   histogram and summary counts and sums are counters of the metric's temporality;
//! - expansion: histogram buckets become cumulative `_bucket` series with an `le` label,
//!   summaries one series per quantile with a `quantile` label, bounds written as Prometheus
//!   writes them (`0.5`, `1`, `+Inf`);
//! - labels: resource attributes, then point attributes (the point's win on a clash), values of
//!   every attribute type as text, in canonical order (sorted by name, unique);
//! - flags: a point flagged "no recorded value" yields nothing;
//! - per-point limits and their reasons: missing value, NaN, a timestamp too far ahead, label
//!   count, name and value sizes, and the bytes of a series' identity (metric name plus label
//!   names and values, `--max-series-key-bytes`). A resource or metric that fails a check
//!   rejects every sample its points would have produced.
//!
//! Samples go straight into a [`DecodedBatch`], borrowing names and strings from the input
//! (`'a`); only text the writer has to produce (formatted numbers, base64 bytes, normalized
//! names, bounds) goes to the batch's arena. A resource's labels go into the batch once, as a
//! label set, and each point's own attributes once, as a set on top of it, whatever the number
//! of points and samples: the cost of a request follows its bytes, not points × resource labels
//! (see `store::batch`). The checks of a sample's labels (count, key bytes) are sums kept per
//! set, so they cost the same for 1 or 63 resource labels.

use std::fmt::Write as _;

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;

use super::{RejectReason, Rejections};
use crate::store::{
    needs_normalization, normalize_metric_name, BatchLabel, BatchText, DecodedBatch, ExtraPosition, LabelSetId,
    SeriesKind, SetPlan, SAMPLE_LABELS_MAX,
};

/// The OTLP data point flag bit meaning "no recorded value" (a staleness marker).
pub const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// A resource with at most this many labels has them copied into each of its points' label sets
/// (a few labels cost less copied than interleaved when read); a larger one is referenced.
const FLAT_RESOURCE_LABELS_MAX: usize = 4;

/// Limits applied to every point, from [`crate::config::Config`].
#[derive(Debug, Clone, Copy)]
pub struct ConvertLimits {
    pub labels_per_series_max: usize,
    pub label_name_bytes_max: usize,
    pub label_value_bytes_max: usize,
    pub metric_name_bytes_max: usize,
    pub future_skew_ms_max: i64,
    /// Metric name plus label names and values of one series, in bytes.
    pub series_key_bytes_max: usize,
}

impl ConvertLimits {
    pub fn from_config(config: &crate::config::Config) -> Self {
        ConvertLimits {
            labels_per_series_max: config.labels_per_series_max,
            label_name_bytes_max: config.label_name_bytes_max,
            label_value_bytes_max: config.label_value_bytes_max,
            metric_name_bytes_max: config.metric_name_bytes_max,
            future_skew_ms_max: config.future_skew_ms_max,
            series_key_bytes_max: config.series_key_bytes_max,
        }
    }
}

impl Default for ConvertLimits {
    /// The limits of the default configuration.
    fn default() -> Self {
        ConvertLimits::from_config(&crate::config::Config::default())
    }
}

/// An attribute value as a decoder found it, before the policy turns it into label text.
/// `'a` is the input's lifetime (text that can be borrowed); `'v` may be shorter (values the
/// writer copies into the arena at once).
#[derive(Debug, Clone, Copy)]
pub enum AttributeValue<'a, 'v> {
    /// No value, or a value type with no text (a string-table index of the profiling signal).
    Empty,
    Text(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'v [u8]),
    /// A value decoded into opentelemetry-proto's type (arrays and key-value lists, which
    /// become compact JSON, or any value the zero-copy decoder left to prost), always copied.
    Decoded(&'v AnyValue),
}

impl<'a> AttributeValue<'a, 'a> {
    /// The value of an opentelemetry-proto `AnyValue` (absent: [`AttributeValue::Empty`]).
    pub fn of(value: Option<&'a AnyValue>) -> Self {
        let Some(any) = value else { return AttributeValue::Empty };
        match &any.value {
            Some(any_value::Value::StringValue(text)) => AttributeValue::Text(text),
            Some(any_value::Value::BoolValue(flag)) => AttributeValue::Bool(*flag),
            Some(any_value::Value::IntValue(number)) => AttributeValue::Int(*number),
            Some(any_value::Value::DoubleValue(number)) => AttributeValue::Double(*number),
            Some(any_value::Value::BytesValue(bytes)) => AttributeValue::Bytes(bytes),
            Some(any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_)) => AttributeValue::Decoded(any),
            Some(any_value::Value::StringValueStrindex(_)) | None => AttributeValue::Empty,
        }
    }
}

/// A metric's data type, with the fields that decide the kinds of its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricData {
    Gauge,
    Sum { temporality: i32, is_monotonic: bool },
    Histogram { temporality: i32 },
    ExponentialHistogram { temporality: i32 },
    Summary,
}

impl MetricData {
    /// The kind of the metric's own series (numbers), or of its `_count`, `_sum` and `_bucket`
    /// series (histograms and summaries). A summary's quantile series are gauges.
    fn kind(self) -> SeriesKind {
        let delta = |temporality: i32| temporality == AggregationTemporality::Delta as i32;
        match self {
            MetricData::Gauge => SeriesKind::Gauge,
            MetricData::Sum { temporality, .. } if delta(temporality) => SeriesKind::Delta,
            MetricData::Sum { is_monotonic: true, .. } => SeriesKind::CumulativeCounter,
            MetricData::Sum { .. } => SeriesKind::Gauge,
            MetricData::Histogram { temporality } | MetricData::ExponentialHistogram { temporality }
                if delta(temporality) =>
            {
                SeriesKind::Delta
            }
            MetricData::Histogram { .. } | MetricData::ExponentialHistogram { .. } | MetricData::Summary => {
                SeriesKind::CumulativeCounter
            }
        }
    }
}

/// Which name of a metric a sample belongs to.
#[derive(Debug, Clone, Copy)]
enum NameSlot {
    Plain,
    Count,
    Sum,
    Bucket,
}

impl NameSlot {
    fn suffix(self) -> &'static str {
        match self {
            NameSlot::Plain => "",
            NameSlot::Count => "_count",
            NameSlot::Sum => "_sum",
            NameSlot::Bucket => "_bucket",
        }
    }
}

/// The label checks of one attribute list, as its attributes arrive.
#[derive(Debug, Default, Clone, Copy)]
struct AttributeCheck {
    count: usize,
    first_invalid: Option<RejectReason>,
}

impl ConvertLimits {
    /// The most labels of one series: the configured limit, and at most what a batch can hold.
    fn labels_max(&self) -> usize {
        self.labels_per_series_max.min(SAMPLE_LABELS_MAX)
    }

    /// The verdict on a sample's labels: their count, then their bytes with the metric name.
    fn sample_labels_verdict(&self, n_labels: usize, key_string_bytes: usize) -> Option<RejectReason> {
        if n_labels > self.labels_max() {
            Some(RejectReason::TooManyLabels)
        } else if key_string_bytes > self.series_key_bytes_max {
            Some(RejectReason::SeriesKeyTooLarge)
        } else {
            None
        }
    }
}

impl AttributeCheck {
    /// Too many attributes outweighs a bad one; otherwise the first bad one decides.
    fn verdict(self, limits: &ConvertLimits) -> Option<RejectReason> {
        if self.count > limits.labels_max() {
            Some(RejectReason::TooManyLabels)
        } else {
            self.first_invalid
        }
    }
}

/// The metric whose points are being written.
#[derive(Debug)]
struct CurrentMetric<'a> {
    name: &'a str,
    kind: SeriesKind,
    /// When set, every sample of the metric is rejected for this reason.
    rejection: Option<RejectReason>,
    /// Batch metric-name indices by [`NameSlot`], registered on first use.
    name_idx: [u32; 4],
}

/// Reusable buffers, so a request allocates a handful of times whatever its size.
#[derive(Debug, Default)]
struct Scratch<'a> {
    /// Sort keys (name prefix, position) for [`canonical_positions`].
    label_order: Vec<(u64, u32)>,
    /// The point label names (in input order) that `canonical_positions` and `plan` were
    /// computed for, under the current resource.
    order_names: Vec<&'a str>,
    canonical_positions: Vec<u32>,
    /// How those labels interleave with the resource's, once computed.
    plan: Option<SetPlan>,
    resource_positions: Vec<u32>,
    format: String,
}

/// Applies the policy to what a decoder reports and writes the resulting samples and
/// rejections. Call order: [`begin_resource`](Self::begin_resource), its attributes,
/// [`end_resource`](Self::end_resource); then per metric [`begin_metric`](Self::begin_metric)
/// and per point [`begin_point`](Self::begin_point), its attributes and one `*_point` call.
#[derive(Debug)]
pub struct SampleWriter<'a, 'b> {
    limits: &'b ConvertLimits,
    now_ms: i64,
    batch: &'b mut DecodedBatch<'a>,
    rejections: &'b mut Rejections,
    resource_labels: Vec<BatchLabel<'a>>,
    resource_check: AttributeCheck,
    resource_rejection: Option<RejectReason>,
    /// The resource's labels in the batch (its set), once decided.
    resource_set: Option<LabelSetId>,
    /// The [`crate::store::label_hash`] of each of `resource_labels` in its set (0 for a name
    /// given again later, which the set does not hold).
    resource_hashes: Vec<u64>,
    /// Whether points copy the resource's labels (few) rather than build on its set.
    flat_resource: bool,
    metric: CurrentMetric<'a>,
    /// The resource's labels when they are copied (`flat_resource`), then the point's valid
    /// attributes, in input order.
    point_labels: Vec<BatchLabel<'a>>,
    /// Where the point's own attributes start in `point_labels`.
    point_own_start: usize,
    point_check: AttributeCheck,
    /// The point's labels in the batch, pushed with its first sample.
    point_set: Option<LabelSetId>,
    /// Where the point's extra label (`le`, `quantile`) goes in `point_set`.
    extra_position: Option<(&'a str, ExtraPosition)>,
    scratch: Scratch<'a>,
}

impl<'a, 'b> SampleWriter<'a, 'b> {
    pub fn new(
        limits: &'b ConvertLimits,
        now_ms: i64,
        batch: &'b mut DecodedBatch<'a>,
        rejections: &'b mut Rejections,
    ) -> Self {
        SampleWriter {
            limits,
            now_ms,
            batch,
            rejections,
            resource_labels: Vec::new(),
            resource_check: AttributeCheck::default(),
            resource_rejection: None,
            resource_set: None,
            resource_hashes: Vec::new(),
            flat_resource: false,
            metric: CurrentMetric { name: "", kind: SeriesKind::Gauge, rejection: None, name_idx: [u32::MAX; 4] },
            point_labels: Vec::new(),
            point_own_start: 0,
            point_check: AttributeCheck::default(),
            point_set: None,
            extra_position: None,
            scratch: Scratch::default(),
        }
    }

    pub fn begin_resource(&mut self) {
        self.resource_labels.clear();
        self.resource_check = AttributeCheck::default();
    }

    pub fn resource_attribute(&mut self, name: &'a str, value: AttributeValue<'a, '_>) {
        let label = self.label(name, value);
        check_label(self.limits, self.batch, label, &mut self.resource_check, &mut self.resource_labels);
    }

    /// Decides the resource: if its labels fail a check, every sample of its metrics is rejected.
    /// Otherwise its labels go into the batch once, as the set its points' labels build on.
    pub fn end_resource(&mut self) {
        self.resource_rejection = self.resource_check.verdict(self.limits);
        self.resource_set = None;
        // The cached point label order and plan were computed against the previous resource.
        self.scratch.order_names.clear();
        self.scratch.canonical_positions.clear();
        self.scratch.plan = None;
        if self.resource_rejection.is_some() {
            return;
        }
        let positions = &mut self.scratch.resource_positions;
        canonical_positions(&self.resource_labels, &mut self.scratch.label_order, positions);
        let plan = SetPlan::own_only(positions.len());
        let set = self.batch.push_label_set(None, &self.resource_labels, positions, plan, &[]);
        // The metric name only adds to these bytes: no series of this resource can fit.
        if self.batch.label_set_string_bytes(set) > self.limits.series_key_bytes_max {
            self.resource_rejection = Some(RejectReason::SeriesKeyTooLarge);
            return;
        }
        self.resource_hashes.clear();
        self.resource_hashes.resize(self.resource_labels.len(), 0);
        for (&input_idx, &hash) in positions.iter().zip(self.batch.label_set_own_hashes(set)) {
            self.resource_hashes[input_idx as usize] = hash;
        }
        self.flat_resource = positions.len() <= FLAT_RESOURCE_LABELS_MAX;
        self.resource_set = Some(set);
    }

    pub fn begin_metric(&mut self, name: &'a str, data: MetricData) {
        // Normalizing replaces single bytes, so the length is the original's.
        let name_rejection = (name.is_empty() || name.len() > self.limits.metric_name_bytes_max)
            .then_some(RejectReason::InvalidMetricName);
        self.metric = CurrentMetric {
            name,
            kind: data.kind(),
            rejection: self.resource_rejection.or(name_rejection),
            name_idx: [u32::MAX; 4],
        };
    }

    pub fn begin_point(&mut self) {
        self.point_labels.clear();
        self.point_check = AttributeCheck::default();
        self.point_set = None;
        self.extra_position = None;
        if self.flat_resource && self.metric.rejection.is_none() {
            self.point_labels.extend_from_slice(&self.resource_labels);
        }
        self.point_own_start = self.point_labels.len();
    }

    #[inline(always)]
    pub fn point_attribute(&mut self, name: &'a str, value: AttributeValue<'a, '_>) {
        if self.metric.rejection.is_some() {
            // Every sample is rejected anyway; the label text is not needed.
            return;
        }
        let label = self.label(name, value);
        check_label(self.limits, self.batch, label, &mut self.point_check, &mut self.point_labels);
    }

    /// A gauge or sum point. `value` is `None` when the point has neither `as_double` nor `as_int`.
    pub fn number_point(&mut self, time_unix_nano: u64, flags: u32, value: Option<f64>) {
        let Some(point_rejection) = self.point_verdict(flags, 1) else { return };
        let kind = self.metric.kind;
        self.sample(NameSlot::Plain, point_rejection, None, time_unix_nano, kind, value);
    }

    /// A histogram point: `_count`, `_sum` (when present) and one cumulative `_bucket` sample per
    /// bucket. A bucket layout that does not have `explicit_bounds + 1` counts rejects the buckets,
    /// flagged point or not.
    #[allow(clippy::too_many_arguments)]
    pub fn histogram_point(
        &mut self,
        time_unix_nano: u64,
        flags: u32,
        count: u64,
        sum: Option<f64>,
        bucket_counts: &[u64],
        explicit_bounds: &[f64],
    ) {
        if let Some(reason) = self.metric.rejection {
            self.rejections.add(reason, 2 + bucket_counts.len() as u64);
            return;
        }
        let flagged = flags & FLAG_NO_RECORDED_VALUE != 0;
        let kind = self.metric.kind;
        let mut point_rejection = None;
        if !flagged {
            point_rejection = self.end_point_labels();
            self.sample(NameSlot::Count, point_rejection, None, time_unix_nano, kind, Some(count as f64));
            if let Some(sum) = sum {
                self.sample(NameSlot::Sum, point_rejection, None, time_unix_nano, kind, Some(sum));
            }
        }
        if bucket_counts.is_empty() {
            return;
        }
        if bucket_counts.len() != explicit_bounds.len() + 1 {
            self.rejections.add(RejectReason::InvalidHistogram, bucket_counts.len() as u64);
            return;
        }
        if flagged {
            return;
        }
        let mut cumulative_count = 0u64;
        for (bucket_idx, &bucket_count) in bucket_counts.iter().enumerate() {
            cumulative_count = cumulative_count.saturating_add(bucket_count);
            let upper_bound = explicit_bounds.get(bucket_idx).copied().unwrap_or(f64::INFINITY);
            let le = self.bound_label("le", upper_bound);
            let value = Some(cumulative_count as f64);
            self.sample(NameSlot::Bucket, point_rejection, Some(le), time_unix_nano, kind, value);
        }
    }

    /// An exponential histogram point: `_count` and `_sum` (when present).
    pub fn exponential_histogram_point(&mut self, time_unix_nano: u64, flags: u32, count: u64, sum: Option<f64>) {
        let Some(point_rejection) = self.point_verdict(flags, 2) else { return };
        let kind = self.metric.kind;
        self.sample(NameSlot::Count, point_rejection, None, time_unix_nano, kind, Some(count as f64));
        if let Some(sum) = sum {
            self.sample(NameSlot::Sum, point_rejection, None, time_unix_nano, kind, Some(sum));
        }
    }

    /// A summary point: `_count`, `_sum` and one gauge per `(quantile, value)`.
    pub fn summary_point(
        &mut self,
        time_unix_nano: u64,
        flags: u32,
        count: u64,
        sum: f64,
        quantiles: impl ExactSizeIterator<Item = (f64, f64)>,
    ) {
        let Some(point_rejection) = self.point_verdict(flags, 2 + quantiles.len() as u64) else { return };
        let kind = self.metric.kind;
        self.sample(NameSlot::Count, point_rejection, None, time_unix_nano, kind, Some(count as f64));
        self.sample(NameSlot::Sum, point_rejection, None, time_unix_nano, kind, Some(sum));
        for (quantile, value) in quantiles {
            let label = self.bound_label("quantile", quantile);
            self.sample(NameSlot::Plain, point_rejection, Some(label), time_unix_nano, SeriesKind::Gauge, Some(value));
        }
    }

    /// Whether a point yields samples: `None` when it yields none (its metric is rejected, and
    /// the `n_samples` it would have produced are counted; or it is flagged "no recorded
    /// value"), else the verdict on its labels from [`Self::end_point_labels`].
    fn point_verdict(&mut self, flags: u32, n_samples: u64) -> Option<Option<RejectReason>> {
        if let Some(reason) = self.metric.rejection {
            self.rejections.add(reason, n_samples);
            return None;
        }
        if flags & FLAG_NO_RECORDED_VALUE != 0 {
            return None;
        }
        Some(self.end_point_labels())
    }

    /// The point's label verdict; when its own labels pass, their canonical order is in
    /// `scratch.canonical_positions`.
    fn end_point_labels(&mut self) -> Option<RejectReason> {
        let rejection = self.point_check.verdict(self.limits);
        if rejection.is_none() {
            // Points of a metric almost always carry the same names in the same order: reuse
            // the previous point's canonical order (and plan) when the names match, sort otherwise.
            let (labels, scratch) = (&self.point_labels, &mut self.scratch);
            let same_names = scratch.order_names.len() == labels.len()
                && scratch.order_names.iter().zip(labels.iter()).all(|(&name, label)| name == label.name);
            if !same_names {
                canonical_positions(labels, &mut scratch.label_order, &mut scratch.canonical_positions);
                scratch.order_names.clear();
                scratch.order_names.extend(labels.iter().map(|label| label.name));
                scratch.plan = None;
            }
        }
        rejection
    }

    /// The label set of the current point (whose labels passed [`Self::end_point_labels`]):
    /// its resource's when it has no attributes of its own, else its own labels on top of the
    /// resource's, pushed into the batch on first use.
    fn point_set(&mut self) -> LabelSetId {
        if let Some(set) = self.point_set {
            return set;
        }
        let resource = match self.resource_set {
            Some(set) => set,
            // A decoder that reported no resource: an empty one.
            None => {
                let set = self.batch.push_label_set(None, &[], &[], SetPlan::own_only(0), &[]);
                self.resource_set = Some(set);
                set
            }
        };
        let set = if self.point_labels.len() == self.point_own_start {
            // No attributes of its own: the resource's set.
            resource
        } else if self.flat_resource {
            // The resource's few labels are in `point_labels` too: one set of its own.
            let positions = &self.scratch.canonical_positions;
            let plan = SetPlan::own_only(positions.len());
            self.batch.push_label_set(None, &self.point_labels, positions, plan, &self.resource_hashes)
        } else {
            let positions = &self.scratch.canonical_positions;
            let plan = match self.scratch.plan {
                Some(plan) => plan,
                None => {
                    let plan = self.batch.plan_label_set(Some(resource), &self.point_labels, positions);
                    self.scratch.plan = Some(plan);
                    plan
                }
            };
            self.batch.push_label_set(Some(resource), &self.point_labels, positions, plan, &[])
        };
        self.point_set = Some(set);
        set
    }

    /// Emits one sample of a point whose labels passed [`Self::end_point_labels`] (or counts
    /// its rejection), checking in this order: value missing, NaN, timestamp too far ahead,
    /// the point's labels, then the label count and the key bytes with `extra_label` added.
    fn sample(
        &mut self,
        slot: NameSlot,
        point_rejection: Option<RejectReason>,
        extra_label: Option<BatchLabel<'a>>,
        time_unix_nano: u64,
        kind: SeriesKind,
        value: Option<f64>,
    ) {
        let now_ms = self.now_ms;
        let timestamp_ms = timestamp_ms(time_unix_nano, now_ms);
        let rejection = match value {
            None => Some(RejectReason::MissingValue),
            Some(value) if value.is_nan() => Some(RejectReason::NanValue),
            Some(_) if timestamp_ms > now_ms.saturating_add(self.limits.future_skew_ms_max) => {
                Some(RejectReason::FutureTimestamp)
            }
            Some(_) => point_rejection,
        };
        if let Some(reason) = rejection {
            self.rejections.add(reason, 1);
            return;
        }
        let value = value.expect("checked above");
        let name_idx = self.name_idx(slot);
        let set = self.point_set();
        // Normalizing replaces single bytes, so the name's length is the original's.
        let name_bytes = self.metric.name.len() + slot.suffix().len();
        let n_labels = self.batch.label_set_len(set);
        let key_string_bytes = name_bytes + self.batch.label_set_string_bytes(set);
        let Some(extra) = extra_label else {
            // The common case: the point's labels, no copy.
            match self.limits.sample_labels_verdict(n_labels, key_string_bytes) {
                Some(reason) => self.rejections.add(reason, 1),
                None => self.batch.push_sample(name_idx, set, kind, timestamp_ms, value),
            }
            return;
        };
        // The extra label replaces a label of the same name (a point attribute `le`, say).
        let position = match self.extra_position {
            Some((name, position)) if name == extra.name => position,
            _ => {
                let position = self.batch.extra_position(set, extra.name);
                self.extra_position = Some((extra.name, position));
                position
            }
        };
        let n_labels = n_labels + usize::from(!position.replaces());
        let extra_bytes = extra.name.len() + self.batch.resolve(extra.value).len();
        let key_string_bytes = key_string_bytes + extra_bytes - position.replaced_string_bytes();
        match self.limits.sample_labels_verdict(n_labels, key_string_bytes) {
            Some(reason) => self.rejections.add(reason, 1),
            None => self.batch.push_sample_with_extra(name_idx, set, extra, position, kind, timestamp_ms, value),
        }
    }

    /// The batch index of the metric's name for `slot`, registered (normalized, with its
    /// suffix) on first use.
    fn name_idx(&mut self, slot: NameSlot) -> u32 {
        let cached = &mut self.metric.name_idx[slot as usize];
        if *cached == u32::MAX {
            let suffix = slot.suffix();
            let name = self.metric.name;
            let text = if suffix.is_empty() && !needs_normalization(name) {
                BatchText::Borrowed(name)
            } else {
                let mut normalized = normalize_metric_name(name);
                normalized.push_str(suffix);
                self.batch.push_text(&normalized)
            };
            *cached = self.batch.push_metric_name(text);
        }
        *cached
    }

    /// An attribute as a label: strings as they are, numbers and booleans in their usual text
    /// form, bytes as base64, arrays and key-value lists as compact JSON.
    #[inline(always)]
    fn label(&mut self, name: &'a str, value: AttributeValue<'a, '_>) -> BatchLabel<'a> {
        let value = match value {
            AttributeValue::Empty => BatchText::Borrowed(""),
            AttributeValue::Text(text) => BatchText::Borrowed(text),
            AttributeValue::Bool(flag) => BatchText::Borrowed(if flag { "true" } else { "false" }),
            formatted => self.formatted_label_text(formatted),
        };
        BatchLabel { name, value }
    }

    /// The text of an attribute value that is not a string, written into the arena.
    #[inline(never)]
    fn formatted_label_text(&mut self, value: AttributeValue<'a, '_>) -> BatchText<'a> {
        let format = &mut self.scratch.format;
        format.clear();
        match value {
            AttributeValue::Empty => {}
            AttributeValue::Text(text) => format.push_str(text),
            AttributeValue::Bool(flag) => format.push_str(if flag { "true" } else { "false" }),
            AttributeValue::Int(number) => {
                let _ = write!(format, "{number}");
            }
            AttributeValue::Double(number) => {
                let _ = write!(format, "{number}");
            }
            AttributeValue::Bytes(bytes) => base64::engine::general_purpose::STANDARD.encode_string(bytes, format),
            AttributeValue::Decoded(value) => write_any_value(value, format),
        }
        self.batch.push_text(&self.scratch.format)
    }

    /// An `le` or `quantile` label, its bound formatted as Prometheus writes bounds.
    fn bound_label(&mut self, name: &'static str, bound: f64) -> BatchLabel<'a> {
        let value = if bound == f64::INFINITY {
            BatchText::Borrowed("+Inf")
        } else if bound == f64::NEG_INFINITY {
            BatchText::Borrowed("-Inf")
        } else {
            let format = &mut self.scratch.format;
            format.clear();
            let _ = write!(format, "{bound}");
            self.batch.push_text(format)
        };
        BatchLabel { name, value }
    }
}

/// Checks one label against the name and value limits and keeps it if it passes.
#[inline(always)]
fn check_label<'a>(
    limits: &ConvertLimits,
    batch: &DecodedBatch<'a>,
    label: BatchLabel<'a>,
    check: &mut AttributeCheck,
    labels: &mut Vec<BatchLabel<'a>>,
) {
    check.count += 1;
    if check.first_invalid.is_some() {
        return;
    }
    if label.name.is_empty() || label.name.len() > limits.label_name_bytes_max {
        check.first_invalid = Some(RejectReason::InvalidLabelName);
    } else if batch.resolve(label.value).len() > limits.label_value_bytes_max {
        check.first_invalid = Some(RejectReason::LabelValueTooLong);
    } else {
        labels.push(label);
    }
}

/// A point's time in ms; 0 (unset) means the time it was received.
fn timestamp_ms(time_unix_nano: u64, now_ms: i64) -> i64 {
    match time_unix_nano {
        0 => now_ms,
        nanos => i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX),
    }
}

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

/// The first eight bytes of a name as a big-endian integer (zero-padded): comparing these
/// orders names as byte-wise comparison does, except for ties, which need the full names.
#[inline]
fn name_prefix(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let mut word = [0u8; 8];
    let n = bytes.len().min(8);
    word[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(word)
}

/// Writes an attribute value's text: as [`SampleWriter::label`] does for each type, with arrays
/// and key-value lists as compact JSON.
fn write_any_value(value: &AnyValue, out: &mut String) {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => out.push_str(text),
        Some(any_value::Value::BoolValue(flag)) => out.push_str(if *flag { "true" } else { "false" }),
        Some(any_value::Value::IntValue(number)) => {
            let _ = write!(out, "{number}");
        }
        Some(any_value::Value::DoubleValue(number)) => {
            let _ = write!(out, "{number}");
        }
        Some(any_value::Value::BytesValue(bytes)) => {
            base64::engine::general_purpose::STANDARD.encode_string(bytes, out)
        }
        Some(any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_)) => {
            let _ = write!(out, "{}", any_value_to_json(value));
        }
        Some(any_value::Value::StringValueStrindex(_)) | None => {}
    }
}

/// An array or key-value list attribute as JSON (strings as they are, bytes as base64).
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
