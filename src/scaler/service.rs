//! The KEDA `externalscaler.ExternalScaler` gRPC service.
//!
//! GetMetrics and IsActive evaluate the trigger's query at call time. StreamIsActive (KEDA's
//! `external-push`) sends the state at once, then again as soon as a stored change to a series
//! its query can match flips it (see [`crate::activity`]), and re-evaluates and re-sends it every
//! `--stream-resend-interval` regardless (samples leaving the window change it without a push).

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::proto::external_scaler_server::ExternalScaler;
use super::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec, MetricValue,
    ScaledObjectRef,
};
use super::registry::{KnownTrigger, TriggerRegistry};
use super::trigger::TriggerSpec;
use crate::activity::ActivityHub;
use crate::config::Config;
use crate::query::{QueryBudget, QueryEngine, QueryError};
use crate::store::Store;
use crate::telemetry::{ScalerMethod, Telemetry};

#[derive(Debug, Clone)]
pub struct ScalerService {
    engine: QueryEngine,
    telemetry: Arc<Telemetry>,
    activity: Arc<ActivityHub>,
    config: Arc<Config>,
    stream_permits: Arc<Semaphore>,
    triggers: Arc<TriggerRegistry>,
    query_budget: QueryBudget,
    /// Cancelled at shutdown: open streams end so the server can drain.
    shutdown: CancellationToken,
}

impl ScalerService {
    pub fn new(
        config: Arc<Config>,
        store: Arc<Store>,
        telemetry: Arc<Telemetry>,
        activity: Arc<ActivityHub>,
        shutdown: CancellationToken,
    ) -> Self {
        let stream_permits = Arc::new(Semaphore::new(config.streams_max));
        let engine = QueryEngine::new(store, Arc::clone(&telemetry));
        let query_budget = QueryBudget::from_config(&config);
        let triggers = Arc::new(TriggerRegistry::new(
            config.triggers_max,
            config.query_limits,
            config.retention_ms,
            Arc::clone(&telemetry),
        ));
        ScalerService { engine, telemetry, activity, config, stream_permits, triggers, query_budget, shutdown }
    }

    /// The trigger `scaled_object` names, parsed once for every call that names it.
    fn trigger(&self, scaled_object: &ScaledObjectRef) -> Result<Arc<KnownTrigger>, Status> {
        self.triggers
            .resolve(&scaled_object.namespace, &scaled_object.scaler_metadata)
            .map_err(|err| Status::invalid_argument(err.to_string()))
    }

    /// The trigger's value after clamping; 0 (or NOT_FOUND with `--no-match-is-error`) when no
    /// series matched. A query over its budget is RESOURCE_EXHAUSTED, naming the limit.
    async fn trigger_value(&self, trigger: &TriggerSpec) -> Result<f64, Status> {
        let evaluation = self.engine.evaluate(&trigger.query, self.query_budget).await.map_err(query_status)?;
        let value = match evaluation.value {
            Some(value) => value,
            None if self.config.no_match_is_error => {
                return Err(Status::not_found(format!(
                    "metricQuery `{}` matched no series with samples in the last {} s",
                    trigger.query.query_text,
                    trigger.query.window_ms / 1000
                )))
            }
            None => 0.0,
        };
        Ok(trigger.clamp(value))
    }

    async fn is_active(&self, trigger: &TriggerSpec) -> Result<bool, Status> {
        Ok(self.trigger_value(trigger).await? > trigger.activation_target_value)
    }

    fn record<T>(&self, method: ScalerMethod, result: Result<T, Status>) -> Result<T, Status> {
        self.telemetry.record_scaler_call(method, result.is_ok());
        if let Err(status) = &result {
            tracing::debug!(method = ?method, code = ?status.code(), message = status.message(), "scaler call failed");
        }
        result
    }
}

/// One open StreamIsActive stream in `otelscale_streams_open`, while it lives.
struct OpenStream<'a>(&'a Telemetry);

impl<'a> OpenStream<'a> {
    fn count(telemetry: &'a Telemetry) -> Self {
        telemetry.stream_opened();
        OpenStream(telemetry)
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.stream_closed();
    }
}

/// The gRPC status of a query that got no value.
fn query_status(error: QueryError) -> Status {
    match error {
        QueryError::Cost(_) | QueryError::Busy { .. } => Status::resource_exhausted(error.to_string()),
        QueryError::Panicked(_) => Status::internal(error.to_string()),
    }
}

/// KEDA's `int64` fields hold the ceiling of the float value.
fn ceiling_i64(value: f64) -> i64 {
    // `as` saturates at the i64 bounds.
    value.ceil() as i64
}

