//! Kernel tests: examples, the scalar kernels against naive folds, and the property that every
//! SIMD twin returns the same bits as its scalar version.

use proptest::prelude::*;

use super::*;

/// The kernels' notion of equal results: the same bits, or both NaN (payloads don't matter).
fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn same_option(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Every kernel set this CPU can run, scalar first.
fn kernel_sets() -> Vec<KernelSet> {
    let mut sets = vec![KernelSet::scalar()];
    #[cfg(target_arch = "x86_64")]
    sets.extend(avx2::Avx2::detect().map(avx2::Avx2::kernel_set));
    sets
}

#[test]
fn sum_min_max() {
    for kernels in kernel_sets() {
        let values = [1.0, -2.0, 3.5, 4.0, 10.0];
        assert_eq!(kernels.sum(&values), 16.5, "{kernels:?}");
        assert_eq!(kernels.min(&values), Some(-2.0));
        assert_eq!(kernels.max(&values), Some(10.0));
        assert_eq!(kernels.min(&[]), None);
        assert_eq!(kernels.max(&[]), None);
        assert_eq!(kernels.sum(&[]), 0.0);
        // NaN is ignored unless every value is NaN; ±∞ are ordinary values.
        assert_eq!(kernels.min(&[f64::NAN, 3.0, f64::NAN]), Some(3.0));
        assert!(kernels.max(&[f64::NAN; 20]).is_some_and(f64::is_nan));
        assert_eq!(kernels.min(&[f64::NAN, f64::INFINITY]), Some(f64::INFINITY));
        assert_eq!(kernels.max(&[f64::NEG_INFINITY; 3]), Some(f64::NEG_INFINITY));
        assert!(kernels.sum(&[1.0, f64::INFINITY, f64::NEG_INFINITY]).is_nan());
    }
}

#[test]
fn counter_increase_handles_resets_and_chunk_boundaries() {
    for kernels in kernel_sets() {
        assert_eq!(kernels.counter_increase(None, &[10.0, 15.0, 20.0]), 10.0, "{kernels:?}");
        // 10 -> 15 (+5), reset to 3 (+3), 3 -> 7 (+4)
        assert_eq!(kernels.counter_increase(None, &[10.0, 15.0, 3.0, 7.0]), 12.0);
        // continuing from a previous chunk whose last value was 8
        assert_eq!(kernels.counter_increase(Some(8.0), &[10.0, 12.0]), 4.0);
        assert_eq!(kernels.counter_increase(Some(8.0), &[]), 0.0);
        assert_eq!(kernels.counter_increase(None, &[]), 0.0);
        assert_eq!(kernels.counter_increase(None, &[5.0]), 0.0);
        // 40 steps of +1 and a reset to 0 in the middle, across every lane and the tail.
        let values: Vec<f64> = (0..20).chain(0..21).map(f64::from).collect();
        assert_eq!(kernels.counter_increase(None, &values), 39.0);
    }
    for (previous, value, reset) in [(1.0, 2.0, false), (2.0, 2.0, false), (2.0, 1.0, true), (f64::NAN, 1.0, true)] {
        assert_eq!(is_counter_reset(previous, value), reset, "{previous} -> {value}");
        assert_eq!(counter_step(previous, value) == value && value != 0.0, reset, "{previous} -> {value}");
    }
}

#[test]
fn window_lookups() {
    let offsets_ms = [0, 1_000, 2_000, 3_000];
    let values = [1.0, 2.0, 3.0, 4.0];
    assert_eq!(first_idx_at_or_after(&offsets_ms, 1_500), 2);
    assert_eq!(count_at_or_after(&offsets_ms, 1_000), 3);
    assert_eq!(count_at_or_after(&offsets_ms, 3_001), 0);
    assert_eq!(last_at_or_after(&offsets_ms, &values, 3_000), Some((3_000, 4.0)));
    assert_eq!(last_at_or_after(&offsets_ms, &values, 3_001), None);
    assert_eq!(last_at_or_after(&[], &[], 0), None);
    for start_offset_ms in 0..=3_001 {
        let expected = offsets_ms.partition_point(|&ms| ms < start_offset_ms);
        assert_eq!(first_idx_at_or_after(&offsets_ms, start_offset_ms), expected, "{start_offset_ms}");
    }
    assert_eq!(first_idx_at_or_after(&[], 5), 0);
    assert_eq!(first_idx_at_or_after(&[7], 7), 0);
    assert_eq!(first_idx_at_or_after(&[7], 8), 1);
}

/// Mostly ordinary values of many magnitudes, with NaN, ±∞ and signed zeros mixed in.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        60 => -1e6f64..1e6,
        10 => -1e300f64..1e300,
        10 => (-1_000i32..1_000).prop_map(f64::from),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(0.0),
        1 => Just(-0.0),
        1 => Just(f64::MIN_POSITIVE / 4.0),
    ]
}

