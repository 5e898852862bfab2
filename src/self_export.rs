//! Pushes the server's own metrics over OTLP/gRPC (`--self-otlp-endpoint`), every
//! `--self-otlp-interval` and once more at shutdown (unless the last push failed).
//!
//! The metrics are exactly those of `/metrics`, made from the same list
//! ([`Telemetry::metric_families`]) under the same names, so one dashboard serves both paths:
//! counters become monotonic cumulative Sums starting at [`Telemetry::started_at`], gauges
//! Gauges, histograms cumulative Histograms with the same bounds (OTLP counts per bucket, not
//! cumulatively as Prometheus does), labels become point attributes. The resource carries
//! `service.name`, `service.version` and `service.instance.id`.
//!
//! The endpoint is never on the server's critical path: the channel connects lazily, a push is
//! cut off after [`PUSH_TIMEOUT`], and a failure is counted
//! (`otelscale_self_export_failures_total`) and logged once per streak of failures.

use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::config::SelfExportConfig;
use crate::store::Store;
use crate::telemetry::{GaugeValue, Label, MetricData, MetricFamily, Telemetry};

/// Longest a push may take, connecting included. A periodic push in flight when the shutdown
/// starts is abandoned; the final push delays the exit by at most this much.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

const SERVICE_NAME: &str = "otelscale";

/// Starts the periodic push; when `cancel` fires the task makes one last push (if the endpoint
/// answered the previous one) and ends.
pub fn spawn(
    config: SelfExportConfig,
    telemetry: Arc<Telemetry>,
    store: Arc<Store>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    // A panic ends the pushes (counted and logged at `background`); serving goes on.
    crate::panics::spawn_catching(
        Arc::clone(&telemetry),
        crate::outcome::PanicSite::Background,
        run(config, telemetry, store, cancel),
    )
}

async fn run(config: SelfExportConfig, telemetry: Arc<Telemetry>, store: Arc<Store>, cancel: CancellationToken) {
    let instance_id = instance_id();
    let resource = resource(&instance_id);
    let mut client = client(&config.endpoint);
    let mut push_log = PushLog::default();
    tracing::info!(
        endpoint = %config.endpoint,
        interval_ms = config.interval.as_millis() as u64,
        instance_id = %instance_id,
        "self-export of metrics over OTLP/gRPC started"
    );
    // The first push after one interval: at start-up every counter is still zero.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + config.interval, config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let shutting_down = tokio::select! {
            _ = ticker.tick() => false,
            () = cancel.cancelled() => true,
        };
        if shutting_down && push_log.is_failing() {
            // The endpoint is down: a final push would only hold up the shutdown.
            tracing::debug!(endpoint = %config.endpoint, "no final self-export: the endpoint is failing");
            break;
        }
        let request = build_request(
            &telemetry.metric_families(&store),
            resource.clone(),
            unix_nano(telemetry.started_at()),
            unix_nano(SystemTime::now()),
        );
        let pushed = if shutting_down {
            push(&mut client, request).await
        } else {
            // A push still waiting when the shutdown starts is abandoned (and counted as failed).
            tokio::select! {
                pushed = push(&mut client, request) => pushed,
                () = cancel.cancelled() => Err(PushError::Abandoned),
            }
        };
        telemetry.record_self_export(pushed.is_ok());
        push_log.record(&config.endpoint, &pushed);
        if shutting_down {
            break;
        }
    }
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
enum PushError {
    #[error("unusable endpoint: {0}")]
    Endpoint(String),
    #[error("no answer within {} s", PUSH_TIMEOUT.as_secs())]
    Timeout,
    #[error("{}", describe_status(.0))]
    Status(tonic::Status),
    #[error("still waiting for an answer when the server shut down")]
    Abandoned,
}

type Client = MetricsServiceClient<Channel>;

/// A client on a lazily connected channel (http:// plain, https:// with the webpki roots), or why
/// there can be none; the channel reconnects by itself after a failure.
fn client(endpoint: &str) -> Result<Client, String> {
    let mut builder = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|err| err.to_string())?
        .connect_timeout(PUSH_TIMEOUT)
        .timeout(PUSH_TIMEOUT);
    if endpoint.starts_with("https://") {
        builder = builder.tls_config(ClientTlsConfig::new().with_webpki_roots()).map_err(|err| err.to_string())?;
    }
    Ok(MetricsServiceClient::new(builder.connect_lazy()))
}

