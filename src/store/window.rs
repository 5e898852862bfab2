//! Per-series evaluation over a time window: what a trigger's `operationOverTime` computes.

use super::chunk::{Chunk, ChunkSlice, ChunkSummary};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowOp {
    /// The most recent sample.
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
    /// Every operation the store evaluates. The names triggers use for them are the query
    /// language's (`query::OperationOverTime`), not the store's.
    pub const ALL: [WindowOp; 6] =
        [WindowOp::LastOne, WindowOp::Rate, WindowOp::Count, WindowOp::Avg, WindowOp::Min, WindowOp::Max];
}

/// A read-only view of one series restricted to samples with `timestamp >= start_ms`.
///
/// A chunk that lies entirely inside the window is answered from its [`ChunkSummary`] without
/// reading its columns; only the oldest chunk in the window can straddle the window start, and
/// only its samples from the start on are scanned, with the kernels.
#[derive(Debug, Clone, Copy)]
pub struct SeriesWindow<'a> {
    kind: SeriesKind,
    chunks: &'a [Chunk],
    start_ms: i64,
    /// The evaluation time: samples stamped after it (a producer's clock ahead of ours, within
    /// `--max-future-skew`) are not read, so a trigger never reads the future.
    end_ms: i64,
}

/// The part of one chunk inside the window: the whole chunk, or its samples
/// `first_idx..end_idx`. Holds the chunk's summary and columns, looked up once (a chunk's
/// block is found through its class).
#[derive(Debug, Clone, Copy)]
struct WindowPart<'a> {
    summary: &'a ChunkSummary,
    /// Every sample of the chunk.
    samples: ChunkSlice<'a>,
    first_idx: usize,
    /// The chunk's length when its newest sample is in the window.
    end_idx: usize,
}

impl<'a> WindowPart<'a> {
    fn new(chunk: &'a Chunk, first_idx: usize, end_idx: usize) -> Self {
        WindowPart { summary: chunk.summary(), samples: chunk.slice_from(0), first_idx, end_idx }
    }

    fn summary(&self) -> &'a ChunkSummary {
        self.summary
    }

    #[inline(always)]
    fn is_whole(&self) -> bool {
        self.first_idx == 0 && self.ends_with_chunk()
    }

    #[inline(always)]
    fn ends_with_chunk(&self) -> bool {
        self.end_idx == self.samples.len()
    }

    /// The samples of the part, to scan (only for a partial chunk).
    fn values(&self) -> &'a [f64] {
        &self.samples.values[self.first_idx..self.end_idx]
    }

    fn n_samples(&self) -> usize {
        self.end_idx - self.first_idx
    }

    #[inline(always)]
    fn first(&self) -> (i64, f64) {
        if self.first_idx == 0 {
            (self.summary().first_timestamp_ms(), self.summary().first_value)
        } else {
            (self.samples.timestamp_ms(self.first_idx), self.samples.values[self.first_idx])
        }
    }

    #[inline(always)]
    fn last(&self) -> (i64, f64) {
        if self.ends_with_chunk() {
            (self.summary().last_timestamp_ms(), self.summary().last_value)
        } else {
            let last_idx = self.end_idx - 1;
            (self.samples.timestamp_ms(last_idx), self.samples.values[last_idx])
        }
    }

    fn sum(&self) -> f64 {
        if self.is_whole() {
            self.summary().sum
        } else {
            kernels::sum(self.values())
        }
    }

    fn min(&self) -> f64 {
        if self.is_whole() {
            self.summary().min
        } else {
            kernels::min(self.values()).expect("a part is never empty")
        }
    }

    fn max(&self) -> f64 {
        if self.is_whole() {
            self.summary().max
        } else {
            kernels::max(self.values()).expect("a part is never empty")
        }
    }

    /// Counter increase over the steps inside the part.
    #[inline(always)]
    fn counter_increase(&self) -> f64 {
        let summary = self.summary();
        if self.is_whole() {
            return summary.counter_increase;
        }
        let first_value = self.samples.values[self.first_idx];
        let last_value = self.last().1;
        if summary.n_resets == 0 && first_value.is_finite() && last_value.is_finite() {
            // No reset in the chunk: the steps telescope, so the increase is last - first
            // (the same number up to rounding, without reading the column in between).
            return last_value - first_value;
        }
        kernels::counter_increase(None, self.values())
    }
}

