//! Store tests: a property test against a naive model, retention, limits, concurrency.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn config(series_count_max: usize) -> StoreConfig {
    StoreConfig::new(4, series_count_max, 60_000)
}

fn key(metric: &str, pod: u32) -> SeriesKey {
    SeriesKey::new(metric, vec![LabelPair::new("pod", format!("p{pod}"))])
}

fn batch(samples: impl IntoIterator<Item = (SeriesKey, i64, f64)>) -> SampleBatch {
    SampleBatch {
        samples: samples
            .into_iter()
            .map(|(key, ts, value)| BatchSample::new(key, SeriesKind::Gauge, ts, value))
            .collect(),
    }
}

/// The naive model: every accepted sample of every series, in a sorted map.
fn naive_window_value(samples: &[(i64, f64)], start_ms: i64, op: WindowOp) -> Option<f64> {
    let in_window: Vec<(i64, f64)> = samples.iter().copied().filter(|&(ts, _)| ts >= start_ms).collect();
    let values: Vec<f64> = in_window.iter().map(|&(_, v)| v).collect();
    if values.is_empty() {
        return None;
    }
    match op {
        WindowOp::LastOne => values.last().copied(),
        WindowOp::Count => Some(values.len() as f64),
        WindowOp::Avg => Some(values.iter().sum::<f64>() / values.len() as f64),
        WindowOp::Min => values.iter().copied().reduce(f64::min),
        WindowOp::Max => values.iter().copied().reduce(f64::max),
        WindowOp::Rate => {
            let (first_ts, first) = in_window[0];
            let (last_ts, last) = in_window[in_window.len() - 1];
            (last_ts > first_ts).then(|| (last - first) / ((last_ts - first_ts) as f64 / 1000.0))
        }
    }
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        (None, None) => true,
        _ => false,
    }
}

proptest! {
    #[test]
    fn store_matches_naive_model(
        writes in proptest::collection::vec((0u32..6, 0i64..400, -1e6f64..1e6), 1..600),
        start_ms in 0i64..400_000,
    ) {
        let store = Store::new(config(1_000));
        let mut model: BTreeMap<u32, Vec<(i64, f64)>> = BTreeMap::new();
        for chunk_of_writes in writes.chunks(37) {
            let mut samples = Vec::new();
            for &(pod, ts_s, value) in chunk_of_writes {
                let ts = ts_s * 1_000;
                samples.push((key("m", pod), ts, value));
                let series = model.entry(pod).or_default();
                match series.last_mut() {
                    Some(last) if last.0 == ts => last.1 = value,
                    Some(last) if last.0 > ts => {}
                    _ => series.push((ts, value)),
                }
            }
            store.append(batch(samples), 0);
        }
        prop_assert_eq!(store.series_count(), model.len());
        for op in WindowOp::ALL {
            let mut seen = 0;
            each_series(&store, "m", start_ms, |series_key, window| {
                let pod: u32 = series_key.label_value("pod").unwrap()[1..].parse().unwrap();
                let expected = naive_window_value(&model[&pod], start_ms, op);
                assert!(close(window.value(op), expected), "{op:?} pod {pod}: {:?} vs {expected:?}", window.value(op));
                seen += 1;
            });
            prop_assert_eq!(seen, model.len());
        }
    }
}

/// Calls `visit` for every series of `metric_name` with all its samples from `start_ms` on.
fn each_series(
    store: &Store,
    metric_name: &str,
    start_ms: i64,
    mut visit: impl FnMut(SeriesRef<'_>, SeriesWindow<'_>),
) {
    let walked: std::ops::ControlFlow<()> = store.visit_metric(metric_name, start_ms, i64::MAX, |key, window| {
        visit(key, window);
        std::ops::ControlFlow::Continue(())
    });
    assert!(walked.is_continue());
}

