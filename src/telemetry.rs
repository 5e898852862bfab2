//! The server's own metrics: recorded here, listed once as [`MetricFamily`] values, and rendered
//! from that list in the Prometheus text format on the admin port (`/metrics`) and as OTLP by
//! [`crate::self_export`].
//!
//! Counters are plain atomics indexed by small enums (no label strings on the hot path);
//! they are incremented once per request or batch, never per point.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::outcome::{ExportOutcome, PanicSite, RejectReason, RequestOutcome, Transport};
use crate::store::Store;

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
    stream_evaluations: AtomicU64,
    triggers_known: AtomicI64,
    trigger_parses: AtomicU64,
    series_expired: AtomicU64,
    snapshots: SnapshotTelemetry,
    self_exports: AtomicU64,
    self_export_failures: AtomicU64,
    panics: [AtomicU64; PanicSite::ALL.len()],
    ingest_abandoned: AtomicU64,
    ingest_jobs: AtomicI64,
    started_at: StartTime,
}

/// When the counters of a [`Telemetry`] started from zero: its creation.
#[derive(Debug)]
struct StartTime(SystemTime);

impl Default for StartTime {
    fn default() -> Self {
        StartTime(SystemTime::now())
    }
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

    /// Requests counted with `outcome` on `transport`.
    pub fn requests(&self, transport: Transport, outcome: RequestOutcome) -> u64 {
        self.requests[transport as usize][outcome as usize].load(Ordering::Relaxed)
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

    /// Triggers the registry holds now.
    pub fn set_triggers_known(&self, known: usize) {
        self.triggers_known.store(i64::try_from(known).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Trigger metadata parsed (a call whose trigger the registry did not know).
    pub fn trigger_parsed(&self) {
        self.trigger_parses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn trigger_parses(&self) -> u64 {
        self.trigger_parses.load(Ordering::Relaxed)
    }

    pub fn streams_open(&self) -> i64 {
        self.streams_open.load(Ordering::Relaxed)
    }

    pub fn stream_evaluated(&self) {
        self.stream_evaluations.fetch_add(1, Ordering::Relaxed);
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

    /// A panic was caught at `site` (the request got an internal error; the worker lives on).
    pub fn record_panic(&self, site: PanicSite) {
        self.panics[site as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn panics(&self, site: PanicSite) -> u64 {
        self.panics[site as usize].load(Ordering::Relaxed)
    }

    /// A queued ingest job was dropped before decoding: its client had gone.
    pub fn record_ingest_abandoned(&self) {
        self.ingest_abandoned.fetch_add(1, Ordering::Relaxed);
    }

    pub fn ingest_abandoned(&self) -> u64 {
        self.ingest_abandoned.load(Ordering::Relaxed)
    }

    /// An export request took (`+1`) or gave back (`-1`) a slot of the ingest workers' queue.
    pub fn ingest_jobs_add(&self, delta: i64) {
        self.ingest_jobs.fetch_add(delta, Ordering::Relaxed);
    }

    /// Export requests queued for or running on the ingest workers.
    pub fn ingest_jobs(&self) -> i64 {
        self.ingest_jobs.load(Ordering::Relaxed)
    }

    pub fn points_rejected(&self, reason: RejectReason) -> u64 {
        self.points_rejected[reason as usize].load(Ordering::Relaxed)
    }

    /// One push of `--self-otlp-endpoint` ended.
    pub fn record_self_export(&self, succeeded: bool) {
        let counter = if succeeded { &self.self_exports } else { &self.self_export_failures };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// When the counters started from zero (the start time of every cumulative OTLP point).
    pub fn started_at(&self) -> SystemTime {
        self.started_at.0
    }

    /// The Prometheus text exposition of every metric.
    pub fn render_prometheus(&self, store: &Store) -> String {
        prometheus_text(&self.metric_families(store))
    }

    /// Every metric with its current values, in `/metrics` order: the one list both the
    /// Prometheus text and the OTLP self-export are made from.
    pub fn metric_families(&self, store: &Store) -> Vec<MetricFamily> {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let seconds = |nanos: &AtomicU64| GaugeValue::Float(load(nanos) as f64 / 1e9);
        let mut families = Vec::with_capacity(32);

        families.push(MetricFamily::counter(
            "otelscale_points_received_total",
            "Points received over OTLP, accepted or not.",
            Transport::ALL
                .iter()
                .map(|&transport| {
                    Point::new(vec![("transport", transport.as_str())], load(&self.points_received[transport as usize]))
                })
                .collect(),
        ));
        families.push(MetricFamily::counter(
            "otelscale_points_rejected_total",
            "Points not stored, by reason.",
            RejectReason::ALL
                .iter()
                .map(|&reason| Point::new(vec![("reason", reason.as_str())], self.points_rejected(reason)))
                .collect(),
        ));
        families.push(MetricFamily::counter(
            "otelscale_requests_total",
            "OTLP export requests, by transport and outcome.",
            Transport::ALL
                .iter()
                .flat_map(|&transport| {
                    RequestOutcome::ALL.iter().map(move |&outcome| {
                        let labels = vec![("transport", transport.as_str()), ("outcome", outcome.as_str())];
                        Point::new(labels, load(&self.requests[transport as usize][outcome as usize]))
                    })
                })
                .collect(),
        ));
        families.push(MetricFamily::counter(
            "otelscale_scaler_requests_total",
            "KEDA external scaler calls, by method and outcome.",
            ScalerMethod::ALL
                .iter()
                .flat_map(|&method| {
                    [("ok", &self.scaler_calls_ok), ("error", &self.scaler_calls_failed)].into_iter().map(
                        move |(outcome, counters)| {
                            let labels = vec![("method", method.as_str()), ("outcome", outcome)];
                            Point::new(labels, load(&counters[method as usize]))
                        },
                    )
                })
                .collect(),
        ));
        let query_duration = &self.query_duration;
        families.push(MetricFamily {
            name: "otelscale_query_duration_seconds",
            help: "Time to evaluate one metricQuery.",
            data: MetricData::Histogram(vec![Point::new(
                Vec::new(),
                Histogram::from_finite_buckets(
                    &QUERY_DURATION_BUCKETS_S,
                    query_duration.bucket_counts.iter().map(load),
                    load(&query_duration.count),
                    load(&query_duration.sum_ns) as f64 / 1e9,
                ),
            )]),
        });

        families.push(MetricFamily::gauge(
            "otelscale_streams_open",
            "Open StreamIsActive streams.",
            GaugeValue::Int(self.streams_open()),
        ));
        families.push(MetricFamily::counter_value(
            "otelscale_stream_messages_sent_total",
            "IsActive messages sent on streams.",
            load(&self.stream_messages_sent),
        ));
        families.push(MetricFamily::counter_value(
            "otelscale_stream_evaluations_total",
            "Evaluations by StreamIsActive streams (on open, on a change they watch, at each resend).",
            load(&self.stream_evaluations),
        ));
        families.push(MetricFamily::gauge(
            "otelscale_triggers_known",
            "Distinct triggers (namespace and metadata) held parsed.",
            GaugeValue::Int(self.triggers_known.load(Ordering::Relaxed)),
        ));
        families.push(MetricFamily::counter_value(
            "otelscale_trigger_parses_total",
            "Trigger metadata parsed: scaler calls whose trigger was not known yet (or not valid).",
            load(&self.trigger_parses),
        ));
        families.push(MetricFamily::gauge(
            "otelscale_series",
            "Series held in memory.",
            GaugeValue::from_count(store.series_count() as u64),
        ));
        families.push(MetricFamily::counter_value(
            "otelscale_series_expired_total",
            "Series removed by retention.",
            load(&self.series_expired),
        ));
        families.push(MetricFamily::gauge(
            "otelscale_store_heap_bytes",
            "Estimated heap bytes held by the store.",
            GaugeValue::from_count(store.heap_bytes() as u64),
        ));

        let snapshots = &self.snapshots;
        families.push(MetricFamily::counter_value(
            "otelscale_snapshots_written_total",
            "Snapshots written completely.",
            load(&snapshots.written),
        ));
        families.push(MetricFamily::counter_value(
            "otelscale_snapshot_failures_total",
            "Snapshot writes that failed.",
            load(&snapshots.failures),
        ));
        families.push(MetricFamily::gauge(
            "otelscale_snapshot_duration_seconds",
            "Time the last successful snapshot took.",
            seconds(&snapshots.last_duration_ns),
        ));
        families.push(MetricFamily::gauge(
            "otelscale_snapshot_bytes",
            "Size of the last successful snapshot file.",
            GaugeValue::from_count(load(&snapshots.last_bytes)),
        ));
        families.push(MetricFamily::gauge(
            "otelscale_snapshot_last_success_timestamp_seconds",
            "Unix time of the last successful snapshot (0: none yet).",
            GaugeValue::Float(snapshots.last_success_unix_ms.load(Ordering::Relaxed) as f64 / 1e3),
        ));
        families.push(MetricFamily::gauge(
            "otelscale_snapshot_restore_duration_seconds",
            "Time the start-up restore took (0: nothing restored).",
            seconds(&snapshots.restore_duration_ns),
        ));
        families.push(MetricFamily::gauge(
            "otelscale_snapshot_restored_series",
            "Series restored from a snapshot at start-up.",
            GaugeValue::from_count(load(&snapshots.restored_series)),
        ));

        families.push(MetricFamily::counter(
            "otelscale_panics_total",
            "Panics caught at a worker or handler boundary, by site (each answered as an internal error).",
            PanicSite::ALL.iter().map(|&site| Point::new(vec![("site", site.as_str())], self.panics(site))).collect(),
        ));
        families.push(MetricFamily::counter_value(
            "otelscale_ingest_abandoned_total",
            "Queued export requests dropped before decoding because their client had gone (deadline passed, call cancelled).",
            self.ingest_abandoned(),
        ));
        families.push(MetricFamily::gauge(
            "otelscale_ingest_jobs",
            "Export requests queued for or running on the ingest workers (at most 4 per worker).",
            GaugeValue::Int(self.ingest_jobs()),
        ));
        families.push(MetricFamily::counter_value(
            "otelscale_self_exports_total",
            "Pushes of these metrics to --self-otlp-endpoint that succeeded.",
            load(&self.self_exports),
        ));
        families.push(MetricFamily::counter_value(
            "otelscale_self_export_failures_total",
            "Pushes of these metrics to --self-otlp-endpoint that failed.",
            load(&self.self_export_failures),
        ));
        families
    }
}

/// A label of a point: a name and a value from a small enum, never from client data.
pub type Label = (&'static str, &'static str);

/// One metric: its name, help text and points, all of one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    /// The Prometheus name, `otelscale_<what>_<unit>[_total]`; OTLP uses it unchanged.
    pub name: &'static str,
    pub help: &'static str,
    pub data: MetricData,
}

/// The points of a metric, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricData {
    /// Monotonic, cumulative since [`Telemetry::started_at`].
    Counter(Vec<Point<u64>>),
    Gauge(Vec<Point<GaugeValue>>),
    /// Cumulative since [`Telemetry::started_at`].
    Histogram(Vec<Point<Histogram>>),
}

/// One labeled value of a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Point<V> {
    pub labels: Vec<Label>,
    pub value: V,
}

impl<V> Point<V> {
    pub fn new(labels: Vec<Label>, value: V) -> Self {
        Point { labels, value }
    }
}

/// A gauge's value: whole numbers stay integers (OTLP `as_int`), the rest are floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GaugeValue {
    Int(i64),
    Float(f64),
}

impl GaugeValue {
    fn from_count(count: u64) -> Self {
        GaugeValue::Int(i64::try_from(count).unwrap_or(i64::MAX))
    }
}

impl std::fmt::Display for GaugeValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GaugeValue::Int(value) => write!(f, "{value}"),
            GaugeValue::Float(value) => write!(f, "{value}"),
        }
    }
}

/// A histogram with explicit bounds, as counts per bucket (not cumulative, as OTLP has them):
/// `bucket_counts[i]` counts observations `x` with `bounds[i - 1] < x <= bounds[i]`, and the
/// last entry, `bucket_counts[bounds.len()]`, those above the last bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    pub bucket_counts: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    /// From the counts of the finite buckets and the total count; the overflow bucket is the
    /// difference (never negative, so the count always equals the sum of the buckets even when
    /// the atomics were read mid-update).
    fn from_finite_buckets(
        bounds: &'static [f64],
        finite_bucket_counts: impl Iterator<Item = u64>,
        count: u64,
        sum: f64,
    ) -> Self {
        let mut bucket_counts: Vec<u64> = finite_bucket_counts.collect();
        assert_eq!(bucket_counts.len(), bounds.len(), "one count per finite bound");
        let finite_total: u64 = bucket_counts.iter().sum();
        bucket_counts.push(count.saturating_sub(finite_total));
        Histogram { bounds, bucket_counts, sum }
    }

