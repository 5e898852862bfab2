//! The in-memory series store: sharded series index, columnar per-series chunks, retention.
//!
//! The store knows nothing of protobuf, gRPC, HTTP or tokio: ingest hands it [`DecodedBatch`]es
//! of already validated samples ([`Store::append_decoded`]; tests and benches may build owned
//! [`SampleBatch`]es and call [`Store::append`]), and queries read it through
//! [`Store::visit_metric`].
//! **Invariant:** once [`Store::append_decoded`] returns, every later read sees the appended samples.
//!
//! The store is bounded in series (`--max-series`), in series per metric
//! (`--max-series-per-metric`) and in bytes (`--max-store-bytes`: series, label sets, metric
//! entries and chunks), each a running count kept in step with the shards ([`accounting`]).

mod accounting;
mod batch;
mod chunk;
pub mod kernels;
mod series_key;
mod shard;
mod window;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

pub use accounting::SeriesRefusal;
pub use batch::{
    BatchLabel, BatchSample, BatchText, DecodedBatch, DecodedSample, ExtraPosition, LabelSetId, SampleBatch,
    SampleLabels, SetPlan, BATCH_BYTES_CONSTANT, BATCH_BYTES_PER_REQUEST_BYTE_MAX, SAMPLE_LABELS_MAX,
};
pub use chunk::{ChunkSlice, CHUNK_CAPACITY};
pub use series_key::{
    combine_series_hash, label_hash, label_set_hash, metric_name_hash, needs_normalization, normalize_metric_name,
    series_hash, sort_and_dedup_keep_last, KeyDecodeError, LabelPair, LabelRef, LabelSetHash, Labels, SeriesKey,
    SeriesRef, LABEL_SET_BITS, LABEL_STRING_BYTES_MAX,
};
pub use window::{SeriesKind, SeriesWindow, WindowOp};

use accounting::{Accounting, CountLimits, MetricCounter};
use chunk::{Chunk, ChunkClass};
pub use shard::LabelNarrowing;
use shard::{AppendResult, NewSeriesLabels, RunEnd, Shard};

/// Samples appended per hold of a shard's write lock.
const APPEND_SAMPLES_PER_LOCK: usize = 64;

/// Series slots retention looks at per hold of a shard's write lock.
const RETENTION_SLOTS_PER_LOCK: usize = 1024;

/// Series slots a listing reads per hold of a shard's read lock.
const LIST_SLOTS_PER_LOCK: usize = 1024;

/// Series a query visits per hold of a shard's read lock (tens of microseconds of work).
pub const VISIT_SERIES_PER_LOCK: usize = 256;

/// Counts a metric walk under way on a shard (see [`Store::visit_metric`]) while it lives.
struct WalkUnderWay<'a>(&'a AtomicUsize);

impl<'a> WalkUnderWay<'a> {
    fn start(walks: &'a AtomicUsize) -> Self {
        walks.fetch_add(1, Ordering::AcqRel);
        WalkUnderWay(walks)
    }
}

