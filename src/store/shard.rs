//! A shard: a slice of all series (chosen by series hash) with its own index and postings.
//!
//! Each shard sits behind one lock in [`super::Store`]; a batch takes each shard's lock once.
//! Slots of removed series and the chunks they held are reused by new ones.
//!
//! **Consistent at every step.** A panic may unwind out of any change made under the shard's
//! lock (the lock does not poison), so each change leaves the shard whole: a series is in the
//! index exactly when its slot holds it and its metric's postings list it (an insert first makes
//! room in all three, then fills them with operations that cannot fail; a removal takes it out
//! of all three before the next series is looked at); a live series always has a chunk with a
//! sample; a chunk push updates summary and columns together; and the store's counts
//! ([`super::accounting`]) change in the same step as the structure they count.

use std::ops::ControlFlow;

use hashbrown::HashTable;

use super::accounting::{Accounting, SeriesReservation};
use super::chunk::{Chunk, ChunkClass};
use super::series_key::{Labels, SeriesRef};
use super::window::{SeriesKind, SeriesWindow};

/// Index of a series inside its shard.
pub(super) type SeriesIdx = u32;

/// Spare chunks kept per shard and class for reuse; beyond this they are freed.
const SPARE_CHUNKS_MAX: usize = 4096;

/// Emptied chunks kept for reuse, by class: a new chunk of a class takes one of its class.
#[derive(Debug, Default)]
struct SpareChunks {
    by_class: [Vec<Chunk>; ChunkClass::ALL.len()],
}

impl SpareChunks {
    fn take(&mut self, class: ChunkClass) -> Option<Chunk> {
        self.by_class[class.idx()].pop()
    }

    /// A spare chunk of `class`, or a new one if `--max-store-bytes` has room for it.
    fn take_or_allocate(&mut self, class: ChunkClass, accounting: &Accounting) -> Option<Chunk> {
        match self.take(class) {
            Some(chunk) => Some(chunk),
            None if accounting.try_reserve_bytes(chunk_bytes(class)) => Some(Chunk::new(class)),
            None => None,
        }
    }

    fn has(&self, class: ChunkClass) -> bool {
        !self.by_class[class.idx()].is_empty()
    }

    /// Keeps `chunk` (emptied) for reuse, or gives it back when its class has enough spares.
    fn keep(&mut self, mut chunk: Chunk) -> Option<Chunk> {
        let spares = &mut self.by_class[chunk.class().idx()];
        if spares.len() >= SPARE_CHUNKS_MAX {
            return Some(chunk);
        }
        chunk.clear();
        spares.push(chunk);
        None
    }

    fn bytes(&self) -> usize {
        ChunkClass::ALL.iter().map(|&class| self.by_class[class.idx()].len() * chunk_bytes(class)).sum()
    }
}

/// A postings entry of a series removed while a query was walking the shard (see
/// [`MetricPostings`]).
const TOMBSTONE: SeriesIdx = SeriesIdx::MAX;

/// The slots of one metric's series, in insertion order. A query walks them in runs, releasing
/// the shard's lock between runs, and resumes by position; so while a walk is under way,
/// retention does not shift positions: it replaces a removed series by a [`TOMBSTONE`], and
/// removes tombstones only when no walk is under way (`compact`).
#[derive(Debug, Default)]
struct MetricPostings {
    series_idxs: Vec<SeriesIdx>,
    tombstones: usize,
}

/// Index of a metric inside its shard.
type MetricIdx = u32;

/// A metric with series in the shard: its name (held once for all of them) and their postings.
#[derive(Debug)]
struct Metric {
    name: Box<str>,
    postings: MetricPostings,
}

/// The hash of a metric name in a shard's table of metrics.
fn metric_table_hash(metric_name: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = foldhash::fast::FixedState::with_seed(LABEL_POSTING_SEED).build_hasher();
    hasher.write(metric_name.as_bytes());
    hasher.write_u8(0xfe);
    hasher.finish()
}

/// The hash a series is filed under in its shard's index, from the low half of its series hash
/// (the half a series keeps: the high half, its label set's, picked the shard): multiplied by an
/// odd constant so that its high bits, which pick the control byte, are mixed too.
fn index_hash(key_hash_low: u32) -> u64 {
    u64::from(key_hash_low).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Where a run of a metric walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunEnd<B> {
    /// More series from this postings position on.
    Next(usize),
    /// Every series of the metric in the shard was visited.
    Done,
    /// The visitor stopped the walk.
    Stopped(B),
}
/// Bytes a series holds besides its chunks (its label set and its metric's entry are shared,
/// and counted once: [`label_set_bytes`], [`metric_entry_bytes`]), as counted against
/// `--max-store-bytes`: its slot, its index entry (slot number and control byte), its postings
/// entry and its entry in its label set's series.
pub(super) const SERIES_BYTES: usize =
    std::mem::size_of::<Option<Series>>() + std::mem::size_of::<SeriesIdx>() + 1 + 2 * std::mem::size_of::<SeriesIdx>();

/// Bytes one label of a label set is counted for in the label index: its position, and a
/// postings list of its own (map key, list, control byte). A label shared with other sets
/// shares their list and takes less (4 bytes in it); the count is an upper bound, the same at
/// insert and removal.
const LABEL_INDEX_BYTES_PER_LABEL: usize =
    std::mem::size_of::<u32>() + std::mem::size_of::<u64>() + std::mem::size_of::<LabelPostings>() + 1;

/// Bytes a label set of `n_labels` labels whose encoding takes `encoded_len` bytes holds: the
/// encoding, its slot and table entry, and its labels' place in the label index.
pub(super) const fn label_set_bytes(n_labels: usize, encoded_len: usize) -> usize {
    encoded_len
        + std::mem::size_of::<Option<LabelSet>>()
        + std::mem::size_of::<LabelSetIdx>()
        + 1
        + n_labels * LABEL_INDEX_BYTES_PER_LABEL
}

/// Bytes a metric's entry in a shard holds: its name (shared by its series there), its slot and
/// its table entry.
pub(super) fn metric_entry_bytes(metric_name: &str) -> usize {
    metric_name.len() + std::mem::size_of::<Option<Metric>>() + std::mem::size_of::<MetricIdx>() + 1
}

/// Seed of [`label_posting_hash`].
const LABEL_POSTING_SEED: u64 = 0x6c61_6265_6c5f_6978;

/// The label index's key of one label (`name`, `value`) of a label set. Two pairs may share a
/// key (their postings merge): readers of the index check every candidate against its key, so
/// a shared key costs time, never a wrong answer.
fn label_posting_hash(name: &[u8], value: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = foldhash::fast::FixedState::with_seed(LABEL_POSTING_SEED).build_hasher();
    hasher.write(name);
    hasher.write(value);
    hasher.finish()
}

/// The key of a label name in the label index's value sets (shared keys merge sets: readers
/// check what the values lead to, as for postings).
fn label_name_hash(name: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = foldhash::fast::FixedState::with_seed(LABEL_POSTING_SEED).build_hasher();
    hasher.write(name);
    hasher.write_u8(0xff);
    hasher.finish()
}

/// The label index keys of a label set's labels, in its order (read as bytes: no UTF-8 check on
/// this path).
fn label_posting_hashes(labels: &Labels) -> impl Iterator<Item = u64> + '_ {
    labels.bytes_iter().map(|(name, value)| label_posting_hash(name, value))
}

