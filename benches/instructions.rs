//! Fixed workloads whose instruction counts `benches/instructions.sh` measures with callgrind.
//!
//! `instructions <mode>` builds its inputs, runs the workload once unmeasured (so lazily
//! initialized state, such as the kernel set or a thread's hash keys, is in place), then runs it
//! once more inside a `measured_*` function. The script counts only that function and everything
//! it calls (`valgrind --tool=callgrind --collect-atstart=no --toggle-collect=...`). Modes:
//!
//! - `decode`: zero-copy decode of 10 DCGM-like requests × 1,000 gauge points (8 labels each);
//! - `append-existing`: the same decode, plus appending each request into a store that already
//!   holds all 10,000 series (the requests are re-stamped one millisecond later);
//! - `append-new`: the same decode, plus appending each request into an empty store, so every
//!   point creates a series;
//! - `query`: one `avg(rate(tokens))` over 100k counter series × 120 samples, the data of
//!   `benches/query.rs` (`one_chunk`);
//! - `restore`: restoring a snapshot of 100k DCGM-like series (9 labels) × 30 samples, the keys
//!   of `benches/snapshot.rs`, on one thread, with full validation (every key checked and
//!   hashed again for its shard).
//!
//! For each mode it runs, it prints one line to stdout, `mode=<mode> units=<n> unit=<point|series>`:
//! the number of points (or series) handled in the measured region. With no mode (as
//! `cargo bench` runs it) it runs every mode once, natively, as a check.
//!
//! The workloads are fixed: seeds, `now`, four shards, one thread, no clock read. Run by the
//! script, which also fixes what the harness cannot (std's hash keys, mimalloc's clock-driven
//! purge; see there), the counts are the same in every run. The harness uses as little of the
//! library as it can, since the decoder is being refactored: `wire::decode_request`,
//! `DecodedBatch`, `Rejections`, `ConvertLimits`, `Store` and `StoreConfig`, the query's
//! `parse_metric_query`, `evaluate`, `MetricQuery`, `QueryLimits` and `WindowOp`, and, to fill
//! the query's series, `SeriesKey`, `LabelPair`, `SeriesKind` and `RestoreOutcome`; for the
//! restore, `snapshot::{write_snapshot, restore_newest}`.

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;

use otelscale::ingest::policy::ConvertLimits;
use otelscale::ingest::{wire, Rejections};
use otelscale::query::{evaluate, parse_metric_query, MetricQuery, QueryLimits};
use otelscale::snapshot::{restore_newest, write_snapshot};
use otelscale::store::{DecodedBatch, LabelPair, RestoreOutcome, SeriesKey, SeriesKind, Store, StoreConfig, WindowOp};
use otelscale_loadgen::shapes::dcgm_templates;

/// The server's allocator, so that allocation costs are the server's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW_MS: i64 = 1_800_000_000_000;
const SHARD_COUNT: usize = 4;
const REQUESTS: usize = 10;
const POINTS_PER_REQUEST: usize = 1_000;
const SEED: u64 = 1;
/// Series of other GPUs, for the unmeasured warm-up of `append-new`.
const WARM_UP_SEED: u64 = 2;

const QUERY_SERIES: usize = 100_000;
const SAMPLES_PER_SERIES: i64 = 120;
/// Samples are one second apart; the window reaches half a second before the oldest one.
const WINDOW_MS: i64 = SAMPLES_PER_SERIES * 1_000 + 500;

const RESTORE_SERIES: usize = 100_000;
const RESTORE_SAMPLES_PER_SERIES: i64 = 30;

/// A workload the script can measure.
struct Mode {
    name: &'static str,
    /// Builds the inputs, warms up, runs the measured region, and returns its units.
    run: fn() -> usize,
    unit: &'static str,
}

