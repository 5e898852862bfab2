//! Series identity: a normalized metric name plus a sorted, de-duplicated label set.
//!
//! A label set is one contiguous allocation ([`Labels`]: lengths header, then the strings back
//! to back), so comparing it with an incoming label set touches one or two cache lines. A shard
//! holds each distinct label set once, shared by the series of every metric that carries it,
//! and each series' hash puts its label set's bits where the store picks the shard, so that the
//! series sharing a label set land in one shard. Incoming label sets are compared and hashed in
//! their borrowed form ([`LabelRef`]s into the request buffer); a [`Labels`] is built only when
//! a shard has not seen the set.

use std::hash::{BuildHasher, Hasher};

/// Seed for series hashing. Fixed so that a series hashes the same way in every process
/// (shard choice and, later, snapshots depend on it).
const SERIES_HASH_SEED: u64 = 0x6f74_656c_7363_616c;
/// Seed for metric names, so that a metric name and a label never hash alike.
const METRIC_HASH_SEED: u64 = 0x6d65_7472_6963_5f6e;

/// Bytes of a label set's header: its label count.
const LABELS_HEADER_BYTES: usize = 2;
/// Bytes per label in the header: name length and value length.
const LABEL_HEADER_BYTES: usize = 4;
/// Bytes per label in a key's encoding (snapshots): name length and value length, 32 bits each.
const ENCODED_LABEL_HEADER_BYTES: usize = 8;

/// The longest label name or value, and the most labels, a label set holds (its lengths are 16
/// bits). The configuration keeps its limits within it (`--max-label-name-bytes`,
/// `--max-label-value-bytes`, `--max-labels-per-series`).
pub const LABEL_STRING_BYTES_MAX: usize = u16::MAX as usize;

/// Normalizes a metric name the way Kedify's OTel add-on does: `.` and `/` become `_`.
/// Everything else, `:` included (`vllm:num_requests_waiting`), is kept.
pub fn normalize_metric_name(name: &str) -> String {
    name.replace(['.', '/'], "_")
}

/// Whether [`normalize_metric_name`] would change `name`.
pub fn needs_normalization(name: &str) -> bool {
    name.bytes().any(|byte| byte == b'.' || byte == b'/')
}

/// One label: a name and its value, both as strings (the owned form used to build keys).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelPair {
    pub name: Box<str>,
    pub value: Box<str>,
}

impl LabelPair {
    pub fn new(name: impl Into<Box<str>>, value: impl Into<Box<str>>) -> Self {
        LabelPair { name: name.into(), value: value.into() }
    }
}

/// A borrowed label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelRef<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// The hash of a label set, kept as the wrapping sum of its labels' [`label_hash`]es and their
/// count. A sum does not depend on the order the labels are added in, nor on where each one came
/// from (resource or data point), so a decoder hashes a resource's labels once and adds each
/// point's own labels to that, taking out a resource label a point attribute overrides; the
/// result equals the hash of the canonical set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabelSetHash {
    sum: u64,
    count: u32,
}

impl LabelSetHash {
    /// Adds a label (by its [`label_hash`]).
    #[inline]
    pub fn add(&mut self, label_hash: u64) {
        self.sum = self.sum.wrapping_add(label_hash);
        self.count += 1;
    }

    /// Adds `count` labels whose hashes sum (wrapping) to `sum`.
    #[inline]
    pub fn add_sum(&mut self, sum: u64, count: usize) {
        self.sum = self.sum.wrapping_add(sum);
        self.count += u32::try_from(count).expect("a label set holds fewer than 4 G labels");
    }

    /// Takes out a label that was added.
    #[inline]
    pub fn remove(&mut self, label_hash: u64) {
        self.sum = self.sum.wrapping_sub(label_hash);
        self.count -= 1;
    }

    pub fn count(self) -> usize {
        self.count as usize
    }
}

/// The hash of one label: its name, then its value. foldhash mixes each write's length into
/// the state (a length-dependent rotation), so `("ab", "c")` and `("a", "bc")` differ without a
/// length prefix.
#[inline]
pub fn label_hash(name: &str, value: &str) -> u64 {
    label_hash_bytes(name.as_bytes(), value.as_bytes())
}

