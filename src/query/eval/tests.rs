//! Evaluation against a naive reference: random series, random selectors, every aggregation and
//! operation over time.

use proptest::prelude::*;

use super::*;
use crate::query::parser::{LabelMatcher, MatchKind};
use crate::store::{BatchSample, LabelPair, SampleBatch, SeriesKey, SeriesKind, StoreConfig};

const NOW_MS: i64 = 1_000_000;

#[derive(Debug, Clone)]
struct GeneratedSeries {
    zone: Option<u8>,
    pod: u8,
    samples: Vec<(i64, f64)>,
}

fn series_strategy() -> impl Strategy<Value = GeneratedSeries> {
    // Seconds 0..120 of the window, and up to 10 s beyond the evaluation time (a producer's clock
    // ahead of ours, within --max-future-skew): those must not be read.
    (proptest::option::of(0u8..3), 0u8..8, proptest::collection::btree_map(0i64..130, -1000.0f64..1000.0, 0..12))
        .prop_map(|(zone, pod, samples)| GeneratedSeries {
            zone,
            pod,
            samples: samples.into_iter().map(|(second, value)| (NOW_MS - 120_000 + second * 1_000, value)).collect(),
        })
}

fn aggregation_strategy() -> impl Strategy<Value = Aggregation> {
    prop_oneof![
        Just(Aggregation::Sum),
        Just(Aggregation::Avg),
        Just(Aggregation::Min),
        Just(Aggregation::Max),
        Just(Aggregation::Count)
    ]
}

fn labels_of(series: &GeneratedSeries) -> Vec<LabelPair> {
    let mut labels = vec![LabelPair::new("pod", series.pod.to_string())];
    if let Some(zone) = series.zone {
        labels.push(LabelPair::new("zone", format!("z{zone}")));
    }
    labels
}

fn naive_series_value(samples: &[(i64, f64)], op: WindowOp) -> Option<f64> {
    let values: Vec<f64> = samples.iter().map(|&(_, value)| value).collect();
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
            let (first_ms, first) = samples[0];
            let (last_ms, last) = samples[samples.len() - 1];
            (last_ms > first_ms).then(|| (last - first) * 1000.0 / (last_ms - first_ms) as f64)
        }
    }
}

proptest! {
    #[test]
    fn evaluation_matches_naive_reference(
        generated in proptest::collection::vec(series_strategy(), 0..20),
        aggregation in aggregation_strategy(),
        zone_matcher in proptest::option::of((0u8..3, any::<bool>())),
        op_idx in 0usize..WindowOp::ALL.len(),
        window_s in 1i64..130,
    ) {
        let op = WindowOp::ALL[op_idx];
        let store = Store::new(StoreConfig::new(3, 1_000, 200_000));
        // Series with the same labels are merged: keep the first, like the store's identity does.
        let mut unique: Vec<GeneratedSeries> = Vec::new();
        for series in generated {
            if !unique.iter().any(|seen| seen.zone == series.zone && seen.pod == series.pod) {
                unique.push(series);
            }
        }
        let mut batch = SampleBatch::default();
        for series in &unique {
            for &(ts, value) in &series.samples {
                batch.samples.push(BatchSample::new(SeriesKey::new("m", labels_of(series)), SeriesKind::Gauge, ts, value));
            }
        }
        store.append(batch, NOW_MS);

        let matchers: Vec<LabelMatcher> = zone_matcher
            .map(|(zone, equal)| {
                let value = format!("z{zone}");
                let kind = if equal { MatchKind::Equal(value) } else { MatchKind::NotEqual(value) };
                LabelMatcher { label_name: "zone".to_owned(), kind, value_prefixes: None }
            })
            .into_iter()
            .collect();
        let query = MetricQuery { aggregation, metric_name: "m".to_owned(), matchers };
        let window_ms = window_s * 1_000;
        let actual = evaluate(&store, &query, op, window_ms, NOW_MS);

        let start_ms = NOW_MS - window_ms;
        let mut values = Vec::new();
        for series in &unique {
            let selected = match zone_matcher {
                None => true,
                Some((zone, true)) => series.zone == Some(zone),
                Some((zone, false)) => series.zone != Some(zone),
            };
            if !selected {
                continue;
            }
            let in_window: Vec<(i64, f64)> =
                series.samples.iter().copied().filter(|&(ts, _)| ts >= start_ms && ts <= NOW_MS).collect();
            values.extend(naive_series_value(&in_window, op));
        }
        let expected = (!values.is_empty()).then(|| match aggregation {
            Aggregation::Sum => values.iter().sum::<f64>(),
            Aggregation::Avg => values.iter().sum::<f64>() / values.len() as f64,
            Aggregation::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            Aggregation::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Aggregation::Count => values.len() as f64,
        });
        prop_assert_eq!(actual.matched_series, values.len());
        match (actual.value, expected) {
            (Some(a), Some(e)) => prop_assert!((a - e).abs() <= 1e-6 * e.abs().max(1.0), "{} vs {}", a, e),
            (a, e) => prop_assert_eq!(a, e),
        }
    }
}

