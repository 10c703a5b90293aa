//! Chains: [`ChainBuilder`] writes the first step, the relay writes each
//! next one, [`ChainHandle`] waits for the last output.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::{Client, EnqueueOptions, JobHandle};
use crate::definition::Job;
use crate::error::{Error, Result};
use crate::queue::{JobStatus, NewJob};

/// What a step needs to be written by the relay: its queue (the physical
/// one, a shard's name for a sharded queue, chosen when the chain is built,
/// so the relay and the handle agree whatever their own shard settings),
/// its job and the options of its `#[job]`. A rate key or uniqueness is not
/// carried: the relay has the step's payload as JSON only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StepSpec {
    pub(crate) queue: String,
    pub(crate) job: String,
    pub(crate) max_attempts: u32,
    pub(crate) visibility_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expires_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) priority: i8,
}

fn is_zero(p: &i8) -> bool {
    *p == 0
}

impl StepSpec {
    fn of<T: Job>() -> Self {
        Self {
            queue: T::QUEUE.to_owned(),
            job: T::NAME.to_owned(),
            max_attempts: T::MAX_ATTEMPTS,
            visibility_ms: u64::try_from(T::VISIBILITY.as_millis()).unwrap_or(u64::MAX),
            expires_ms: T::EXPIRES.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            priority: T::PRIORITY,
        }
    }

    /// The options the step is written with (its id is the chain's).
    pub(crate) fn options(&self, id: String) -> EnqueueOptions {
        let mut options = EnqueueOptions::new()
            .id(id)
            .max_attempts(self.max_attempts)
            .visibility(Duration::from_millis(self.visibility_ms));
        if let Some(ms) = self.expires_ms {
            options = options.expires_in(Duration::from_millis(ms));
        }
        if self.priority != 0 {
            options = options.priority(self.priority);
        }
        options
    }
}

/// The `chain` field of a step that has a step after it: the chain's id,
/// this step's number (from 1), how many steps, and the steps after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChainSpec {
    pub(crate) id: String,
    pub(crate) step: usize,
    pub(crate) of: usize,
    pub(crate) next: Vec<StepSpec>,
}

/// The id of step `step` (from 1) of chain `chain`: derived, so that the
/// relay writes each step once and a handle finds every step.
pub(crate) fn step_id(chain: &str, step: usize) -> String {
    format!("{chain}-{step}")
}

/// The fields every step's hash gets: the chain it belongs to and its place
/// (`chain_step` is "2/3"), and the rest of the chain when a step follows.
pub(crate) fn step_fields(
    chain: &str,
    step: usize,
    of: usize,
    next: &[StepSpec],
) -> Result<Vec<(&'static str, String)>> {
    let mut fields = vec![
        ("chain_id", chain.to_owned()),
        ("chain_step", format!("{step}/{of}")),
    ];
    if !next.is_empty() {
        let spec = ChainSpec {
            id: chain.to_owned(),
            step,
            of,
            next: next.to_vec(),
        };
        fields.push(("chain", serde_json::to_string(&spec)?));
    }
    Ok(fields)
}

/// Builds a chain of typed steps; from [`Client::chain`]. `Last` is the
/// last step so far: [`then`](Self::then) takes a job whose payload is its
/// output, which the compiler checks.
///
/// ```compile_fail
/// # use jobqueue::{job, Client};
/// #[job] async fn count_words(text: String) -> Result<usize, String> { Ok(text.len()) }
/// #[job] async fn shout(text: String) -> Result<String, String> { Ok(text.to_uppercase()) }
/// # async fn run(client: Client) -> jobqueue::Result<()> {
/// // count_words outputs a usize; shout takes a String: does not compile.
/// client.chain::<count_words>("a b".into()).then::<shout>().enqueue().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "call .enqueue() to write the chain"]
pub struct ChainBuilder<'c, Last: Job> {
    client: &'c Client,
    first: Result<(&'static str, NewJob)>,
    steps: Vec<StepSpec>,
    last: PhantomData<fn() -> Last>,
}

impl<'c, First: Job> ChainBuilder<'c, First> {
    pub(crate) fn new(client: &'c Client, payload: First::Payload) -> Self {
        let options = EnqueueOptions::new().or(&Client::job_defaults::<First>());
        let trace = crate::otel::current_context_fields(First::QUEUE);
        Self {
            client,
            first: Client::new_job::<First>(&payload, &options, &trace).map(|j| (First::QUEUE, j)),
            steps: vec![StepSpec::of::<First>()],
            last: PhantomData,
        }
    }
}

impl<'c, Last: Job> ChainBuilder<'c, Last> {
    /// Adds a step: job `Next` runs with the output of the step before it
    /// as its payload, once that step completed.
    pub fn then<Next>(self) -> ChainBuilder<'c, Next>
    where
        Next: Job<Payload = Last::Output>,
    {
        let mut steps = self.steps;
        steps.push(StepSpec::of::<Next>());
        ChainBuilder {
            client: self.client,
            first: self.first,
            steps,
            last: PhantomData,
        }
    }

