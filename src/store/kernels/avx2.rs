//! AVX2 twins of the scalar kernels (x86_64 only), used when the CPU reports AVX2 at run time.
//!
//! The 16 accumulation lanes live in four 4-wide registers: register `k` holds lanes
//! `4k..4k + 4`, so a block of 16 values is four unaligned loads, and a partial last block is
//! loaded with masked loads (which never touch the masked-out memory) padded with the
//! operation's identity. The fold by halving is done on registers in the order the scalar twin
//! uses. See the module doc of `kernels` for why this makes the results bit-identical.
//!
//! AVX-512 is not used: its intrinsics need Rust 1.89 (the crate's MSRV is 1.88), and on the
//! Zen 4 CPUs this runs on 512-bit operations are executed as two 256-bit halves, so for scans
//! bounded by loads and memory bandwidth it would add code without adding speed.

use std::arch::x86_64::{
    __m128d, __m256d, _mm256_add_pd, _mm256_blendv_pd, _mm256_castpd256_pd128, _mm256_castsi256_pd, _mm256_cmp_pd,
    _mm256_cmpgt_epi64, _mm256_extractf128_pd, _mm256_loadu_pd, _mm256_maskload_pd, _mm256_max_pd, _mm256_min_pd,
    _mm256_set1_epi64x, _mm256_set1_pd, _mm256_setr_epi64x, _mm256_setzero_pd, _mm256_sub_pd, _mm_add_pd, _mm_add_sd,
    _mm_cvtsd_f64, _mm_max_pd, _mm_max_sd, _mm_min_pd, _mm_min_sd, _mm_unpackhi_pd, _CMP_GE_OQ,
};

use super::{KernelSet, ACCUMULATION_LANES};

/// 4-wide registers per set of accumulation lanes.
const REGISTERS: usize = ACCUMULATION_LANES / 4;
const _: () = assert!(REGISTERS == 4, "the folds below are written out for four registers");

/// Proof that the running CPU supports AVX2: only [`Avx2::detect`] makes one, and the AVX2
/// kernels are reachable only through the [`KernelSet`] that [`Avx2::kernel_set`] builds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Avx2 {
    _detected: (),
}

impl Avx2 {
    pub(super) fn detect() -> Option<Avx2> {
        is_x86_feature_detected!("avx2").then_some(Avx2 { _detected: () })
    }

    pub(super) fn kernel_set(self) -> KernelSet {
        KernelSet {
            name: "avx2",
            sum: sum_entry,
            min_lanes: min_lanes_entry,
            max_lanes: max_lanes_entry,
            increase_within: increase_within_entry,
        }
    }
}

// The entry points below are private: their only callers are the pointers in the `KernelSet`
// of `Avx2::kernel_set`, which needs an `Avx2`, which exists only once AVX2 was detected.

fn sum_entry(values: &[f64]) -> f64 {
    // SAFETY: reachable only through `Avx2::kernel_set`, so AVX2 is available on this CPU.
    unsafe { sum(values) }
}

fn min_lanes_entry(values: &[f64]) -> f64 {
    // SAFETY: reachable only through `Avx2::kernel_set`, so AVX2 is available on this CPU.
    unsafe { min_lanes(values) }
}

fn max_lanes_entry(values: &[f64]) -> f64 {
    // SAFETY: reachable only through `Avx2::kernel_set`, so AVX2 is available on this CPU.
    unsafe { max_lanes(values) }
}

fn increase_within_entry(values: &[f64]) -> f64 {
    // SAFETY: reachable only through `Avx2::kernel_set`, so AVX2 is available on this CPU.
    unsafe { increase_within(values) }
}

/// Loads `values[0..4]`.
#[inline]
#[target_feature(enable = "avx2")]
fn load4(values: &[f64]) -> __m256d {
    assert!(values.len() >= 4);
    // SAFETY: the four f64 read are in bounds (checked above); `loadu` has no alignment need.
    unsafe { _mm256_loadu_pd(values.as_ptr()) }
}

/// Loads the first `values.len()` (< 4) values into the low lanes; the other lanes are
/// `padding`.
#[inline]
#[target_feature(enable = "avx2")]
fn load_partial(values: &[f64], padding: __m256d) -> __m256d {
    debug_assert!(values.len() < 4);
    let lane_idx = _mm256_setr_epi64x(0, 1, 2, 3);
    let mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(values.len() as i64), lane_idx);
    // SAFETY: a masked load reads only the lanes whose mask is set, here the first
    // `values.len()` elements, all in bounds; masked-out lanes are not accessed (no fault).
    let loaded = unsafe { _mm256_maskload_pd(values.as_ptr(), mask) };
    _mm256_blendv_pd(padding, loaded, _mm256_castsi256_pd(mask))
}

/// Feeds `values` into the four registers in lane order: `values[i]` into lane `i % 16`.
/// `step(register, loaded)` combines; a partial last vector is padded with `identity`.
#[inline]
#[target_feature(enable = "avx2")]
fn accumulate(
    registers: &mut [__m256d; REGISTERS],
    values: &[f64],
    identity: __m256d,
    step: impl Fn(__m256d, __m256d) -> __m256d,
) {
    let mut blocks = values.chunks_exact(ACCUMULATION_LANES);
    for block in &mut blocks {
        for (register_idx, register) in registers.iter_mut().enumerate() {
            *register = step(*register, load4(&block[4 * register_idx..]));
        }
    }
    for (register, quad) in registers.iter_mut().zip(blocks.remainder().chunks(4)) {
        let loaded = if quad.len() == 4 { load4(quad) } else { load_partial(quad, identity) };
        *register = step(*register, loaded);
    }
}