impl<'a> SeriesWindow<'a> {
    /// The samples of `chunks` stamped in `start_ms..=end_ms`.
    pub(super) fn new(kind: SeriesKind, chunks: &'a [Chunk], start_ms: i64, end_ms: i64) -> Self {
        SeriesWindow { kind, chunks, start_ms, end_ms }
    }

    pub fn kind(&self) -> SeriesKind {
        self.kind
    }

    /// The non-empty parts of chunks in the window, oldest first.
    fn parts(&self) -> impl Iterator<Item = WindowPart<'a>> + 'a {
        let (start_ms, end_ms) = (self.start_ms, self.end_ms);
        // Walk back from the newest chunk: chunks ascend in time, so the window is a run of
        // them ending at the newest one that starts by `end_ms` (usually the newest of all), and
        // only its oldest chunk can start before the window, its newest end after it. This
        // touches the summaries of the chunks in the window and of at most one more. A window
        // usually spans the newest one or two chunks: ask for both summaries at once, so that
        // their cache misses overlap instead of following each other.
        let chunks = self.chunks;
        let n_chunks = chunks.len();
        if n_chunks >= 2 {
            chunks[n_chunks - 1].prefetch_summary();
            chunks[n_chunks - 2].prefetch_summary();
        }
        let mut end_chunk_idx = n_chunks;
        while end_chunk_idx > 0 && chunks[end_chunk_idx - 1].summary().first_timestamp_ms() > end_ms {
            end_chunk_idx -= 1;
        }
        let mut first_chunk_idx = end_chunk_idx;
        while first_chunk_idx > 0 {
            let chunk = &chunks[first_chunk_idx - 1];
            if chunk.last_timestamp_ms().is_none_or(|last_ms| last_ms < start_ms) {
                break;
            }
            first_chunk_idx -= 1;
            if chunk.summary().first_timestamp_ms() < start_ms {
                break;
            }
        }
        let (oldest_chunk_idx, newest_chunk_idx) = (first_chunk_idx, end_chunk_idx.wrapping_sub(1));
        (first_chunk_idx..end_chunk_idx).filter_map(move |chunk_idx| {
            let chunk = &chunks[chunk_idx];
            let first_idx = if chunk_idx == oldest_chunk_idx { chunk.first_idx_at_or_after(start_ms) } else { 0 };
            let end_idx = if chunk_idx == newest_chunk_idx { chunk.end_idx_at_or_before(end_ms) } else { chunk.len() };
            // Empty only when the whole window lies between two samples of one chunk.
            (first_idx < end_idx).then(|| WindowPart::new(chunk, first_idx, end_idx))
        })
    }

    /// The samples in the window chunk by chunk, oldest first (each slice non-empty).
    pub fn slices(&self) -> impl Iterator<Item = ChunkSlice<'a>> + 'a {
        self.parts().map(|part| ChunkSlice {
            base_ms: part.samples.base_ms,
            offsets_ms: &part.samples.offsets_ms[part.first_idx..part.end_idx],
            values: &part.samples.values[part.first_idx..part.end_idx],
        })
    }

    /// Number of samples in the window.
    pub fn sample_count(&self) -> usize {
        self.parts().map(|part| part.n_samples()).sum()
    }

    /// The operation's value, or `None` when the window holds too few samples for it
    /// (no sample at all; fewer than two, or no elapsed time, for `rate`).
    pub fn value(&self, op: WindowOp) -> Option<f64> {
        match op {
            WindowOp::LastOne => self.newest_value(),
            WindowOp::Count => match self.sample_count() {
                0 => None,
                n_samples => Some(n_samples as f64),
            },
            WindowOp::Avg => {
                let (sum, n_samples) =
                    self.parts().fold((0.0, 0usize), |(sum, n), part| (sum + part.sum(), n + part.n_samples()));
                (n_samples > 0).then(|| sum / n_samples as f64)
            }
            WindowOp::Min => self.parts().map(|part| part.min()).reduce(f64::min),
            WindowOp::Max => self.parts().map(|part| part.max()).reduce(f64::max),
            WindowOp::Rate => self.rate(),
        }
    }

    /// The value of the newest sample in the window, reading one chunk's summary in the common
    /// case (its newest sample is not after the evaluation time).
    fn newest_value(&self) -> Option<f64> {
        let mut chunk_idx = self.chunks.len();
        let chunk = loop {
            chunk_idx = chunk_idx.checked_sub(1)?;
            let chunk = &self.chunks[chunk_idx];
            if chunk.summary().first_timestamp_ms() <= self.end_ms {
                break chunk;
            }
        };
        let end_idx = chunk.end_idx_at_or_before(self.end_ms);
        let newest = WindowPart::new(chunk, end_idx - 1, end_idx);
        let (newest_ms, newest_value) = newest.last();
        (newest_ms >= self.start_ms).then_some(newest_value)
    }