const MODES: [Mode; 5] = [
    Mode { name: "decode", run: run_decode, unit: "point" },
    Mode { name: "append-existing", run: run_append_existing, unit: "point" },
    Mode { name: "append-new", run: run_append_new, unit: "point" },
    Mode { name: "query", run: run_query, unit: "series" },
    Mode { name: "restore", run: run_restore, unit: "series" },
];

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` (and any filter after `--`); a name picks the modes that
    // contain it, as criterion's filters do, and no name runs them all (a quick native check).
    let filters: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with('-')).collect();
    if std::env::args().any(|arg| arg == "-h" || arg == "--help") {
        let names: Vec<&str> = MODES.iter().map(|mode| mode.name).collect();
        eprintln!("usage: instructions [{}]...", names.join("|"));
        return ExitCode::from(2);
    }
    for mode in MODES {
        if filters.is_empty() || filters.iter().any(|filter| mode.name.contains(filter.as_str())) {
            let units = (mode.run)();
            println!("mode={} units={units} unit={}", mode.name, mode.unit);
        }
    }
    ExitCode::SUCCESS
}

fn store(series_count_max: usize) -> Store {
    Store::new(StoreConfig::new(SHARD_COUNT, series_count_max, 600_000))
}

/// `REQUESTS` requests of `POINTS_PER_REQUEST` DCGM-like points, stamped `timestamp_ms`.
fn dcgm_bodies(seed: u64, timestamp_ms: i64) -> Vec<Vec<u8>> {
    let mut templates = dcgm_templates(REQUESTS * POINTS_PER_REQUEST, POINTS_PER_REQUEST, seed).expect("DCGM shape");
    assert_eq!(templates.len(), REQUESTS);
    templates
        .iter_mut()
        .map(|template| {
            template.restamp(timestamp_ms as u64 * 1_000_000, 1.0);
            template.bytes().to_vec()
        })
        .collect()
}

/// Decodes every body and, with a store, appends it. Returns (points decoded, samples appended,
/// series created). The measured functions and the warm-ups all run this.
fn decode_and_append(bodies: &[Vec<u8>], limits: &ConvertLimits, store: Option<&Store>) -> (usize, u64, u64) {
    let (mut points, mut appended, mut created) = (0, 0, 0);
    for body in bodies {
        let mut batch = DecodedBatch::new();
        let mut rejections = Rejections::default();
        wire::decode_request(black_box(body), limits, NOW_MS, &mut batch, &mut rejections).expect("valid request");
        assert_eq!(rejections.total(), 0, "no point is rejected");
        points += batch.len();
        if let Some(store) = store {
            let outcome = store.append_decoded(&batch, NOW_MS);
            appended += outcome.appended;
            created += outcome.series_created;
        }
        black_box(&batch);
    }
    (points, appended, created)
}

#[inline(never)]
fn measured_decode(bodies: &[Vec<u8>], limits: &ConvertLimits) -> usize {
    decode_and_append(bodies, limits, None).0
}

// The two append regions differ in their checks, and must: functions with identical bodies are
// folded into one symbol, which the toggle pattern of the other could then not find.
#[inline(never)]
fn measured_append_existing(bodies: &[Vec<u8>], limits: &ConvertLimits, store: &Store) -> usize {
    let (points, appended, created) = decode_and_append(bodies, limits, Some(store));
    assert_eq!((appended, created), (points as u64, 0), "one sample into each existing series");
    points
}

#[inline(never)]
fn measured_append_new(bodies: &[Vec<u8>], limits: &ConvertLimits, store: &Store) -> usize {
    let (points, appended, created) = decode_and_append(bodies, limits, Some(store));
    assert_eq!((appended, created), (points as u64, points as u64), "a new series for every point");
    points
}

#[inline(never)]
fn measured_query(store: &Store, query: &MetricQuery) -> (usize, Option<f64>) {
    let evaluation = evaluate(store, query, WindowOp::Rate, WINDOW_MS, NOW_MS);
    (evaluation.matched_series, evaluation.value)
}

fn run_decode() -> usize {
    let limits = ConvertLimits::default();
    let bodies = dcgm_bodies(SEED, NOW_MS);
    let warm_up = decode_and_append(&bodies, &limits, None).0;
    let points = measured_decode(black_box(&bodies), &limits);
    assert_eq!((warm_up, points), (REQUESTS * POINTS_PER_REQUEST, REQUESTS * POINTS_PER_REQUEST));
    points
}

fn run_append_existing() -> usize {
    let limits = ConvertLimits::default();
    let store = store(10_000_000);
    let n_points = REQUESTS * POINTS_PER_REQUEST;
    let created = decode_and_append(&dcgm_bodies(SEED, NOW_MS), &limits, Some(&store)).2;
    assert_eq!(created, n_points as u64, "the warm-up creates every series");
    let bodies = dcgm_bodies(SEED, NOW_MS + 1);
    let points = measured_append_existing(black_box(&bodies), &limits, &store);
    assert_eq!(points, n_points);
    points
}

fn run_append_new() -> usize {
    let limits = ConvertLimits::default();
    let n_points = REQUESTS * POINTS_PER_REQUEST;
    // Warm up on a throwaway store, so the measured store is empty when the region starts.
    let created = decode_and_append(&dcgm_bodies(WARM_UP_SEED, NOW_MS), &limits, Some(&store(10_000_000))).2;
    assert_eq!(created, n_points as u64);
    let bodies = dcgm_bodies(SEED, NOW_MS);
    let store = store(10_000_000);
    let points = measured_append_new(black_box(&bodies), &limits, &store);
    assert_eq!(points, n_points);
    points
}

/// `benches/query.rs`'s `store_with(100_000, 120)`: counters one second apart, the newest one
/// second before `NOW_MS`, growing by 1 to 10 per second; one series in a hundred reset 30 s
/// before the newest sample. Filled one series at a time with `Store::restore_series` (a key
/// per series, not per sample), which leaves the same series, in the same slots, with the same
/// chunks, as appending one batch per second does, in a fraction of the time under valgrind.
fn query_store() -> Store {
    let store = store(QUERY_SERIES);
    for series_idx in 0..QUERY_SERIES {
        let key = SeriesKey::new("tokens", vec![LabelPair::new("pod", format!("pod-{series_idx}"))]);
        let per_second = (1 + series_idx % 10) as f64;
        let restarted_at = SAMPLES_PER_SERIES - 30;
        let samples = (0..SAMPLES_PER_SERIES).map(|second| {
            let timestamp_ms = NOW_MS - (SAMPLES_PER_SERIES - second) * 1_000;
            let value = if series_idx % 100 == 0 && second >= restarted_at {
                per_second * (second - restarted_at) as f64
            } else {
                1e6 + per_second * second as f64
            };
            (timestamp_ms, value)
        });
        let samples: Vec<(i64, f64)> = samples.collect();
        let outcome = store.restore_series(key, SeriesKind::CumulativeCounter, &samples);
        assert_eq!(outcome, RestoreOutcome::Restored { samples: SAMPLES_PER_SERIES as usize });
    }
    store
}

fn run_query() -> usize {
    let store = query_store();
    let query = parse_metric_query("avg(tokens)", &QueryLimits::default()).expect("valid query");
    let (warm_up_series, warm_up_value) = warm_up_query(&store, &query);
    let (series, value) = measured_query(black_box(&store), &query);
    assert_eq!(series, QUERY_SERIES);
    assert_eq!((warm_up_series, warm_up_value.map(f64::to_bits)), (series, value.map(f64::to_bits)));
    eprintln!("avg(rate(tokens)) = {value:?}");
    series
}

/// The same evaluation, unmeasured: a function of its own, since every call of `measured_query`
/// is counted.
fn warm_up_query(store: &Store, query: &MetricQuery) -> (usize, Option<f64>) {
    let evaluation = evaluate(store, query, WindowOp::Rate, WINDOW_MS, NOW_MS);
    (evaluation.matched_series, evaluation.value)
}

#[inline(never)]
fn measured_restore(store: &Store, dir: &Path) -> usize {
    restore_newest(store, dir, NOW_MS, 1).expect("a snapshot to restore").series as usize
}

/// The same restore, unmeasured.
fn warm_up_restore(store: &Store, dir: &Path) -> usize {
    let report = restore_newest(store, dir, NOW_MS, 1).expect("a snapshot to restore");
    assert_eq!(report.samples, RESTORE_SERIES as u64 * RESTORE_SAMPLES_PER_SERIES as u64);
    report.series as usize
}

fn run_restore() -> usize {
    let original = store(RESTORE_SERIES);
    for series_idx in 0..RESTORE_SERIES {
        let samples = (0..RESTORE_SAMPLES_PER_SERIES)
            .map(|step| (NOW_MS - 30_000 + step * 1_000, (series_idx as i64 * 31 + step) as f64 * 0.25))
            .collect::<Vec<_>>();
        original.restore_series(common::dcgm_key(series_idx), SeriesKind::Gauge, &samples);
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    write_snapshot(&original, dir.path(), 1, NOW_MS).expect("snapshot written");
    drop(original);
    let warm_up = warm_up_restore(&store(RESTORE_SERIES), dir.path());
    let fresh = store(RESTORE_SERIES);
    let series = measured_restore(black_box(&fresh), dir.path());
    assert_eq!((warm_up, series), (RESTORE_SERIES, RESTORE_SERIES));
    series
}
