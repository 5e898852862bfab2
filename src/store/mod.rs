//! The in-memory series store: sharded series index, columnar per-series chunks, retention.
//!
//! The store knows nothing of protobuf, gRPC, HTTP or tokio: ingest hands it [`SampleBatch`]es
//! of already validated samples, and queries read it through [`Store::visit_metric`].
//! **Invariant:** once [`Store::append`] returns, every later read sees the appended samples.

mod chunk;
pub mod kernels;
mod series_key;
mod shard;
mod window;

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

pub use chunk::CHUNK_CAPACITY;
pub use series_key::{normalize_metric_name, LabelPair, SeriesKey};
pub use window::{SeriesKind, SeriesWindow, WindowOp};

use shard::{AppendResult, Shard};

/// Store sizing, taken from the validated [`crate::config::Config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    pub shard_count: usize,
    pub series_count_max: usize,
    pub retention_ms: i64,
}

/// One validated sample on its way into the store.
#[derive(Debug, Clone)]
pub struct BatchSample {
    pub key: SeriesKey,
    pub key_hash: u64,
    pub kind: SeriesKind,
    pub timestamp_ms: i64,
    pub value: f64,
}

impl BatchSample {
    pub fn new(key: SeriesKey, kind: SeriesKind, timestamp_ms: i64, value: f64) -> Self {
        let key_hash = key.stable_hash();
        BatchSample { key, key_hash, kind, timestamp_ms, value }
    }
}

/// The samples of one export request, in the order they were received.
#[derive(Debug, Default)]
pub struct SampleBatch {
    pub samples: Vec<BatchSample>,
}

/// What [`Store::append`] did with a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Samples stored (including overwrites of a sample with the same timestamp).
    pub appended: u64,
    pub series_created: u64,
    /// Samples of new series refused because the store holds `series_count_max` series.
    pub rejected_series_limit: u64,
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

#[derive(Debug)]
pub struct Store {
    shards: Box<[RwLock<Shard>]>,
    series_count: AtomicUsize,
    config: StoreConfig,
}

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        assert!(config.shard_count > 0, "shard_count is validated to be positive");
        let shards = (0..config.shard_count).map(|_| RwLock::new(Shard::default())).collect();
        Store { shards, series_count: AtomicUsize::new(0), config }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn series_count(&self) -> usize {
        self.series_count.load(Ordering::Relaxed)
    }

    fn shard_idx(&self, key_hash: u64) -> usize {
        // The high bits: the low ones also pick the bucket inside the shard's hash table.
        ((key_hash >> 32) as usize) % self.shards.len()
    }

    /// Appends a batch. Samples of the same series must be in time order within the batch.
    /// Each shard's lock is taken once per batch.
    pub fn append(&self, batch: SampleBatch, now_ms: i64) -> AppendOutcome {
        let mut outcome = AppendOutcome::default();
        let cutoff_ms = now_ms.saturating_sub(self.config.retention_ms);
        let mut samples = batch.samples;
        samples.retain(|sample| {
            let fresh = sample.timestamp_ms >= cutoff_ms;
            outcome.rejected_too_old += u64::from(!fresh);
            fresh
        });
        // A stable sort keeps each series' samples in their original order.
        samples.sort_by_key(|sample| self.shard_idx(sample.key_hash));
        let mut remaining = samples.as_mut_slice();
        while let Some(first) = remaining.first() {
            let shard_idx = self.shard_idx(first.key_hash);
            let run_len = remaining.iter().take_while(|sample| self.shard_idx(sample.key_hash) == shard_idx).count();
            let (run, rest) = remaining.split_at_mut(run_len);
            self.append_to_shard(shard_idx, run, &mut outcome);
            remaining = rest;
        }
        outcome
    }

    fn append_to_shard(&self, shard_idx: usize, run: &mut [BatchSample], outcome: &mut AppendOutcome) {
        let mut shard = self.shards[shard_idx].write();
        for sample in run {
            let series_idx = match shard.find(&sample.key, sample.key_hash) {
                Some(idx) => idx,
                None => {
                    if !self.reserve_series_slot() {
                        outcome.rejected_series_limit += 1;
                        continue;
                    }
                    outcome.series_created += 1;
                    let key = std::mem::replace(&mut sample.key, SeriesKey::new("", Vec::new()));
                    shard.insert(key, sample.key_hash, sample.kind)
                }
            };
            match shard.append(series_idx, sample.kind, sample.timestamp_ms, sample.value) {
                AppendResult::Appended | AppendResult::Overwritten => outcome.appended += 1,
                AppendResult::OutOfOrder => outcome.rejected_out_of_order += 1,
            }
        }
    }

    fn reserve_series_slot(&self) -> bool {
        self.series_count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < self.config.series_count_max).then_some(count + 1)
            })
            .is_ok()
    }

    /// Calls `visit` for every series of `metric_name` (normalized), with a window view over the
    /// samples with `timestamp >= start_ms`. Shards are read one at a time.
    pub fn visit_metric(&self, metric_name: &str, start_ms: i64, mut visit: impl FnMut(&SeriesKey, SeriesWindow<'_>)) {
        for shard in self.shards.iter() {
            shard.read().visit_metric(metric_name, start_ms, &mut visit);
        }
    }

    /// Up to `limit` series whose metric name is `metric_name`, or of every metric when `None`.
    pub fn list_series(&self, metric_name: Option<&str>, limit: usize) -> Vec<SeriesSummary> {
        let mut listed = Vec::new();
        for shard in self.shards.iter() {
            shard.read().for_each_series(&mut |series| {
                if listed.len() < limit && metric_name.is_none_or(|name| series.key.metric_name() == name) {
                    listed.push(SeriesSummary {
                        key: series.key.clone(),
                        kind: series.kind,
                        sample_count: series.sample_count(),
                        last_timestamp_ms: series.last_timestamp_ms(),
                    });
                }
            });
        }
        listed.sort_by(|a, b| (a.key.metric_name(), a.key.labels()).cmp(&(b.key.metric_name(), b.key.labels())));
        listed
    }

    /// Applies retention: drops samples older than `now_ms - retention_ms` chunk by chunk and the
    /// series left empty. Returns the number of series removed.
    pub fn drop_expired(&self, now_ms: i64) -> usize {
        let cutoff_ms = now_ms.saturating_sub(self.config.retention_ms);
        let mut series_removed = 0;
        for shard in self.shards.iter() {
            let removed = shard.write().drop_expired(cutoff_ms);
            self.series_count.fetch_sub(removed, Ordering::AcqRel);
            series_removed += removed;
        }
        series_removed
    }

    /// Heap bytes held by chunks, label strings and slots (an estimate for `/metrics`).
    pub fn heap_bytes(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().heap_bytes()).sum()
    }
}

#[cfg(test)]
mod tests;
