//! The scalar kernels: the portable fallback and the reference the SIMD twins are tested
//! against. They accumulate in the fixed lane order of the module doc of `kernels`, element
//! `i` into lane `i % 16`, then fold the lanes by halving, so a SIMD twin that follows the same
//! order returns the same bits.

use super::{counter_step, ACCUMULATION_LANES as LANES};

/// `candidate` if it is smaller than `acc`, else `acc`: what `vminpd candidate, acc` computes
/// (NaN in `candidate` is ignored; a NaN `acc` stays; a tie of zeros keeps `acc`).
#[inline]
pub(super) fn min_step(candidate: f64, acc: f64) -> f64 {
    if candidate < acc {
        candidate
    } else {
        acc
    }
}

/// `candidate` if it is larger than `acc`, else `acc` (`vmaxpd candidate, acc`).
#[inline]
pub(super) fn max_step(candidate: f64, acc: f64) -> f64 {
    if candidate > acc {
        candidate
    } else {
        acc
    }
}

/// Adds `values` into `lanes` element by element, `values[i]` into lane `i % LANES`.
#[inline]
fn accumulate(lanes: &mut [f64; LANES], values: &[f64], step: impl Fn(f64, f64) -> f64) {
    let mut blocks = values.chunks_exact(LANES);
    for block in &mut blocks {
        for (lane, &value) in lanes.iter_mut().zip(block) {
            *lane = step(value, *lane);
        }
    }
    for (lane, &value) in lanes.iter_mut().zip(blocks.remainder()) {
        *lane = step(value, *lane);
    }
}

/// Folds the lanes by halving: `lanes[j] = fold(lanes[j], lanes[j + width])` for `width` in
/// `LANES / 2, …, 1`, then lane 0.
#[inline]
fn fold_lanes(mut lanes: [f64; LANES], fold: impl Fn(f64, f64) -> f64) -> f64 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for lane_idx in 0..width {
            lanes[lane_idx] = fold(lanes[lane_idx], lanes[lane_idx + width]);
        }
    }
    lanes[0]
}

/// Sum of the values in lane order.
pub(super) fn sum(values: &[f64]) -> f64 {
    let mut lanes = [0.0; LANES];
    accumulate(&mut lanes, values, |value, acc| acc + value);
    fold_lanes(lanes, |lower, upper| lower + upper)
}

/// Minimum in lane order with `+∞` as the identity (so `+∞` for an empty or all-NaN slice).
pub(super) fn min_lanes(values: &[f64]) -> f64 {
    let mut lanes = [f64::INFINITY; LANES];
    accumulate(&mut lanes, values, min_step);
    fold_lanes(lanes, |lower, upper| min_step(upper, lower))
}

/// Maximum in lane order with `-∞` as the identity.
pub(super) fn max_lanes(values: &[f64]) -> f64 {
    let mut lanes = [f64::NEG_INFINITY; LANES];
    accumulate(&mut lanes, values, max_step);
    fold_lanes(lanes, |lower, upper| max_step(upper, lower))
}

/// Counter increase over the steps `values[i] -> values[i + 1]`, step `i` into lane `i % LANES`.
pub(super) fn increase_within(values: &[f64]) -> f64 {
    let mut lanes = [0.0; LANES];
    if values.len() >= 2 {
        let (previous, current) = (&values[..values.len() - 1], &values[1..]);
        let mut previous_blocks = previous.chunks_exact(LANES);
        let mut current_blocks = current.chunks_exact(LANES);
        for (previous_block, current_block) in (&mut previous_blocks).zip(&mut current_blocks) {
            for ((lane, &before), &after) in lanes.iter_mut().zip(previous_block).zip(current_block) {
                *lane += counter_step(before, after);
            }
        }
        let tail_steps = previous_blocks.remainder().iter().zip(current_blocks.remainder());
        for (lane, (&before, &after)) in lanes.iter_mut().zip(tail_steps) {
            *lane += counter_step(before, after);
        }
    }
    fold_lanes(lanes, |lower, upper| lower + upper)
}
