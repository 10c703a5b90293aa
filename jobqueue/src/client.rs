//! [`Client`]: typed enqueue of `#[job]`s, and [`JobHandle`] to follow one.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::connection::Connection;
use crate::definition::Job;
use crate::error::{Error, Result};
use crate::job::{JobRecord, JobStatus, NewJob};
use crate::queue::{Queue, QueueOptions};

/// The application's handle on the job system: enqueues typed jobs. Cheap
/// to clone; clones share one connection.
///
/// ```no_run
/// # use jobqueue::{job, Client, JobContext};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Welcome { to: String }
/// # #[job(queue = "email")] async fn send_welcome(args: Welcome, ctx: JobContext) -> Result<(), String> { Ok(()) }
/// # async fn run() -> jobqueue::Result<()> {
/// let client = Client::connect("redis://127.0.0.1:6379/").await?;
/// let handle = client.enqueue::<send_welcome>(Welcome { to: "a@example.com".into() }).await?;
/// handle.wait(std::time::Duration::from_secs(30)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    conn: Connection,
    template: QueueOptions,
    /// Shard counts of the queues split with [`Client::with_shards`].
    shards: Arc<BTreeMap<String, Vec<String>>>,
}

impl Client {
    /// Connects to the Redis server at `url`.
    ///
    /// # Cancellation safety
    /// Safe: nothing is written before the future completes.
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Self::new(&Connection::open(url).await?))
    }

    /// Connects with connection options, for example a
    /// [`startup_wait`](crate::ConnectionOptions::startup_wait) for a worker
    /// that may start before Redis.
    ///
    /// # Cancellation safety
    /// Safe: nothing is written before the future completes.
    pub async fn connect_with(url: &str, options: crate::ConnectionOptions) -> Result<Self> {
        Ok(Self::new(&Connection::open_with(url, options).await?))
    }

    /// A client on an open connection, with the default queue options.
    pub fn new(conn: &Connection) -> Self {
        Self::with_options(conn, QueueOptions::default())
    }

    /// A client whose queues take `template`'s options (layout, payload
    /// limit, history); each queue's name comes from its jobs.
    pub fn with_options(conn: &Connection, template: QueueOptions) -> Self {
        Self {
            conn: conn.clone(),
            template,
            shards: Arc::default(),
        }
    }

    /// Splits queue `queue` into `shards` physical queues (`queue`, then
    /// `queue~1…`, `queue~2…`), each with its own hash tag, placed at evenly
    /// spaced cluster slots: on a Redis Cluster they spread over the
    /// primaries, so one busy queue can use every node instead of the one
    /// that owns its slot.
    ///
    /// Jobs enqueued through this client go to the shard their id picks;
    /// runners built from it claim from every shard, with one concurrency
    /// limit for the whole queue. Enqueuers and runners must agree on the
    /// count: give both the same client setup.
    ///
    /// Shard 0 is the unsharded queue itself, so jobs waiting when sharding
    /// is turned on still run; but [`handle`](Self::handle) looks a job up
    /// in the shard its id picks, so a handle rebuilt from the id of a job
    /// enqueued before sharding finds nothing (keep the handles you had, or
    /// read such jobs through [`queue`](Self::queue)). The names of shards 1
    /// and up depend on the count: before changing it, stop enqueuing and let
    /// the old shards drain, or their jobs are left unserved. Queue names
    /// containing `~` are best avoided; they can be mistaken for shards.
    pub fn with_shards(mut self, queue: &str, shards: usize) -> Result<Self> {
        let names = crate::shards::shard_names(queue, shards)?;
        Arc::make_mut(&mut self.shards).insert(queue.to_owned(), names);
        Ok(self)
    }

    /// The physical queues behind `name`: its shards, or the queue alone.
    pub fn shard_queues(&self, name: &str) -> Result<Vec<Queue>> {
        match self.shards.get(name) {
            Some(names) => names.iter().map(|shard| self.queue(shard)).collect(),
            None => Ok(vec![self.queue(name)?]),
        }
    }

    /// The physical queue that holds (or will hold) job `id` of `name`.
    fn queue_of(&self, name: &str, id: &str) -> Result<Queue> {
        match self.shards.get(name) {
            Some(names) => self.queue(&names[crate::shards::shard_of(id, names.len())]),
            None => self.queue(name),
        }
    }

    /// The connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The low-level [`Queue`] named `name`.
    pub fn queue(&self, name: &str) -> Result<Queue> {
        let options = QueueOptions {
            name: name.to_owned(),
            ..self.template.clone()
        };
        Queue::new(&self.conn, options)
    }

    /// Enqueues job `T` with `payload`; the payload's type is checked at
    /// compile time.
    ///
    /// # Cancellation safety
    /// Dropping the future may or may not have enqueued the job, never half.
    pub async fn enqueue<T: Job>(&self, payload: T::Payload) -> Result<JobHandle<T>> {
        self.job::<T>(payload).enqueue().await
    }

    /// Starts a job `T` with per-call options; finish with
    /// [`JobBuilder::enqueue`].
    pub fn job<T: Job>(&self, payload: T::Payload) -> JobBuilder<'_, T> {
        JobBuilder {
            client: self,
            payload,
            max_attempts: T::MAX_ATTEMPTS,
            visibility: Duration::from_millis(T::VISIBILITY_MS),
            delay: None,
            at: None,
            _job: PhantomData,
        }
    }

    /// Enqueues many jobs `T` in one round trip, in order (on a sharded
    /// queue, one round trip per shard, sent at once).
    ///
    /// # Cancellation safety
    /// All of the batch or none of it. On a sharded queue that holds per
    /// shard: after an error or a dropped future, some shards' parts may be
    /// enqueued, and sending the batch again enqueues those twice.
    pub async fn enqueue_many<T: Job>(
        &self,
        payloads: impl IntoIterator<Item = T::Payload>,
    ) -> Result<Vec<JobHandle<T>>> {
        let jobs = payloads
            .into_iter()
            .map(|p| {
                Ok(stored::<T>(
                    NewJob::new(&p)?,
                    T::MAX_ATTEMPTS,
                    Duration::from_millis(T::VISIBILITY_MS),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        if !self.shards.contains_key(T::QUEUE) {
            let queue = self.queue(T::QUEUE)?;
            let ids = queue.submit_many(jobs).await?;
            return Ok(ids
                .into_iter()
                .map(|id| JobHandle::new(queue.clone(), id))
                .collect());
        }
        // One script call per shard, all at once; handles in input order.
        let shards = self.shard_queues(T::QUEUE)?;
        let mut by_shard: Vec<Vec<NewJob>> = vec![Vec::new(); shards.len()];
        let mut handles = Vec::with_capacity(jobs.len());
        for mut job in jobs {
            let id = crate::id::random_hex();
            let shard = crate::shards::shard_of(&id, shards.len());
            handles.push(JobHandle::new(shards[shard].clone(), id.clone()));
            job.id = Some(id);
            by_shard[shard].push(job);
        }
        futures_util::future::try_join_all(
            shards
                .iter()
                .zip(by_shard)
                .filter(|(_, jobs)| !jobs.is_empty())
                .map(|(queue, jobs)| queue.submit_many(jobs)),
        )
        .await?;
        Ok(handles)
    }

    /// A handle on an existing job `T` by id.
    pub fn handle<T: Job>(&self, id: impl Into<String>) -> Result<JobHandle<T>> {
        let id = id.into();
        Ok(JobHandle::new(self.queue_of(T::QUEUE, &id)?, id))
    }
}

/// Adds what every stored job of type `T` carries besides the reference's
/// fields: its name, attempts and lease length.
fn stored<T: Job>(job: NewJob, max_attempts: u32, visibility: Duration) -> NewJob {
    job.name(T::NAME)
        .max_attempts(max_attempts)
        .visibility(visibility)
}

/// One job `T` about to be enqueued, with per-call options.
#[must_use = "call .enqueue() to send the job"]
pub struct JobBuilder<'a, T: Job> {
    client: &'a Client,
    payload: T::Payload,
    max_attempts: u32,
    visibility: Duration,
    delay: Option<Duration>,
    at: Option<std::time::SystemTime>,
    _job: PhantomData<fn() -> T>,
}

impl<T: Job> fmt::Debug for JobBuilder<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobBuilder")
            .field("job", &T::NAME)
            .field("max_attempts", &self.max_attempts)
            .field("visibility", &self.visibility)
            .finish_non_exhaustive()
    }
}

