//! The connection deadlines of every port, in one place (`config::ConnectionLimits`): how long a
//! connection may stay in each [`Phase`], how fast a request body must arrive ([`BodyRate`]), and
//! how long a write may stall. The hyper-served ports (`port.rs`) and the OTLP/HTTP driver
//! (`ingest/http1/driver.rs`) both ask this module; neither has timeouts of its own.

use std::time::Duration;

use tokio::time::Instant;

use super::registry::Phase;
use crate::config::ConnectionLimits;

/// Stands in for "never" where an instant is needed (as tokio does for its own far future).
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

/// `instant + duration`, or a far future instead of overflowing (a flag may be years long).
pub(crate) fn after(instant: Instant, duration: Duration) -> Instant {
    instant.checked_add(duration).unwrap_or_else(|| instant + FAR_FUTURE)
}

/// The deadlines of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadlines {
    /// An unfinished connection (no complete request head yet): from the accept, the end of the
    /// TLS handshake, or a request's first byte. Also the grace before [`BodyRate`] applies.
    pub header_read_timeout: Duration,
    /// A connection with nothing in flight.
    pub idle_timeout: Duration,
    /// A write that makes no progress.
    pub write_timeout: Duration,
    /// The slowest request body accepted after the grace; 0 turns the rule off.
    pub min_body_bytes_per_second: u64,
}

impl Deadlines {
    pub(crate) fn new(limits: &ConnectionLimits) -> Deadlines {
        Deadlines {
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            write_timeout: limits.write_timeout,
            min_body_bytes_per_second: limits.min_body_bytes_per_second,
        }
    }

    /// When a connection that entered `phase` at `since` is closed; `None` while requests are in
    /// flight (a busy connection is bounded by its bodies' rate, its writes and HTTP/2 pings).
    pub(crate) fn phase_deadline(&self, phase: Phase, since: Instant) -> Option<Instant> {
        match phase {
            Phase::Unfinished => Some(after(since, self.header_read_timeout)),
            Phase::Idle => Some(after(since, self.idle_timeout)),
            Phase::Busy => None,
        }
    }

    /// The rate rule for a request body that starts arriving at `started`.
    pub(crate) fn body_rate(&self, started: Instant) -> BodyRate {
        BodyRate {
            started,
            grace: self.header_read_timeout,
            bytes_per_second: self.min_body_bytes_per_second,
            received_bytes: 0,
        }
    }
}

/// The minimum body transfer rate, the one policy for every request body: after a grace from
/// the body's start, the bytes received must be at least `bytes_per_second × (elapsed − grace)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyRate {
    started: Instant,
    grace: Duration,
    bytes_per_second: u64,
    received_bytes: u64,
}

impl BodyRate {
    /// Counts `n_bytes` more received.
    pub(crate) fn record(&mut self, n_bytes: usize) {
        self.received_bytes = self.received_bytes.saturating_add(n_bytes as u64);
    }

    /// Sets the bytes received so far (a caller that counts them itself).
    pub(crate) fn set_received(&mut self, received_bytes: u64) {
        self.received_bytes = received_bytes;
    }

    /// The moment the bytes received so far fall behind the rule; `None` when it is off.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.bytes_per_second == 0 {
            return None;
        }
        let allowed_nanos = u128::from(self.received_bytes) * 1_000_000_000 / u128::from(self.bytes_per_second);
        let allowed = Duration::from_nanos(u64::try_from(allowed_nanos).unwrap_or(u64::MAX));
        Some(after(self.started, self.grace.saturating_add(allowed)))
    }

    /// The error a body behind the rule is cut off with.
    pub(crate) fn too_slow(&self) -> BodyTooSlow {
        BodyTooSlow {
            bytes_per_second: self.bytes_per_second,
            grace_ms: u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX),
            received_bytes: self.received_bytes,
        }
    }
}

/// A request body that fell behind [`BodyRate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "request body too slow: {received_bytes} bytes received, at least {bytes_per_second} bytes/s are required after \
     the first {grace_ms} ms (--min-body-bytes-per-second)"
)]
pub(crate) struct BodyTooSlow {
    pub bytes_per_second: u64,
    pub grace_ms: u64,
    pub received_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadlines(min_body_bytes_per_second: u64) -> Deadlines {
        Deadlines {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            min_body_bytes_per_second,
        }
    }

    #[test]
    fn each_phase_has_its_deadline() {
        let since = Instant::now();
        let deadlines = deadlines(1024);
        assert_eq!(deadlines.phase_deadline(Phase::Unfinished, since), Some(since + Duration::from_secs(10)));
        assert_eq!(deadlines.phase_deadline(Phase::Idle, since), Some(since + Duration::from_secs(60)));
        assert_eq!(deadlines.phase_deadline(Phase::Busy, since), None);
    }

    #[test]
    fn a_body_must_keep_up_with_the_rate_after_the_grace() {
        let started = Instant::now();
        let mut rate = deadlines(1000).body_rate(started);
        // Nothing received: cut off when the grace ends.
        assert_eq!(rate.deadline(), Some(started + Duration::from_secs(10)));
        // Each 1,000 bytes buy one more second.
        rate.record(2_500);
        assert_eq!(rate.deadline(), Some(started + Duration::from_millis(12_500)));
        rate.set_received(100_000);
        assert_eq!(rate.deadline(), Some(started + Duration::from_secs(110)));
        assert_eq!(rate.too_slow().received_bytes, 100_000);
        assert!(rate.too_slow().to_string().contains("--min-body-bytes-per-second"));
    }

    #[test]
    fn a_zero_rate_turns_the_rule_off_and_huge_counts_do_not_overflow() {
        let started = Instant::now();
        let mut off = deadlines(0).body_rate(started);
        off.record(usize::MAX);
        assert_eq!(off.deadline(), None);
        let mut slow = deadlines(1).body_rate(started);
        slow.set_received(u64::MAX);
        assert!(slow.deadline().is_some());
    }
}
