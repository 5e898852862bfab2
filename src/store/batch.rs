//! Batches on their way into the store.
//!
//! [`DecodedBatch`] is the store's input form: every label borrows from the request buffer (or
//! from the batch's own small text arena for values the decoder had to produce, such as a
//! formatted number), each sample's labels are in canonical order, and its series hash is already
//! computed. Nothing is allocated per sample beyond amortized vector growth; a `SeriesKey` is built
//! only when the store meets a new series. [`SampleBatch`] is the owned form (tests, the JSON path).

use super::series_key::{series_hash, LabelRef, SeriesKey};
use super::window::SeriesKind;

/// Text of a decoded label value or metric name: borrowed from the request, or in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchText<'a> {
    Borrowed(&'a str),
    Arena { start: u32, len: u32 },
}

/// A decoded label: names always borrow (attribute keys, or static names such as `le`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLabel<'a> {
    pub name: &'a str,
    pub value: BatchText<'a>,
}

/// One sample of a [`DecodedBatch`]; its labels are `labels[labels_start..labels_start + labels_len]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodedSample {
    pub metric_idx: u32,
    pub labels_start: u32,
    pub labels_len: u32,
    pub key_hash: u64,
    pub kind: SeriesKind,
    pub timestamp_ms: i64,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct DecodedBatch<'a> {
    metric_names: Vec<BatchText<'a>>,
    labels: Vec<BatchLabel<'a>>,
    text_arena: String,
    samples: Vec<DecodedSample>,
}

