//! Pre-encoded OTLP payloads, re-stamped in place.
//!
//! A payload is encoded once per shape with sentinel timestamps and values. Every sentinel is a
//! fixed64 field (OTLP timestamps, `as_double`, histogram `count` and `sum`), so its eight bytes
//! sit at a fixed offset in the encoding. Re-stamping writes new bytes at those offsets: no
//! protobuf encoding and no allocation per point, which is what lets one core generate millions
//! of points per second.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;

/// High 16 bits of a sentinel timestamp. 0xF7 never occurs in UTF-8 text, so label strings
/// cannot imitate a sentinel.
const TIME_MARKER: u64 = 0xF7F1 << 48;
/// High 16 bits of a sentinel value (as f64 bits: a large negative finite number).
const VALUE_MARKER: u64 = 0xF7F2 << 48;
const MARKER_MASK: u64 = 0xFFFF << 48;
/// Tag bytes of the fixed64 fields a sentinel may sit in: field 3 (`time_unix_nano`),
/// field 4 (`as_double`, histogram `count`) and field 5 (histogram `sum`), wire type 1.
const FIXED64_TAGS: [u8; 3] = [(3 << 3) | 1, (4 << 3) | 1, (5 << 3) | 1];

/// The sentinel to put in the `time_unix_nano` of time slot `slot_idx`.
pub fn time_sentinel(slot_idx: usize) -> u64 {
    TIME_MARKER | slot_idx as u64
}

/// The sentinel to put in a value field of value slot `slot_idx`.
pub fn value_sentinel(slot_idx: usize) -> f64 {
    f64::from_bits(VALUE_MARKER | slot_idx as u64)
}

/// The sentinel as the `u64` of a histogram `count` field.
pub fn count_sentinel(slot_idx: usize) -> u64 {
    VALUE_MARKER | slot_idx as u64
}

/// How a value slot changes over time. Cheap to evaluate: no transcendental functions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// A triangle wave between `low` and `high` with the given period.
    Gauge {
        low: f64,
        high: f64,
        period_s: f64,
        phase_s: f64,
    },
    /// A cumulative counter growing at `per_second` from 0 at the start of the run.
    Counter {
        per_second: f64,
    },
    /// The same counter, as a `u64` field (histogram `count`).
    CountU64 {
        per_second: f64,
    },
    Constant(f64),
}

impl Signal {
    pub fn value_at(&self, elapsed_s: f64) -> f64 {
        match *self {
            Signal::Gauge { low, high, period_s, phase_s } => {
                let cycle = ((elapsed_s + phase_s) / period_s).fract();
                let triangle = if cycle < 0.5 { cycle * 2.0 } else { 2.0 - cycle * 2.0 };
                low + (high - low) * triangle
            }
            Signal::Counter { per_second } | Signal::CountU64 { per_second } => (per_second * elapsed_s).floor(),
            Signal::Constant(value) => value,
        }
    }

    fn is_u64(&self) -> bool {
        matches!(self, Signal::CountU64 { .. })
    }
}

/// An encoded request and where its timestamps and values live.
#[derive(Debug, Clone)]
pub struct PayloadTemplate {
    bytes: Vec<u8>,
    time_offsets: Vec<u32>,
    value_offsets: Vec<u32>,
    signals: Vec<Signal>,
    n_points: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("time slot {0} appears {1} times in the encoding (expected once)")]
    TimeSlot(usize, usize),
    #[error("value slot {0} appears {1} times in the encoding (expected once)")]
    ValueSlot(usize, usize),
}

impl PayloadTemplate {
    /// Encodes `request`, whose timestamps are `time_sentinel(0..n_time_slots)` and whose values
    /// are `value_sentinel(i)` (or `count_sentinel(i)`) for each `signals[i]`, and finds every slot.
    pub fn new(
        request: &ExportMetricsServiceRequest,
        n_time_slots: usize,
        signals: Vec<Signal>,
        n_points: usize,
    ) -> Result<PayloadTemplate, TemplateError> {
        let bytes = request.encode_to_vec();
        let mut time_offsets = vec![u32::MAX; n_time_slots];
        let mut value_offsets = vec![u32::MAX; signals.len()];
        let mut time_seen = vec![0usize; n_time_slots];
        let mut value_seen = vec![0usize; signals.len()];
        for offset in 1..bytes.len().saturating_sub(7) {
            if !FIXED64_TAGS.contains(&bytes[offset - 1]) {
                continue;
            }
            let word = u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("eight bytes"));
            let slot_idx = (word & !MARKER_MASK) as usize;
            match word & MARKER_MASK {
                TIME_MARKER if slot_idx < n_time_slots => {
                    time_offsets[slot_idx] = offset as u32;
                    time_seen[slot_idx] += 1;
                }
                VALUE_MARKER if slot_idx < signals.len() => {
                    value_offsets[slot_idx] = offset as u32;
                    value_seen[slot_idx] += 1;
                }
                _ => {}
            }
        }
        if let Some((slot_idx, &seen)) = time_seen.iter().enumerate().find(|(_, &seen)| seen != 1) {
            return Err(TemplateError::TimeSlot(slot_idx, seen));
        }
        if let Some((slot_idx, &seen)) = value_seen.iter().enumerate().find(|(_, &seen)| seen != 1) {
            return Err(TemplateError::ValueSlot(slot_idx, seen));
        }
        Ok(PayloadTemplate { bytes, time_offsets, value_offsets, signals, n_points })
    }

    /// Writes `time_unix_nano` into every time slot and each signal's value at `elapsed_s`.
    pub fn restamp(&mut self, time_unix_nano: u64, elapsed_s: f64) {
        let time_bytes = time_unix_nano.to_le_bytes();
        for &offset in &self.time_offsets {
            let offset = offset as usize;
            self.bytes[offset..offset + 8].copy_from_slice(&time_bytes);
        }
        for (signal, &offset) in self.signals.iter().zip(&self.value_offsets) {
            let value = signal.value_at(elapsed_s);
            let word = if signal.is_u64() { value.max(0.0) as u64 } else { value.to_bits() };
            let offset = offset as usize;
            self.bytes[offset..offset + 8].copy_from_slice(&word.to_le_bytes());
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// OTLP data points in the request.
    pub fn n_points(&self) -> usize {
        self.n_points
    }
}
