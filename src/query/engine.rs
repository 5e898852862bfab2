//! [`QueryEngine`]: evaluates a [`QuerySpec`] against the store now, within a [`QueryBudget`],
//! and records how long it took. The scaler and the admin API both evaluate through it.
//!
//! Where an evaluation runs: a query that visits few series (at most [`INLINE_SERIES_MAX`], well
//! under a millisecond) is evaluated on the calling task; a bigger one on tokio's blocking pool,
//! at most `offload_concurrency` at a time, so that no costly query holds an async worker that a
//! GetMetrics answer or `/healthz` is waiting for. A query over a big metric is first tried
//! inline with that many series as its budget: the label index often narrows it to a few series
//! (a trigger per model), and a hand-off to the blocking pool costs more than such a query. Either way a panic
//! is caught (`otelscale_panics_total{site="query"}`) and answered as an internal error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::eval::{evaluate_within, Evaluation, QueryBudget, QueryCostError};
use super::spec::QuerySpec;
use crate::config::Config;
use crate::outcome::PanicSite;
use crate::panics::{self, PanicCaught};
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Series of a metric up to which a query is evaluated inline.
pub const INLINE_SERIES_MAX: usize = 4096;

/// Why a query got no value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Cost(#[from] QueryCostError),
    /// Every off-runtime evaluation slot stayed taken for the query's whole time budget.
    #[error("too many costly queries at once: none could start within {} ms (--query-timeout)", waited.as_millis())]
    Busy { waited: Duration },
    #[error(transparent)]
    Panicked(#[from] PanicCaught),
}

impl QueryBudget {
    /// The budget `--max-query-series` and `--query-timeout` give each query.
    pub fn from_config(config: &Config) -> QueryBudget {
        QueryBudget { series_max: config.query_series_max, time_max: config.query_timeout }
    }
}

/// Evaluates queries for the scaler and the admin API; owns nothing but shared handles.
#[derive(Debug, Clone)]
pub struct QueryEngine {
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    /// Slots for evaluations off the async runtime.
    offload_permits: Arc<Semaphore>,
}

impl QueryEngine {
    /// An engine that runs up to one big evaluation per CPU core at a time.
    pub fn new(store: Arc<Store>, telemetry: Arc<Telemetry>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        QueryEngine::with_offload_concurrency(store, telemetry, cores)
    }

    /// An engine that runs up to `offload_concurrency` big evaluations at a time.
    pub fn with_offload_concurrency(store: Arc<Store>, telemetry: Arc<Telemetry>, offload_concurrency: usize) -> Self {
        assert!(offload_concurrency > 0, "validated in Config");
        QueryEngine { store, telemetry, offload_permits: Arc::new(Semaphore::new(offload_concurrency)) }
    }

    /// Evaluates `spec` now on the calling thread, recording the duration.
    pub fn evaluate_blocking(&self, spec: &QuerySpec, budget: QueryBudget) -> Result<Evaluation, QueryError> {
        let started = Instant::now();
        let evaluated = panics::catch(&self.telemetry, PanicSite::Query, || {
            let now_ms = crate::clock::now_ms();
            evaluate_within(&self.store, &spec.query, spec.operation.window_op(), spec.window_ms, now_ms, budget)
        });
        self.telemetry.record_query_duration(started.elapsed());
        Ok(evaluated??)
    }

    /// Evaluates `spec` now: inline when its metric is small, else off the async runtime.
    pub async fn evaluate(&self, spec: &QuerySpec, budget: QueryBudget) -> Result<Evaluation, QueryError> {
        if self.store.metric_series_bound(&spec.query.metric_name) <= INLINE_SERIES_MAX
            || budget.series_max <= INLINE_SERIES_MAX
        {
            return self.evaluate_blocking(spec, budget);
        }
        let inline = QueryBudget { series_max: INLINE_SERIES_MAX, ..budget };
        match self.evaluate_blocking(spec, inline) {
            // It visits more: evaluated again from the start, off the runtime, with its own budget.
            Err(QueryError::Cost(QueryCostError::TooManySeries { .. })) => {}
            answered => return answered,
        }
        self.evaluate_off_runtime(spec.clone(), budget).await
    }

    /// Evaluates `spec` on tokio's blocking pool, waiting at most the budget's time for a slot.
    pub async fn evaluate_off_runtime(&self, spec: QuerySpec, budget: QueryBudget) -> Result<Evaluation, QueryError> {
        let waited = budget.time_max;
        let permit = match tokio::time::timeout(waited, Arc::clone(&self.offload_permits).acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => return Err(QueryError::Busy { waited }),
        };
        let engine = self.clone();
        let evaluated = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            engine.evaluate_blocking(&spec, budget)
        })
        .await;
        match evaluated {
            Ok(result) => result,
            // The closure catches panics itself; a join error means the runtime is shutting down.
            Err(join_error) => Err(QueryError::Panicked(PanicCaught {
                site: PanicSite::Query,
                message: format!("the evaluation task did not finish: {join_error}"),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{QueryLimits, QuerySpec};
    use crate::store::{BatchSample, LabelPair, SampleBatch, SeriesKey, SeriesKind, StoreConfig};

    fn spec(query: &str) -> QuerySpec {
        let metadata = [("metricQuery".to_owned(), query.to_owned())].into_iter().collect();
        QuerySpec::from_metadata(&metadata, &QueryLimits::default(), 600_000).unwrap()
    }

    #[tokio::test]
    async fn a_selective_query_over_a_big_metric_is_answered_inline_and_a_broad_one_off_the_runtime() {
        let store = Arc::new(Store::new(StoreConfig::new(4, 100_000, 600_000)));
        let now_ms = crate::clock::now_ms();
        let samples = (0..2 * INLINE_SERIES_MAX)
            .map(|series_idx| {
                let labels = vec![
                    LabelPair::new("model", format!("m{}", series_idx / 8)),
                    LabelPair::new("pod", format!("p{series_idx}")),
                ];
                BatchSample::new(SeriesKey::new("big", labels), SeriesKind::Gauge, now_ms - 1_000, 1.0)
            })
            .collect();
        store.append(SampleBatch { samples }, now_ms);
        let engine = QueryEngine::with_offload_concurrency(store, Arc::new(Telemetry::default()), 1);
        // The one off-runtime slot is taken: only an inline evaluation can answer.
        let _held = Arc::clone(&engine.offload_permits).acquire_owned().await.unwrap();
        let budget = QueryBudget { series_max: 1_000_000, time_max: Duration::from_millis(50) };
        let selective = engine.evaluate(&spec("sum(big{model=m3})"), budget).await.unwrap();
        assert_eq!((selective.matched_series, selective.value), (8, Some(8.0)));
        let broad = engine.evaluate(&spec("sum(big)"), budget).await.unwrap_err();
        assert!(matches!(broad, QueryError::Busy { .. }), "{broad:?}");
    }
}
