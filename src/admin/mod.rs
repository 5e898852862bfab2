//! Admin HTTP: `/healthz`, `/readyz`, `/metrics` (Prometheus text) and the debug API
//! `/api/v1/query` and `/api/v1/series`.
//!
//! The debug API is unauthenticated and reachable by any pod that can reach the port, so its
//! work never runs on the async runtime that answers `/healthz` and KEDA: parsing (which compiles
//! regexes), evaluation and listing run on tokio's blocking pool, at most
//! `--admin-query-concurrency` at once (a request that cannot start within `--query-timeout` is
//! answered 503), each evaluation within the query budget, each listing capped at
//! `--max-series-list` and streamed.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::outcome::PanicSite;
use crate::panics;
use crate::query::{Evaluation, QueryBudget, QueryCostError, QueryEngine, QueryError, QuerySpec};
use crate::store::{ListLimits, SeriesSummary, Store};
use crate::telemetry::Telemetry;

/// Most series `/api/v1/series` lists when no `limit` is given (`--max-series-list` caps it).
const SERIES_LIST_LIMIT_DEFAULT: usize = 1_000;
/// Set on a `/api/v1/series` answer that stopped at a limit before the last matching series;
/// its value names the limit.
pub const SERIES_TRUNCATED_HEADER: &str = "otelscale-series-truncated";
/// Series entries serialized into one chunk of a streamed `/api/v1/series` answer.
const SERIES_PER_CHUNK: usize = 256;

#[derive(Debug, Clone)]
pub struct AdminState {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub telemetry: Arc<Telemetry>,
    pub engine: QueryEngine,
    /// Set once every listener serves.
    pub ready: Arc<AtomicBool>,
    /// One per debug API request being worked on (`--admin-query-concurrency`).
    pub work_permits: Arc<Semaphore>,
}

impl AdminState {
    pub fn new(config: Arc<Config>, store: Arc<Store>, telemetry: Arc<Telemetry>, ready: Arc<AtomicBool>) -> Self {
        let concurrency = config.admin_query_concurrency;
        let engine = QueryEngine::with_offload_concurrency(Arc::clone(&store), Arc::clone(&telemetry), concurrency);
        let work_permits = Arc::new(Semaphore::new(concurrency));
        AdminState { config, store, telemetry, engine, ready, work_permits }
    }

    /// A slot to work on one debug API request, or the 503 answer when none frees up within
    /// `--query-timeout`.
    async fn work_permit(&self) -> Result<OwnedSemaphorePermit, Response> {
        let acquired = tokio::time::timeout(self.config.query_timeout, Arc::clone(&self.work_permits).acquire_owned());
        match acquired.await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(error_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many admin API requests at once (--admin-query-concurrency {}): retry later",
                    self.config.admin_query_concurrency
                ),
            )),
        }
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/query", get(query))
        .route("/api/v1/series", get(series))
        .fallback(|| async {
            (StatusCode::NOT_FOUND, "not found: see /healthz, /readyz, /metrics, /api/v1/query, /api/v1/series\n")
        })
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let body = state.telemetry.render_prometheus(&state.store);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryAnswer {
    metric_query: String,
    operation_over_time: &'static str,
    window_seconds: i64,
    /// What the scaler would report (0 when nothing matched), before clamping.
    value: f64,
    /// `null` when no series matched.
    raw_value: Option<f64>,
    matched_series: usize,
}

#[derive(Debug, Serialize)]
struct ErrorAnswer {
    error: String,
}