    /// Observations in all buckets.
    pub fn count(&self) -> u64 {
        self.bucket_counts.iter().sum()
    }

    fn assert_shape(&self) {
        assert_eq!(self.bucket_counts.len(), self.bounds.len() + 1, "one bucket per bound plus the overflow bucket");
    }
}

impl MetricFamily {
    fn counter(name: &'static str, help: &'static str, points: Vec<Point<u64>>) -> Self {
        MetricFamily { name, help, data: MetricData::Counter(points) }
    }

    /// A counter without labels.
    fn counter_value(name: &'static str, help: &'static str, value: u64) -> Self {
        Self::counter(name, help, vec![Point::new(Vec::new(), value)])
    }

    /// A gauge without labels.
    fn gauge(name: &'static str, help: &'static str, value: GaugeValue) -> Self {
        MetricFamily { name, help, data: MetricData::Gauge(vec![Point::new(Vec::new(), value)]) }
    }
}

/// The Prometheus text exposition (format 0.0.4) of `families`; histograms get cumulative
/// `_bucket{le}` lines, `_sum` and `_count`.
pub fn prometheus_text(families: &[MetricFamily]) -> String {
    let mut out = String::with_capacity(4096);
    for family in families {
        let name = family.name;
        let kind = match &family.data {
            MetricData::Counter(_) => "counter",
            MetricData::Gauge(_) => "gauge",
            MetricData::Histogram(_) => "histogram",
        };
        let _ = writeln!(out, "# HELP {name} {}", family.help);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        match &family.data {
            MetricData::Counter(points) => {
                for point in points {
                    write_sample(&mut out, name, "", &point.labels, None, point.value);
                }
            }
            MetricData::Gauge(points) => {
                for point in points {
                    write_sample(&mut out, name, "", &point.labels, None, point.value);
                }
            }
            MetricData::Histogram(points) => {
                for point in points {
                    let histogram = &point.value;
                    histogram.assert_shape();
                    let mut cumulative = 0u64;
                    for (&bound, &bucket_count) in histogram.bounds.iter().zip(&histogram.bucket_counts) {
                        cumulative += bucket_count;
                        write_sample(&mut out, name, "_bucket", &point.labels, Some(bound), cumulative);
                    }
                    let count = histogram.count();
                    write_sample(&mut out, name, "_bucket", &point.labels, Some(f64::INFINITY), count);
                    write_sample(&mut out, name, "_sum", &point.labels, None, histogram.sum);
                    write_sample(&mut out, name, "_count", &point.labels, None, count);
                }
            }
        }
    }
    out
}

