//! Per-series evaluation over a time window: the `operationOverTime` of a trigger.

use std::collections::VecDeque;

use super::chunk::Chunk;
use super::kernels;

/// How a series' values relate over time; decides what `rate` means for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// A value that goes up and down (OTLP Gauge, non-monotonic cumulative Sum, summary quantile).
    Gauge,
    /// A monotonic cumulative counter (OTLP monotonic cumulative Sum, histogram count/sum/buckets).
    /// A decrease means the counter was reset.
    CumulativeCounter,
    /// Each sample is the change since the previous one (OTLP delta temporality).
    Delta,
}

impl SeriesKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SeriesKind::Gauge => "gauge",
            SeriesKind::CumulativeCounter => "cumulative_counter",
            SeriesKind::Delta => "delta",
        }
    }
}

/// The operation over time applied to each series' samples in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WindowOp {
    /// The most recent sample.
    #[default]
    LastOne,
    /// Per-second rate: counter increase (resets handled) for cumulative counters, the sum of
    /// the deltas after the first sample for delta series, `last - first` for gauges; divided by
    /// the seconds between the first and last sample. Needs two samples.
    Rate,
    /// Number of samples in the window.
    Count,
    Avg,
    Min,
    Max,
}

impl WindowOp {
    pub const ALL: [WindowOp; 6] =
        [WindowOp::LastOne, WindowOp::Rate, WindowOp::Count, WindowOp::Avg, WindowOp::Min, WindowOp::Max];

    /// Parses Kedify's `operationOverTime` names.
    pub fn from_name(name: &str) -> Option<WindowOp> {
        WindowOp::ALL.into_iter().find(|op| op.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WindowOp::LastOne => "last_one",
            WindowOp::Rate => "rate",
            WindowOp::Count => "count",
            WindowOp::Avg => "avg",
            WindowOp::Min => "min",
            WindowOp::Max => "max",
        }
    }
}

/// A read-only view of one series restricted to samples with `timestamp >= start_ms`.
#[derive(Debug, Clone, Copy)]
pub struct SeriesWindow<'a> {
    kind: SeriesKind,
    chunks: &'a VecDeque<Chunk>,
    start_ms: i64,
}

impl<'a> SeriesWindow<'a> {
    pub(super) fn new(kind: SeriesKind, chunks: &'a VecDeque<Chunk>, start_ms: i64) -> Self {
        SeriesWindow { kind, chunks, start_ms }
    }

    pub fn kind(&self) -> SeriesKind {
        self.kind
    }