/// [`label_hash`] of a label read as bytes.
#[inline]
pub fn label_hash_bytes(name: &[u8], value: &[u8]) -> u64 {
    let mut hasher = foldhash::fast::FixedState::with_seed(SERIES_HASH_SEED).build_hasher();
    hasher.write(name);
    hasher.write(value);
    hasher.finish()
}

/// The hash of a (normalized) metric name, the other half of a series hash.
#[inline]
pub fn metric_name_hash(metric_name: &str) -> u64 {
    let mut hasher = foldhash::fast::FixedState::with_seed(METRIC_HASH_SEED).build_hasher();
    hasher.write(metric_name.as_bytes());
    hasher.finish()
}

/// The hash of a label set alone (a shard's table of label sets is keyed by it). The sum of its
/// labels' hashes is already uniform (each is a full hash), so it is only told apart by count:
/// no further mixing on the way in, where every sample's series hash takes it.
#[inline]
pub fn label_set_hash(labels: LabelSetHash) -> u64 {
    labels.sum ^ u64::from(labels.count).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Bits of a series hash that come from its label set alone: the store picks a series' shard
/// from them, so every series of one label set is in one shard, which holds the set once.
pub const LABEL_SET_BITS: u64 = 0xffff_ffff_0000_0000;

/// The series hash of a metric (its [`metric_name_hash`]) and a label set: the high 32 bits are
/// the label set's ([`LABEL_SET_BITS`]), the low 32 bits mix both.
#[inline]
pub fn combine_series_hash(metric_hash: u64, labels: LabelSetHash) -> u64 {
    let mut hasher = foldhash::fast::FixedState::with_seed(SERIES_HASH_SEED).build_hasher();
    hasher.write_u128((u128::from(metric_hash) << 64) | u128::from(labels.sum));
    hasher.write_u32(labels.count);
    (label_set_hash(labels) & LABEL_SET_BITS) | (hasher.finish() & !LABEL_SET_BITS)
}

/// Hashes a series identity: a pure function of the metric name and the label *set* (the order
/// the labels are given in does not matter, but each name must appear once, as in canonical
/// order). The owned and the borrowed form hash identically.
pub fn series_hash<'a>(metric_name: &str, labels: impl IntoIterator<Item = LabelRef<'a>>) -> u64 {
    let mut set = LabelSetHash::default();
    for label in labels {
        set.add(label_hash(label.name, label.value));
    }
    combine_series_hash(metric_name_hash(metric_name), set)
}

/// Why bytes are not a [`SeriesKey`] encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyDecodeError {
    #[error("a length runs past the end of the key")]
    Truncated,
    #[error("a string is not UTF-8")]
    NotUtf8,
    #[error("the metric name is empty")]
    EmptyMetricName,
    #[error("labels are not sorted by name and unique")]
    LabelsNotCanonical,
    #[error("bytes after the last label")]
    TrailingBytes,
    #[error("a label string or the label count is over 65,535")]
    TooLong,
}

fn read_u16(bytes: &[u8], offset: usize) -> usize {
    u16::from_le_bytes(bytes[offset..offset + 2].try_into().expect("two header bytes")) as usize
}

fn len_u16(len: usize) -> [u8; 2] {
    u16::try_from(len).expect("label strings and counts are limited to 64 KiB (LABEL_STRING_BYTES_MAX)").to_le_bytes()
}

fn len_u32(len: usize) -> [u8; 4] {
    u32::try_from(len).expect("label strings are limited far below 4 GiB").to_le_bytes()
}

