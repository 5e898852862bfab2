//! Payload builders, decoded back with opentelemetry-proto and checked after re-stamping.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;

use super::*;

fn decode(template: &PayloadTemplate) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest::decode(template.bytes()).expect("a template decodes as OTLP")
}

fn number_values(request: &ExportMetricsServiceRequest) -> Vec<(String, u64, f64)> {
    let mut values = Vec::new();
    for resource in &request.resource_metrics {
        for scope in &resource.scope_metrics {
            for metric in &scope.metrics {
                let points = match &metric.data {
                    Some(metric::Data::Gauge(gauge)) => &gauge.data_points,
                    Some(metric::Data::Sum(sum)) => &sum.data_points,
                    _ => continue,
                };
                for point in points {
                    let Some(number_data_point::Value::AsDouble(value)) = point.value else { panic!("double values") };
                    values.push((metric.name.clone(), point.time_unix_nano, value));
                }
            }
        }
    }
    values
}

#[test]
fn dcgm_templates_cover_every_series_once_and_restamp() {
    let mut templates = dcgm_templates(2_500, 1_000, 7).unwrap();
    assert_eq!(templates.len(), 3);
    assert_eq!(templates.iter().map(PayloadTemplate::n_points).sum::<usize>(), 2_500);
    let time = 1_800_000_000_123_456_789;
    for template in &mut templates {
        template.restamp(time, 12.5);
    }
    let decoded = decode(&templates[0]);
    let values = number_values(&decoded);
    assert_eq!(values.len(), 1_000);
    for (name, point_time, value) in &values {
        assert!(DCGM_GAUGES.contains(&name.as_str()));
        assert_eq!(*point_time, time);
        assert!((0.0..=100.0).contains(value), "{value}");
    }
    // Eight string labels per point, about the size the data-plane issue measures against.
    let point = match &decoded.resource_metrics[0].scope_metrics[0].metrics[0].data {
        Some(metric::Data::Gauge(gauge)) => &gauge.data_points[0],
        _ => unreachable!(),
    };
    assert_eq!(point.attributes.len(), 8);
    let bytes_per_point = templates[0].bytes().len() as f64 / 1_000.0;
    assert!((200.0..300.0).contains(&bytes_per_point), "{bytes_per_point}");

    // Re-stamping later moves every timestamp and changes values, deterministically.
    let before: Vec<f64> = values.iter().map(|v| v.2).collect();
    templates[0].restamp(time + 1_000_000_000, 27.5);
    let after = number_values(&decode(&templates[0]));
    assert!(after.iter().all(|v| v.1 == time + 1_000_000_000));
    assert_ne!(before, after.iter().map(|v| v.2).collect::<Vec<_>>());
    let again = dcgm_templates(2_500, 1_000, 7).unwrap();
    assert_eq!(again[1].bytes(), dcgm_templates(2_500, 1_000, 7).unwrap()[1].bytes());
}

#[test]
fn fleet_templates_hold_dcgm_vllm_and_training_metrics() {
    let shape = FleetShape { nodes: 5, gpus_per_node: 8, batch_points: 100, seed: 3 };
    let mut templates = shape.templates().unwrap();
    // 50 points per node, two nodes per batch of at most 100 points.
    assert_eq!(shape.points_per_node(), 50);
    assert_eq!(templates.len(), 3);
    assert_eq!(templates.iter().map(PayloadTemplate::n_points).sum::<usize>(), 250);
    for template in &mut templates {
        template.restamp(1_800_000_000_000_000_000, 10.0);
    }
    let request = decode(&templates[0]);
    assert_eq!(request.resource_metrics.len(), 2);
    let resource = request.resource_metrics[0].resource.as_ref().unwrap();
    let keys: Vec<&str> = resource.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert!(keys.contains(&"k8s.namespace.name") && keys.contains(&"k8s.pod.name") && keys.contains(&"host.name"));
    let names: Vec<&str> =
        request.resource_metrics[0].scope_metrics[0].metrics.iter().map(|metric| metric.name.as_str()).collect();
    for expected in [
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "vllm:num_requests_waiting",
        "vllm:gpu_cache_usage_perc",
        "vllm:generation_tokens",
        "model_training_tokens",
        "vllm:time_to_first_token_seconds",
    ] {
        assert!(names.contains(&expected), "{expected} missing");
    }
    let values = number_values(&request);
    let training: Vec<f64> = values.iter().filter(|v| v.0 == "model_training_tokens").map(|v| v.2).collect();
    assert_eq!(training.len(), 2);
    // 10 s at 4000–6000 tokens/s.
    assert!(training.iter().all(|&v| (40_000.0..=60_000.0).contains(&v)), "{training:?}");
    let histogram = request.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find_map(|metric| match &metric.data {
            Some(metric::Data::Histogram(histogram)) => Some(&histogram.data_points[0]),
            _ => None,
        })
        .unwrap();
    assert!((200..=300).contains(&histogram.count), "{}", histogram.count);
    assert_eq!(histogram.time_unix_nano, 1_800_000_000_000_000_000);
    assert!(histogram.sum.unwrap() > 0.0);
}

#[test]
fn signals_are_bounded_and_counters_grow() {
    let gauge = Signal::Gauge { low: 2.0, high: 4.0, period_s: 10.0, phase_s: 0.0 };
    for step in 0..100 {
        let value = gauge.value_at(step as f64 * 0.37);
        assert!((2.0..=4.0).contains(&value));
    }
    assert_eq!(gauge.value_at(5.0), 4.0);
    let counter = Signal::Counter { per_second: 10.0 };
    assert_eq!(counter.value_at(2.55), 25.0);
    assert!(counter.value_at(3.0) > counter.value_at(2.0));
}
