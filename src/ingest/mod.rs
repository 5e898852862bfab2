//! OTLP ingest: receivers for gRPC ([`grpc`]) and HTTP ([`http1`]), content encodings and
//! formats ([`decode`]), the two decoders ([`wire`], zero-copy protobuf, and [`prost_walk`], over
//! the prost types for JSON) and the one conversion policy they both feed ([`policy`]).
//!
//! **Invariant:** when an Export call returns success, its accepted samples are in the store
//! (ingest appends synchronously before answering), so every later query sees them.

pub mod decode;
pub mod grpc;
pub mod http1;
pub mod policy;
pub mod prost_walk;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
pub mod wire;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceRequest};

use crate::activity::ActivityHub;
use crate::config::Config;
use crate::outcome::PanicSite;
pub use crate::outcome::{ExportOutcome, RejectReason, Rejections, Transport};
use crate::store::{DecodedBatch, Store};
use crate::telemetry::Telemetry;
use policy::ConvertLimits;
use prost_walk::convert_request;

/// The OTLP `partial_success` to answer with, if anything was rejected.
pub fn partial_success(outcome: &ExportOutcome) -> Option<ExportMetricsPartialSuccess> {
    let rejected = outcome.rejections.total();
    (rejected > 0).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: i64::try_from(rejected).unwrap_or(i64::MAX),
        error_message: outcome.rejections.message(),
    })
}

/// Uncompressed bodies up to this size are decoded on the thread that received them: a handful
/// of points costs less than the hand-off to the ingest workers (and a latency probe is small).
/// Compressed bodies always go to the workers, whatever their size: what they inflate to is
/// known only by inflating them.
pub const INLINE_BODY_BYTES_MAX: usize = 8 * 1024;

/// Why an export request failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Decode(#[from] decode::DecodeError),
    /// Decoding or appending panicked (a bug). It was caught; what the request had appended
    /// before the panic stays, and the store is consistent.
    #[error("internal error while decoding the request: {0}")]
    Worker(String),
    /// The ingest queue stayed full for `--ingest-queue-wait`: retryable, nothing was stored.
    #[error(
        "the server is overloaded: the ingest queue stayed full for {waited:?} (--ingest-queue-wait); retry later"
    )]
    Overloaded { waited: Duration, retry_after: Duration },
    /// The request's deadline passed before it was decoded: nothing was stored.
    #[error("the request's deadline passed before it was decoded; nothing was stored")]
    DeadlinePassed,
}

impl ExportError {
    fn from_run(err: workers::RunError, retry_after: Duration) -> ExportError {
        match err {
            workers::RunError::QueueFull { waited } => ExportError::Overloaded { waited, retry_after },
            workers::RunError::DeadlinePassed => ExportError::DeadlinePassed,
            workers::RunError::Panicked(caught) => ExportError::Worker(caught.to_string()),
            workers::RunError::Stopped => ExportError::Worker(err.to_string()),
        }
    }
}

/// Validates, converts and stores export requests; shared by both receivers.
#[derive(Debug)]
pub struct Ingestor {
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    activity: Arc<ActivityHub>,
    limits: ConvertLimits,
    request_bytes_max: usize,
    /// What an overloaded answer tells the client to wait before retrying.
    retry_after: Duration,
    workers: workers::IngestWorkers,
}

impl Ingestor {
    pub fn new(config: &Config, store: Arc<Store>, telemetry: Arc<Telemetry>, activity: Arc<ActivityHub>) -> Self {
        let limits = ConvertLimits::from_config(config);
        // Four queued bodies per worker keep the workers busy; beyond that callers wait.
        let workers = workers::IngestWorkers::start(
            config.ingest_worker_count,
            4 * config.ingest_worker_count,
            config.ingest_queue_wait,
            Arc::clone(&telemetry),
        );
        // A second, or the queue wait when longer, rounded up to whole seconds (Retry-After).
        let retry_after = Duration::from_secs(config.ingest_queue_wait.as_secs_f64().ceil().max(1.0) as u64);
        Ingestor {
            store,
            telemetry,
            activity,
            limits,
            request_bytes_max: config.request_bytes_max,
            retry_after,
            workers,
        }
    }