/// One Export call; `Ok` holds the points the receiver rejected (OTLP partial success).
async fn push(client: &mut Result<Client, String>, request: ExportMetricsServiceRequest) -> Result<i64, PushError> {
    let client = client.as_mut().map_err(|problem| PushError::Endpoint(problem.clone()))?;
    match tokio::time::timeout(PUSH_TIMEOUT, client.export(request)).await {
        Err(_elapsed) => Err(PushError::Timeout),
        Ok(Err(status)) => Err(PushError::Status(status)),
        Ok(Ok(response)) => Ok(response.into_inner().partial_success.map_or(0, |partial| partial.rejected_data_points)),
    }
}

/// `Unavailable: tcp connect error: Connection refused (os error 111)`: the code, the message and
/// the root cause beneath it, without tonic's metadata dump and intermediate wrappers.
fn describe_status(status: &tonic::Status) -> String {
    let mut description = format!("{:?}: {}", status.code(), status.message());
    let mut root_cause = None;
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        root_cause = Some(err);
        source = err.source();
    }
    if let Some(root_cause) = root_cause.map(ToString::to_string) {
        if !description.contains(&root_cause) {
            description.push_str(": ");
            description.push_str(&root_cause);
        }
    }
    description
}

/// Logs push outcomes without flooding: the first failure of a streak at warn, the rest at
/// debug, and the recovery at info; the first partial success at warn.
#[derive(Debug, Default)]
struct PushLog {
    failures_in_streak: u64,
    partial_success_logged: bool,
}

impl PushLog {
    /// Whether the last push failed.
    fn is_failing(&self) -> bool {
        self.failures_in_streak > 0
    }

    fn record(&mut self, endpoint: &str, pushed: &Result<i64, PushError>) {
        match pushed {
            Ok(rejected_points) => {
                if self.failures_in_streak > 0 {
                    tracing::info!(%endpoint, failed_pushes = self.failures_in_streak, "self-export recovered");
                    self.failures_in_streak = 0;
                }
                if *rejected_points > 0 {
                    if self.partial_success_logged {
                        tracing::debug!(%endpoint, rejected_points, "self-export partly rejected");
                    } else {
                        tracing::warn!(
                            %endpoint,
                            rejected_points,
                            "self-export partly rejected by the receiver (logged once)"
                        );
                        self.partial_success_logged = true;
                    }
                }
            }
            Err(err) => {
                if self.failures_in_streak == 0 {
                    tracing::warn!(
                        %endpoint,
                        error = %err,
                        "self-export failed; further failures are counted in otelscale_self_export_failures_total \
                         and logged at debug until a push succeeds"
                    );
                } else {
                    tracing::debug!(%endpoint, error = %err, "self-export failed again");
                }
                self.failures_in_streak += 1;
            }
        }
    }
}

