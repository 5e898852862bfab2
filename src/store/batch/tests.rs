//! Batch tests: label sets on top of a base, extra labels, and that a sample's labels and hash
//! are those of its owned key whatever the plan.

use proptest::prelude::*;

use super::*;
use crate::store::LabelPair;

fn label<'a>(name: &'a str, value: &'a str) -> BatchLabel<'a> {
    BatchLabel { name, value: BatchText::Borrowed(value) }
}

/// Pushes `labels` (any order, unique names) as a set on `base`.
fn push_set<'a>(batch: &mut DecodedBatch<'a>, base: Option<LabelSetId>, labels: &[BatchLabel<'a>]) -> LabelSetId {
    let mut order: Vec<u32> = (0..labels.len() as u32).collect();
    order.sort_by(|&a, &b| labels[a as usize].name.cmp(labels[b as usize].name));
    let plan = batch.plan_label_set(base, labels, &order);
    batch.push_label_set(base, labels, &order, plan, &[])
}

/// What the sample's labels must be: base labels, overridden by own, overridden by the extra.
fn expected_key(metric: &str, layers: &[&[(&str, &str)]]) -> SeriesKey {
    let labels = layers.iter().flat_map(|layer| layer.iter()).map(|&(name, value)| LabelPair::new(name, value));
    SeriesKey::new(metric, labels.collect())
}

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
    let set = push_set(&mut batch, None, &labels);
    batch.push_sample(metric, set, SeriesKind::Gauge, 1_000, 2.5);
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

#[test]
fn a_point_set_builds_on_its_resource_and_an_extra_label_goes_in_its_place() {
    let resource: &[(&str, &str)] = &[("job", "train"), ("pod", "resource-pod"), ("zone", "a")];
    let own: &[(&str, &str)] = &[("pod", "point-pod"), ("gpu", "1"), ("le", "from-point")];
    let mut batch = DecodedBatch::new();
    let metric = batch.push_metric_name(BatchText::Borrowed("latency_bucket"));
    let resource_labels: Vec<_> = resource.iter().map(|&(name, value)| label(name, value)).collect();
    let own_labels: Vec<_> = own.iter().map(|&(name, value)| label(name, value)).collect();
    let resource_set = push_set(&mut batch, None, &resource_labels);
    let point_set = push_set(&mut batch, Some(resource_set), &own_labels);
    assert_eq!(batch.label_set_len(point_set), 5);
    let point_key = expected_key("latency_bucket", &[resource, own]);
    assert_eq!(batch.label_set_string_bytes(point_set), point_key.string_bytes() - "latency_bucket".len());

    batch.push_sample(metric, resource_set, SeriesKind::Gauge, 1, 1.0);
    batch.push_sample(metric, point_set, SeriesKind::Gauge, 2, 2.0);
    // `le` replaces the point's; `zz` goes last; `a` goes first.
    for (name, value) in [("le", "0.5"), ("zz", "x"), ("a", "y")] {
        let extra = label(name, value);
        let position = batch.extra_position(point_set, name);
        assert_eq!(position.replaces(), name == "le");
        batch.push_sample_with_extra(metric, point_set, extra, position, SeriesKind::Gauge, 3, 3.0);
    }
    let expected = [
        expected_key("latency_bucket", &[resource]),
        point_key,
        expected_key("latency_bucket", &[resource, own, &[("le", "0.5")]]),
        expected_key("latency_bucket", &[resource, own, &[("zz", "x")]]),
        expected_key("latency_bucket", &[resource, own, &[("a", "y")]]),
    ];
    for (sample, expected) in batch.samples().iter().zip(&expected) {
        assert_eq!(&batch.series_key(sample), expected);
        assert_eq!(sample.key_hash, expected.stable_hash(), "{expected:?}");
        assert!(expected.equals(batch.metric_name(sample), batch.labels(sample)));
    }
    let samples = batch.samples();
    assert!(samples[1].same_labels_as(&samples[1]) && !samples[0].same_labels_as(&samples[1]));
    assert!(!samples[2].same_labels_as(&samples[2]), "a sample with an extra label is never assumed the same");
}