/// One label's postings: the label sets that have it. Most labels that tell sets apart (a pod,
/// a GPU) are on one or two: those lists live inline, without an allocation of their own.
type LabelPostings = smallvec::SmallVec<[LabelSetIdx; 2]>;

/// The distinct values of one label name in a shard, as the sets hold them (bytes of UTF-8
/// text, whose order is the text's), in order: a regex with literal prefixes reads only the
/// ranges that start with them (a hash set tested every value's prefix: 7x slower over 2,000
/// values). Made the first time a regex reads the name here, then kept exact: sets kept for
/// every label cost restore +18% instructions per series, for labels no regex may ever read.
type LabelValues = std::collections::BTreeSet<Box<[u8]>>;

/// Value sets a shard makes at most. A query names any label it likes, and a set, once made, is
/// kept (and costs one pass over the shard's label sets to make): beyond this many, a regex
/// over a label without a set walks its metric instead.
const LABEL_VALUE_SETS_MAX: usize = 1024;

/// A condition on one label by which the label index narrows a walk over a metric's series.
#[derive(Debug, Clone, Copy)]
pub enum LabelNarrowing<'q> {
    /// Series whose label `name` has `value` (not empty: an empty value also matches series
    /// without the label, which the index does not list).
    Equal { name: &'q str, value: &'q str },
    /// Series whose label `name` has a value `matches` accepts, tested once per distinct value.
    /// `matches` must not accept the empty value (same reason). `prefixes`, if given: every value
    /// it accepts starts with one of them (then only those values are tested).
    Matching { name: &'q str, matches: &'q regex::Regex, prefixes: Option<&'q [String]> },
}

/// A label set's label index keys, on the stack for up to 16 labels.
type LabelHashes = smallvec::SmallVec<[u64; 16]>;

/// Bytes a chunk of `class` holds, as counted against `--max-store-bytes`: its block and its
/// place in the series' chunk queue. Spare chunks count too: the store holds them.
pub(super) const fn chunk_bytes(class: ChunkClass) -> usize {
    class.block_bytes() + std::mem::size_of::<Chunk>()
}

/// A series' chunks: one inline, more on the heap.
pub(super) type SeriesChunks = smallvec::SmallVec<[Chunk; 1]>;

/// Index of a label set inside its shard.
pub(super) type LabelSetIdx = u32;

/// One distinct label set of a shard, shared by the series of every metric that carries it.
#[derive(Debug)]
pub(super) struct LabelSet {
    labels: Labels,
    /// [`label_set_hash`](super::series_key::label_set_hash) of the labels.
    hash: u64,
    /// The series with this label set (at most one per metric), in no order. A removal fills
    /// its place with the last entry, whose position is updated.
    series: smallvec::SmallVec<[SeriesIdx; 4]>,
    /// Position of this set in the label index's postings of each of its labels (in its order).
    label_positions: Box<[u32]>,
}

#[derive(Debug)]
pub(super) struct Series {
    metric: MetricIdx,
    /// The low half of the series hash ([`index_hash`]).
    key_hash_low: u32,
    /// Oldest first. Inline while the series has one chunk (most series, whatever their rate,
    /// hold one to three); retention takes chunks from the front.
    pub chunks: SeriesChunks,
    label_set: LabelSetIdx,
    /// Position of this series in its label set's `series`.
    label_set_pos: u32,
    /// Position of this series in its metric's postings.
    postings_pos: u32,
    pub kind: SeriesKind,
}

/// The key of `series`, whose metric is in `metrics` and label set in `label_sets`.
fn key_of<'a>(metrics: &'a [Option<Metric>], label_sets: &'a [Option<LabelSet>], series: &'a Series) -> SeriesRef<'a> {
    let metric = metrics[series.metric as usize].as_ref().expect("a live series' metric is live");
    let set = label_sets[series.label_set as usize].as_ref().expect("a live series' label set is live");
    SeriesRef::new(&metric.name, &set.labels)
}

