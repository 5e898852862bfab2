//! The server's own metrics, rendered in the Prometheus text format on the admin port.
//!
//! Counters are plain atomics indexed by small enums (no label strings on the hot path);
//! they are incremented once per request or batch, never per point.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::ingest::{ExportOutcome, RejectReason, Transport};
use crate::store::Store;

/// How an OTLP request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Ok,
    PartialSuccess,
    Invalid,
    TooLarge,
    Unsupported,
    Failed,
}

impl RequestOutcome {
    const ALL: [RequestOutcome; 6] = [
        RequestOutcome::Ok,
        RequestOutcome::PartialSuccess,
        RequestOutcome::Invalid,
        RequestOutcome::TooLarge,
        RequestOutcome::Unsupported,
        RequestOutcome::Failed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::PartialSuccess => "partial_success",
            RequestOutcome::Invalid => "invalid",
            RequestOutcome::TooLarge => "too_large",
            RequestOutcome::Unsupported => "unsupported",
            RequestOutcome::Failed => "failed",
        }
    }

    pub fn from_grpc_code(code: tonic::Code) -> Self {
        match code {
            tonic::Code::Ok => RequestOutcome::Ok,
            tonic::Code::InvalidArgument => RequestOutcome::Invalid,
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange => RequestOutcome::TooLarge,
            tonic::Code::Unimplemented => RequestOutcome::Unsupported,
            _ => RequestOutcome::Failed,
        }
    }
}

/// The KEDA external scaler methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalerMethod {
    IsActive,
    StreamIsActive,
    GetMetricSpec,
    GetMetrics,
}

impl ScalerMethod {
    const ALL: [ScalerMethod; 4] =
        [ScalerMethod::IsActive, ScalerMethod::StreamIsActive, ScalerMethod::GetMetricSpec, ScalerMethod::GetMetrics];

    fn as_str(self) -> &'static str {
        match self {
            ScalerMethod::IsActive => "IsActive",
            ScalerMethod::StreamIsActive => "StreamIsActive",
            ScalerMethod::GetMetricSpec => "GetMetricSpec",
            ScalerMethod::GetMetrics => "GetMetrics",
        }
    }
}

/// Upper bounds of the query duration histogram, in seconds.
const QUERY_DURATION_BUCKETS_S: [f64; 12] =
    [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];

