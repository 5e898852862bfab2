//! Payload shapes: DCGM-like gauge batches for throughput runs and a GPU fleet the way DCGM
//! exporter and vLLM report it through an OpenTelemetry Collector.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::payload::{count_sentinel, time_sentinel, value_sentinel, PayloadTemplate, Signal, TemplateError};

/// DCGM gauges used by the throughput shape, one per series in turn.
pub const DCGM_GAUGES: [&str; 4] =
    ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_POWER_USAGE"];

const GPU_MODEL: &str = "NVIDIA H100 80GB HBM3";

/// SplitMix64: a deterministic stream from a seed, for reproducible names and phases.
pub fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit_interval(seed: u64, idx: u64) -> f64 {
    (splitmix64(seed ^ idx.wrapping_mul(0x2545_F491_4F6C_DD1D)) >> 11) as f64 / (1u64 << 53) as f64
}

fn gpu_uuid(seed: u64, gpu_global_idx: u64) -> String {
    let a = splitmix64(seed ^ gpu_global_idx);
    let b = splitmix64(a);
    format!(
        "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn text(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// Allocates time and value slots while a request is being built.
#[derive(Debug, Default)]
struct SlotAllocator {
    n_time_slots: usize,
    signals: Vec<Signal>,
    n_points: usize,
}

impl SlotAllocator {
    fn time(&mut self) -> u64 {
        self.n_time_slots += 1;
        time_sentinel(self.n_time_slots - 1)
    }

    fn value(&mut self, signal: Signal) -> f64 {
        self.signals.push(signal);
        value_sentinel(self.signals.len() - 1)
    }

    fn count(&mut self, per_second: f64) -> u64 {
        self.signals.push(Signal::CountU64 { per_second });
        count_sentinel(self.signals.len() - 1)
    }

    fn number_point(&mut self, attributes: Vec<KeyValue>, signal: Signal) -> NumberDataPoint {
        self.n_points += 1;
        NumberDataPoint {
            attributes,
            time_unix_nano: self.time(),
            value: Some(number_data_point::Value::AsDouble(self.value(signal))),
            ..Default::default()
        }
    }

    fn finish(self, request: &ExportMetricsServiceRequest) -> Result<PayloadTemplate, TemplateError> {
        PayloadTemplate::new(request, self.n_time_slots, self.signals, self.n_points)
    }
}

fn gauge(name: &str, data_points: Vec<NumberDataPoint>) -> Metric {
    Metric { name: name.into(), data: Some(metric::Data::Gauge(Gauge { data_points })), ..Default::default() }
}

fn counter(name: &str, data_points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn resource_metrics(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource { attributes: resource, ..Default::default() }),
        scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
        ..Default::default()
    }
}

/// The eight labels DCGM exporter puts on a GPU gauge.
fn dcgm_labels(seed: u64, gpu_global_idx: u64, gpus_per_node: u64) -> Vec<KeyValue> {
    let node_idx = gpu_global_idx / gpus_per_node;
    let gpu_idx = gpu_global_idx % gpus_per_node;
    vec![
        text("gpu", gpu_idx.to_string()),
        text("UUID", gpu_uuid(seed, gpu_global_idx)),
        text("device", format!("nvidia{gpu_idx}")),
        text("modelName", GPU_MODEL),
        text("Hostname", format!("gpu-node-{node_idx:05}")),
        text("DCGM_FI_DRIVER_VERSION", "550.54.15"),
        text("container", "nvidia-dcgm-exporter"),
        text("namespace", "gpu-operator"),
    ]
}

/// Throughput shape: `series` DCGM-like gauge series (eight string labels each), cut into
/// requests of `points_per_request` points, grouped by metric name as a Collector does.
pub fn dcgm_templates(
    series: usize,
    points_per_request: usize,
    seed: u64,
) -> Result<Vec<PayloadTemplate>, TemplateError> {
    assert!(series > 0 && points_per_request > 0, "validated by the caller");
    let mut templates = Vec::new();
    let mut first_series = 0;
    while first_series < series {
        let last_series = (first_series + points_per_request).min(series);
        let mut slots = SlotAllocator::default();
        let mut points_by_metric: Vec<Vec<NumberDataPoint>> = vec![Vec::new(); DCGM_GAUGES.len()];
        for series_idx in first_series..last_series {
            let metric_idx = series_idx % DCGM_GAUGES.len();
            let gpu_global_idx = (series_idx / DCGM_GAUGES.len()) as u64;
            let signal = Signal::Gauge {
                low: 0.0,
                high: 100.0,
                period_s: 60.0,
                phase_s: 60.0 * unit_interval(seed, series_idx as u64),
            };
            points_by_metric[metric_idx].push(slots.number_point(dcgm_labels(seed, gpu_global_idx, 8), signal));
        }
        let metrics = DCGM_GAUGES
            .iter()
            .zip(points_by_metric)
            .filter(|(_, points)| !points.is_empty())
            .map(|(name, points)| gauge(name, points))
            .collect();
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![resource_metrics(vec![text("service.name", "dcgm-exporter")], metrics)],
        };
        templates.push(slots.finish(&request)?);
        first_series = last_series;
    }
    Ok(templates)
}

/// A GPU fleet: `nodes` × `gpus_per_node`.
#[derive(Debug, Clone, Copy)]
pub struct FleetShape {
    pub nodes: usize,
    pub gpus_per_node: usize,
    /// Most points in one request, like the Collector batch processor's `send_batch_size`.
    pub batch_points: usize,
    pub seed: u64,
}

