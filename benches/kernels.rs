//! Window kernels against a plain sequential f64 sum over the same bytes, in the same run.
//!
//! Two sizes: 1 M values (8 MB, from the last-level cache: the bandwidth-bound case) and the
//! 120 values of one chunk (960 B, in L1: what an edge-chunk scan sees, call overhead
//! included). Each kernel runs with the detected kernel set (`avx2` here) and its scalar twin
//! (`scalar_*`). The window look-ups (`count` as a partition point on the offsets column,
//! `last_in_window`) are not scans; they are timed per call on one chunk.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use otelscale::store::kernels::{self, KernelSet};

fn plain_sequential_sum(values: &[f64]) -> f64 {
    values.iter().sum()
}

fn bench_scans(c: &mut Criterion, group_name: &str, values: &[f64]) {
    let detected = KernelSet::get();
    let scalar = KernelSet::scalar();
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Bytes(std::mem::size_of_val(values) as u64));
    group.bench_function("plain_sequential_sum", |b| b.iter(|| plain_sequential_sum(std::hint::black_box(values))));
    group.bench_function("sum", |b| b.iter(|| detected.sum(std::hint::black_box(values))));
    group.bench_function("min", |b| b.iter(|| detected.min(std::hint::black_box(values))));
    group.bench_function("max", |b| b.iter(|| detected.max(std::hint::black_box(values))));
    group.bench_function("counter_increase", |b| {
        b.iter(|| detected.counter_increase(None, std::hint::black_box(values)))
    });
    group.bench_function("scalar_sum", |b| b.iter(|| scalar.sum(std::hint::black_box(values))));
    group.bench_function("scalar_min", |b| b.iter(|| scalar.min(std::hint::black_box(values))));
    group.bench_function("scalar_max", |b| b.iter(|| scalar.max(std::hint::black_box(values))));
    group.bench_function("scalar_counter_increase", |b| {
        b.iter(|| scalar.counter_increase(None, std::hint::black_box(values)))
    });
    group.finish();
}

fn bench_lookups(c: &mut Criterion) {
    // One chunk's offsets column: 120 samples about a second apart.
    let offsets_ms: Vec<u32> = (0..120).map(|idx| idx * 1_000 + idx % 7).collect();
    let values: Vec<f64> = (0..120).map(f64::from).collect();
    let mut group = c.benchmark_group("kernels_chunk_120_lookup");
    group.throughput(Throughput::Elements(1));
    group.bench_function("count_at_or_after", |b| {
        b.iter(|| kernels::count_at_or_after(std::hint::black_box(&offsets_ms), std::hint::black_box(60_500)))
    });
    group.bench_function("last_in_window", |b| {
        b.iter(|| {
            kernels::last_at_or_after(
                std::hint::black_box(&offsets_ms),
                std::hint::black_box(&values),
                std::hint::black_box(60_500),
            )
        })
    });
    group.finish();
}

fn bench_kernels(c: &mut Criterion) {
    println!("kernel set: {}", KernelSet::get().name());
    let values: Vec<f64> = (0..1_000_000).map(|i| (i % 1000) as f64 * 0.5).collect();
    bench_scans(c, "kernels_1m_f64", &values);
    // Starting at index 1: a slice that is not 32-byte aligned, as an edge chunk's tail is not.
    bench_scans(c, "kernels_chunk_120_f64", &values[1..121]);
    bench_lookups(c);
}

criterion_group!(benches, bench_kernels);
criterion_main!(benches);