/// A label set, sorted by name and unique, in one allocation: `[n_labels u16][(name_len u16,
/// value_len u16) × n][name value]…`, little-endian (strings and counts are at most
/// [`LABEL_STRING_BYTES_MAX`]). A shard holds each distinct label set once,
/// whatever number of metrics' series carry it (a GPU's DCGM gauges, a pod's vLLM metrics).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Labels {
    blob: Box<[u8]>,
}

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Labels {
    /// Bytes of the encoding of `n_labels` labels whose names and values take `strings_len`.
    pub const fn encoded_len(n_labels: usize, strings_len: usize) -> usize {
        LABELS_HEADER_BYTES + n_labels * LABEL_HEADER_BYTES + strings_len
    }

    /// Builds a label set from labels already in canonical order (sorted by name, unique).
    pub fn from_canonical<'a>(labels: impl Iterator<Item = LabelRef<'a>> + Clone) -> Self {
        let (n_labels, strings_len) =
            labels.clone().fold((0, 0), |(n, bytes), label| (n + 1, bytes + label.name.len() + label.value.len()));
        Labels::from_canonical_sized(n_labels, strings_len, labels)
    }

    /// [`Labels::from_canonical`] for a caller that knows the number of labels and their string
    /// bytes (names and values): one pass over the labels.
    pub fn from_canonical_sized<'a>(
        n_labels: usize,
        strings_len: usize,
        labels: impl Iterator<Item = LabelRef<'a>>,
    ) -> Self {
        let strings_start = LABELS_HEADER_BYTES + n_labels * LABEL_HEADER_BYTES;
        let blob_len = strings_start + strings_len;
        let mut blob = vec![0u8; blob_len].into_boxed_slice();
        blob[0..LABELS_HEADER_BYTES].copy_from_slice(&len_u16(n_labels));
        let mut header = LABELS_HEADER_BYTES;
        let mut offset = strings_start;
        for label in labels {
            assert!(header < strings_start, "more labels than the {n_labels} given");
            blob[header..header + 2].copy_from_slice(&len_u16(label.name.len()));
            blob[header + 2..header + LABEL_HEADER_BYTES].copy_from_slice(&len_u16(label.value.len()));
            header += LABEL_HEADER_BYTES;
            for text in [label.name, label.value] {
                blob[offset..offset + text.len()].copy_from_slice(text.as_bytes());
                offset += text.len();
            }
        }
        assert_eq!((header, offset), (strings_start, blob_len), "labels other than the sizes given");
        Labels { blob }
    }

    pub fn len(&self) -> usize {
        read_u16(&self.blob, 0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn strings_start(&self) -> usize {
        LABELS_HEADER_BYTES + self.len() * LABEL_HEADER_BYTES
    }

    /// Each label's name and value as bytes, in canonical order, without a UTF-8 check (for
    /// hashing and comparing).
    pub fn bytes_iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone + '_ {
        let blob = &self.blob[..];
        let mut offset = self.strings_start();
        (0..self.len()).map(move |label_idx| {
            let header = LABELS_HEADER_BYTES + label_idx * LABEL_HEADER_BYTES;
            let (name_len, value_len) = (read_u16(blob, header), read_u16(blob, header + 2));
            let name = &blob[offset..offset + name_len];
            let value = &blob[offset + name_len..offset + name_len + value_len];
            offset += name_len + value_len;
            (name, value)
        })
    }

    /// The labels in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = LabelRef<'_>> + Clone + '_ {
        // The blob is only ever built from `&str`s (or checked to be UTF-8), at these offsets.
        let text = |bytes| std::str::from_utf8(bytes).expect("label strings are UTF-8");
        self.bytes_iter().map(move |(name, value)| LabelRef { name: text(name), value: text(value) })
    }

    /// The value of label `name`, if the set has it. Names are compared as bytes in place (no
    /// UTF-8 check of the labels passed over); only the value found is checked, once.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.bytes_iter()
            .find(|(label_name, _)| *label_name == name.as_bytes())
            .map(|(_, value)| std::str::from_utf8(value).expect("label strings are UTF-8"))
    }

    /// Whether this is the set `labels` (canonical order). Compares bytes in place: no UTF-8
    /// re-validation of the stored strings on this hot path.
    pub fn equals<'a>(&self, labels: impl Iterator<Item = LabelRef<'a>>) -> bool {
        let mut stored = self.bytes_iter();
        for label in labels {
            match stored.next() {
                Some((name, value)) if name == label.name.as_bytes() && value == label.value.as_bytes() => {}
                _ => return false,
            }
        }
        stored.next().is_none()
    }

    /// The set's hash, as its labels were hashed on the way in ([`LabelSetHash`]).
    pub fn set_hash(&self) -> LabelSetHash {
        let mut set = LabelSetHash::default();
        for (name, value) in self.bytes_iter() {
            set.add(label_hash_bytes(name, value));
        }
        set
    }

    /// Bytes held by the names and values.
    pub fn string_bytes(&self) -> usize {
        self.blob.len() - self.strings_start()
    }

    /// Heap bytes of the set (strings and lengths header).
    pub fn heap_bytes(&self) -> usize {
        self.blob.len()
    }

    /// Checks the label part of a key's encoding from outside the process and builds the set:
    /// `headers` holds `(name_len u32, value_len u32)` per label and `strings` their names and
    /// values; lengths within the bytes and within [`LABEL_STRING_BYTES_MAX`], strings UTF-8,
    /// names sorted and unique, nothing after the last label.
    fn from_key_encoding(headers: &[u8], strings: &[u8]) -> Result<Labels, KeyDecodeError> {
        let n_labels = headers.len() / ENCODED_LABEL_HEADER_BYTES;
        if n_labels > LABEL_STRING_BYTES_MAX {
            return Err(KeyDecodeError::TooLong);
        }
        let strings_start = LABELS_HEADER_BYTES + n_labels * LABEL_HEADER_BYTES;
        let mut blob = Vec::with_capacity(strings_start + strings.len());
        blob.extend_from_slice(&len_u16(n_labels));
        let mut offset = 0;
        // The next string, `len_bytes` (a 32-bit length) long.
        let mut take = |len_bytes: &[u8]| -> Result<(&str, usize), KeyDecodeError> {
            let len = u32::from_le_bytes(len_bytes.try_into().expect("four bytes")) as usize;
            if len > LABEL_STRING_BYTES_MAX {
                return Err(KeyDecodeError::TooLong);
            }
            let text = strings.get(offset..offset + len).ok_or(KeyDecodeError::Truncated)?;
            offset += len;
            Ok((std::str::from_utf8(text).map_err(|_| KeyDecodeError::NotUtf8)?, len))
        };
        let mut previous_name: Option<&str> = None;
        for header in headers.chunks_exact(ENCODED_LABEL_HEADER_BYTES) {
            let (name, name_len) = take(&header[..4])?;
            let (_, value_len) = take(&header[4..])?;
            if previous_name.is_some_and(|previous| previous >= name) {
                return Err(KeyDecodeError::LabelsNotCanonical);
            }
            previous_name = Some(name);
            blob.extend_from_slice(&len_u16(name_len));
            blob.extend_from_slice(&len_u16(value_len));
        }
        if offset != strings.len() {
            return Err(KeyDecodeError::TrailingBytes);
        }
        blob.extend_from_slice(strings);
        Ok(Labels { blob: blob.into_boxed_slice() })
    }
}

