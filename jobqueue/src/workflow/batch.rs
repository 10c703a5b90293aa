//! Batches: [`BatchBuilder`] writes one, [`BatchHandle`] follows it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{BatchStatus, BatchSummary, DEFAULT_BATCH_RETENTION, MAX_BATCH_CHILDREN};
use crate::client::{Client, EnqueueOptions};
use crate::definition::Job;
use crate::error::{Error, Result};
use crate::queue::{Callback, ChildEnd, NewJob, Queue};

/// The job-hash fields a callback does not take from its `#[job]`: batch
/// callbacks are released by the batch, not by time, a lock or a rate key.
const NOT_FOR_CALLBACKS: [&str; 5] = [
    "expires_in_ms",
    "unique_digest",
    "unique_mode",
    "unique_for_ms",
    "rate_key",
];

/// The longest retention Redis is asked for: a year, as for job TTLs.
const MAX_RETENTION_S: u64 = 365 * 24 * 3600;

/// A child waiting to be written: its logical queue and the job.
#[derive(Debug)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
struct Child {
    queue: &'static str,
    name: &'static str,
    job: NewJob,
}

/// Builds a batch: children of any jobs on any queues, and the callbacks
/// that run once every child has settled. From [`Client::batch`].
///
/// ```no_run
/// # use jobqueue::{job, Client};
/// # use jobqueue::workflow::BatchSummary;
/// # #[job(queue = "email")] async fn send_invoice(customer: u64) {}
/// # #[job(queue = "billing")] async fn run_report(summary: BatchSummary<String>) {}
/// # async fn run(client: Client) -> jobqueue::Result<()> {
/// let mut batch = client.batch();
/// for customer in [1, 2, 3] {
///     batch = batch.add::<send_invoice>(customer);
/// }
/// let handle = batch
///     .on_complete::<run_report, _>("november".to_owned())
///     .enqueue()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "call .enqueue() to write the batch"]
pub struct BatchBuilder<'c> {
    client: &'c Client,
    children: Vec<Child>,
    callbacks: Vec<(&'static str, &'static str, Result<NewJob>)>,
    /// The first error of an `add`, returned by `enqueue`.
    error: Option<Error>,
    retention: Duration,
    id: Option<String>,
}

impl<'c> BatchBuilder<'c> {
    pub(crate) fn new(client: &'c Client) -> Self {
        Self {
            client,
            children: Vec::new(),
            callbacks: Vec::new(),
            error: None,
            retention: DEFAULT_BATCH_RETENTION,
            id: None,
        }
    }

    /// Adds a child: job `T` with `payload` (checked at compile time), with
    /// the options of its `#[job]`.
    // The name every batch API uses (Sidekiq, BullMQ's flows); a builder's
    // `add` takes a turbofish and a payload, nothing like `ops::Add`.
    #[allow(clippy::should_implement_trait)]
    pub fn add<T: Job>(self, payload: T::Payload) -> Self {
        self.add_with::<T>(payload, EnqueueOptions::default())
    }

