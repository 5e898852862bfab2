//! Batches on their way into the store.
//!
//! [`DecodedBatch`] is the store's input form: every label borrows from the request buffer (or
//! from the batch's own small text arena for values the decoder had to produce, such as a
//! formatted number), and each sample's series hash is already computed. Nothing is allocated per
//! sample beyond amortized vector growth; a `SeriesKey` is built only when the store meets a new
//! series. [`SampleBatch`] is the owned form (tests and benches).
//!
//! **Label sets.** Labels are stored once per owner, never per sample: a resource's labels are
//! one set; a data point's own attributes are a set on top of its resource's (a point attribute
//! overrides the resource label of the same name); every sample of the point refers to that set,
//! plus at most one extra label (`le` or `quantile`) that overrides the set's label of that name.
//! A point without attributes shares its resource's set. So a batch grows with the request's
//! bytes, not with points × resource labels: [`DecodedBatch::heap_bytes`] is at most
//! [`BATCH_BYTES_PER_REQUEST_BYTE_MAX`] × the request's bytes plus a constant (ARCHITECTURE.md,
//! Limits). A set's hash is its base's plus its own labels' ([`LabelSetHash`]), so a resource's
//! labels are hashed once, and the series hash still equals [`SeriesKey::stable_hash`].
//!
//! How a point's own labels interleave with its base's in canonical order is recorded when the
//! set is pushed, as two bit masks ([`SetPlan`]), so reading a sample's labels in canonical
//! order compares no names. Sets of more than 64 labels (possible only with
//! `--max-labels-per-series` above 64) are merged by name when read.

use super::series_key::{combine_series_hash, label_hash, metric_name_hash, LabelRef, LabelSetHash, Labels, SeriesKey};
use super::window::SeriesKind;

/// The most heap bytes a [`DecodedBatch`] holds per byte of the (decompressed) request it was
/// decoded from, beyond [`BATCH_BYTES_CONSTANT`]. The worst case is a run of empty summary data
/// points: 2 bytes of protobuf each, yielding a `_count` and a `_sum` sample (2 × 40 bytes),
/// in a sample vector that may have grown to twice its length (about 84 bytes per byte in all).
/// Points with a value and labels stay far below: a DCGM-like point (8 labels, 280 bytes) takes
/// about 4.1 bytes per byte (mostly the room the zero-copy decoder reserves up front), a point without attributes under 63 resource labels of 2 KiB about 8.
pub const BATCH_BYTES_PER_REQUEST_BYTE_MAX: usize = 96;

/// The fixed part of a batch's bound: buffers that do not grow with the request.
pub const BATCH_BYTES_CONSTANT: usize = 64 * 1024;

/// A sample's labels at most (a set, and the extra label's position, fit in 16 bits).
pub const SAMPLE_LABELS_MAX: usize = u16::MAX as usize - 1;

/// Merged sets up to this many labels record their interleaving as bit masks.
const MASKED_LABELS_MAX: usize = 64;

const NONE: u32 = u32::MAX;

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

/// A label set of a [`DecodedBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelSetId(u32);

/// How a set's own labels interleave with its base's, in canonical order: computed by
/// [`DecodedBatch::plan_label_set`] and reusable for every set with the same base and the same
/// own label names (the decoders' points of one metric almost always have the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetPlan {
    /// Bit `i` of `own_mask`: the `i`-th label of the merged set is the next own label (else the
    /// next base label not overridden). Bit `j` of `base_overridden`: the base's `j`-th label is
    /// replaced by an own label of the same name.
    Masked { own_mask: u64, base_overridden: u64, merged_len: u16 },
    /// More than 64 merged labels: merged by name when read.
    ByName { merged_len: u16, overridden: u16 },
}

impl SetPlan {
    /// The plan of a set without a base: its own labels, in order.
    pub fn own_only(len: usize) -> SetPlan {
        let merged_len = u16::try_from(len.min(SAMPLE_LABELS_MAX + 1)).expect("clamped");
        if len <= MASKED_LABELS_MAX {
            let own_mask = if len == 64 { u64::MAX } else { (1u64 << len) - 1 };
            SetPlan::Masked { own_mask, base_overridden: 0, merged_len }
        } else {
            SetPlan::ByName { merged_len, overridden: 0 }
        }
    }

