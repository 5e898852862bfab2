//! Snapshot tests: round trips (a property test over arbitrary stores), every kind of damaged
//! file, the directory rules (unfinished files, rejected files, pruning) and retention on load.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::store::{BatchSample, LabelPair, SampleBatch, SeriesKind, StoreConfig};

const NOW_MS: i64 = 1_800_000_000_000;

fn store(shard_count: usize) -> Store {
    Store::new(StoreConfig::new(shard_count, 1_000_000, 600_000))
}

/// Every series of a store: key → (kind, samples as (timestamp, value bits)).
type Contents = BTreeMap<SeriesKey, (SeriesKind, Vec<(i64, u64)>)>;

fn contents(store: &Store) -> Contents {
    let mut all = Contents::new();
    for shard_idx in 0..store.shard_count() {
        let mut next_slot = Some(0);
        while let Some(first_slot) = next_slot {
            next_slot = store.visit_shard_slots(shard_idx, first_slot, 7, |series| {
                let samples = series
                    .chunks()
                    .flat_map(|chunk| {
                        (0..chunk.len()).map(move |idx| (chunk.timestamp_ms(idx), chunk.values[idx].to_bits()))
                    })
                    .collect();
                all.insert(series.key.to_owned(), (series.kind, samples));
            });
        }
    }
    all
}

/// A series to put into a store: metric, labels, kind, samples.
type SeriesSpec = (String, Vec<(&'static str, String)>, SeriesKind, Vec<(i64, f64)>);

fn fill(store: &Store, series: &[SeriesSpec]) {
    let mut batch = SampleBatch::default();
    for (metric, labels, kind, samples) in series {
        let key =
            SeriesKey::new(metric, labels.iter().map(|(name, value)| LabelPair::new(*name, value.as_str())).collect());
        for &(timestamp_ms, value) in samples {
            batch.samples.push(BatchSample::new(key.clone(), *kind, timestamp_ms, value));
        }
    }
    store.append(batch, NOW_MS);
}

fn sample_store() -> Store {
    let store = store(4);
    let series: Vec<_> = (0..50)
        .map(|idx| {
            let samples = (0..(idx % 7 + 1) * 40)
                .map(|step| (NOW_MS - 300_000 + step as i64 * 1_000, idx as f64 + step as f64 * 0.5))
                .collect();
            let kind = [SeriesKind::Gauge, SeriesKind::CumulativeCounter, SeriesKind::Delta][idx % 3];
            (
                format!("metric_{}", idx % 4),
                vec![("gpu", idx.to_string()), ("host", "é-node".to_string())],
                kind,
                samples,
            )
        })
        .collect();
    fill(&store, &series);
    store
}

fn restored(dir: &Path, shard_count: usize) -> (Store, Option<RestoreReport>) {
    let store = store(shard_count);
    let report = restore_newest(&store, dir, NOW_MS, 2);
    (store, report)
}

#[test]
fn a_snapshot_restores_the_same_series_and_samples_with_any_shard_count() {
    let original = sample_store();
    let dir = tempfile::tempdir().unwrap();
    let written = write_snapshot(&original, dir.path(), 2, NOW_MS).unwrap();
    assert_eq!(written.series, 50);
    assert!(written.samples > 0);
    for shard_count in [1, 4, 7] {
        let (copy, report) = restored(dir.path(), shard_count);
        let report = report.expect("a snapshot to restore");
        assert_eq!(report.series, 50);
        assert_eq!(report.samples, written.samples);
        assert_eq!(report.samples_expired, 0);
        assert_eq!(contents(&copy), contents(&original), "shard count {shard_count}");
    }
}

#[test]
fn samples_older_than_the_retention_window_are_dropped_on_load() {
    let original = sample_store();
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(&original, dir.path(), 2, NOW_MS).unwrap();
    // Ten minutes later, the retention window (600 s) reaches back to NOW_MS.
    let later = store(4);
    let report = restore_newest(&later, dir.path(), NOW_MS + 600_000, 2).unwrap();
    assert!(report.samples_expired > 0);
    let kept = contents(&later);
    assert!(kept.values().flat_map(|(_, samples)| samples).all(|&(timestamp_ms, _)| timestamp_ms >= NOW_MS));
    let expected: usize = contents(&original)
        .values()
        .map(|(_, samples)| samples.iter().filter(|&&(timestamp_ms, _)| timestamp_ms >= NOW_MS).count())
        .sum();
    assert_eq!(report.samples as usize, expected);
    assert_eq!(kept.values().map(|(_, samples)| samples.len()).sum::<usize>(), expected);
}

#[test]
fn an_empty_store_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_snapshot(&store(3), dir.path(), 2, NOW_MS).unwrap();
    assert_eq!((written.series, written.samples), (0, 0));
    let (copy, report) = restored(dir.path(), 2);
    assert_eq!(report.unwrap().series, 0);
    assert_eq!(copy.series_count(), 0);
}

/// Writes two snapshots (older with the first half of the series, newer with all) and returns
/// their paths, newest first.
fn two_snapshots(dir: &Path) -> (PathBuf, PathBuf) {
    let original = sample_store();
    let older = write_snapshot(&store(2), dir, 5, NOW_MS - 1_000).unwrap().path;
    let newer = write_snapshot(&original, dir, 5, NOW_MS).unwrap().path;
    (newer, older)
}

fn assert_newest_rejected(dir: &Path, newer: &Path, expected_reason: &str, damage: impl FnOnce(&Path)) {
    damage(newer);
    let err = read_snapshot(newer, 1).err().expect("the damaged file must not validate");
    assert!(err.to_string().contains(expected_reason), "{err}");
    let (copy, report) = restored(dir, 4);
    // The older (empty) snapshot is used; the damaged one is moved aside, not deleted.
    assert_eq!(report.expect("the older snapshot").series, 0);
    assert_eq!(copy.series_count(), 0);
    assert!(!newer.exists());
    assert!(rejected_path(newer).exists());
}

#[test]
fn a_flipped_byte_in_a_section_is_caught_by_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let (newer, _) = two_snapshots(dir.path());
    assert_newest_rejected(dir.path(), &newer, "checksum", |path| {
        let mut bytes = fs::read(path).unwrap();
        let last = bytes.len() - 40;
        bytes[last] ^= 0x5a;
        fs::write(path, bytes).unwrap();
    });
}

