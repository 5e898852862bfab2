//! `scale-sim`: KEDA + HPA arithmetic without a cluster. A training job's token rate ramps
//! (doubling every few seconds); its pods push cumulative token counters to otelscale; the sim
//! plays KEDA (StreamIsActive for activation, GetMetrics every HPA sync) and applies the HPA
//! formula. From the same ground truth it computes the timeline of a pull pipeline (Prometheus
//! scraping every 15 s, `rate()[1m]`, KEDA polling every 30 s). The figure: seconds from the load
//! change to each scaling decision, push versus pull.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use serde::Serialize;
use tokio::sync::mpsc;

use super::throughput::now_unix_nano;
use crate::keda::{self, HpaPolicy};

#[derive(Debug, Clone)]
pub struct ScaleSimConfig {
    pub otlp_grpc_addr: SocketAddr,
    pub scaler_addr: SocketAddr,
    /// Zero load before the job starts (tests activation).
    pub idle: Duration,
    pub baseline_tokens_per_s: f64,
    pub warmup: Duration,
    pub doublings: u32,
    pub double_every: Duration,
    pub hold: Duration,
    pub policy: HpaPolicy,
    /// How often the pods export (the SDK's export interval).
    pub export_interval: Duration,
    /// How often the HPA reads the metric through KEDA (GetMetrics).
    pub hpa_sync_interval: Duration,
    /// `windowSeconds` of the trigger.
    pub window: Duration,
    pub pull: PullPipeline,
    pub seed: u64,
    pub show_progress: bool,
}

/// The pull pipeline the report compares against.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PullPipeline {
    pub scrape_interval_s: f64,
    pub keda_polling_interval_s: f64,
    pub rate_window_s: f64,
}

impl Default for PullPipeline {
    fn default() -> Self {
        PullPipeline { scrape_interval_s: 15.0, keda_polling_interval_s: 30.0, rate_window_s: 60.0 }
    }
}

/// Best, mean and worst of a figure over pipeline phases, in seconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PhaseSpread {
    pub best_s: f64,
    pub mean_s: f64,
    pub worst_s: f64,
}

