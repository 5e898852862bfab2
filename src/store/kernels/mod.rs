//! Window kernels: the tight loops over a chunk's value column.
//!
//! This is the one module where `unsafe` and SIMD will live (see ARCHITECTURE.md). Today every
//! kernel is the portable scalar version; the SIMD variants arrive with their scalar twins kept
//! here as the reference that a property test compares them against.

/// Sum of the values.
pub fn sum(values: &[f64]) -> f64 {
    // Four independent accumulators let the compiler keep several adds in flight.
    let mut lanes = [0.0f64; 4];
    let mut quads = values.chunks_exact(4);
    for quad in &mut quads {
        lanes[0] += quad[0];
        lanes[1] += quad[1];
        lanes[2] += quad[2];
        lanes[3] += quad[3];
    }
    let tail: f64 = quads.remainder().iter().sum();
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail
}

/// Smallest value, `None` for an empty slice. NaN never reaches the store (ingest rejects it).
pub fn min(values: &[f64]) -> Option<f64> {
    values.iter().copied().reduce(f64::min)
}

/// Largest value, `None` for an empty slice.
pub fn max(values: &[f64]) -> Option<f64> {
    values.iter().copied().reduce(f64::max)
}

/// Increase of a cumulative counter across consecutive samples, treating any decrease as a
/// reset to zero (the new value is then the increase since the reset), as Prometheus does.
/// `previous` is the sample just before `values[0]`, if any (the last value of the previous chunk).
pub fn counter_increase(previous: Option<f64>, values: &[f64]) -> f64 {
    let mut increase = 0.0;
    let mut last = match previous {
        Some(value) => value,
        None => match values.first() {
            Some(&first) => first,
            None => return 0.0,
        },
    };
    let start_idx = usize::from(previous.is_none());
    for &value in &values[start_idx..] {
        increase += if value >= last { value - last } else { value };
        last = value;
    }
    increase
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_min_max() {
        let values = [1.0, -2.0, 3.5, 4.0, 10.0];
        assert_eq!(sum(&values), 16.5);
        assert_eq!(min(&values), Some(-2.0));
        assert_eq!(max(&values), Some(10.0));
        assert_eq!(min(&[]), None);
        assert_eq!(sum(&[]), 0.0);
    }

    #[test]
    fn counter_increase_handles_resets_and_chunk_boundaries() {
        assert_eq!(counter_increase(None, &[10.0, 15.0, 20.0]), 10.0);
        // 10 -> 15 (+5), reset to 3 (+3), 3 -> 7 (+4)
        assert_eq!(counter_increase(None, &[10.0, 15.0, 3.0, 7.0]), 12.0);
        // continuing from a previous chunk whose last value was 8
        assert_eq!(counter_increase(Some(8.0), &[10.0, 12.0]), 4.0);
        assert_eq!(counter_increase(None, &[]), 0.0);
        assert_eq!(counter_increase(None, &[5.0]), 0.0);
    }
}
