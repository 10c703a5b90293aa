//! The recording client's record and the assertions over it.

use std::fmt;
use std::sync::Mutex;

use crate::client::{Client, EnqueueOptions, JobHandle};
use crate::definition::Job;
use crate::error::Result;
use crate::queue::{NewJob, Queue};

/// What a recording client was asked to enqueue, in order.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    jobs: Mutex<Record>,
}

#[derive(Debug, Default)]
struct Record {
    jobs: Vec<EnqueuedJob>,
    /// How many of `jobs` [`drain`](super::drain) has run.
    drained: usize,
}

/// One job a recording client was asked to enqueue, untyped: its name,
/// queue, id, payload JSON and options.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EnqueuedJob {
    /// The job's registered name.
    pub name: String,
    /// Its (logical) queue.
    pub queue: String,
    /// The id it was given.
    pub id: String,
    /// Its payload, as the JSON a real enqueue would store.
    pub payload: String,
    /// The options it was enqueued with, the job's `#[job]` defaults
    /// filled in (attempts, lease, priority...).
    pub options: EnqueueOptions,
}

/// One job `T` a recording client was asked to enqueue, its payload
/// decoded back from the JSON a real enqueue would store.
#[non_exhaustive]
pub struct Enqueued<T: Job> {
    /// The id it was given.
    pub id: String,
    /// Its (logical) queue.
    pub queue: String,
    /// Its payload, after the JSON round trip.
    pub payload: T::Payload,
    /// The options it was enqueued with, `#[job]` defaults filled in.
    pub options: EnqueueOptions,
}

impl<T: Job> fmt::Debug for Enqueued<T>
where
    T::Payload: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enqueued")
            .field("job", &T::NAME)
            .field("id", &self.id)
            .field("queue", &self.queue)
            .field("payload", &self.payload)
            .field("options", &self.options)
            .finish()
    }
}

impl Recorder {
    /// Records the jobs of one enqueue call, checked as a real enqueue
    /// checks them; handles in input order.
    pub(crate) fn record<T: Job>(
        &self,
        queues: &[Queue],
        batches: Vec<Vec<NewJob>>,
        places: Vec<(usize, usize)>,
    ) -> Result<Vec<JobHandle<T>>> {
        let mut recorded = Vec::with_capacity(places.len());
        for &(shard, n) in &places {
            let job = &batches[shard][n];
            job.extra_fields()?;
            recorded.push(EnqueuedJob {
                name: T::NAME.to_owned(),
                queue: T::QUEUE.to_owned(),
                id: job.options.id.clone().unwrap_or_default(),
                payload: job.payload.clone(),
                options: job.options.clone(),
            });
        }
        let handles = places
            .iter()
            .zip(&recorded)
            .map(|(&(shard, _), job)| JobHandle::new(queues[shard].clone(), job.id.clone(), true))
            .collect();
        self.jobs.lock().expect("record lock").jobs.extend(recorded);
        Ok(handles)
    }

    /// Every job recorded so far.
    pub(crate) fn all(&self) -> Vec<EnqueuedJob> {
        self.jobs.lock().expect("record lock").jobs.clone()
    }

    /// The jobs recorded since the last call, marked as drained.
    pub(crate) fn take_new(&self) -> Vec<EnqueuedJob> {
        let mut record = self.jobs.lock().expect("record lock");
        let new = record.jobs[record.drained..].to_vec();
        record.drained = record.jobs.len();
        new
    }

    fn clear(&self) {
        *self.jobs.lock().expect("record lock") = Record::default();
    }
}

#[track_caller]
pub(crate) fn recorder_of(client: &Client) -> &Recorder {
    client
        .recorder()
        .expect("this is not a recording client: build it with Client::recording()")
}

/// Every job `client` (a [`Client::recording`]) was asked to enqueue, of
/// any type, in order.
#[track_caller]
pub fn all_enqueued(client: &Client) -> Vec<EnqueuedJob> {
    recorder_of(client).all()
}

/// The jobs `T` `client` (a [`Client::recording`]) was asked to enqueue,
/// in order, each payload decoded from its JSON.
///
/// # Panics
/// When `client` is not a recording client, or a payload does not decode
/// as `T::Payload` (a serde mismatch a real runner would hit too).
#[track_caller]
pub fn enqueued<T: Job>(client: &Client) -> Vec<Enqueued<T>> {
    all_enqueued(client)
        .into_iter()
        .filter(|job| job.name == T::NAME)
        .map(|job| Enqueued {
            payload: serde_json::from_str(&job.payload).unwrap_or_else(|e| {
                panic!(
                    "job {} ({}) was enqueued with payload {} that does not decode as its payload type: {e}",
                    T::NAME,
                    job.id,
                    job.payload
                )
            }),
            id: job.id,
            queue: job.queue,
            options: job.options,
        })
        .collect()
}

/// Asserts that `client` was asked to enqueue a job `T` whose payload
/// `matches`; returns the first such job (its id, options...).
///
/// ```
/// use jobqueue::{job, testing, Client};
///
/// #[job]
/// async fn resize(width: u32) -> Result<(), String> { Ok(()) }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> jobqueue::Result<()> {
/// let client = Client::recording();
/// client.enqueue::<resize>(640).await?;
/// let job = testing::assert_enqueued::<resize>(&client, |w| *w == 640);
/// assert_eq!(job.queue, "jobs");
/// testing::refute_enqueued::<resize>(&client, |w| *w > 1000);
/// # Ok(()) }
/// ```
///
/// # Panics
/// When no such job was enqueued, listing every job that was.
#[track_caller]
pub fn assert_enqueued<T: Job>(
    client: &Client,
    matches: impl Fn(&T::Payload) -> bool,
) -> Enqueued<T> {
    assert_enqueued_with::<T>(client, |job| matches(&job.payload))
}

/// [`assert_enqueued`] with a predicate over the whole job: its options
/// (priority, delay, unique...) as well as its payload.
///
/// # Panics
/// When no such job was enqueued, listing every job that was.
#[track_caller]
pub fn assert_enqueued_with<T: Job>(
    client: &Client,
    matches: impl Fn(&Enqueued<T>) -> bool,
) -> Enqueued<T> {
    match enqueued::<T>(client).into_iter().find(|job| matches(job)) {
        Some(job) => job,
        None => panic!(
            "no job {} matching the predicate was enqueued; enqueued: {}",
            T::NAME,
            listing(&all_enqueued(client))
        ),
    }
}

/// Asserts that `client` was not asked to enqueue a job `T` whose payload
/// `matches`.
///
/// # Panics
/// When one was, listing it.
#[track_caller]
pub fn refute_enqueued<T: Job>(client: &Client, matches: impl Fn(&T::Payload) -> bool) {
    if let Some(job) = enqueued::<T>(client)
        .into_iter()
        .find(|job| matches(&job.payload))
    {
        panic!(
            "a job {} matching the predicate was enqueued: id {}; enqueued: {}",
            T::NAME,
            job.id,
            listing(&all_enqueued(client))
        );
    }
}

/// Forgets everything `client` recorded.
#[track_caller]
pub fn clear(client: &Client) {
    recorder_of(client).clear();
}

/// The jobs as a failed assertion lists them.
fn listing(jobs: &[EnqueuedJob]) -> String {
    if jobs.is_empty() {
        return "none".to_owned();
    }
    jobs.iter()
        .map(|job| format!("\n  {} on {:?}: {}", job.name, job.queue, job.payload))
        .collect()
}
