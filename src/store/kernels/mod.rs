//! Window kernels: the tight loops over a chunk's columns, with SIMD twins chosen at run time.
//!
//! This is the one module where `unsafe` and SIMD live (see ARCHITECTURE.md). Every kernel has
//! a portable scalar version in `scalar.rs`; on x86_64 CPUs with AVX2 the [`KernelSet`] detected
//! once at first use runs the AVX2 twins in `avx2.rs`. A property test (`tests.rs`) checks that
//! each twin returns the same bits as its scalar version on random slices with NaN and ±∞.
//!
//! # Accumulation order (why the twins agree bit for bit)
//!
//! Floating-point addition is not associative, so "the sum" depends on the order of the adds.
//! Every implementation here uses one order, defined on [`ACCUMULATION_LANES`] = 16 lanes:
//!
//! 1. lane `j` starts at the identity (`0.0` for sums, `+∞` for min, `-∞` for max) and takes
//!    the elements `i` with `i % 16 == j`, in index order;
//! 2. the lanes are folded by halving: for `width` in 8, 4, 2, 1,
//!    `lane[j] = op(lane[j], lane[j + width])` for `j < width`; lane 0 is the result.
//!
//! AVX2 keeps the 16 lanes in four 4-wide registers and pads a partial last vector with the
//! identity, which leaves a lane unchanged (a lane that starts at `+0.0` can never become
//! `-0.0`, so adding `+0.0` is exact). The scalar twin writes the same order out with an array
//! of 16 accumulators, which the compiler turns into SSE2 adds on any x86_64. The results
//! therefore match bit for bit, except that the payload of a NaN is not significant: two
//! results are *equal* when their bits are equal or both are NaN. One order for every CPU also
//! means a query answers the same on every machine, whichever kernels it runs.
//!
//! # NaN and infinities
//!
//! Ingest rejects NaN, but the kernels still define it:
//! - `sum`: IEEE arithmetic (a NaN, or `+∞` and `-∞` together, give NaN).
//! - `min`/`max`: NaN is ignored; the result is NaN only when every value is NaN (the semantics
//!   of folding with [`f64::min`]/[`f64::max`]). When `-0.0` and `+0.0` tie, which one is
//!   returned is decided by the lane order (the same in both twins).
//! - `counter_increase`: a step to a value `>=` the previous one adds the difference, anything
//!   else (a decrease, or a comparison with NaN) is a reset and adds the new value.

#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod avx2;
mod scalar;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

/// Number of partial accumulators in the fixed accumulation order (see the module doc).
pub const ACCUMULATION_LANES: usize = 16;

const _: () = assert!(ACCUMULATION_LANES.is_power_of_two() && ACCUMULATION_LANES >= 4);

/// One implementation of every scan kernel, chosen once for the running CPU.
///
/// The fields are plain function pointers, so a call through [`KernelSet::get`] costs one
/// atomic load and one indirect call: negligible next to a scan, even of a few samples.
#[derive(Clone, Copy)]
pub struct KernelSet {
    name: &'static str,
    sum: fn(&[f64]) -> f64,
    /// Lane-order min with `+∞` as identity; [`KernelSet::min`] adds the all-NaN case.
    min_lanes: fn(&[f64]) -> f64,
    /// Lane-order max with `-∞` as identity.
    max_lanes: fn(&[f64]) -> f64,
    /// Counter increase over consecutive pairs of the slice (no previous value).
    increase_within: fn(&[f64]) -> f64,
}

impl std::fmt::Debug for KernelSet {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("KernelSet").field("name", &self.name).finish()
    }
}

static DETECTED: OnceLock<KernelSet> = OnceLock::new();

impl KernelSet {
    /// The portable kernels, available everywhere.
    pub fn scalar() -> KernelSet {
        KernelSet {
            name: "scalar",
            sum: scalar::sum,
            min_lanes: scalar::min_lanes,
            max_lanes: scalar::max_lanes,
            increase_within: scalar::increase_within,
        }
    }