#[derive(Debug, Default)]
struct DurationHistogram {
    bucket_counts: [AtomicU64; QUERY_DURATION_BUCKETS_S.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl DurationHistogram {
    fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(bucket_idx) = QUERY_DURATION_BUCKETS_S.iter().position(|&bound| seconds <= bound) {
            self.bucket_counts[bucket_idx].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct Telemetry {
    points_received: [AtomicU64; Transport::ALL.len()],
    points_rejected: [AtomicU64; RejectReason::ALL.len()],
    requests: [[AtomicU64; RequestOutcome::ALL.len()]; Transport::ALL.len()],
    scaler_calls_ok: [AtomicU64; ScalerMethod::ALL.len()],
    scaler_calls_failed: [AtomicU64; ScalerMethod::ALL.len()],
    query_duration: DurationHistogram,
    streams_open: AtomicI64,
    stream_messages_sent: AtomicU64,
    series_expired: AtomicU64,
    snapshots: SnapshotTelemetry,
}

/// What the snapshot writer and the restore at start-up report.
#[derive(Debug, Default)]
struct SnapshotTelemetry {
    written: AtomicU64,
    failures: AtomicU64,
    last_duration_ns: AtomicU64,
    last_bytes: AtomicU64,
    /// Unix ms of the last successful write; 0 before the first.
    last_success_unix_ms: AtomicI64,
    restore_duration_ns: AtomicU64,
    restored_series: AtomicU64,
}

impl Telemetry {
    pub fn record_export(&self, transport: Transport, outcome: &ExportOutcome) {
        let rejected = outcome.rejections.total();
        self.points_received[transport as usize].fetch_add(outcome.accepted_points + rejected, Ordering::Relaxed);
        for (reason, n_points) in outcome.rejections.by_reason() {
            self.points_rejected[reason as usize].fetch_add(n_points, Ordering::Relaxed);
        }
        let request_outcome = if rejected > 0 { RequestOutcome::PartialSuccess } else { RequestOutcome::Ok };
        self.record_request(transport, request_outcome);
    }

    pub fn record_request(&self, transport: Transport, outcome: RequestOutcome) {
        self.requests[transport as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_scaler_call(&self, method: ScalerMethod, succeeded: bool) {
        let counters = if succeeded { &self.scaler_calls_ok } else { &self.scaler_calls_failed };
        counters[method as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_query_duration(&self, duration: Duration) {
        self.query_duration.observe(duration);
    }

    pub fn stream_opened(&self) {
        self.streams_open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stream_closed(&self) {
        self.streams_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn streams_open(&self) -> i64 {
        self.streams_open.load(Ordering::Relaxed)
    }

    pub fn stream_message_sent(&self) {
        self.stream_messages_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn series_expired(&self, n_series: usize) {
        self.series_expired.fetch_add(n_series as u64, Ordering::Relaxed);
    }

    pub fn snapshot_written(&self, duration: Duration, bytes: u64, finished_unix_ms: i64) {
        let snapshots = &self.snapshots;
        snapshots.written.fetch_add(1, Ordering::Relaxed);
        snapshots.last_duration_ns.store(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        snapshots.last_bytes.store(bytes, Ordering::Relaxed);
        snapshots.last_success_unix_ms.store(finished_unix_ms, Ordering::Relaxed);
    }

    pub fn snapshot_failed(&self) {
        self.snapshots.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot_restored(&self, duration: Duration, series: u64) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.snapshots.restore_duration_ns.store(nanos, Ordering::Relaxed);
        self.snapshots.restored_series.store(series, Ordering::Relaxed);
    }

    pub fn points_rejected(&self, reason: RejectReason) -> u64 {
        self.points_rejected[reason as usize].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render_prometheus(&self, store: &Store) -> String {
        let mut out = String::with_capacity(4096);
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);

        header(&mut out, "otelscale_points_received_total", "counter", "Points received over OTLP, accepted or not.");
        for transport in Transport::ALL {
            let n = load(&self.points_received[transport as usize]);
            let _ = writeln!(out, "otelscale_points_received_total{{transport=\"{}\"}} {n}", transport.as_str());
        }
        header(&mut out, "otelscale_points_rejected_total", "counter", "Points not stored, by reason.");
        for reason in RejectReason::ALL {
            let n = load(&self.points_rejected[reason as usize]);
            let _ = writeln!(out, "otelscale_points_rejected_total{{reason=\"{}\"}} {n}", reason.as_str());
        }
        header(&mut out, "otelscale_requests_total", "counter", "OTLP export requests, by transport and outcome.");
        for transport in Transport::ALL {
            for outcome in RequestOutcome::ALL {
                let n = load(&self.requests[transport as usize][outcome as usize]);
                let _ = writeln!(
                    out,
                    "otelscale_requests_total{{transport=\"{}\",outcome=\"{}\"}} {n}",
                    transport.as_str(),
                    outcome.as_str()
                );
            }
        }
        header(
            &mut out,
            "otelscale_scaler_requests_total",
            "counter",
            "KEDA external scaler calls, by method and outcome.",
        );
        for method in ScalerMethod::ALL {
            for (outcome, counters) in [("ok", &self.scaler_calls_ok), ("error", &self.scaler_calls_failed)] {
                let n = load(&counters[method as usize]);
                let _ = writeln!(
                    out,
                    "otelscale_scaler_requests_total{{method=\"{}\",outcome=\"{outcome}\"}} {n}",
                    method.as_str()
                );
            }
        }
        header(&mut out, "otelscale_query_duration_seconds", "histogram", "Time to evaluate one metricQuery.");
        let mut cumulative = 0;
        for (bound, bucket) in QUERY_DURATION_BUCKETS_S.iter().zip(&self.query_duration.bucket_counts) {
            cumulative += load(bucket);
            let _ = writeln!(out, "otelscale_query_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = load(&self.query_duration.count);
        let _ = writeln!(out, "otelscale_query_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum_s = load(&self.query_duration.sum_ns) as f64 / 1e9;
        let _ = writeln!(out, "otelscale_query_duration_seconds_sum {sum_s}");
        let _ = writeln!(out, "otelscale_query_duration_seconds_count {count}");

        header(&mut out, "otelscale_streams_open", "gauge", "Open StreamIsActive streams.");
        let _ = writeln!(out, "otelscale_streams_open {}", self.streams_open());
        header(&mut out, "otelscale_stream_messages_sent_total", "counter", "IsActive messages sent on streams.");
        let _ = writeln!(out, "otelscale_stream_messages_sent_total {}", load(&self.stream_messages_sent));
        header(&mut out, "otelscale_series", "gauge", "Series held in memory.");
        let _ = writeln!(out, "otelscale_series {}", store.series_count());
        header(&mut out, "otelscale_series_expired_total", "counter", "Series removed by retention.");
        let _ = writeln!(out, "otelscale_series_expired_total {}", load(&self.series_expired));
        header(&mut out, "otelscale_store_heap_bytes", "gauge", "Estimated heap bytes held by the store.");
        let _ = writeln!(out, "otelscale_store_heap_bytes {}", store.heap_bytes());

        let snapshots = &self.snapshots;
        header(&mut out, "otelscale_snapshots_written_total", "counter", "Snapshots written completely.");
        let _ = writeln!(out, "otelscale_snapshots_written_total {}", load(&snapshots.written));
        header(&mut out, "otelscale_snapshot_failures_total", "counter", "Snapshot writes that failed.");
        let _ = writeln!(out, "otelscale_snapshot_failures_total {}", load(&snapshots.failures));
        header(&mut out, "otelscale_snapshot_duration_seconds", "gauge", "Time the last successful snapshot took.");
        let _ = writeln!(out, "otelscale_snapshot_duration_seconds {}", load(&snapshots.last_duration_ns) as f64 / 1e9);
        header(&mut out, "otelscale_snapshot_bytes", "gauge", "Size of the last successful snapshot file.");
        let _ = writeln!(out, "otelscale_snapshot_bytes {}", load(&snapshots.last_bytes));
        header(
            &mut out,
            "otelscale_snapshot_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful snapshot (0: none yet).",
        );
        let last_success_s = snapshots.last_success_unix_ms.load(Ordering::Relaxed) as f64 / 1e3;
        let _ = writeln!(out, "otelscale_snapshot_last_success_timestamp_seconds {last_success_s}");
        header(
            &mut out,
            "otelscale_snapshot_restore_duration_seconds",
            "gauge",
            "Time the start-up restore took (0: nothing restored).",
        );
        let restore_s = load(&snapshots.restore_duration_ns) as f64 / 1e9;
        let _ = writeln!(out, "otelscale_snapshot_restore_duration_seconds {restore_s}");
        header(&mut out, "otelscale_snapshot_restored_series", "gauge", "Series restored from a snapshot at start-up.");
        let _ = writeln!(out, "otelscale_snapshot_restored_series {}", load(&snapshots.restored_series));
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}
