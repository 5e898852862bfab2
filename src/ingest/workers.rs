//! Ingest worker threads: large request bodies are decoded and appended here, one thread per core,
//! fed through a bounded crossbeam queue. The threads run at the lowest scheduling priority, so
//! when both cores are busy with bulk ingest the threads that answer KEDA (GetMetrics,
//! StreamIsActive) and small probes still get a core at once: bulk work yields to them.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{oneshot, Semaphore};

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug, thiserror::Error)]
#[error("the ingest workers have stopped")]
pub struct WorkersStopped;

#[derive(Debug)]
pub struct IngestWorkers {
    jobs: crossbeam_channel::Sender<Job>,
    /// One permit per queue slot: an async caller waits for room instead of blocking its thread.
    queue_permits: Arc<Semaphore>,
    _threads: Vec<JoinHandle<()>>,
}

impl IngestWorkers {
    /// Starts `worker_count` threads sharing a queue of `queue_depth` jobs. The threads end when
    /// the `IngestWorkers` is dropped and the queue drains.
    pub fn start(worker_count: usize, queue_depth: usize) -> IngestWorkers {
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
                        for job in queue.iter() {
                            job();
                        }
                    })
                    .expect("spawning an ingest worker thread")
            })
            .collect();
        IngestWorkers { jobs, queue_permits: Arc::new(Semaphore::new(queue_depth)), _threads: threads }
    }

    /// Runs `work` on a worker thread and returns its result.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, WorkersStopped> {
        let permit = Arc::clone(&self.queue_permits).acquire_owned().await.map_err(|_| WorkersStopped)?;
        let (result_sender, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _permit = permit;
            let _ = result_sender.send(work());
        });
        // A permit guarantees a free slot, so this only fails when the workers are gone.
        self.jobs.try_send(job).map_err(|_| WorkersStopped)?;
        result.await.map_err(|_| WorkersStopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_worker_threads_and_queue_depth_bounds_waiting() {
        let workers = IngestWorkers::start(2, 1);
        let mut handles = Vec::new();
        let workers = Arc::new(workers);
        for job_idx in 0..20u64 {
            let workers = Arc::clone(&workers);
            handles.push(tokio::spawn(async move {
                workers.run(move || (job_idx * 2, std::thread::current().name().map(str::to_owned))).await.unwrap()
            }));
        }
        for (job_idx, handle) in handles.into_iter().enumerate() {
            let (doubled, thread_name) = handle.await.unwrap();
            assert_eq!(doubled, job_idx as u64 * 2);
            assert!(thread_name.unwrap().starts_with("otelscale-ingest-"));
        }
    }
}