    /// The non-empty (timestamps, values) slices in the window, oldest first.
    pub fn slices(&self) -> impl Iterator<Item = (&'a [i64], &'a [f64])> + 'a {
        let start_ms = self.start_ms;
        // Chunks are ordered by time: skip those that end before the window.
        let first_chunk_idx =
            self.chunks.partition_point(|chunk| chunk.last_timestamp_ms().is_none_or(|last| last < start_ms));
        self.chunks.range(first_chunk_idx..).map(move |chunk| chunk.since(start_ms)).filter(|(ts, _)| !ts.is_empty())
    }

    /// Number of samples in the window.
    pub fn sample_count(&self) -> usize {
        self.slices().map(|(ts, _)| ts.len()).sum()
    }

    /// The operation's value, or `None` when the window holds too few samples for it
    /// (no sample at all; fewer than two, or no elapsed time, for `rate`).
    pub fn value(&self, op: WindowOp) -> Option<f64> {
        match op {
            WindowOp::LastOne => self.slices().last().and_then(|(_, values)| values.last().copied()),
            WindowOp::Count => match self.sample_count() {
                0 => None,
                n_samples => Some(n_samples as f64),
            },
            WindowOp::Avg => {
                let (sum, n_samples) = self
                    .slices()
                    .fold((0.0, 0usize), |(sum, n), (_, values)| (sum + kernels::sum(values), n + values.len()));
                (n_samples > 0).then(|| sum / n_samples as f64)
            }
            WindowOp::Min => self.slices().filter_map(|(_, values)| kernels::min(values)).reduce(f64::min),
            WindowOp::Max => self.slices().filter_map(|(_, values)| kernels::max(values)).reduce(f64::max),
            WindowOp::Rate => self.rate(),
        }
    }

    fn rate(&self) -> Option<f64> {
        let mut first: Option<(i64, f64)> = None;
        let mut last: Option<(i64, f64)> = None;
        let mut counter_increase = 0.0;
        let mut delta_sum = 0.0;
        for (timestamps, values) in self.slices() {
            let previous_value = last.map(|(_, value)| value);
            match self.kind {
                SeriesKind::CumulativeCounter => counter_increase += kernels::counter_increase(previous_value, values),
                SeriesKind::Delta => delta_sum += kernels::sum(values),
                SeriesKind::Gauge => {}
            }
            if first.is_none() {
                first = Some((timestamps[0], values[0]));
            }
            last = Some((timestamps[timestamps.len() - 1], values[values.len() - 1]));
        }
        let ((first_ms, first_value), (last_ms, last_value)) = (first?, last?);
        if last_ms <= first_ms {
            return None;
        }
        let increase = match self.kind {
            SeriesKind::CumulativeCounter => counter_increase,
            // The first delta covers time before the first sample, so it is not part of the span.
            SeriesKind::Delta => delta_sum - first_value,
            SeriesKind::Gauge => last_value - first_value,
        };
        Some(increase / ((last_ms - first_ms) as f64 / 1000.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chunk::CHUNK_CAPACITY;

    fn chunks_of(samples: &[(i64, f64)]) -> VecDeque<Chunk> {
        let mut chunks = VecDeque::new();
        for &(ts, value) in samples {
            if chunks.back().is_none_or(Chunk::is_full) {
                chunks.push_back(Chunk::with_capacity());
            }
            if let Some(chunk) = chunks.back_mut() {
                chunk.push(ts, value);
            }
        }
        chunks
    }

    #[test]
    fn ops_over_a_window() {
        let chunks = chunks_of(&[(1_000, 5.0), (2_000, 1.0), (3_000, 9.0), (4_000, 3.0)]);
        let window = SeriesWindow::new(SeriesKind::Gauge, &chunks, 2_000);
        assert_eq!(window.value(WindowOp::LastOne), Some(3.0));
        assert_eq!(window.value(WindowOp::Count), Some(3.0));
        assert_eq!(window.value(WindowOp::Avg), Some(13.0 / 3.0));
        assert_eq!(window.value(WindowOp::Min), Some(1.0));
        assert_eq!(window.value(WindowOp::Max), Some(9.0));
        // gauge: (3 - 1) / 2 s
        assert_eq!(window.value(WindowOp::Rate), Some(1.0));
        let empty = SeriesWindow::new(SeriesKind::Gauge, &chunks, 5_000);
        for op in WindowOp::ALL {
            assert_eq!(empty.value(op), None, "{op:?}");
        }
    }

    #[test]
    fn cumulative_and_delta_rates_agree() {
        // The same counter, +10 per second with a reset after 3 s, reported both ways.
        let cumulative = chunks_of(&[(0, 100.0), (1_000, 110.0), (2_000, 120.0), (3_000, 10.0), (4_000, 20.0)]);
        let delta = chunks_of(&[(0, 7.0), (1_000, 10.0), (2_000, 10.0), (3_000, 10.0), (4_000, 10.0)]);
        let rate_cumulative = SeriesWindow::new(SeriesKind::CumulativeCounter, &cumulative, 0).value(WindowOp::Rate);
        let rate_delta = SeriesWindow::new(SeriesKind::Delta, &delta, 0).value(WindowOp::Rate);
        assert_eq!(rate_cumulative, Some(10.0));
        assert_eq!(rate_delta, Some(10.0));
        let one_sample = chunks_of(&[(0, 1.0)]);
        assert_eq!(SeriesWindow::new(SeriesKind::CumulativeCounter, &one_sample, 0).value(WindowOp::Rate), None);
    }

    #[test]
    fn rate_spans_chunk_boundaries() {
        let samples: Vec<(i64, f64)> =
            (0..(CHUNK_CAPACITY as i64 * 2 + 5)).map(|i| (i * 1_000, i as f64 * 2.0)).collect();
        let chunks = chunks_of(&samples);
        assert!(chunks.len() >= 3);
        let window = SeriesWindow::new(SeriesKind::CumulativeCounter, &chunks, 0);
        assert_eq!(window.value(WindowOp::Rate), Some(2.0));
        assert_eq!(window.sample_count(), samples.len());
    }
}
