//! Admin HTTP: `/healthz`, `/readyz`, `/metrics` (Prometheus text) and the debug API
//! `/api/v1/query` and `/api/v1/series`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::config::Config;
use crate::query::{QueryEngine, QuerySpec};
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Most series `/api/v1/series` lists when no `limit` is given, and the largest `limit`.
const SERIES_LIST_LIMIT_DEFAULT: usize = 1_000;
const SERIES_LIST_LIMIT_MAX: usize = 100_000;

#[derive(Debug, Clone)]
pub struct AdminState {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub telemetry: Arc<Telemetry>,
    pub engine: QueryEngine,
    /// Set once every listener serves.
    pub ready: Arc<AtomicBool>,
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

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(ErrorAnswer { error: message })).into_response()
}

async fn query(State(state): State<AdminState>, Query(params): Query<HashMap<String, String>>) -> Response {
    let spec = match QuerySpec::from_metadata(&params, &state.config.query_limits, state.config.retention_ms) {
        Ok(spec) => spec,
        Err(err) => return bad_request(err.to_string()),
    };
    let evaluation = state.engine.evaluate(&spec);
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
struct SeriesEntry {
    metric: String,
    labels: BTreeMap<String, String>,
    kind: &'static str,
    samples: usize,
    last_timestamp_ms: Option<i64>,
}

async fn series(State(state): State<AdminState>, Query(params): Query<HashMap<String, String>>) -> Response {
    let limit = match params.get("limit").map(|limit| limit.parse::<usize>()) {
        None => SERIES_LIST_LIMIT_DEFAULT,
        Some(Ok(limit)) if (1..=SERIES_LIST_LIMIT_MAX).contains(&limit) => limit,
        Some(_) => return bad_request(format!("`limit` must be a whole number from 1 to {SERIES_LIST_LIMIT_MAX}")),
    };
    let metric_name = params.get("match").map(|name| crate::store::normalize_metric_name(name));
    let listed = state.store.list_series(metric_name.as_deref(), limit);
    let entries: Vec<SeriesEntry> = listed
        .into_iter()
        .map(|summary| SeriesEntry {
            metric: summary.key.metric_name().to_owned(),
            labels: summary.key.labels().map(|l| (l.name.to_owned(), l.value.to_owned())).collect(),
            kind: summary.kind.as_str(),
            samples: summary.sample_count,
            last_timestamp_ms: summary.last_timestamp_ms,
        })
        .collect();
    Json(entries).into_response()
}