/// The label set of a series about to be inserted: one the shard holds, or a new one (with its
/// [`label_set_hash`](super::series_key::label_set_hash)).
#[derive(Debug)]
pub(super) enum NewSeriesLabels {
    Known(LabelSetIdx),
    New { labels: Labels, hash: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AppendResult {
    Appended,
    /// Same timestamp as the last sample: the value was replaced (a retried export).
    Overwritten,
    /// Older than the series' last sample: not stored.
    OutOfOrder,
    /// A new chunk was needed, no spare one was left and `--max-store-bytes` is reached.
    StoreFull,
}

impl Series {
    /// The hash the series is filed under in its shard's index.
    fn index_hash(&self) -> u64 {
        index_hash(self.key_hash_low)
    }

    pub fn last_timestamp_ms(&self) -> Option<i64> {
        self.chunks.last().and_then(Chunk::last_timestamp_ms)
    }

    fn append(
        &mut self,
        timestamp_ms: i64,
        value: f64,
        spare_chunks: &mut SpareChunks,
        retention_ms: i64,
        accounting: &Accounting,
    ) -> AppendResult {
        if let Some(last_ms) = self.last_timestamp_ms() {
            if timestamp_ms < last_ms {
                return AppendResult::OutOfOrder;
            }
            if timestamp_ms == last_ms {
                if let Some(chunk) = self.chunks.last_mut() {
                    chunk.overwrite_last(value);
                }
                return AppendResult::Overwritten;
            }
        }
        // The common case: the last chunk has room.
        if self.chunks.last_mut().is_some_and(|chunk| chunk.try_push(timestamp_ms, value)) {
            return AppendResult::Appended;
        }
        // A full chunk, or one whose 32-bit offsets cannot reach this timestamp, ends here; or,
        // full and of a smaller class than the series' rate asks for, it grows: its samples
        // move to a chunk of that class (at most twice in a series' life, 8 and 32 samples).
        if let Some(previous) = self.chunks.last() {
            let class = ChunkClass::after(previous, retention_ms);
            let Some(mut chunk) = spare_chunks.take_or_allocate(class, accounting) else {
                return AppendResult::StoreFull;
            };
            // Not when the new sample is too far after the chunk's first for its offsets.
            let grows =
                class.capacity() > previous.class().capacity() && previous.is_full() && previous.reaches(timestamp_ms);
            if grows {
                chunk.fill_from(previous);
                let outgrown = std::mem::replace(self.chunks.last_mut().expect("the previous chunk"), chunk);
                if let Some(freed) = spare_chunks.keep(outgrown) {
                    accounting.release_bytes(chunk_bytes(freed.class()));
                }
            } else {
                self.chunks.push(chunk);
            }
        } else {
            // Never left empty by the store (a series is created with its first chunk).
            let Some(chunk) = spare_chunks.take_or_allocate(ChunkClass::Small, accounting) else {
                return AppendResult::StoreFull;
            };
            self.chunks.push(chunk);
        }
        let chunk = self.chunks.last_mut().expect("a chunk with room was just ensured");
        chunk.push(timestamp_ms, value);
        AppendResult::Appended
    }
}

#[derive(Debug)]
pub(super) struct Shard {
    /// Series hash → slot; equality is checked against the stored key.
    index: HashTable<SeriesIdx>,
    slots: Vec<Option<Series>>,
    free_slots: Vec<SeriesIdx>,
    /// The metrics with series here, each with the slots of its series (its postings), so a
    /// query touches only its metric's series. A metric's postings may be empty for an instant
    /// (made while inserting its first series here).
    metrics: Vec<Option<Metric>>,
    free_metrics: Vec<MetricIdx>,
    /// [`metric_table_hash`] → metric slot; equality is checked against the stored name.
    metric_index: HashTable<MetricIdx>,
    /// Tombstones in all metrics' postings.
    tombstones: usize,
    /// [`label_set_hash`](super::series_key::label_set_hash) → label set slot; equality is checked against the stored labels.
    label_set_index: HashTable<LabelSetIdx>,
    /// The distinct label sets of the shard's series; a set lives while a series has it.
    label_sets: Vec<Option<LabelSet>>,
    free_label_sets: Vec<LabelSetIdx>,
    /// The label index: [`label_posting_hash`] of (label name, label value) → the label sets
    /// with that label, in no order. Kept exact on every insert and removal of a set (a removal
    /// fills its place with the list's last entry), so it needs no tombstones: a walk copies the
    /// candidates it needs under the lock.
    label_postings: hashbrown::HashMap<u64, LabelPostings, foldhash::fast::FixedState>,
    /// [`label_name_hash`] of a label name → the distinct values the shard's label sets have,
    /// each with a non-empty list in `label_postings`, for the names a regex has read (made by
    /// [`Shard::index_label_values`], never dropped); kept exact with the postings. A regex
    /// matcher is tested once per value, not once per series.
    label_values: hashbrown::HashMap<u64, LabelValues, foldhash::fast::FixedState>,
    spare_chunks: SpareChunks,
    /// The store's retention, which sizes new chunks ([`ChunkClass::after`]).
    retention_ms: i64,
}

impl Shard {
    pub fn new(retention_ms: i64) -> Self {
        Shard {
            index: HashTable::default(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            metrics: Vec::new(),
            free_metrics: Vec::new(),
            metric_index: HashTable::default(),
            tombstones: 0,
            label_set_index: HashTable::default(),
            label_sets: Vec::new(),
            free_label_sets: Vec::new(),
            label_postings: Default::default(),
            label_values: Default::default(),
            spare_chunks: SpareChunks::default(),
            retention_ms,
        }
    }

    /// The series with hash `key_hash` for which `is_same` holds.
    pub fn find(&self, key_hash: u64, is_same: impl Fn(SeriesRef<'_>) -> bool) -> Option<SeriesIdx> {
        let Shard { index, slots, metrics, label_sets, .. } = self;
        index
            .find(index_hash(key_hash as u32), |&idx| {
                slots[idx as usize].as_ref().is_some_and(|series| is_same(key_of(metrics, label_sets, series)))
            })
            .copied()
    }

    /// The metric named `metric_name`, if it has series here.
    fn metric_idx(&self, metric_name: &str) -> Option<MetricIdx> {
        let Shard { metric_index, metrics, .. } = self;
        metric_index
            .find(metric_table_hash(metric_name), |&idx| {
                metrics[idx as usize].as_ref().is_some_and(|metric| *metric.name == *metric_name)
            })
            .copied()
    }

    fn metric(&self, metric_name: &str) -> Option<&Metric> {
        self.metric_idx(metric_name).and_then(|idx| self.metrics[idx as usize].as_ref())
    }

    /// The label set with hash `hash` ([`label_set_hash`](super::series_key::label_set_hash)) for which `is_same` holds.
    pub fn find_label_set(&self, hash: u64, is_same: impl Fn(&Labels) -> bool) -> Option<LabelSetIdx> {
        let Shard { label_set_index, label_sets, .. } = self;
        label_set_index
            .find(hash, |&idx| label_sets[idx as usize].as_ref().is_some_and(|set| is_same(&set.labels)))
            .copied()
    }

    /// Makes room for `additional` series (and as many label sets).
    pub fn reserve(&mut self, additional: usize) {
        let slots = &self.slots;
        self.index.reserve(additional, |&idx| slots[idx as usize].as_ref().map_or(0, Series::index_hash));
        self.slots.reserve(additional);
        let label_sets = &self.label_sets;
        self.label_set_index.reserve(additional, |&idx| label_sets[idx as usize].as_ref().map_or(0, |set| set.hash));
        self.label_sets.reserve(additional);
    }

    /// Bytes a new series of `metric_name` with a first chunk of `first_chunk` would take here,
    /// as [`Shard::insert`] counts them: the series, its metric's entry if it is the metric's
    /// first here, its label set if `new_label_set` (the set's label count and encoded length:
    /// the shard does not hold it) and, unless a spare one is left, the chunk.
    pub fn new_series_bytes(
        &self,
        metric_name: &str,
        new_label_set: Option<(usize, usize)>,
        first_chunk: ChunkClass,
    ) -> usize {
        let first_chunk_bytes = if self.spare_chunks.has(first_chunk) { 0 } else { chunk_bytes(first_chunk) };
        let metric_bytes = if self.metric_idx(metric_name).is_some() { 0 } else { metric_entry_bytes(metric_name) };
        let label_set_bytes = new_label_set.map_or(0, |(n_labels, encoded_len)| label_set_bytes(n_labels, encoded_len));
        SERIES_BYTES + metric_bytes + label_set_bytes + first_chunk_bytes
    }

    /// Adds the series of `metric_name` with `labels` (reserved for [`Shard::new_series_bytes`]
    /// of it), which the caller checked is absent, with an empty first chunk. Room is made in the
    /// slots, the index, the postings, the label sets and the label index first; then the
    /// reservation is committed and all are filled by steps that cannot fail.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        reservation: SeriesReservation<'_>,
        metric_name: &str,
        labels: NewSeriesLabels,
        key_hash: u64,
        kind: SeriesKind,
        first_chunk: ChunkClass,
    ) -> SeriesIdx {
        let metric_idx = self.metric_idx(metric_name);
        let Shard {
            index,
            slots,
            free_slots,
            metrics,
            free_metrics,
            metric_index,
            label_set_index,
            label_sets,
            free_label_sets,
            spare_chunks,
            label_postings,
            label_values,
            ..
        } = self;
        // Room first: whatever may allocate (or fail) happens before anything is visible, but
        // for a new metric's (empty) postings list.
        let free_slot = free_slots.last().copied();
        if free_slot.is_none() {
            SeriesIdx::try_from(slots.len()).expect("series per shard fit in u32");
            slots.reserve(1);
        }
        index.reserve(1, |&other| slots[other as usize].as_ref().map_or(0, Series::index_hash));
        let metric_idx = match metric_idx {
            Some(metric_idx) => metric_idx,
            None => {
                let metric = Metric { name: metric_name.into(), postings: MetricPostings::default() };
                let metric_idx = match free_metrics.pop() {
                    Some(free) => {
                        metrics[free as usize] = Some(metric);
                        free
                    }
                    None => {
                        metrics.push(Some(metric));
                        MetricIdx::try_from(metrics.len() - 1).expect("metrics per shard fit in u32")
                    }
                };
                metric_index.insert_unique(metric_table_hash(metric_name), metric_idx, |&other| {
                    metrics[other as usize].as_ref().map_or(0, |metric| metric_table_hash(&metric.name))
                });
                metric_idx
            }
        };
        let series_idxs =
            &mut metrics[metric_idx as usize].as_mut().expect("the series' metric is live").postings.series_idxs;
        series_idxs.reserve(1);
        let postings_pos = u32::try_from(series_idxs.len()).expect("series per shard fit in u32");
        let new_set = match labels {
            NewSeriesLabels::Known(set_idx) => {
                let set = label_sets[set_idx as usize].as_mut().expect("a known label set is live");
                set.series.reserve(1);
                Err(set_idx)
            }
            NewSeriesLabels::New { labels, hash } => {
                if free_label_sets.is_empty() {
                    LabelSetIdx::try_from(label_sets.len()).expect("label sets per shard fit in u32");
                    label_sets.reserve(1);
                }
                label_set_index.reserve(1, |&other| label_sets[other as usize].as_ref().map_or(0, |set| set.hash));
                // Room in the map for a list per label; a list's own push allocates at most (and
                // an allocation failure aborts, it does not unwind).
                label_postings.reserve(labels.len());
                let label_positions = vec![0u32; labels.len()].into_boxed_slice();
                Ok(LabelSet { labels, hash, series: smallvec::SmallVec::new(), label_positions })
            }
        };
        let mut chunks = SeriesChunks::new();
        chunks.push(spare_chunks.take(first_chunk).unwrap_or_else(|| Chunk::new(first_chunk)));
        // Then the steps that cannot fail: counts, label set, slot, index, postings.
        reservation.commit();
        let idx = free_slot.unwrap_or(slots.len() as SeriesIdx);
        let set_idx = match new_set {
            Err(set_idx) => set_idx,
            Ok(mut set) => {
                let set_idx = free_label_sets.last().copied().unwrap_or(label_sets.len() as LabelSetIdx);
                let hashes: LabelHashes = label_posting_hashes(&set.labels).collect();
                for (position, &hash) in set.label_positions.iter_mut().zip(&hashes) {
                    let list = label_postings.entry(hash).or_default();
                    // A list holds at most one entry per label of every set of the shard.
                    *position = list.len() as u32;
                    list.push(set_idx);
                }
                if !label_values.is_empty() {
                    // Every label is looked up, not only those whose list is new: a list that two
                    // labels' keys share must not hide the second value from its set.
                    for (name, value) in set.labels.bytes_iter() {
                        if let Some(values) = label_values.get_mut(&label_name_hash(name)) {
                            if !values.contains(value) {
                                values.insert(Box::from(value));
                            }
                        }
                    }
                }
                let hash = set.hash;
                match free_label_sets.pop() {
                    Some(free) => label_sets[free as usize] = Some(set),
                    None => label_sets.push(Some(set)),
                }
                label_set_index.insert_unique(hash, set_idx, |&other| {
                    label_sets[other as usize].as_ref().map_or(0, |set| set.hash)
                });
                set_idx
            }
        };
        let set = label_sets[set_idx as usize].as_mut().expect("the series' label set is live");
        let label_set_pos = set.series.len() as u32;
        set.series.push(idx);
        let key_hash_low = key_hash as u32;
        let series =
            Series { metric: metric_idx, key_hash_low, chunks, label_set: set_idx, label_set_pos, postings_pos, kind };
        match free_slot {
            Some(free) => {
                free_slots.pop();
                slots[free as usize] = Some(series);
            }
            None => slots.push(Some(series)),
        }
        index.insert_unique(index_hash(key_hash_low), idx, |&other| {
            slots[other as usize].as_ref().map_or(0, Series::index_hash)
        });
        series_idxs.push(idx);
        idx
    }

    /// Appends a sample to an existing series; `kind` is the kind the sample was reported with.
    pub fn append(
        &mut self,
        idx: SeriesIdx,
        kind: SeriesKind,
        timestamp_ms: i64,
        value: f64,
        accounting: &Accounting,
    ) -> AppendResult {
        let series = self.slots[idx as usize].as_mut().expect("slot of a live series");
        series.kind = kind;
        series.append(timestamp_ms, value, &mut self.spare_chunks, self.retention_ms, accounting)
    }

    /// Calls `visit` with the live series of `metric_name` at postings positions
    /// `first_position..first_position + series_max`, each with a window over its samples
    /// stamped in `start_ms..=end_ms`, until `visit` breaks.
    pub fn visit_metric_run<B>(
        &self,
        metric_name: &str,
        first_position: usize,
        series_max: usize,
        (start_ms, end_ms): (i64, i64),
        visit: &mut impl FnMut(SeriesRef<'_>, SeriesWindow<'_>) -> ControlFlow<B>,
    ) -> RunEnd<B> {
        let Some(metric) = self.metric(metric_name) else { return RunEnd::Done };
        let series_idxs = &metric.postings.series_idxs;
        let end_position = first_position.saturating_add(series_max).min(series_idxs.len());
        for &idx in series_idxs.get(first_position..end_position).unwrap_or_default() {
            let Some(series) = self.slots.get(idx as usize).and_then(Option::as_ref) else { continue };
            let key = key_of(&self.metrics, &self.label_sets, series);
            if let ControlFlow::Break(stop) =
                visit(key, SeriesWindow::new(series.kind, &series.chunks, start_ms, end_ms))
            {
                return RunEnd::Stopped(stop);
            }
        }
        if end_position < series_idxs.len() {
            RunEnd::Next(end_position)
        } else {
            RunEnd::Done
        }
    }

    /// Panics unless the label sets and the label index are exact: every live series in its
    /// set's list at the position it records, every live set in the table and in the postings
    /// of each of its labels at the positions it records, no set without a series, no stale
    /// entry (for tests).
    #[cfg(test)]
    pub fn check_label_index(&self) {
        for (idx, series) in self.slots.iter().enumerate() {
            let Some(series) = series else { continue };
            let metric = self.metrics[series.metric as usize].as_ref().expect("a live series' metric is live");
            assert_eq!(
                metric.postings.series_idxs.get(series.postings_pos as usize),
                Some(&(idx as SeriesIdx)),
                "series {idx} in its metric's postings"
            );
            assert_eq!(self.metric_idx(&metric.name), Some(series.metric), "the metric is in the table");
            assert_eq!(
                self.find(u64::from(series.key_hash_low), |key| key.metric_name() == &*metric.name
                    && key.label_set() == &self.label_sets[series.label_set as usize].as_ref().expect("live").labels),
                Some(idx as SeriesIdx),
                "series {idx} is in the index"
            );
            let set = self.label_sets[series.label_set as usize].as_ref().expect("a live series' set is live");
            assert_eq!(
                set.series.get(series.label_set_pos as usize),
                Some(&(idx as SeriesIdx)),
                "series {idx} in its set"
            );
        }
        let mut entries = 0;
        let mut sets = 0;
        for (set_idx, set) in self.label_sets.iter().enumerate() {
            let Some(set) = set else { continue };
            sets += 1;
            assert!(!set.series.is_empty(), "no label set without a series");
            for &idx in &set.series {
                let series = self.slots[idx as usize].as_ref().expect("a set lists live series");
                assert_eq!(series.label_set as usize, set_idx, "a set lists its own series");
            }
            assert_eq!(self.find_label_set(set.hash, |labels| *labels == set.labels), Some(set_idx as LabelSetIdx));
            for (hash, &position) in label_posting_hashes(&set.labels).zip(set.label_positions.iter()) {
                let list = self.label_postings.get(&hash).expect("a live set's label is indexed");
                assert_eq!(
                    list.get(position as usize),
                    Some(&(set_idx as LabelSetIdx)),
                    "set {set_idx} at its position"
                );
                entries += 1;
            }
        }
        assert_eq!(self.label_set_index.len(), sets, "one table entry per live set");
        assert_eq!(self.metric_index.len(), self.metrics.iter().flatten().count(), "one table entry per live metric");
        assert_eq!(self.label_postings.values().map(|list| list.len()).sum::<usize>(), entries, "no stale entry");
        assert!(self.label_postings.values().all(|list| !list.is_empty()), "no empty list kept");
        // The value sets made (a regex read their name) hold exactly the live sets' values.
        let mut live_values = std::collections::BTreeSet::new();
        for set in self.label_sets.iter().flatten() {
            for (name, value) in set.labels.bytes_iter() {
                let name_hash = label_name_hash(name);
                if let Some(values) = self.label_values.get(&name_hash) {
                    assert!(values.contains(value), "a live value is in its set");
                    live_values.insert((name_hash, value.to_owned()));
                }
            }
        }
        assert_eq!(
            self.label_values.values().map(LabelValues::len).sum::<usize>(),
            live_values.len(),
            "no stale value"
        );
    }

    /// Postings of `metric_name` in this shard, tombstones included (for tests).
    #[cfg(test)]
    pub fn metric_postings_len(&self, metric_name: &str) -> usize {
        self.metric(metric_name).map_or(0, |metric| metric.postings.series_idxs.len())
    }

    /// Label sets held (for tests).
    #[cfg(test)]
    pub fn label_set_count(&self) -> usize {
        self.label_set_index.len()
    }

    /// Calls `visit` with the live series in slots `first_slot..first_slot + slot_count` and
    /// their keys; returns the next slot, or `None` past the end.
    pub fn visit_slots(
        &self,
        first_slot: usize,
        slot_count: usize,
        visit: &mut impl FnMut(SeriesRef<'_>, &Series),
    ) -> Option<usize> {
        let end_slot = first_slot.saturating_add(slot_count).min(self.slots.len());
        for series in self.slots.get(first_slot..end_slot).into_iter().flatten().flatten() {
            visit(key_of(&self.metrics, &self.label_sets, series), series);
        }
        (end_slot < self.slots.len()).then_some(end_slot)
    }

    /// Drops chunks whose newest sample is older than `cutoff_ms`, and the series left with no
    /// chunk. Looks at the slots `first_slot..first_slot + slot_count` only, so that the caller
    /// can release the shard's lock between ranges; returns `(series removed, next slot)`, where
    /// the next slot is `None` past the end. Each chunk and each series is taken out completely
    /// (structures and counts) before the next is looked at. `compact`: no query is walking the
    /// shard, so postings may shift (tombstones are removed); otherwise removed series leave
    /// tombstones.
    pub fn drop_expired(
        &mut self,
        cutoff_ms: i64,
        first_slot: usize,
        slot_count: usize,
        compact: bool,
        accounting: &Accounting,
        on_removed: &mut impl FnMut(SeriesRef<'_>),
    ) -> (usize, Option<usize>) {
        if compact && self.tombstones > 0 {
            self.compact_postings(accounting);
        }
        let mut series_removed = 0;
        let end_slot = first_slot.saturating_add(slot_count).min(self.slots.len());
        for idx in first_slot..end_slot {
            let Shard { slots, metrics, label_sets, spare_chunks, .. } = self;
            let Some(series) = slots[idx].as_mut() else { continue };
            while series
                .chunks
                .first()
                .is_some_and(|chunk| chunk.last_timestamp_ms().is_none_or(|last| last < cutoff_ms))
            {
                let chunk = series.chunks.remove(0);
                if let Some(freed) = spare_chunks.keep(chunk) {
                    accounting.release_bytes(chunk_bytes(freed.class()));
                }
            }
            if !series.chunks.is_empty() {
                continue;
            }
            on_removed(key_of(metrics, label_sets, series));
            self.remove_series(idx as SeriesIdx, compact, accounting);
            series_removed += 1;
        }
        (series_removed, (end_slot < self.slots.len()).then_some(end_slot))
    }

    /// Calls `visit` with each live series of `metric_name` among `candidates` (slots), each
    /// with a window over its samples stamped in `start_ms..=end_ms`, until `visit` breaks.
    pub fn visit_candidates<B>(
        &self,
        metric_name: &str,
        candidates: &[SeriesIdx],
        (start_ms, end_ms): (i64, i64),
        visit: &mut impl FnMut(SeriesRef<'_>, SeriesWindow<'_>) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        // Looked up again for each run: the metric may have left the shard (and its slot been
        // given to another) since the candidates were read.
        let Some(metric) = self.metric_idx(metric_name) else { return ControlFlow::Continue(()) };
        for &idx in candidates {
            let Some(series) = self.slots.get(idx as usize).and_then(Option::as_ref) else { continue };
            // The slot may have been given to another metric's series since the candidates
            // were read.
            if series.metric != metric {
                continue;
            }
            let key = key_of(&self.metrics, &self.label_sets, series);
            visit(key, SeriesWindow::new(series.kind, &series.chunks, start_ms, end_ms))?;
        }
        ControlFlow::Continue(())
    }

    /// The slots that may hold the series of `metric_name` that meet every one of
    /// `narrowings`, sorted and without repeats: the series of `metric_name` among the label
    /// sets of the smallest of the narrowings' sets of label sets, or `None` when the metric's
    /// own postings are not longer (then a walk of the metric costs no more). Empty when a
    /// narrowing matches no label set here.
    ///
    /// An equality's sets are its label's postings. A regex's are the union of the postings of
    /// the values it accepts, its regex tested once per distinct value; it is tested only when
    /// the shard's values of that label are fewer than the smallest set found so far (visiting
    /// a few candidates costs less than testing many values).
    pub fn label_candidates(&self, metric_name: &str, narrowings: &[LabelNarrowing<'_>]) -> Option<Vec<SeriesIdx>> {
        let metric = self.metric_idx(metric_name)?;
        let postings = &self.metrics[metric as usize].as_ref().expect("a metric in the table is live").postings;
        let mut smallest: Option<std::borrow::Cow<'_, [LabelSetIdx]>> = None;
        let mut smallest_len = postings.series_idxs.len();
        // Equalities first: one lookup each.
        for narrowing in narrowings {
            let LabelNarrowing::Equal { name, value } = *narrowing else { continue };
            let hash = label_posting_hash(name.as_bytes(), value.as_bytes());
            let Some(list) = self.label_postings.get(&hash) else { return Some(Vec::new()) };
            if list.len() < smallest_len {
                smallest_len = list.len();
                smallest = Some(std::borrow::Cow::Borrowed(&list[..]));
            }
        }
        for narrowing in narrowings {
            let LabelNarrowing::Matching { name, matches, prefixes } = *narrowing else { continue };
            // Not made (the store makes it before it asks, unless the shard has its most): this
            // regex does not narrow.
            let Some(values) = self.label_values.get(&label_name_hash(name.as_bytes())) else { continue };
            if prefixes.is_none() && values.len() >= smallest_len {
                continue;
            }
            let mut union = Vec::new();
            let mut add_if_accepted = |value: &[u8]| {
                // Label sets hold UTF-8 (built from `str`).
                if std::str::from_utf8(value).is_ok_and(|value| matches.is_match(value)) {
                    let hash = label_posting_hash(name.as_bytes(), value);
                    union.extend(self.label_postings.get(&hash).into_iter().flatten());
                }
            };
            match prefixes {
                Some(prefixes) => {
                    for prefix in prefixes.iter().map(|prefix| prefix.as_bytes()) {
                        values
                            .range::<[u8], _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
                            .take_while(|value| value.starts_with(prefix))
                            .for_each(|value| add_if_accepted(value));
                    }
                }
                None => values.iter().for_each(|value| add_if_accepted(value)),
            }
            if union.is_empty() {
                return Some(Vec::new());
            }
            if union.len() < smallest_len {
                smallest_len = union.len();
                smallest = Some(std::borrow::Cow::Owned(union));
            }
        }
        // The metric's series among the sets: each set has at most one per metric.
        let smallest = smallest?;
        let mut candidates: Vec<SeriesIdx> = Vec::with_capacity(smallest.len());
        for &set_idx in smallest.iter() {
            let Some(set) = self.label_sets.get(set_idx as usize).and_then(Option::as_ref) else { continue };
            candidates.extend(
                set.series
                    .iter()
                    .copied()
                    .filter(|&idx| self.slots[idx as usize].as_ref().is_some_and(|series| series.metric == metric)),
            );
        }
        candidates.sort_unstable();
        candidates.dedup();
        Some(candidates)
    }

    /// Whether a regex of `narrowings` reads a label name whose value set is not made here and
    /// may still be (fewer than [`LABEL_VALUE_SETS_MAX`] are).
    pub fn lacks_label_values(&self, narrowings: &[LabelNarrowing<'_>]) -> bool {
        if self.label_values.len() >= LABEL_VALUE_SETS_MAX {
            return false;
        }
        narrowings.iter().any(|narrowing| match narrowing {
            LabelNarrowing::Matching { name, .. } => !self.label_values.contains_key(&label_name_hash(name.as_bytes())),
            LabelNarrowing::Equal { .. } => false,
        })
    }

    /// Makes the value sets of the label names a regex of `narrowings` reads, from the shard's
    /// label sets (once per name: later inserts and removals keep them exact).
    pub fn index_label_values(&mut self, narrowings: &[LabelNarrowing<'_>]) {
        let Shard { label_sets, label_values, .. } = self;
        for narrowing in narrowings {
            let LabelNarrowing::Matching { name, .. } = *narrowing else { continue };
            let name_hash = label_name_hash(name.as_bytes());
            if label_values.contains_key(&name_hash) || label_values.len() >= LABEL_VALUE_SETS_MAX {
                continue;
            }
            let mut values = LabelValues::default();
            for set in label_sets.iter().flatten() {
                if let Some((_, value)) = set.labels.bytes_iter().find(|(label_name, _)| *label_name == name.as_bytes())
                {
                    if !values.contains(value) {
                        values.insert(Box::from(value));
                    }
                }
            }
            label_values.insert(name_hash, values);
        }
    }

    /// Takes label set `set_idx` (whose last series is gone) out of the label index, the table
    /// and its slot, and gives back what it was counted for. Each of its postings entries is
    /// filled by its list's last entry, whose position is updated.
    fn remove_label_set(&mut self, set_idx: LabelSetIdx, accounting: &Accounting) {
        let Shard { label_sets, label_postings, label_values, label_set_index, free_label_sets, .. } = self;
        let set = label_sets[set_idx as usize].as_ref().expect("a live label set");
        debug_assert!(set.series.is_empty());
        let hashes: LabelHashes = label_posting_hashes(&set.labels).collect();
        for (label_idx, &hash) in hashes.iter().enumerate() {
            let position =
                label_sets[set_idx as usize].as_ref().expect("a live set").label_positions[label_idx] as usize;
            let Some(list) = label_postings.get_mut(&hash) else { continue };
            debug_assert_eq!(list.get(position), Some(&set_idx));
            let last_position = list.len() - 1;
            list.swap_remove(position);
            if let Some(&moved) = list.get(position) {
                // The moved entry was at `last_position` in this list: find which of its labels.
                let moved_set = label_sets[moved as usize].as_mut().expect("the label index lists live sets");
                let moved_label = label_posting_hashes(&moved_set.labels)
                    .zip(moved_set.label_positions.iter())
                    .position(|(moved_hash, &moved_position)| {
                        moved_hash == hash && moved_position as usize == last_position
                    })
                    .expect("an entry of the label index has its position");
                moved_set.label_positions[moved_label] = position as u32;
            } else if list.is_empty() {
                label_postings.remove(&hash);
                // The last set with this value here: the value leaves its set, if it has one.
                let labels = &label_sets[set_idx as usize].as_ref().expect("a live set").labels;
                let (name, value) = labels.bytes_iter().nth(label_idx).expect("the set has this label");
                if let Some(values) = label_values.get_mut(&label_name_hash(name)) {
                    values.remove(value);
                }
            }
        }
        let hash = label_sets[set_idx as usize].as_ref().expect("a live set").hash;
        if let Ok(entry) = label_set_index.find_entry(hash, |&other| other == set_idx) {
            entry.remove();
        }
        let set = label_sets[set_idx as usize].take().expect("a live label set");
        free_label_sets.push(set_idx);
        accounting.release_bytes(label_set_bytes(set.labels.len(), set.labels.heap_bytes()));
    }

    /// Takes a live series out of its label set (and the set out of the shard, if it was its
    /// last series), the index, its postings and its slot, and gives back what it was counted
    /// for. `compact` (no walk under way, and no tombstone left): its postings entry is filled
    /// by the list's last one; otherwise it becomes a tombstone, so that positions do not shift
    /// under a walk.
    fn remove_series(&mut self, idx: SeriesIdx, compact: bool, accounting: &Accounting) {
        let series = self.slots[idx as usize].as_ref().expect("a live series");
        let (index_hash, postings_pos) = (series.index_hash(), series.postings_pos as usize);
        let (set_idx, set_pos, metric_idx) = (series.label_set, series.label_set_pos as usize, series.metric);
        let set = self.label_sets[set_idx as usize].as_mut().expect("a live series' set is live");
        debug_assert_eq!(set.series.get(set_pos), Some(&idx));
        set.series.swap_remove(set_pos);
        let (moved, emptied) = (set.series.get(set_pos).copied(), set.series.is_empty());
        if let Some(moved) = moved {
            self.slots[moved as usize].as_mut().expect("a set lists live series").label_set_pos = set_pos as u32;
        } else if emptied {
            self.remove_label_set(set_idx, accounting);
        }
        if let Ok(entry) = self.index.find_entry(index_hash, |&other| other == idx) {
            entry.remove();
        }
        let Shard { slots, metrics, tombstones, .. } = self;
        let metric = metrics[metric_idx as usize].as_mut().expect("a live series' metric is live");
        let postings = &mut metric.postings;
        debug_assert_eq!(postings.series_idxs.get(postings_pos), Some(&idx));
        let mut metric_emptied = false;
        if compact {
            debug_assert_eq!(postings.tombstones, 0, "compacted before the first removal");
            postings.series_idxs.swap_remove(postings_pos);
            match postings.series_idxs.get(postings_pos) {
                Some(&moved) => {
                    slots[moved as usize].as_mut().expect("postings list live series").postings_pos =
                        postings_pos as u32
                }
                None => metric_emptied = postings.series_idxs.is_empty(),
            }
        } else {
            postings.series_idxs[postings_pos] = TOMBSTONE;
            postings.tombstones += 1;
            *tombstones += 1;
        }
        slots[idx as usize] = None;
        self.free_slots.push(idx);
        accounting.release_series(&metric.name, SERIES_BYTES);
        if metric_emptied {
            self.remove_metric(metric_idx, accounting);
        }
    }

    /// Takes a metric left without series (or tombstones) out of the table and its slot, and
    /// gives back what it was counted for.
    fn remove_metric(&mut self, metric_idx: MetricIdx, accounting: &Accounting) {
        let metric = self.metrics[metric_idx as usize].take().expect("a live metric");
        debug_assert!(metric.postings.series_idxs.is_empty());
        if let Ok(entry) = self.metric_index.find_entry(metric_table_hash(&metric.name), |&other| other == metric_idx) {
            entry.remove();
        }
        self.free_metrics.push(metric_idx);
        accounting.release_bytes(metric_entry_bytes(&metric.name));
    }

    /// Removes every tombstone (no query is walking the shard), and renumbers the positions of
    /// the series that moved; a metric left without series here leaves the shard.
    fn compact_postings(&mut self, accounting: &Accounting) {
        let mut emptied = Vec::new();
        let Shard { slots, metrics, .. } = self;
        for (metric_idx, metric) in metrics.iter_mut().enumerate() {
            let Some(metric) = metric else { continue };
            let postings = &mut metric.postings;
            if postings.tombstones > 0 {
                postings.series_idxs.retain(|&idx| idx != TOMBSTONE);
                postings.tombstones = 0;
                for (position, &idx) in postings.series_idxs.iter().enumerate() {
                    slots[idx as usize].as_mut().expect("postings list live series").postings_pos = position as u32;
                }
            }
            if postings.series_idxs.is_empty() {
                emptied.push(metric_idx as MetricIdx);
            }
        }
        for metric_idx in emptied {
            self.remove_metric(metric_idx, accounting);
        }
        self.tombstones = 0;
    }

    /// What the store's counts should be for this shard, recomputed by a scan: series, bytes,
    /// and series per metric (from the postings, tombstones left out).
    pub fn recount(&self, series_by_metric: &mut std::collections::BTreeMap<String, usize>) -> (usize, usize) {
        let mut series = 0;
        let mut bytes = self.spare_chunks.bytes();
        for live in self.slots.iter().flatten() {
            series += 1;
            bytes += SERIES_BYTES + live.chunks.iter().map(|chunk| chunk_bytes(chunk.class())).sum::<usize>();
        }
        for set in self.label_sets.iter().flatten() {
            bytes += label_set_bytes(set.labels.len(), set.labels.heap_bytes());
        }
        for metric in self.metrics.iter().flatten() {
            bytes += metric_entry_bytes(&metric.name);
            let live = metric.postings.series_idxs.len() - metric.postings.tombstones;
            if live > 0 {
                *series_by_metric.entry(metric.name.to_string()).or_default() += live;
            }
        }
        (series, bytes)
    }
}