/// The fold by halving, 16 -> 8 -> 4 lanes on 256-bit registers, then 2 -> 1 on 128-bit ones:
/// `fold256(lower, upper)`, `fold128(lower, upper)`, and `fold_low(lower, upper)` for lane 0.
#[inline]
#[target_feature(enable = "avx2")]
fn fold_registers(
    registers: [__m256d; REGISTERS],
    fold256: impl Fn(__m256d, __m256d) -> __m256d,
    fold128: impl Fn(__m128d, __m128d) -> __m128d,
    fold_low: impl Fn(__m128d, __m128d) -> __m128d,
) -> f64 {
    // width 8: lanes 0..8 with 8..16
    let low_half = fold256(registers[0], registers[2]);
    let high_half = fold256(registers[1], registers[3]);
    // width 4: lanes 0..4 with 4..8
    let quad = fold256(low_half, high_half);
    // width 2: lanes 0..2 with 2..4
    let pair = fold128(_mm256_castpd256_pd128(quad), _mm256_extractf128_pd::<1>(quad));
    // width 1: lane 0 with lane 1
    _mm_cvtsd_f64(fold_low(pair, _mm_unpackhi_pd(pair, pair)))
}

#[target_feature(enable = "avx2")]
fn sum(values: &[f64]) -> f64 {
    let zero = _mm256_setzero_pd();
    let mut registers = [zero; REGISTERS];
    accumulate(&mut registers, values, zero, |acc, loaded| _mm256_add_pd(acc, loaded));
    fold_registers(
        registers,
        |lower, upper| _mm256_add_pd(lower, upper),
        |lower, upper| _mm_add_pd(lower, upper),
        |lower, upper| _mm_add_sd(lower, upper),
    )
}

#[target_feature(enable = "avx2")]
fn min_lanes(values: &[f64]) -> f64 {
    let identity = _mm256_set1_pd(f64::INFINITY);
    let mut registers = [identity; REGISTERS];
    // `vminpd a, b` is `a < b ? a : b`, the scalar `min_step(a, b)`.
    accumulate(&mut registers, values, identity, |acc, loaded| _mm256_min_pd(loaded, acc));
    fold_registers(
        registers,
        |lower, upper| _mm256_min_pd(upper, lower),
        |lower, upper| _mm_min_pd(upper, lower),
        |lower, upper| _mm_min_sd(upper, lower),
    )
}

#[target_feature(enable = "avx2")]
fn max_lanes(values: &[f64]) -> f64 {
    let identity = _mm256_set1_pd(f64::NEG_INFINITY);
    let mut registers = [identity; REGISTERS];
    accumulate(&mut registers, values, identity, |acc, loaded| _mm256_max_pd(loaded, acc));
    fold_registers(
        registers,
        |lower, upper| _mm256_max_pd(upper, lower),
        |lower, upper| _mm_max_pd(upper, lower),
        |lower, upper| _mm_max_sd(upper, lower),
    )
}

/// Counter steps of four consecutive pairs: `current >= previous ? current - previous : current`.
#[inline]
#[target_feature(enable = "avx2")]
fn counter_steps(previous: __m256d, current: __m256d) -> __m256d {
    let increased = _mm256_cmp_pd::<_CMP_GE_OQ>(current, previous);
    _mm256_blendv_pd(current, _mm256_sub_pd(current, previous), increased)
}

#[target_feature(enable = "avx2")]
fn increase_within(values: &[f64]) -> f64 {
    let zero = _mm256_setzero_pd();
    let mut registers = [zero; REGISTERS];
    if values.len() >= 2 {
        let (previous, current) = (&values[..values.len() - 1], &values[1..]);
        let mut previous_blocks = previous.chunks_exact(ACCUMULATION_LANES);
        let mut current_blocks = current.chunks_exact(ACCUMULATION_LANES);
        for (previous_block, current_block) in (&mut previous_blocks).zip(&mut current_blocks) {
            for (register_idx, register) in registers.iter_mut().enumerate() {
                let steps = counter_steps(
                    load4(&previous_block[4 * register_idx..]),
                    load4(&current_block[4 * register_idx..]),
                );
                *register = _mm256_add_pd(*register, steps);
            }
        }
        let tails = previous_blocks.remainder().chunks(4).zip(current_blocks.remainder().chunks(4));
        for (register, (previous_quad, current_quad)) in registers.iter_mut().zip(tails) {
            // Padded lanes compare +0.0 with +0.0: a step of +0.0, which leaves the lane as is.
            let steps = if current_quad.len() == 4 {
                counter_steps(load4(previous_quad), load4(current_quad))
            } else {
                counter_steps(load_partial(previous_quad, zero), load_partial(current_quad, zero))
            };
            *register = _mm256_add_pd(*register, steps);
        }
    }
    fold_registers(
        registers,
        |lower, upper| _mm256_add_pd(lower, upper),
        |lower, upper| _mm_add_pd(lower, upper),
        |lower, upper| _mm_add_sd(lower, upper),
    )
}