fn error_answer(status: StatusCode, message: String) -> Response {
    let mut response = (status, Json(ErrorAnswer { error: message })).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

fn bad_request(message: String) -> Response {
    error_answer(StatusCode::BAD_REQUEST, message)
}

/// Why a debug query got no answer, before the HTTP status is chosen.
enum QueryFailure {
    Metadata(String),
    Query(QueryError),
}

/// The HTTP answer to a failed query: 400 bad query, 422 over the series budget, 503 over time
/// or no slot, 500 an internal error.
fn query_failure_answer(failure: QueryFailure) -> Response {
    match failure {
        QueryFailure::Metadata(message) => bad_request(message),
        QueryFailure::Query(error @ QueryError::Cost(QueryCostError::TooManySeries { .. })) => {
            error_answer(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
        }
        QueryFailure::Query(error @ (QueryError::Cost(QueryCostError::TooSlow { .. }) | QueryError::Busy { .. })) => {
            error_answer(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
        }
        QueryFailure::Query(error @ QueryError::Panicked(_)) => {
            error_answer(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
        }
    }
}

async fn query(State(state): State<AdminState>, Query(params): Query<HashMap<String, String>>) -> Response {
    let permit = match state.work_permit().await {
        Ok(permit) => permit,
        Err(busy) => return busy,
    };
    let budget = QueryBudget::from_config(&state.config);
    let (config, engine, telemetry) = (Arc::clone(&state.config), state.engine.clone(), Arc::clone(&state.telemetry));
    // Parsing compiles the query's regexes: it runs off the async runtime too.
    let answered = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let evaluated = panics::catch(&telemetry, PanicSite::Query, || {
            let spec = QuerySpec::from_metadata(&params, &config.query_limits, config.retention_ms)
                .map_err(|err| QueryFailure::Metadata(err.to_string()))?;
            let evaluation = engine.evaluate_blocking(&spec, budget).map_err(QueryFailure::Query)?;
            Ok::<(QuerySpec, Evaluation), QueryFailure>((spec, evaluation))
        });
        evaluated.unwrap_or_else(|panicked| Err(QueryFailure::Query(QueryError::Panicked(panicked))))
    })
    .await;
    let (spec, evaluation) = match answered {
        Ok(Ok(answered)) => answered,
        Ok(Err(failure)) => return query_failure_answer(failure),
        Err(join_error) => {
            return error_answer(StatusCode::INTERNAL_SERVER_ERROR, format!("the query did not finish: {join_error}"))
        }
    };
    Json(QueryAnswer {
        metric_query: spec.query_text.clone(),
        operation_over_time: spec.operation.name(),
        window_seconds: spec.window_ms / 1000,
        value: evaluation.value.unwrap_or(0.0),
        raw_value: evaluation.value,
        matched_series: evaluation.matched_series,
    })
    .into_response()
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SeriesEntry<'a> {
    metric: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
    kind: &'static str,
    samples: usize,
    last_timestamp_ms: Option<i64>,
}

impl<'a> SeriesEntry<'a> {
    fn of(summary: &'a SeriesSummary) -> Self {
        SeriesEntry {
            metric: summary.key.metric_name(),
            labels: summary.key.labels().map(|label| (label.name, label.value)).collect(),
            kind: summary.kind.as_str(),
            samples: summary.sample_count,
            last_timestamp_ms: summary.last_timestamp_ms,
        }
    }
}

async fn series(State(state): State<AdminState>, Query(params): Query<HashMap<String, String>>) -> Response {
    let limit_max = state.config.series_list_max;
    let limit = match params.get("limit").map(|limit| limit.parse::<usize>()) {
        None => SERIES_LIST_LIMIT_DEFAULT.min(limit_max),
        Some(Ok(limit)) if (1..=limit_max).contains(&limit) => limit,
        Some(_) => {
            return bad_request(format!("`limit` must be a whole number from 1 to {limit_max} (--max-series-list)"))
        }
    };
    let permit = match state.work_permit().await {
        Ok(permit) => permit,
        Err(busy) => return busy,
    };
    let metric_name = params.get("match").map(|name| crate::store::normalize_metric_name(name));
    let limits = ListLimits { series_max: limit, key_bytes_max: state.config.series_list_bytes_max };
    let (store, telemetry) = (Arc::clone(&state.store), Arc::clone(&state.telemetry));
    // Listed first (held in memory up to `--max-series-list-bytes` of keys), so that the answer's
    // head can say whether the list is complete; then serialized a few hundred entries per
    // chunk: the JSON answer is never held whole.
    let (listed_tx, listed) = tokio::sync::oneshot::channel();
    let (chunks, body) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let streamed = panics::catch(&telemetry, PanicSite::Query, || {
            let listing = store.list_series(metric_name.as_deref(), limits);
            if listed_tx.send(listing.truncated).is_err() {
                return;
            }
            let mut chunk = Vec::with_capacity(64 * 1024);
            chunk.push(b'[');
            for (entry_idx, summary) in listing.series.iter().enumerate() {
                if entry_idx > 0 {
                    chunk.push(b',');
                }
                serde_json::to_writer(&mut chunk, &SeriesEntry::of(summary)).expect("a series entry serializes");
                if (entry_idx + 1) % SERIES_PER_CHUNK == 0
                    && chunks.blocking_send(Ok(std::mem::take(&mut chunk).into())).is_err()
                {
                    // The client went away.
                    return;
                }
            }
            chunk.push(b']');
            let _ = chunks.blocking_send(Ok(chunk.into()));
        });
        // A panic ends the body early: the client sees a truncated answer, the server goes on.
        let _ = streamed;
    });
    let Ok(truncated) = listed.await else {
        // The listing panicked (counted by the panic policy).
        return error_answer(StatusCode::INTERNAL_SERVER_ERROR, "listing the series failed".to_owned());
    };
    let stream = tokio_stream::wrappers::ReceiverStream::new(body);
    let mut response = ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response();
    if let Some(truncated) = truncated {
        // Which limit cut the list short: `series_count` (`limit`, `--max-series-list`) or
        // `key_bytes` (`--max-series-list-bytes`).
        response.headers_mut().insert(SERIES_TRUNCATED_HEADER, header::HeaderValue::from_static(truncated.as_str()));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_that_finds_no_free_slot_in_time_is_answered_503_with_retry_after() {
        let config = Config {
            admin_query_concurrency: 1,
            query_timeout: std::time::Duration::from_millis(20),
            ..Config::default()
        };
        let store = Arc::new(Store::new(config.store_config()));
        let state = AdminState::new(Arc::new(config), store, Arc::new(Telemetry::default()), Arc::default());
        let held = state.work_permit().await.expect("the one slot is free");
        let busy = state.work_permit().await.expect_err("no slot while it is held");
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        drop(held);
        assert!(state.work_permit().await.is_ok());
    }
}
