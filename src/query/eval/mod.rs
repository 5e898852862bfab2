//! Evaluates a parsed [`MetricQuery`]: the operation over time per matching series, then the
//! aggregation across series, within a [`QueryBudget`] of series visited and time.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use super::parser::{Aggregation, MetricQuery};
use crate::store::{LabelNarrowing, SeriesRef, Store, WindowOp};

/// Series visited between two looks at the clock.
const SERIES_PER_CLOCK_CHECK: usize = 256;

/// What one evaluation may cost.
#[derive(Debug, Clone, Copy)]
pub struct QueryBudget {
    /// Most series visited (matching or not).
    pub series_max: usize,
    /// Most time spent, from the start of the evaluation.
    pub time_max: Duration,
}

impl QueryBudget {
    /// No limit (benches and the store's own tests).
    pub const UNLIMITED: QueryBudget = QueryBudget { series_max: usize::MAX, time_max: Duration::MAX };
}

/// Why an evaluation was stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryCostError {
    #[error(
        "metricQuery visits more than {series_max} series (--max-query-series): add label matchers or aggregate \
         fewer series"
    )]
    TooManySeries { series_max: usize },
    #[error("metricQuery took longer than {} ms to evaluate (--query-timeout)", time_max.as_millis())]
    TooSlow { time_max: Duration },
}

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
pub fn series_matches(query: &MetricQuery, key: SeriesRef<'_>) -> bool {
    query.matchers.iter().all(|matcher| matcher.matches(key.label_value(&matcher.label_name)))
}

/// Evaluates `query` with `op` over the samples in `[now_ms - window_ms, now_ms]`, without a
/// budget.
pub fn evaluate(store: &Store, query: &MetricQuery, op: WindowOp, window_ms: i64, now_ms: i64) -> Evaluation {
    evaluate_within(store, query, op, window_ms, now_ms, QueryBudget::UNLIMITED).expect("an unlimited budget holds")
}

/// Evaluates `query` with `op` over the samples stamped in `[now_ms - window_ms, now_ms]` (later
/// ones, from a clock ahead of ours, are not read), stopping with an error as soon as `budget`
/// is spent.
pub fn evaluate_within(
    store: &Store,
    query: &MetricQuery,
    op: WindowOp,
    window_ms: i64,
    now_ms: i64,
    budget: QueryBudget,
) -> Result<Evaluation, QueryCostError> {
    let started = Instant::now();
    let start_ms = now_ms.saturating_sub(window_ms);
    let mut accumulator = Accumulator::new(query.aggregation);
    let mut series_visited = 0usize;
    // Equality matchers narrow the walk through the store's label index; every visited key is
    // still checked against every matcher.
    let narrowings: Vec<LabelNarrowing<'_>> = query.narrowings().collect();
    let walk = store.visit_metric_with_labels(&query.metric_name, &narrowings, start_ms, now_ms, |key, window| {
        series_visited += 1;
        if series_visited > budget.series_max {
            return ControlFlow::Break(QueryCostError::TooManySeries { series_max: budget.series_max });
        }
        if series_visited.is_multiple_of(SERIES_PER_CLOCK_CHECK) && started.elapsed() > budget.time_max {
            return ControlFlow::Break(QueryCostError::TooSlow { time_max: budget.time_max });
        }
        if series_matches(query, key) {
            if let Some(value) = window.value(op) {
                accumulator.add(value);
            }
        }
        ControlFlow::Continue(())
    });
    match walk {
        ControlFlow::Continue(()) => Ok(accumulator.finish()),
        ControlFlow::Break(exceeded) => Err(exceeded),
    }
}

#[cfg(test)]
mod tests;
