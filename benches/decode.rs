//! OTLP decoding of a DCGM-like request (1,000 gauge points, 8 string labels each), all in one
//! criterion run so the figures compare as ratios:
//! - opentelemetry-proto's prost types (the reference),
//! - prost decode plus the prost walk through the conversion policy (the JSON path's second half),
//! - the zero-copy decoder alone,
//! - zero-copy decode plus append into existing series, and into new series.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use otelscale::ingest::policy::ConvertLimits;
use otelscale::ingest::prost_walk::convert_request;
use otelscale::ingest::{wire, Rejections};
use otelscale::store::{DecodedBatch, Store, StoreConfig};
use otelscale_loadgen::shapes::dcgm_templates;
use prost::Message;

const NOW_MS: i64 = 1_800_000_000_000;
const POINTS: usize = 1_000;

/// The default configuration's limits, computed once (building a `Config` parses the flags).
fn limits() -> ConvertLimits {
    static LIMITS: std::sync::OnceLock<ConvertLimits> = std::sync::OnceLock::new();
    *LIMITS.get_or_init(ConvertLimits::default)
}

fn payload(seed: u64, elapsed_s: f64) -> Vec<u8> {
    let mut template = dcgm_templates(POINTS, POINTS, seed).unwrap().remove(0);
    template.restamp(NOW_MS as u64 * 1_000_000, elapsed_s);
    template.bytes().to_vec()
}

fn decode_fast(body: &[u8]) -> DecodedBatch<'_> {
    let mut batch = DecodedBatch::new();
    let mut rejections = Rejections::default();
    wire::decode_request(body, &limits(), NOW_MS, &mut batch, &mut rejections).unwrap();
    batch
}

fn store() -> Store {
    Store::new(StoreConfig::new(4, 10_000_000, 600_000))
}

fn bench_decode(c: &mut Criterion) {
    let body = payload(1, 1.0);
    let mut group = c.benchmark_group("decode_dcgm_1000_points");
    group.throughput(Throughput::Elements(POINTS as u64));
    group.bench_function("opentelemetry_proto_prost", |b| {
        b.iter(|| ExportMetricsServiceRequest::decode(std::hint::black_box(&body[..])).unwrap())
    });
    group.bench_function("prost_then_convert", |b| {
        b.iter(|| {
            let request = ExportMetricsServiceRequest::decode(&body[..]).unwrap();
            let mut batch = DecodedBatch::new();
            let mut rejections = Rejections::default();
            convert_request(&request, &limits(), NOW_MS, &mut batch, &mut rejections);
            batch.len()
        })
    });
    group.bench_function("zero_copy", |b| b.iter(|| decode_fast(std::hint::black_box(&body))));

    // Existing series: the store already holds all 1,000; every iteration appends one sample to
    // each, one millisecond later than the last.
    let existing = store();
    existing.append_decoded(&decode_fast(&body), NOW_MS);
    // The template is built once and re-stamped in place, as loadgen does: building one per
    // iteration would evict the store from the caches between measured runs.
    let mut timestamp_ms = NOW_MS;
    let mut template = dcgm_templates(POINTS, POINTS, 1).unwrap().remove(0);
    group.bench_function("zero_copy_and_append_existing_series", |b| {
        b.iter_batched(
            || {
                timestamp_ms += 1;
                template.restamp(timestamp_ms as u64 * 1_000_000, 1.0);
                template.bytes().to_vec()
            },
            |body| {
                let outcome = existing.append_decoded(&decode_fast(&body), NOW_MS);
                assert_eq!(outcome.appended, POINTS as u64);
            },
            BatchSize::SmallInput,
        )
    });

    // New series: a fresh payload shape (new seed → new GPU UUIDs) every iteration.
    let fresh = store();
    let mut seed = 1_000;
    group.bench_function("zero_copy_and_append_new_series", |b| {
        b.iter_batched(
            || {
                seed += 1;
                payload(seed, 1.0)
            },
            |body| {
                let outcome = fresh.append_decoded(&decode_fast(&body), NOW_MS);
                assert_eq!(outcome.series_created, POINTS as u64);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