    /// The fastest kernels the running CPU supports.
    pub fn detect() -> KernelSet {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = avx2::Avx2::detect() {
            return avx2.kernel_set();
        }
        KernelSet::scalar()
    }

    /// The kernels of [`KernelSet::detect`], detected on first use.
    pub fn get() -> &'static KernelSet {
        DETECTED.get_or_init(KernelSet::detect)
    }

    /// `"avx2"` or `"scalar"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Sum of the values, in the fixed lane order.
    pub fn sum(&self, values: &[f64]) -> f64 {
        (self.sum)(values)
    }

    /// Smallest value ignoring NaN (NaN if all are NaN), `None` for an empty slice.
    pub fn min(&self, values: &[f64]) -> Option<f64> {
        let lanes_min = (self.min_lanes)(values);
        finish_extreme(values, lanes_min, f64::INFINITY)
    }

    /// Largest value ignoring NaN (NaN if all are NaN), `None` for an empty slice.
    pub fn max(&self, values: &[f64]) -> Option<f64> {
        let lanes_max = (self.max_lanes)(values);
        finish_extreme(values, lanes_max, f64::NEG_INFINITY)
    }

    /// Increase of a cumulative counter across consecutive samples, treating any decrease as a
    /// reset to zero (the new value is then the increase since the reset), as Prometheus does.
    /// `previous` is the sample just before `values[0]`, if any (the last value of the
    /// previous chunk). The step from `previous` is added to the lane-order sum of the steps
    /// within `values`.
    pub fn counter_increase(&self, previous: Option<f64>, values: &[f64]) -> f64 {
        match (previous, values.first()) {
            (_, None) => 0.0,
            (None, Some(_)) => (self.increase_within)(values),
            (Some(previous), Some(&first)) => counter_step(previous, first) + (self.increase_within)(values),
        }
    }
}

/// Turns a lane-order extreme into the public result: the identity comes back only for an
/// empty slice, for values that are all NaN, or when the identity itself is among the values.
fn finish_extreme(values: &[f64], lanes_extreme: f64, identity: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    if lanes_extreme == identity && !values.contains(&identity) {
        // Every value was NaN (NaN is ignored while any other value exists).
        return Some(f64::NAN);
    }
    Some(lanes_extreme)
}

/// The counter increase of one step from `previous` to `value`: the difference, or `value`
/// itself after a reset (a decrease, or a comparison with NaN).
#[inline]
pub fn counter_step(previous: f64, value: f64) -> f64 {
    if value >= previous {
        value - previous
    } else {
        value
    }
}

/// Whether the step from `previous` to `value` is a counter reset for [`counter_step`]: a
/// decrease, or a comparison with NaN.
#[inline]
pub fn is_counter_reset(previous: f64, value: f64) -> bool {
    !matches!(value.partial_cmp(&previous), Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal))
}

/// Sum of the values, with the detected kernels.
pub fn sum(values: &[f64]) -> f64 {
    KernelSet::get().sum(values)
}

/// Smallest value ignoring NaN, `None` for an empty slice, with the detected kernels.
pub fn min(values: &[f64]) -> Option<f64> {
    KernelSet::get().min(values)
}

/// Largest value ignoring NaN, `None` for an empty slice, with the detected kernels.
pub fn max(values: &[f64]) -> Option<f64> {
    KernelSet::get().max(values)
}

/// [`KernelSet::counter_increase`] with the detected kernels.
pub fn counter_increase(previous: Option<f64>, values: &[f64]) -> f64 {
    KernelSet::get().counter_increase(previous, values)
}

