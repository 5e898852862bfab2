//! The store's running counts and the limits they answer to: series held (`--max-series`),
//! bytes held (`--max-store-bytes`) and series per metric (`--max-series-per-metric`).
//!
//! Counts are updated in the same step as the shard change they count, under that shard's write
//! lock, never by a scan: a new series is reserved in all three counts at once (or in none)
//! before it is inserted, and the insert commits the reservation only once every step left
//! cannot fail; if the insert does not
//! happen (a refusal, or a panic in between), dropping the reservation gives it back. A chunk's bytes
//! are reserved before it is allocated and given back when it is freed. So the counts equal what
//! the shards hold at every step (`Store::recount` recomputes them by a scan, for tests).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

/// Why a new series (or a chunk) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesRefusal {
    /// The store holds `--max-series` series.
    SeriesLimit,
    /// The store holds `--max-store-bytes` bytes.
    BytesLimit,
    /// The metric has `--max-series-per-metric` series.
    MetricSeriesLimit,
}

/// The limits the counts answer to.
#[derive(Debug, Clone, Copy)]
pub(super) struct CountLimits {
    pub series_count_max: usize,
    pub bytes_max: usize,
    pub series_per_metric_max: usize,
}

/// The series of one metric, shared by the shards' series of it: how many, and in which shards.
/// An append looks it up once per run of new series of one metric (not once per series) and
/// counts through it; a query reads it to take only the locks of the shards that may hold the
/// metric's series.
pub(super) type MetricCounter = Arc<MetricSeries>;

#[derive(Debug, Default)]
pub(super) struct MetricSeries {
    count: AtomicUsize,
    /// Bit `i % 64` is set once a series of the metric has been reserved in shard `i`: a
    /// superset of the shards holding its series (bits are not cleared until the metric is
    /// forgotten).
    shards: AtomicU64,
}

impl MetricSeries {
    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn note_shard(&self, shard_idx: usize) {
        let bit = ShardSet::bit(shard_idx);
        // Loaded first: the bit is nearly always set already, and a load does not take the
        // cache line from the other cores' queries.
        if self.shards.load(Ordering::Relaxed) & bit == 0 {
            self.shards.fetch_or(bit, Ordering::Release);
        }
    }
}

/// Which shards may hold series of a metric (see [`MetricSeries`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ShardSet(u64);

impl ShardSet {
    pub const NONE: ShardSet = ShardSet(0);

    fn bit(shard_idx: usize) -> u64 {
        1 << (shard_idx % 64)
    }

    pub fn may_hold(self, shard_idx: usize) -> bool {
        self.0 & ShardSet::bit(shard_idx) != 0
    }
}

type SeriesByMetric = hashbrown::HashMap<Box<str>, MetricCounter, foldhash::fast::FixedState>;

#[derive(Debug)]
pub(super) struct Accounting {
    limits: CountLimits,
    series_count: AtomicUsize,
    bytes: AtomicUsize,
    /// Series per metric name, across shards. Read-locked to look a metric's counter up (once
    /// per run of new series of one metric, and by queries); write-locked only to add a metric
    /// and when a series is removed, never by an append to an existing series; taken under a
    /// shard's write lock (shard lock first, never the other way round). A counter at zero is
    /// forgotten once no append holds it ([`Accounting::forget_unused_metrics`], and at a
    /// metric's last removal).
    series_by_metric: RwLock<SeriesByMetric>,
}

impl Accounting {
    pub fn new(limits: CountLimits) -> Accounting {
        Accounting {
            limits,
            series_count: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            series_by_metric: RwLock::new(SeriesByMetric::with_hasher(foldhash::fast::FixedState::with_seed(0))),
        }
    }

