//! Window kernels against a plain sequential f64 sum over the same bytes.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use otelscale::store::kernels;

fn plain_sum(values: &[f64]) -> f64 {
    values.iter().sum()
}

fn bench_kernels(c: &mut Criterion) {
    let values: Vec<f64> = (0..1_000_000).map(|i| (i % 1000) as f64 * 0.5).collect();
    let mut group = c.benchmark_group("kernels_1m_f64");
    group.throughput(Throughput::Bytes((values.len() * 8) as u64));
    group.bench_function("plain_sequential_sum", |b| b.iter(|| plain_sum(std::hint::black_box(&values))));
    group.bench_function("sum", |b| b.iter(|| kernels::sum(std::hint::black_box(&values))));
    group.bench_function("max", |b| b.iter(|| kernels::max(std::hint::black_box(&values))));
    group.bench_function("counter_increase", |b| {
        b.iter(|| kernels::counter_increase(None, std::hint::black_box(&values)))
    });
    group.finish();
}

criterion_group!(benches, bench_kernels);
criterion_main!(benches);
