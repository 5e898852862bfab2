//! Latency histograms (HDR, microsecond resolution) and their summaries.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Records durations from 1 µs to 10 min with three significant digits.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            histogram: Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid"),
        }
    }
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl LatencyHistogram {
    pub fn record(&mut self, duration: Duration) {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX).max(1);
        self.histogram.saturating_record(micros);
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
    }

    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    pub fn summary(&self) -> LatencySummary {
        if self.histogram.is_empty() {
            return LatencySummary::default();
        }
        let ms = |micros: u64| micros as f64 / 1_000.0;
        LatencySummary {
            samples: self.histogram.len(),
            p50_ms: ms(self.histogram.value_at_quantile(0.50)),
            p90_ms: ms(self.histogram.value_at_quantile(0.90)),
            p99_ms: ms(self.histogram.value_at_quantile(0.99)),
            max_ms: ms(self.histogram.max()),
            mean_ms: self.histogram.mean() / 1_000.0,
        }
    }
}

impl LatencySummary {
    /// `p50 1.20 ms · p90 … · max … (n samples)`
    pub fn one_line(&self) -> String {
        format!(
            "p50 {:.3} ms · p90 {:.3} ms · p99 {:.3} ms · max {:.3} ms ({} samples)",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms, self.samples
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut histogram = LatencyHistogram::default();
        for millis in 1..=1000u64 {
            histogram.record(Duration::from_millis(millis));
        }
        let summary = histogram.summary();
        assert_eq!(summary.samples, 1000);
        // Three significant digits: within 0.1% of the exact order statistics.
        for (actual, exact) in
            [(summary.p50_ms, 500.0), (summary.p90_ms, 900.0), (summary.p99_ms, 990.0), (summary.max_ms, 1000.0)]
        {
            assert!((actual - exact).abs() <= exact * 0.001 + 0.001, "{actual} vs {exact}");
        }
        assert!((summary.mean_ms - 500.5).abs() < 0.5);
    }

    #[test]
    fn merging_and_empty() {
        assert_eq!(LatencyHistogram::default().summary(), LatencySummary::default());
        let mut fast = LatencyHistogram::default();
        let mut slow = LatencyHistogram::default();
        for _ in 0..99 {
            fast.record(Duration::from_micros(100));
        }
        slow.record(Duration::from_secs(2));
        fast.merge(&slow);
        let summary = fast.summary();
        assert_eq!(summary.samples, 100);
        assert!((summary.p50_ms - 0.1).abs() < 0.001);
        assert!((summary.max_ms - 2000.0).abs() < 2.0);
        // Sub-microsecond durations count as 1 µs rather than being lost.
        let mut tiny = LatencyHistogram::default();
        tiny.record(Duration::from_nanos(10));
        assert_eq!(tiny.len(), 1);
    }
}