#[test]
fn a_truncated_snapshot_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (newer, _) = two_snapshots(dir.path());
    assert_newest_rejected(dir.path(), &newer, "outside the file", |path| {
        let len = fs::metadata(path).unwrap().len();
        File::options().write(true).open(path).unwrap().set_len(len / 2).unwrap();
    });
}

#[test]
fn a_snapshot_cut_inside_its_header_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (newer, _) = two_snapshots(dir.path());
    assert_newest_rejected(dir.path(), &newer, "shorter than its header", |path| {
        File::options().write(true).open(path).unwrap().set_len(20).unwrap();
    });
}

#[test]
fn an_empty_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (newer, _) = two_snapshots(dir.path());
    assert_newest_rejected(dir.path(), &newer, "empty", |path| fs::write(path, b"").unwrap());
}

#[test]
fn another_format_version_is_rejected_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (newer, _) = two_snapshots(dir.path());
    assert_newest_rejected(dir.path(), &newer, "format version 9", |path| {
        let mut bytes = fs::read(path).unwrap();
        bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
        fs::write(path, bytes).unwrap();
    });
}

#[test]
fn a_file_that_is_not_a_snapshot_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (newer, _) = two_snapshots(dir.path());
    assert_newest_rejected(dir.path(), &newer, "magic", |path| fs::write(path, vec![b'x'; 4096]).unwrap());
}

#[test]
fn a_damaged_header_field_is_caught_by_the_header_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let (newer, _) = two_snapshots(dir.path());
    assert_newest_rejected(dir.path(), &newer, "header checksum", |path| {
        let mut bytes = fs::read(path).unwrap();
        bytes[30] ^= 1;
        fs::write(path, bytes).unwrap();
    });
}

#[test]
fn without_any_valid_snapshot_the_store_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (newer, older) = two_snapshots(dir.path());
    fs::write(&newer, b"garbage").unwrap();
    fs::write(&older, b"").unwrap();
    let (copy, report) = restored(dir.path(), 4);
    assert!(report.is_none());
    assert_eq!(copy.series_count(), 0);
    assert!(rejected_path(&newer).exists() && rejected_path(&older).exists());
    // The inspector lists both, as rejected.
    let inspections = inspect(dir.path()).unwrap();
    assert_eq!(inspections.len(), 2);
    assert!(inspections.iter().all(|inspection| inspection.validation.is_err()));
}