/// The identity of a series, owned: a normalized metric name and a [`Labels`] set. The store
/// holds a series as its metric's name (shared by the shard's series of that metric) and its
/// shard's copy of the label set, and lends it out as a [`SeriesRef`].
#[derive(Clone, PartialEq, Eq)]
pub struct SeriesKey {
    metric_name: Box<str>,
    labels: Labels,
}

impl std::fmt::Debug for SeriesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_ref().fmt(f)
    }
}

impl SeriesKey {
    /// Builds a key from an already normalized metric name and labels in precedence order:
    /// when a name appears more than once, the **last** occurrence wins (ingest passes
    /// resource attributes first and data point attributes after them).
    pub fn new(metric_name: impl AsRef<str>, labels: Vec<LabelPair>) -> Self {
        let mut refs: Vec<LabelRef<'_>> =
            labels.iter().map(|label| LabelRef { name: &label.name, value: &label.value }).collect();
        sort_and_dedup_keep_last(&mut refs);
        SeriesKey::from_canonical(metric_name.as_ref(), refs.iter().copied())
    }

    /// Builds a key from labels already in canonical order (sorted by name, unique).
    pub fn from_canonical<'a>(metric_name: &str, labels: impl Iterator<Item = LabelRef<'a>> + Clone) -> Self {
        SeriesKey { metric_name: metric_name.into(), labels: Labels::from_canonical(labels) }
    }

    pub fn from_parts(metric_name: &str, labels: Labels) -> Self {
        SeriesKey { metric_name: metric_name.into(), labels }
    }

    pub fn into_parts(self) -> (Box<str>, Labels) {
        (self.metric_name, self.labels)
    }

    /// The borrowed form, with the methods that read a key.
    pub fn as_ref(&self) -> SeriesRef<'_> {
        SeriesRef { metric_name: &self.metric_name, labels: &self.labels }
    }

    pub fn metric_name(&self) -> &str {
        &self.metric_name
    }

    pub fn labels(&self) -> impl Iterator<Item = LabelRef<'_>> + Clone + '_ {
        self.labels.iter()
    }

    pub fn label_set(&self) -> &Labels {
        &self.labels
    }

    pub fn label_value(&self, name: &str) -> Option<&str> {
        self.labels.value(name)
    }

    pub fn label_count(&self) -> usize {
        self.labels.len()
    }

    pub fn has_metric_name(&self, metric_name: &str) -> bool {
        self.as_ref().has_metric_name(metric_name)
    }

    /// Whether this key is the series `metric_name` + `labels` (canonical order).
    pub fn equals<'l>(&self, metric_name: &str, labels: impl Iterator<Item = LabelRef<'l>>) -> bool {
        self.as_ref().equals(metric_name, labels)
    }

    /// Bytes of the metric name and the label strings.
    pub fn string_bytes(&self) -> usize {
        self.as_ref().string_bytes()
    }

    /// A hash that is the same in every process for the same key.
    pub fn stable_hash(&self) -> u64 {
        self.as_ref().stable_hash()
    }

    /// Heap bytes of the key (name, label strings and lengths header).
    pub fn heap_bytes(&self) -> usize {
        self.as_ref().heap_bytes()
    }

    /// The key's encoding (see [`SeriesRef::write_encoded`]).
    pub fn encoded(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.as_ref().encoded_len());
        self.as_ref().write_encoded(&mut bytes);
        bytes
    }

    /// Checks an encoding from outside the process (a snapshot) and builds the key: lengths
    /// within the bytes, strings UTF-8, a non-empty metric name, labels sorted by name and unique.
    pub fn from_encoded(bytes: &[u8]) -> Result<SeriesKey, KeyDecodeError> {
        let word = |offset: usize| -> Result<usize, KeyDecodeError> {
            let word = bytes.get(offset..offset + 4).ok_or(KeyDecodeError::Truncated)?;
            Ok(u32::from_le_bytes(word.try_into().expect("four bytes")) as usize)
        };
        let metric_len = word(0)?;
        let n_labels = word(4)?;
        let label_headers_end = n_labels
            .checked_mul(ENCODED_LABEL_HEADER_BYTES)
            .and_then(|n| n.checked_add(KEY_HEADER_BYTES))
            .ok_or(KeyDecodeError::Truncated)?;
        let metric_end = label_headers_end.checked_add(metric_len).ok_or(KeyDecodeError::Truncated)?;
        let metric = bytes.get(label_headers_end..metric_end).ok_or(KeyDecodeError::Truncated)?;
        let metric_name = std::str::from_utf8(metric).map_err(|_| KeyDecodeError::NotUtf8)?;
        if metric_name.is_empty() {
            return Err(KeyDecodeError::EmptyMetricName);
        }
        let labels = Labels::from_key_encoding(&bytes[KEY_HEADER_BYTES..label_headers_end], &bytes[metric_end..])?;
        Ok(SeriesKey { metric_name: metric_name.into(), labels })
    }
}