impl<T: Job> JobBuilder<'_, T> {
    /// Overrides the job's `max_attempts` for this one.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Overrides the job's lease length for this one.
    pub fn visibility(mut self, visibility: Duration) -> Self {
        self.visibility = visibility;
        self
    }

    /// Holds the job back for `delay` after Redis receives it. It never
    /// starts earlier, and starts within about a runner's sweep interval
    /// after.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self.at = None;
        self
    }

    /// Holds the job back until `time` (this process's clock).
    pub fn at(mut self, time: std::time::SystemTime) -> Self {
        self.at = Some(time);
        self.delay = None;
        self
    }

    /// Sends the job.
    ///
    /// # Cancellation safety
    /// Dropping the future may or may not have enqueued the job, never half.
    pub async fn enqueue(self) -> Result<JobHandle<T>> {
        let id = crate::id::random_hex();
        let queue = self.client.queue_of(T::QUEUE, &id)?;
        let mut job = stored::<T>(
            NewJob::new(&self.payload)?,
            self.max_attempts,
            self.visibility,
        );
        job.id = Some(id);
        if let Some(delay) = self.delay {
            job = job.delay(delay);
        }
        if let Some(at) = self.at {
            job = job.at(at);
        }
        let id = queue.submit(job).await?;
        Ok(JobHandle::new(queue, id))
    }
}

