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
use super::series_key::SeriesKey;
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
/// Bytes a series holds besides its key and chunks, as counted against `--max-store-bytes`:
/// its slot, its index entry (slot number and control byte) and its postings entry; plus
/// [`LABEL_INDEX_BYTES_PER_LABEL`] per label.
pub(super) const SERIES_BYTES: usize =
    std::mem::size_of::<Option<Series>>() + std::mem::size_of::<SeriesIdx>() + 1 + std::mem::size_of::<SeriesIdx>();

/// Bytes one label of a series is counted for in the label index: its position, and a postings
/// list of its own (map key, list, control byte). A label shared with other series shares
/// their list and takes less (4 bytes in it); the count is an upper bound, the same at insert
/// and removal.
pub(super) const LABEL_INDEX_BYTES_PER_LABEL: usize =
    std::mem::size_of::<u32>() + std::mem::size_of::<u64>() + std::mem::size_of::<LabelPostings>() + 1;

/// Bytes a series with `key` holds besides its key and chunks. (The value sets of labels a
/// regex has read are not counted: at most one copy of a label's distinct values each.)
pub(super) fn series_bytes(key: &SeriesKey) -> usize {
    SERIES_BYTES + key.label_count() * LABEL_INDEX_BYTES_PER_LABEL
}

/// Seed of [`label_posting_hash`].
const LABEL_POSTING_SEED: u64 = 0x6c61_6265_6c5f_6978;

/// The label index's key of one label (`name`, `value`) of a series of the metric whose
/// [`metric_name_hash`] is `metric_hash`. Two pairs may share a key (their postings merge):
/// readers of the index check every candidate against its key, so a shared key costs time,
/// never a wrong answer.
fn label_posting_hash(metric_hash: u64, name: &[u8], value: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = foldhash::fast::FixedState::with_seed(LABEL_POSTING_SEED).build_hasher();
    hasher.write_u64(metric_hash);
    hasher.write(name);
    hasher.write(value);
    hasher.finish()
}

/// The key of a (metric, label name) pair in the label index's value sets (shared keys merge
/// sets: readers check what the values lead to, as for postings).
fn label_name_hash(metric_hash: u64, name: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = foldhash::fast::FixedState::with_seed(LABEL_POSTING_SEED).build_hasher();
    hasher.write_u64(metric_hash);
    hasher.write(name);
    hasher.write_u8(0xff);
    hasher.finish()
}

/// The hash of a metric name in the label index's keys.
fn metric_posting_hash(metric_name: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = foldhash::fast::FixedState::with_seed(LABEL_POSTING_SEED).build_hasher();
    hasher.write(metric_name);
    hasher.finish()
}

/// The label index keys of `key`'s labels, in the key's label order (read as bytes: no UTF-8
/// check on this path).
fn label_posting_hashes(key: &SeriesKey) -> impl Iterator<Item = u64> + '_ {
    let (metric_name, labels) = key.label_bytes();
    let metric_hash = metric_posting_hash(metric_name);
    labels.map(move |(name, value)| label_posting_hash(metric_hash, name, value))
}

/// One label's postings. Most labels that tell series apart (a pod, a GPU) are on one or two
/// series: those lists live inline, without an allocation of their own.
type LabelPostings = smallvec::SmallVec<[SeriesIdx; 2]>;

/// The distinct values of one (metric, label name) in a shard, as the key holds them (bytes of
/// UTF-8 text, whose order is the text's), in order: a regex with literal prefixes reads only
/// the ranges that start with them (a hash set tested every value's prefix: 7x slower over
/// 2,000 values). Made the first time a regex reads the (metric, name) here, then kept exact:
/// sets kept for every label cost restore +18% instructions per series, for labels no regex
/// may ever read.
type LabelValues = std::collections::BTreeSet<Box<[u8]>>;

/// Value sets a shard makes at most. A query names any label it likes, and a set, once made, is
/// kept (and costs one pass over its metric's series to make): beyond this many, a regex over a
/// label without a set walks its metric instead.
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

/// A series' label index keys, on the stack for up to 16 labels.
type LabelHashes = smallvec::SmallVec<[u64; 16]>;

