//! A chunk: up to its size class's capacity of consecutive samples of one series in one heap
//! block, with a summary of them kept exact on every write.
//!
//! Layout of a block (one allocation, reused through the shard's spare chunks of its class):
//!
//! ```text
//! summary      64 B   base, count, sum, min, max, first/last value, counter increase
//! values      8 × N   f64, contiguous for vector loads
//! offsets_ms  4 × N   u32: timestamp - base_ms (the first sample's timestamp)
//! ```
//!
//! N is 8, 32 or 120 ([`ChunkClass`]): 160, 448 or 1,504 bytes. A full chunk of 120 holds 12
//! bytes per sample in the columns, 12.53 with the summary. The class of each new chunk follows
//! the rate the series was pushed at ([`ChunkClass::after`]), so a series pushed once a minute
//! does not reserve two hours of samples. A window query reads only the summary of a chunk that
//! lies entirely inside the window, and scans the columns of the one chunk that straddles the
//! window start (see `window.rs`).

use std::fmt;

use super::kernels;

/// Samples of a full chunk. Two minutes of 1 s samples fit in one chunk, so a series scraped every
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

/// A chunk's size class: how many samples its block has room for. A series' first chunk is
/// [`ChunkClass::Small`]; each later one is sized by [`ChunkClass::after`] from the rate its
/// previous chunk saw, so a series pushed every minute holds a few samples per chunk and one
/// pushed every second holds full chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkClass {
    /// 8 samples: a 160-byte block.
    Small,
    /// 32 samples: 448 bytes.
    Medium,
    /// [`CHUNK_CAPACITY`] samples: 1,504 bytes.
    Full,
}

impl ChunkClass {
    pub const ALL: [ChunkClass; 3] = [ChunkClass::Small, ChunkClass::Medium, ChunkClass::Full];

    pub const fn capacity(self) -> usize {
        match self {
            ChunkClass::Small => 8,
            ChunkClass::Medium => 32,
            ChunkClass::Full => CHUNK_CAPACITY,
        }
    }

    /// Heap bytes of a block of this class.
    pub const fn block_bytes(self) -> usize {
        match self {
            ChunkClass::Small => std::mem::size_of::<Block<8>>(),
            ChunkClass::Medium => std::mem::size_of::<Block<32>>(),
            ChunkClass::Full => std::mem::size_of::<Block<CHUNK_CAPACITY>>(),
        }
    }

    /// Position in [`ChunkClass::ALL`].
    pub const fn idx(self) -> usize {
        self as usize
    }

    /// The sizing policy (with [`ChunkClass::for_rate`]): the class of the chunk that follows `previous` (full, or unable
    /// to reach the next timestamp) in a store that keeps `retention_ms` of samples. It is the
    /// smallest class that holds the samples `previous`'s rate puts in one retention, so that a
    /// chunk spans about a retention: a series holds its window in one or two chunks, and a
    /// chunk is dropped soon after its last sample leaves the window.
    pub fn after(previous: &Chunk, retention_ms: i64) -> ChunkClass {
        match previous.last_timestamp_ms() {
            Some(last_ms) => ChunkClass::for_rate(previous.len(), last_ms - previous.summary().base_ms, retention_ms),
            None => ChunkClass::Small,
        }
    }

    /// The class for a series that has shown `samples` samples over `span_ms` (the first to
    /// the last): the smallest that holds one retention at that rate. Fewer than two samples
    /// (one, whose successor was beyond 32-bit offsets) give no rate: the smallest class.
    pub fn for_rate(samples: usize, span_ms: i64, retention_ms: i64) -> ChunkClass {
        if samples < 2 {
            return ChunkClass::Small;
        }
        // Samples per retention at the rate of the steps seen, rounded up.
        let steps = (samples - 1) as u128;
        let retention_ms = u128::try_from(retention_ms).unwrap_or(0).max(1);
        let span_ms = u128::try_from(span_ms).unwrap_or(0).max(1);
        let per_retention = (retention_ms * steps).div_ceil(span_ms);
        ChunkClass::ALL.into_iter().find(|class| class.capacity() as u128 >= per_retention).unwrap_or(ChunkClass::Full)
    }
}

/// The heap block of a chunk: the summary first, so that reading it touches the block's first
/// cache line(s) only.
#[repr(C)]
struct Block<const N: usize> {
    summary: ChunkSummary,
    values: [f64; N],
    offsets_ms: [u32; N],
}