/// A cumulative counter: mostly increases, sometimes a reset to a small value, rarely NaN.
fn counter_values() -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(
        prop_oneof![20 => (0.0f64..100.0).prop_map(Some), 1 => Just(None), 1 => Just(Some(f64::NAN))],
        0..300,
    )
    .prop_map(|steps| {
        let mut total = 0.0;
        steps
            .into_iter()
            .map(|step| {
                total = match step {
                    Some(increase) if increase.is_nan() => f64::NAN,
                    Some(increase) if total.is_nan() => increase,
                    Some(increase) => total + increase,
                    None => 1.0,
                };
                total
            })
            .collect()
    })
}

/// A slice of random length 0..300 starting at a random (so usually unaligned) offset.
fn unaligned(values: impl Strategy<Value = Vec<f64>>) -> impl Strategy<Value = (Vec<f64>, usize)> {
    (values, 0usize..8).prop_map(|(values, skip)| {
        let skip = skip.min(values.len());
        (values, skip)
    })
}

fn check_twins(values: &[f64], previous: Option<f64>) -> Result<(), TestCaseError> {
    let scalar = KernelSet::scalar();
    for simd in kernel_sets().into_iter().skip(1) {
        let name = simd.name();
        let (expected, actual) = (scalar.sum(values), simd.sum(values));
        prop_assert!(same(expected, actual), "{name} sum: {actual:e} vs scalar {expected:e}");
        let (expected, actual) = (scalar.min(values), simd.min(values));
        prop_assert!(same_option(expected, actual), "{name} min: {actual:?} vs scalar {expected:?}");
        let (expected, actual) = (scalar.max(values), simd.max(values));
        prop_assert!(same_option(expected, actual), "{name} max: {actual:?} vs scalar {expected:?}");
        let (expected, actual) = (scalar.counter_increase(previous, values), simd.counter_increase(previous, values));
        prop_assert!(same(expected, actual), "{name} counter_increase: {actual:e} vs scalar {expected:e}");
    }
    Ok(())
}