impl PartialOrd for SeriesKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SeriesKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_ref().cmp(&other.as_ref())
    }
}

/// Bytes before the label headers in a key's encoding: metric name length and label count.
const KEY_HEADER_BYTES: usize = 8;

/// A series' identity as the store lends it out: its metric's name and its label set.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SeriesRef<'a> {
    metric_name: &'a str,
    labels: &'a Labels,
}

impl std::fmt::Debug for SeriesRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesKey")
            .field("metric_name", &self.metric_name)
            .field("labels", &self.labels.iter().collect::<Vec<_>>())
            .finish()
    }
}

impl<'a> SeriesRef<'a> {
    pub fn new(metric_name: &'a str, labels: &'a Labels) -> Self {
        SeriesRef { metric_name, labels }
    }

    pub fn metric_name(self) -> &'a str {
        self.metric_name
    }

    /// Whether the key's metric name is `metric_name`.
    pub fn has_metric_name(self, metric_name: &str) -> bool {
        self.metric_name == metric_name
    }

    /// The labels in canonical order.
    pub fn labels(self) -> impl Iterator<Item = LabelRef<'a>> + Clone + 'a {
        self.labels.iter()
    }

    pub fn label_set(self) -> &'a Labels {
        self.labels
    }

    pub fn label_count(self) -> usize {
        self.labels.len()
    }

    /// The value of label `name`, if the series has it.
    pub fn label_value(self, name: &str) -> Option<&'a str> {
        self.labels.value(name)
    }

    /// Whether this is the series `metric_name` + `labels` (canonical order).
    pub fn equals<'l>(self, metric_name: &str, labels: impl Iterator<Item = LabelRef<'l>>) -> bool {
        self.metric_name == metric_name && self.labels.equals(labels)
    }

    /// A hash that is the same in every process for the same key.
    pub fn stable_hash(self) -> u64 {
        combine_series_hash(metric_name_hash(self.metric_name), self.labels.set_hash())
    }

    /// Bytes of the metric name and the label strings.
    pub fn string_bytes(self) -> usize {
        self.metric_name.len() + self.labels.string_bytes()
    }

    /// Heap bytes of an owned copy of the key (name, label strings and lengths header).
    pub fn heap_bytes(self) -> usize {
        self.metric_name.len() + self.labels.heap_bytes()
    }

    pub fn to_owned(self) -> SeriesKey {
        SeriesKey { metric_name: self.metric_name.into(), labels: self.labels.clone() }
    }

    /// Bytes of [`SeriesRef::write_encoded`]'s encoding.
    pub fn encoded_len(self) -> usize {
        KEY_HEADER_BYTES
            + self.labels.len() * ENCODED_LABEL_HEADER_BYTES
            + self.metric_name.len()
            + self.labels.string_bytes()
    }

    /// Appends the key's encoding to `out`: `[metric_len u32][n_labels u32][(name_len u32,
    /// value_len u32) × n]`, then the metric name and each label's name and value, all
    /// little-endian. Snapshots store it; [`SeriesKey::from_encoded`] reads it back.
    pub fn write_encoded(self, out: &mut Vec<u8>) {
        let blob = &self.labels.blob[..];
        let n_labels = self.labels.len();
        out.extend_from_slice(&len_u32(self.metric_name.len()));
        out.extend_from_slice(&len_u32(n_labels));
        for label_idx in 0..n_labels {
            let header = LABELS_HEADER_BYTES + label_idx * LABEL_HEADER_BYTES;
            out.extend_from_slice(&len_u32(read_u16(blob, header)));
            out.extend_from_slice(&len_u32(read_u16(blob, header + 2)));
        }
        out.extend_from_slice(self.metric_name.as_bytes());
        out.extend_from_slice(&blob[self.labels.strings_start()..]);
    }
}

