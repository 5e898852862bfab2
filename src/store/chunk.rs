//! A chunk: up to [`CHUNK_CAPACITY`] consecutive samples of one series in one heap block, with
//! a summary of them kept exact on every write.
//!
//! Layout of the block (1,504 bytes, one allocation, reused through the shard's spare chunks):
//!
//! ```text
//! summary      64 B   base, count, sum, min, max, first/last value, counter increase
//! values      960 B   120 × f64, contiguous for vector loads
//! offsets_ms  480 B   120 × u32: timestamp - base_ms (the first sample's timestamp)
//! ```
//!
//! That is 12 bytes per sample in the columns, 12.53 with the summary. A window query reads
//! only the summary of a chunk that lies entirely inside the window, and scans the columns of
//! the one chunk that straddles the window start (see `window.rs`).

use std::fmt;

use super::kernels;

/// Samples per chunk. Two minutes of 1 s samples fit in one chunk, so a series scraped every
/// second with a two-minute window has its window in one or two chunks, and a chunk holding
/// 120 samples has no unused slot.
pub const CHUNK_CAPACITY: usize = 120;

const _: () = assert!(CHUNK_CAPACITY >= 16 && CHUNK_CAPACITY <= u16::MAX as usize);

/// What a chunk knows about its samples without reading its columns. Maintained in O(1) by
/// [`Chunk::push`]; after [`Chunk::overwrite_last`] it is recomputed, and it always equals
/// [`ChunkSummary::of`] the chunk's columns (bit for bit).
///
/// `repr(C)` keeps the fields in this order: what every window reads first (extent, count,
/// last and first value, counter increase) in the first 40 bytes, `sum`/`min`/`max` after.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct ChunkSummary {
    /// Timestamp of the first sample; every offset is relative to it.
    pub base_ms: i64,
    /// Offset of the last sample (0 when empty).
    pub last_offset_ms: u32,
    pub n_samples: u16,
    /// Steps that are counter resets ([`kernels::is_counter_reset`]: NaN counts). With none, the
    /// counter increase from any sample of the chunk to its last is `last - that sample`.
    pub n_resets: u16,
    pub last_value: f64,
    pub first_value: f64,
    /// Counter increase over the chunk's own steps, with resets: the sequential sum of
    /// [`kernels::counter_step`], i.e. `counter_increase(None, values)` up to rounding.
    pub counter_increase: f64,
    /// Sum in sample order (`((0 + v0) + v1) + …`).
    pub sum: f64,
    /// Folds of the values with [`f64::min`] / [`f64::max`] (NaN ignored unless all are NaN).
    pub min: f64,
    pub max: f64,
}

const _: () = assert!(std::mem::size_of::<ChunkSummary>() == 64, "the summary fills one cache line");

impl ChunkSummary {
    const EMPTY: ChunkSummary = ChunkSummary {
        base_ms: 0,
        last_offset_ms: 0,
        n_samples: 0,
        n_resets: 0,
        last_value: f64::NAN,
        first_value: f64::NAN,
        counter_increase: 0.0,
        sum: 0.0,
        min: f64::NAN,
        max: f64::NAN,
    };

    /// The summary of a chunk whose first sample is at `base_ms`, from its columns.
    pub fn of(base_ms: i64, offsets_ms: &[u32], values: &[f64]) -> ChunkSummary {
        debug_assert_eq!(offsets_ms.len(), values.len());
        let mut summary = ChunkSummary { base_ms, ..ChunkSummary::EMPTY };
        for (&offset_ms, &value) in offsets_ms.iter().zip(values) {
            summary.absorb(offset_ms, value);
        }
        summary
    }

    /// Adds one sample after the others. The only place the summary is computed.
    #[inline]
    fn absorb(&mut self, offset_ms: u32, value: f64) {
        if self.n_samples == 0 {
            *self = ChunkSummary {
                base_ms: self.base_ms,
                last_offset_ms: offset_ms,
                n_samples: 1,
                n_resets: 0,
                last_value: value,
                first_value: value,
                counter_increase: 0.0,
                sum: 0.0 + value,
                min: value,
                max: value,
            };
            return;
        }
        self.n_samples += 1;
        self.last_offset_ms = offset_ms;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.counter_increase += kernels::counter_step(self.last_value, value);
        self.n_resets += u16::from(kernels::is_counter_reset(self.last_value, value));
        self.last_value = value;
    }

    pub fn first_timestamp_ms(&self) -> i64 {
        self.base_ms
    }

    pub fn last_timestamp_ms(&self) -> i64 {
        self.base_ms + i64::from(self.last_offset_ms)
    }
}