/// One line: `name{labels,le="bound"} value`, without braces when there is no label.
fn write_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[Label],
    le: Option<f64>,
    value: impl std::fmt::Display,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        for (label_idx, (label_name, label_value)) in labels.iter().enumerate() {
            debug_assert!(!label_value.contains(['"', '\\', '\n']), "label values are fixed strings");
            if label_idx > 0 {
                out.push(',');
            }
            let _ = write!(out, "{label_name}=\"{label_value}\"");
        }
        if let Some(bound) = le {
            if !labels.is_empty() {
                out.push(',');
            }
            if bound == f64::INFINITY {
                out.push_str("le=\"+Inf\"");
            } else {
                let _ = write!(out, "le=\"{bound}\"");
            }
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::outcome::Rejections;
    use crate::store::StoreConfig;

    fn empty_store() -> Store {
        Store::new(StoreConfig::new(1, 10, 60_000))
    }

    /// A telemetry with something in every kind of metric.
    pub(crate) fn busy_telemetry() -> Telemetry {
        let telemetry = Telemetry::default();
        let mut rejections = Rejections::default();
        rejections.add(RejectReason::NanValue, 2);
        telemetry.record_export(Transport::Grpc, &ExportOutcome { accepted_points: 5, rejections });
        telemetry.record_request(Transport::Http, RequestOutcome::TooLarge);
        telemetry.record_scaler_call(ScalerMethod::GetMetrics, true);
        telemetry.record_scaler_call(ScalerMethod::IsActive, false);
        for micros in [10, 70, 300, 2_000, 40_000, 900_000, 3_000_000] {
            telemetry.record_query_duration(Duration::from_micros(micros));
        }
        telemetry.stream_opened();
        telemetry.stream_opened();
        telemetry.stream_closed();
        telemetry.snapshot_written(Duration::from_millis(1234), 98_765, 1_700_000_000_123);
        telemetry.snapshot_restored(Duration::from_micros(456), 77);
        telemetry.record_self_export(true);
        telemetry.record_self_export(false);
        telemetry.record_self_export(false);
        telemetry
    }

    #[test]
    fn prometheus_text_has_labels_cumulative_buckets_and_exact_values() {
        let text = busy_telemetry().render_prometheus(&empty_store());
        for line in [
            "# HELP otelscale_points_received_total Points received over OTLP, accepted or not.",
            "# TYPE otelscale_points_received_total counter",
            "otelscale_points_received_total{transport=\"grpc\"} 7",
            "otelscale_points_received_total{transport=\"http\"} 0",
            "otelscale_points_rejected_total{reason=\"nan_value\"} 2",
            "otelscale_requests_total{transport=\"grpc\",outcome=\"partial_success\"} 1",
            "otelscale_requests_total{transport=\"http\",outcome=\"too_large\"} 1",
            "otelscale_scaler_requests_total{method=\"IsActive\",outcome=\"error\"} 1",
            "otelscale_scaler_requests_total{method=\"GetMetrics\",outcome=\"ok\"} 1",
            "# TYPE otelscale_query_duration_seconds histogram",
            "otelscale_query_duration_seconds_bucket{le=\"0.00005\"} 1",
            "otelscale_query_duration_seconds_bucket{le=\"0.0001\"} 2",
            "otelscale_query_duration_seconds_bucket{le=\"0.0005\"} 3",
            "otelscale_query_duration_seconds_bucket{le=\"0.0025\"} 4",
            "otelscale_query_duration_seconds_bucket{le=\"0.05\"} 5",
            "otelscale_query_duration_seconds_bucket{le=\"0.5\"} 5",
            "otelscale_query_duration_seconds_bucket{le=\"+Inf\"} 7",
            "otelscale_query_duration_seconds_sum 3.94238",
            "otelscale_query_duration_seconds_count 7",
            "# TYPE otelscale_streams_open gauge",
            "otelscale_streams_open 1",
            "otelscale_series 0",
            "otelscale_snapshot_duration_seconds 1.234",
            "otelscale_snapshot_bytes 98765",
            "otelscale_snapshot_last_success_timestamp_seconds 1700000000.123",
            "otelscale_snapshot_restore_duration_seconds 0.000456",
            "otelscale_snapshot_restored_series 77",
            "otelscale_self_exports_total 1",
            "otelscale_self_export_failures_total 2",
        ] {
            assert!(text.lines().any(|text_line| text_line == line), "`{line}` missing from:\n{text}");
        }
    }

    #[test]
    fn every_family_is_named_by_the_convention_and_once() {
        let families = busy_telemetry().metric_families(&empty_store());
        let mut names: Vec<&str> = families.iter().map(|family| family.name).collect();
        for family in &families {
            assert!(family.name.starts_with("otelscale_"), "{}", family.name);
            let is_counter = matches!(family.data, MetricData::Counter(_));
            assert_eq!(family.name.ends_with("_total"), is_counter, "{}", family.name);
            assert!(!family.help.is_empty());
        }
        names.sort_unstable();
        let n_names = names.len();
        names.dedup();
        assert_eq!(names.len(), n_names, "a metric name appears twice");
    }

    #[test]
    fn histogram_buckets_are_per_bucket_with_an_overflow_bucket() {
        const BOUNDS: [f64; 3] = [1.0, 2.0, 5.0];
        let histogram = Histogram::from_finite_buckets(&BOUNDS, [3, 0, 2].into_iter(), 9, 20.5);
        assert_eq!(histogram.bucket_counts, [3, 0, 2, 4]);
        assert_eq!(histogram.count(), 9);
        // Read mid-update (a bucket incremented, the count not yet): never a negative overflow.
        let torn = Histogram::from_finite_buckets(&BOUNDS, [3, 1, 2].into_iter(), 5, 1.0);
        assert_eq!(torn.bucket_counts, [3, 1, 2, 0]);
        assert_eq!(torn.count(), 6);

        let families = [MetricFamily {
            name: "h_seconds",
            help: "h.",
            data: MetricData::Histogram(vec![Point::new(vec![("method", "GetMetrics")], histogram)]),
        }];
        let expected = "# HELP h_seconds h.\n# TYPE h_seconds histogram\n\
            h_seconds_bucket{method=\"GetMetrics\",le=\"1\"} 3\n\
            h_seconds_bucket{method=\"GetMetrics\",le=\"2\"} 3\n\
            h_seconds_bucket{method=\"GetMetrics\",le=\"5\"} 5\n\
            h_seconds_bucket{method=\"GetMetrics\",le=\"+Inf\"} 9\n\
            h_seconds_sum{method=\"GetMetrics\"} 20.5\n\
            h_seconds_count{method=\"GetMetrics\"} 9\n";
        assert_eq!(prometheus_text(&families), expected);
    }
}
