//! Series identity: a normalized metric name plus a sorted, de-duplicated label set.

use std::hash::{BuildHasher, Hasher};

/// Seed for series hashing. Fixed so that a series hashes the same way in every process
/// (shard choice and, later, snapshots depend on it).
const SERIES_HASH_SEED: u64 = 0x6f74_656c_7363_616c;

/// Normalizes a metric name the way Kedify's OTel add-on does: `.` and `/` become `_`.
/// Everything else, `:` included (`vllm:num_requests_waiting`), is kept.
pub fn normalize_metric_name(name: &str) -> String {
    name.replace(['.', '/'], "_")
}

/// One label: a name and its value, both as strings.
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

/// The identity of a series. Labels are sorted by name and unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesKey {
    metric_name: Box<str>,
    labels: Box<[LabelPair]>,
}

impl SeriesKey {
    /// Builds a key from an already normalized metric name and labels in precedence order:
    /// when a name appears more than once, the **last** occurrence wins (ingest passes
    /// resource attributes first and data point attributes after them).
    pub fn new(metric_name: impl Into<Box<str>>, mut labels: Vec<LabelPair>) -> Self {
        // A stable sort keeps equal names in precedence order, so the last one of a run wins.
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        let mut unique: Vec<LabelPair> = Vec::with_capacity(labels.len());
        for label in labels {
            match unique.last_mut() {
                Some(last) if last.name == label.name => *last = label,
                _ => unique.push(label),
            }
        }
        SeriesKey { metric_name: metric_name.into(), labels: unique.into_boxed_slice() }
    }

    pub fn metric_name(&self) -> &str {
        &self.metric_name
    }

    pub fn labels(&self) -> &[LabelPair] {
        &self.labels
    }

    /// The value of label `name`, if the series has it.
    pub fn label_value(&self, name: &str) -> Option<&str> {
        self.labels.binary_search_by(|label| (*label.name).cmp(name)).ok().map(|idx| &*self.labels[idx].value)
    }

    /// A hash that is the same in every process for the same key.
    pub fn stable_hash(&self) -> u64 {
        let mut hasher = foldhash::quality::FixedState::with_seed(SERIES_HASH_SEED).build_hasher();
        hash_str(&mut hasher, &self.metric_name);
        for label in self.labels.iter() {
            hash_str(&mut hasher, &label.name);
            hash_str(&mut hasher, &label.value);
        }
        hasher.finish()
    }

    /// Bytes held by the label strings and the name, for memory accounting.
    pub fn string_bytes(&self) -> usize {
        self.metric_name.len() + self.labels.iter().map(|label| label.name.len() + label.value.len()).sum::<usize>()
    }
}

fn hash_str(hasher: &mut impl Hasher, text: &str) {
    // Length-prefixed so that ("ab","c") and ("a","bc") hash differently.
    hasher.write_usize(text.len());
    hasher.write(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_matches_kedify() {
        assert_eq!(normalize_metric_name("gpu.temperature"), "gpu_temperature");
        assert_eq!(normalize_metric_name("a/b.c"), "a_b_c");
        assert_eq!(normalize_metric_name("vllm:num_requests_waiting"), "vllm:num_requests_waiting");
    }

    #[test]
    fn later_labels_win_and_labels_are_sorted() {
        let key = SeriesKey::new(
            "m",
            vec![LabelPair::new("z", "1"), LabelPair::new("a", "resource"), LabelPair::new("a", "point")],
        );
        assert_eq!(key.labels().len(), 2);
        assert_eq!(key.label_value("a"), Some("point"));
        assert_eq!(key.label_value("z"), Some("1"));
        assert_eq!(key.label_value("missing"), None);
        assert_eq!(key.labels()[0].name.as_ref(), "a");
    }

    #[test]
    fn hash_separates_boundaries() {
        let a = SeriesKey::new("m", vec![LabelPair::new("ab", "c")]);
        let b = SeriesKey::new("m", vec![LabelPair::new("a", "bc")]);
        assert_ne!(a.stable_hash(), b.stable_hash());
        assert_eq!(a.stable_hash(), a.clone().stable_hash());
    }
}