#[test]
fn a_walk_in_runs_visits_each_series_once_while_retention_and_appends_run() {
    // Far more series than one run holds, so walks release the locks many times; meanwhile
    // half the series expire and come back, over and over.
    let store = Arc::new(Store::new(config(100_000)));
    let n_pods = 20 * VISIT_SERIES_PER_LOCK as u32;
    store.append(batch((0..n_pods).map(|pod| (key("m", pod), 1_000, 1.0))), 1_000);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut now_ms = 1_000;
            while !stop.load(Ordering::Relaxed) {
                now_ms += 100_000;
                // The even pods stay; the odd ones expire and are created again.
                store.append(batch((0..n_pods).step_by(2).map(|pod| (key("m", pod), now_ms - 1, 1.0))), now_ms);
                store.drop_expired(now_ms);
                store.append(batch((1..n_pods).step_by(2).map(|pod| (key("m", pod), now_ms, 1.0))), now_ms);
            }
        })
    };
    for _ in 0..30 {
        let mut seen = std::collections::HashSet::new();
        each_series(&store, "m", 0, |key, _| {
            let pod = key.label_value("pod").unwrap().to_owned();
            assert!(seen.insert(pod.clone()), "series {pod} visited twice in one walk");
        });
        // Every even pod lives throughout, so each walk must see it.
        for pod in (0..n_pods).step_by(2) {
            assert!(seen.contains(&format!("p{pod}")), "pod {pod} missed");
        }
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    // With no walk under way, retention removes the tombstones it left.
    store.drop_expired(i64::MAX / 2);
    assert_eq!(store.series_count(), 0);
    assert_eq!(store.metric_postings_len("m"), 0, "no tombstone left");
}

#[test]
fn out_of_order_and_duplicates() {
    let store = Store::new(config(10));
    let outcome =
        store.append(batch([(key("m", 1), 2_000, 1.0), (key("m", 1), 1_000, 2.0), (key("m", 1), 2_000, 3.0)]), 0);
    assert_eq!(outcome.appended, 2);
    assert_eq!(outcome.rejected_out_of_order, 1);
    each_series(&store, "m", 0, |_, window| {
        assert_eq!(window.value(WindowOp::LastOne), Some(3.0));
        assert_eq!(window.sample_count(), 1);
    });
}

#[test]
fn series_limit_rejects_only_new_series() {
    let store = Store::new(config(2));
    let outcome = store.append(batch((0..3).map(|pod| (key("m", pod), 1_000, 1.0))), 0);
    assert_eq!(outcome.series_created, 2);
    assert_eq!(outcome.rejected_series_limit, 1);
    // Existing series keep flowing.
    let outcome =
        store.append(batch([(key("m", 0), 2_000, 5.0), (key("m", 1), 2_000, 5.0), (key("m", 2), 2_000, 5.0)]), 0);
    assert_eq!(outcome.appended, 2);
    assert_eq!(outcome.rejected_series_limit, 1);
    assert_eq!(store.series_count(), 2);
}

#[test]
fn retention_drops_old_samples_and_empty_series_then_reuses_slots() {
    let store = Store::new(config(3));
    let now_ms = 1_000_000;
    // Too old on arrival.
    let outcome = store.append(batch([(key("m", 0), now_ms - 61_000, 1.0)]), now_ms);
    assert_eq!(outcome.rejected_too_old, 1);
    store.append(batch([(key("m", 0), now_ms - 50_000, 1.0), (key("m", 1), now_ms, 2.0)]), now_ms);
    assert_eq!(store.series_count(), 2);
    // 20 s later, pod 0's only sample is older than retention.
    let removed = store.drop_expired(now_ms + 20_000);
    assert_eq!(removed, 1);
    assert_eq!(store.series_count(), 1);
    let listed = store.list_series(Some("m"), ListLimits { series_max: 10, key_bytes_max: 1 << 20 });
    assert_eq!((listed.series.len(), listed.truncated), (1, None));
    assert_eq!(listed.series[0].key.label_value("pod"), Some("p1"));
    // The freed slot takes new series again, up to the limit.
    let outcome = store
        .append(batch([(key("m", 7), now_ms + 20_000, 1.0), (key("m", 8), now_ms + 20_000, 1.0)]), now_ms + 20_000);
    assert_eq!(outcome.series_created, 2);
    assert_eq!(store.series_count(), 3);
    let mut total = 0;
    each_series(&store, "m", 0, |_, _| total += 1);
    assert_eq!(total, 3);
}

#[test]
fn parallel_writers_and_readers_see_consistent_data() {
    let store = Arc::new(Store::new(config(100_000)));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for step in 0..200i64 {
                    let samples = (0..50).map(|pod| (key("m", writer * 1_000 + pod), step * 1_000, step as f64));
                    store.append(batch(samples), 0);
                }
            })
        })
        .collect();
    let reader = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for _ in 0..200 {
                each_series(&store, "m", 0, |_, window| {
                    // Every sample's value equals its second; last_one never goes backwards past count.
                    let last = window.value(WindowOp::LastOne).unwrap();
                    let count = window.value(WindowOp::Count).unwrap();
                    assert_eq!(last + 1.0, count);
                });
            }
        })
    };
    for writer in writers {
        writer.join().unwrap();
    }
    reader.join().unwrap();
    assert_eq!(store.series_count(), 200);
    each_series(&store, "m", 0, |_, window| assert_eq!(window.value(WindowOp::Count), Some(200.0)));
}