#[test]
fn a_budget_stops_an_evaluation_with_an_error_naming_its_limit() {
    let store = Store::new(StoreConfig::new(2, 10_000, 200_000));
    let mut batch = SampleBatch::default();
    for pod in 0..1_000 {
        let key = SeriesKey::new("m", vec![LabelPair::new("pod", pod.to_string())]);
        batch.samples.push(BatchSample::new(key, SeriesKind::Gauge, NOW_MS, 1.0));
    }
    store.append(batch, NOW_MS);
    let query = MetricQuery { aggregation: Aggregation::Sum, metric_name: "m".to_owned(), matchers: vec![] };
    let budget = |series_max, time_max| QueryBudget { series_max, time_max };
    let evaluated = evaluate_within(&store, &query, WindowOp::LastOne, 60_000, NOW_MS, budget(1_000, Duration::MAX));
    assert_eq!(evaluated, Ok(Evaluation { value: Some(1_000.0), matched_series: 1_000 }));
    let too_many = evaluate_within(&store, &query, WindowOp::LastOne, 60_000, NOW_MS, budget(999, Duration::MAX));
    assert_eq!(too_many, Err(QueryCostError::TooManySeries { series_max: 999 }));
    assert!(too_many.unwrap_err().to_string().contains("--max-query-series"));
    let too_slow = evaluate_within(&store, &query, WindowOp::LastOne, 60_000, NOW_MS, budget(1_000, Duration::ZERO));
    assert_eq!(too_slow, Err(QueryCostError::TooSlow { time_max: Duration::ZERO }));
    assert!(too_slow.unwrap_err().to_string().contains("--query-timeout"));
}

#[test]
fn other_metrics_are_not_selected() {
    let store = Store::new(StoreConfig::new(2, 10, 200_000));
    let mut batch = SampleBatch::default();
    batch.samples.push(BatchSample::new(SeriesKey::new("a", vec![]), SeriesKind::Gauge, NOW_MS, 1.0));
    batch.samples.push(BatchSample::new(SeriesKey::new("b", vec![]), SeriesKind::Gauge, NOW_MS, 2.0));
    store.append(batch, NOW_MS);
    let query = MetricQuery { aggregation: Aggregation::Sum, metric_name: "b".to_owned(), matchers: vec![] };
    assert_eq!(
        evaluate(&store, &query, WindowOp::LastOne, 60_000, NOW_MS),
        Evaluation { value: Some(2.0), matched_series: 1 }
    );
    let missing = MetricQuery { metric_name: "c".to_owned(), ..query };
    assert_eq!(
        evaluate(&store, &missing, WindowOp::LastOne, 60_000, NOW_MS),
        Evaluation { value: None, matched_series: 0 }
    );
}