/// Index of the first offset `>= start_offset_ms` in ascending `offsets_ms` (the length when
/// none is). The samples from there on are the ones in the window.
///
/// A series' samples are usually evenly spaced, so the search starts where a linear
/// interpolation between the first and the last offset puts `start_offset_ms` and gallops from
/// there. On a regular series it reads two neighbouring elements (one cache line) instead of
/// the seven scattered probes of a binary search over a chunk of 120, which matters because the
/// column is usually not in cache when a query reaches it; irregular series cost at most about
/// twice a binary search.
pub fn first_idx_at_or_after(offsets_ms: &[u32], start_offset_ms: u32) -> usize {
    let (Some(&first_ms), Some(&last_ms)) = (offsets_ms.first(), offsets_ms.last()) else { return 0 };
    if start_offset_ms <= first_ms {
        return 0;
    }
    if start_offset_ms > last_ms {
        return offsets_ms.len();
    }
    // Here first_ms < start_offset_ms <= last_ms: at least two offsets, and the answer is in
    // 1..len.
    let last_idx = offsets_ms.len() - 1;
    let guess = interpolated_idx(first_ms, last_ms, offsets_ms.len(), start_offset_ms);
    // Gallop to a bracket `offsets[below] < start <= offsets[at_or_after]`.
    let (below, at_or_after) = if offsets_ms[guess] >= start_offset_ms {
        let (mut at_or_after, mut step) = (guess, 1);
        loop {
            let probe = at_or_after.saturating_sub(step);
            if offsets_ms[probe] < start_offset_ms {
                break (probe, at_or_after);
            }
            (at_or_after, step) = (probe, step * 2);
        }
    } else {
        let (mut below, mut step) = (guess, 1);
        loop {
            let probe = (below + step).min(last_idx);
            if offsets_ms[probe] >= start_offset_ms {
                break (below, probe);
            }
            (below, step) = (probe, step * 2);
        }
    };
    below + 1 + offsets_ms[below + 1..at_or_after].partition_point(|&offset_ms| offset_ms < start_offset_ms)
}

/// Where `start_offset_ms` falls among `n_offsets` ascending offsets from `first_ms` to
/// `last_ms` if they were evenly spaced: the first index `k` with `first + k·(last - first) /
/// (n - 1) >= start`, clamped to `1..n` (0 when there is nothing to interpolate). Exact for
/// evenly spaced offsets; the starting point of [`first_idx_at_or_after`].
pub fn interpolated_idx(first_ms: u32, last_ms: u32, n_offsets: usize, start_offset_ms: u32) -> usize {
    let Some(last_idx) = n_offsets.checked_sub(1).filter(|&last_idx| last_idx > 0 && last_ms > first_ms) else {
        return 0;
    };
    let span_ms = u64::from(last_ms - first_ms);
    let guess = u64::from(start_offset_ms.saturating_sub(first_ms)).saturating_mul(last_idx as u64).div_ceil(span_ms);
    (guess.min(last_idx as u64) as usize).max(1)
}

/// Hints the CPU to start loading the cache line holding `value`, so that a later read of it
/// overlaps with other memory accesses instead of waiting after them. Never faults, changes
/// nothing observable; a no-op where the architecture has no hint here.
#[inline]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is an SSE instruction (part of x86_64's baseline), only a hint, and
    // does not access memory architecturally; the address is that of a live reference anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((value as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Number of samples at or after `start_offset_ms` in ascending `offsets_ms`.
pub fn count_at_or_after(offsets_ms: &[u32], start_offset_ms: u32) -> usize {
    offsets_ms.len() - first_idx_at_or_after(offsets_ms, start_offset_ms)
}

/// The last sample (offset, value) if it is at or after `start_offset_ms`. With ascending
/// offsets the last sample in the window is the last sample, so this reads one element.
pub fn last_at_or_after(offsets_ms: &[u32], values: &[f64], start_offset_ms: u32) -> Option<(u32, f64)> {
    debug_assert_eq!(offsets_ms.len(), values.len());
    let (&offset_ms, &value) = offsets_ms.last().zip(values.last())?;
    (offset_ms >= start_offset_ms).then_some((offset_ms, value))
}