fn limited(series_count_max: usize, series_per_metric_max: usize, bytes_max: usize) -> Store {
    Store::new(StoreConfig { series_per_metric_max, bytes_max, ..config(series_count_max) })
}

/// The running counts equal a recount of every shard.
fn assert_counts_in_step(store: &Store) {
    assert_eq!(store.counts(), store.recount());
}

proptest! {
    /// Appends of new and existing series over a few metrics, refusals by every limit and
    /// retention runs: after each step, the running counts are what a scan of the shards finds.
    #[test]
    fn counts_stay_in_step_with_the_shards(
        steps in proptest::collection::vec((0u8..4, 0u32..40, 0i64..300, 0u8..3), 1..120),
    ) {
        let store = limited(60, 25, 200 * 1024);
        let mut now_ms = 100_000;
        for (metric, pod, age_s, action) in steps {
            now_ms += 1_000;
            if action == 0 {
                store.drop_expired(now_ms);
            } else {
                let metric = format!("m{metric}");
                let samples = (0..action as u32).map(|step| (key(&metric, pod + step), now_ms - age_s * 100, 1.0));
                store.append(batch(samples), now_ms);
            }
            assert_counts_in_step(&store);
            prop_assert!(store.heap_bytes() <= 200 * 1024);
            prop_assert!(store.counts().series_by_metric.iter().all(|&(_, count)| count <= 25));
        }
        store.drop_expired(now_ms + 120_000);
        prop_assert_eq!(store.counts(), StoreCounts { series: 0, bytes: store.recount().bytes, series_by_metric: vec![] });
    }
}

#[test]
fn one_metric_cannot_take_every_series_slot() {
    let store = limited(100, 10, usize::MAX);
    let junk = store.append(batch((0..50).map(|pod| (key("junk", pod), 1_000, 1.0))), 0);
    assert_eq!((junk.series_created, junk.rejected_metric_series_limit), (10, 40));
    let legit = store.append(batch((0..5).map(|pod| (key("legit", pod), 1_000, 1.0))), 0);
    assert_eq!((legit.series_created, legit.rejected_metric_series_limit), (5, 0));
    assert_eq!((store.metric_series_count("junk"), store.metric_series_count("legit")), (10, 5));
    // The junk metric's existing series keep flowing; its new ones are still refused.
    let again = store.append(batch((0..50).map(|pod| (key("junk", pod), 2_000, 2.0))), 0);
    assert_eq!((again.appended, again.series_created, again.rejected_metric_series_limit), (10, 0, 40));
    assert_counts_in_step(&store);
}

#[test]
fn the_byte_limit_refuses_new_series_and_new_chunks_and_retention_frees_them() {
    let big_key = |pod: u32| SeriesKey::new("m", vec![LabelPair::new("pod", format!("{pod:0>3000}"))]);
    let store = limited(1_000, 1_000, 64 * 1024);
    let outcome = store.append(batch((0..100).map(|pod| (big_key(pod), 1_000, 1.0))), 0);
    assert!(outcome.series_created > 0 && outcome.rejected_store_bytes > 0, "{outcome:?}");
    assert_eq!(outcome.series_created + outcome.rejected_store_bytes, 100);
    assert!(store.heap_bytes() <= 64 * 1024);
    assert_counts_in_step(&store);
    // The store has less room left than one more such series; ten more chunks do not fit
    // either: the samples that would need them are refused.
    let created = outcome.series_created as u32;
    let samples = 10 * super::CHUNK_CAPACITY as i64;
    let fill = (0..samples).map(|step| (big_key(0), 2_000 + step * 1_000, 1.0));
    let outcome = store.append(batch(fill), 0);
    assert!(outcome.rejected_store_bytes > 0, "{outcome:?}");
    assert_eq!(outcome.appended + outcome.rejected_store_bytes, samples as u64);
    assert!(store.heap_bytes() <= 64 * 1024);
    assert_counts_in_step(&store);
    // Retention gives the bytes back; new series fit again.
    store.drop_expired(10_000_000);
    assert_eq!(store.series_count(), 0);
    assert_counts_in_step(&store);
    let again = store.append(batch([(big_key(created + 1), 10_000_000, 1.0)]), 10_000_000);
    assert_eq!(again.series_created, 1);
    assert_counts_in_step(&store);
}

