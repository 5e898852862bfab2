//! `latency`: the sub-second proof. Under a background load, repeatedly push a step change of a
//! probe gauge and measure (a) the Export round trip, (b) push-to-visible: until GetMetrics
//! returns the new value, and (c) push-to-activation: until the StreamIsActive stream delivers
//! the new state.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use serde::Serialize;
use tokio::sync::mpsc;

use super::throughput::{LoadEngine, ThroughputConfig};
use crate::client::Transport;
use crate::keda;
use crate::stats::{LatencyHistogram, LatencySummary};

#[derive(Debug, Clone)]
pub struct LatencyConfig {
    pub otlp_grpc_addr: SocketAddr,
    pub scaler_addr: SocketAddr,
    /// Background load in points per second (0 = none).
    pub background_rate: f64,
    pub background_connections: usize,
    pub background_series: usize,
    pub background_points_per_request: usize,
    /// Probe step changes to measure.
    pub samples: usize,
    /// Pause between probes.
    pub gap: Duration,
    /// Longest wait for one probe to become visible or to activate.
    pub probe_timeout: Duration,
    /// Background load before the first probe, so that probes measure the steady state rather
    /// than the creation of the background series.
    pub warmup: Duration,
    pub seed: u64,
    pub show_progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    pub samples: usize,
    pub warmup_s: f64,
    pub background_target_points_per_s: f64,
    pub background_achieved_points_per_s: f64,
    pub background_accepted_points: u64,
    pub export_ack: LatencySummary,
    pub push_to_visible: LatencySummary,
    pub push_to_activation: LatencySummary,
    pub timeouts: u64,
}

const PROBE_METRIC: &str = "otelscale_loadgen_probe";

fn probe_request(probe_id: &str, value: f64) -> ExportMetricsServiceRequest {
    let point = NumberDataPoint {
        attributes: vec![KeyValue {
            key: "probe".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(probe_id.to_owned())) }),
            ..Default::default()
        }],
        // 0 = the server's receive time: the probe measures the server, not clock skew.
        time_unix_nano: 0,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: PROBE_METRIC.into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points: vec![point] })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub async fn run(config: &LatencyConfig) -> anyhow::Result<LatencyResult> {
    let probe_id = format!("probe-{:016x}", crate::shapes::splitmix64(config.seed ^ u64::from(std::process::id())));
    let trigger = keda::scaled_object(
        "loadgen-latency",
        &[
            ("metricQuery", format!("max({PROBE_METRIC}{{probe={probe_id}}})")),
            ("targetValue", "1".to_owned()),
            ("activationTargetValue", "0.5".to_owned()),
            ("windowSeconds", "60".to_owned()),
        ],
    );

    let background = if config.background_rate > 0.0 {
        let load = ThroughputConfig {
            transport: Transport::Grpc,
            otlp_addr: config.otlp_grpc_addr,
            connections: config.background_connections,
            points_per_request: config.background_points_per_request,
            series: config.background_series,
            duration: Duration::MAX,
            rate_points_per_s: Some(config.background_rate),
            gzip: false,
            zstd: false,
            seed: config.seed,
            server_pid: None,
            admin_addr: None,
            show_progress: false,
        };
        Some(LoadEngine::start(&load).await?)
    } else {
        None
    };

    if background.is_some() {
        tokio::time::sleep(config.warmup).await;
    }
    let mut otlp = MetricsServiceClient::connect(format!("http://{}", config.otlp_grpc_addr)).await?;
    let mut scaler = keda::connect(config.scaler_addr).await?;
    // The stream: every message with the instant it arrived.
    let mut stream = scaler.stream_is_active(trigger.clone()).await?.into_inner();
    let (arrivals, mut arrived) = mpsc::unbounded_channel::<(bool, Instant)>();
    let stream_task = tokio::spawn(async move {
        while let Ok(Some(message)) = stream.message().await {
            if arrivals.send((message.result, Instant::now())).is_err() {
                break;
            }
        }
    });
    // Start from a known state: the probe at 0, stream caught up.
    otlp.export(probe_request(&probe_id, 0.0)).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    while arrived.try_recv().is_ok() {}

    let progress = crate::progress::bar(config.show_progress, config.samples as u64, "probes");
    let mut export_ack = LatencyHistogram::default();
    let mut push_to_visible = LatencyHistogram::default();
    let mut push_to_activation = LatencyHistogram::default();
    let mut timeouts = 0u64;
    for sample_idx in 0..config.samples {
        let value = if sample_idx % 2 == 0 { 1.0 } else { 0.0 };
        let expect_active = value > 0.5;
        let pushed_at = Instant::now();
        otlp.export(probe_request(&probe_id, value)).await?;
        export_ack.record(pushed_at.elapsed());
        loop {
            if keda::metric_value(&mut scaler, &trigger).await? == value {
                push_to_visible.record(pushed_at.elapsed());
                break;
            }
            if pushed_at.elapsed() > config.probe_timeout {
                timeouts += 1;
                break;
            }
        }
        let deadline = pushed_at + config.probe_timeout;
        loop {
            match tokio::time::timeout_at(deadline.into(), arrived.recv()).await {
                Ok(Some((active, at))) if active == expect_active && at >= pushed_at => {
                    push_to_activation.record(at - pushed_at);
                    break;
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => {
                    timeouts += 1;
                    break;
                }
            }
        }
        progress.set_position(sample_idx as u64 + 1);
        tokio::time::sleep(config.gap).await;
    }
    progress.finish_and_clear();
    stream_task.abort();
    let (background_sent, background_accepted, background_elapsed_s) = match background {
        Some(engine) => engine.stop().await,
        None => (0, 0, 1.0),
    };
    Ok(LatencyResult {
        samples: config.samples,
        warmup_s: config.warmup.as_secs_f64(),
        background_target_points_per_s: config.background_rate,
        background_achieved_points_per_s: background_sent as f64 / background_elapsed_s,
        background_accepted_points: background_accepted,
        export_ack: export_ack.summary(),
        push_to_visible: push_to_visible.summary(),
        push_to_activation: push_to_activation.summary(),
        timeouts,
    })
}

impl LatencyResult {
    pub fn markdown(&self) -> String {
        format!(
            "| figure | value |\n|---|---|\n\
             | background load (target / achieved), warm-up | {:.0} / {:.0} points/s, {:.1} s |\n\
             | probes | {} (timeouts: {}) |\n\
             | Export acknowledged | {} |\n\
             | push → visible in GetMetrics | {} |\n\
             | push → StreamIsActive message | {} |\n",
            self.background_target_points_per_s,
            self.background_achieved_points_per_s,
            self.warmup_s,
            self.samples,
            self.timeouts,
            self.export_ack.one_line(),
            self.push_to_visible.one_line(),
            self.push_to_activation.one_line()
        )
    }
}