    /// Adds a child with per-job [`EnqueueOptions`] (a delay, attempts, a
    /// priority...). An id given here is the child's id.
    pub fn add_with<T: Job>(mut self, payload: T::Payload, options: EnqueueOptions) -> Self {
        let options = options.or(&Client::job_defaults::<T>());
        let trace = crate::otel::current_context_fields(T::QUEUE);
        match Client::new_job::<T>(&payload, &options, &trace) {
            Ok(job) => self.children.push(Child {
                queue: T::QUEUE,
                name: T::NAME,
                job,
            }),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Runs job `C` once every child has settled, however they ended, with
    /// a [`BatchSummary`] wrapping `payload`. The batch lives on `C`'s queue.
    pub fn on_complete<C, P>(self, payload: P) -> Self
    where
        C: Job<Payload = BatchSummary<P>>,
        P: Serialize,
    {
        self.callback::<C, P>("complete", payload)
    }

    /// Runs job `C` once every child has settled, only if all of them
    /// succeeded; otherwise `C` ends as cancelled, with how many failed as
    /// its reason. With `on_complete` too, both callbacks must be on one
    /// queue (the batch's).
    pub fn on_success<C, P>(self, payload: P) -> Self
    where
        C: Job<Payload = BatchSummary<P>>,
        P: Serialize,
    {
        self.callback::<C, P>("success", payload)
    }

    fn callback<C: Job, P: Serialize>(mut self, role: &'static str, payload: P) -> Self {
        if self.callbacks.iter().any(|(r, _, _)| *r == role) {
            self.error.get_or_insert(Error::invalid_option(
                "batch",
                format!("on_{role} is given twice: a batch has one of each callback"),
            ));
            return self;
        }
        let defaults = Client::job_defaults::<C>();
        let job = NewJob::new(&payload).map(|job| job.name(C::NAME).options(defaults));
        self.callbacks.push((role, C::QUEUE, job));
        self
    }

    /// How long the batch is kept once done (its counts, each child's end),
    /// for [`BatchHandle::status`], the dashboard and the CLI; a week by
    /// default.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The batch's id (a new random one by default). Writing a batch whose
    /// id exists already is refused, so an id makes a retried `enqueue`
    /// safe to repeat only up to the first write: see
    /// [`enqueue`](Self::enqueue).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Writes the batch, then its children.
    ///
    /// The batch (and its callbacks, waiting) is written first, in one
    /// script on its queue, so no child can end before its batch exists;
    /// then the children, queue by queue, in bounded chunks. If writing the
    /// children fails part way, the children that were not written are
    /// recorded in the batch as failed ("not enqueued: ..."), so the batch
    /// still completes and its summary says what happened, and the error is
    /// returned.
    ///
    /// # Errors
    /// No children, more than [`MAX_BATCH_CHILDREN`], callbacks on two
    /// queues, a payload that does not serialize, or a batch id in use:
    /// refused before anything is written.
    ///
    /// # Cancellation safety
    /// Not cancellation safe: dropping the future after the batch is
    /// written and before every child is leaves the batch open for ever.
    pub async fn enqueue(self) -> Result<BatchHandle> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let client = self.client;
        if self.children.is_empty() {
            return Err(Error::invalid_option(
                "batch",
                "a batch needs at least one child",
            ));
        }
        if self.children.len() > MAX_BATCH_CHILDREN {
            return Err(Error::invalid_option(
                "batch",
                format!(
                    "{} children: a batch has at most {MAX_BATCH_CHILDREN}",
                    self.children.len()
                ),
            ));
        }
        let home = match &self.callbacks[..] {
            [] => self.children[0].queue,
            [(_, queue, _), rest @ ..] => {
                if let Some((_, other, _)) = rest.iter().find(|(_, q, _)| q != queue) {
                    return Err(Error::invalid_option(
                        "batch",
                        format!(
                            "its callbacks are on queues {queue} and {other}: a batch's callbacks share its queue"
                        ),
                    ));
                }
                queue
            }
        };
        let id = self.id.unwrap_or_else(crate::id::random_hex);
        if id.is_empty() || id.contains('/') || id.len() > 128 {
            return Err(Error::invalid_option(
                "batch id",
                format!("{id:?} must be 1 to 128 bytes without '/'"),
            ));
        }
        // The batch and its callbacks share one physical queue: on a
        // sharded queue, the shard the batch id picks, and callback ids
        // of that same shard.
        let shards = client.shard_queues(home)?;
        let shard = crate::shards::shard_of(&id, shards.len());
        let queue = shards[shard].clone();
        let mut callbacks = Vec::with_capacity(self.callbacks.len());
        for (role, _, job) in self.callbacks {
            let job = job?;
            let fields = job
                .extra_fields()?
                .into_iter()
                .filter(|(name, _)| !NOT_FOR_CALLBACKS.contains(name))
                .chain([("batch_role", role.to_owned())])
                .collect();
            callbacks.push(Callback {
                role,
                id: crate::shards::id_in_shard(shard, shards.len()),
                payload: job.payload,
                fields,
            });
        }
        let reference = format!("{}/{id}", queue.name());
        // Every child, placed, before anything is written. A child's id is
        // unique within its queue: a second one would never report.
        let mut writes: BTreeMap<String, (Queue, Vec<NewJob>, Vec<String>)> = BTreeMap::new();
        let mut children = Vec::with_capacity(self.children.len());
        let mut seen = std::collections::HashSet::new();
        // Children whose id the caller chose: one may name a job that
        // exists, which the enqueue leaves alone.
        let mut chosen = Vec::new();
        #[cfg(feature = "metrics")]
        let kinds: Vec<_> = self.children.iter().map(|c| (c.queue, c.name)).collect();
        for child in self.children {
            let was_chosen = child.job.enqueue_options().id.is_some();
            let job = child.job.context_fields(&[("batch", reference.clone())]);
            let shards = client.shard_queues(child.queue)?;
            let (job, shard) = Client::place(job, shards.len())?;
            let target = &shards[shard];
            let child_id = job.enqueue_options().id.clone().unwrap_or_default();
            if !seen.insert((target.name().to_owned(), child_id.clone())) {
                return Err(Error::invalid_option(
                    "batch",
                    format!(
                        "child id {child_id} is given twice on queue {}",
                        target.name()
                    ),
                ));
            }
            if was_chosen {
                chosen.push((target.clone(), child_id.clone()));
            }
            children.push((target.name().to_owned(), child_id.clone()));
            let entry = writes
                .entry(target.name().to_owned())
                .or_insert_with(|| (target.clone(), Vec::new(), Vec::new()));
            entry.1.push(job);
            entry.2.push(child_id);
        }
        let keep_s = self.retention.as_secs().clamp(1, MAX_RETENTION_S);
        if !queue
            .batch_open(&id, children.len(), keep_s, &callbacks)
            .await?
        {
            return Err(Error::invalid_option(
                "batch id",
                format!("a batch {id} exists already on queue {}", queue.name()),
            ));
        }
        let handle = BatchHandle {
            queue: queue.clone(),
            id: id.clone(),
            children,
        };
        let results = futures_util::future::join_all(writes.into_values().map(
            |(target, jobs, ids)| async move { (target.submit_all(jobs).await, target, ids) },
        ))
        .await;
        if let Some(error) = results.iter().find_map(|(r, _, _)| r.as_ref().err()) {
            let reason = format!("not enqueued: {error}");
            // Best effort: the error that stopped the writes is what the
            // caller needs; a failure to record is logged.
            if let Err(e) = handle.record_missing(&reason).await {
                tracing::error!(batch = %id, error = %e, "recording the children not enqueued failed: the batch may stay open");
            }
            return Err(results
                .into_iter()
                .find_map(|(r, _, _)| r.err())
                .expect("an error was found"));
        }
        // Children written as nothing: a unique child whose lock another
        // job holds, or a chosen id that names an existing job. They will
        // never report: the batch records them now.
        let mut refused = Vec::new();
        for (result, target, ids) in &results {
            let written = result.as_ref().expect("errors returned above");
            for (e, child) in written.iter().zip(ids) {
                if e.existing {
                    refused.push(ChildEnd {
                        id: child.clone(),
                        queue: target.name().to_owned(),
                        outcome: "failed".to_owned(),
                        reason: format!("not enqueued: its unique lock is held by job {}", e.id),
                    });
                }
            }
        }
        for (target, child) in &chosen {
            let record = target.get_job(child).await?;
            if record.as_ref().and_then(|r| r.field("batch")) != Some(reference.as_str())
                && !refused
                    .iter()
                    .any(|r| &r.id == child && r.queue == target.name())
            {
                refused.push(ChildEnd {
                    id: child.clone(),
                    queue: target.name().to_owned(),
                    outcome: "failed".to_owned(),
                    reason: format!("not enqueued: a job with id {child} exists already"),
                });
            }
        }
        for chunk in refused.chunks(500) {
            queue.batch_record(&id, chunk).await?;
        }
        #[cfg(feature = "metrics")]
        for (queue, name) in kinds {
            crate::metrics::enqueued(queue, name, 1);
        }
        Ok(handle)
    }
}

/// A batch that was written: its id, its children, its progress.
#[derive(Debug, Clone)]
pub struct BatchHandle {
    queue: Queue,
    id: String,
    /// Each child's physical queue and id.
    children: Vec<(String, String)>,
}

impl BatchHandle {
    /// A handle on batch `id` living on `queue` (a physical queue: the
    /// shard, for a sharded queue). It knows no children.
    pub(crate) fn existing(queue: Queue, id: String) -> Self {
        Self {
            queue,
            id,
            children: Vec::new(),
        }
    }