/// The heap block of a chunk: the summary first, so that reading it touches the block's first
/// cache line(s) only.
#[repr(C)]
struct ChunkBlock {
    summary: ChunkSummary,
    values: [f64; CHUNK_CAPACITY],
    offsets_ms: [u32; CHUNK_CAPACITY],
}

pub(super) const CHUNK_BLOCK_BYTES: usize = std::mem::size_of::<ChunkBlock>();
const _: () = assert!(CHUNK_BLOCK_BYTES == 64 + CHUNK_CAPACITY * 12, "no padding in the block");

/// Up to [`CHUNK_CAPACITY`] samples with strictly ascending timestamps, all less than
/// `u32::MAX` ms (49.7 days) after the first. A series' chunks ascend too.
/// Inline size: one pointer, so a `VecDeque<Chunk>` costs 8 bytes per chunk.
pub struct Chunk {
    block: Box<ChunkBlock>,
}

const _: () = assert!(std::mem::size_of::<Chunk>() == 8);

impl fmt::Debug for Chunk {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Chunk").field("summary", &self.block.summary).finish_non_exhaustive()
    }
}

/// The samples of a chunk from some index on: its timestamps as offsets from `base_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkSlice<'a> {
    pub base_ms: i64,
    pub offsets_ms: &'a [u32],
    pub values: &'a [f64],
}

impl ChunkSlice<'_> {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Timestamp of the sample at `idx` of this slice.
    pub fn timestamp_ms(&self, idx: usize) -> i64 {
        self.base_ms + i64::from(self.offsets_ms[idx])
    }
}

impl Chunk {
    /// An empty chunk with room for [`CHUNK_CAPACITY`] samples (its one allocation).
    pub fn with_capacity() -> Self {
        Chunk {
            block: Box::new(ChunkBlock {
                summary: ChunkSummary::EMPTY,
                values: [0.0; CHUNK_CAPACITY],
                offsets_ms: [0; CHUNK_CAPACITY],
            }),
        }
    }

    /// Empties the chunk and keeps its block, for reuse by another series.
    pub fn clear(&mut self) {
        self.block.summary = ChunkSummary::EMPTY;
    }