/// A job `T` that was enqueued: its id, its status, and its result.
pub struct JobHandle<T: Job> {
    queue: Queue,
    id: String,
    _job: PhantomData<fn() -> T>,
}

impl<T: Job> Clone for JobHandle<T> {
    fn clone(&self) -> Self {
        Self::new(self.queue.clone(), self.id.clone())
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
    fn new(queue: Queue, id: String) -> Self {
        Self {
            queue,
            id,
            _job: PhantomData,
        }
    }

    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The job's state, or `None` once its hash is gone (completed jobs
    /// expire after the queue's `completed_ttl`).
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn status(&self) -> Result<Option<JobStatus>> {
        Ok(self.queue.get_job(&self.id).await?.and_then(|r| r.status()))
    }

    /// The job's whole hash, if it still exists.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn record(&self) -> Result<Option<JobRecord>> {
        self.queue.get_job(&self.id).await
    }

    /// Waits up to `timeout` for the job to finish and returns its output,
    /// or [`Error::JobFailed`] with its last error once it failed for good.
    ///
    /// Listens to the queue's events channel rather than polling: it reads
    /// the job once after subscribing (a job that finished before the wait
    /// began is seen there) and again only when an event names it.
    ///
    /// # Cancellation safety
    /// Safe: read only; dropping the future unsubscribes.
    pub async fn wait(&self, timeout: Duration) -> Result<T::Output>
    where
        T::Output: DeserializeOwned,
    {
        let waiting = async {
            let mut pubsub = self.queue.connection().pubsub().await?;
            pubsub.subscribe(self.queue.keys().events()).await?;
            let mut events = pubsub.on_message();
            loop {
                if let Some(outcome) = self.finished().await? {
                    return outcome;
                }
                loop {
                    let Some(message) = events.next().await else {
                        return Err(Error::malformed(
                            self.queue.keys().events(),
                            "the events subscription closed",
                        ));
                    };
                    let event: serde_json::Value = match message.get_payload::<String>() {
                        Ok(text) => serde_json::from_str(&text).unwrap_or_default(),
                        Err(_) => continue,
                    };
                    let settled = matches!(event["status"].as_str(), Some("completed" | "failed"));
                    if event["id"].as_str() == Some(self.id.as_str()) && settled {
                        break;
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
        let record = self
            .queue
            .get_job(&self.id)
            .await?
            .ok_or_else(|| Error::JobNotFound {
                id: self.id.clone(),
            })?;
        Ok(match record.status() {
            Some(JobStatus::Completed) => Some(record.result::<T::Output>().and_then(|r| {
                r.ok_or_else(|| {
                    Error::malformed(format!("job {}", self.id), "completed without a result")
                })
            })),
            Some(JobStatus::Failed) => Some(Err(Error::JobFailed {
                id: self.id.clone(),
                error: record
                    .last_error()
                    .unwrap_or("no error recorded")
                    .to_owned(),
            })),
            _ => None,
        })
    }
}