    #[inline(always)]
    fn rate(&self) -> Option<f64> {
        let mut parts = self.parts();
        let oldest = parts.next()?;
        let (first_ms, first_value) = oldest.first();
        let mut last = oldest.last();
        let mut increase = match self.kind {
            SeriesKind::CumulativeCounter => oldest.counter_increase(),
            SeriesKind::Delta => oldest.sum(),
            SeriesKind::Gauge => 0.0,
        };
        for part in parts {
            match self.kind {
                SeriesKind::CumulativeCounter => {
                    // The step across the chunk boundary, then the steps inside the chunk.
                    let (_, previous_value) = last;
                    increase += kernels::counter_step(previous_value, part.first().1) + part.counter_increase();
                }
                SeriesKind::Delta => increase += part.sum(),
                SeriesKind::Gauge => {}
            }
            last = part.last();
        }
        let (last_ms, last_value) = last;
        if last_ms <= first_ms {
            return None;
        }
        let increase = match self.kind {
            SeriesKind::CumulativeCounter => increase,
            // The first delta covers time before the first sample, so it is not part of the span.
            SeriesKind::Delta => increase - first_value,
            SeriesKind::Gauge => last_value - first_value,
        };
        Some(increase / ((last_ms - first_ms) as f64 / 1000.0))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::store::chunk::{ChunkClass, CHUNK_CAPACITY};

    /// The samples in chunks of every class in turn (small, medium, full, small, …).
    fn chunks_of(samples: &[(i64, f64)]) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        for &(ts, value) in samples {
            if chunks.last().is_none_or(|chunk: &Chunk| !chunk.can_hold(ts)) {
                chunks.push(Chunk::new(ChunkClass::ALL[chunks.len() % ChunkClass::ALL.len()]));
            }
            if let Some(chunk) = chunks.last_mut() {
                chunk.push(ts, value);
            }
        }
        chunks
    }

    #[test]
    fn ops_over_a_window() {
        let chunks = chunks_of(&[(1_000, 5.0), (2_000, 1.0), (3_000, 9.0), (4_000, 3.0)]);
        let window = SeriesWindow::new(SeriesKind::Gauge, &chunks, 2_000, i64::MAX);
        assert_eq!(window.value(WindowOp::LastOne), Some(3.0));
        assert_eq!(window.value(WindowOp::Count), Some(3.0));
        assert_eq!(window.value(WindowOp::Avg), Some(13.0 / 3.0));
        assert_eq!(window.value(WindowOp::Min), Some(1.0));
        assert_eq!(window.value(WindowOp::Max), Some(9.0));
        // gauge: (3 - 1) / 2 s
        assert_eq!(window.value(WindowOp::Rate), Some(1.0));
        let empty = SeriesWindow::new(SeriesKind::Gauge, &chunks, 5_000, i64::MAX);
        for op in WindowOp::ALL {
            assert_eq!(empty.value(op), None, "{op:?}");
        }
    }

    #[test]
    fn cumulative_and_delta_rates_agree() {
        // The same counter, +10 per second with a reset after 3 s, reported both ways.
        let cumulative = chunks_of(&[(0, 100.0), (1_000, 110.0), (2_000, 120.0), (3_000, 10.0), (4_000, 20.0)]);
        let delta = chunks_of(&[(0, 7.0), (1_000, 10.0), (2_000, 10.0), (3_000, 10.0), (4_000, 10.0)]);
        let rate_cumulative =
            SeriesWindow::new(SeriesKind::CumulativeCounter, &cumulative, 0, i64::MAX).value(WindowOp::Rate);
        let rate_delta = SeriesWindow::new(SeriesKind::Delta, &delta, 0, i64::MAX).value(WindowOp::Rate);
        assert_eq!(rate_cumulative, Some(10.0));
        assert_eq!(rate_delta, Some(10.0));
        let one_sample = chunks_of(&[(0, 1.0)]);
        assert_eq!(
            SeriesWindow::new(SeriesKind::CumulativeCounter, &one_sample, 0, i64::MAX).value(WindowOp::Rate),
            None
        );
    }

