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
pub mod wire;
pub mod workers;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceRequest};

use crate::activity::ActivityHub;
use crate::config::Config;
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

/// Bodies up to this size are decoded on the async worker that received them: a handful of
/// points costs less than the hand-off to the ingest workers (and a latency probe is small).
const INLINE_BODY_BYTES_MAX: usize = 8 * 1024;

/// Why an export request failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Decode(#[from] decode::DecodeError),
    /// The decode task did not finish (a bug: it panicked). Nothing of the request was stored.
    #[error("internal error while decoding the request: {0}")]
    Worker(String),
}

/// Validates, converts and stores export requests; shared by both receivers.
#[derive(Debug)]
pub struct Ingestor {
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    activity: Arc<ActivityHub>,
    limits: ConvertLimits,
    request_bytes_max: usize,
    workers: workers::IngestWorkers,
}

impl Ingestor {
    pub fn new(config: &Config, store: Arc<Store>, telemetry: Arc<Telemetry>, activity: Arc<ActivityHub>) -> Self {
        let limits = ConvertLimits::from_config(config);
        // Four queued bodies per worker keep the workers busy; beyond that callers wait.
        let workers = workers::IngestWorkers::start(config.ingest_worker_count, 4 * config.ingest_worker_count);
        Ingestor { store, telemetry, activity, limits, request_bytes_max: config.request_bytes_max, workers }
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

    /// [`Ingestor::ingest_body`] for the async receivers.
    ///
    /// Bodies over [`INLINE_BODY_BYTES_MAX`] go to the low-priority ingest workers, not the async
    /// workers: a 1,000-point batch takes about a millisecond to decode, and on an async worker it
    /// would delay every GetMetrics and StreamIsActive answer queued behind it (measured in
    /// perf-reports/2026-11-30-baseline.md and -dataplane.md).
    pub async fn export_body(
        self: &Arc<Self>,
        body: bytes::Bytes,
        content_encoding: Option<String>,
        format: decode::PayloadFormat,
        transport: Transport,
    ) -> Result<ExportOutcome, ExportError> {
        if body.len() <= INLINE_BODY_BYTES_MAX {
            return self.ingest_body(body, content_encoding.as_deref(), format, transport);
        }
        let ingestor = Arc::clone(self);
        self.workers
            .run(move || ingestor.ingest_body(body, content_encoding.as_deref(), format, transport))
            .await
            .map_err(|stopped| ExportError::Worker(stopped.to_string()))?
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
        rejections.add(RejectReason::OutOfOrder, appended.rejected_out_of_order);
        rejections.add(RejectReason::TooOld, appended.rejected_too_old);
        if appended.appended > 0 {
            self.activity.notify(&batch.metric_names());
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