    pub fn series_count(&self) -> usize {
        self.series_count.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Series of `metric_name` held.
    pub fn metric_series_count(&self, metric_name: &str) -> usize {
        self.series_by_metric.read().get(metric_name).map_or(0, |metric| metric.count())
    }

    /// The shards that may hold series of `metric_name`.
    pub fn metric_shards(&self, metric_name: &str) -> ShardSet {
        self.series_by_metric
            .read()
            .get(metric_name)
            .map_or(ShardSet::NONE, |metric| ShardSet(metric.shards.load(Ordering::Acquire)))
    }

    /// Every metric's series count, metrics without series left out (for the consistency
    /// checks of tests).
    pub fn series_by_metric(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<_> = self
            .series_by_metric
            .read()
            .iter()
            .map(|(name, metric)| (name.to_string(), metric.count()))
            .filter(|&(_, count)| count > 0)
            .collect();
        counts.sort_unstable();
        counts
    }

    /// The series counter of `metric_name`, made at zero if there is none.
    pub fn metric_counter(&self, metric_name: &str) -> MetricCounter {
        if let Some(counter) = self.series_by_metric.read().get(metric_name) {
            return Arc::clone(counter);
        }
        let mut by_metric = self.series_by_metric.write();
        // Another append may have added it between the two locks.
        Arc::clone(by_metric.entry(metric_name.into()).or_default())
    }

    /// Reserves a place under each limit for a new series in shard `shard_idx`, of
    /// the metric counted by `metric` (from [`Accounting::metric_counter`] of its name), taking
    /// `bytes`, or none. The insert commits it; dropped uncommitted, it is given back.
    pub fn reserve_series(
        &self,
        metric: &MetricCounter,
        shard_idx: usize,
        bytes: usize,
    ) -> Result<SeriesReservation<'_>, SeriesRefusal> {
        if !add_within(&self.series_count, 1, self.limits.series_count_max) {
            return Err(SeriesRefusal::SeriesLimit);
        }
        if !add_within(&metric.count, 1, self.limits.series_per_metric_max) {
            self.series_count.fetch_sub(1, Ordering::AcqRel);
            return Err(SeriesRefusal::MetricSeriesLimit);
        }
        if !self.try_reserve_bytes(bytes) {
            metric.count.fetch_sub(1, Ordering::AcqRel);
            self.series_count.fetch_sub(1, Ordering::AcqRel);
            return Err(SeriesRefusal::BytesLimit);
        }
        // Before the series is inserted (and visible under the shard's lock): a query that finds
        // the metric's count also finds the shard.
        metric.note_shard(shard_idx);
        Ok(SeriesReservation { accounting: self, metric: Arc::clone(metric), committed: false, bytes })
    }

    /// Gives back what a removed series of `metric_name` taking `bytes` held.
    pub fn release_series(&self, metric_name: &str, bytes: usize) {
        self.release_bytes(bytes);
        {
            let mut by_metric = self.series_by_metric.write();
            if let Some(counter) = by_metric.get(metric_name) {
                let left = counter.count.fetch_sub(1, Ordering::AcqRel) - 1;
                // No append holds it (they look counters up under this lock): forget it.
                if left == 0 && Arc::strong_count(counter) == 1 {
                    by_metric.remove(metric_name);
                }
            }
        }
        self.series_count.fetch_sub(1, Ordering::AcqRel);
    }

    /// Forgets the counters at zero that no append holds (those of metrics whose new series
    /// were all refused, or that an append held at their last removal).
    pub fn forget_unused_metrics(&self) {
        self.series_by_metric.write().retain(|_, counter| counter.count() > 0 || Arc::strong_count(counter) > 1);
    }

    /// Reserves `bytes` (a chunk) if they fit under `--max-store-bytes`.
    pub fn try_reserve_bytes(&self, bytes: usize) -> bool {
        add_within(&self.bytes, bytes, self.limits.bytes_max)
    }

