//! Query evaluation: `avg` of `rate` over 100k counter series with 120 samples each in the
//! window, plus the store's memory per sample and per series. One series in a hundred has a
//! counter reset in the window; the others grow steadily, as counters of live pods do.
//!
//! Two layouts of the same 120 in-window samples per series:
//! - `one_chunk`: each series holds exactly the 120 samples of the window;
//! - `edge_chunk`: each series holds 180 samples and the window starts 60 samples in, so the
//!   window's oldest chunk straddles its start and has to be scanned.
//!
//! Set `OTELSCALE_BENCH_1M_SERIES=1` to also build 1 M series × 120 samples (about a minute and
//! 2 GB) for the memory figures and the query time at that size.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use otelscale::query::{evaluate, parse_metric_query, QueryLimits};
use otelscale::store::{BatchSample, LabelPair, SampleBatch, SeriesKey, SeriesKind, Store, StoreConfig, WindowOp};

const NOW_MS: i64 = 1_800_000_000_000;
const SAMPLES_IN_WINDOW: i64 = 120;
/// Samples arrive every second; the window reaches half a second before the oldest wanted one.
const WINDOW_MS: i64 = SAMPLES_IN_WINDOW * 1_000 + 500;

/// The resident set of this process in bytes (Linux), to cross-check `Store::heap_bytes`.
fn resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A store with `n_series` counter series of `samples_per_series` samples one second apart,
/// the newest one second before `NOW_MS`, appended one batch per second as a fleet would send.
fn store_with(n_series: usize, samples_per_series: i64) -> Store {
    let store = Store::new(StoreConfig::new(4, n_series, 600_000));
    let pod_names: Vec<String> = (0..n_series).map(|series_idx| format!("pod-{series_idx}")).collect();
    for second in 0..samples_per_series {
        let timestamp_ms = NOW_MS - (samples_per_series - second) * 1_000;
        let samples = pod_names
            .iter()
            .enumerate()
            .map(|(series_idx, pod)| {
                let key = SeriesKey::new("tokens", vec![LabelPair::new("pod", pod.as_str())]);
                // Counters growing by 1 to 10 per second; one series in a hundred restarted
                // (reset to zero) 30 s before the newest sample.
                let per_second = (1 + series_idx % 10) as f64;
                let restarted_at = samples_per_series - 30;
                let value = if series_idx % 100 == 0 && second >= restarted_at {
                    per_second * (second - restarted_at) as f64
                } else {
                    1e6 + per_second * second as f64
                };
                BatchSample::new(key, SeriesKind::CumulativeCounter, timestamp_ms, value)
            })
            .collect();
        store.append(SampleBatch { samples }, NOW_MS);
    }
    store
}

/// Builds the store, prints its memory figures, and returns it.
fn build_and_report(label: &str, n_series: usize, samples_per_series: i64) -> Store {
    let resident_before = resident_bytes();
    let build_started = Instant::now();
    let store = store_with(n_series, samples_per_series);
    let build_s = build_started.elapsed().as_secs_f64();
    let n_samples = n_series * samples_per_series as usize;
    let heap_bytes = store.heap_bytes();
    let resident_delta = resident_bytes().zip(resident_before).map(|(after, before)| after.saturating_sub(before));
    println!(
        "memory {label}: {n_series} series x {samples_per_series} samples, built in {build_s:.1} s: \
         heap_bytes {heap_bytes} = {:.2} B/sample, {:.1} B/series; resident delta {} (a cross-check \
         only: the allocator keeps freed batch memory, and reuses what an earlier store freed)",
        heap_bytes as f64 / n_samples as f64,
        heap_bytes as f64 / n_series as f64,
        resident_delta
            .map_or("n/a".to_string(), |bytes| format!("{bytes} = {:.2} B/sample", bytes as f64 / n_samples as f64)),
    );
    store
}