impl<'a> DecodedBatch<'a> {
    pub fn new() -> Self {
        DecodedBatch::default()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Makes room for `samples` samples and `labels` labels.
    pub fn reserve(&mut self, samples: usize, labels: usize) {
        self.samples.reserve(samples);
        self.labels.reserve(labels);
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn samples(&self) -> &[DecodedSample] {
        &self.samples
    }

    /// Copies `text` into the arena (for values that are not in the request buffer as text).
    pub fn push_text(&mut self, text: &str) -> BatchText<'a> {
        let start = u32::try_from(self.text_arena.len()).expect("arena stays below 4 GiB (request size limit)");
        self.text_arena.push_str(text);
        BatchText::Arena { start, len: text.len() as u32 }
    }

    pub fn resolve<'s>(&'s self, text: BatchText<'a>) -> &'s str
    where
        'a: 's,
    {
        match text {
            BatchText::Borrowed(text) => text,
            BatchText::Arena { start, len } => &self.text_arena[start as usize..(start + len) as usize],
        }
    }

    /// Registers a (normalized) metric name for the samples that follow.
    pub fn push_metric_name(&mut self, name: BatchText<'a>) -> u32 {
        self.metric_names.push(name);
        (self.metric_names.len() - 1) as u32
    }

    /// Appends a sample whose `labels` are in canonical order (sorted by name, unique).
    pub fn push_sample(
        &mut self,
        metric_idx: u32,
        labels: &[BatchLabel<'a>],
        kind: SeriesKind,
        timestamp_ms: i64,
        value: f64,
    ) {
        let labels_start = self.labels.len();
        self.labels.extend_from_slice(labels);
        self.push_stored_labels_sample(metric_idx, labels_start, kind, timestamp_ms, value);
    }

    /// [`DecodedBatch::push_sample`] with the labels `labels[order[0]], labels[order[1]], …`,
    /// which must be in canonical order.
    pub fn push_sample_in_order(
        &mut self,
        metric_idx: u32,
        labels: &[BatchLabel<'a>],
        order: &[u32],
        kind: SeriesKind,
        timestamp_ms: i64,
        value: f64,
    ) {
        let labels_start = self.labels.len();
        self.labels.extend(order.iter().map(|&idx| labels[idx as usize]));
        self.push_stored_labels_sample(metric_idx, labels_start, kind, timestamp_ms, value);
    }

    /// Adds the sample whose labels are `self.labels[labels_start..]`, hashing them.
    fn push_stored_labels_sample(
        &mut self,
        metric_idx: u32,
        labels_start: usize,
        kind: SeriesKind,
        timestamp_ms: i64,
        value: f64,
    ) {
        let stored = &self.labels[labels_start..];
        debug_assert!(stored.windows(2).all(|pair| pair[0].name < pair[1].name), "labels must be canonical");
        let metric_name = self.resolve(self.metric_names[metric_idx as usize]);
        let key_hash = series_hash(
            metric_name,
            stored.iter().map(|label| LabelRef { name: label.name, value: self.resolve(label.value) }),
        );
        self.samples.push(DecodedSample {
            metric_idx,
            labels_start: labels_start as u32,
            labels_len: stored.len() as u32,
            key_hash,
            kind,
            timestamp_ms,
            value,
        });
    }

    pub fn metric_name(&self, sample: &DecodedSample) -> &str {
        self.resolve(self.metric_names[sample.metric_idx as usize])
    }

    /// The sample's labels, resolved, in canonical order.
    pub fn labels(&self, sample: &DecodedSample) -> impl Iterator<Item = LabelRef<'_>> + Clone + '_ {
        let range = sample.labels_start as usize..(sample.labels_start + sample.labels_len) as usize;
        self.labels[range].iter().map(|label| LabelRef { name: label.name, value: self.resolve(label.value) })
    }

    /// Builds the owned key of a sample (for a new series).
    pub fn series_key(&self, sample: &DecodedSample) -> SeriesKey {
        SeriesKey::from_canonical(self.metric_name(sample), self.labels(sample))
    }

    /// Distinct metric names of the batch, sorted.
    pub fn metric_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.metric_names.iter().map(|&name| self.resolve(name)).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// A borrowed view of an owned batch.
    pub fn from_owned(batch: &'a SampleBatch) -> DecodedBatch<'a> {
        let mut decoded = DecodedBatch::default();
        for sample in &batch.samples {
            let metric_idx = decoded.push_metric_name(BatchText::Borrowed(sample.key.metric_name()));
            let labels_start = decoded.labels.len() as u32;
            decoded.labels.extend(
                sample
                    .key
                    .labels()
                    .map(|label| BatchLabel { name: label.name, value: BatchText::Borrowed(label.value) }),
            );
            decoded.samples.push(DecodedSample {
                metric_idx,
                labels_start,
                labels_len: decoded.labels.len() as u32 - labels_start,
                key_hash: sample.key_hash,
                kind: sample.kind,
                timestamp_ms: sample.timestamp_ms,
                value: sample.value,
            });
        }
        decoded
    }
}

/// One owned sample (tests and the slow, owned decode path).
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

/// Owned samples in the order they were received.
#[derive(Debug, Default)]
pub struct SampleBatch {
    pub samples: Vec<BatchSample>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LabelPair;

    #[test]
    fn decoded_batch_resolves_borrowed_and_arena_text_and_hashes_like_keys() {
        let buffer = String::from("gpu_util node-1 gpu");
        let mut batch = DecodedBatch::new();
        let metric = batch.push_metric_name(BatchText::Borrowed(&buffer[..8]));
        let number = batch.push_text("3");
        let labels = [
            BatchLabel { name: "Hostname", value: BatchText::Borrowed(&buffer[9..15]) },
            BatchLabel { name: &buffer[16..19], value: number },
        ];
        batch.push_sample(metric, &labels, SeriesKind::Gauge, 1_000, 2.5);
        let sample = batch.samples()[0];
        let key = SeriesKey::new("gpu_util", vec![LabelPair::new("gpu", "3"), LabelPair::new("Hostname", "node-1")]);
        assert_eq!(batch.series_key(&sample), key);
        assert_eq!(sample.key_hash, key.stable_hash());
        assert!(key.equals(batch.metric_name(&sample), batch.labels(&sample)));
        assert_eq!(batch.metric_names(), ["gpu_util"]);

        let owned = SampleBatch { samples: vec![BatchSample::new(key.clone(), SeriesKind::Gauge, 5, 1.0)] };
        let view = DecodedBatch::from_owned(&owned);
        assert_eq!(view.series_key(&view.samples()[0]), key);
        assert_eq!(view.samples()[0].key_hash, key.stable_hash());
    }
}
