//! OTLP decoding of a DCGM-like request (1,000 gauge points, 8 string labels each):
//! opentelemetry-proto's prost types, and prost decode plus conversion into store samples.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use otelscale::ingest::convert::{convert_request, ConvertLimits};
use otelscale::ingest::Rejections;
use otelscale::store::SampleBatch;
use otelscale_loadgen::shapes::dcgm_templates;
use prost::Message;

const NOW_MS: i64 = 1_800_000_000_000;

fn bench_decode(c: &mut Criterion) {
    let mut template = dcgm_templates(1_000, 1_000, 1).unwrap().remove(0);
    template.restamp(NOW_MS as u64 * 1_000_000, 1.0);
    let body = template.bytes().to_vec();
    let limits = ConvertLimits {
        labels_per_series_max: 64,
        label_name_bytes_max: 256,
        label_value_bytes_max: 2048,
        metric_name_bytes_max: 512,
        future_skew_ms_max: 300_000,
    };
    let mut group = c.benchmark_group("decode_dcgm_1000_points");
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("opentelemetry_proto_prost", |b| {
        b.iter(|| ExportMetricsServiceRequest::decode(std::hint::black_box(&body[..])).unwrap())
    });
    group.bench_function("prost_then_convert", |b| {
        b.iter(|| {
            let request = ExportMetricsServiceRequest::decode(&body[..]).unwrap();
            let mut batch = SampleBatch::default();
            let mut rejections = Rejections::default();
            convert_request(&request, &limits, NOW_MS, &mut batch, &mut rejections);
            batch
        })
    });
    group.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
