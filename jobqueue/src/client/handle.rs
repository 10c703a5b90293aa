//! [`JobHandle`]: one enqueued job of type `T`, its status and its result.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::definition::Job;
use crate::error::{Error, Result};
use crate::queue::{CancelOutcome, JobRecord, JobStatus, Progress, Queue};

/// A job `T` that was enqueued: its id, its status, and its result.
pub struct JobHandle<T: Job> {
    queue: Queue,
    id: String,
    /// True when this handle came from an enqueue, so a missing hash means
    /// the job expired or was deleted, not that the id is wrong.
    enqueued: bool,
    /// True when the enqueue wrote nothing: a unique job found another job
    /// holding its lock, and this handle names that job.
    existing: bool,
    _job: PhantomData<fn() -> T>,
}

impl<T: Job> Clone for JobHandle<T> {
    fn clone(&self) -> Self {
        Self::new(self.queue.clone(), self.id.clone(), self.enqueued).existing(self.existing)
    }
}

impl<T: Job> fmt::Debug for JobHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("job", &T::NAME)
            .field("queue", &self.queue.name())
            .field("id", &self.id)
            .finish()
    }
}

impl<T: Job> JobHandle<T> {
    pub(crate) fn new(queue: Queue, id: String, enqueued: bool) -> Self {
        Self {
            queue,
            id,
            enqueued,
            existing: false,
            _job: PhantomData,
        }
    }

    /// The same handle, marked as naming an existing job.
    pub(super) fn existing(mut self, existing: bool) -> Self {
        self.existing = existing;
        self
    }

    /// True when the enqueue that made this handle wrote nothing: the job
    /// is unique (`#[job(unique_for = ...)]`,
    /// [`EnqueueOptions::unique`](crate::client::EnqueueOptions::unique))
    /// and another job held its lock; the handle names that job, so
    /// [`wait`](Self::wait) waits for it.
    pub fn is_existing(&self) -> bool {
        self.existing
    }

    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The (physical) queue the job is in.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The job's state, or `None` once its hash is gone (completed jobs
    /// expire after their `completed_ttl`).
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn status(&self) -> Result<Option<JobStatus>> {
        Ok(self.queue.get_job(&self.id).await?.and_then(|r| r.status()))
    }

    /// The progress the job last reported
    /// ([`JobContext::progress`](crate::JobContext::progress)), with the time
    /// Redis stored it; `None` before it reported any, or once its hash is
    /// gone. While the job runs, the value is up to a third of its lease
    /// (at most 10 s) old: a lease renewal carries it. Once the job ended,
    /// it is the last value its run reported. Reads the two progress fields
    /// alone, so polling it is cheap;
    /// [`Client::progress_events`](crate::Client::progress_events) pushes
    /// each change instead.
    ///
    /// ```no_run
    /// # async fn demo(handle: jobqueue::client::JobHandle<impl jobqueue::definition::Job>) -> jobqueue::Result<()> {
    /// if let Some(progress) = handle.progress().await? {
    ///     match progress.fraction() {
    ///         Some(done) => println!("{:.0}% done", done * 100.0),
    ///         None => println!("progress: {}", progress.value),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Malformed`] when the stored value is not JSON.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn progress(&self) -> Result<Option<Progress>> {
        self.queue.progress(&self.id).await
    }

    /// The job's whole hash, if it still exists.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn record(&self) -> Result<Option<JobRecord>> {
        self.queue.get_job(&self.id).await
    }

    /// Cancels the job (see [`Queue::cancel`]): a waiting job ends at once
    /// and never runs; a running one is stopped at its next lease renewal
    /// and ends as cancelled, however its handler returns.
    ///
    /// # Cancellation safety
    /// Safe: cancelling twice answers what the first cancel left.
    pub async fn cancel(&self) -> Result<CancelOutcome> {
        self.queue.cancel(&self.id, "cancelled by a caller").await
    }

    /// Waits up to `timeout` for the job to finish and returns its output;
    /// [`Error::JobFailed`] with its last error once it failed for good;
    /// [`Error::JobCancelled`] with the reason once it was cancelled or
    /// expired before it started;
    /// [`Error::JobExpired`] when its hash is gone (a completed job's result
    /// is kept for its `completed_ttl`; set it per job with
    /// [`EnqueueOptions::completed_ttl`](crate::client::EnqueueOptions::completed_ttl)).
    ///
    /// Listens to the queue's events rather than polling: it reads the job
    /// once after subscribing (a job that finished before the wait began is
    /// seen there) and again only when an event names it.
    ///
    /// # Cancellation safety
    /// Safe: read only; dropping the future unsubscribes.
    pub async fn wait(&self, timeout: Duration) -> Result<T::Output>
    where
        T::Output: DeserializeOwned,
    {
        let waiting = async {
            let mut events = self.queue.subscribe().await?;
            loop {
                if let Some(outcome) = self.finished().await? {
                    return outcome;
                }
                loop {
                    match events.next().await {
                        None => {
                            return Err(Error::malformed(
                                self.queue.keys().events(),
                                "the events subscription closed",
                            ));
                        }
                        Some(Ok(event)) if event.id == self.id && event.is_final() => break,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => tracing::debug!(error = %e, "skipped a message"),
                    }
                }
            }
        };
        // The timeout covers everything, opening the subscription included.
        tokio::time::timeout(timeout, waiting)
            .await
            .unwrap_or_else(|_| {
                Err(Error::WaitTimeout {
                    id: self.id.clone(),
                    waited: timeout,
                })
            })
    }

    /// The job's outcome if it finished: `Some(Ok(output))` when completed,
    /// `Some(Err(JobFailed))` when failed, `None` while pending or running.
    async fn finished(&self) -> Result<Option<Result<T::Output>>>
    where
        T::Output: DeserializeOwned,
    {
        let id = self.id.clone();
        let record = match self.queue.get_job(&self.id).await? {
            Some(record) => record,
            None if self.enqueued => return Err(Error::JobExpired { id }),
            None => return Err(Error::JobNotFound { id }),
        };
        Ok(match record.status() {
            Some(JobStatus::Completed) => Some(record.result::<T::Output>().and_then(|r| {
                r.ok_or_else(|| Error::malformed(format!("job {id}"), "completed without a result"))
            })),
            Some(JobStatus::Cancelled) => Some(Err(Error::JobCancelled {
                id,
                reason: record.cancel_reason().unwrap_or("cancelled").to_owned(),
            })),
            Some(JobStatus::Failed) => Some(Err(Error::JobFailed {
                id,
                error: record
                    .last_error()
                    .unwrap_or("no error recorded")
                    .to_owned(),
            })),
            _ => None,
        })
    }
}