impl PhaseSpread {
    fn of(values: &[f64]) -> Option<PhaseSpread> {
        if values.is_empty() {
            return None;
        }
        let best_s = values.iter().copied().fold(f64::INFINITY, f64::min);
        let worst_s = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(PhaseSpread { best_s, mean_s: values.iter().sum::<f64>() / values.len() as f64, worst_s })
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Decision {
    /// Seconds since the load started.
    pub at_s: f64,
    pub metric_value: f64,
    pub replicas: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleSimResult {
    pub final_tokens_per_s: f64,
    pub ideal_final_replicas: u32,
    /// Seconds from the load start to the StreamIsActive activation message.
    pub push_activation_s: Option<f64>,
    /// Seconds from the load start to the first KEDA poll that sees a non-zero rate.
    pub pull_activation_s: Option<f64>,
    /// Seconds from the start of the ramp to a decision reaching the final ideal replica count.
    pub push_reaches_final_s: Option<f64>,
    pub pull_reaches_final_s: Option<f64>,
    /// The pull figures over every scrape and poll phase (1 s grid) relative to the load start.
    pub pull_activation_over_phases: PhaseSpread,
    pub pull_reaches_final_over_phases: PhaseSpread,
    pub push_decisions: Vec<Decision>,
    /// The pull pipeline's decisions with scrapes and polls aligned to the load start.
    pub pull_decisions: Vec<Decision>,
    pub ramp_starts_at_s: f64,
    pub hpa_sync_interval_s: f64,
    pub window_s: f64,
    pub pull: PullPipeline,
}

impl ScaleSimConfig {
    fn ramp_start_s(&self) -> f64 {
        self.warmup.as_secs_f64()
    }

    /// Total tokens per second `t` seconds after the load started.
    pub fn tokens_per_s(&self, t: f64) -> f64 {
        if t < 0.0 {
            return 0.0;
        }
        let ramp_t = t - self.ramp_start_s();
        if ramp_t < 0.0 {
            return self.baseline_tokens_per_s;
        }
        let steps = ((ramp_t / self.double_every.as_secs_f64()).floor() as u32 + 1).min(self.doublings);
        self.baseline_tokens_per_s * f64::from(1u32 << steps)
    }

    fn load_duration_s(&self) -> f64 {
        self.warmup.as_secs_f64()
            + self.double_every.as_secs_f64() * f64::from(self.doublings)
            + self.hold.as_secs_f64()
    }

    fn final_tokens_per_s(&self) -> f64 {
        self.baseline_tokens_per_s * f64::from(1u32 << self.doublings)
    }
}

fn counter_request(job: &str, pod_counters: &[f64], time_unix_nano: u64) -> ExportMetricsServiceRequest {
    let text = |key: &str, value: String| KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
        ..Default::default()
    };
    let resource_metrics = pod_counters
        .iter()
        .enumerate()
        .map(|(pod_idx, &tokens)| ResourceMetrics {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![text("job", job.to_owned()), text("k8s.pod.name", format!("trainer-{pod_idx}"))],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "model_training_tokens".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![text("model", "my_model".to_owned())],
                            time_unix_nano,
                            value: Some(number_data_point::Value::AsDouble(tokens.floor())),
                            ..Default::default()
                        }],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

pub async fn run(config: &ScaleSimConfig) -> anyhow::Result<ScaleSimResult> {
    let job =
        format!("scale-sim-{:08x}", crate::shapes::splitmix64(config.seed ^ u64::from(std::process::id())) as u32);
    let trigger = keda::scaled_object(
        "loadgen-scale-sim",
        &[
            ("metricQuery", format!("avg(model_training_tokens{{job={job}, model=my_model}})")),
            ("operationOverTime", "rate".to_owned()),
            ("targetValue", config.policy.target_value.to_string()),
            ("windowSeconds", config.window.as_secs().max(1).to_string()),
        ],
    );
    let mut otlp = MetricsServiceClient::connect(format!("http://{}", config.otlp_grpc_addr)).await?;
    let mut scaler = keda::connect(config.scaler_addr).await?;
    let mut stream = scaler.stream_is_active(trigger.clone()).await?.into_inner();
    let (activations, mut activated) = mpsc::unbounded_channel::<Instant>();
    let stream_task = tokio::spawn(async move {
        while let Ok(Some(message)) = stream.message().await {
            if message.result && activations.send(Instant::now()).is_err() {
                break;
            }
        }
    });

    let idle_s = config.idle.as_secs_f64();
    let total_s = idle_s + config.load_duration_s();
    let progress = crate::progress::bar(config.show_progress, (total_s * 1000.0) as u64, "ms");
    let started = Instant::now();
    let load_started = started + config.idle;
    let mut replicas = config.policy.min_replicas.max(1);
    let mut pod_counters: Vec<f64> = vec![0.0; replicas as usize];
    let mut push_decisions = Vec::new();
    let mut last_export = started;
    let mut next_export = started;
    let mut next_sync = load_started + config.hpa_sync_interval;
    while started.elapsed().as_secs_f64() < total_s {
        let now = Instant::now();
        if now >= next_export {
            // Each pod served an equal share of the load since the last export.
            let since_load_s = now.saturating_duration_since(load_started).as_secs_f64();
            let dt_s = now.duration_since(last_export).as_secs_f64();
            let per_pod =
                config.tokens_per_s(if now < load_started { -1.0 } else { since_load_s }) * dt_s / replicas as f64;
            pod_counters.iter_mut().for_each(|counter| *counter += per_pod);
            otlp.export(counter_request(&job, &pod_counters, now_unix_nano())).await?;
            last_export = now;
            next_export += config.export_interval;
        }
        if now >= next_sync {
            let value = keda::metric_value(&mut scaler, &trigger).await?;
            let desired = config.policy.desired_replicas(replicas, value);
            push_decisions.push(Decision {
                at_s: now.duration_since(load_started).as_secs_f64(),
                metric_value: value,
                replicas: desired,
            });
            // New pods start with empty counters; removed pods stop reporting.
            pod_counters.resize(desired as usize, 0.0);
            replicas = desired;
            next_sync += config.hpa_sync_interval;
        }
        progress.set_position(started.elapsed().as_millis() as u64);
        let wake = next_export.min(next_sync);
        tokio::time::sleep_until(wake.into()).await;
    }
    progress.finish_and_clear();
    stream_task.abort();
    let push_activation_s = std::iter::from_fn(|| activated.try_recv().ok())
        .find(|at| *at >= load_started)
        .map(|at| at.duration_since(load_started).as_secs_f64());

    let ramp_starts_at_s = config.ramp_start_s();
    let ideal_final_replicas = ((config.final_tokens_per_s() / config.policy.target_value).ceil() as u32)
        .clamp(config.policy.min_replicas, config.policy.max_replicas);
    let horizon_s = total_s - idle_s + 180.0;
    let first_activation = |decisions: &[Decision]| decisions.iter().find(|d| d.metric_value > 0.0).map(|d| d.at_s);
    let reaches = |decisions: &[Decision]| {
        decisions
            .iter()
            .find(|decision| decision.at_s >= ramp_starts_at_s && decision.replicas >= ideal_final_replicas)
            .map(|decision| decision.at_s - ramp_starts_at_s)
    };
    let pull_decisions = pull_timeline(config, horizon_s, 0.0, 0.0);
    let pull_activation_s = first_activation(&pull_decisions);
    let (mut pull_activations, mut pull_reached) = (Vec::new(), Vec::new());
    for scrape_phase in 0..config.pull.scrape_interval_s.ceil() as u32 {
        for poll_phase in 1..=config.pull.keda_polling_interval_s.ceil() as u32 {
            let decisions = pull_timeline(config, horizon_s, f64::from(scrape_phase), f64::from(poll_phase));
            pull_activations.extend(first_activation(&decisions));
            pull_reached.extend(reaches(&decisions));
        }
    }
    Ok(ScaleSimResult {
        final_tokens_per_s: config.final_tokens_per_s(),
        ideal_final_replicas,
        push_activation_s,
        pull_activation_s,
        push_reaches_final_s: reaches(&push_decisions),
        pull_reaches_final_s: reaches(&pull_decisions),
        pull_activation_over_phases: PhaseSpread::of(&pull_activations).unwrap_or_default(),
        pull_reaches_final_over_phases: PhaseSpread::of(&pull_reached).unwrap_or_default(),
        push_decisions,
        pull_decisions,
        ramp_starts_at_s,
        hpa_sync_interval_s: config.hpa_sync_interval.as_secs_f64(),
        window_s: config.window.as_secs_f64(),
        pull: config.pull,
    })
}

/// Cumulative tokens `t` seconds after the load started (the ground truth both pipelines see).
fn total_tokens(config: &ScaleSimConfig, t: f64) -> f64 {
    // Piecewise constant rate: integrate in 10 ms steps, exact enough for 15 s scrapes.
    let step_s = 0.01;
    let n_steps = (t.max(0.0) / step_s) as u64;
    (0..n_steps).map(|i| config.tokens_per_s(i as f64 * step_s) * step_s).sum()
}

/// The pull pipeline's decisions, computed from the same load: Prometheus scrapes the summed
/// counter every `scrape_interval_s` from `scrape_phase_s` (after the load has run past the end,
/// the last rate holds), KEDA's first poll is at `poll_phase_s` (or one interval in when 0),
/// `rate()` over `rate_window_s` needs two scrapes, KEDA polls every `keda_polling_interval_s`,
/// and the HPA applies the same policy to the per-pod average.
pub fn pull_timeline(config: &ScaleSimConfig, horizon_s: f64, scrape_phase_s: f64, poll_phase_s: f64) -> Vec<Decision> {
    let pull = config.pull;
    let scrape_times: Vec<f64> = (0..)
        .map(|k| scrape_phase_s + k as f64 * pull.scrape_interval_s)
        .filter(|&t| t > 0.0)
        .take_while(|&t| t <= horizon_s)
        .collect();
    let scrapes: Vec<(f64, f64)> = scrape_times.iter().map(|&t| (t, total_tokens(config, t))).collect();
    let mut replicas = config.policy.min_replicas.max(1);
    let mut decisions = Vec::new();
    let mut poll_s = if poll_phase_s > 0.0 { poll_phase_s } else { pull.keda_polling_interval_s };
    while poll_s <= horizon_s {
        let in_window: Vec<&(f64, f64)> =
            scrapes.iter().filter(|(t, _)| *t <= poll_s && *t > poll_s - pull.rate_window_s).collect();
        let total_rate = match (in_window.first(), in_window.last()) {
            (Some(first), Some(last)) if last.0 > first.0 => (last.1 - first.1) / (last.0 - first.0),
            _ => 0.0,
        };
        let per_pod = total_rate / replicas as f64;
        replicas = config.policy.desired_replicas(replicas, per_pod);
        decisions.push(Decision { at_s: poll_s, metric_value: per_pod, replicas });
        poll_s += pull.keda_polling_interval_s;
    }
    decisions
}

impl ScaleSimResult {
    pub fn markdown(&self) -> String {
        let seconds =
            |value: Option<f64>| value.map_or_else(|| "not within the run".to_owned(), |s| format!("{s:.2} s"));
        let spread =
            |spread: &PhaseSpread| format!("{:.1} s / {:.1} s / {:.1} s", spread.best_s, spread.mean_s, spread.worst_s);
        let mut out = format!(
            "Load: tokens/s doubling to {:.0}/s (ideal {} replicas at the end); trigger `rate` over {:.0} s; \
             HPA reads every {:.0} s. Pull pipeline: scrape every {:.0} s, `rate()[{:.0}s]`, KEDA polls every {:.0} s.\n\n\
             | | push (otelscale), measured | pull, phases aligned with the load | pull over all phases: best / mean / worst |\n|---|---|---|---|\n\
             | load start → active | {} | {} | {} |\n\
             | ramp start → {} replicas decided | {} | {} | {} |\n\n",
            self.final_tokens_per_s,
            self.ideal_final_replicas,
            self.window_s,
            self.hpa_sync_interval_s,
            self.pull.scrape_interval_s,
            self.pull.rate_window_s,
            self.pull.keda_polling_interval_s,
            seconds(self.push_activation_s),
            seconds(self.pull_activation_s),
            spread(&self.pull_activation_over_phases),
            self.ideal_final_replicas,
            seconds(self.push_reaches_final_s),
            seconds(self.pull_reaches_final_s),
            spread(&self.pull_reaches_final_over_phases),
        );
        out.push_str("Push decisions (seconds after load start: per-pod value → replicas):\n\n");
        for decision in &self.push_decisions {
            out.push_str(&format!("- {:.1} s: {:.1} → {}\n", decision.at_s, decision.metric_value, decision.replicas));
        }
        out.push_str("\nPull decisions, scrapes and polls aligned with the load start:\n\n");
        for decision in &self.pull_decisions {
            out.push_str(&format!("- {:.1} s: {:.1} → {}\n", decision.at_s, decision.metric_value, decision.replicas));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ScaleSimConfig {
        ScaleSimConfig {
            otlp_grpc_addr: "127.0.0.1:1".parse().unwrap(),
            scaler_addr: "127.0.0.1:1".parse().unwrap(),
            idle: Duration::from_secs(1),
            baseline_tokens_per_s: 1_000.0,
            warmup: Duration::from_secs(5),
            doublings: 3,
            double_every: Duration::from_secs(2),
            hold: Duration::from_secs(10),
            policy: HpaPolicy { target_value: 500.0, min_replicas: 1, max_replicas: 50, tolerance: 0.1 },
            export_interval: Duration::from_secs(1),
            hpa_sync_interval: Duration::from_secs(15),
            window: Duration::from_secs(10),
            pull: PullPipeline::default(),
            seed: 1,
            show_progress: false,
        }
    }

    #[test]
    fn load_profile_doubles_then_holds() {
        let config = config();
        assert_eq!(config.tokens_per_s(-1.0), 0.0);
        assert_eq!(config.tokens_per_s(0.0), 1_000.0);
        assert_eq!(config.tokens_per_s(4.9), 1_000.0);
        assert_eq!(config.tokens_per_s(5.0), 2_000.0);
        assert_eq!(config.tokens_per_s(7.0), 4_000.0);
        assert_eq!(config.tokens_per_s(9.5), 8_000.0);
        assert_eq!(config.tokens_per_s(100.0), 8_000.0);
        assert!((total_tokens(&config, 5.0) - 5_000.0).abs() < 1.0);
    }

    #[test]
    fn pull_pipeline_decides_at_keda_polls_from_scraped_rates() {
        let config = config();
        let decisions = pull_timeline(&config, 120.0, 0.0, 0.0);
        // Polls at 30, 60, 90, 120 s.
        let times: Vec<f64> = decisions.iter().map(|d| d.at_s).collect();
        assert_eq!(times, [30.0, 60.0, 90.0, 120.0]);
        // At 30 s the scrapes at 15 and 30 s see 8000 tokens/s: ceil(1 × 8000/500) = 16.
        assert!((decisions[0].metric_value - 8_000.0).abs() < 1.0, "{:?}", decisions[0]);
        assert_eq!(decisions[0].replicas, 16);
        // Then it holds: 8000 / 16 = 500 per pod, inside the tolerance.
        assert!(decisions[1..].iter().all(|d| d.replicas == 16));
        // Shifted phases: the first poll at 5 s sees one scrape only (no rate yet).
        let shifted = pull_timeline(&config, 120.0, 3.0, 5.0);
        assert_eq!(shifted[0].at_s, 5.0);
        assert_eq!(shifted[0].metric_value, 0.0);
        assert_eq!(shifted[1].at_s, 35.0);
        assert!(shifted[1].metric_value > 0.0);
    }
}