#[test]
fn unfinished_files_are_removed_and_the_complete_snapshot_is_used() {
    // A writer killed before its rename leaves a `.tmp` file: it is never read.
    let dir = tempfile::tempdir().unwrap();
    let original = sample_store();
    write_snapshot(&original, dir.path(), 2, NOW_MS).unwrap();
    let unfinished = dir.path().join(format!("{FILE_PREFIX}{:013}{FILE_SUFFIX}{TMP_SUFFIX}", NOW_MS + 5));
    fs::write(&unfinished, b"OTSCSNAP half a file").unwrap();
    let (copy, report) = restored(dir.path(), 4);
    assert_eq!(report.unwrap().series, 50);
    assert_eq!(contents(&copy), contents(&original));
    assert!(!unfinished.exists());
}

#[test]
fn only_the_newest_snapshots_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let original = sample_store();
    for step in 0..5 {
        write_snapshot(&original, dir.path(), 2, NOW_MS + step).unwrap();
    }
    let kept = list_snapshots(dir.path()).unwrap();
    assert_eq!(kept.len(), 2);
    assert!(kept[0].to_str().unwrap().contains(&format!("{:013}", NOW_MS + 4)));
    assert!(kept[1].to_str().unwrap().contains(&format!("{:013}", NOW_MS + 3)));
}

#[test]
fn two_snapshots_in_the_same_millisecond_get_distinct_files() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_snapshot(&sample_store(), dir.path(), 5, NOW_MS).unwrap();
    let second = write_snapshot(&sample_store(), dir.path(), 5, NOW_MS).unwrap();
    assert_ne!(first.path, second.path);
    assert_eq!(list_snapshots(dir.path()).unwrap(), vec![second.path, first.path]);
}

#[test]
fn a_missing_directory_is_created() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("not/yet/there");
    let (copy, report) = restored(&dir, 2);
    assert!(report.is_none() && copy.series_count() == 0);
    assert!(dir.is_dir());
    write_snapshot(&sample_store(), &dir, 2, NOW_MS).unwrap();
    assert_eq!(restored(&dir, 2).1.unwrap().series, 50);
}

#[test]
fn a_directory_that_cannot_be_created_is_an_error_for_the_writer_and_an_empty_start_for_the_reader() {
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("a-file");
    fs::write(&file, b"").unwrap();
    let dir = file.join("snapshots");
    let err = write_snapshot(&sample_store(), &dir, 2, NOW_MS).unwrap_err();
    assert!(err.to_string().contains("snapshots"), "{err}");
    let (copy, report) = restored(&dir, 2);
    assert!(report.is_none() && copy.series_count() == 0);
}

#[test]
fn bad_key_bytes_inside_a_valid_archive_are_rejected() {
    // A section whose archive and checksum are fine but whose key is not a key encoding.
    let mut section = ShardSection::default();
    section.kinds.push(0);
    section.key_bytes.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0xff]);
    section.key_ends.push(section.key_bytes.len() as u64);
    section.chunk_ends.push(0);
    let bytes = section.to_bytes().unwrap();
    let entry = TableEntry { offset: 0, len: bytes.len() as u64, crc: crc32fast::hash(&bytes), series_count: 1 };
    let err = check_and_read_keys(0, &bytes, entry).unwrap_err();
    assert!(matches!(err, FormatError::Key { source: crate::store::KeyDecodeError::NotUtf8, .. }), "{err}");

    // Ends that point past their column.
    let mut section = ShardSection::default();
    section.kinds.push(0);
    section.key_ends.push(5);
    section.chunk_ends.push(0);
    let bytes = section.to_bytes().unwrap();
    let entry = TableEntry { offset: 0, len: bytes.len() as u64, crc: crc32fast::hash(&bytes), series_count: 1 };
    let err = check_and_read_keys(0, &bytes, entry).unwrap_err();
    assert!(err.to_string().contains("key ends stop at 5"), "{err}");
}