impl<const N: usize> Block<N> {
    fn boxed() -> Box<Self> {
        Box::new(Block { summary: ChunkSummary::EMPTY, values: [0.0; N], offsets_ms: [0; N] })
    }
}

/// Bytes of the block of a full chunk.
pub(super) const CHUNK_BLOCK_BYTES: usize = ChunkClass::Full.block_bytes();
const _: () = assert!(CHUNK_BLOCK_BYTES == 64 + CHUNK_CAPACITY * 12, "no padding in the block");
const _: () =
    assert!(ChunkClass::Small.block_bytes() == 64 + 8 * 12 && ChunkClass::Medium.block_bytes() == 64 + 32 * 12);

/// The block of each class; the one place that tells them apart.
enum Blocks {
    Small(Box<Block<8>>),
    Medium(Box<Block<32>>),
    Full(Box<Block<CHUNK_CAPACITY>>),
}

/// A block's parts, whatever its class: the summary and the whole of both columns.
struct Parts<'a> {
    summary: &'a ChunkSummary,
    values: &'a [f64],
    offsets_ms: &'a [u32],
}

struct PartsMut<'a> {
    summary: &'a mut ChunkSummary,
    values: &'a mut [f64],
    offsets_ms: &'a mut [u32],
}

impl Blocks {
    fn parts(&self) -> Parts<'_> {
        match self {
            Blocks::Small(block) => {
                Parts { summary: &block.summary, values: &block.values, offsets_ms: &block.offsets_ms }
            }
            Blocks::Medium(block) => {
                Parts { summary: &block.summary, values: &block.values, offsets_ms: &block.offsets_ms }
            }
            Blocks::Full(block) => {
                Parts { summary: &block.summary, values: &block.values, offsets_ms: &block.offsets_ms }
            }
        }
    }

    fn parts_mut(&mut self) -> PartsMut<'_> {
        match self {
            Blocks::Small(block) => {
                PartsMut { summary: &mut block.summary, values: &mut block.values, offsets_ms: &mut block.offsets_ms }
            }
            Blocks::Medium(block) => {
                PartsMut { summary: &mut block.summary, values: &mut block.values, offsets_ms: &mut block.offsets_ms }
            }
            Blocks::Full(block) => {
                PartsMut { summary: &mut block.summary, values: &mut block.values, offsets_ms: &mut block.offsets_ms }
            }
        }
    }

    fn summary(&self) -> &ChunkSummary {
        match self {
            Blocks::Small(block) => &block.summary,
            Blocks::Medium(block) => &block.summary,
            Blocks::Full(block) => &block.summary,
        }
    }
}

/// Up to its class's capacity of samples with strictly ascending timestamps, all less than
/// `u32::MAX` ms (49.7 days) after the first. A series' chunks ascend too.
/// Inline size: a tag and a pointer, so a `VecDeque<Chunk>` costs 16 bytes per chunk.
pub struct Chunk {
    blocks: Blocks,
}

const _: () = assert!(std::mem::size_of::<Chunk>() == 16);

impl fmt::Debug for Chunk {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Chunk")
            .field("class", &self.class())
            .field("summary", self.summary())
            .finish_non_exhaustive()
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
    /// An empty chunk of `class` (its one allocation).
    pub fn new(class: ChunkClass) -> Self {
        let blocks = match class {
            ChunkClass::Small => Blocks::Small(Block::boxed()),
            ChunkClass::Medium => Blocks::Medium(Block::boxed()),
            ChunkClass::Full => Blocks::Full(Block::boxed()),
        };
        Chunk { blocks }
    }

    pub fn class(&self) -> ChunkClass {
        match self.blocks {
            Blocks::Small(_) => ChunkClass::Small,
            Blocks::Medium(_) => ChunkClass::Medium,
            Blocks::Full(_) => ChunkClass::Full,
        }
    }

    /// Empties the chunk and keeps its block, for reuse by another series.
    pub fn clear(&mut self) {
        *self.blocks.parts_mut().summary = ChunkSummary::EMPTY;
    }