/// The naive definitions: a sequential sum, folds with `f64::min`/`f64::max`, a sequential
/// counter increase. The lane-order scalar kernels must agree with them up to rounding.
fn check_scalar_against_naive(values: &[f64], previous: Option<f64>) -> Result<(), TestCaseError> {
    let scalar = KernelSet::scalar();
    let close = |a: f64, b: f64, magnitude: f64| {
        same(a, b) || (a - b).abs() <= 1e-12 * magnitude.max(1.0) || (a.is_infinite() && a == b)
    };
    // Rounding errors are bounded by the magnitude of what is added (NaN adds no magnitude).
    let magnitude: f64 = values.iter().filter(|value| value.is_finite()).map(|value| value.abs()).sum();
    if values.iter().all(|value| value.is_finite()) {
        let naive: f64 = values.iter().sum();
        prop_assert!(close(scalar.sum(values), naive, magnitude), "sum {} vs {naive}", scalar.sum(values));
    }
    let naive_min = values.iter().copied().reduce(f64::min);
    let naive_max = values.iter().copied().reduce(f64::max);
    // Equal as numbers: `-0.0 == 0.0`, as the sign of a tie of zeros is not specified.
    let numbers_equal = |a: Option<f64>, b: Option<f64>| same_option(a, b) || a.zip(b).is_some_and(|(a, b)| a == b);
    prop_assert!(numbers_equal(scalar.min(values), naive_min), "min {:?} vs {naive_min:?}", scalar.min(values));
    prop_assert!(numbers_equal(scalar.max(values), naive_max), "max {:?} vs {naive_max:?}", scalar.max(values));
    let mut naive_increase = 0.0;
    let mut last = previous;
    for &value in values {
        if let Some(before) = last {
            naive_increase += counter_step(before, value);
        }
        last = Some(value);
    }
    let increase = scalar.counter_increase(previous, values);
    if naive_increase.is_finite() {
        // Each step is at most |value| + |previous|: the rounding error is bounded by that sum.
        let steps_magnitude = magnitude * 2.0 + previous.map_or(0.0, f64::abs);
        prop_assert!(close(increase, naive_increase, steps_magnitude), "increase {increase} vs {naive_increase}");
    } else {
        prop_assert!(same(increase, naive_increase) || increase.is_nan() == naive_increase.is_nan());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn simd_twins_equal_scalar(
        (values, skip) in unaligned(proptest::collection::vec(value(), 0..300)),
        previous in proptest::option::of(value()),
    ) {
        check_twins(&values[skip..], previous)?;
    }

    #[test]
    fn simd_twins_equal_scalar_on_counters(
        (values, skip) in unaligned(counter_values()),
        previous in proptest::option::of(0.0f64..1e4),
    ) {
        check_twins(&values[skip..], previous)?;
    }

    #[test]
    fn scalar_kernels_match_naive_folds(
        (values, skip) in unaligned(proptest::collection::vec(-1e6f64..1e6, 0..300)),
        previous in proptest::option::of(-1e6f64..1e6),
    ) {
        check_scalar_against_naive(&values[skip..], previous)?;
    }

    #[test]
    fn scalar_kernels_match_naive_folds_on_counters(
        (values, skip) in unaligned(counter_values()),
        previous in proptest::option::of(0.0f64..1e4),
    ) {
        check_scalar_against_naive(&values[skip..], previous)?;
    }
}

proptest! {
    /// The interpolating search finds what a binary search finds, on regular, jittered, bursty
    /// and duplicated offsets.
    #[test]
    fn first_idx_at_or_after_equals_partition_point(
        gaps_ms in proptest::collection::vec(
            prop_oneof![10 => Just(1_000u32), 10 => 990u32..1_010, 2 => 0u32..5, 1 => 0u32..1_000_000],
            0..300,
        ),
        first_ms in 0u32..1_000,
        start_pick in 0usize..310,
        start_shift_ms in -2i64..=2,
    ) {
        let mut offsets_ms = Vec::with_capacity(gaps_ms.len());
        let mut offset_ms = first_ms;
        for gap_ms in gaps_ms {
            offsets_ms.push(offset_ms);
            offset_ms = offset_ms.saturating_add(gap_ms);
        }
        let start_ms = offsets_ms.get(start_pick).map_or(i64::from(offset_ms), |&ms| i64::from(ms) + start_shift_ms);
        let start_offset_ms = start_ms.clamp(0, i64::from(u32::MAX)) as u32;
        let expected = offsets_ms.partition_point(|&ms| ms < start_offset_ms);
        prop_assert_eq!(first_idx_at_or_after(&offsets_ms, start_offset_ms), expected);
        prop_assert_eq!(count_at_or_after(&offsets_ms, start_offset_ms), offsets_ms.len() - expected);
    }
}

#[test]
fn detection_picks_avx2_when_available() {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        assert_eq!(KernelSet::get().name(), "avx2");
        return;
    }
    assert_eq!(KernelSet::get().name(), "scalar");
}
