//! OTLP ingest: receivers for gRPC ([`grpc`]) and HTTP ([`http1`]), the body decoder
//! ([`decode`]) and the conversion of OTLP metrics into validated samples ([`convert`]).
//!
//! **Invariant:** when an Export call returns success, its accepted samples are in the store
//! (ingest appends synchronously before answering), so every later query sees them.

pub mod convert;
pub mod decode;
pub mod grpc;
pub mod http1;
#[cfg(test)]
mod test_support;
pub mod wire;
pub mod workers;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceRequest};

use crate::activity::ActivityHub;
use crate::config::Config;
use crate::store::{DecodedBatch, SampleBatch, Store};
use crate::telemetry::Telemetry;
use convert::{convert_request, ConvertLimits};

/// Why a point was not stored. Each reason is a value of the `reason` label of
/// `otelscale_points_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    SeriesLimit,
    OutOfOrder,
    TooOld,
    FutureTimestamp,
    NanValue,
    MissingValue,
    TooManyLabels,
    InvalidLabelName,
    LabelValueTooLong,
    InvalidMetricName,
    InvalidHistogram,
}

impl RejectReason {
    pub const ALL: [RejectReason; 11] = [
        RejectReason::SeriesLimit,
        RejectReason::OutOfOrder,
        RejectReason::TooOld,
        RejectReason::FutureTimestamp,
        RejectReason::NanValue,
        RejectReason::MissingValue,
        RejectReason::TooManyLabels,
        RejectReason::InvalidLabelName,
        RejectReason::LabelValueTooLong,
        RejectReason::InvalidMetricName,
        RejectReason::InvalidHistogram,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::SeriesLimit => "series_limit",
            RejectReason::OutOfOrder => "out_of_order",
            RejectReason::TooOld => "too_old",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::NanValue => "nan_value",
            RejectReason::MissingValue => "missing_value",
            RejectReason::TooManyLabels => "too_many_labels",
            RejectReason::InvalidLabelName => "invalid_label_name",
            RejectReason::LabelValueTooLong => "label_value_too_long",
            RejectReason::InvalidMetricName => "invalid_metric_name",
            RejectReason::InvalidHistogram => "invalid_histogram",
        }
    }

    fn explanation(self) -> &'static str {
        match self {
            RejectReason::SeriesLimit => "the series limit (--max-series) is reached, new series are refused",
            RejectReason::OutOfOrder => "timestamp older than the series' last sample",
            RejectReason::TooOld => "timestamp older than the retention window",
            RejectReason::FutureTimestamp => "timestamp too far in the future (--max-future-skew)",
            RejectReason::NanValue => "value is NaN",
            RejectReason::MissingValue => "data point has no value",
            RejectReason::TooManyLabels => "more labels than --max-labels-per-series",
            RejectReason::InvalidLabelName => "label name empty or longer than --max-label-name-bytes",
            RejectReason::LabelValueTooLong => "label value longer than --max-label-value-bytes",
            RejectReason::InvalidMetricName => "metric name empty or longer than --max-metric-name-bytes",
            RejectReason::InvalidHistogram => "histogram bucket_counts does not have explicit_bounds + 1 entries",
        }
    }
}

/// Rejected point counts by reason, for one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejections {
    counts: [u64; RejectReason::ALL.len()],
}

impl Rejections {
    pub fn add(&mut self, reason: RejectReason, n_points: u64) {
        self.counts[reason as usize] += n_points;
    }

    pub fn count(&self, reason: RejectReason) -> u64 {
        self.counts[reason as usize]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn by_reason(&self) -> impl Iterator<Item = (RejectReason, u64)> + '_ {
        RejectReason::ALL.into_iter().map(|reason| (reason, self.count(reason))).filter(|&(_, n)| n > 0)
    }

    /// One line naming each reason, e.g. `2 points rejected: 2 nan_value (value is NaN)`.
    pub fn message(&self) -> String {
        let parts: Vec<String> =
            self.by_reason().map(|(reason, n)| format!("{n} {} ({})", reason.as_str(), reason.explanation())).collect();
        format!("{} points rejected: {}", self.total(), parts.join("; "))
    }
}

/// Which receiver a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Grpc, Transport::Http];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// The result of one Export call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportOutcome {
    pub accepted_points: u64,
    pub rejections: Rejections,
}

impl ExportOutcome {
    /// The OTLP `partial_success` to answer with, if anything was rejected.
    pub fn partial_success(&self) -> Option<ExportMetricsPartialSuccess> {
        let rejected = self.rejections.total();
        (rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: i64::try_from(rejected).unwrap_or(i64::MAX),
            error_message: self.rejections.message(),
        })
    }
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
        let mut owned = SampleBatch::default();
        let mut rejections = Rejections::default();
        convert_request(request, &self.limits, now_ms, &mut owned, &mut rejections);
        self.store_batch(&DecodedBatch::from_owned(&owned), rejections, transport, now_ms)
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
