//! [`QueryEngine`]: evaluates a [`QuerySpec`] against the store now, and records how long it
//! took. The scaler and the admin API both evaluate through it.

use std::sync::Arc;
use std::time::Instant;

use super::eval::{evaluate, Evaluation};
use super::spec::QuerySpec;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Evaluates queries for the scaler and the admin API; owns nothing but shared handles.
#[derive(Debug, Clone)]
pub struct QueryEngine {
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
}

impl QueryEngine {
    pub fn new(store: Arc<Store>, telemetry: Arc<Telemetry>) -> Self {
        QueryEngine { store, telemetry }
    }

    /// Evaluates `spec` now, recording the duration.
    pub fn evaluate(&self, spec: &QuerySpec) -> Evaluation {
        let started = Instant::now();
        let evaluation =
            evaluate(&self.store, &spec.query, spec.operation.window_op(), spec.window_ms, crate::clock::now_ms());
        self.telemetry.record_query_duration(started.elapsed());
        evaluation
    }
}
