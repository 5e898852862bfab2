//! Snapshot write and restore at 1 M series × 30 samples (DCGM-like keys: 9 labels), both with
//! full validation, on the file system under the system temp dir (restores read from the page
//! cache). Also prints the file size against the in-memory bytes of the data it holds.
//!
//! `cargo bench --bench snapshot` (OTELSCALE_BENCH_SERIES overrides the series count).

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use otelscale::snapshot::{list_snapshots, restore_newest, write_snapshot};
use otelscale::store::{SeriesKind, Store, StoreConfig};

/// The server's allocator, so that allocation costs are the server's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW_MS: i64 = 1_800_000_000_000;
const SAMPLES_PER_SERIES: usize = 30;

fn series_count() -> usize {
    std::env::var("OTELSCALE_BENCH_SERIES").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000)
}

fn store() -> Store {
    let shard_count = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
    Store::new(StoreConfig::new(shard_count, 10_000_000, 600_000))
}

fn filled_store(series: usize) -> Store {
    let store = store();
    for series_idx in 0..series {
        let samples = (0..SAMPLES_PER_SERIES)
            .map(|step| (NOW_MS - 30_000 + step as i64 * 1_000, (series_idx * 31 + step) as f64 * 0.25))
            .collect::<Vec<_>>();
        store.restore_series(common::dcgm_key(series_idx), SeriesKind::Gauge, &samples);
    }
    store
}

fn bench_snapshot(c: &mut Criterion) {
    let series = series_count();
    let built = Instant::now();
    let original = filled_store(series);
    eprintln!("store of {series} series × {SAMPLES_PER_SERIES} built in {:?}", built.elapsed());
    let dir = tempfile::tempdir().expect("temp dir");
    // One snapshot before any measurement, so the restore bench has a file even when run alone.
    write_snapshot(&original, dir.path(), 1, NOW_MS).expect("snapshot written");

    let mut group = c.benchmark_group(format!("snapshot_{series}_series_x{SAMPLES_PER_SERIES}"));
    group.sample_size(10).warm_up_time(Duration::from_millis(1)).measurement_time(Duration::from_secs(20));
    let mut longest_holds = Vec::new();
    group.bench_function("write_with_fsync", |b| {
        b.iter(|| {
            let written = write_snapshot(&original, dir.path(), 1, NOW_MS).expect("snapshot written");
            longest_holds.push(written.longest_lock_hold);
        })
    });
    longest_holds.sort_unstable();
    if let (Some(median), Some(max)) = (longest_holds.get(longest_holds.len() / 2), longest_holds.last()) {
        eprintln!("longest shard read-lock hold per snapshot: median {median:?}, max {max:?}");
    }
    group.bench_function("restore_with_validation", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let fresh = store();
                let started = Instant::now();
                let report = restore_newest(&fresh, dir.path(), NOW_MS, 2).expect("a snapshot to restore");
                total += started.elapsed();
                assert_eq!(report.series as usize, series);
                drop(fresh);
            }
            total
        })
    });
    group.finish();

    let file = list_snapshots(dir.path()).expect("snapshot dir").remove(0);
    let file_bytes = std::fs::metadata(&file).expect("snapshot file").len() as f64;
    let key_bytes: usize = (0..series).map(|idx| common::dcgm_key(idx).heap_bytes()).sum();
    let sample_bytes = series * SAMPLES_PER_SERIES * 12;
    let data_bytes = (key_bytes + sample_bytes) as f64;
    let heap_bytes = original.heap_bytes() as f64;
    eprintln!(
        "snapshot file {:.1} MiB; data held (keys {:.1} MiB + 12 B per sample {:.1} MiB) {:.1} MiB; ratio {:.3}; \
         store heap {:.1} MiB (file / heap {:.3})",
        file_bytes / 1048576.0,
        key_bytes as f64 / 1048576.0,
        sample_bytes as f64 / 1048576.0,
        data_bytes / 1048576.0,
        file_bytes / data_bytes,
        heap_bytes / 1048576.0,
        file_bytes / heap_bytes,
    );
}

criterion_group!(benches, bench_snapshot);
criterion_main!(benches);