fn bench_query(c: &mut Criterion) {
    let query = parse_metric_query("avg(tokens)", &QueryLimits::default()).unwrap();
    let n_series = 100_000;
    let mut group = c.benchmark_group("query");
    group.throughput(Throughput::Elements(n_series as u64 * SAMPLES_IN_WINDOW as u64));
    group.sample_size(20);

    let store = build_and_report("one_chunk", n_series, SAMPLES_IN_WINDOW);
    let evaluation = evaluate(&store, &query, WindowOp::Rate, WINDOW_MS, NOW_MS);
    assert_eq!(evaluation.matched_series, n_series);
    group.bench_function("avg_rate_100k_series_x120_one_chunk", |b| {
        b.iter(|| evaluate(&store, &query, WindowOp::Rate, WINDOW_MS, NOW_MS))
    });
    drop(store);

    let store = build_and_report("edge_chunk", n_series, SAMPLES_IN_WINDOW + 60);
    let evaluation_edge = evaluate(&store, &query, WindowOp::Rate, WINDOW_MS, NOW_MS);
    assert_eq!(evaluation_edge.matched_series, n_series);
    // The same 120 samples per series are in both windows, so the answers agree.
    let (one_chunk_value, edge_value) = (evaluation.value.unwrap(), evaluation_edge.value.unwrap());
    assert!((one_chunk_value - edge_value).abs() <= 1e-9 * one_chunk_value.abs(), "{one_chunk_value} {edge_value}");
    group.bench_function("avg_rate_100k_series_x120_edge_chunk", |b| {
        b.iter(|| evaluate(&store, &query, WindowOp::Rate, WINDOW_MS, NOW_MS))
    });
    drop(store);

    if std::env::var_os("OTELSCALE_BENCH_1M_SERIES").is_some() {
        let n_series = 1_000_000;
        let store = build_and_report("one_chunk_1m", n_series, SAMPLES_IN_WINDOW);
        group.throughput(Throughput::Elements(n_series as u64 * SAMPLES_IN_WINDOW as u64));
        group.sample_size(10);
        group.bench_function("avg_rate_1m_series_x120_one_chunk", |b| {
            b.iter(|| evaluate(&store, &query, WindowOp::Rate, WINDOW_MS, NOW_MS))
        });
    }
    group.finish();
}