    /// Labels of the merged set.
    pub fn merged_len(self) -> usize {
        match self {
            SetPlan::Masked { merged_len, .. } | SetPlan::ByName { merged_len, .. } => merged_len as usize,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct LabelSet {
    /// The set whose labels this one adds to (a resource's), or `NONE`.
    base: u32,
    own_start: u32,
    own_len: u32,
    plan: SetPlan,
    /// Of the merged set (base and own labels).
    hash: LabelSetHash,
    string_bytes: usize,
}

/// Where an extra label goes in a set's canonical order: before the merged label at `position`
/// (at the end when it equals the set's length), replacing it when it has the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtraPosition {
    position: u16,
    /// The replaced label's hash and string bytes.
    replaces: Option<(u64, usize)>,
}

impl ExtraPosition {
    /// Whether the extra label replaces one of the set's.
    pub fn replaces(&self) -> bool {
        self.replaces.is_some()
    }

    /// String bytes (name and value) of the replaced label, 0 when none is.
    pub fn replaced_string_bytes(&self) -> usize {
        self.replaces.map_or(0, |(_, bytes)| bytes)
    }
}

/// One sample of a [`DecodedBatch`]: its metric name, its label set and extra label, hash, kind,
/// time and value (40 bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodedSample {
    pub metric_idx: u32,
    label_set: u32,
    /// Index of the extra label in the batch's labels, or `NONE`.
    extra_label: u32,
    extra_position: u16,
    extra_replaces: bool,
    pub kind: SeriesKind,
    pub key_hash: u64,
    pub timestamp_ms: i64,
    pub value: f64,
}

const _: () = assert!(std::mem::size_of::<DecodedSample>() == 40);

impl DecodedSample {
    /// Whether two samples of the same batch are of the same series by construction (same
    /// metric name entry, same label set, no extra label): no key comparison needed.
    pub fn same_labels_as(&self, other: &DecodedSample) -> bool {
        self.extra_label == NONE
            && other.extra_label == NONE
            && self.metric_idx == other.metric_idx
            && self.label_set == other.label_set
    }
}

#[derive(Debug, Clone, Copy)]
struct MetricName<'a> {
    text: BatchText<'a>,
    hash: u64,
}