    /// The batch's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The queue the batch lives on (its callbacks').
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Each child's queue (physical) and id, in the order they were added
    /// (empty for a handle from [`Client::batch_handle`]).
    pub fn children(&self) -> &[(String, String)] {
        &self.children
    }

    /// The batch as it is now; `None` once its keys expired (its retention
    /// after done) or for an id that never was.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn status(&self) -> Result<Option<BatchStatus>> {
        BatchStatus::from_fields(&self.queue.batch_fields(&self.id).await?)
    }

    /// Waits up to `timeout` until every child settled (the callbacks are
    /// then released), and returns the batch's final counts.
    ///
    /// Polls the batch hash, every 50 ms at first and every 500 ms after a
    /// while: a batch takes as long as its slowest child.
    ///
    /// # Errors
    /// [`Error::WaitTimeout`] (with the batch id) when it is still open at
    /// the end; [`Error::JobNotFound`] when there is no such batch.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn wait(&self, timeout: Duration) -> Result<BatchStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.status().await? {
                Some(status) if status.is_done() => return Ok(status),
                Some(_) => {}
                None => {
                    return Err(Error::JobNotFound {
                        id: format!("batch {}", self.id),
                    });
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::WaitTimeout {
                    id: format!("batch {}", self.id),
                    waited: timeout,
                });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 3 / 2).min(Duration::from_millis(500));
        }
    }

    /// Records as failed, with `reason`, the children whose hash does not
    /// exist: after a write of children failed part way.
    async fn record_missing(&self, reason: &str) -> Result<()> {
        let mut missing = Vec::new();
        let mut by_queue: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (queue, id) in &self.children {
            by_queue.entry(queue).or_default().push(id);
        }
        for (name, ids) in by_queue {
            let queue =
                Queue::new_with(self.queue.connection(), name, self.queue.options().clone())?;
            let records = queue.get_jobs(&ids).await?;
            for (id, record) in ids.into_iter().zip(records) {
                if record.is_none() {
                    missing.push(ChildEnd {
                        id: id.to_owned(),
                        queue: name.to_owned(),
                        outcome: "failed".to_owned(),
                        reason: reason.to_owned(),
                    });
                }
            }
        }
        for chunk in missing.chunks(500) {
            self.queue.batch_record(&self.id, chunk).await?;
        }
        Ok(())
    }
}