/// Histogram bucket bounds of `vllm:time_to_first_token_seconds`.
const TTFT_BOUNDS_S: [f64; 8] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

impl FleetShape {
    /// Points one node reports per export: three DCGM gauges, two vLLM gauges and one vLLM
    /// counter per GPU, plus one training counter and one histogram per node.
    pub fn points_per_node(&self) -> usize {
        6 * self.gpus_per_node + 2
    }

    /// Series the fleet creates (a histogram adds `_count`, `_sum` and one `_bucket` per bound + 1).
    pub fn series_count(&self) -> usize {
        self.nodes * (6 * self.gpus_per_node + 1 + 2 + TTFT_BOUNDS_S.len() + 1)
    }

    fn node_metrics(&self, slots: &mut SlotAllocator, node_idx: usize) -> ResourceMetrics {
        let seed = self.seed;
        let gpus = self.gpus_per_node as u64;
        let host = format!("gpu-node-{node_idx:05}");
        let wiggle = |idx: u64| unit_interval(seed, (node_idx as u64) << 8 | idx);
        let mut utilization = Vec::new();
        let mut framebuffer = Vec::new();
        let mut copy_utilization = Vec::new();
        let mut waiting = Vec::new();
        let mut cache_usage = Vec::new();
        let mut generation_tokens = Vec::new();
        for gpu_idx in 0..gpus {
            let gpu_global_idx = node_idx as u64 * gpus + gpu_idx;
            let dcgm = || {
                vec![
                    text("gpu", gpu_idx.to_string()),
                    text("UUID", gpu_uuid(seed, gpu_global_idx)),
                    text("device", format!("nvidia{gpu_idx}")),
                    text("modelName", GPU_MODEL),
                    text("Hostname", host.clone()),
                ]
            };
            let phase_s = 30.0 * wiggle(gpu_idx);
            let triangle = |low, high, period_s| Signal::Gauge { low, high, period_s, phase_s };
            utilization.push(slots.number_point(dcgm(), triangle(20.0, 100.0, 60.0)));
            framebuffer.push(slots.number_point(dcgm(), triangle(20_000.0, 78_000.0, 90.0)));
            copy_utilization.push(slots.number_point(dcgm(), triangle(0.0, 60.0, 45.0)));
            let vllm =
                || vec![text("model_name", "meta-llama/Llama-3.1-8B-Instruct"), text("gpu", gpu_idx.to_string())];
            waiting.push(slots.number_point(vllm(), triangle(0.0, 40.0, 20.0)));
            cache_usage.push(slots.number_point(vllm(), triangle(0.1, 0.95, 40.0)));
            let tokens_per_s = 1_500.0 + 1_000.0 * wiggle(100 + gpu_idx);
            generation_tokens.push(slots.number_point(vllm(), Signal::Counter { per_second: tokens_per_s }));
        }
        let training = vec![slots.number_point(
            vec![text("model", "my_model"), text("job", "training")],
            Signal::Counter { per_second: 4_000.0 + 2_000.0 * wiggle(200) },
        )];
        slots.n_points += 1;
        let requests_per_s = 20.0 + 10.0 * wiggle(300);
        let ttft = HistogramDataPoint {
            attributes: vec![text("model_name", "meta-llama/Llama-3.1-8B-Instruct")],
            time_unix_nano: slots.time(),
            count: slots.count(requests_per_s),
            sum: Some(slots.value(Signal::Counter { per_second: requests_per_s * 0.12 })),
            // A fixed shape; count and sum grow, as a steady latency distribution would.
            bucket_counts: vec![5, 20, 60, 120, 60, 20, 10, 4, 1],
            explicit_bounds: TTFT_BOUNDS_S.to_vec(),
            ..Default::default()
        };
        let metrics = vec![
            gauge("DCGM_FI_DEV_GPU_UTIL", utilization),
            gauge("DCGM_FI_DEV_FB_USED", framebuffer),
            gauge("DCGM_FI_DEV_MEM_COPY_UTIL", copy_utilization),
            gauge("vllm:num_requests_waiting", waiting),
            gauge("vllm:gpu_cache_usage_perc", cache_usage),
            counter("vllm:generation_tokens", generation_tokens),
            counter("model_training_tokens", training),
            Metric {
                name: "vllm:time_to_first_token_seconds".into(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: vec![ttft],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Default::default()
            },
        ];
        let resource = vec![
            text("k8s.namespace.name", "ml"),
            text("k8s.pod.name", format!("vllm-{node_idx:05}")),
            text("k8s.node.name", host.clone()),
            text("host.name", host),
        ];
        resource_metrics(resource, metrics)
    }

    /// One template per Collector batch: whole nodes, up to `batch_points` points each.
    pub fn templates(&self) -> Result<Vec<PayloadTemplate>, TemplateError> {
        let nodes_per_batch = (self.batch_points / self.points_per_node()).max(1);
        let mut templates = Vec::new();
        let mut first_node = 0;
        while first_node < self.nodes {
            let last_node = (first_node + nodes_per_batch).min(self.nodes);
            let mut slots = SlotAllocator::default();
            let resource_metrics =
                (first_node..last_node).map(|node_idx| self.node_metrics(&mut slots, node_idx)).collect();
            let request = ExportMetricsServiceRequest { resource_metrics };
            templates.push(slots.finish(&request)?);
            first_node = last_node;
        }
        Ok(templates)
    }
}

#[cfg(test)]
mod tests;