type IsActiveStream = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for ScalerService {
    async fn is_active(&self, request: Request<ScaledObjectRef>) -> Result<Response<IsActiveResponse>, Status> {
        let result = match self.trigger(request.get_ref()) {
            Ok(trigger) => self.is_active(&trigger.spec).await,
            Err(status) => Err(status),
        };
        let active = self.record(ScalerMethod::IsActive, result)?;
        Ok(Response::new(IsActiveResponse { result: active }))
    }

    type StreamIsActiveStream = IsActiveStream;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let scaled_object = request.into_inner();
        let opened = self.trigger(&scaled_object).and_then(|trigger| {
            let permit = Arc::clone(&self.stream_permits).try_acquire_owned().map_err(|_| {
                Status::resource_exhausted(format!(
                    "too many open StreamIsActive streams (--max-streams {})",
                    self.config.streams_max
                ))
            })?;
            Ok((trigger, permit))
        });
        let (trigger, permit) = self.record(ScalerMethod::StreamIsActive, opened)?;
        let (sender, receiver) = mpsc::channel(4);
        let watch = self.activity.watch(&trigger.spec.query.query);
        let service = self.clone();
        let resend_interval = self.config.stream_resend_interval;
        tracing::info!(
            scaled_object = %scaled_object.name,
            namespace = %scaled_object.namespace,
            metric_query = %trigger.spec.query.query_text,
            "StreamIsActive opened"
        );
        crate::panics::spawn_catching(Arc::clone(&self.telemetry), crate::outcome::PanicSite::Stream, async move {
            let _permit = permit;
            // Counted closed however the task ends, a caught panic included.
            let _open = OpenStream::count(&service.telemetry);
            let mut last_sent: Option<bool> = None;
            let mut resend_at = tokio::time::Instant::now();
            // Registered once, not once per wake: a stream is woken about once a second per
            // model, and a timer entry or a cancellation waiter per wake costs more than the query.
            let resend = tokio::time::sleep_until(resend_at);
            tokio::pin!(resend);
            let shutdown = service.shutdown.cancelled();
            tokio::pin!(shutdown);
            loop {
                // Changes stored from here on wake the stream again; earlier ones are seen now.
                watch.start_evaluation();
                service.telemetry.stream_evaluated();
                // With --no-match-is-error a stream reports "inactive" rather than closing.
                let active = service.is_active(&trigger.spec).await.unwrap_or(false);
                let now = tokio::time::Instant::now();
                if last_sent != Some(active) || now >= resend_at {
                    // A client with a zero flow-control window fills the channel: shutdown must
                    // still end the stream.
                    let sent = tokio::select! {
                        sent = sender.send(Ok(IsActiveResponse { result: active })) => sent.is_ok(),
                        () = &mut shutdown => false,
                    };
                    if !sent {
                        break;
                    }
                    service.telemetry.stream_message_sent();
                    last_sent = Some(active);
                    resend_at = now + resend_interval;
                    resend.as_mut().reset(resend_at);
                }
                tokio::select! {
                    () = watch.changed() => {},
                    () = &mut resend => {},
                    () = sender.closed() => break,
                    () = &mut shutdown => break,
                }
            }
            tracing::info!(scaled_object = %scaled_object.name, namespace = %scaled_object.namespace, "StreamIsActive closed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let result = self.trigger(request.get_ref()).map(|trigger| GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: trigger.spec.metric_name.clone(),
                target_size: ceiling_i64(trigger.spec.target_value),
                target_size_float: trigger.spec.target_value,
            }],
        });
        Ok(Response::new(self.record(ScalerMethod::GetMetricSpec, result)?))
    }

    async fn get_metrics(&self, request: Request<GetMetricsRequest>) -> Result<Response<GetMetricsResponse>, Status> {
        let request = request.into_inner();
        let result = async {
            let scaled_object = request
                .scaled_object_ref
                .as_ref()
                .ok_or_else(|| Status::invalid_argument("GetMetricsRequest.scaledObjectRef is required"))?;
            let trigger = self.trigger(scaled_object)?;
            let value = self.trigger_value(&trigger.spec).await?;
            let metric_name = if request.metric_name.is_empty() {
                trigger.spec.metric_name.clone()
            } else {
                request.metric_name.clone()
            };
            Ok(GetMetricsResponse {
                metric_values: vec![MetricValue {
                    metric_name,
                    metric_value: ceiling_i64(value),
                    metric_value_float: value,
                }],
            })
        }
        .await;
        Ok(Response::new(self.record(ScalerMethod::GetMetrics, result)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_saturates() {
        assert_eq!(ceiling_i64(1.2), 2);
        assert_eq!(ceiling_i64(-1.5), -1);
        assert_eq!(ceiling_i64(1e300), i64::MAX);
    }
}
