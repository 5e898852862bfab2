//! A shard: a slice of all series (chosen by series hash) with its own index and postings.
//!
//! Each shard sits behind one lock in [`super::Store`]; a batch takes each shard's lock once.
//! Slots of removed series and the chunks they held are reused by new ones.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;

use hashbrown::HashTable;

use super::chunk::Chunk;
use super::series_key::SeriesKey;
use super::window::{SeriesKind, SeriesWindow};

/// Index of a series inside its shard.
pub(super) type SeriesIdx = u32;

/// Spare chunks kept per shard for reuse; beyond this they are freed.
const SPARE_CHUNKS_MAX: usize = 4096;

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

#[derive(Debug)]
pub(super) struct Series {
    pub key: SeriesKey,
    pub key_hash: u64,
    pub kind: SeriesKind,
    pub chunks: VecDeque<Chunk>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AppendResult {
    Appended,
    /// Same timestamp as the last sample: the value was replaced (a retried export).
    Overwritten,
    /// Older than the series' last sample: not stored.
    OutOfOrder,
}

impl Series {
    pub fn last_timestamp_ms(&self) -> Option<i64> {
        self.chunks.back().and_then(Chunk::last_timestamp_ms)
    }

    fn append(&mut self, timestamp_ms: i64, value: f64, spare_chunks: &mut Vec<Chunk>) -> AppendResult {
        if let Some(last_ms) = self.last_timestamp_ms() {
            if timestamp_ms < last_ms {
                return AppendResult::OutOfOrder;
            }
            if timestamp_ms == last_ms {
                if let Some(chunk) = self.chunks.back_mut() {
                    chunk.overwrite_last(value);
                }
                return AppendResult::Overwritten;
            }
        }
        // A full chunk, or one whose 32-bit offsets cannot reach this timestamp, ends here.
        if self.chunks.back().is_none_or(|chunk| !chunk.can_hold(timestamp_ms)) {
            self.chunks.push_back(spare_chunks.pop().unwrap_or_else(Chunk::with_capacity));
        }
        let chunk = self.chunks.back_mut().expect("a chunk with room was just ensured");
        chunk.push(timestamp_ms, value);
        AppendResult::Appended
    }
}

#[derive(Debug, Default)]
pub(super) struct Shard {
    /// Series hash → slot; equality is checked against the stored key.
    index: HashTable<SeriesIdx>,
    slots: Vec<Option<Series>>,
    free_slots: Vec<SeriesIdx>,
    /// Metric name → slots of its series, so a query touches only its metric's series.
    postings: HashMap<Box<str>, MetricPostings>,
    /// Tombstones in all of `postings`.
    tombstones: usize,
    spare_chunks: Vec<Chunk>,
}

impl Shard {
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

    /// Adds a series the caller checked is absent.
    pub fn insert(&mut self, key: SeriesKey, key_hash: u64, kind: SeriesKind) -> SeriesIdx {
        debug_assert!(self.find(key_hash, |stored| *stored == key).is_none());
        let series = Series { key, key_hash, kind, chunks: VecDeque::new() };
        let idx = match self.free_slots.pop() {
            Some(idx) => {
                self.slots[idx as usize] = Some(series);
                idx
            }
            None => {
                let idx = SeriesIdx::try_from(self.slots.len()).expect("series per shard fit in u32");
                self.slots.push(Some(series));
                idx
            }
        };
        let slots = &self.slots;
        self.index
            .insert_unique(key_hash, idx, |&other| slots[other as usize].as_ref().map_or(0, |series| series.key_hash));
        let metric_name = self.slots[idx as usize].as_ref().expect("just inserted").key.metric_name();
        // The metric's name is allocated once, with its first series.
        match self.postings.get_mut(metric_name) {
            Some(postings) => postings.series_idxs.push(idx),
            None => {
                self.postings.insert(metric_name.into(), MetricPostings { series_idxs: vec![idx], tombstones: 0 });
            }
        }
        idx
    }

