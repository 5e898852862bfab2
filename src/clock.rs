//! Wall-clock time in the unit the store uses (milliseconds since the Unix epoch), and the
//! periodic background jobs (retention, certificate reloads).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

/// Milliseconds since the Unix epoch (0 if the clock is set before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

/// Runs `job` every `interval`, the first time right away, until `cancel` fires. A run that
/// overruns delays the next one instead of bunching them.
pub async fn every(interval: Duration, cancel: CancellationToken, mut job: impl AsyncFnMut()) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = cancel.cancelled() => break,
        }
        job().await;
    }
}