    pub fn len(&self) -> usize {
        self.block.summary.n_samples as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the chunk holds [`CHUNK_CAPACITY`] samples. A chunk that is not full may still
    /// be unable to take a timestamp too far after its first one: use [`Chunk::can_hold`]
    /// before [`Chunk::push`].
    pub fn is_full(&self) -> bool {
        self.len() >= CHUNK_CAPACITY
    }

    /// Whether [`Chunk::push`] may append a sample at `timestamp_ms` (later than the last
    /// sample): the chunk is not full and the timestamp is less than 2³² ms after the first.
    pub fn can_hold(&self, timestamp_ms: i64) -> bool {
        !self.is_full() && (self.is_empty() || self.offset_ms(timestamp_ms).is_some())
    }

    fn offset_ms(&self, timestamp_ms: i64) -> Option<u32> {
        let delta_ms = timestamp_ms.checked_sub(self.block.summary.base_ms)?;
        u32::try_from(delta_ms).ok()
    }

    pub fn last_timestamp_ms(&self) -> Option<i64> {
        (!self.is_empty()).then(|| self.block.summary.last_timestamp_ms())
    }

    /// Appends a sample and updates the summary in O(1). The caller guarantees
    /// [`Chunk::can_hold`]`(timestamp_ms)` and that `timestamp_ms` is later than the last one.
    pub fn push(&mut self, timestamp_ms: i64, value: f64) {
        debug_assert!(self.last_timestamp_ms().is_none_or(|last| last < timestamp_ms));
        assert!(self.can_hold(timestamp_ms), "push into a chunk that cannot hold {timestamp_ms}: check can_hold");
        let idx = self.len();
        let offset_ms = if idx == 0 {
            self.block.summary.base_ms = timestamp_ms;
            0
        } else {
            self.offset_ms(timestamp_ms).expect("can_hold checked the offset")
        };
        let block = &mut *self.block;
        block.values[idx] = value;
        block.offsets_ms[idx] = offset_ms;
        block.summary.absorb(offset_ms, value);
    }

    /// Replaces the value of the last sample (a re-sent point with the same timestamp) and
    /// recomputes the summary: O(n), but overwrites are rare.
    pub fn overwrite_last(&mut self, value: f64) {
        let Some(last_idx) = self.len().checked_sub(1) else { return };
        let block = &mut *self.block;
        block.values[last_idx] = value;
        let n_samples = last_idx + 1;
        block.summary =
            ChunkSummary::of(block.summary.base_ms, &block.offsets_ms[..n_samples], &block.values[..n_samples]);
    }

    /// Starts loading the summary into the cache (both lines it may span: the block is only
    /// 16-byte aligned), so that reading it later overlaps with other work.
    pub fn prefetch_summary(&self) {
        let summary = &self.block.summary;
        kernels::prefetch(summary);
        kernels::prefetch(&summary.max);
    }

    pub fn summary(&self) -> &ChunkSummary {
        &self.block.summary
    }

    /// The value column, oldest first.
    pub fn values(&self) -> &[f64] {
        &self.block.values[..self.len()]
    }

    /// The timestamp column as offsets from [`ChunkSummary::base_ms`].
    pub fn offsets_ms(&self) -> &[u32] {
        &self.block.offsets_ms[..self.len()]
    }

    /// Index of the first sample with `timestamp >= start_ms` (the length when none is).
    pub fn first_idx_at_or_after(&self, start_ms: i64) -> usize {
        let base_ms = self.block.summary.base_ms;
        if self.is_empty() || start_ms <= base_ms {
            return 0;
        }
        let last_offset_ms = self.block.summary.last_offset_ms;
        let start_offset_ms = match start_ms.checked_sub(base_ms).map(u32::try_from) {
            Some(Ok(start_offset_ms)) if start_offset_ms <= last_offset_ms => start_offset_ms,
            // After the last sample (possibly beyond what an offset can express).
            _ => return self.len(),
        };
        // The caller reads the value at the index found next: start loading the line the search
        // will most likely land on now, in parallel with the search's own loads (the first
        // offset is 0 by construction, the base being the first sample's timestamp).
        let guess = kernels::interpolated_idx(0, last_offset_ms, self.len(), start_offset_ms);
        kernels::prefetch(&self.block.values[guess]);
        kernels::first_idx_at_or_after(self.offsets_ms(), start_offset_ms)
    }

    /// Number of samples with `timestamp <= end_ms`: the index just past the last of them.
    pub fn end_idx_at_or_before(&self, end_ms: i64) -> usize {
        if self.last_timestamp_ms().is_none_or(|last_ms| last_ms <= end_ms) {
            return self.len();
        }
        match end_ms.checked_sub(self.block.summary.base_ms).map(u32::try_from) {
            // The first sample with an offset beyond `end_ms`'s.
            Some(Ok(end_offset_ms)) => match end_offset_ms.checked_add(1) {
                Some(after_end_ms) => kernels::first_idx_at_or_after(self.offsets_ms(), after_end_ms),
                None => self.len(),
            },
            // Before the first sample.
            _ => 0,
        }
    }

    /// The samples from index `first_idx` on.
    pub fn slice_from(&self, first_idx: usize) -> ChunkSlice<'_> {
        self.slice(first_idx, self.len())
    }

    /// The samples of indices `first_idx..end_idx`.
    pub fn slice(&self, first_idx: usize, end_idx: usize) -> ChunkSlice<'_> {
        ChunkSlice {
            base_ms: self.block.summary.base_ms,
            offsets_ms: &self.offsets_ms()[first_idx..end_idx],
            values: &self.values()[first_idx..end_idx],
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn same_summary(a: &ChunkSummary, b: &ChunkSummary) -> bool {
        let same = |x: f64, y: f64| x.to_bits() == y.to_bits();
        (a.base_ms, a.n_samples, a.last_offset_ms, a.n_resets) == (b.base_ms, b.n_samples, b.last_offset_ms, b.n_resets)
            && same(a.sum, b.sum)
            && same(a.min, b.min)
            && same(a.max, b.max)
            && same(a.first_value, b.first_value)
            && same(a.last_value, b.last_value)
            && same(a.counter_increase, b.counter_increase)
    }

    fn since(chunk: &Chunk, start_ms: i64) -> ChunkSlice<'_> {
        chunk.slice_from(chunk.first_idx_at_or_after(start_ms))
    }

    #[test]
    fn slices_cut_at_the_window_start() {
        let mut chunk = Chunk::with_capacity();
        for ts in [10, 20, 30, 40] {
            chunk.push(ts, ts as f64 / 10.0);
        }
        let tail = since(&chunk, 25);
        assert_eq!((tail.offsets_ms, tail.values), (&[20, 30][..], &[3.0, 4.0][..]));
        assert_eq!((tail.timestamp_ms(0), tail.timestamp_ms(1)), (30, 40));
        assert_eq!(since(&chunk, 0).len(), 4);
        assert_eq!(since(&chunk, 10).len(), 4);
        assert!(since(&chunk, 41).is_empty());
        assert!(since(&chunk, i64::MAX).is_empty());
        chunk.overwrite_last(9.0);
        assert_eq!(since(&chunk, 40).values, &[9.0]);
        assert_eq!((chunk.summary().first_timestamp_ms(), chunk.last_timestamp_ms()), (10, Some(40)));
    }