#[test]
fn a_panic_in_the_middle_of_an_append_leaves_the_store_consistent() {
    let store = Store::new(config(1_000));
    let before = store.append(batch((0..20).map(|pod| (key("kept", pod), 1_000, 1.0))), 0);
    assert_eq!(before.series_created, 20);
    // A batch whose new series of the poison metric panics after it is reserved, with other
    // samples before and after it in every shard.
    let mixed = (0..40).map(|pod| {
        let metric = if pod == 17 { PANIC_METRIC_FOR_TESTS } else { "mixed" };
        (key(metric, pod), 2_000, 2.0)
    });
    let poisoned = batch(mixed);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.append(poisoned, 0)));
    assert!(panicked.is_err(), "the injected fault fires");
    assert_counts_in_step(&store);
    assert_eq!(store.metric_series_count(PANIC_METRIC_FOR_TESTS), 0);
    // Earlier data is intact, and the store takes appends and retention as before.
    let mut kept = 0;
    let _: ControlFlow<()> = store.visit_metric("kept", 0, i64::MAX, |_, window| {
        assert_eq!(window.value(WindowOp::LastOne), Some(1.0));
        kept += 1;
        ControlFlow::Continue(())
    });
    assert_eq!(kept, 20);
    let after = store.append(batch((0..40).map(|pod| (key("mixed", pod), 3_000, 3.0))), 0);
    assert_eq!(after.appended, 40);
    assert_counts_in_step(&store);
    store.drop_expired(1_000_000);
    assert_eq!(store.recount().series, 0);
    assert_counts_in_step(&store);
}

#[test]
fn restore_applies_the_limits_of_ingest() {
    let store = limited(10, 2, usize::MAX);
    let restore = |pod: u32| store.restore_series(key("m", pod), SeriesKind::Gauge, &[(1_000, 1.0)]);
    assert_eq!(restore(0), RestoreOutcome::Restored { samples: 1 });
    assert_eq!(restore(1), RestoreOutcome::Restored { samples: 1 });
    assert_eq!(restore(2), RestoreOutcome::Refused(SeriesRefusal::MetricSeriesLimit));
    assert_eq!(store.restore_series(key("m", 0), SeriesKind::Gauge, &[]), RestoreOutcome::Empty);
    assert_counts_in_step(&store);
}

#[test]
fn a_walk_reads_only_the_shards_of_its_metric_and_finds_every_series() {
    // More shards than bits in a shard set: shards 3 and 67 share a bit.
    let store = Store::new(StoreConfig::new(100, 10_000, 60_000));
    store.append(batch((0..300).map(|pod| (key("wide", pod), 1_000, 1.0))), 0);
    store.append(batch([(key("solo", 7), 1_000, 2.0)]), 0);
    let restored = store.restore_series(key("restored", 1), SeriesKind::Gauge, &[(1_000, 3.0)]);
    assert!(matches!(restored, RestoreOutcome::Restored { samples: 1 }));
    let count = |metric| {
        let mut seen = 0;
        each_series(&store, metric, 0, |_, _| seen += 1);
        seen
    };
    assert_eq!((count("wide"), count("solo"), count("restored"), count("missing")), (300, 1, 1, 0));
    assert_eq!(store.metric_series_bound("wide"), 300);
    // Forgotten once its series expire, then made again: its new series are found.
    store.drop_expired(200_000);
    assert_eq!((count("solo"), store.metric_series_bound("solo")), (0, 0));
    store.append(batch([(key("solo", 8), 300_000, 4.0)]), 300_000);
    assert_eq!(count("solo"), 1);
}

#[test]
fn a_listing_stops_at_its_series_count_or_key_bytes_and_says_which() {
    let store = Store::new(config(1_000));
    store.append(batch((0..100).map(|pod| (key("m", pod), 1_000, 1.0))), 0);
    store.append(batch([(key("other", 1), 1_000, 1.0)]), 0);
    let key_bytes = key("m", 10).heap_bytes();
    let list = |series_max, key_bytes_max| store.list_series(Some("m"), ListLimits { series_max, key_bytes_max });
    let all = list(100, 1 << 20);
    assert_eq!((all.series.len(), all.truncated), (100, None));
    assert!(all.series.windows(2).all(|pair| pair[0].key < pair[1].key), "sorted by key");
    let by_count = list(99, 1 << 20);
    assert_eq!((by_count.series.len(), by_count.truncated), (99, Some(ListTruncation::SeriesCount)));
    // Keys of "m" pods 10..99 have the same size; ten of them fit in ten keys' bytes.
    let by_bytes = list(100, 10 * key_bytes);
    assert_eq!(by_bytes.truncated, Some(ListTruncation::KeyBytes));
    assert!(by_bytes.series.iter().map(|summary| summary.key.heap_bytes()).sum::<usize>() <= 10 * key_bytes);
    assert!((9..=10).contains(&by_bytes.series.len()), "{}", by_bytes.series.len());
    let every_metric = store.list_series(None, ListLimits { series_max: 1_000, key_bytes_max: 1 << 20 });
    assert_eq!(every_metric.series.len(), 101);
}