    /// Appends a sample to an existing series; `kind` is the kind the sample was reported with.
    pub fn append(&mut self, idx: SeriesIdx, kind: SeriesKind, timestamp_ms: i64, value: f64) -> AppendResult {
        let series = self.slots[idx as usize].as_mut().expect("slot of a live series");
        series.kind = kind;
        series.append(timestamp_ms, value, &mut self.spare_chunks)
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

    /// Series of `metric_name` in this shard (tombstones included: an upper bound).
    pub fn metric_series_bound(&self, metric_name: &str) -> usize {
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
    /// next slot is `None` past the end. `compact`: no query is walking the shard, so postings
    /// may shift (tombstones are removed); otherwise removed series leave tombstones.
    pub fn drop_expired(
        &mut self,
        cutoff_ms: i64,
        first_slot: usize,
        slot_count: usize,
        compact: bool,
    ) -> (usize, Option<usize>) {
        if compact && self.tombstones > 0 {
            self.compact_postings();
        }
        let mut series_removed = 0;
        let mut touched_metrics: Vec<Box<str>> = Vec::new();
        let end_slot = first_slot.saturating_add(slot_count).min(self.slots.len());
        for idx in first_slot..end_slot {
            let Some(series) = self.slots[idx].as_mut() else { continue };
            while series
                .chunks
                .front()
                .is_some_and(|chunk| chunk.last_timestamp_ms().is_none_or(|last| last < cutoff_ms))
            {
                let mut chunk = series.chunks.pop_front().expect("front chunk exists");
                if self.spare_chunks.len() < SPARE_CHUNKS_MAX {
                    chunk.clear();
                    self.spare_chunks.push(chunk);
                }
            }
            if !series.chunks.is_empty() {
                continue;
            }
            let series = self.slots[idx].take().expect("checked live above");
            let idx = idx as SeriesIdx;
            if let Ok(entry) = self.index.find_entry(series.key_hash, |&other| other == idx) {
                entry.remove();
            }
            self.free_slots.push(idx);
            if touched_metrics.last().is_none_or(|name| **name != *series.key.metric_name()) {
                touched_metrics.push(series.key.metric_name().into());
            }
            series_removed += 1;
        }
        touched_metrics.sort_unstable();
        touched_metrics.dedup();
        for metric_name in touched_metrics {
            let Some(postings) = self.postings.get_mut(&metric_name) else { continue };
            let slots = &self.slots;
            // Slots freed by this call are not reused before it returns.
            let is_live = |idx: SeriesIdx| idx != TOMBSTONE && slots[idx as usize].is_some();
            if compact {
                postings.series_idxs.retain(|&idx| is_live(idx));
                self.tombstones -= postings.tombstones;
                postings.tombstones = 0;
                if postings.series_idxs.is_empty() {
                    self.postings.remove(&metric_name);
                }
            } else {
                for idx in postings.series_idxs.iter_mut() {
                    if *idx != TOMBSTONE && !is_live(*idx) {
                        *idx = TOMBSTONE;
                        postings.tombstones += 1;
                        self.tombstones += 1;
                    }
                }
            }
        }
        (series_removed, (end_slot < self.slots.len()).then_some(end_slot))
    }

    /// Removes every tombstone (no query is walking the shard).
    fn compact_postings(&mut self) {
        self.postings.retain(|_, postings| {
            if postings.tombstones > 0 {
                postings.series_idxs.retain(|&idx| idx != TOMBSTONE);
                postings.tombstones = 0;
            }
            !postings.series_idxs.is_empty()
        });
        self.tombstones = 0;
    }

    pub fn heap_bytes(&self) -> usize {
        let chunk_bytes: usize = self
            .slots
            .iter()
            .flatten()
            .map(|series| {
                series.chunks.iter().map(Chunk::heap_bytes).sum::<usize>()
                    + series.chunks.capacity() * std::mem::size_of::<Chunk>()
                    + series.key.heap_bytes()
            })
            .sum();
        let spare_bytes: usize = self.spare_chunks.iter().map(Chunk::heap_bytes).sum();
        chunk_bytes + spare_bytes + self.slots.capacity() * std::mem::size_of::<Option<Series>>()
    }
}