#[test]
fn sets_of_more_than_64_labels_are_merged_by_name() {
    let names: Vec<String> = (0..150).map(|idx| format!("l{idx:03}")).collect();
    let resource: Vec<(&str, &str)> = names.iter().step_by(2).map(|name| (name.as_str(), "r")).collect();
    let own: Vec<(&str, &str)> = names.iter().skip(1).step_by(3).map(|name| (name.as_str(), "p")).collect();
    let mut batch = DecodedBatch::new();
    let metric = batch.push_metric_name(BatchText::Borrowed("m"));
    let resource_labels: Vec<_> = resource.iter().map(|&(name, value)| label(name, value)).collect();
    let own_labels: Vec<_> = own.iter().map(|&(name, value)| label(name, value)).collect();
    let resource_set = push_set(&mut batch, None, &resource_labels);
    let point_set = push_set(&mut batch, Some(resource_set), &own_labels);
    let order: Vec<u32> = (0..own_labels.len() as u32).collect();
    assert!(matches!(batch.plan_label_set(Some(resource_set), &own_labels, &order), SetPlan::ByName { .. }));
    let position = batch.extra_position(point_set, "l010");
    batch.push_sample_with_extra(metric, point_set, label("l010", "e"), position, SeriesKind::Gauge, 1, 1.0);
    let expected = expected_key("m", &[&resource, &own, &[("l010", "e")]]);
    let sample = batch.samples()[0];
    assert_eq!(batch.series_key(&sample), expected);
    assert_eq!(sample.key_hash, expected.stable_hash());
}

proptest! {
    /// Any resource and point labels (names drawn from a small alphabet so that they clash),
    /// any extra label: the sample's labels, hash, count and bytes are those of its owned key.
    #[test]
    fn samples_are_their_owned_keys(
        resource in proptest::collection::btree_map("[a-f]{1,2}", "[xy]{0,2}", 0..8),
        own in proptest::collection::btree_map("[a-f]{1,2}", "[xy]{0,2}", 0..8),
        extra in proptest::option::of(("[a-f]{1,2}", "[xy]{0,2}")),
    ) {
        let resource: Vec<(&str, &str)> = resource.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
        let own: Vec<(&str, &str)> = own.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
        let mut batch = DecodedBatch::new();
        let metric = batch.push_metric_name(BatchText::Borrowed("m"));
        let resource_labels: Vec<_> = resource.iter().map(|&(name, value)| label(name, value)).collect();
        let own_labels: Vec<_> = own.iter().rev().map(|&(name, value)| label(name, value)).collect();
        let resource_set = push_set(&mut batch, None, &resource_labels);
        let point_set = push_set(&mut batch, Some(resource_set), &own_labels);
        let mut layers: Vec<&[(&str, &str)]> = vec![&resource, &own];
        let extra_layer;
        match &extra {
            Some((name, value)) => {
                let position = batch.extra_position(point_set, name);
                let extra = label(name, value);
                batch.push_sample_with_extra(metric, point_set, extra, position, SeriesKind::Gauge, 1, 1.0);
                extra_layer = [(name.as_str(), value.as_str())];
                layers.push(&extra_layer);
            }
            None => batch.push_sample(metric, point_set, SeriesKind::Gauge, 1, 1.0),
        }
        let expected = expected_key("m", &layers);
        let sample = batch.samples()[0];
        prop_assert_eq!(batch.series_key(&sample), expected.clone());
        prop_assert_eq!(sample.key_hash, expected.stable_hash());
        let point_only = expected_key("m", &[&resource, &own]);
        prop_assert_eq!(batch.label_set_len(point_set), point_only.label_count());
        prop_assert_eq!(batch.label_set_string_bytes(point_set), point_only.string_bytes() - 1);
    }
}
