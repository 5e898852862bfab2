//! Ingest worker threads: large and compressed request bodies are inflated, decoded and appended
//! here, one thread per core, fed through a bounded crossbeam queue. The threads run at the
//! lowest scheduling priority, so when both cores are busy with bulk ingest the threads that
//! answer KEDA (GetMetrics, StreamIsActive) and small probes still get a core at once: bulk work
//! yields to them.
//!
//! What a job may cost the server is bounded three ways: a caller waits at most
//! `--ingest-queue-wait` for a queue slot, then gets [`RunError::QueueFull`] (answered as
//! retryable: gRPC `UNAVAILABLE`, HTTP 503); a job whose caller has gone (its waiting future
//! dropped: a gRPC deadline passed or the call was cancelled) or whose deadline has passed is
//! dropped before it starts; and a job that panics is caught by the panic policy
//! ([`crate::panics`], site `ingest_worker`), its caller answered with an internal error, and the
//! thread goes on serving.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::outcome::PanicSite;
use crate::panics::{self, PanicCaught};
use crate::telemetry::Telemetry;

type Job = Box<dyn FnOnce() + Send>;

/// Why a job did not produce its result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunError {
    #[error("the ingest queue stayed full for {waited:?} (--ingest-queue-wait): retry later")]
    QueueFull { waited: Duration },
    #[error("the request's deadline passed while it waited for an ingest worker; it was not processed")]
    DeadlinePassed,
    #[error(transparent)]
    Panicked(#[from] PanicCaught),
    #[error("the ingest workers have stopped")]
    Stopped,
}

#[derive(Debug)]
pub struct IngestWorkers {
    jobs: crossbeam_channel::Sender<Job>,
    /// One permit per queue slot (held until the job ends): an async caller waits for room
    /// instead of blocking its thread.
    queue_permits: Arc<Semaphore>,
    queue_wait: Duration,
    telemetry: Arc<Telemetry>,
    _threads: Vec<JoinHandle<()>>,
}

impl IngestWorkers {
    /// Starts `worker_count` threads sharing a queue of `queue_depth` jobs; a caller waits at
    /// most `queue_wait` for a slot. The threads end when the `IngestWorkers` is dropped and
    /// the queue drains.
    pub fn start(
        worker_count: usize,
        queue_depth: usize,
        queue_wait: Duration,
        telemetry: Arc<Telemetry>,
    ) -> IngestWorkers {
        assert!(worker_count > 0 && queue_depth > 0, "validated in Config");
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(queue_depth);
        let threads = (0..worker_count)
            .map(|worker_idx| {
                let queue = queue.clone();
                std::thread::Builder::new()
                    .name(format!("otelscale-ingest-{worker_idx}"))
                    .spawn(move || {
                        if let Err(err) =
                            thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
                        {
                            tracing::warn!(error = ?err, "cannot lower the ingest worker's priority; queries may wait behind bulk ingest");
                        }
                        // Each job catches its own panics (see `run`): the loop outlives them.
                        for job in queue.iter() {
                            job();
                        }
                    })
                    .expect("spawning an ingest worker thread")
            })
            .collect();
        IngestWorkers {
            jobs,
            queue_permits: Arc::new(Semaphore::new(queue_depth)),
            queue_wait,
            telemetry,
            _threads: threads,
        }
    }

    /// Runs `work` on a worker thread and returns its result. Waits at most the queue wait for
    /// a slot; `work` is dropped undone if this future is dropped (the caller has gone) or
    /// `deadline` passes before a worker takes it.
    pub async fn run<T: Send + 'static>(
        &self,
        deadline: Option<Instant>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, RunError> {
        let acquire = Arc::clone(&self.queue_permits).acquire_owned();
        let permit = match tokio::time::timeout(self.queue_wait, acquire).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(RunError::Stopped),
            Err(_elapsed) => return Err(RunError::QueueFull { waited: self.queue_wait }),
        };
        let slot = QueueSlot::taken(permit, Arc::clone(&self.telemetry));
        let (result_sender, result) = oneshot::channel::<Result<T, RunError>>();
        let telemetry = Arc::clone(&self.telemetry);
        let job: Job = Box::new(move || {
            // The waiting future was dropped (tonic drops it when the gRPC deadline passes or the
            // call is cancelled), or the deadline passed in the queue: nobody wants the answer.
            let outcome = if result_sender.is_closed() || deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                telemetry.record_ingest_abandoned();
                Err(RunError::DeadlinePassed)
            } else {
                panics::catch(&telemetry, PanicSite::IngestWorker, work).map_err(RunError::from)
            };
            // The slot is free (and uncounted) before the caller hears back.
            drop(slot);
            let _ = result_sender.send(outcome);
        });
        // A permit guarantees a free slot, so this only fails when the workers are gone.
        self.jobs.try_send(job).map_err(|_| RunError::Stopped)?;
        result.await.map_err(|_| RunError::Stopped)?
    }
}

/// A job's slot in the queue, held until the job ends (or is dropped undone), and counted in
/// `otelscale_ingest_jobs`.
struct QueueSlot {
    _permit: OwnedSemaphorePermit,
    telemetry: Arc<Telemetry>,
}