    /// Writes the first step; each next one is written when the step
    /// before it completes.
    ///
    /// # Cancellation safety
    /// Dropping the future may or may not have written the first step.
    pub async fn enqueue(self) -> Result<ChainHandle<Last>> {
        let (queue, job) = self.first?;
        let mut steps = self.steps;
        let id = crate::id::random_hex();
        let of = steps.len();
        // Every step's physical queue, now: the first by the usual routing
        // (its rate key's shard, else its id's), the others by their ids.
        let first_id = step_id(&id, 1);
        let mut options = job.enqueue_options().clone();
        options.id = Some(first_id.clone());
        // A step is written once by its derived id; a unique lock would
        // only make the chain stop silently when another job holds it.
        options.unique = None;
        options.unique_key = None;
        let shards = self.client.shard_queues(queue)?;
        let (job, shard) = Client::place(job.options(options), shards.len())?;
        let target = &shards[shard];
        steps[0].queue = target.name().to_owned();
        for (n, step) in steps.iter_mut().enumerate().skip(1) {
            step.queue = self
                .client
                .queue_of(&step.queue, &step_id(&id, n + 1))?
                .name()
                .to_owned();
        }
        let fields = step_fields(&id, 1, of, &steps[1..])?;
        let written = target.submit_all(vec![job.context_fields(&fields)]).await?;
        if written.iter().any(|e| e.existing) {
            return Err(Error::invalid_option(
                "chain",
                format!("its first step {first_id} exists already"),
            ));
        }
        #[cfg(feature = "metrics")]
        crate::metrics::enqueued(queue, steps[0].job_static(), 1);
        Ok(ChainHandle {
            client: self.client.clone(),
            id,
            steps,
            last: PhantomData,
        })
    }
}

#[cfg(feature = "metrics")]
impl StepSpec {
    /// The step's job name as the metrics label wants it: a registered
    /// job's static name, or "unknown".
    fn job_static(&self) -> &'static str {
        inventory::iter::<crate::definition::JobDefinition>
            .into_iter()
            .find(|d| d.name() == self.job)
            .map_or("unknown", |d| d.name())
    }
}

/// A chain that was written; [`wait`](Self::wait) gives the last step's
/// output.
///
/// Steps after the first get no rate key and no unique lock: the relay
/// writes them from the previous step's output as JSON.
#[derive(Debug)]
pub struct ChainHandle<Last: Job> {
    client: Client,
    id: String,
    steps: Vec<StepSpec>,
    last: PhantomData<fn() -> Last>,
}

impl<Last: Job> Clone for ChainHandle<Last> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            id: self.id.clone(),
            steps: self.steps.clone(),
            last: PhantomData,
        }
    }
}

impl<Last: Job> ChainHandle<Last> {
    /// Why the relay could not write the step after step `step` (from 1),
    /// if it noted that on the step's hash.
    async fn stopped_after(&self, step: usize) -> Result<Option<String>> {
        let queue = self.client.queue(&self.steps[step - 1].queue)?;
        Ok(queue
            .get_job(&self.step_id(step))
            .await?
            .and_then(|r| r.field("chain_stopped").map(str::to_owned)))
    }

    /// The chain's id; step `n` (from 1) has job id `{id}-{n}`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How many steps the chain has.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Always false: a chain has at least its first step.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The job id of step `step` (from 1).
    pub fn step_id(&self, step: usize) -> String {
        step_id(&self.id, step)
    }

    /// A handle on the last step's job.
    pub fn last(&self) -> Result<JobHandle<Last>> {
        let last = self.steps.last().expect("a chain has a step");
        Ok(JobHandle::new(
            self.client.queue(&last.queue)?,
            self.step_id(self.steps.len()),
            false,
        ))
    }

    /// Waits up to `timeout` for the last step to complete and returns its
    /// output.
    ///
    /// Follows the steps in order: each must appear (the relay writes it
    /// within a moment of the step before it completing) and complete.
    ///
    /// # Errors
    /// [`Error::ChainStopped`] naming the step that failed or was
    /// cancelled; [`Error::WaitTimeout`] when the time runs out (also when
    /// a step was deleted, or its completed hash expired before the wait
    /// read it: give steps a `completed_ttl` longer than the wait).
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn wait(&self, timeout: Duration) -> Result<Last::Output>
    where
        Last::Output: DeserializeOwned,
    {
        let waiting = async {
            let of = self.steps.len();
            for (n, step) in self.steps.iter().enumerate() {
                let step_no = n + 1;
                let id = self.step_id(step_no);
                let queue = self.client.queue(&step.queue)?;
                let mut pause = Duration::from_millis(20);
                let record = loop {
                    // The step before may have been refused by the relay.
                    if n > 0
                        && let Some(why) = self.stopped_after(n).await?
                    {
                        return Err(Error::ChainStopped {
                            chain: self.id.clone(),
                            step: step_no,
                            of,
                            job: step.job.clone(),
                            id: id.clone(),
                            error: why,
                        });
                    }
                    let record = queue.get_job(&id).await?;
                    let status = record.as_ref().and_then(|r| r.status());
                    match status {
                        Some(JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled) => {
                            break record.expect("a status means a record");
                        }
                        _ => {
                            tokio::time::sleep(pause).await;
                            pause = (pause * 3 / 2).min(Duration::from_millis(250));
                        }
                    }
                };
                let stopped = |error: &str| Error::ChainStopped {
                    chain: self.id.clone(),
                    step: step_no,
                    of,
                    job: step.job.clone(),
                    id: id.clone(),
                    error: error.to_owned(),
                };
                match record.status() {
                    Some(JobStatus::Completed) if step_no == of => {
                        return record.result::<Last::Output>()?.ok_or_else(|| {
                            Error::malformed(format!("job {id}"), "completed without a result")
                        });
                    }
                    Some(JobStatus::Completed) => {}
                    Some(JobStatus::Failed) => {
                        return Err(stopped(record.last_error().unwrap_or("failed")));
                    }
                    _ => {
                        return Err(stopped(record.cancel_reason().unwrap_or("cancelled")));
                    }
                }
            }
            unreachable!("the last step returns")
        };
        tokio::time::timeout(timeout, waiting)
            .await
            .unwrap_or_else(|_| {
                Err(Error::WaitTimeout {
                    id: format!("chain {}", self.id),
                    waited: timeout,
                })
            })
    }
}