    #[test]
    fn summary_follows_pushes_and_overwrites() {
        let mut chunk = Chunk::with_capacity();
        assert!(chunk.is_empty() && chunk.last_timestamp_ms().is_none());
        for (ts, value) in [(1_000, 5.0), (2_000, 7.0), (3_000, 2.0), (4_000, 4.0)] {
            chunk.push(ts, value);
        }
        let summary = *chunk.summary();
        assert_eq!((summary.base_ms, summary.n_samples, summary.last_offset_ms), (1_000, 4, 3_000));
        assert_eq!((summary.sum, summary.min, summary.max), (18.0, 2.0, 7.0));
        assert_eq!((summary.first_value, summary.last_value), (5.0, 4.0));
        // 5 -> 7 (+2), reset to 2 (+2), 2 -> 4 (+2)
        assert_eq!((summary.counter_increase, summary.n_resets), (6.0, 1));
        chunk.overwrite_last(1.0);
        let summary = *chunk.summary();
        assert_eq!((summary.sum, summary.min, summary.last_value, summary.counter_increase), (15.0, 1.0, 1.0, 5.0));
        assert_eq!(summary.n_resets, 2);
        chunk.clear();
        assert!(chunk.is_empty() && chunk.values().is_empty());
        chunk.push(-5, 3.0);
        assert_eq!((chunk.summary().base_ms, chunk.summary().sum, chunk.summary().min), (-5, 3.0, 3.0));
    }

    #[test]
    fn timestamps_beyond_u32_offsets_need_a_new_chunk() {
        let mut chunk = Chunk::with_capacity();
        assert!(chunk.can_hold(i64::MIN) && chunk.can_hold(i64::MAX));
        chunk.push(1_000, 1.0);
        let last_representable_ms = 1_000 + i64::from(u32::MAX);
        assert!(chunk.can_hold(last_representable_ms));
        assert!(!chunk.can_hold(last_representable_ms + 1));
        assert!(!chunk.can_hold(i64::MAX));
        chunk.push(last_representable_ms, 2.0);
        assert_eq!(chunk.last_timestamp_ms(), Some(last_representable_ms));
        assert_eq!(since(&chunk, last_representable_ms).values, &[2.0]);
        assert!(since(&chunk, last_representable_ms + 1).is_empty());
    }

    #[test]
    fn fills_to_capacity_and_is_reused_after_clear() {
        let mut chunk = Chunk::with_capacity();
        for idx in 0..CHUNK_CAPACITY as i64 {
            assert!(chunk.can_hold(idx));
            chunk.push(idx, idx as f64);
        }
        assert!(chunk.is_full() && !chunk.can_hold(CHUNK_CAPACITY as i64));
        assert_eq!(CHUNK_BLOCK_BYTES, 1_504);
        assert_eq!(CHUNK_BLOCK_BYTES - std::mem::size_of::<ChunkSummary>(), CHUNK_CAPACITY * 12);
        chunk.clear();
        assert!(!chunk.is_full() && chunk.can_hold(0));
    }

    proptest! {
        /// After any pushes and overwrites the summary equals the summary of the columns.
        #[test]
        fn summary_is_exact_after_pushes_and_overwrites(
            writes in proptest::collection::vec(
                (any::<bool>(), 1i64..5_000_000_000, prop_oneof![10 => -1e9f64..1e9, 1 => Just(f64::INFINITY)]),
                1..200,
            ),
            base_ms in -1_000_000i64..1_000_000,
        ) {
            let mut chunk = Chunk::with_capacity();
            let mut next_ms = base_ms;
            let mut last_pushed_ms = None;
            for (overwrite, gap_ms, value) in writes {
                if overwrite && !chunk.is_empty() {
                    chunk.overwrite_last(value);
                } else if chunk.can_hold(next_ms) {
                    chunk.push(next_ms, value);
                    last_pushed_ms = Some(next_ms);
                    next_ms += gap_ms;
                } else {
                    break;
                }
                let expected = ChunkSummary::of(base_ms, chunk.offsets_ms(), chunk.values());
                prop_assert!(same_summary(chunk.summary(), &expected), "{:?} vs {expected:?}", chunk.summary());
                prop_assert_eq!(chunk.last_timestamp_ms(), last_pushed_ms);
            }
        }
    }
}