    pub fn len(&self) -> usize {
        self.summary().n_samples as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the chunk holds its class's capacity of samples. A chunk that is not full may still
    /// be unable to take a timestamp too far after its first one ([`Chunk::try_push`] says).
    pub fn is_full(&self) -> bool {
        self.len() >= self.class().capacity()
    }

    /// Whether [`Chunk::push`] may append a sample at `timestamp_ms` (later than the last
    /// sample): the chunk is not full and the timestamp is less than 2³² ms after the first.
    /// (The store asks [`Chunk::try_push`], which tells the same by trying.)
    #[cfg(test)]
    pub fn can_hold(&self, timestamp_ms: i64) -> bool {
        !self.is_full() && (self.is_empty() || self.reaches(timestamp_ms))
    }

    /// Whether `timestamp_ms` is less than 2³² ms after the chunk's first sample (its offset
    /// fits), whatever the room left.
    pub fn reaches(&self, timestamp_ms: i64) -> bool {
        timestamp_ms.checked_sub(self.summary().base_ms).is_some_and(|delta_ms| u32::try_from(delta_ms).is_ok())
    }

    pub fn last_timestamp_ms(&self) -> Option<i64> {
        (!self.is_empty()).then(|| self.summary().last_timestamp_ms())
    }

    /// Appends a sample and updates the summary in O(1). The caller guarantees that the chunk
    /// has room and that `timestamp_ms` is later than the last one and less than 2³² ms after
    /// the first (panics otherwise).
    pub fn push(&mut self, timestamp_ms: i64, value: f64) {
        assert!(
            self.try_push(timestamp_ms, value),
            "push into a chunk that cannot hold {timestamp_ms}: check can_hold"
        );
    }

    /// Appends a sample later than the last one if the chunk has room and the timestamp is less
    /// than 2³² ms after the first, and says whether it did: the append path's one look at the block (its class is matched once).
    pub fn try_push(&mut self, timestamp_ms: i64, value: f64) -> bool {
        let PartsMut { summary, values, offsets_ms } = self.blocks.parts_mut();
        let idx = summary.n_samples as usize;
        if idx >= values.len() {
            return false;
        }
        let offset_ms = if idx == 0 {
            summary.base_ms = timestamp_ms;
            0
        } else {
            debug_assert!(summary.last_timestamp_ms() < timestamp_ms);
            match timestamp_ms.checked_sub(summary.base_ms).map(u32::try_from) {
                Some(Ok(offset_ms)) => offset_ms,
                _ => return false,
            }
        };
        values[idx] = value;
        offsets_ms[idx] = offset_ms;
        summary.absorb(offset_ms, value);
        true
    }

    /// Copies every sample of `smaller` into this empty chunk of a class at least as large (a
    /// series' chunk grown to the class its rate asks for). The summary ends as `smaller`'s.
    pub fn fill_from(&mut self, smaller: &Chunk) {
        assert!(self.is_empty() && smaller.len() <= self.class().capacity(), "fill_from needs room for every sample");
        let base_ms = smaller.summary().base_ms;
        for (&offset_ms, &value) in smaller.offsets_ms().iter().zip(smaller.values()) {
            self.push(base_ms + i64::from(offset_ms), value);
        }
    }

    /// Replaces the value of the last sample (a re-sent point with the same timestamp) and
    /// recomputes the summary: O(n), but overwrites are rare.
    pub fn overwrite_last(&mut self, value: f64) {
        let Some(last_idx) = self.len().checked_sub(1) else { return };
        let block = self.blocks.parts_mut();
        block.values[last_idx] = value;
        let n_samples = last_idx + 1;
        *block.summary =
            ChunkSummary::of(block.summary.base_ms, &block.offsets_ms[..n_samples], &block.values[..n_samples]);
    }

    /// Starts loading the summary into the cache (both lines it may span: the block is only
    /// 16-byte aligned), so that reading it later overlaps with other work.
    pub fn prefetch_summary(&self) {
        let summary = self.summary();
        kernels::prefetch(summary);
        kernels::prefetch(&summary.max);
    }

    pub fn summary(&self) -> &ChunkSummary {
        self.blocks.summary()
    }

    /// The value column, oldest first.
    pub fn values(&self) -> &[f64] {
        let Parts { summary, values, .. } = self.blocks.parts();
        &values[..summary.n_samples as usize]
    }

    /// The timestamp column as offsets from [`ChunkSummary::base_ms`].
    pub fn offsets_ms(&self) -> &[u32] {
        let Parts { summary, offsets_ms, .. } = self.blocks.parts();
        &offsets_ms[..summary.n_samples as usize]
    }

    /// Index of the first sample with `timestamp >= start_ms` (the length when none is).
    pub fn first_idx_at_or_after(&self, start_ms: i64) -> usize {
        let Parts { summary, values, offsets_ms } = self.blocks.parts();
        let base_ms = summary.base_ms;
        let len = summary.n_samples as usize;
        if len == 0 || start_ms <= base_ms {
            return 0;
        }
        let last_offset_ms = summary.last_offset_ms;
        let start_offset_ms = match start_ms.checked_sub(base_ms).map(u32::try_from) {
            Some(Ok(start_offset_ms)) if start_offset_ms <= last_offset_ms => start_offset_ms,
            // After the last sample (possibly beyond what an offset can express).
            _ => return len,
        };
        // The caller reads the value at the index found next: start loading the line the search
        // will most likely land on now, in parallel with the search's own loads (the first
        // offset is 0 by construction, the base being the first sample's timestamp).
        let guess = kernels::interpolated_idx(0, last_offset_ms, len, start_offset_ms);
        kernels::prefetch(&values[guess]);
        kernels::first_idx_at_or_after(&offsets_ms[..len], start_offset_ms)
    }

    /// Number of samples with `timestamp <= end_ms`: the index just past the last of them.
    pub fn end_idx_at_or_before(&self, end_ms: i64) -> usize {
        if self.last_timestamp_ms().is_none_or(|last_ms| last_ms <= end_ms) {
            return self.len();
        }
        match end_ms.checked_sub(self.summary().base_ms).map(u32::try_from) {
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
        let Parts { summary, values, offsets_ms } = self.blocks.parts();
        let len = summary.n_samples as usize;
        ChunkSlice {
            base_ms: summary.base_ms,
            offsets_ms: &offsets_ms[..len][first_idx..end_idx],
            values: &values[..len][first_idx..end_idx],
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
        let mut chunk = Chunk::new(ChunkClass::Full);
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
        let mut chunk = Chunk::new(ChunkClass::Full);
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
        let mut chunk = Chunk::new(ChunkClass::Full);
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
        let mut chunk = Chunk::new(ChunkClass::Full);
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

    #[test]
    fn each_class_fills_to_its_own_capacity() {
        for class in ChunkClass::ALL {
            let mut chunk = Chunk::new(class);
            assert_eq!(chunk.class(), class);
            for idx in 0..class.capacity() as i64 {
                assert!(chunk.can_hold(idx));
                chunk.push(idx, idx as f64);
            }
            assert!(chunk.is_full() && !chunk.can_hold(class.capacity() as i64));
            assert_eq!(chunk.values().len(), class.capacity());
            assert_eq!(chunk.summary().sum, (0..class.capacity()).map(|idx| idx as f64).sum::<f64>());
            assert_eq!(class.block_bytes(), 64 + class.capacity() * 12);
        }
        assert_eq!(ChunkClass::ALL.map(ChunkClass::capacity), [8, 32, CHUNK_CAPACITY]);
    }

    fn filled(class: ChunkClass, interval_ms: i64) -> Chunk {
        let mut chunk = Chunk::new(class);
        for idx in 0..class.capacity() as i64 {
            chunk.push(1_000 + idx * interval_ms, 1.0);
        }
        chunk
    }

    #[test]
    fn the_next_chunk_holds_about_one_retention_at_the_previous_rate() {
        let retention_ms = 120_000;
        // Every second: 120 samples per retention.
        assert_eq!(ChunkClass::after(&filled(ChunkClass::Small, 1_000), retention_ms), ChunkClass::Full);
        assert_eq!(ChunkClass::after(&filled(ChunkClass::Full, 1_000), retention_ms), ChunkClass::Full);
        // Every 5 s: 24 samples per retention.
        assert_eq!(ChunkClass::after(&filled(ChunkClass::Small, 5_000), retention_ms), ChunkClass::Medium);
        assert_eq!(ChunkClass::after(&filled(ChunkClass::Full, 5_000), retention_ms), ChunkClass::Medium);
        // Every 15 s (8 per retention) or every minute.
        assert_eq!(ChunkClass::after(&filled(ChunkClass::Small, 15_000), retention_ms), ChunkClass::Small);
        assert_eq!(ChunkClass::after(&filled(ChunkClass::Medium, 60_000), retention_ms), ChunkClass::Small);
        // Faster than a retention holds: the largest class.
        assert_eq!(ChunkClass::after(&filled(ChunkClass::Small, 1), i64::MAX), ChunkClass::Full);
        // One sample (the next was beyond 32-bit offsets), or none: no rate to go by.
        let mut single = Chunk::new(ChunkClass::Full);
        assert_eq!(ChunkClass::after(&single, retention_ms), ChunkClass::Small);
        single.push(0, 1.0);
        assert_eq!(ChunkClass::after(&single, retention_ms), ChunkClass::Small);
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
            let mut chunk = Chunk::new(ChunkClass::Full);
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
