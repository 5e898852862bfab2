//! A tokio runtime on threads of its own, for a port whose answers should not share worker
//! threads with the rest of the server (the KEDA scaler: see `ARCHITECTURE.md`).
//!
//! One thread is a current-thread runtime: a call's task runs where its connection was polled and
//! wakes no other thread. More threads are a multi-thread runtime. Either way the runtime lives and
//! is dropped on its own driver thread, never inside another runtime's async context.

use std::io;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The runtime that serves `listener`: one of its own with `threads` threads, or none (0 threads:
/// the caller's runtime) and the listener as it was.
pub(crate) fn for_port(
    listener: TcpListener,
    name: &'static str,
    threads: usize,
) -> io::Result<(Option<DedicatedRuntime>, TcpListener)> {
    if threads == 0 {
        return Ok((None, listener));
    }
    let runtime = DedicatedRuntime::start(name, threads)?;
    let listener = runtime.adopt_listener(listener)?;
    Ok((Some(runtime), listener))
}

/// A runtime driven by a thread of its own until [`DedicatedRuntime::stop`].
pub(crate) struct DedicatedRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    stopped: oneshot::Receiver<()>,
    driver: Option<JoinHandle<()>>,
}

impl DedicatedRuntime {
    /// Starts a runtime named `name` with `threads` worker threads (1 = current-thread).
    pub(crate) fn start(name: &'static str, threads: usize) -> io::Result<Self> {
        let runtime = if threads <= 1 {
            Builder::new_current_thread().enable_all().thread_name(name).build()?
        } else {
            Builder::new_multi_thread().enable_all().worker_threads(threads).thread_name(name).build()?
        };
        let handle = runtime.handle().clone();
        let (stop, stop_requested) = oneshot::channel::<()>();
        let (stopped_tx, stopped) = oneshot::channel::<()>();
        let driver = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            // Either a stop or a dropped sender ends it; the current-thread runtime runs its tasks
            // only while this `block_on` polls.
            let _ = runtime.block_on(stop_requested);
            // Dropping cancels the tasks left (connections already closed by the drain).
            drop(runtime);
            let _ = stopped_tx.send(());
        })?;
        Ok(Self { handle, stop: Some(stop), stopped, driver: Some(driver) })
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Moves a listener bound on another runtime to this runtime's reactor.
    fn adopt_listener(&self, listener: TcpListener) -> io::Result<TcpListener> {
        let listener = listener.into_std()?;
        let _context = self.handle.enter();
        TcpListener::from_std(listener)
    }

    /// Stops the runtime and waits, without blocking the caller's runtime, until it is dropped.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.stopped).await;
        if let Some(driver) = self.driver.take() {
            // Already past its last statement: joining does not wait.
            let _ = driver.join();
        }
    }
}

impl Drop for DedicatedRuntime {
    fn drop(&mut self) {
        // Not stopped (start-up failed after it started): end it without waiting.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_spawned_through_its_handle_run_on_its_thread_and_stop_ends_it() {
        for threads in [1, 2] {
            let runtime = DedicatedRuntime::start("test-dedicated", threads).unwrap();
            let ran_on =
                runtime.handle().spawn(async { std::thread::current().name().map(str::to_owned) }).await.unwrap();
            assert_eq!(ran_on.as_deref(), Some("test-dedicated"));
            let forever = runtime.handle().spawn(std::future::pending::<()>());
            runtime.stop().await;
            // The runtime dropped the task it still had.
            assert!(forever.await.unwrap_err().is_cancelled());
        }
    }
}