#[derive(Debug, Default)]
pub struct DecodedBatch<'a> {
    metric_names: Vec<MetricName<'a>>,
    /// Every set's own labels (each set's contiguous, in canonical order), and extra labels.
    labels: Vec<BatchLabel<'a>>,
    /// [`label_hash`] of each of `labels`.
    label_hashes: Vec<u64>,
    label_sets: Vec<LabelSet>,
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

    /// Makes room for `samples` samples (and as many label sets) and `labels` labels.
    pub fn reserve(&mut self, samples: usize, labels: usize) {
        self.samples.reserve(samples);
        self.label_sets.reserve(samples);
        self.labels.reserve(labels);
        self.label_hashes.reserve(labels);
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn samples(&self) -> &[DecodedSample] {
        &self.samples
    }

    /// Heap bytes held by the batch's buffers (their capacities).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.metric_names.capacity() * size_of::<MetricName<'a>>()
            + self.labels.capacity() * size_of::<BatchLabel<'a>>()
            + self.label_hashes.capacity() * size_of::<u64>()
            + self.label_sets.capacity() * size_of::<LabelSet>()
            + self.text_arena.capacity()
            + self.samples.capacity() * size_of::<DecodedSample>()
    }

    /// Copies `text` into the arena (for values that are not in the request buffer as text).
    pub fn push_text(&mut self, text: &str) -> BatchText<'a> {
        let start = u32::try_from(self.text_arena.len()).expect("arena stays below 4 GiB (request size limit)");
        self.text_arena.push_str(text);
        BatchText::Arena { start, len: text.len() as u32 }
    }

    #[inline]
    pub fn resolve<'s>(&'s self, text: BatchText<'a>) -> &'s str
    where
        'a: 's,
    {
        resolve_in(&self.text_arena, text)
    }

    /// Registers a (normalized) metric name for the samples that follow.
    pub fn push_metric_name(&mut self, name: BatchText<'a>) -> u32 {
        let hash = metric_name_hash(self.resolve(name));
        self.metric_names.push(MetricName { text: name, hash });
        (self.metric_names.len() - 1) as u32
    }

    /// How labels `labels[order[0]], labels[order[1]], …` (in canonical order: sorted by name,
    /// unique) interleave with the labels of `base`: one binary search per label.
    pub fn plan_label_set(&self, base: Option<LabelSetId>, labels: &[BatchLabel<'a>], order: &[u32]) -> SetPlan {
        let Some(base) = base else { return SetPlan::own_only(order.len()) };
        let base_labels = self.own_labels(self.label_sets[base.0 as usize]);
        let mut overridden = 0usize;
        // Base labels before each own label, and whether the own label replaces the next one.
        let mut merged_len = 0usize;
        let mut own_mask = 0u64;
        let mut base_overridden = 0u64;
        let mut base_taken = 0usize;
        for &idx in order {
            let name = labels[idx as usize].name;
            let (insert_at, replaces) = match base_labels.binary_search_by(|label| label.name.cmp(name)) {
                Ok(found) => (found, true),
                Err(insert_at) => (insert_at, false),
            };
            merged_len += insert_at - base_taken;
            base_taken = insert_at;
            if merged_len < MASKED_LABELS_MAX {
                own_mask |= 1 << merged_len;
            }
            if replaces {
                if base_taken < MASKED_LABELS_MAX {
                    base_overridden |= 1 << base_taken;
                }
                base_taken += 1;
                overridden += 1;
            }
            merged_len += 1;
        }
        merged_len += base_labels.len() - base_taken;
        let merged_len_u16 = u16::try_from(merged_len.min(SAMPLE_LABELS_MAX + 1)).expect("clamped");
        if merged_len <= MASKED_LABELS_MAX {
            SetPlan::Masked { own_mask, base_overridden, merged_len: merged_len_u16 }
        } else {
            SetPlan::ByName { merged_len: merged_len_u16, overridden: u16::try_from(overridden).unwrap_or(u16::MAX) }
        }
    }

    /// Stores a label set: `labels[order[0]], labels[order[1]], …` (canonical order) on top of
    /// `base`, interleaved as `plan` (from [`DecodedBatch::plan_label_set`] for the same base and
    /// label names) says. Each label is hashed here, but for `labels[idx]` with `idx <
    /// known_hashes.len()`, whose [`label_hash`] is `known_hashes[idx]`.
    pub fn push_label_set(
        &mut self,
        base: Option<LabelSetId>,
        labels: &[BatchLabel<'a>],
        order: &[u32],
        plan: SetPlan,
        known_hashes: &[u64],
    ) -> LabelSetId {
        debug_assert_eq!(plan, self.plan_label_set(base, labels, order), "a plan for other names");
        let own_start = self.labels.len();
        let mut hash = LabelSetHash::default();
        let mut string_bytes = 0;
        if let Some(base) = base {
            let base_set = self.label_sets[base.0 as usize];
            hash = base_set.hash;
            string_bytes = base_set.string_bytes;
            match plan {
                SetPlan::Masked { base_overridden, .. } => {
                    let mut overridden = base_overridden;
                    while overridden != 0 {
                        let base_idx = base_set.own_start as usize + overridden.trailing_zeros() as usize;
                        hash.remove(self.label_hashes[base_idx]);
                        string_bytes -= label_bytes(self, self.labels[base_idx]);
                        overridden &= overridden - 1;
                    }
                }
                SetPlan::ByName { .. } => {
                    let base_range = base_set.own_start as usize..(base_set.own_start + base_set.own_len) as usize;
                    for &idx in order {
                        let name = labels[idx as usize].name;
                        if let Ok(found) =
                            self.labels[base_range.clone()].binary_search_by(|label| label.name.cmp(name))
                        {
                            let base_idx = base_range.start + found;
                            hash.remove(self.label_hashes[base_idx]);
                            string_bytes -= label_bytes(self, self.labels[base_idx]);
                        }
                    }
                }
            }
        }
        self.labels.extend(order.iter().map(|&idx| labels[idx as usize]));
        let arena = &self.text_arena;
        let (mut own_sum, mut own_string_bytes) = (0u64, 0usize);
        self.label_hashes.extend(order.iter().map(|&idx| {
            let label = &labels[idx as usize];
            let value = resolve_in(arena, label.value);
            own_string_bytes += label.name.len() + value.len();
            let one_hash = match known_hashes.get(idx as usize) {
                Some(&known) => known,
                None => label_hash(label.name, value),
            };
            debug_assert_eq!(one_hash, label_hash(label.name, value));
            own_sum = own_sum.wrapping_add(one_hash);
            one_hash
        }));
        hash.add_sum(own_sum, order.len());
        string_bytes += own_string_bytes;
        debug_assert!(self.labels[own_start..].windows(2).all(|pair| pair[0].name < pair[1].name), "not canonical");
        debug_assert_eq!(hash.count(), plan.merged_len().min(SAMPLE_LABELS_MAX + 1));
        self.label_sets.push(LabelSet {
            base: base.map_or(NONE, |base| base.0),
            own_start: own_start as u32,
            own_len: order.len() as u32,
            plan,
            hash,
            string_bytes,
        });
        LabelSetId((self.label_sets.len() - 1) as u32)
    }

    /// The [`label_hash`]es of a set's own labels, in canonical order.
    pub fn label_set_own_hashes(&self, set: LabelSetId) -> &[u64] {
        let set = self.label_sets[set.0 as usize];
        &self.label_hashes[set.own_start as usize..(set.own_start + set.own_len) as usize]
    }

    /// Labels of a set (its base's included).
    pub fn label_set_len(&self, set: LabelSetId) -> usize {
        self.label_sets[set.0 as usize].hash.count()
    }

    /// String bytes (names and values) of a set's labels (its base's included).
    pub fn label_set_string_bytes(&self, set: LabelSetId) -> usize {
        self.label_sets[set.0 as usize].string_bytes
    }

    /// Where a label named `name` would go in `set`'s canonical order, and which label of the
    /// set it would replace: one pass over the set.
    pub fn extra_position(&self, set: LabelSetId, name: &str) -> ExtraPosition {
        let mut position = 0u16;
        for (idx, label) in self.set_labels(set.0).enumerate() {
            match label.name.cmp(name) {
                std::cmp::Ordering::Less => position = (idx + 1) as u16,
                std::cmp::Ordering::Equal => {
                    let hash = label_hash(label.name, label.value);
                    return ExtraPosition { position, replaces: Some((hash, label.name.len() + label.value.len())) };
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        ExtraPosition { position, replaces: None }
    }

    /// Appends a sample whose labels are those of `set`.
    pub fn push_sample(&mut self, metric_idx: u32, set: LabelSetId, kind: SeriesKind, timestamp_ms: i64, value: f64) {
        let key_hash =
            combine_series_hash(self.metric_names[metric_idx as usize].hash, self.label_sets[set.0 as usize].hash);
        self.samples.push(DecodedSample {
            metric_idx,
            label_set: set.0,
            extra_label: NONE,
            extra_position: 0,
            extra_replaces: false,
            kind,
            key_hash,
            timestamp_ms,
            value,
        });
    }

    /// Appends a sample whose labels are those of `set` plus `extra`, placed at `position` (from
    /// [`DecodedBatch::extra_position`] for `set` and `extra.name`).
    #[allow(clippy::too_many_arguments)]
    pub fn push_sample_with_extra(
        &mut self,
        metric_idx: u32,
        set: LabelSetId,
        extra: BatchLabel<'a>,
        position: ExtraPosition,
        kind: SeriesKind,
        timestamp_ms: i64,
        value: f64,
    ) {
        debug_assert_eq!(position, self.extra_position(set, extra.name));
        let extra_hash = label_hash(extra.name, self.resolve(extra.value));
        let mut hash = self.label_sets[set.0 as usize].hash;
        if let Some((replaced_hash, _)) = position.replaces {
            hash.remove(replaced_hash);
        }
        hash.add(extra_hash);
        let extra_label = u32::try_from(self.labels.len()).expect("labels stay below 4 G (request size limit)");
        self.labels.push(extra);
        self.label_hashes.push(extra_hash);
        let key_hash = combine_series_hash(self.metric_names[metric_idx as usize].hash, hash);
        self.samples.push(DecodedSample {
            metric_idx,
            label_set: set.0,
            extra_label,
            extra_position: position.position,
            extra_replaces: position.replaces.is_some(),
            kind,
            key_hash,
            timestamp_ms,
            value,
        });
    }

    pub fn metric_name(&self, sample: &DecodedSample) -> &str {
        self.resolve(self.metric_names[sample.metric_idx as usize].text)
    }

    fn own_labels(&self, set: LabelSet) -> &[BatchLabel<'a>] {
        &self.labels[set.own_start as usize..(set.own_start + set.own_len) as usize]
    }

    fn set_labels(&self, set_idx: u32) -> SampleLabels<'_, 'a> {
        let set = self.label_sets[set_idx as usize];
        let base = if set.base == NONE { &[][..] } else { self.own_labels(self.label_sets[set.base as usize]) };
        SampleLabels {
            batch: self,
            flat: base.is_empty(),
            base,
            own: self.own_labels(set),
            plan: set.plan,
            merged_idx: 0,
            base_idx: 0,
            extra: None,
        }
    }

    /// The sample's labels, resolved, in canonical order.
    pub fn labels(&self, sample: &DecodedSample) -> SampleLabels<'_, 'a> {
        let mut labels = self.set_labels(sample.label_set);
        if sample.extra_label != NONE {
            labels.flat = false;
            labels.extra = Some(PendingExtra {
                label: &self.labels[sample.extra_label as usize],
                position: sample.extra_position,
                replaces: sample.extra_replaces,
            });
        }
        labels
    }

    /// Builds the owned key of a sample.
    pub fn series_key(&self, sample: &DecodedSample) -> SeriesKey {
        SeriesKey::from_parts(self.metric_name(sample), self.label_set(sample))
    }

    /// The hash of the sample's label set alone ([`LabelSetHash`]).
    pub fn label_set_hash(&self, sample: &DecodedSample) -> LabelSetHash {
        if sample.extra_label == NONE {
            return self.label_sets[sample.label_set as usize].hash;
        }
        let mut hash = LabelSetHash::default();
        for label in self.labels(sample) {
            hash.add(label_hash(label.name, label.value));
        }
        hash
    }

    /// The number of the sample's labels and the bytes of their names and values.
    pub fn label_sizes(&self, sample: &DecodedSample) -> (usize, usize) {
        if sample.extra_label == NONE {
            // The set knows its size.
            let set = self.label_sets[sample.label_set as usize];
            return (set.hash.count(), set.string_bytes);
        }
        self.labels(sample).fold((0, 0), |(n, bytes), label| (n + 1, bytes + label.name.len() + label.value.len()))
    }

    /// Builds the sample's label set (for a label set new to its shard): the labels are walked
    /// once.
    pub fn label_set(&self, sample: &DecodedSample) -> Labels {
        let (n_labels, strings_len) = self.label_sizes(sample);
        Labels::from_canonical_sized(n_labels, strings_len, self.labels(sample))
    }

    /// Distinct metric names of the batch, sorted.
    pub fn metric_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.metric_names.iter().map(|name| self.resolve(name.text)).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// A borrowed view of an owned batch.
    pub fn from_owned(batch: &'a SampleBatch) -> DecodedBatch<'a> {
        let mut decoded = DecodedBatch::default();
        let mut own: Vec<BatchLabel<'a>> = Vec::new();
        let mut order: Vec<u32> = Vec::new();
        for sample in &batch.samples {
            let metric_idx = decoded.push_metric_name(BatchText::Borrowed(sample.key.metric_name()));
            own.clear();
            own.extend(
                sample
                    .key
                    .labels()
                    .map(|label| BatchLabel { name: label.name, value: BatchText::Borrowed(label.value) }),
            );
            order.clear();
            order.extend(0..own.len() as u32);
            let set = decoded.push_label_set(None, &own, &order, SetPlan::own_only(own.len()), &[]);
            decoded.push_sample(metric_idx, set, sample.kind, sample.timestamp_ms, sample.value);
            debug_assert_eq!(decoded.samples.last().map(|pushed| pushed.key_hash), Some(sample.key_hash));
        }
        decoded
    }
}

/// The text of `text`, whose arena is `arena`.
#[inline]
fn resolve_in<'s, 'a: 's>(arena: &'s str, text: BatchText<'a>) -> &'s str {
    match text {
        BatchText::Borrowed(text) => text,
        BatchText::Arena { start, len } => &arena[start as usize..(start + len) as usize],
    }
}

/// String bytes of a label (name and value).
fn label_bytes(batch: &DecodedBatch<'_>, label: BatchLabel<'_>) -> usize {
    label.name.len() + batch.resolve(label.value).len()
}

#[derive(Debug, Clone, Copy)]
struct PendingExtra<'b, 'a> {
    label: &'b BatchLabel<'a>,
    position: u16,
    replaces: bool,
}

/// A sample's labels in canonical order: its set's base and own labels interleaved, with the
/// extra label in its place.
#[derive(Debug, Clone)]
pub struct SampleLabels<'b, 'a> {
    batch: &'b DecodedBatch<'a>,
    /// No base and no extra: the labels are `own`, in order (the common case, read inline).
    flat: bool,
    base: &'b [BatchLabel<'a>],
    own: &'b [BatchLabel<'a>],
    plan: SetPlan,
    /// Merged labels (base and own) read so far.
    merged_idx: usize,
    /// Position in the base set (for the override mask).
    base_idx: usize,
    extra: Option<PendingExtra<'b, 'a>>,
}

impl<'b, 'a> SampleLabels<'b, 'a> {
    #[inline]
    fn resolved(&self, label: &'b BatchLabel<'a>) -> LabelRef<'b> {
        LabelRef { name: label.name, value: self.batch.resolve(label.value) }
    }

    /// The next label of the merged set (base and own), without the extra.
    #[inline]
    fn next_merged(&mut self) -> Option<&'b BatchLabel<'a>> {
        if self.base.is_empty() {
            let (first, rest) = self.own.split_first()?;
            self.own = rest;
            self.merged_idx += 1;
            return Some(first);
        }
        let from_own = match self.plan {
            SetPlan::Masked { own_mask, base_overridden, merged_len } => {
                if self.merged_idx >= merged_len as usize {
                    return None;
                }
                if own_mask & (1 << self.merged_idx) == 0 {
                    while base_overridden & (1 << self.base_idx) != 0 {
                        self.base_idx += 1;
                        self.base = &self.base[1..];
                    }
                }
                own_mask & (1 << self.merged_idx) != 0
            }
            SetPlan::ByName { .. } => match self.own.first() {
                None => false,
                Some(own) => match self.base[0].name.cmp(own.name) {
                    std::cmp::Ordering::Less => false,
                    std::cmp::Ordering::Equal => {
                        self.base = &self.base[1..];
                        self.base_idx += 1;
                        true
                    }
                    std::cmp::Ordering::Greater => true,
                },
            },
        };
        self.merged_idx += 1;
        if from_own {
            let (first, rest) = self.own.split_first()?;
            self.own = rest;
            Some(first)
        } else {
            let (first, rest) = self.base.split_first()?;
            self.base = rest;
            self.base_idx += 1;
            Some(first)
        }
    }
}

impl<'b, 'a> SampleLabels<'b, 'a> {
    /// [`Iterator::next`] of a set with a base or an extra label.
    #[inline(never)]
    fn next_interleaved(&mut self) -> Option<LabelRef<'b>> {
        if let Some(extra) = self.extra {
            if self.merged_idx == extra.position as usize {
                self.extra = None;
                if extra.replaces {
                    self.next_merged();
                }
                return Some(self.resolved(extra.label));
            }
        }
        let label = match self.next_merged() {
            Some(label) => label,
            // The extra label goes after every label of the set.
            None => self.extra.take()?.label,
        };
        Some(self.resolved(label))
    }
}

impl<'b, 'a> Iterator for SampleLabels<'b, 'a> {
    type Item = LabelRef<'b>;

    #[inline]
    fn next(&mut self) -> Option<LabelRef<'b>> {
        if self.flat {
            let (first, rest) = self.own.split_first()?;
            self.own = rest;
            return Some(self.resolved(first));
        }
        self.next_interleaved()
    }
}

/// One owned sample (tests and benches).
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
mod tests;
