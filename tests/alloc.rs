//! Allocation discipline of the data plane: decoding a batch and appending it to existing series
//! allocates a fixed number of times per request, whatever the number of points (no allocation
//! per point). Counted with a counting global allocator, in its own test binary. The prost path
//! (OTLP JSON, non-canonical protobuf) is held to the same rule from the decoded request on: its
//! message tree allocates per attribute while it is decoded, but the conversion does not.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use otelscale::ingest::policy::ConvertLimits;
use otelscale::ingest::prost_walk::convert_request;
use otelscale::ingest::{wire, Rejections};
use otelscale::store::{DecodedBatch, Store, StoreConfig};
use otelscale_loadgen::shapes::dcgm_templates;
use prost::Message;

const NOW_MS: i64 = 1_800_000_000_000;

fn limits() -> ConvertLimits {
    ConvertLimits::default()
}

/// Allocations made by decoding `body` and appending it to `store`.
fn allocations_per_batch(store: &Store, body: &[u8]) -> u64 {
    let limits = limits();
    let info = allocation_counter::measure(|| {
        let mut batch = DecodedBatch::new();
        let mut rejections = Rejections::default();
        wire::decode_request(body, &limits, NOW_MS, &mut batch, &mut rejections).unwrap();
        let outcome = store.append_decoded(&batch, NOW_MS);
        assert_eq!(outcome.series_created, 0, "steady state: every series exists");
        assert_eq!(rejections.total(), 0);
    });
    info.count_total
}

/// Allocations made by walking an already decoded `request` and appending it to `store`.
fn prost_walk_allocations_per_batch(store: &Store, request: &ExportMetricsServiceRequest) -> u64 {
    let limits = limits();
    let info = allocation_counter::measure(|| {
        let mut batch = DecodedBatch::new();
        let mut rejections = Rejections::default();
        convert_request(request, &limits, NOW_MS, &mut batch, &mut rejections);
        let outcome = store.append_decoded(&batch, NOW_MS);
        assert_eq!(outcome.series_created, 0, "steady state: every series exists");
        assert_eq!(rejections.total(), 0);
    });
    info.count_total
}

#[test]
fn steady_state_ingest_allocates_per_request_not_per_point() {
    let mut counts = Vec::new();
    let mut prost_walk_counts = Vec::new();
    for n_points in [100, 1_000, 5_000] {
        let store = Store::new(StoreConfig::new(4, 100_000, 600_000));
        let mut template = dcgm_templates(n_points, n_points, 7).unwrap().remove(0);
        // Create the series, then fill their first chunks so the measured batch does not open one.
        for second in 0..3u64 {
            template.restamp((NOW_MS as u64 - 10_000 + second * 1_000) * 1_000_000, second as f64);
            let mut batch = DecodedBatch::new();
            let mut rejections = Rejections::default();
            wire::decode_request(template.bytes(), &limits(), NOW_MS, &mut batch, &mut rejections).unwrap();
            store.append_decoded(&batch, NOW_MS);
        }
        template.restamp((NOW_MS as u64 - 5_000) * 1_000_000, 5.0);
        counts.push((n_points, allocations_per_batch(&store, template.bytes())));
        template.restamp((NOW_MS as u64 - 4_000) * 1_000_000, 6.0);
        let request = ExportMetricsServiceRequest::decode(template.bytes()).unwrap();
        prost_walk_counts.push((n_points, prost_walk_allocations_per_batch(&store, &request)));
    }
    let (_, smallest) = prost_walk_counts[0];
    for &(n_points, allocations) in &prost_walk_counts {
        assert!(allocations <= 32, "prost walk, {n_points} points: {allocations} allocations ({prost_walk_counts:?})");
        assert_eq!(allocations, smallest, "prost walk allocations grew with the points: {prost_walk_counts:?}");
    }
    let (_, smallest) = counts[0];
    for &(n_points, allocations) in &counts {
        // A handful of buffers per request; the same count for 100 or 5,000 points.
        assert!(allocations <= 32, "{n_points} points: {allocations} allocations ({counts:?})");
        assert_eq!(allocations, smallest, "allocations grew with the number of points: {counts:?}");
    }
}

/// A DCGM-like request's batch takes a few bytes per byte of the request (4.1 measured, mostly
/// the decoder's up-front reserve): labels are stored once per point, not once per sample
/// (ARCHITECTURE.md, Limits).
#[test]
fn a_decoded_batch_takes_bytes_in_proportion_to_its_request() {
    let mut template = dcgm_templates(5_000, 5_000, 7).unwrap().remove(0);
    template.restamp((NOW_MS as u64 - 5_000) * 1_000_000, 5.0);
    let mut batch = DecodedBatch::new();
    let mut rejections = Rejections::default();
    wire::decode_request(template.bytes(), &limits(), NOW_MS, &mut batch, &mut rejections).unwrap();
    assert_eq!(rejections.total(), 0, "{rejections:?}");
    assert_eq!(batch.len(), 5_000);
    let per_byte = batch.heap_bytes() as f64 / template.bytes().len() as f64;
    eprintln!(
        "{} bytes of batch for {} bytes of request: {per_byte:.2} per byte",
        batch.heap_bytes(),
        template.bytes().len()
    );
    assert!(per_byte <= 5.0, "{per_byte:.2} bytes of batch per byte of request");
}
