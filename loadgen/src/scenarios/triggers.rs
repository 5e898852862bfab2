//! `triggers`: what standing triggers cost the server. A multi-model vLLM fleet (M models × P
//! pods) pushes a queue-depth gauge and a token counter once per second, spread over R requests
//! per second; then S `external-push` streams (one per model, as one ScaledObject per model
//! does) and T polled triggers (GetMetrics and IsActive every `--poll-interval`, as KEDA and the
//! HPA poll) are opened on them. One run reports the server's CPU without the triggers and with
//! them, GetMetrics latency in both phases (a KEDA-like probe every 50 ms), and push → activation
//! for a few probe models whose gauge the load generator flips.
//!
//! Points carry no timestamp (0: the server's receive time), so the same encoded bodies are sent
//! every second.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum,
};
use otelscale::scaler::proto::ScaledObjectRef;
use prost::Message as _;
use serde::Serialize;
use tokio::sync::{mpsc, Mutex};

use crate::client::{Compression, OtlpSender, Transport};
use crate::keda;
use crate::procstat;
use crate::stats::{LatencyHistogram, LatencySummary};

/// The gauge the streams watch (vLLM's queue depth).
pub const GAUGE: &str = "vllm:num_requests_waiting";
/// The counter half of the polled triggers read with `rate`.
pub const COUNTER: &str = "vllm:prompt_tokens_total";
/// A probe model's gauge above this activates its stream.
const ACTIVATION: f64 = 5.0;
const GET_METRICS_PROBE_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct TriggersConfig {
    pub transport: Transport,
    pub otlp_addr: SocketAddr,
    pub scaler_addr: SocketAddr,
    pub server_pid: Option<u32>,
    pub models: usize,
    pub pods: usize,
    pub requests_per_s: usize,
    pub connections: usize,
    pub streams: usize,
    pub polled_triggers: usize,
    pub poll_interval: Duration,
    pub probe_models: usize,
    /// Pushes alone before the baseline phase (series created, steady state).
    pub warmup: Duration,
    /// Pushes alone, measured.
    pub baseline: Duration,
    /// Pushes with the triggers open, measured.
    pub duration: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseFigures {
    pub seconds: f64,
    /// Server CPU time over the phase's wall time (cores), when `--server-pid` is given.
    pub server_cores: Option<f64>,
    pub get_metrics: LatencySummary,
    pub pushes_sent: u64,
    pub pushes_failed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TriggersResult {
    pub models: usize,
    pub pods: usize,
    pub series: usize,
    pub requests_per_s: usize,
    pub streams: usize,
    pub polled_triggers: usize,
    pub poll_interval_s: f64,
    pub without_triggers: PhaseFigures,
    pub with_triggers: PhaseFigures,
    /// GetMetrics and IsActive of the polled triggers, during the second phase.
    pub polled_calls: LatencySummary,
    pub polled_failures: u64,
    pub stream_messages: u64,
    pub streams_failed: u64,
    pub push_to_activation: LatencySummary,
    pub activation_timeouts: u64,
}

fn string_attribute(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
        ..Default::default()
    }
}

fn model_name(model_idx: usize) -> String {
    format!("model-{model_idx:05}")
}

fn point(model: &str, pod: &str, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: vec![string_attribute("model_name", model.to_owned()), string_attribute("pod", pod.to_owned())],
        // 0: the server's receive time, so a body can be sent again unchanged.
        time_unix_nano: 0,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn request(gauge_points: Vec<NumberDataPoint>, counter_points: Vec<NumberDataPoint>) -> Bytes {
    let mut metrics = vec![Metric {
        name: GAUGE.to_owned(),
        data: Some(metric::Data::Gauge(Gauge { data_points: gauge_points })),
        ..Default::default()
    }];
    if !counter_points.is_empty() {
        metrics.push(Metric {
            name: COUNTER.to_owned(),
            data: Some(metric::Data::Sum(Sum {
                data_points: counter_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        });
    }
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: None,
            scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
            ..Default::default()
        }],
    };
    Bytes::from(request.encode_to_vec())
}

/// The bodies of one second: request `r` carries the models `m` with `m % requests == r`.
fn fleet_bodies(models: usize, pods: usize, requests: usize) -> Vec<Bytes> {
    (0..requests)
        .map(|request_idx| {
            let (mut gauges, mut counters) = (Vec::new(), Vec::new());
            for model_idx in (request_idx..models).step_by(requests) {
                let model = model_name(model_idx);
                for pod_idx in 0..pods {
                    let pod = format!("{model}-pod-{pod_idx}");
                    gauges.push(point(&model, &pod, (model_idx % 3) as f64));
                    counters.push(point(&model, &pod, 1_000.0 + pod_idx as f64));
                }
            }
            request(gauges, counters)
        })
        .collect()
}

fn gauge_trigger(name: &str, model: &str) -> ScaledObjectRef {
    keda::scaled_object(
        name,
        &[
            ("metricQuery", format!("max({GAUGE}{{model_name={model}}})")),
            ("targetValue", "10".to_owned()),
            ("activationTargetValue", ACTIVATION.to_string()),
            ("windowSeconds", "30".to_owned()),
        ],
    )
}

fn rate_trigger(name: &str, model: &str) -> ScaledObjectRef {
    keda::scaled_object(
        name,
        &[
            ("metricQuery", format!("sum({COUNTER}{{model_name={model}}})")),
            ("operationOverTime", "rate".to_owned()),
            ("targetValue", "1000".to_owned()),
            ("windowSeconds", "60".to_owned()),
        ],
    )
}

/// Counters shared by the pushing tasks.
#[derive(Debug, Default)]
struct PushCounts {
    sent: AtomicU64,
    failed: AtomicU64,
}

/// Sends the fleet's bodies every second, each at its offset in the second, until `stop`.
fn start_pushing(
    senders: Vec<OtlpSender>,
    bodies: Vec<Bytes>,
    counts: Arc<PushCounts>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let requests = bodies.len();
    let connections = senders.len();
    let started = tokio::time::Instant::now();
    senders
        .into_iter()
        .enumerate()
        .map(|(connection_idx, mut sender)| {
            let mine: Vec<(usize, Bytes)> =
                bodies.iter().cloned().enumerate().filter(|(idx, _)| idx % connections == connection_idx).collect();
            let (counts, stop) = (Arc::clone(&counts), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut second = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    for (request_idx, body) in &mine {
                        let offset = Duration::from_secs(1) * (*request_idx as u32) / requests as u32;
                        tokio::time::sleep_until(started + Duration::from_secs(second.into()) + offset).await;
                        match sender.send(body.clone()).await {
                            Ok(_) => counts.sent.fetch_add(1, Ordering::Relaxed),
                            Err(_) => counts.failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    second += 1;
                }
            })
        })
        .collect()
}

/// GetMetrics on `trigger` every 50 ms until `stop`.
fn start_get_metrics_probe(
    scaler: SocketAddr,
    trigger: ScaledObjectRef,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<LatencyHistogram> {
    tokio::spawn(async move {
        let mut latency = LatencyHistogram::default();
        let Ok(mut client) = keda::connect(scaler).await else { return latency };
        let mut tick = tokio::time::interval(GET_METRICS_PROBE_INTERVAL);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let started = Instant::now();
            if keda::metric_value(&mut client, &trigger).await.is_ok() {
                latency.record(started.elapsed());
            }
        }
        latency
    })
}

fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    pid.and_then(procstat::sample).map(|sample| sample.cpu_seconds)
}

/// Runs pushes for `length` with a GetMetrics probe; the phase's figures.
async fn measure_phase(
    config: &TriggersConfig,
    probe_trigger: &ScaledObjectRef,
    counts: &PushCounts,
    length: Duration,
) -> PhaseFigures {
    let stop = Arc::new(AtomicBool::new(false));
    let probe = start_get_metrics_probe(config.scaler_addr, probe_trigger.clone(), Arc::clone(&stop));
    let (sent_before, failed_before) = (counts.sent.load(Ordering::Relaxed), counts.failed.load(Ordering::Relaxed));
    let cpu_before = cpu_seconds(config.server_pid);
    let started = Instant::now();
    tokio::time::sleep(length).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds(config.server_pid);
    stop.store(true, Ordering::Relaxed);
    let latency = probe.await.unwrap_or_default();
    PhaseFigures {
        seconds,
        server_cores: cpu_before.zip(cpu_after).map(|(before, after)| (after - before) / seconds),
        get_metrics: latency.summary(),
        pushes_sent: counts.sent.load(Ordering::Relaxed) - sent_before,
        pushes_failed: counts.failed.load(Ordering::Relaxed) - failed_before,
    }
}

pub async fn run(config: &TriggersConfig) -> anyhow::Result<TriggersResult> {
    anyhow::ensure!(config.models > 0 && config.pods > 0, "--models and --pods must be at least 1");
    anyhow::ensure!(
        config.requests_per_s > 0 && config.connections > 0,
        "--requests-per-s and --connections must be at least 1"
    );
    anyhow::ensure!(config.streams <= config.models, "--streams is at most --models (one stream per model)");
    let bodies = fleet_bodies(config.models, config.pods, config.requests_per_s.min(config.models));
    let mut senders = Vec::new();
    for _ in 0..config.connections {
        senders.push(OtlpSender::connect(config.transport, config.otlp_addr, Compression::None).await?);
    }
    let counts = Arc::new(PushCounts::default());
    let stop_pushing = Arc::new(AtomicBool::new(false));
    let pushers = start_pushing(senders, bodies, Arc::clone(&counts), Arc::clone(&stop_pushing));
    // The probe models: their own series, flipped by this run (not part of the fleet's bodies).
    let probe_models: Vec<String> = (0..config.probe_models).map(|idx| format!("probe-{idx:02}")).collect();
    let mut probe_sender = OtlpSender::connect(config.transport, config.otlp_addr, Compression::None).await?;
    for model in &probe_models {
        probe_sender.send(request(vec![point(model, "probe-pod", 0.0)], Vec::new())).await?;
    }
    let probe_trigger = gauge_trigger("loadgen-probe", &model_name(0));
    tokio::time::sleep(config.warmup).await;
    let without_triggers = measure_phase(config, &probe_trigger, &counts, config.baseline).await;

    // The triggers: all streams over one connection (KEDA multiplexes them), polls over another.
    let scaler = keda::connect(config.scaler_addr).await?;
    let stream_messages = Arc::new(AtomicU64::new(0));
    let mut streams_failed = 0u64;
    let mut stream_tasks = Vec::new();
    for model_idx in 0..config.streams {
        let trigger = gauge_trigger(&format!("so-{model_idx}"), &model_name(model_idx));
        match scaler.clone().stream_is_active(trigger).await {
            Ok(stream) => {
                let (mut stream, messages) = (stream.into_inner(), Arc::clone(&stream_messages));
                stream_tasks.push(tokio::spawn(async move {
                    while let Ok(Some(_)) = stream.message().await {
                        messages.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            Err(_) => streams_failed += 1,
        }
    }
    let (arrivals, arrived) = mpsc::unbounded_channel::<(usize, bool, Instant)>();
    for (probe_idx, model) in probe_models.iter().enumerate() {
        let mut stream =
            scaler.clone().stream_is_active(gauge_trigger(&format!("probe-{probe_idx}"), model)).await?.into_inner();
        let arrivals = arrivals.clone();
        stream_tasks.push(tokio::spawn(async move {
            while let Ok(Some(message)) = stream.message().await {
                if arrivals.send((probe_idx, message.result, Instant::now())).is_err() {
                    break;
                }
            }
        }));
    }
    let polled = Arc::new(Mutex::new((LatencyHistogram::default(), 0u64)));
    let stop_polling = Arc::new(AtomicBool::new(false));
    let pollers = start_polling(config, Arc::clone(&polled), Arc::clone(&stop_polling)).await?;
    // Streams send their first state at once; let them settle before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages_before = stream_messages.load(Ordering::Relaxed);
    let activations = tokio::spawn(measure_activations(probe_sender, probe_models.clone(), arrived, config.duration));
    let with_triggers = measure_phase(config, &probe_trigger, &counts, config.duration).await;
    let stream_messages = stream_messages.load(Ordering::Relaxed) - messages_before;
    let (push_to_activation, activation_timeouts) = activations.await?;
    stop_polling.store(true, Ordering::Relaxed);
    stop_pushing.store(true, Ordering::Relaxed);
    for task in pollers.into_iter().chain(pushers) {
        let _ = task.await;
    }
    for task in stream_tasks {
        task.abort();
    }
    let (polled_calls, polled_failures) = {
        let polled = polled.lock().await;
        (polled.0.summary(), polled.1)
    };
    Ok(TriggersResult {
        models: config.models,
        pods: config.pods,
        series: config.models * config.pods * 2,
        requests_per_s: config.requests_per_s.min(config.models),
        streams: config.streams,
        polled_triggers: config.polled_triggers,
        poll_interval_s: config.poll_interval.as_secs_f64(),
        without_triggers,
        with_triggers,
        polled_calls,
        polled_failures,
        stream_messages,
        streams_failed,
        push_to_activation,
        activation_timeouts,
    })
}

/// Polls `--polled-triggers` triggers (gauge `max` and counter `rate`, alternating, over the
/// fleet's models) with GetMetrics then IsActive, each every `--poll-interval`, their phases
/// spread over the interval; 16 tasks share them.
async fn start_polling(
    config: &TriggersConfig,
    polled: Arc<Mutex<(LatencyHistogram, u64)>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    const POLLERS: usize = 16;
    if config.polled_triggers == 0 {
        return Ok(Vec::new());
    }
    let client = keda::connect(config.scaler_addr).await?;
    let triggers: Vec<ScaledObjectRef> = (0..config.polled_triggers)
        .map(|idx| {
            let model = model_name(idx % config.models);
            let name = format!("polled-{idx}");
            if idx % 2 == 0 {
                gauge_trigger(&name, &model)
            } else {
                rate_trigger(&name, &model)
            }
        })
        .collect();
    let triggers = Arc::new(triggers);
    let interval = config.poll_interval;
    Ok((0..POLLERS)
        .map(|poller_idx| {
            let (mut client, triggers, polled, stop) =
                (client.clone(), Arc::clone(&triggers), Arc::clone(&polled), Arc::clone(&stop));
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let count = triggers.len();
                let mut round = 0u32;
                let mut local = LatencyHistogram::default();
                let mut failures = 0u64;
                'polling: while !stop.load(Ordering::Relaxed) {
                    for trigger_idx in (poller_idx..count).step_by(POLLERS) {
                        let offset = interval * trigger_idx as u32 / count as u32;
                        let at = started + interval * round + offset;
                        tokio::time::sleep_until(at).await;
                        if stop.load(Ordering::Relaxed) {
                            break 'polling;
                        }
                        let trigger = &triggers[trigger_idx];
                        let call_started = Instant::now();
                        match keda::metric_value(&mut client, trigger).await {
                            Ok(_) => local.record(call_started.elapsed()),
                            Err(_) => failures += 1,
                        }
                        let call_started = Instant::now();
                        match client.is_active(trigger.clone()).await {
                            Ok(_) => local.record(call_started.elapsed()),
                            Err(_) => failures += 1,
                        }
                    }
                    round += 1;
                }
                let mut shared = polled.lock().await;
                shared.0.merge(&local);
                shared.1 += failures;
            })
        })
        .collect())
}

/// Flips the probe models' gauge across the activation threshold, one probe at a time, and
/// measures push → the stream's message with the new state, for `length`.
async fn measure_activations(
    mut sender: OtlpSender,
    probe_models: Vec<String>,
    mut arrived: mpsc::UnboundedReceiver<(usize, bool, Instant)>,
    length: Duration,
) -> (LatencySummary, u64) {
    const TIMEOUT: Duration = Duration::from_secs(2);
    const GAP: Duration = Duration::from_millis(100);
    let mut latency = LatencyHistogram::default();
    let mut timeouts = 0u64;
    if probe_models.is_empty() {
        return (latency.summary(), 0);
    }
    let started = Instant::now();
    let mut flip = 0usize;
    while started.elapsed() < length {
        let probe_idx = flip % probe_models.len();
        // Each probe alternates: above the threshold on its odd flips, back to 0 on its even ones.
        let active = (flip / probe_models.len()).is_multiple_of(2);
        let value = if active { ACTIVATION * 2.0 } else { 0.0 };
        let pushed_at = Instant::now();
        if sender.send(request(vec![point(&probe_models[probe_idx], "probe-pod", value)], Vec::new())).await.is_err() {
            timeouts += 1;
        } else {
            let deadline = tokio::time::Instant::from_std(pushed_at + TIMEOUT);
            loop {
                match tokio::time::timeout_at(deadline, arrived.recv()).await {
                    Ok(Some((idx, state, at))) if idx == probe_idx && state == active && at >= pushed_at => {
                        latency.record(at - pushed_at);
                        break;
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => {
                        timeouts += 1;
                        break;
                    }
                }
            }
        }
        flip += 1;
        tokio::time::sleep(GAP).await;
    }
    (latency.summary(), timeouts)
}

impl TriggersResult {
    pub fn markdown(&self) -> String {
        let cores = |phase: &PhaseFigures| phase.server_cores.map_or("–".to_owned(), |cores| format!("{cores:.3}"));
        let added = match (self.without_triggers.server_cores, self.with_triggers.server_cores) {
            (Some(without), Some(with)) => format!("{:+.3}", with - without),
            _ => "–".to_owned(),
        };
        format!(
            "Fleet: {} models × {} pods × 2 metrics ({} series), once per second in {} requests per second; \
             {} streams (one per model, `max({GAUGE}{{model_name=…}})`), {} polled triggers every {:.0} s \
             (GetMetrics + IsActive; `max` of the gauge and `rate` of the counter, alternating).\n\n\
             | phase | seconds | server cores | GetMetrics probe (every 50 ms) | pushes sent / failed |\n\
             |---|---:|---:|---|---|\n\
             | pushes only | {:.1} | {} | {} | {} / {} |\n\
             | with the triggers | {:.1} | {} | {} | {} / {} |\n\n\
             | figure | value |\n|---|---|\n\
             | cores the triggers add | {added} |\n\
             | polled calls (GetMetrics and IsActive) | {} ({} failed) |\n\
             | stream messages received during the second phase | {} ({} streams refused) |\n\
             | push → activation (probe models) | {} ({} timeouts) |\n",
            self.models,
            self.pods,
            self.series,
            self.requests_per_s,
            self.streams,
            self.polled_triggers,
            self.poll_interval_s,
            self.without_triggers.seconds,
            cores(&self.without_triggers),
            self.without_triggers.get_metrics.one_line(),
            self.without_triggers.pushes_sent,
            self.without_triggers.pushes_failed,
            self.with_triggers.seconds,
            cores(&self.with_triggers),
            self.with_triggers.get_metrics.one_line(),
            self.with_triggers.pushes_sent,
            self.with_triggers.pushes_failed,
            self.polled_calls.one_line(),
            self.polled_failures,
            self.stream_messages,
            self.streams_failed,
            self.push_to_activation.one_line(),
            self.activation_timeouts,
        )
    }
}
