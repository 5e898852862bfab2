//! A chunk: up to [`CHUNK_CAPACITY`] samples of one series, timestamps and values in separate
//! arrays (columnar), so that the window kernels run over plain `&[f64]` slices.

/// Samples per chunk. Two minutes of 1 s samples fit in one chunk.
pub const CHUNK_CAPACITY: usize = 128;

const _: () = assert!(CHUNK_CAPACITY.is_power_of_two() && CHUNK_CAPACITY >= 16);

/// Timestamps ascend strictly within a chunk and across the chunks of a series.
#[derive(Debug, Default)]
pub struct Chunk {
    timestamps_ms: Vec<i64>,
    values: Vec<f64>,
}

impl Chunk {
    pub fn with_capacity() -> Self {
        Chunk { timestamps_ms: Vec::with_capacity(CHUNK_CAPACITY), values: Vec::with_capacity(CHUNK_CAPACITY) }
    }

    /// Empties the chunk and keeps its buffers, for reuse by another series.
    pub fn clear(&mut self) {
        self.timestamps_ms.clear();
        self.values.clear();
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_full(&self) -> bool {
        self.values.len() >= CHUNK_CAPACITY
    }

    pub fn last_timestamp_ms(&self) -> Option<i64> {
        self.timestamps_ms.last().copied()
    }

    /// Appends a sample. The caller guarantees the chunk is not full and that `timestamp_ms`
    /// is later than the last one.
    pub fn push(&mut self, timestamp_ms: i64, value: f64) {
        debug_assert!(!self.is_full());
        debug_assert!(self.last_timestamp_ms().is_none_or(|last| last < timestamp_ms));
        self.timestamps_ms.push(timestamp_ms);
        self.values.push(value);
    }

    /// Replaces the value of the last sample (a re-sent point with the same timestamp).
    pub fn overwrite_last(&mut self, value: f64) {
        if let Some(last) = self.values.last_mut() {
            *last = value;
        }
    }

    /// The samples with `timestamp >= start_ms`, as parallel slices.
    pub fn since(&self, start_ms: i64) -> (&[i64], &[f64]) {
        let first_idx = self.timestamps_ms.partition_point(|&ts| ts < start_ms);
        (&self.timestamps_ms[first_idx..], &self.values[first_idx..])
    }

    /// Heap bytes reserved by this chunk.
    pub fn heap_bytes(&self) -> usize {
        self.timestamps_ms.capacity() * std::mem::size_of::<i64>() + self.values.capacity() * std::mem::size_of::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_cuts_at_the_window_start() {
        let mut chunk = Chunk::with_capacity();
        for ts in [10, 20, 30, 40] {
            chunk.push(ts, ts as f64 / 10.0);
        }
        assert_eq!(chunk.since(25), (&[30, 40][..], &[3.0, 4.0][..]));
        assert_eq!(chunk.since(0).0.len(), 4);
        assert!(chunk.since(41).0.is_empty());
        chunk.overwrite_last(9.0);
        assert_eq!(chunk.since(40).1, &[9.0]);
    }
}
