//! Evaluates a parsed [`MetricQuery`]: the operation over time per matching series, then the
//! aggregation across series.

use super::parser::{Aggregation, MetricQuery};
use crate::store::{SeriesKey, Store, WindowOp};

/// The result of a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// `None` when no series matched with a value in the window.
    pub value: Option<f64>,
    /// Series that matched the selector and had a value for the operation in the window.
    pub matched_series: usize,
}

/// Running aggregation across series.
#[derive(Debug, Clone, Copy)]
struct Accumulator {
    aggregation: Aggregation,
    n_series: usize,
    total: f64,
    extreme: f64,
}

impl Accumulator {
    fn new(aggregation: Aggregation) -> Self {
        let extreme = match aggregation {
            Aggregation::Min => f64::INFINITY,
            _ => f64::NEG_INFINITY,
        };
        Accumulator { aggregation, n_series: 0, total: 0.0, extreme }
    }

    fn add(&mut self, value: f64) {
        self.n_series += 1;
        self.total += value;
        self.extreme = match self.aggregation {
            Aggregation::Min => self.extreme.min(value),
            _ => self.extreme.max(value),
        };
    }

    fn finish(self) -> Evaluation {
        let value = (self.n_series > 0).then(|| match self.aggregation {
            Aggregation::Sum => self.total,
            Aggregation::Avg => self.total / self.n_series as f64,
            Aggregation::Min | Aggregation::Max => self.extreme,
            Aggregation::Count => self.n_series as f64,
        });
        Evaluation { value, matched_series: self.n_series }
    }
}

/// Whether every matcher of `query` accepts the series.
pub fn series_matches(query: &MetricQuery, key: &SeriesKey) -> bool {
    query.matchers.iter().all(|matcher| matcher.matches(key.label_value(&matcher.label_name)))
}

/// Evaluates `query` with `op` over the samples in `[now_ms - window_ms, now_ms]` and later.
pub fn evaluate(store: &Store, query: &MetricQuery, op: WindowOp, window_ms: i64, now_ms: i64) -> Evaluation {
    let start_ms = now_ms.saturating_sub(window_ms);
    let mut accumulator = Accumulator::new(query.aggregation);
    store.visit_metric(&query.metric_name, start_ms, |key, window| {
        if !series_matches(query, key) {
            return;
        }
        if let Some(value) = window.value(op) {
            accumulator.add(value);
        }
    });
    accumulator.finish()
}

#[cfg(test)]
mod tests;