impl QueueSlot {
    fn taken(permit: OwnedSemaphorePermit, telemetry: Arc<Telemetry>) -> QueueSlot {
        telemetry.ingest_jobs_add(1);
        QueueSlot { _permit: permit, telemetry }
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.telemetry.ingest_jobs_add(-1);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::outcome::PanicSite;

    fn workers(worker_count: usize, queue_depth: usize, queue_wait: Duration) -> (Arc<IngestWorkers>, Arc<Telemetry>) {
        let telemetry = Arc::new(Telemetry::default());
        let workers = IngestWorkers::start(worker_count, queue_depth, queue_wait, Arc::clone(&telemetry));
        (Arc::new(workers), telemetry)
    }

    /// A job that holds its worker until `release` is sent, and says when it has started.
    fn blocker(workers: &Arc<IngestWorkers>) -> (tokio::task::JoinHandle<()>, std::sync::mpsc::Sender<()>) {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started_sender, started) = std::sync::mpsc::channel::<()>();
        let workers = Arc::clone(workers);
        let handle = tokio::spawn(async move {
            workers
                .run(None, move || {
                    started_sender.send(()).unwrap();
                    released.recv().unwrap();
                })
                .await
                .unwrap();
        });
        started.recv_timeout(Duration::from_secs(30)).expect("the blocker started");
        (handle, release)
    }

    #[tokio::test]
    async fn jobs_run_on_worker_threads_and_queue_depth_bounds_waiting() {
        let (workers, _) = workers(2, 1, Duration::from_secs(60));
        let mut handles = Vec::new();
        for job_idx in 0..20u64 {
            let workers = Arc::clone(&workers);
            handles.push(tokio::spawn(async move {
                workers
                    .run(None, move || (job_idx * 2, std::thread::current().name().map(str::to_owned)))
                    .await
                    .unwrap()
            }));
        }
        for (job_idx, handle) in handles.into_iter().enumerate() {
            let (doubled, thread_name) = handle.await.unwrap();
            assert_eq!(doubled, job_idx as u64 * 2);
            assert!(thread_name.unwrap().starts_with("otelscale-ingest-"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_answers_queue_full_after_the_wait() {
        let (workers, _) = workers(1, 1, Duration::from_millis(20));
        let (blocked, release) = blocker(&workers);
        // The only slot is held by the running blocker.
        let refused = workers.run(None, || ()).await.unwrap_err();
        assert!(matches!(refused, RunError::QueueFull { waited } if waited == Duration::from_millis(20)));
        assert!(refused.to_string().contains("--ingest-queue-wait"), "{refused}");
        release.send(()).unwrap();
        blocked.await.unwrap();
        workers.run(None, || ()).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_whose_caller_has_gone_or_whose_deadline_passed_is_dropped_undone() {
        let (workers, telemetry) = workers(1, 4, Duration::from_secs(60));
        let (blocked, release) = blocker(&workers);
        let ran = Arc::new(AtomicBool::new(false));
        // A caller that gives up while its job waits behind the blocker.
        let gone = {
            let (workers, ran) = (Arc::clone(&workers), Arc::clone(&ran));
            tokio::spawn(async move { workers.run(None, move || ran.store(true, Ordering::SeqCst)).await })
        };
        // A caller whose deadline passes in the queue.
        let late = {
            let (workers, ran) = (Arc::clone(&workers), Arc::clone(&ran));
            let deadline = Instant::now() + Duration::from_millis(1);
            tokio::spawn(async move { workers.run(Some(deadline), move || ran.store(true, Ordering::SeqCst)).await })
        };
        // Both are queued once their permits are taken (the blocker holds one of four).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while workers.queue_permits.available_permits() > 1 {
            assert!(std::time::Instant::now() < deadline, "the jobs were not queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        gone.abort();
        let _ = gone.await;
        tokio::time::sleep_until(Instant::now() + Duration::from_millis(2)).await;
        release.send(()).unwrap();
        blocked.await.unwrap();
        assert!(matches!(late.await.unwrap(), Err(RunError::DeadlinePassed)));
        assert!(!ran.load(Ordering::SeqCst), "dropped work ran");
        assert_eq!(telemetry.ingest_abandoned(), 2);
        assert_eq!(telemetry.ingest_jobs(), 0, "every slot was given back");
    }

    #[tokio::test]
    async fn a_panicking_job_is_answered_as_panicked_and_its_thread_serves_on() {
        let (workers, telemetry) = workers(1, 1, Duration::from_secs(60));
        let caught = workers.run(None, || -> u32 { panic!("poison batch") }).await.unwrap_err();
        assert!(matches!(&caught, RunError::Panicked(panic) if panic.message == "poison batch"), "{caught:?}");
        assert_eq!(telemetry.panics(PanicSite::IngestWorker), 1);
        // The one worker thread is still there.
        for job_idx in 0..3u32 {
            assert_eq!(workers.run(None, move || job_idx).await.unwrap(), job_idx);
        }
    }
}
