//! The words ingest and telemetry share: which receiver a request came through, why a point
//! was not stored, what one export did, how an OTLP request ended, and where a panic was caught. A leaf module: it depends
//! on nothing of the crate, so ingest can record into telemetry and telemetry can name ingest's
//! outcomes without either importing the other.

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
    SeriesKeyTooLarge,
    StoreBytesLimit,
    MetricSeriesLimit,
}

impl RejectReason {
    pub const ALL: [RejectReason; 14] = [
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
        RejectReason::SeriesKeyTooLarge,
        RejectReason::StoreBytesLimit,
        RejectReason::MetricSeriesLimit,
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
            RejectReason::SeriesKeyTooLarge => "series_key_too_large",
            RejectReason::StoreBytesLimit => "store_bytes_limit",
            RejectReason::MetricSeriesLimit => "metric_series_limit",
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
            RejectReason::SeriesKeyTooLarge => {
                "metric name plus label names and values longer than --max-series-key-bytes"
            }
            RejectReason::StoreBytesLimit => {
                "the store's memory limit (--max-store-bytes) is reached, new series and chunks are refused"
            }
            RejectReason::MetricSeriesLimit => {
                "the metric has --max-series-per-metric series, its new series are refused"
            }
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

/// How an OTLP request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Ok,
    PartialSuccess,
    Invalid,
    TooLarge,
    Unsupported,
    /// Refused as retryable: the ingest queue stayed full for `--ingest-queue-wait`.
    Overloaded,
    Failed,
}

impl RequestOutcome {
    pub const ALL: [RequestOutcome; 7] = [
        RequestOutcome::Ok,
        RequestOutcome::PartialSuccess,
        RequestOutcome::Invalid,
        RequestOutcome::TooLarge,
        RequestOutcome::Unsupported,
        RequestOutcome::Overloaded,
        RequestOutcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::PartialSuccess => "partial_success",
            RequestOutcome::Invalid => "invalid",
            RequestOutcome::TooLarge => "too_large",
            RequestOutcome::Unsupported => "unsupported",
            RequestOutcome::Overloaded => "overloaded",
            RequestOutcome::Failed => "failed",
        }
    }
}

/// Where a panic was caught (the `site` label of `otelscale_panics_total`). Every worker and
/// handler boundary catches panics, counts them here, answers its request with an internal error
/// and keeps serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicSite {
    /// Decoding or appending a body on an ingest worker thread.
    IngestWorker,
    /// Decoding or appending a body inline (small bodies, the io_uring back-end).
    IngestInline,
    /// An OTLP/gRPC, scaler or admin request handler.
    Handler,
    /// An admin or scaler query evaluation.
    Query,
    /// A StreamIsActive stream task.
    Stream,
    /// Any other background task (retention, snapshots, self-export).
    Background,
}

impl PanicSite {
    pub const ALL: [PanicSite; 6] = [
        PanicSite::IngestWorker,
        PanicSite::IngestInline,
        PanicSite::Handler,
        PanicSite::Query,
        PanicSite::Stream,
        PanicSite::Background,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PanicSite::IngestWorker => "ingest_worker",
            PanicSite::IngestInline => "ingest_inline",
            PanicSite::Handler => "handler",
            PanicSite::Query => "query",
            PanicSite::Stream => "stream",
            PanicSite::Background => "background",
        }
    }
}