/// The request for one push: one resource, one scope, a metric per family.
fn build_request(
    families: &[MetricFamily],
    resource: Resource,
    start_unix_nano: u64,
    now_unix_nano: u64,
) -> ExportMetricsServiceRequest {
    let metrics = families.iter().map(|family| otlp_metric(family, start_unix_nano, now_unix_nano)).collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: SERVICE_NAME.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn otlp_metric(family: &MetricFamily, start_unix_nano: u64, now_unix_nano: u64) -> Metric {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let data = match &family.data {
        MetricData::Counter(points) => metric::Data::Sum(Sum {
            data_points: points
                .iter()
                .map(|point| NumberDataPoint {
                    attributes: attributes(&point.labels),
                    start_time_unix_nano: start_unix_nano,
                    time_unix_nano: now_unix_nano,
                    value: Some(number_data_point::Value::AsInt(i64::try_from(point.value).unwrap_or(i64::MAX))),
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        MetricData::Gauge(points) => metric::Data::Gauge(Gauge {
            data_points: points
                .iter()
                .map(|point| NumberDataPoint {
                    attributes: attributes(&point.labels),
                    time_unix_nano: now_unix_nano,
                    value: Some(match point.value {
                        GaugeValue::Int(value) => number_data_point::Value::AsInt(value),
                        GaugeValue::Float(value) => number_data_point::Value::AsDouble(value),
                    }),
                    ..Default::default()
                })
                .collect(),
        }),
        MetricData::Histogram(points) => metric::Data::Histogram(Histogram {
            data_points: points
                .iter()
                .map(|point| {
                    let histogram = &point.value;
                    assert_eq!(histogram.bucket_counts.len(), histogram.bounds.len() + 1, "an overflow bucket");
                    HistogramDataPoint {
                        attributes: attributes(&point.labels),
                        start_time_unix_nano: start_unix_nano,
                        time_unix_nano: now_unix_nano,
                        count: histogram.count(),
                        sum: Some(histogram.sum),
                        bucket_counts: histogram.bucket_counts.clone(),
                        explicit_bounds: histogram.bounds.to_vec(),
                        ..Default::default()
                    }
                })
                .collect(),
            aggregation_temporality: cumulative,
        }),
    };
    Metric { name: family.name.to_owned(), description: family.help.to_owned(), data: Some(data), ..Default::default() }
}

fn attributes(labels: &[Label]) -> Vec<KeyValue> {
    labels.iter().map(|&(name, value)| string_attribute(name, value)).collect()
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
        ..Default::default()
    }
}

fn resource(instance_id: &str) -> Resource {
    Resource {
        attributes: vec![
            string_attribute("service.name", SERVICE_NAME),
            string_attribute("service.version", env!("CARGO_PKG_VERSION")),
            string_attribute("service.instance.id", instance_id),
        ],
        ..Default::default()
    }
}

/// The host name (a pod's name in Kubernetes), else a random 64-bit hex id.
fn instance_id() -> String {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let from_env = || std::env::var("HOSTNAME").ok();
    from_kernel
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| from_env().filter(|name| !name.is_empty()))
        .unwrap_or_else(random_id)
}

/// 64 random bits from the standard library's randomly keyed hasher, mixed with the process id
/// and the time.
fn random_id() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(unix_nano(SystemTime::now()));
    format!("{:016x}", hasher.finish())
}

/// Nanoseconds since the Unix epoch (0 before 1970).
fn unix_nano(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use crate::telemetry::tests::busy_telemetry;
    use crate::telemetry::{self, Point};

    const START: u64 = 1_700_000_000_000_000_000;
    const NOW: u64 = START + 60_000_000_000;

    fn request_of(families: &[MetricFamily]) -> ExportMetricsServiceRequest {
        build_request(families, resource("pod-1"), START, NOW)
    }

    fn metric<'a>(request: &'a ExportMetricsServiceRequest, name: &str) -> &'a Metric {
        request.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|metric| metric.name == name)
            .unwrap_or_else(|| panic!("{name} not in the request"))
    }

    fn label_pairs(attributes: &[KeyValue]) -> Vec<(String, String)> {
        attributes
            .iter()
            .map(|attribute| match attribute.value.as_ref().and_then(|value| value.value.as_ref()) {
                Some(any_value::Value::StringValue(value)) => (attribute.key.clone(), value.clone()),
                other => panic!("{}: not a string: {other:?}", attribute.key),
            })
            .collect()
    }

    #[test]
    fn the_request_holds_every_metric_of_the_prometheus_text_under_the_same_name() {
        let store = Store::new(StoreConfig::new(1, 10, 60_000));
        let families = busy_telemetry().metric_families(&store);
        let request = request_of(&families);
        let names: Vec<&str> =
            request.resource_metrics[0].scope_metrics[0].metrics.iter().map(|metric| metric.name.as_str()).collect();
        let text = telemetry::prometheus_text(&families);
        let text_names: Vec<&str> =
            text.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next()).collect();
        assert_eq!(names, text_names);
        assert!(names.contains(&"otelscale_self_export_failures_total"));

        let resource_metrics = &request.resource_metrics[0];
        assert_eq!(
            label_pairs(&resource_metrics.resource.as_ref().unwrap().attributes),
            [
                ("service.name".into(), "otelscale".into()),
                ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
                ("service.instance.id".into(), "pod-1".into()),
            ]
        );
        assert_eq!(resource_metrics.scope_metrics[0].scope.as_ref().unwrap().name, "otelscale");
    }

    #[test]
    fn counters_are_monotonic_cumulative_sums_since_the_start() {
        let store = Store::new(StoreConfig::new(1, 10, 60_000));
        let request = request_of(&busy_telemetry().metric_families(&store));
        let metric = metric(&request, "otelscale_requests_total");
        assert_eq!(metric.description, "OTLP export requests, by transport and outcome.");
        let Some(metric::Data::Sum(sum)) = &metric.data else { panic!("not a Sum: {metric:?}") };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        assert_eq!(sum.data_points.len(), 14);
        for point in &sum.data_points {
            assert_eq!((point.start_time_unix_nano, point.time_unix_nano), (START, NOW));
        }
        let partial = sum
            .data_points
            .iter()
            .find(|point| {
                label_pairs(&point.attributes)
                    == [("transport".into(), "grpc".into()), ("outcome".into(), "partial_success".into())]
            })
            .unwrap();
        assert_eq!(partial.value, Some(number_data_point::Value::AsInt(1)));
    }

    #[test]
    fn gauges_keep_integers_and_floats_and_have_no_start() {
        let families = [
            MetricFamily {
                name: "g_bytes",
                help: "g.",
                data: MetricData::Gauge(vec![Point::new(Vec::new(), GaugeValue::Int(-3))]),
            },
            MetricFamily {
                name: "f_seconds",
                help: "f.",
                data: MetricData::Gauge(vec![Point::new(vec![("transport", "http")], GaugeValue::Float(0.25))]),
            },
        ];
        let request = request_of(&families);
        let Some(metric::Data::Gauge(int_gauge)) = &metric(&request, "g_bytes").data else { panic!("not a Gauge") };
        assert_eq!(int_gauge.data_points[0].value, Some(number_data_point::Value::AsInt(-3)));
        assert_eq!(int_gauge.data_points[0].start_time_unix_nano, 0);
        assert_eq!(int_gauge.data_points[0].time_unix_nano, NOW);
        let Some(metric::Data::Gauge(float_gauge)) = &metric(&request, "f_seconds").data else { panic!("not a Gauge") };
        assert_eq!(float_gauge.data_points[0].value, Some(number_data_point::Value::AsDouble(0.25)));
        assert_eq!(label_pairs(&float_gauge.data_points[0].attributes), [("transport".into(), "http".into())]);
    }

    #[test]
    fn the_histogram_counts_per_bucket_with_the_same_bounds() {
        let store = Store::new(StoreConfig::new(1, 10, 60_000));
        let request = request_of(&busy_telemetry().metric_families(&store));
        let metric = metric(&request, "otelscale_query_duration_seconds");
        let Some(metric::Data::Histogram(histogram)) = &metric.data else { panic!("not a Histogram: {metric:?}") };
        assert_eq!(histogram.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        let point = &histogram.data_points[0];
        assert_eq!((point.start_time_unix_nano, point.time_unix_nano), (START, NOW));
        assert_eq!(
            point.explicit_bounds,
            [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5]
        );
        // Observed 10 µs, 70 µs, 300 µs, 2 ms, 40 ms, 0.9 s and 3 s: one per bucket, not the
        // cumulative 1, 2, 2, 3, … of the Prometheus text; two above the last bound.
        assert_eq!(point.bucket_counts, [1, 1, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 2]);
        assert_eq!(point.count, 7);
        assert_eq!(point.count, point.bucket_counts.iter().sum::<u64>());
        assert_eq!(point.sum, Some(3.94238));
        assert!(point.attributes.is_empty());
    }

    #[test]
    fn status_descriptions_are_short() {
        let mut status = tonic::Status::unavailable("tcp connect error");
        assert_eq!(describe_status(&status), "Unavailable: tcp connect error");
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        status.set_source(Arc::new(refused));
        assert_eq!(describe_status(&status), "Unavailable: tcp connect error: Connection refused");
        assert_eq!(PushError::Endpoint("bad".into()).to_string(), "unusable endpoint: bad");
    }

    #[tokio::test]
    async fn https_pushes_go_through_tls_and_fail_cleanly_against_plain_text() {
        assert!(client("http://bad host:4317").is_err());
        // Answers the TLS ClientHello with plain text, as a non-TLS port would.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let mut https = client(&format!("https://localhost:{}", addr.port()));
        assert!(https.is_ok(), "{https:?}");
        let pushed = push(&mut https, request_of(&[])).await;
        assert!(matches!(pushed, Err(PushError::Status(_))), "{pushed:?}");
    }

    #[test]
    fn instance_ids_are_never_empty() {
        assert!(!instance_id().is_empty());
        let (first, second) = (random_id(), random_id());
        assert_eq!(first.len(), 16);
        assert_ne!(first, second);
    }
}
