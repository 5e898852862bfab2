//! The panic policy, in one place: catch, count, keep serving.
//!
//! Every worker and handler boundary runs its unit of work (one request, one job, one
//! evaluation) through [`catch`] or [`catch_async`]. A panic is counted in
//! `otelscale_panics_total{site}`, logged once with its message, and turned into a
//! [`PanicCaught`] that the caller answers as an internal error; the thread or task lives on.
//! Aborting is not the answer: replicas fed the same batches by a retrying Collector would all
//! crash on the same poison batch at once. The store stays consistent because every change it
//! makes under a lock is complete before the next one starts (see `store::Store::append_decoded`).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt as _;

use crate::outcome::PanicSite;
use crate::telemetry::Telemetry;

/// A panic caught at a boundary: where, and its message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("internal error ({site}): {message}", site = site.as_str())]
pub struct PanicCaught {
    pub site: PanicSite,
    pub message: String,
}

/// Runs `work`, catching a panic: counted, logged, returned as [`PanicCaught`].
pub fn catch<T>(telemetry: &Telemetry, site: PanicSite, work: impl FnOnce() -> T) -> Result<T, PanicCaught> {
    std::panic::catch_unwind(AssertUnwindSafe(work)).map_err(|payload| caught(telemetry, site, payload))
}

/// [`catch`] for a future: a panic while it is polled ends it with [`PanicCaught`].
pub async fn catch_async<F: Future>(
    telemetry: &Telemetry,
    site: PanicSite,
    future: F,
) -> Result<F::Output, PanicCaught> {
    AssertUnwindSafe(future).catch_unwind().await.map_err(|payload| caught(telemetry, site, payload))
}

/// Spawns `task` on the current tokio runtime with [`catch_async`] around it: a long-lived
/// task's panic (a StreamIsActive stream's, at [`PanicSite::Stream`]) is counted and logged
/// like a handler's instead of vanishing into its join handle.
pub fn spawn_catching<F>(telemetry: Arc<Telemetry>, site: PanicSite, task: F) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let _ = catch_async(&telemetry, site, task).await;
    })
}

fn caught(telemetry: &Telemetry, site: PanicSite, payload: Box<dyn Any + Send>) -> PanicCaught {
    let message = panic_message(payload.as_ref());
    telemetry.record_panic(site);
    tracing::error!(site = site.as_str(), message = %message, "panic caught; answered as an internal error, still serving");
    PanicCaught { site, message }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_counted_and_returned_and_a_value_passes() {
        let telemetry = Telemetry::default();
        assert_eq!(catch(&telemetry, PanicSite::IngestWorker, || 7).unwrap(), 7);
        let caught = catch(&telemetry, PanicSite::IngestWorker, || -> u32 { panic!("bad batch {}", 3) }).unwrap_err();
        assert_eq!((caught.site, caught.message.as_str()), (PanicSite::IngestWorker, "bad batch 3"));
        assert_eq!(telemetry.panics(PanicSite::IngestWorker), 1);
        assert_eq!(telemetry.panics(PanicSite::Handler), 0);
    }

    #[tokio::test]
    async fn a_panicking_future_is_caught() {
        let telemetry = Telemetry::default();
        let caught = catch_async(&telemetry, PanicSite::Handler, async { panic!("in a handler") }).await;
        assert_eq!(caught.unwrap_err().message, "in a handler");
        assert_eq!(catch_async(&telemetry, PanicSite::Handler, async { 1 }).await.unwrap(), 1);
        assert_eq!(telemetry.panics(PanicSite::Handler), 1);
    }
}
