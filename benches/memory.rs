//! Memory per series: the heap the store keeps for loadgen's DCGM-like series (8 labels, of
//! which only the GPU UUID and the host name are not shared), fed through the real protobuf
//! decoder and `Store::append_decoded`, as ingest does.
//!
//! Not criterion: a fixed workload, measured once. The heap is counted by a counting global
//! allocator (`allocation-counter`, the bytes requested and not freed, on this thread: the store
//! appends on the caller's thread); the process's resident set is reported beside it, since it
//! adds what the allocator itself keeps.
//!
//! ```text
//! cargo bench --bench memory                       # 1,000,000 series × 4 and × 120 samples
//! cargo bench --bench memory -- --series 200000 --samples 4,30,120 --interval-ms 15000,1000
//! ```
//!
//! Each run prints one line per scenario: series, samples per series, the interval, heap bytes
//! per series in all, the label strings a copy per series would hold, the label strings the
//! store holds (each shard's distinct label sets once, and its metric names once), the heap
//! beyond the strings held, and that per sample.

use std::time::Instant;

use otelscale::ingest::policy::ConvertLimits;
use otelscale::ingest::{wire, Rejections};
use otelscale::store::{DecodedBatch, Store, StoreConfig};
use otelscale_loadgen::shapes::dcgm_templates;

/// The store's clock: samples end one interval before it.
const NOW_MS: i64 = 1_800_000_000_000;
/// The server's default retention.
const RETENTION_MS: i64 = 120_000;
const POINTS_PER_REQUEST: usize = 5_000;

struct Scenario {
    series: usize,
    samples: usize,
    interval_ms: i64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|idx| args.get(idx + 1)).cloned();
    let list = |name: &str, default: &str| -> Vec<i64> {
        arg(name)
            .unwrap_or_else(|| default.to_owned())
            .split(',')
            .map(|v| v.trim().parse().expect("a number"))
            .collect()
    };
    let series = arg("--series").map_or(1_000_000, |v| v.parse().expect("--series N"));
    let samples = list("--samples", "4,120");
    let intervals = list("--interval-ms", "15000,1000");
    assert_eq!(samples.len(), intervals.len(), "one --interval-ms per --samples");
    println!("| series | samples each | interval | heap B/series | label strings, a copy per series | label strings held | heap beyond the strings held | the same per sample | RSS B/series | store's count B/series | fill s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (&samples, &interval_ms) in samples.iter().zip(&intervals) {
        measure(Scenario { series, samples: samples as usize, interval_ms });
    }
}

fn measure(scenario: Scenario) {
    let Scenario { series, samples, interval_ms } = scenario;
    assert!(
        (samples as i64 - 1) * interval_ms < RETENTION_MS,
        "every sample must stay in the retention of {RETENTION_MS} ms"
    );
    let mut templates = dcgm_templates(series, POINTS_PER_REQUEST, 7).expect("DCGM templates");
    let limits = ConvertLimits::default();
    let store = Store::new(StoreConfig::new(4, series, RETENTION_MS));
    let rss_before = resident_bytes();
    let started = Instant::now();
    let heap = allocation_counter::measure(|| {
        for sample_idx in 0..samples {
            let timestamp_ms = NOW_MS - (samples - sample_idx) as i64 * interval_ms;
            for template in &mut templates {
                template.restamp(timestamp_ms as u64 * 1_000_000, sample_idx as f64);
                let mut batch = DecodedBatch::new();
                let mut rejections = Rejections::default();
                wire::decode_request(template.bytes(), &limits, NOW_MS, &mut batch, &mut rejections)
                    .expect("a valid request");
                let outcome = store.append_decoded(&batch, NOW_MS);
                let rejected = outcome.rejected_series_limit
                    + outcome.rejected_metric_series_limit
                    + outcome.rejected_store_bytes
                    + outcome.rejected_out_of_order
                    + outcome.rejected_too_old;
                assert_eq!(rejected, 0, "every sample is stored");
            }
        }
    });
    let fill_s = started.elapsed().as_secs_f64();
    let rss_after = resident_bytes();
    assert_eq!(store.series_count(), series);
    let (copied_bytes, held_bytes) = label_string_bytes(&store);
    let per_series = heap.bytes_current as f64 / series as f64;
    let copied_per_series = copied_bytes as f64 / series as f64;
    let held_per_series = held_bytes as f64 / series as f64;
    let beyond_labels = per_series - held_per_series;
    println!(
        "| {series} | {samples} | {} s | {per_series:.0} | {copied_per_series:.0} | {held_per_series:.0} | {beyond_labels:.0} | {:.2} | {:.0} | {:.0} | {fill_s:.1} |",
        interval_ms as f64 / 1_000.0,
        beyond_labels / samples as f64,
        rss_after.saturating_sub(rss_before) as f64 / series as f64,
        store.heap_bytes() as f64 / series as f64,
    );
    drop(templates);
}

/// Bytes of label strings (metric names, label names and values): as a copy per series would
/// hold them, and as the store holds them (per shard: each distinct label set and metric name
/// once; told apart by address, since a shard lends out its one copy).
fn label_string_bytes(store: &Store) -> (usize, usize) {
    let (mut copied, mut held) = (0, 0);
    for shard_idx in 0..store.shard_count() {
        let mut label_sets = std::collections::HashSet::new();
        let mut metric_names = std::collections::HashSet::new();
        let mut next = Some(0);
        while let Some(first_slot) = next {
            next = store.visit_shard_slots(shard_idx, first_slot, 4_096, |series| {
                copied += series.key.string_bytes();
                let labels = series.key.label_set();
                if label_sets.insert(labels as *const _) {
                    held += labels.string_bytes();
                }
                let metric_name = series.key.metric_name();
                if metric_names.insert(metric_name.as_ptr()) {
                    held += metric_name.len();
                }
            });
        }
    }
    (copied, held)
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}