/// A series of the label-index test: metric `m{metric}`, labels `model` and `pod`, and `zone`
/// on some only.
fn indexed_key(metric: u8, model: u8, pod: u8, zone: Option<u8>) -> SeriesKey {
    let mut labels = vec![LabelPair::new("model", format!("m{model}")), LabelPair::new("pod", format!("p{pod}"))];
    if let Some(zone) = zone {
        labels.push(LabelPair::new("zone", format!("z{zone}")));
    }
    SeriesKey::new(format!("m{metric}"), labels)
}

/// A condition of the label-index tests, as a query writes it: `=`, `=~`, `!=` or `!~` of a
/// label name and a value or pattern.
#[derive(Debug, Clone, Copy)]
enum Condition {
    Equal(&'static str, &'static str),
    Regex(&'static str, &'static str),
    NotEqual(&'static str, &'static str),
    NotRegex(&'static str, &'static str),
}

impl Condition {
    fn text(self) -> String {
        match self {
            Condition::Equal(name, value) => format!(r#"{name}="{value}""#),
            Condition::Regex(name, pattern) => format!(r#"{name}=~"{pattern}""#),
            Condition::NotEqual(name, value) => format!(r#"{name}!="{value}""#),
            Condition::NotRegex(name, pattern) => format!(r#"{name}!~"{pattern}""#),
        }
    }
}

/// The keys of `metric` that meet every one of `conditions`, sorted: the query's answer as a
/// query makes it (its matchers checked on each key visited), walking through the label index
/// with the query's narrowings when `indexed`, else the full walk.
fn matching(store: &Store, metric: &str, conditions: &[Condition], indexed: bool) -> Vec<SeriesKey> {
    let text = conditions.iter().map(|condition| condition.text()).collect::<Vec<_>>().join(", ");
    let query =
        crate::query::parse_metric_query(&format!("max({metric}{{{text}}})"), &crate::query::QueryLimits::default())
            .unwrap();
    let narrowings: Vec<LabelNarrowing<'_>> = if indexed { query.narrowings().collect() } else { Vec::new() };
    let mut found = Vec::new();
    let walked: ControlFlow<()> = store.visit_metric_with_labels(metric, &narrowings, 0, i64::MAX, |key, _| {
        if crate::query::eval::series_matches(&query, key) {
            found.push(key.to_owned());
        }
        ControlFlow::Continue(())
    });
    assert!(walked.is_continue());
    found.sort();
    let before = found.len();
    found.dedup();
    assert_eq!(found.len(), before, "no series visited twice");
    found
}

/// The model's answer: its live keys of `metric` that meet `conditions` (a missing label reads
/// as the empty value, as in PromQL).
fn model_matching(model: &BTreeMap<SeriesKey, i64>, metric: &str, conditions: &[Condition]) -> Vec<SeriesKey> {
    let full = |pattern: &str| regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
    model
        .keys()
        .filter(|key| key.metric_name() == metric)
        .filter(|key| {
            conditions.iter().all(|condition| {
                let value_of = |name: &str| key.label_value(name).unwrap_or("");
                match *condition {
                    Condition::Equal(name, value) => value_of(name) == value,
                    Condition::Regex(name, pattern) => full(pattern).is_match(value_of(name)),
                    Condition::NotEqual(name, value) => value_of(name) != value,
                    Condition::NotRegex(name, pattern) => !full(pattern).is_match(value_of(name)),
                }
            })
        })
        .cloned()
        .collect()
}

proptest! {
    /// The label index is a second source of truth: creates, appends and expiries in random
    /// order, then every equality, regex and negative query answered through the index equals
    /// the full walk's answer and the naive model's, and the index lists exactly the live series.
    #[test]
    fn the_label_index_answers_as_the_full_walk_and_the_model(
        steps in proptest::collection::vec(
            (0u8..2, 0u8..4, 0u8..6, proptest::option::of(0u8..2), 0i64..100, proptest::bool::weighted(0.1)),
            1..300,
        ),
    ) {
        let store = Store::new(StoreConfig::new(3, 10_000, 30_000));
        // The model: each series' last sample time.
        let mut model: BTreeMap<SeriesKey, i64> = BTreeMap::new();
        let mut now_s = 0i64;
        for (metric, model_idx, pod, zone, advance_s, expire) in steps {
            now_s += advance_s % 7;
            let key = indexed_key(metric, model_idx, pod, zone);
            store.append(batch([(key.clone(), now_s * 1_000, 1.0)]), now_s * 1_000);
            let last = model.entry(key).or_insert(i64::MIN);
            *last = (*last).max(now_s * 1_000);
            if expire {
                store.drop_expired(now_s * 1_000);
                model.retain(|_, last_ms| *last_ms >= now_s * 1_000 - 30_000);
                // A regex read mid-way makes value sets that later steps must keep exact.
                let name = if now_s % 2 == 0 { "model" } else { "pod" };
                for conditions in [[Condition::Regex(name, "(m|p)[0-2]")], [Condition::NotRegex(name, "(m|p)[3-4]")]] {
                    for metric in ["m0", "m1"] {
                        prop_assert_eq!(
                            matching(&store, metric, &conditions, true),
                            model_matching(&model, metric, &conditions)
                        );
                    }
                }
            }
        }
        store.check_label_index();
        for metric in ["m0", "m1"] {
            for conditions in [
                vec![Condition::Equal("model", "m1")],
                vec![Condition::Equal("pod", "p3")],
                vec![Condition::Equal("model", "m2"), Condition::Equal("pod", "p0")],
                vec![Condition::Equal("zone", "z1")],
                vec![Condition::Equal("model", "m3"), Condition::Equal("zone", "z0"), Condition::Equal("pod", "p5")],
                vec![Condition::Equal("model", "absent")],
                vec![Condition::Regex("model", "m(1|3)")],
                vec![Condition::Regex("pod", "p[0-2]"), Condition::Equal("model", "m0")],
                vec![Condition::Regex("zone", "z.+"), Condition::Regex("pod", "p[3-5]")],
                vec![Condition::Regex("model", "none.*")],
                vec![Condition::Regex("model", "m1|m2|x.*")],
                vec![Condition::Regex("pod", "(p|q)[0-9]"), Condition::Regex("model", ".*3")],
                vec![Condition::NotEqual("model", "m1")],
                vec![Condition::NotEqual("zone", "z0")],
                vec![Condition::NotEqual("model", "absent")],
                vec![Condition::Equal("model", "m0"), Condition::NotEqual("pod", "p1")],
                vec![Condition::NotRegex("pod", "p[0-2]")],
                vec![Condition::NotRegex("zone", "z.+"), Condition::Regex("pod", "p[3-5]")],
                vec![Condition::NotRegex("model", "m(1|3)"), Condition::NotEqual("pod", "p2")],
                vec![Condition::NotRegex("model", ".*")],
                vec![Condition::NotRegex("model", ".*2"), Condition::Equal("zone", "z1")],
            ] {
                let indexed = matching(&store, metric, &conditions, true);
                prop_assert_eq!(&indexed, &matching(&store, metric, &conditions, false));
                prop_assert_eq!(indexed, model_matching(&model, metric, &conditions));
            }
        }
    }
}

#[test]
fn a_selective_query_visits_only_its_candidates() {
    let store = Store::new(StoreConfig::new(4, 100_000, 60_000));
    store.append(
        batch((0..2_000u32).map(|pod| (indexed_key(0, (pod % 250) as u8, (pod % 7) as u8, None), 1_000, 1.0))),
        0,
    );
    let mut visited = 0;
    let walked: ControlFlow<()> = store.visit_metric_with_labels(
        "m0",
        &[LabelNarrowing::Equal { name: "model", value: "m17" }],
        0,
        i64::MAX,
        |_, _| {
            visited += 1;
            ControlFlow::Continue(())
        },
    );
    assert!(walked.is_continue());
    // model m17 has the pods 17, 267, … (8 series, pods mod 7 all different or not: 8 keys).
    assert!(visited <= 8, "{visited} series visited for 8 candidates");
    store.check_label_index();
}

#[test]
fn a_regex_query_visits_only_the_series_of_the_values_it_accepts() {
    let store = Store::new(StoreConfig::new(4, 100_000, 60_000));
    store.append(
        batch((0..2_000u32).map(|pod| (indexed_key(0, (pod % 250) as u8, (pod % 7) as u8, None), 1_000, 1.0))),
        0,
    );
    // Models m17 and m170..m179: 11 of 250 values (7 series each: the 8 pods of a model fall
    // on 7 distinct `pod` values).
    let regex = regex::Regex::new("^(?:m17.?)$").unwrap();
    let mut visited = 0;
    let narrowing = [LabelNarrowing::Matching { name: "model", matches: &regex, prefixes: None }];
    let walked: ControlFlow<()> = store.visit_metric_with_labels("m0", &narrowing, 0, i64::MAX, |key, _| {
        assert!(regex.is_match(key.label_value("model").unwrap()), "{key:?}");
        visited += 1;
        ControlFlow::Continue(())
    });
    assert!(walked.is_continue());
    assert_eq!(visited, 11 * 7);
    // A model name no series has: nothing visited.
    let absent = regex::Regex::new("^(?:x.*)$").unwrap();
    let prefixes = ["x".to_owned()];
    let narrowing = [LabelNarrowing::Matching { name: "model", matches: &absent, prefixes: Some(&prefixes) }];
    let walked: ControlFlow<()> = store.visit_metric_with_labels("m0", &narrowing, 0, i64::MAX, |_, _| {
        panic!("no series has a model starting with x")
    });
    assert!(walked.is_continue());
}

#[test]
fn regexes_over_more_labels_than_a_shard_makes_sets_for_still_answer() {
    let store = Store::new(StoreConfig::new(1, 10_000, 60_000));
    store.append(batch((0..200u8).map(|pod| (indexed_key(0, pod % 20, pod, None), 1_000, 1.0))), 0);
    // Regexes over 1,100 label names no series has: every one answers nothing, and the shard
    // stops making sets at its most.
    let names: Vec<String> = (0..1_100).map(|idx| format!("absent_{idx}")).collect();
    for name in &names {
        let name: &'static str = Box::leak(name.clone().into_boxed_str());
        assert!(matching(&store, "m0", &[Condition::Regex(name, "m1.*")], true).is_empty());
    }
    // A regex over a real label, after the sets ran out: the full walk's answer.
    for conditions in [[Condition::Regex("model", "m1.*")], [Condition::Regex("pod", "p1[0-9]")]] {
        let indexed = matching(&store, "m0", &conditions, true);
        assert!(!indexed.is_empty());
        assert_eq!(indexed, matching(&store, "m0", &conditions, false));
    }
    store.check_label_index();
}

/// The classes of the chunks of `metric`'s one series, oldest first.
fn chunk_classes(store: &Store, metric: &str) -> Vec<ChunkClass> {
    let mut classes = Vec::new();
    for shard_idx in 0..store.shard_count() {
        store.visit_shard_slots(shard_idx, 0, usize::MAX, |series| {
            if series.key.metric_name() == metric {
                classes.extend(series.chunks.iter().map(Chunk::class));
            }
        });
    }
    classes
}

#[test]
fn chunks_follow_the_rate_each_series_is_pushed_at_and_restored_with() {
    let store = Store::new(StoreConfig::new(4, 100, 120_000));
    let push = |metric: &str, samples: i64, interval_ms: i64| {
        for step in 0..samples {
            let timestamp_ms = 1_000_000 + step * interval_ms;
            let outcome = store.append(batch([(key(metric, 0), timestamp_ms, step as f64)]), timestamp_ms);
            assert_eq!(outcome.appended, 1);
        }
    };
    // Every second: the first chunk (8) grows into a full one, which takes all 120.
    push("every_second", 120, 1_000);
    // Every 5 s: 24 samples a retention; it grows into a chunk of 32.
    push("every_5s", 20, 5_000);
    // Every 30 s: 4 a retention, in the first chunk of 8.
    push("every_30s", 4, 30_000);
    // Every 20 s past a full chunk: 6 a retention, so the next chunk is small too.
    push("every_20s", 10, 20_000);
    assert_eq!(chunk_classes(&store, "every_second"), [ChunkClass::Full]);
    assert_eq!(chunk_classes(&store, "every_5s"), [ChunkClass::Medium]);
    assert_eq!(chunk_classes(&store, "every_30s"), [ChunkClass::Small]);
    assert_eq!(chunk_classes(&store, "every_20s"), [ChunkClass::Small, ChunkClass::Small]);
    // A restored series starts with the class its samples' rate asks for.
    let restored_fast: Vec<(i64, f64)> = (0..30).map(|step| (2_000_000 + step * 1_000, 1.0)).collect();
    assert_eq!(
        store.restore_series(key("restored_fast", 0), SeriesKind::Gauge, &restored_fast),
        RestoreOutcome::Restored { samples: 30 }
    );
    let restored_slow = [(2_000_000, 1.0), (2_030_000, 2.0), (2_060_000, 3.0)];
    store.restore_series(key("restored_slow", 0), SeriesKind::Gauge, &restored_slow);
    assert_eq!(chunk_classes(&store, "restored_fast"), [ChunkClass::Full]);
    assert_eq!(chunk_classes(&store, "restored_slow"), [ChunkClass::Small]);
    // Growing kept every sample, in order, and the byte counts in step.
    let mut samples = Vec::new();
    each_series(&store, "every_second", 0, |_, window| {
        samples.extend(window.slices().flat_map(|slice| (0..slice.len()).map(move |idx| slice.timestamp_ms(idx))))
    });
    assert_eq!(samples, (0..120).map(|step| 1_000_000 + step * 1_000).collect::<Vec<_>>());
    assert_counts_in_step(&store);
    store.drop_expired(10_000_000);
    assert_eq!(store.series_count(), 0);
    assert_counts_in_step(&store);
}

#[test]
fn a_full_small_chunk_does_not_grow_into_a_sample_beyond_its_offsets() {
    let store = Store::new(StoreConfig::new(4, 100, 120_000));
    let append = |timestamp_ms: i64| store.append(batch([(key("gap", 0), timestamp_ms, 1.0)]), timestamp_ms).appended;
    for step in 0..8 {
        assert_eq!(append(1_000 + step * 1_000), 1);
    }
    // The rate asks for a full chunk, but 50 days after the first sample the small chunk's
    // 32-bit offsets cannot reach: a new chunk takes it (no panic, nothing lost).
    let far_ms = 1_000 + 50 * 24 * 3_600 * 1_000;
    assert_eq!(append(far_ms), 1);
    assert_eq!(chunk_classes(&store, "gap"), [ChunkClass::Small, ChunkClass::Full]);
    assert_counts_in_step(&store);
}

/// One GPU's key of `metric`: the labels every DCGM gauge of that GPU carries.
fn gpu_key(metric: &str, gpu: u32) -> SeriesKey {
    SeriesKey::new(metric, vec![LabelPair::new("UUID", format!("GPU-{gpu}")), LabelPair::new("Hostname", "node-1")])
}

#[test]
fn the_series_of_one_label_set_share_it_until_the_last_of_them_goes() {
    let store = Store::new(config(1_000));
    let mut samples: Vec<(SeriesKey, i64, f64)> =
        ["util", "fb_used", "copy", "power"].into_iter().map(|metric| (gpu_key(metric, 0), 1_000, 1.0)).collect();
    samples.push((gpu_key("util", 1), 1_000, 1.0));
    store.append(batch(samples), 1_000);
    // One set per GPU, whatever the number of its metrics: they are in one shard.
    assert_eq!((store.series_count(), store.label_set_count()), (5, 2));
    store.check_label_index();
    assert_counts_in_step(&store);

    // Only "power" goes on: retention takes the other series, and GPU 1's set with its last one.
    store.append(batch([(gpu_key("power", 0), 100_000, 2.0)]), 100_000);
    store.drop_expired(100_000);
    assert_eq!((store.series_count(), store.label_set_count()), (1, 1));
    store.check_label_index();
    assert_counts_in_step(&store);
    let narrowing = [LabelNarrowing::Equal { name: "UUID", value: "GPU-0" }];
    let mut found = Vec::new();
    let walked: ControlFlow<()> = store.visit_metric_with_labels("power", &narrowing, 0, i64::MAX, |key, window| {
        found.push((key.to_owned(), window.value(WindowOp::LastOne)));
        ControlFlow::Continue(())
    });
    assert!(walked.is_continue());
    assert_eq!(found, [(gpu_key("power", 0), Some(2.0))]);
    let gone = [LabelNarrowing::Equal { name: "UUID", value: "GPU-1" }];
    let walked: ControlFlow<()> =
        store.visit_metric_with_labels("util", &gone, 0, i64::MAX, |_, _| ControlFlow::Break(()));
    assert!(walked.is_continue(), "GPU 1's series are gone from the index");

    // A new metric of the kept set, pushed or restored, takes the set the shard holds.
    store.append(batch([(gpu_key("temperature", 0), 100_000, 3.0)]), 100_000);
    let restored = store.restore_series(gpu_key("clock", 0), SeriesKind::Gauge, &[(100_000, 4.0)]);
    assert_eq!(restored, RestoreOutcome::Restored { samples: 1 });
    assert_eq!((store.series_count(), store.label_set_count()), (3, 1));
    store.check_label_index();
    assert_counts_in_step(&store);

    store.drop_expired(1_000_000);
    assert_eq!((store.series_count(), store.label_set_count()), (0, 0));
    store.check_label_index();
    assert_counts_in_step(&store);
}