/// A GetMetrics call's trigger: parsed from its metadata every time (before the trigger
/// registry) against found in the registry (every poll after the first).
fn bench_trigger_resolution(c: &mut Criterion) {
    use std::collections::HashMap;
    use std::sync::Arc;

    use otelscale::scaler::registry::TriggerRegistry;
    use otelscale::scaler::TriggerSpec;
    use otelscale::telemetry::Telemetry;

    let metadata: HashMap<String, String> = [
        ("metricQuery", r#"max(vllm:num_requests_waiting{model_name=~"model-00(1|2).*", namespace="serving"})"#),
        ("operationOverTime", "avg"),
        ("windowSeconds", "30"),
        ("targetValue", "10"),
        ("activationTargetValue", "1"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    let limits = QueryLimits::default();
    let mut group = c.benchmark_group("trigger_resolution");
    group.bench_function("parse_every_call", |b| {
        b.iter(|| TriggerSpec::from_metadata(std::hint::black_box(&metadata), &limits, 300_000).unwrap())
    });
    let registry = TriggerRegistry::new(20_000, limits, 300_000, Arc::new(Telemetry::default()));
    registry.resolve("serving", &metadata).unwrap();
    group.bench_function("registry_hit", |b| {
        b.iter(|| registry.resolve("serving", std::hint::black_box(&metadata)).unwrap())
    });
    group.finish();
}

/// A selective query over a metric with 1 M series (125,000 models × 8 pods, one sample each):
/// `max(vllm:num_requests_waiting{model_name="model-000017"})` matches 8 series. Evaluated
/// through the label index (`evaluate`) and, for the ratio in the same run, by the full walk of
/// the metric that evaluation did before the index (every series' key checked).
fn bench_selective_query(c: &mut Criterion) {
    const SERIES: usize = 1_000_000;
    const PODS: usize = 8;
    let store = Store::new(StoreConfig::new(4, SERIES, 600_000));
    let build_started = Instant::now();
    for first in (0..SERIES).step_by(100_000) {
        let samples = (first..first + 100_000)
            .map(|series_idx| {
                let labels = vec![
                    LabelPair::new("model_name", format!("model-{:06}", series_idx / PODS)),
                    LabelPair::new("pod", format!("pod-{series_idx}")),
                ];
                let key = SeriesKey::new("vllm:num_requests_waiting", labels);
                BatchSample::new(key, SeriesKind::Gauge, NOW_MS - 1_000, (series_idx % PODS) as f64)
            })
            .collect();
        store.append(SampleBatch { samples }, NOW_MS);
    }
    println!(
        "selective: {SERIES} series built in {:.1} s, heap_bytes {:.1} B/series",
        build_started.elapsed().as_secs_f64(),
        store.heap_bytes() as f64 / SERIES as f64
    );
    let query =
        parse_metric_query(r#"max(vllm:num_requests_waiting{model_name="model-000017"})"#, &QueryLimits::default())
            .unwrap();
    let evaluation = evaluate(&store, &query, WindowOp::LastOne, 60_000, NOW_MS);
    assert_eq!((evaluation.matched_series, evaluation.value), (PODS, Some((PODS - 1) as f64)));
    let full_walk = || {
        let mut matched = 0usize;
        let walked: std::ops::ControlFlow<()> =
            store.visit_metric("vllm:num_requests_waiting", NOW_MS - 60_000, NOW_MS, |key, _| {
                if otelscale::query::eval::series_matches(&query, key) {
                    matched += 1;
                }
                std::ops::ControlFlow::Continue(())
            });
        assert!(walked.is_continue());
        matched
    };
    assert_eq!(full_walk(), PODS);
    let mut group = c.benchmark_group("selective_query");
    group.sample_size(10);
    group.bench_function("8_of_1m_series_label_index", |b| {
        b.iter(|| evaluate(&store, &query, WindowOp::LastOne, 60_000, NOW_MS))
    });
    group.bench_function("8_of_1m_series_full_walk", |b| b.iter(full_walk));
    group.finish();
}

/// A regex matcher over a label with 2,000 distinct values (`model-0000` … `model-1999`):
/// `max(vllm:num_requests_waiting{model_name=~"model-00(1|2).*"})` accepts 20 of them. Over
/// 2,000 models × 8 pods (the fleet scenario's 16,000 series: 160 matched) and 2,000 models ×
/// 500 pods (1 M series: 10,000 matched), through the label index (the regex tested once per
/// distinct value) and, for the ratio, by the full walk (once per series).
fn bench_regex_query(c: &mut Criterion) {
    let mut group = c.benchmark_group("regex_query");
    group.sample_size(10);
    for pods in [8usize, 500] {
        const MODELS: usize = 2_000;
        let series = MODELS * pods;
        let store = Store::new(StoreConfig::new(4, series, 600_000));
        for first in (0..series).step_by(100_000) {
            let samples = (first..(first + 100_000).min(series))
                .map(|series_idx| {
                    let labels = vec![
                        LabelPair::new("model_name", format!("model-{:04}", series_idx % MODELS)),
                        LabelPair::new("pod", format!("pod-{series_idx}")),
                    ];
                    let key = SeriesKey::new("vllm:num_requests_waiting", labels);
                    BatchSample::new(key, SeriesKind::Gauge, NOW_MS - 1_000, (series_idx / MODELS) as f64)
                })
                .collect();
            store.append(SampleBatch { samples }, NOW_MS);
        }
        let query = parse_metric_query(
            r#"max(vllm:num_requests_waiting{model_name=~"model-00(1|2).*"})"#,
            &QueryLimits::default(),
        )
        .unwrap();
        let evaluation = evaluate(&store, &query, WindowOp::LastOne, 60_000, NOW_MS);
        assert_eq!((evaluation.matched_series, evaluation.value), (20 * pods, Some((pods - 1) as f64)));
        let full_walk = || {
            let mut matched = 0usize;
            let walked: std::ops::ControlFlow<()> =
                store.visit_metric("vllm:num_requests_waiting", NOW_MS - 60_000, NOW_MS, |key, _| {
                    if otelscale::query::eval::series_matches(&query, key) {
                        matched += 1;
                    }
                    std::ops::ControlFlow::Continue(())
                });
            assert!(walked.is_continue());
            matched
        };
        assert_eq!(full_walk(), 20 * pods);
        group.bench_function(format!("2000_values_{series}_series_label_index"), |b| {
            b.iter(|| evaluate(&store, &query, WindowOp::LastOne, 60_000, NOW_MS))
        });
        group.bench_function(format!("2000_values_{series}_series_full_walk"), |b| b.iter(full_walk));
    }
    group.finish();
}

criterion_group!(benches, bench_query, bench_trigger_resolution, bench_selective_query, bench_regex_query);
criterion_main!(benches);