impl PartialOrd for SeriesRef<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SeriesRef<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.metric_name.cmp(other.metric_name).then_with(|| self.labels().cmp(other.labels()))
    }
}

/// Sorts labels by name and keeps the **last** of equal names (stable sort, so equal names stay
/// in precedence order).
pub fn sort_and_dedup_keep_last(labels: &mut Vec<LabelRef<'_>>) {
    labels.sort_by(|a, b| a.name.cmp(b.name));
    let mut write_idx = 0;
    for read_idx in 0..labels.len() {
        if write_idx > 0 && labels[write_idx - 1].name == labels[read_idx].name {
            labels[write_idx - 1] = labels[read_idx];
        } else {
            labels[write_idx] = labels[read_idx];
            write_idx += 1;
        }
    }
    labels.truncate(write_idx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_matches_kedify() {
        assert_eq!(normalize_metric_name("gpu.temperature"), "gpu_temperature");
        assert_eq!(normalize_metric_name("a/b.c"), "a_b_c");
        assert_eq!(normalize_metric_name("vllm:num_requests_waiting"), "vllm:num_requests_waiting");
        assert!(needs_normalization("a.b") && !needs_normalization("a:b"));
    }

    #[test]
    fn later_labels_win_and_labels_are_sorted() {
        let key = SeriesKey::new(
            "m",
            vec![LabelPair::new("z", "1"), LabelPair::new("a", "resource"), LabelPair::new("a", "point")],
        );
        assert_eq!(key.label_count(), 2);
        assert_eq!(key.label_value("a"), Some("point"));
        assert_eq!(key.label_value("z"), Some("1"));
        assert_eq!(key.label_value("missing"), None);
        assert_eq!(key.labels().next().unwrap().name, "a");
        assert_eq!(key.metric_name(), "m");
        assert!(key.has_metric_name("m"));
        assert!(!key.has_metric_name("ma") && !key.has_metric_name("") && !key.has_metric_name("a"));
    }

    #[test]
    fn blob_round_trips_and_compares_with_borrowed_labels() {
        let key = SeriesKey::new(
            "gpu_util",
            vec![LabelPair::new("gpu", "3"), LabelPair::new("Hostname", "node-1"), LabelPair::new("", "")],
        );
        let labels: Vec<LabelRef<'_>> = key.labels().collect();
        assert_eq!(
            labels,
            [
                LabelRef { name: "", value: "" },
                LabelRef { name: "Hostname", value: "node-1" },
                LabelRef { name: "gpu", value: "3" }
            ]
        );
        assert!(key.equals("gpu_util", labels.iter().copied()));
        assert!(!key.equals("gpu_util", labels[..2].iter().copied()));
        assert!(!key.equals("gpu_utilx", labels.iter().copied()));
        assert_eq!(key.stable_hash(), series_hash("gpu_util", labels.iter().copied()));
        assert_eq!(SeriesKey::from_canonical("gpu_util", labels.iter().copied()), key);
        assert_eq!(key.string_bytes(), "gpu_util".len() + "Hostname".len() + "node-1".len() + "gpu".len() + 1);
        let empty = SeriesKey::new("gpu_util", vec![]);
        assert_eq!(empty.labels().count(), 0);
        assert!(empty < key);
    }

    #[test]
    fn hash_is_a_function_of_the_label_set_and_combines_in_parts() {
        let labels = [LabelRef { name: "a", value: "1" }, LabelRef { name: "b", value: "2" }];
        let forward = series_hash("m", labels);
        assert_eq!(forward, series_hash("m", [labels[1], labels[0]]));
        assert_ne!(forward, series_hash("n", labels));
        assert_ne!(forward, series_hash("m", [labels[0]]));
        // A resource's hash, a point's own label added, a resource label overridden.
        let mut set = LabelSetHash::default();
        set.add(label_hash("a", "resource"));
        set.add(label_hash("b", "2"));
        set.remove(label_hash("a", "resource"));
        set.add(label_hash("a", "1"));
        assert_eq!(combine_series_hash(metric_name_hash("m"), set), forward);
        assert_eq!(set.count(), 2);
    }

    #[test]
    fn the_label_set_alone_gives_a_series_hash_its_high_bits() {
        let labels = [LabelRef { name: "UUID", value: "GPU-1" }, LabelRef { name: "gpu", value: "0" }];
        let other = [LabelRef { name: "UUID", value: "GPU-2" }, LabelRef { name: "gpu", value: "0" }];
        let (util, power) = (series_hash("util", labels), series_hash("power", labels));
        assert_ne!(util, power);
        assert_eq!(util & LABEL_SET_BITS, power & LABEL_SET_BITS, "one label set, one shard");
        assert_ne!(util & LABEL_SET_BITS, series_hash("util", other) & LABEL_SET_BITS);
        let key = SeriesKey::from_canonical("util", labels.into_iter());
        assert_eq!(label_set_hash(key.label_set().set_hash()) & LABEL_SET_BITS, util & LABEL_SET_BITS);
        assert_eq!(key.stable_hash(), util);
    }

    #[test]
    fn hash_separates_boundaries() {
        let a = SeriesKey::new("m", vec![LabelPair::new("ab", "c")]);
        let b = SeriesKey::new("m", vec![LabelPair::new("a", "bc")]);
        assert_ne!(a.stable_hash(), b.stable_hash());
        assert_eq!(a.stable_hash(), a.clone().stable_hash());
    }
}