#[test]
fn series_key_encodings_round_trip_and_bad_ones_are_named() {
    let key = SeriesKey::new("m", vec![LabelPair::new("b", "2"), LabelPair::new("a", "1")]);
    assert_eq!(SeriesKey::from_encoded(&key.encoded()).unwrap(), key);
    let encoded = key.encoded();
    use crate::store::KeyDecodeError as E;
    assert_eq!(SeriesKey::from_encoded(&encoded[..encoded.len() - 1]), Err(E::Truncated));
    assert_eq!(SeriesKey::from_encoded(&[&encoded[..], b"x"].concat()), Err(E::TrailingBytes));
    assert_eq!(SeriesKey::from_encoded(&[0, 0, 0, 0, 0, 0, 0, 0]), Err(E::EmptyMetricName));
    let unsorted = SeriesKey::from_canonical(
        "m",
        [crate::store::LabelRef { name: "b", value: "" }, crate::store::LabelRef { name: "a", value: "" }].into_iter(),
    );
    assert_eq!(SeriesKey::from_encoded(&unsorted.encoded()), Err(E::LabelsNotCanonical));
    assert_eq!(SeriesKey::from_encoded(&[0xff; 3]), Err(E::Truncated));
    assert_eq!(SeriesKey::from_encoded(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]), Err(E::Truncated));
    // A label string longer than a stored label set's 16-bit lengths.
    let long = [&[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0][..], b"ma", &[b'v'; 65_536]].concat();
    assert_eq!(SeriesKey::from_encoded(&long), Err(E::TooLong));
    let longest = [&[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0, 0][..], b"ma", &[b'v'; 65_535]].concat();
    assert_eq!(SeriesKey::from_encoded(&longest).unwrap().label_value("a").map(str::len), Some(65_535));
}

fn series_strategy() -> impl Strategy<Value = SeriesSpec> {
    (
        "[a-c]{1,3}",
        proptest::collection::vec((prop_oneof![Just("pod"), Just("gpu"), Just("zone")], "[a-zé]{0,4}"), 0..4),
        prop_oneof![Just(SeriesKind::Gauge), Just(SeriesKind::CumulativeCounter), Just(SeriesKind::Delta)],
        proptest::collection::vec(
            (0i64..500_000, any::<f64>().prop_filter("NaN is rejected at ingest", |v| !v.is_nan())),
            1..300,
        ),
    )
        .prop_map(|(metric, labels, kind, mut samples)| {
            samples.sort_by_key(|&(offset, _)| offset);
            samples.dedup_by_key(|&mut (offset, _)| offset);
            let samples = samples.into_iter().map(|(offset, value)| (NOW_MS - 500_000 + offset, value)).collect();
            (metric, labels, kind, samples)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn load_of_a_snapshot_equals_the_store_it_was_taken_of(
        series in proptest::collection::vec(series_strategy(), 0..30),
        writer_shards in 1usize..6,
        reader_shards in 1usize..6,
    ) {
        let original = store(writer_shards);
        fill(&original, &series);
        let dir = tempfile::tempdir().unwrap();
        write_snapshot(&original, dir.path(), 1, NOW_MS).unwrap();
        let (copy, report) = restored(dir.path(), reader_shards);
        prop_assert_eq!(report.unwrap().series as usize, original.series_count());
        prop_assert_eq!(contents(&copy), contents(&original));
        // And a snapshot of the copy is the same again.
        let again = tempfile::tempdir().unwrap();
        write_snapshot(&copy, again.path(), 1, NOW_MS).unwrap();
        let (copy_of_copy, _) = restored(again.path(), writer_shards);
        prop_assert_eq!(contents(&copy_of_copy), contents(&original));
    }
}

#[test]
fn samples_further_ahead_than_the_future_skew_are_dropped_on_load() {
    // Written by a server whose samples reach a minute past this one's clock.
    let original = store(2);
    let series: Vec<SeriesSpec> = (0..4)
        .map(|idx| {
            let samples = (0..70).map(|step| (NOW_MS - 9_000 + step * 1_000, step as f64)).collect();
            ("ahead".to_string(), vec![("gpu", idx.to_string())], SeriesKind::Gauge, samples)
        })
        .collect();
    fill(&original, &series);
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(&original, dir.path(), 2, NOW_MS).unwrap();
    let skewed = Store::new(StoreConfig { future_skew_ms_max: 10_000, ..StoreConfig::new(3, 1_000_000, 600_000) });
    let report = restore_newest(&skewed, dir.path(), NOW_MS, 2).unwrap();
    // Per series: NOW - 9 s ..= NOW + 10 s are kept (20 samples), the 50 later ones dropped.
    assert_eq!((report.samples, report.samples_in_future, report.samples_expired), (4 * 20, 4 * 50, 0));
    let kept = contents(&skewed);
    assert!(kept.values().flat_map(|(_, samples)| samples).all(|&(timestamp_ms, _)| timestamp_ms <= NOW_MS + 10_000));
    // The producer's next point, one second after the clock, is not held back.
    let next = SampleBatch {
        samples: vec![BatchSample::new(
            SeriesKey::new("ahead", vec![LabelPair::new("gpu", "0")]),
            SeriesKind::Gauge,
            NOW_MS + 11_000,
            1.0,
        )],
    };
    assert_eq!(skewed.append(next, NOW_MS + 1_000).appended, 1);
}