    pub fn request_bytes_max(&self) -> usize {
        self.request_bytes_max
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Decompresses (when `content_encoding` says so), decodes and stores a request body, on the
    /// calling thread. The receivers call [`Ingestor::export_body`]; a runtime that owns its core
    /// (io_uring) calls this directly.
    pub fn ingest_body(
        &self,
        body: bytes::Bytes,
        content_encoding: Option<&str>,
        format: decode::PayloadFormat,
        transport: Transport,
    ) -> Result<ExportOutcome, ExportError> {
        let body = decode::decompress(body, content_encoding, self.request_bytes_max)?;
        if format == decode::PayloadFormat::Json {
            let request = decode::decode_request(&body, format)?;
            return Ok(self.export(&request, transport));
        }
        let now_ms = crate::clock::now_ms();
        let mut batch = DecodedBatch::new();
        let mut rejections = Rejections::default();
        match wire::decode_request(&body, &self.limits, now_ms, &mut batch, &mut rejections) {
            Ok(()) => Ok(self.store_batch(&batch, rejections, transport, now_ms)),
            Err(wire::WireError::NonCanonical { message }) => {
                tracing::debug!(field = message, "non-canonical OTLP encoding: decoding with the prost types");
                let request = decode::decode_request(&body, format)?;
                Ok(self.export(&request, transport))
            }
            Err(err) => Err(ExportError::Decode(decode::DecodeError::Protobuf(err))),
        }
    }

    /// [`Ingestor::ingest_body`] for the receivers, with no deadline.
    pub async fn export_body(
        self: &Arc<Self>,
        body: bytes::Bytes,
        content_encoding: Option<String>,
        format: decode::PayloadFormat,
        transport: Transport,
    ) -> Result<ExportOutcome, ExportError> {
        self.export_body_until(body, content_encoding, format, transport, None).await
    }

    /// [`Ingestor::ingest_body`] for the receivers (gRPC, epoll and io_uring HTTP).
    ///
    /// Compressed bodies, and uncompressed ones over [`INLINE_BODY_BYTES_MAX`], are inflated,
    /// decoded and appended on the low-priority ingest workers, not on the receiving thread: a
    /// 1,000-point batch takes about a millisecond to decode, and on an async worker it would delay
    /// every GetMetrics and StreamIsActive answer queued behind it (measured in
    /// perf-reports/2026-11-30-baseline.md and -dataplane.md); a small compressed body may inflate
    /// to `--max-request-bytes`. When the workers' queue stays full for `--ingest-queue-wait` the
    /// answer is [`ExportError::Overloaded`]; when `deadline` passes (or this future is dropped)
    /// before a worker takes the body, it is dropped undecoded. A panic, inline or on a worker,
    /// is caught and answered as [`ExportError::Worker`].
    pub async fn export_body_until(
        self: &Arc<Self>,
        body: bytes::Bytes,
        content_encoding: Option<String>,
        format: decode::PayloadFormat,
        transport: Transport,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<ExportOutcome, ExportError> {
        if decode::is_identity(content_encoding.as_deref()) && body.len() <= INLINE_BODY_BYTES_MAX {
            return crate::panics::catch(&self.telemetry, PanicSite::IngestInline, || {
                self.ingest_body(body, content_encoding.as_deref(), format, transport)
            })
            .map_err(|caught| ExportError::Worker(caught.to_string()))?;
        }
        let ingestor = Arc::clone(self);
        self.workers
            .run(deadline, move || ingestor.ingest_body(body, content_encoding.as_deref(), format, transport))
            .await
            .map_err(|err| ExportError::from_run(err, self.retry_after))?
    }

    /// Stores what is valid in an already decoded `request` (the JSON path, and protobuf requests
    /// in a non-canonical encoding), counts the rest, and wakes the streams that watch the
    /// metrics it touched. Returns after the samples are visible to queries.
    pub fn export(&self, request: &ExportMetricsServiceRequest, transport: Transport) -> ExportOutcome {
        let now_ms = crate::clock::now_ms();
        let mut batch = DecodedBatch::new();
        let mut rejections = Rejections::default();
        convert_request(request, &self.limits, now_ms, &mut batch, &mut rejections);
        self.store_batch(&batch, rejections, transport, now_ms)
    }

    /// Appends a decoded batch, adds the store's rejections, notifies streams, counts.
    fn store_batch(
        &self,
        batch: &DecodedBatch<'_>,
        mut rejections: Rejections,
        transport: Transport,
        now_ms: i64,
    ) -> ExportOutcome {
        let appended = self.store.append_decoded(batch, now_ms);
        rejections.add(RejectReason::SeriesLimit, appended.rejected_series_limit);
        rejections.add(RejectReason::MetricSeriesLimit, appended.rejected_metric_series_limit);
        rejections.add(RejectReason::StoreBytesLimit, appended.rejected_store_bytes);
        rejections.add(RejectReason::OutOfOrder, appended.rejected_out_of_order);
        rejections.add(RejectReason::TooOld, appended.rejected_too_old);
        if appended.appended > 0 {
            self.activity.notify_batch(batch);
        }
        let outcome = ExportOutcome { accepted_points: appended.appended, rejections };
        self.telemetry.record_export(transport, &outcome);
        if outcome.rejections.total() > 0 {
            tracing::debug!(
                transport = transport.as_str(),
                accepted = outcome.accepted_points,
                rejected = outcome.rejections.total(),
                reasons = %outcome.rejections.message(),
                "export partially rejected"
            );
        }
        outcome
    }
}