    pub fn release_bytes(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Adds `amount` to `counter` if the sum stays at most `max`.
fn add_within(counter: &AtomicUsize, amount: usize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| count.checked_add(amount).filter(|&sum| sum <= max))
        .is_ok()
}

/// A new series' place under the limits, held until the series is inserted.
#[derive(Debug)]
#[must_use = "an uncommitted reservation is given back when dropped"]
pub(super) struct SeriesReservation<'s> {
    accounting: &'s Accounting,
    metric: MetricCounter,
    committed: bool,
    bytes: usize,
}

impl SeriesReservation<'_> {
    /// The series goes into its shard now, by steps that cannot fail: the counts stand for it.
    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for SeriesReservation<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.accounting.release_bytes(self.bytes);
            self.metric.count.fetch_sub(1, Ordering::AcqRel);
            self.accounting.series_count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounting(series_count_max: usize, bytes_max: usize, series_per_metric_max: usize) -> Accounting {
        Accounting::new(CountLimits { series_count_max, bytes_max, series_per_metric_max })
    }

    #[test]
    fn a_refused_or_dropped_reservation_leaves_every_count_as_it_was() {
        let counts = accounting(3, 1_000, 2);
        let (a, b, c) = (counts.metric_counter("a"), counts.metric_counter("b"), counts.metric_counter("c"));
        counts.reserve_series(&a, 0, 100).unwrap().commit();
        counts.reserve_series(&a, 0, 100).unwrap().commit();
        assert_eq!(counts.reserve_series(&a, 0, 100).unwrap_err(), SeriesRefusal::MetricSeriesLimit);
        assert_eq!(counts.reserve_series(&b, 0, 900).unwrap_err(), SeriesRefusal::BytesLimit);
        drop(counts.reserve_series(&b, 0, 100).unwrap());
        assert_eq!((counts.series_count(), counts.bytes(), counts.metric_series_count("b")), (2, 200, 0));
        counts.reserve_series(&b, 0, 100).unwrap().commit();
        assert_eq!(counts.reserve_series(&c, 0, 1).unwrap_err(), SeriesRefusal::SeriesLimit);
        counts.release_series("a", 100);
        assert_eq!(counts.series_by_metric(), [("a".to_string(), 1), ("b".to_string(), 1)]);
        assert_eq!((counts.series_count(), counts.bytes()), (2, 200));
        assert!(counts.try_reserve_bytes(800) && !counts.try_reserve_bytes(1));
    }

    #[test]
    fn a_metric_knows_the_shards_its_series_were_reserved_in() {
        let counts = accounting(100, 10_000, 100);
        assert_eq!(counts.metric_shards("m"), ShardSet::NONE);
        let m = counts.metric_counter("m");
        counts.reserve_series(&m, 3, 10).unwrap().commit();
        counts.reserve_series(&m, 70, 10).unwrap().commit();
        let shards = counts.metric_shards("m");
        assert!(shards.may_hold(3) && shards.may_hold(70) && shards.may_hold(6), "70 and 6 share bit 6");
        assert!(!shards.may_hold(0) && !shards.may_hold(4));
        assert_eq!(counts.metric_shards("other"), ShardSet::NONE);
    }

    #[test]
    fn a_counter_at_zero_is_forgotten_once_no_append_holds_it() {
        let counts = accounting(10, 1_000, 10);
        let held = counts.metric_counter("m");
        counts.reserve_series(&held, 0, 10).unwrap().commit();
        // Removed while an append holds the counter: kept, and still the one looked up.
        counts.release_series("m", 10);
        assert!(Arc::ptr_eq(&held, &counts.metric_counter("m")));
        counts.forget_unused_metrics();
        assert_eq!(counts.series_by_metric.read().len(), 1);
        drop(held);
        counts.forget_unused_metrics();
        assert_eq!(counts.series_by_metric.read().len(), 0);
        // A removal with nobody holding the counter forgets it at once.
        counts.reserve_series(&counts.metric_counter("n"), 0, 10).unwrap().commit();
        counts.release_series("n", 10);
        assert_eq!((counts.series_by_metric.read().len(), counts.series_count(), counts.bytes()), (0, 0, 0));
    }
}