    #[test]
    fn rate_spans_chunk_boundaries() {
        let samples: Vec<(i64, f64)> =
            (0..(CHUNK_CAPACITY as i64 * 2 + 5)).map(|i| (i * 1_000, i as f64 * 2.0)).collect();
        let chunks = chunks_of(&samples);
        assert!(chunks.len() >= 3);
        let window = SeriesWindow::new(SeriesKind::CumulativeCounter, &chunks, 0, i64::MAX);
        assert_eq!(window.value(WindowOp::Rate), Some(2.0));
        assert_eq!(window.sample_count(), samples.len());
    }

    /// The definitions, computed the slow way over all samples in the window.
    fn naive_value(kind: SeriesKind, samples: &[(i64, f64)], start_ms: i64, end_ms: i64, op: WindowOp) -> Option<f64> {
        let in_window: Vec<(i64, f64)> =
            samples.iter().copied().filter(|&(ts, _)| ts >= start_ms && ts <= end_ms).collect();
        let values: Vec<f64> = in_window.iter().map(|&(_, value)| value).collect();
        let (&(first_ms, first_value), &(last_ms, last_value)) = (in_window.first()?, in_window.last()?);
        match op {
            WindowOp::LastOne => Some(last_value),
            WindowOp::Count => Some(values.len() as f64),
            WindowOp::Avg => Some(values.iter().sum::<f64>() / values.len() as f64),
            WindowOp::Min => values.iter().copied().reduce(f64::min),
            WindowOp::Max => values.iter().copied().reduce(f64::max),
            WindowOp::Rate => {
                let increase = match kind {
                    SeriesKind::CumulativeCounter => {
                        values.windows(2).map(|pair| if pair[1] >= pair[0] { pair[1] - pair[0] } else { pair[1] }).sum()
                    }
                    SeriesKind::Delta => values[1..].iter().sum(),
                    SeriesKind::Gauge => last_value - first_value,
                };
                (last_ms > first_ms).then(|| increase / ((last_ms - first_ms) as f64 / 1000.0))
            }
        }
    }

    fn close(a: Option<f64>, b: Option<f64>, magnitude: f64) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-9 * magnitude.max(1.0),
            (None, None) => true,
            _ => false,
        }
    }

    proptest! {
        /// Windows over many chunks, starting and ending anywhere (the end is the evaluation
        /// time; samples after it are from a clock ahead of ours), with gaps that force new
        /// chunks (over 2³² ms), equal the naive definitions for every kind and operation.
        #[test]
        fn window_matches_naive_definitions(
            steps in proptest::collection::vec(
                (prop_oneof![20 => 1i64..3_000, 1 => 4_000_000_000i64..9_000_000_000], 0.0f64..1e4, any::<bool>()),
                1..700,
            ),
            start_pick in 0usize..800,
            start_shift_ms in -1i64..=1,
            end_pick in prop_oneof![1 => Just(None), 3 => (0usize..800).prop_map(Some)],
            end_shift_ms in -1i64..=1,
        ) {
            let mut samples = Vec::new();
            let (mut ts, mut counter) = (-5_000i64, 0.0);
            for (gap_ms, value, reset) in steps {
                ts += gap_ms;
                counter = if reset { value / 100.0 } else { counter + value };
                samples.push((ts, counter));
            }
            let chunks = chunks_of(&samples);
            let start_ms = samples.get(start_pick).map_or(ts + 1, |&(ts, _)| ts + start_shift_ms);
            let end_ms = match end_pick {
                None => i64::MAX,
                Some(end_pick) => samples.get(end_pick).map_or(ts + 1, |&(ts, _)| ts + end_shift_ms),
            };
            for kind in [SeriesKind::Gauge, SeriesKind::CumulativeCounter, SeriesKind::Delta] {
                let window = SeriesWindow::new(kind, &chunks, start_ms, end_ms);
                let in_window = samples.iter().filter(|&&(ts, _)| ts >= start_ms && ts <= end_ms).count();
                prop_assert_eq!(window.sample_count(), in_window);
                prop_assert_eq!(window.slices().map(|slice| slice.len()).sum::<usize>(), in_window);
                let magnitude: f64 = samples.iter().map(|&(_, value)| value.abs()).sum();
                for op in WindowOp::ALL {
                    let expected = naive_value(kind, &samples, start_ms, end_ms, op);
                    let actual = window.value(op);
                    prop_assert!(close(actual, expected, magnitude), "{:?} {:?}: {:?} vs {:?}", kind, op, actual, expected);
                }
            }
        }
    }
}