/// Bytes a chunk of `class` holds, as counted against `--max-store-bytes`: its block and its
/// place in the series' chunk queue. Spare chunks count too: the store holds them.
pub(super) const fn chunk_bytes(class: ChunkClass) -> usize {
    class.block_bytes() + std::mem::size_of::<Chunk>()
}

/// A series' chunks: one inline, more on the heap.
pub(super) type SeriesChunks = smallvec::SmallVec<[Chunk; 1]>;

#[derive(Debug)]
pub(super) struct Series {
    pub key: SeriesKey,
    pub key_hash: u64,
    pub kind: SeriesKind,
    /// Oldest first. Inline while the series has one chunk (most series, whatever their rate,
    /// hold one to three); retention takes chunks from the front.
    pub chunks: SeriesChunks,
    /// Position of this series in its metric's postings.
    postings_pos: u32,
    /// Position of this series in the label index's postings of each of its labels (in the
    /// key's label order).
    label_positions: Box<[u32]>,
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
    /// Metric name → slots of its series, so a query touches only its metric's series. A list
    /// may be empty for an instant (made while inserting a metric's first series here).
    postings: hashbrown::HashMap<Box<str>, MetricPostings, foldhash::fast::FixedState>,
    /// Tombstones in all of `postings`.
    tombstones: usize,
    /// The label index: [`label_posting_hash`] of (metric, label name, label value) → the slots
    /// of the series with that label, in no order. Kept exact on every insert and removal (a
    /// removal fills its place with the list's last entry), so it needs no tombstones: a walk
    /// copies the candidates it needs under the lock.
    label_postings: hashbrown::HashMap<u64, LabelPostings, foldhash::fast::FixedState>,
    /// [`label_name_hash`] of (metric, label name) → the distinct values its series have here,
    /// each with a non-empty list in `label_postings`, for the pairs a regex has read (made by
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
            postings: Default::default(),
            tombstones: 0,
            label_postings: Default::default(),
            label_values: Default::default(),
            spare_chunks: SpareChunks::default(),
            retention_ms,
        }
    }

    /// The series with hash `key_hash` for which `is_same` holds.
    pub fn find(&self, key_hash: u64, is_same: impl Fn(&SeriesKey) -> bool) -> Option<SeriesIdx> {
        self.index
            .find(key_hash, |&idx| self.slots[idx as usize].as_ref().is_some_and(|series| is_same(&series.key)))
            .copied()
    }

    /// Makes room for `additional` series.
    pub fn reserve(&mut self, additional: usize) {
        let slots = &self.slots;
        self.index.reserve(additional, |&idx| slots[idx as usize].as_ref().map_or(0, |series| series.key_hash));
        self.slots.reserve(additional);
    }

    /// Bytes a new series with `key` and a first chunk of `first_chunk` would take here, as
    /// [`Shard::insert`] counts them: key, series and, unless a spare one is left, the chunk.
    pub fn new_series_bytes(&self, key: &SeriesKey, first_chunk: ChunkClass) -> usize {
        let first_chunk_bytes = if self.spare_chunks.has(first_chunk) { 0 } else { chunk_bytes(first_chunk) };
        key.heap_bytes() + series_bytes(key) + first_chunk_bytes
    }

    /// Adds the series of `reservation`'s key (made for [`Shard::new_series_bytes`] of it),
    /// which the caller checked is absent, with an empty first chunk. Room is made in the slots,
    /// the index and the postings first; then the reservation is committed and all three are
    /// filled by steps that cannot fail.
    pub fn insert(
        &mut self,
        reservation: SeriesReservation<'_>,
        metric_name: Option<&str>,
        key_hash: u64,
        kind: SeriesKind,
        first_chunk: ChunkClass,
    ) -> SeriesIdx {
        debug_assert!(self.find(key_hash, |stored| stored == reservation.key()).is_none());
        let Shard { index, slots, free_slots, postings, spare_chunks, label_postings, label_values, .. } = self;
        // Room first: whatever may allocate (or fail) happens before anything is visible, but
        // for a new metric's (empty) postings list.
        let free_slot = free_slots.last().copied();
        if free_slot.is_none() {
            SeriesIdx::try_from(slots.len()).expect("series per shard fit in u32");
            slots.reserve(1);
        }
        index.reserve(1, |&other| slots[other as usize].as_ref().map_or(0, |series| series.key_hash));
        let metric_name = metric_name.unwrap_or_else(|| reservation.key().metric_name());
        let series_idxs = &mut postings.entry_ref(metric_name).or_insert_with(MetricPostings::default).series_idxs;
        series_idxs.reserve(1);
        let postings_pos = u32::try_from(series_idxs.len()).expect("series per shard fit in u32");
        let label_hashes: LabelHashes = label_posting_hashes(reservation.key()).collect();
        // Room in the map for a list per label; a list's own push allocates at most (and an
        // allocation failure aborts, it does not unwind).
        label_postings.reserve(label_hashes.len());
        let mut label_positions = vec![0u32; label_hashes.len()].into_boxed_slice();
        let mut chunks = SeriesChunks::new();
        chunks.push(spare_chunks.take(first_chunk).unwrap_or_else(|| Chunk::new(first_chunk)));
        // Then the steps that cannot fail: counts, slot, index, postings, label postings.
        let key = reservation.commit();
        let idx = free_slot.unwrap_or(slots.len() as SeriesIdx);
        for (position, &hash) in label_positions.iter_mut().zip(&label_hashes) {
            let list = label_postings.entry(hash).or_default();
            // A list holds at most one entry per label of every series of the shard.
            *position = list.len() as u32;
            list.push(idx);
        }
        if !label_values.is_empty() {
            // Every label is looked up, not only those whose list is new: a list that two
            // labels' keys share must not hide the second value from its set.
            let (metric_bytes, labels) = key.label_bytes();
            let metric_hash = metric_posting_hash(metric_bytes);
            for (name, value) in labels {
                if let Some(values) = label_values.get_mut(&label_name_hash(metric_hash, name)) {
                    if !values.contains(value) {
                        values.insert(Box::from(value));
                    }
                }
            }
        }
        let series = Series { key, key_hash, kind, chunks, postings_pos, label_positions };
        let idx = match free_slot {
            Some(idx) => {
                free_slots.pop();
                slots[idx as usize] = Some(series);
                idx
            }
            None => {
                slots.push(Some(series));
                (slots.len() - 1) as SeriesIdx
            }
        };
        index.insert_unique(key_hash, idx, |&other| slots[other as usize].as_ref().map_or(0, |series| series.key_hash));
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

    /// Calls `visit` for every series of `metric_name` with its window starting at `start_ms`.
    /// Calls `visit` with the live series of `metric_name` at postings positions
    /// `first_position..first_position + series_max`, each with a window over its samples
    /// stamped in `start_ms..=end_ms`, until `visit` breaks.
    pub fn visit_metric_run<B>(
        &self,
        metric_name: &str,
        first_position: usize,
        series_max: usize,
        (start_ms, end_ms): (i64, i64),
        visit: &mut impl FnMut(&SeriesKey, SeriesWindow<'_>) -> ControlFlow<B>,
    ) -> RunEnd<B> {
        let Some(postings) = self.postings.get(metric_name) else { return RunEnd::Done };
        let series_idxs = &postings.series_idxs;
        let end_position = first_position.saturating_add(series_max).min(series_idxs.len());
        for &idx in series_idxs.get(first_position..end_position).unwrap_or_default() {
            let Some(series) = self.slots.get(idx as usize).and_then(Option::as_ref) else { continue };
            if let ControlFlow::Break(stop) =
                visit(&series.key, SeriesWindow::new(series.kind, &series.chunks, start_ms, end_ms))
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

    /// Panics unless the label index lists exactly the live series' labels, each at the
    /// position the series records (for tests).
    #[cfg(test)]
    pub fn check_label_index(&self) {
        let mut entries = 0;
        for (idx, series) in self.slots.iter().enumerate() {
            let Some(series) = series else { continue };
            for (hash, &position) in label_posting_hashes(&series.key).zip(series.label_positions.iter()) {
                let list = self.label_postings.get(&hash).expect("a live series' label is indexed");
                assert_eq!(list.get(position as usize), Some(&(idx as SeriesIdx)), "series {idx} at its position");
                entries += 1;
            }
        }
        assert_eq!(self.label_postings.values().map(|list| list.len()).sum::<usize>(), entries, "no stale entry");
        assert!(self.label_postings.values().all(|list| !list.is_empty()), "no empty list kept");
        // The value sets made (a regex read their pair) hold exactly the live series' values.
        let mut live_values = std::collections::BTreeSet::new();
        for series in self.slots.iter().flatten() {
            let (metric_bytes, labels) = series.key.label_bytes();
            let metric_hash = metric_posting_hash(metric_bytes);
            for (name, value) in labels {
                let name_hash = label_name_hash(metric_hash, name);
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
        self.postings.get(metric_name).map_or(0, |postings| postings.series_idxs.len())
    }

    /// Calls `visit` with the live series in slots `first_slot..first_slot + slot_count`;
    /// returns the next slot, or `None` past the end.
    pub fn visit_slots(&self, first_slot: usize, slot_count: usize, visit: &mut impl FnMut(&Series)) -> Option<usize> {
        let end_slot = first_slot.saturating_add(slot_count).min(self.slots.len());
        self.slots.get(first_slot..end_slot).into_iter().flatten().flatten().for_each(visit);
        (end_slot < self.slots.len()).then_some(end_slot)
    }

    /// Drops chunks whose newest sample is older than `cutoff_ms`, and the series left with no
    /// chunk. Returns the number of series removed.
    /// Looks at the slots `first_slot..first_slot + slot_count` only, so that the caller can
    /// release the shard's lock between ranges; returns `(series removed, next slot)`, where the
    /// next slot is `None` past the end. Each chunk and each series is taken out completely
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
        on_removed: &mut impl FnMut(&SeriesKey),
    ) -> (usize, Option<usize>) {
        if compact && self.tombstones > 0 {
            self.compact_postings();
        }
        let mut series_removed = 0;
        let end_slot = first_slot.saturating_add(slot_count).min(self.slots.len());
        for idx in first_slot..end_slot {
            let Some(series) = self.slots[idx].as_mut() else { continue };
            while series
                .chunks
                .first()
                .is_some_and(|chunk| chunk.last_timestamp_ms().is_none_or(|last| last < cutoff_ms))
            {
                let chunk = series.chunks.remove(0);
                if let Some(freed) = self.spare_chunks.keep(chunk) {
                    accounting.release_bytes(chunk_bytes(freed.class()));
                }
            }
            if !series.chunks.is_empty() {
                continue;
            }
            on_removed(&series.key);
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
        visit: &mut impl FnMut(&SeriesKey, SeriesWindow<'_>) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        for &idx in candidates {
            let Some(series) = self.slots.get(idx as usize).and_then(Option::as_ref) else { continue };
            // The slot may have been given to another metric's series since the candidates
            // were read.
            if !series.key.has_metric_name(metric_name) {
                continue;
            }
            visit(&series.key, SeriesWindow::new(series.kind, &series.chunks, start_ms, end_ms))?;
        }
        ControlFlow::Continue(())
    }

    /// The slots that may hold the series of `metric_name` that meet every one of
    /// `narrowings`, sorted and without repeats: the smallest of the narrowings' candidate
    /// sets, or `None` when the metric's own postings are not longer (then a walk of the metric
    /// costs no more). Empty when a narrowing matches no series of the metric here.
    ///
    /// An equality's set is its label's postings. A regex's set is the union of the postings of
    /// the values it accepts, its regex tested once per distinct value; it is tested only when
    /// the metric's values of that label are fewer than the smallest set found so far (visiting
    /// a few candidates costs less than testing many values).
    pub fn label_candidates(&self, metric_name: &str, narrowings: &[LabelNarrowing<'_>]) -> Option<Vec<SeriesIdx>> {
        let metric_hash = metric_posting_hash(metric_name.as_bytes());
        let metric_series = self.postings.get(metric_name).map_or(0, |postings| postings.series_idxs.len());
        let mut smallest: Option<Vec<SeriesIdx>> = None;
        let mut smallest_len = metric_series;
        // Equalities first: one lookup each.
        for narrowing in narrowings {
            let LabelNarrowing::Equal { name, value } = *narrowing else { continue };
            let hash = label_posting_hash(metric_hash, name.as_bytes(), value.as_bytes());
            let Some(list) = self.label_postings.get(&hash) else { return Some(Vec::new()) };
            if list.len() < smallest_len {
                smallest_len = list.len();
                smallest = Some(list.to_vec());
            }
        }
        for narrowing in narrowings {
            let LabelNarrowing::Matching { name, matches, prefixes } = *narrowing else { continue };
            // Not made (the store makes it before it asks, unless the shard has its most): this
            // regex does not narrow.
            let Some(values) = self.label_values.get(&label_name_hash(metric_hash, name.as_bytes())) else {
                continue;
            };
            if prefixes.is_none() && values.len() >= smallest_len {
                continue;
            }
            let mut union = Vec::new();
            let mut add_if_accepted = |value: &[u8]| {
                // Keys hold UTF-8 (built from `str`).
                if std::str::from_utf8(value).is_ok_and(|value| matches.is_match(value)) {
                    let hash = label_posting_hash(metric_hash, name.as_bytes(), value);
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
                smallest = Some(union);
            }
        }
        let mut candidates = smallest?;
        candidates.sort_unstable();
        candidates.dedup();
        Some(candidates)
    }

    /// Whether a regex of `narrowings` reads a (metric, label) whose value set is not made here
    /// and may still be (fewer than [`LABEL_VALUE_SETS_MAX`] are).
    pub fn lacks_label_values(&self, metric_name: &str, narrowings: &[LabelNarrowing<'_>]) -> bool {
        if self.label_values.len() >= LABEL_VALUE_SETS_MAX {
            return false;
        }
        let metric_hash = metric_posting_hash(metric_name.as_bytes());
        narrowings.iter().any(|narrowing| match narrowing {
            LabelNarrowing::Matching { name, .. } => {
                !self.label_values.contains_key(&label_name_hash(metric_hash, name.as_bytes()))
            }
            LabelNarrowing::Equal { .. } => false,
        })
    }

    /// Makes the value sets of `metric_name`'s labels that a regex of `narrowings` reads, from
    /// the metric's series here (once per pair: later inserts and removals keep them exact).
    pub fn index_label_values(&mut self, metric_name: &str, narrowings: &[LabelNarrowing<'_>]) {
        let metric_hash = metric_posting_hash(metric_name.as_bytes());
        let Shard { slots, postings, label_values, .. } = self;
        for narrowing in narrowings {
            let LabelNarrowing::Matching { name, .. } = *narrowing else { continue };
            let name_hash = label_name_hash(metric_hash, name.as_bytes());
            if label_values.contains_key(&name_hash) || label_values.len() >= LABEL_VALUE_SETS_MAX {
                continue;
            }
            let mut values = LabelValues::default();
            let series_idxs = postings.get(metric_name).map(|postings| &postings.series_idxs[..]).unwrap_or_default();
            for &idx in series_idxs {
                // Tombstones, and slots given to another metric's series since.
                let Some(series) = slots.get(idx as usize).and_then(Option::as_ref) else { continue };
                let (series_metric, mut labels) = series.key.label_bytes();
                if series_metric != metric_name.as_bytes() {
                    continue;
                }
                if let Some((_, value)) = labels.find(|(label_name, _)| *label_name == name.as_bytes()) {
                    if !values.contains(value) {
                        values.insert(Box::from(value));
                    }
                }
            }
            label_values.insert(name_hash, values);
        }
    }

    /// Takes `idx`'s entries out of the label index: each is filled by its list's last entry,
    /// whose position is updated.
    fn unindex_labels(&mut self, idx: SeriesIdx) {
        let Shard { slots, label_postings, label_values, .. } = self;
        let series = slots[idx as usize].as_ref().expect("a live series");
        let hashes: LabelHashes = label_posting_hashes(&series.key).collect();
        for (label_idx, &hash) in hashes.iter().enumerate() {
            let position = slots[idx as usize].as_ref().expect("a live series").label_positions[label_idx] as usize;
            let Some(list) = label_postings.get_mut(&hash) else { continue };
            debug_assert_eq!(list.get(position), Some(&idx));
            let last_position = list.len() - 1;
            list.swap_remove(position);
            if let Some(&moved) = list.get(position) {
                // The moved entry was at `last_position` in this list: find which of its labels.
                let moved_series = slots[moved as usize].as_mut().expect("the label index lists live series");
                let moved_label = label_posting_hashes(&moved_series.key)
                    .zip(moved_series.label_positions.iter())
                    .position(|(moved_hash, &moved_position)| {
                        moved_hash == hash && moved_position as usize == last_position
                    })
                    .expect("an entry of the label index has its position");
                moved_series.label_positions[moved_label] = position as u32;
            } else if list.is_empty() {
                label_postings.remove(&hash);
                // The last series with this value here: the value leaves its set, if it has one.
                let key = &slots[idx as usize].as_ref().expect("a live series").key;
                let (metric_bytes, mut labels) = key.label_bytes();
                let (name, value) = labels.nth(label_idx).expect("the series has this label");
                let name_hash = label_name_hash(metric_posting_hash(metric_bytes), name);
                if let Some(values) = label_values.get_mut(&name_hash) {
                    values.remove(value);
                }
            }
        }
    }

    /// Takes a live series out of the index, its postings and its slot, and gives back what it
    /// was counted for. `compact` (no walk under way, and no tombstone left): its postings entry
    /// is filled by the list's last one; otherwise it becomes a tombstone, so that positions do
    /// not shift under a walk.
    fn remove_series(&mut self, idx: SeriesIdx, compact: bool, accounting: &Accounting) {
        self.unindex_labels(idx);
        let series = self.slots[idx as usize].as_ref().expect("a live series");
        let (key_hash, postings_pos) = (series.key_hash, series.postings_pos as usize);
        if let Ok(entry) = self.index.find_entry(key_hash, |&other| other == idx) {
            entry.remove();
        }
        let metric_name = series.key.metric_name();
        if let Some(postings) = self.postings.get_mut(metric_name) {
            debug_assert_eq!(postings.series_idxs.get(postings_pos), Some(&idx));
            if compact {
                debug_assert_eq!(postings.tombstones, 0, "compacted before the first removal");
                postings.series_idxs.swap_remove(postings_pos);
                match postings.series_idxs.get(postings_pos) {
                    Some(&moved) => {
                        self.slots[moved as usize].as_mut().expect("postings list live series").postings_pos =
                            postings_pos as u32
                    }
                    None if postings.series_idxs.is_empty() => {
                        self.postings.remove(metric_name);
                    }
                    None => {}
                }
            } else {
                postings.series_idxs[postings_pos] = TOMBSTONE;
                postings.tombstones += 1;
                self.tombstones += 1;
            }
        }
        let series = self.slots[idx as usize].take().expect("a live series");
        self.free_slots.push(idx);
        accounting.release_series(series.key.metric_name(), series.key.heap_bytes() + series_bytes(&series.key));
    }

    /// Removes every tombstone (no query is walking the shard), and renumbers the positions of
    /// the series that moved.
    fn compact_postings(&mut self) {
        let slots = &mut self.slots;
        self.postings.retain(|_, postings| {
            if postings.tombstones > 0 {
                postings.series_idxs.retain(|&idx| idx != TOMBSTONE);
                postings.tombstones = 0;
                for (position, &idx) in postings.series_idxs.iter().enumerate() {
                    slots[idx as usize].as_mut().expect("postings list live series").postings_pos = position as u32;
                }
            }
            !postings.series_idxs.is_empty()
        });
        self.tombstones = 0;
    }

    /// What the store's counts should be for this shard, recomputed by a scan: series, bytes,
    /// and series per metric (from the postings, tombstones left out).
    pub fn recount(&self, series_by_metric: &mut std::collections::BTreeMap<String, usize>) -> (usize, usize) {
        let mut series = 0;
        let mut bytes = self.spare_chunks.bytes();
        for live in self.slots.iter().flatten() {
            series += 1;
            bytes += live.key.heap_bytes()
                + series_bytes(&live.key)
                + live.chunks.iter().map(|chunk| chunk_bytes(chunk.class())).sum::<usize>();
        }
        for (metric_name, postings) in self.postings.iter() {
            let live = postings.series_idxs.len() - postings.tombstones;
            if live > 0 {
                *series_by_metric.entry(metric_name.to_string()).or_default() += live;
            }
        }
        (series, bytes)
    }
}