impl Drop for WalkUnderWay<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Store sizing, taken from the validated [`crate::config::Config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    pub shard_count: usize,
    pub series_count_max: usize,
    pub retention_ms: i64,
    /// Bytes of keys, series and chunks held at most (`--max-store-bytes`).
    pub bytes_max: usize,
    /// Series of one metric held at most (`--max-series-per-metric`).
    pub series_per_metric_max: usize,
    /// How far ahead of the clock a restored sample may be (`--max-future-skew`, as ingest).
    pub future_skew_ms_max: i64,
}

impl StoreConfig {
    /// A store of `shard_count` shards, at most `series_count_max` series and `retention_ms`
    /// of retention, and no other limit: no byte limit, no per-metric limit beyond the series
    /// limit, and no future check on restore (tests and benches set the ones they exercise).
    pub fn new(shard_count: usize, series_count_max: usize, retention_ms: i64) -> StoreConfig {
        StoreConfig {
            shard_count,
            series_count_max,
            retention_ms,
            bytes_max: usize::MAX,
            series_per_metric_max: series_count_max,
            future_skew_ms_max: i64::MAX,
        }
    }
}

/// A metric whose new series make [`Store::append_decoded`] panic after they are reserved and
/// before they are inserted: the fault the panic-policy tests inject. Test builds only.
#[cfg(test)]
pub const PANIC_METRIC_FOR_TESTS: &str = "otelscale_test_injected_panic";

/// What [`Store::append_decoded`] did with a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Samples stored (including overwrites of a sample with the same timestamp).
    pub appended: u64,
    pub series_created: u64,
    /// Samples of new series refused because the store holds `series_count_max` series.
    pub rejected_series_limit: u64,
    /// Samples of new series refused because their metric has `series_per_metric_max` series.
    pub rejected_metric_series_limit: u64,
    /// Samples refused because a new series or chunk would exceed `bytes_max`.
    pub rejected_store_bytes: u64,
    /// Samples older than their series' last sample.
    pub rejected_out_of_order: u64,
    /// Samples older than the retention window.
    pub rejected_too_old: u64,
}

/// A series as listed by the admin API.
#[derive(Debug, Clone)]
pub struct SeriesSummary {
    pub key: SeriesKey,
    pub kind: SeriesKind,
    pub sample_count: usize,
    pub last_timestamp_ms: Option<i64>,
}

/// How much one [`Store::list_series`] answer may hold.
#[derive(Debug, Clone, Copy)]
pub struct ListLimits {
    pub series_max: usize,
    /// Bytes of the listed series' keys ([`SeriesKey::heap_bytes`]).
    pub key_bytes_max: usize,
}

/// A listing of series, and whether (and by which limit) it stopped before the last match.
#[derive(Debug)]
pub struct SeriesListing {
    pub series: Vec<SeriesSummary>,
    pub truncated: Option<ListTruncation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListTruncation {
    SeriesCount,
    KeyBytes,
}

impl ListTruncation {
    pub fn as_str(self) -> &'static str {
        match self {
            ListTruncation::SeriesCount => "series_count",
            ListTruncation::KeyBytes => "key_bytes",
        }
    }
}

/// A series as a snapshot reads it, under its shard's read lock.
pub struct SeriesView<'a> {
    pub key: SeriesRef<'a>,
    pub kind: SeriesKind,
    chunks: &'a [Chunk],
}

impl<'a> SeriesView<'a> {
    /// The series' chunks, oldest first, each with its samples in time order.
    pub fn chunks(&self) -> impl Iterator<Item = ChunkSlice<'a>> + 'a {
        self.chunks.iter().map(|chunk| chunk.slice_from(0))
    }
}

/// What [`Store::restore_series`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// The series is in the store with this many of the given samples (samples beyond the
    /// byte limit are not).
    Restored { samples: usize },
    /// The series was refused: a limit is reached.
    Refused(SeriesRefusal),
    /// No sample was given: nothing stored.
    Empty,
}

/// The store's counts: the running ones ([`Store::counts`]) or recomputed by a scan
/// ([`Store::recount`]); the two are equal at every moment no append or retention is running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCounts {
    pub series: usize,
    pub bytes: usize,
    /// Series per metric, by name.
    pub series_by_metric: Vec<(String, usize)>,
}

#[derive(Debug)]
pub struct Store {
    shards: Box<[RwLock<Shard>]>,
    /// Per shard: metric walks under way, which keep retention from shifting postings.
    walks_under_way: Box<[AtomicUsize]>,
    accounting: Accounting,
    config: StoreConfig,
}

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        assert!(config.shard_count > 0, "shard_count is validated to be positive");
        let shards = (0..config.shard_count).map(|_| RwLock::new(Shard::new(config.retention_ms))).collect();
        let walks_under_way = (0..config.shard_count).map(|_| AtomicUsize::new(0)).collect();
        let accounting = Accounting::new(CountLimits {
            series_count_max: config.series_count_max,
            bytes_max: config.bytes_max,
            series_per_metric_max: config.series_per_metric_max,
        });
        Store { shards, walks_under_way, accounting, config }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn series_count(&self) -> usize {
        self.accounting.series_count()
    }

    /// Series of `metric_name` held.
    pub fn metric_series_count(&self, metric_name: &str) -> usize {
        self.accounting.metric_series_count(metric_name)
    }

    fn shard_idx(&self, key_hash: u64) -> usize {
        // The high bits, which are the label set's alone (`LABEL_SET_BITS`): every series of a
        // label set is in one shard, which holds the set once. (The low bits also pick the
        // bucket inside the shard's hash table.)
        ((key_hash >> 32) as usize) % self.shards.len()
    }

    /// Appends an owned batch (see [`Store::append_decoded`]).
    pub fn append(&self, batch: SampleBatch, now_ms: i64) -> AppendOutcome {
        self.append_decoded(&DecodedBatch::from_owned(&batch), now_ms)
    }

    /// Appends a batch. Samples of the same series must be in time order within the batch.
    /// Each shard's lock is taken once per batch; a `SeriesKey` is built only for a new series.
    pub fn append_decoded(&self, batch: &DecodedBatch<'_>, now_ms: i64) -> AppendOutcome {
        let mut outcome = AppendOutcome::default();
        let cutoff_ms = now_ms.saturating_sub(self.config.retention_ms);
        let samples = batch.samples();
        // (shard, sample) pairs, sorted: the sample index keeps each series' samples in their
        // original order, and an unstable sort of unique keys needs no scratch allocation.
        let mut order: Vec<(u32, u32)> = Vec::with_capacity(samples.len());
        for (sample_idx, sample) in samples.iter().enumerate() {
            if sample.timestamp_ms < cutoff_ms {
                outcome.rejected_too_old += 1;
            } else {
                order.push((self.shard_idx(sample.key_hash) as u32, sample_idx as u32));
            }
        }
        order.sort_unstable();
        let mut metric_counter = None;
        // A shard's write lock is held for at most APPEND_SAMPLES_PER_LOCK samples at a time, so a
        // query waiting on it waits for tens of microseconds, not for a whole batch's share.
        for run in order.chunk_by(|a, b| a.0 == b.0).flat_map(|run| run.chunks(APPEND_SAMPLES_PER_LOCK)) {
            let mut shard = self.shards[run[0].0 as usize].write();
            // The series of the previous sample, valid while this lock is held: a run of samples
            // with the same label set (points without attributes of one metric) is looked up
            // once, not compared key by key.
            let mut previous: Option<(&DecodedSample, shard::SeriesIdx)> = None;
            for &(_, sample_idx) in run {
                let sample = &samples[sample_idx as usize];
                let series_idx = match previous {
                    Some((previous_sample, series_idx)) if sample.same_labels_as(previous_sample) => series_idx,
                    _ => {
                        let metric_name = batch.metric_name(sample);
                        let found = shard.find(sample.key_hash, |key| key.equals(metric_name, batch.labels(sample)));
                        match found {
                            Some(idx) => idx,
                            None => match self.insert_series(
                                (&mut shard, run[0].0 as usize),
                                batch,
                                sample,
                                &mut metric_counter,
                            ) {
                                Ok(idx) => {
                                    outcome.series_created += 1;
                                    idx
                                }
                                Err(refusal) => {
                                    match refusal {
                                        SeriesRefusal::SeriesLimit => outcome.rejected_series_limit += 1,
                                        SeriesRefusal::MetricSeriesLimit => outcome.rejected_metric_series_limit += 1,
                                        SeriesRefusal::BytesLimit => outcome.rejected_store_bytes += 1,
                                    }
                                    continue;
                                }
                            },
                        }
                    }
                };
                previous = Some((sample, series_idx));
                let appended =
                    shard.append(series_idx, sample.kind, sample.timestamp_ms, sample.value, &self.accounting);
                match appended {
                    AppendResult::Appended | AppendResult::Overwritten => outcome.appended += 1,
                    AppendResult::OutOfOrder => outcome.rejected_out_of_order += 1,
                    AppendResult::StoreFull => outcome.rejected_store_bytes += 1,
                }
            }
        }
        outcome
    }

    /// Creates the series of `sample` in `shard` (whose lock the caller holds; with its index), if the limits
    /// allow: reserved in every count first, then inserted, which commits the reservation.
    /// `metric_counter`: the counter of the batch metric the previous new series was of, kept
    /// across calls so that a run of new series of one metric looks it up once.
    fn insert_series(
        &self,
        (shard, shard_idx): (&mut Shard, usize),
        batch: &DecodedBatch<'_>,
        sample: &DecodedSample,
        metric_counter: &mut Option<(u32, MetricCounter)>,
    ) -> Result<shard::SeriesIdx, SeriesRefusal> {
        let metric_name = batch.metric_name(sample);
        let set_hash = label_set_hash(batch.label_set_hash(sample));
        let known_set = shard.find_label_set(set_hash, |labels| labels.equals(batch.labels(sample)));
        let (n_labels, strings_len) = batch.label_sizes(sample);
        let new_set = known_set.is_none().then(|| (n_labels, Labels::encoded_len(n_labels, strings_len)));
        // A series' first chunk is the smallest: nothing tells its rate yet.
        let bytes = shard.new_series_bytes(metric_name, new_set, ChunkClass::Small);
        if metric_counter.as_ref().is_none_or(|&(metric_idx, _)| metric_idx != sample.metric_idx) {
            *metric_counter = Some((sample.metric_idx, self.accounting.metric_counter(metric_name)));
        }
        let (_, counter) = metric_counter.as_ref().expect("filled above");
        let reservation = self.accounting.reserve_series(counter, shard_idx, bytes)?;
        #[cfg(test)]
        if metric_name == PANIC_METRIC_FOR_TESTS {
            panic!("fault injected for a test: a new series of {PANIC_METRIC_FOR_TESTS} after its reservation");
        }
        let labels = match known_set {
            Some(set_idx) => NewSeriesLabels::Known(set_idx),
            None => NewSeriesLabels::New {
                labels: Labels::from_canonical_sized(n_labels, strings_len, batch.labels(sample)),
                hash: set_hash,
            },
        };
        Ok(shard.insert(reservation, metric_name, labels, sample.key_hash, sample.kind, ChunkClass::Small))
    }

    /// Makes room for `series` more series spread over the shards (before a restore), so the
    /// index does not grow step by step.
    pub fn reserve_series(&self, series: usize) {
        let per_shard = series.div_ceil(self.shards.len());
        for shard in self.shards.iter() {
            shard.write().reserve(per_shard);
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Calls `visit` with the series of shard `shard_idx` in slots `first_slot..first_slot +
    /// slot_count`, under one hold of the shard's read lock (appends to the shard wait for it,
    /// queries do not). Returns the next slot, or `None` when the shard has been read to the end.
    pub fn visit_shard_slots(
        &self,
        shard_idx: usize,
        first_slot: usize,
        slot_count: usize,
        mut visit: impl FnMut(SeriesView<'_>),
    ) -> Option<usize> {
        self.shards[shard_idx].read().visit_slots(first_slot, slot_count, &mut |key, series| {
            visit(SeriesView { key, kind: series.kind, chunks: &series.chunks })
        })
    }

    /// Puts a series read from a snapshot into the store: `samples` in ascending time order
    /// (a sample not later than the series' last is skipped). The series limit applies. A new
    /// series' first chunk is sized by the rate of `samples`, as if they had been pushed.
    pub fn restore_series(&self, key: SeriesKey, kind: SeriesKind, samples: &[(i64, f64)]) -> RestoreOutcome {
        let (Some(&(first_ms, _)), Some(&(last_ms, _))) = (samples.first(), samples.last()) else {
            return RestoreOutcome::Empty;
        };
        let first_chunk = ChunkClass::for_rate(samples.len(), last_ms - first_ms, self.config.retention_ms);
        // The set's hash once: the series hash and the shard's table of sets both take it.
        let set = key.label_set().set_hash();
        let key_hash = combine_series_hash(metric_name_hash(key.metric_name()), set);
        let shard_idx = self.shard_idx(key_hash);
        let mut shard = self.shards[shard_idx].write();
        let series_idx = match shard.find(key_hash, |stored| stored == key.as_ref()) {
            Some(idx) => idx,
            None => {
                let labels = key.label_set();
                let set_hash = label_set_hash(set);
                let known_set = shard.find_label_set(set_hash, |stored| stored == labels);
                let new_set = known_set.is_none().then(|| (labels.len(), labels.heap_bytes()));
                let bytes = shard.new_series_bytes(key.metric_name(), new_set, first_chunk);
                let counter = self.accounting.metric_counter(key.metric_name());
                let reservation = match self.accounting.reserve_series(&counter, shard_idx, bytes) {
                    Ok(reservation) => reservation,
                    Err(refusal) => return RestoreOutcome::Refused(refusal),
                };
                let (metric_name, labels) = key.into_parts();
                let labels = match known_set {
                    Some(set_idx) => NewSeriesLabels::Known(set_idx),
                    None => NewSeriesLabels::New { labels, hash: set_hash },
                };
                shard.insert(reservation, &metric_name, labels, key_hash, kind, first_chunk)
            }
        };
        let restored = samples
            .iter()
            .filter(|&&(timestamp_ms, value)| {
                shard.append(series_idx, kind, timestamp_ms, value, &self.accounting) == AppendResult::Appended
            })
            .count();
        RestoreOutcome::Restored { samples: restored }
    }

    /// Calls `visit` for every series of `metric_name` (normalized), with a window view over its
    /// samples stamped in `start_ms..=end_ms` (`end_ms` is the evaluation time: later samples
    /// are not read), until `visit` breaks. Shards are read one at a time, and each shard's read
    /// lock is held for at most [`VISIT_SERIES_PER_LOCK`] series: appends and retention wait for
    /// one run, never for a whole scan. A series appended to during the walk is seen with or
    /// without its newest samples; one created during it may be missed; none is visited twice.
    pub fn visit_metric<B>(
        &self,
        metric_name: &str,
        start_ms: i64,
        end_ms: i64,
        visit: impl FnMut(SeriesRef<'_>, SeriesWindow<'_>) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        self.visit_metric_with_labels(metric_name, &[], start_ms, end_ms, visit)
    }

    /// As [`Store::visit_metric`], but may leave out series that fail one of `narrowings`: in
    /// each shard, the label index gives the candidates (the smallest of the narrowings' sets,
    /// see [`LabelNarrowing`]) when they are fewer than the metric's series, so a query costs
    /// what it matches, not what its metric holds. Every series of the metric that meets all
    /// of `narrowings` is visited as `visit_metric` would; others may be visited too (the
    /// caller checks its matchers on each key). Candidates are read under one hold of the
    /// shard's read lock and visited in runs of [`VISIT_SERIES_PER_LOCK`].
    pub fn visit_metric_with_labels<B>(
        &self,
        metric_name: &str,
        narrowings: &[LabelNarrowing<'_>],
        start_ms: i64,
        end_ms: i64,
        mut visit: impl FnMut(SeriesRef<'_>, SeriesWindow<'_>) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        debug_assert!(
            narrowings.iter().all(|narrowing| match narrowing {
                LabelNarrowing::Equal { value, .. } => !value.is_empty(),
                LabelNarrowing::Matching { matches, .. } => !matches.is_match(""),
            }),
            "a narrowing that accepts the empty value matches series without the label"
        );
        // Only the shards that may hold its series: a query over a small metric takes one or two
        // locks, not every shard's (each a chance to wait behind an append).
        let shards = self.accounting.metric_shards(metric_name);
        let reads_values = narrowings.iter().any(|narrowing| matches!(narrowing, LabelNarrowing::Matching { .. }));
        for shard_idx in (0..self.shards.len()).filter(|&shard_idx| shards.may_hold(shard_idx)) {
            let shard = &self.shards[shard_idx];
            if reads_values && shard.read().lacks_label_values(narrowings) {
                // A regex's first read of this label here: its value set is made once, under
                // the write lock (one pass over the shard's label sets).
                shard.write().index_label_values(narrowings);
            }
            let candidates =
                if narrowings.is_empty() { None } else { shard.read().label_candidates(metric_name, narrowings) };
            match candidates {
                Some(candidates) => {
                    for run in candidates.chunks(VISIT_SERIES_PER_LOCK) {
                        shard.read().visit_candidates(metric_name, run, (start_ms, end_ms), &mut visit)?;
                    }
                }
                None => self.visit_shard_metric(shard_idx, metric_name, (start_ms, end_ms), &mut visit)?,
            }
        }
        ControlFlow::Continue(())
    }

    /// Every series of `metric_name` in shard `shard_idx`, by postings position in runs.
    fn visit_shard_metric<B>(
        &self,
        shard_idx: usize,
        metric_name: &str,
        window: (i64, i64),
        visit: &mut impl FnMut(SeriesRef<'_>, SeriesWindow<'_>) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        // Counted before the first run's lock, so retention leaves tombstones instead of
        // shifting positions until the walk is over.
        let _walk = WalkUnderWay::start(&self.walks_under_way[shard_idx]);
        let mut position = 0;
        loop {
            let run = self.shards[shard_idx].read().visit_metric_run(
                metric_name,
                position,
                VISIT_SERIES_PER_LOCK,
                window,
                visit,
            );
            match run {
                RunEnd::Next(next_position) => position = next_position,
                RunEnd::Done => return ControlFlow::Continue(()),
                RunEnd::Stopped(stop) => return ControlFlow::Break(stop),
            }
        }
    }

    /// The series of `metric_name`: what a query over it may cost (read from the counts, not
    /// the shards, so it takes no shard lock).
    pub fn metric_series_bound(&self, metric_name: &str) -> usize {
        self.accounting.metric_series_count(metric_name)
    }

    /// Panics unless every shard's label index is exact (for tests).
    #[cfg(test)]
    pub fn check_label_index(&self) {
        self.shards.iter().for_each(|shard| shard.read().check_label_index());
    }

    /// Label sets held in all shards (for tests).
    #[cfg(test)]
    pub fn label_set_count(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().label_set_count()).sum()
    }

    /// Postings of `metric_name` in every shard, tombstones included (for tests).
    #[cfg(test)]
    pub fn metric_postings_len(&self, metric_name: &str) -> usize {
        self.shards.iter().map(|shard| shard.read().metric_postings_len(metric_name)).sum()
    }

    /// The series whose metric name is `metric_name` (normalized), or of every metric when
    /// `None`, sorted by key, up to `limits`: a listing that reaches one stops there and says
    /// which. Shards are read in ranges of slots, one read-lock hold per range; shards that
    /// hold no series of `metric_name` are skipped.
    pub fn list_series(&self, metric_name: Option<&str>, limits: ListLimits) -> SeriesListing {
        let mut listing = SeriesListing { series: Vec::new(), truncated: None };
        let mut key_bytes = 0usize;
        let shards = metric_name.map(|name| self.accounting.metric_shards(name));
        for shard_idx in 0..self.shards.len() {
            if listing.truncated.is_some() {
                break;
            }
            if shards.is_some_and(|shards| !shards.may_hold(shard_idx)) {
                continue;
            }
            let mut next_slot = Some(0);
            while let Some(first_slot) = next_slot.filter(|_| listing.truncated.is_none()) {
                next_slot = self.visit_shard_slots(shard_idx, first_slot, LIST_SLOTS_PER_LOCK, |series| {
                    if listing.truncated.is_some() || metric_name.is_some_and(|name| !series.key.has_metric_name(name))
                    {
                        return;
                    }
                    if listing.series.len() == limits.series_max {
                        listing.truncated = Some(ListTruncation::SeriesCount);
                        return;
                    }
                    key_bytes += series.key.heap_bytes();
                    if key_bytes > limits.key_bytes_max {
                        listing.truncated = Some(ListTruncation::KeyBytes);
                        return;
                    }
                    listing.series.push(SeriesSummary {
                        key: series.key.to_owned(),
                        kind: series.kind,
                        sample_count: series.chunks.iter().map(Chunk::len).sum(),
                        last_timestamp_ms: series.chunks.last().and_then(Chunk::last_timestamp_ms),
                    });
                });
            }
        }
        listing.series.sort_by(|a, b| a.key.cmp(&b.key));
        listing
    }

    /// Applies retention: drops samples older than `now_ms - retention_ms` chunk by chunk and the
    /// series left empty. Returns the number of series removed.
    pub fn drop_expired(&self, now_ms: i64) -> usize {
        self.drop_expired_telling(now_ms, |_| {})
    }

    /// As [`Store::drop_expired`], calling `on_removed` with each removed series' key (under its
    /// shard's write lock: it must not take a shard lock).
    pub fn drop_expired_telling(&self, now_ms: i64, mut on_removed: impl FnMut(SeriesRef<'_>)) -> usize {
        let cutoff_ms = now_ms.saturating_sub(self.config.retention_ms);
        let mut series_removed = 0;
        for (shard, walks) in self.shards.iter().zip(self.walks_under_way.iter()) {
            // A range of slots per lock hold: appends and queries of this shard wait for one
            // range (tens of microseconds), not for a scan of the whole shard.
            let mut next_slot = Some(0);
            while let Some(first_slot) = next_slot {
                let mut shard = shard.write();
                // Read under the write lock: a walk that has not started its first run yet
                // waits for this one, and one under way has already counted itself.
                let compact = walks.load(Ordering::Acquire) == 0;
                let (removed, next) = shard.drop_expired(
                    cutoff_ms,
                    first_slot,
                    RETENTION_SLOTS_PER_LOCK,
                    compact,
                    &self.accounting,
                    &mut on_removed,
                );
                drop(shard);
                series_removed += removed;
                next_slot = next;
            }
        }
        self.accounting.forget_unused_metrics();
        series_removed
    }

    /// Bytes held by keys, series and chunks (spare ones included), as counted against
    /// `bytes_max`: a running count, not a scan (for `/metrics`).
    pub fn heap_bytes(&self) -> usize {
        self.accounting.bytes()
    }

    /// The running counts.
    pub fn counts(&self) -> StoreCounts {
        StoreCounts {
            series: self.accounting.series_count(),
            bytes: self.accounting.bytes(),
            series_by_metric: self.accounting.series_by_metric(),
        }
    }

    /// The counts recomputed by a scan of every shard (tests check them against
    /// [`Store::counts`]; too slow for anything else).
    pub fn recount(&self) -> StoreCounts {
        let mut series_by_metric = BTreeMap::new();
        let (mut series, mut bytes) = (0, 0);
        for shard in self.shards.iter() {
            let (shard_series, shard_bytes) = shard.read().recount(&mut series_by_metric);
            series += shard_series;
            bytes += shard_bytes;
        }
        StoreCounts { series, bytes, series_by_metric: series_by_metric.into_iter().collect() }
    }
}

#[cfg(test)]
mod tests;
