//! [`Client`]: typed enqueue of `#[job]`s, and [`JobHandle`] to follow one.

mod events;
mod handle;
mod queues;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

pub use crate::queue::EventKind;
pub use crate::queue::{EnqueueOptions, When};
pub use crate::queue::{Progress, ProgressEvent};
pub use events::EventStream;
pub use handle::JobHandle;

use crate::connection::{Connection, ConnectionOptions};
use crate::definition::Job;
use crate::error::{Error, Result};
use crate::queue::{
    CancelOutcome, Limits, NewJob, Queue, QueueLimits, QueueOptions, ScheduleOptions, Unique,
};

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
    queue_options: QueueOptions,
    /// The shard names of the queues split with [`ClientBuilder::shards`].
    shards: Arc<BTreeMap<String, Vec<String>>>,
    /// The queues opened so far, kept so that enqueues of one queue from
    /// many tasks share its combined enqueue calls (and its name is checked
    /// once).
    queues: Arc<Mutex<HashMap<String, Queue>>>,
    /// Where a recording client (`jobqueue::testing`) keeps what it was
    /// asked to enqueue, instead of sending it.
    #[cfg(feature = "testing")]
    recorder: Option<Arc<crate::testing::Recorder>>,
}

impl Client {
    /// Connects to the Redis server (or cluster node) at `url`.
    ///
    /// # Cancellation safety
    /// Safe: nothing is written before the future completes.
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Self::new(&Connection::connect(url).await?))
    }

    /// Connects with connection options, for example a
    /// [`startup_wait`](ConnectionOptions::startup_wait) for a worker that
    /// may start before Redis.
    ///
    /// # Cancellation safety
    /// Safe: nothing is written before the future completes.
    pub async fn connect_with(url: &str, options: ConnectionOptions) -> Result<Self> {
        Ok(Self::new(&Connection::connect_with(url, options).await?))
    }

    /// A client on an open connection, with the default queue options and
    /// no sharded queue.
    pub fn new(conn: &Connection) -> Self {
        Self {
            conn: conn.clone(),
            queue_options: QueueOptions::default(),
            shards: Arc::default(),
            queues: Arc::default(),
            #[cfg(feature = "testing")]
            recorder: None,
        }
    }

    /// A client that records what it is asked to enqueue instead of
    /// sending it, for unit tests of code that enqueues (Sidekiq's
    /// `Testing.fake!`, River's `rivertest`). Payloads are serialized and
    /// every option checked as for a real enqueue, so a payload that cannot
    /// be encoded fails here too. Read what it recorded with
    /// [`testing::enqueued`](crate::testing::enqueued) and
    /// [`testing::assert_enqueued`](crate::testing::assert_enqueued), run
    /// it with [`testing::drain`](crate::testing::drain). Each recording
    /// client (and its clones) has its own record, so tests running at once
    /// do not see each other's jobs. Everything else that needs Redis (a
    /// handle's `wait`, `cancel`, limits, schedules) fails with an error
    /// saying this is a recording client.
    ///
    /// ```
    /// use jobqueue::{job, testing, Client};
    ///
    /// #[job(queue = "email")]
    /// async fn send_welcome(to: String) -> Result<(), String> {
    ///     Ok(())
    /// }
    ///
    /// /// The application code under test.
    /// async fn sign_up(client: &Client, email: &str) -> jobqueue::Result<()> {
    ///     client.enqueue::<send_welcome>(email.to_owned()).await?;
    ///     Ok(())
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> jobqueue::Result<()> {
    /// let client = Client::recording();
    /// sign_up(&client, "ada@example.com").await?;
    /// testing::assert_enqueued::<send_welcome>(&client, |to| to == "ada@example.com");
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "testing")]
    #[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
    pub fn recording() -> Self {
        Self {
            recorder: Some(Arc::default()),
            ..Self::new(&Connection::detached())
        }
    }

    /// The record of a recording client.
    #[cfg(feature = "testing")]
    pub(crate) fn recorder(&self) -> Option<&Arc<crate::testing::Recorder>> {
        self.recorder.as_ref()
    }

    /// A builder for a client with queue options or sharded queues.
    pub fn builder(conn: &Connection) -> ClientBuilder {
        ClientBuilder {
            conn: conn.clone(),
            queue_options: QueueOptions::default(),
            shards: Vec::new(),
        }
    }

    /// The connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The low-level [`Queue`] named `name`, with this client's queue
    /// options.
    pub fn queue(&self, name: &str) -> Result<Queue> {
        let mut queues = self.queues.lock().expect("queues lock");
        if let Some(queue) = queues.get(name) {
            return Ok(queue.clone());
        }
        let queue = Queue::new_with(&self.conn, name, self.queue_options.clone())?;
        queues.insert(name.to_owned(), queue.clone());
        Ok(queue)
    }

    /// The physical queues behind `name`: its shards, or the queue alone.
    pub fn shard_queues(&self, name: &str) -> Result<Vec<Queue>> {
        match self.shards.get(name) {
            Some(names) => names.iter().map(|shard| self.queue(shard)).collect(),
            None => Ok(vec![self.queue(name)?]),
        }
    }

    /// The physical queue of `name` that holds (or will hold) job `id`, by
    /// the one routing rule, `shards::shard_of` (which `submit` applies to
    /// the shard list it builds once per call).
    pub(crate) fn queue_of(&self, name: &str, id: &str) -> Result<Queue> {
        match self.shards.get(name) {
            Some(names) => self.queue(&names[crate::shards::shard_of(id, names.len())]),
            None => self.queue(name),
        }
    }

    /// Enqueues job `T` with `payload`; the payload's type is checked at
    /// compile time.
    ///
    /// # Cancellation safety
    /// Dropping the future may or may not have enqueued the job, never half.
    pub async fn enqueue<T: Job>(&self, payload: T::Payload) -> Result<JobHandle<T>> {
        self.enqueue_with::<T>(payload, EnqueueOptions::default())
            .await
    }

    /// Enqueues job `T` with per-job [`EnqueueOptions`] (an id, a delay,
    /// attempts, lease, result TTL); what they leave unset comes from `T`'s
    /// `#[job]` attribute, then from the queue's options.
    ///
    /// # Cancellation safety
    /// Dropping the future may or may not have enqueued the job, never half.
    pub async fn enqueue_with<T: Job>(
        &self,
        payload: T::Payload,
        options: EnqueueOptions,
    ) -> Result<JobHandle<T>> {
        let mut handles = self.submit::<T>(vec![payload], options).await?;
        Ok(handles.remove(0))
    }

    /// Enqueues many jobs `T`, in order. The jobs are split by the shard
    /// their ids pick (the queue alone when it is not sharded); each shard's
    /// part is written as [`Queue::submit_many`] writes a batch, in script
    /// calls of at most 200 jobs or 256 KiB, one after the other, so no call
    /// holds Redis for more than a few ms however big the batch. The shards'
    /// parts are sent at once.
    ///
    /// Every payload is serialized and checked before anything is sent: a
    /// bad one refuses the whole batch with nothing written.
    ///
    /// # Atomicity and retries
    /// Each script call (chunk) is atomic, the batch is not: after an error
    /// or a dropped future, the chunks already written (of any shard) stay
    /// enqueued, and sending the batch again with fresh ids enqueues those
    /// twice. Give the jobs ids ([`EnqueueOptions::id`], through
    /// [`enqueue_with`](Self::enqueue_with)) to make a resend skip them. A
    /// chunk whose reply is lost (connection error, response timeout) is
    /// sent again by the connection with the same ids and writes nothing
    /// twice.
    ///
    /// # Cancellation safety
    /// Dropping the future leaves some chunks of each shard enqueued (none,
    /// some or all), never half of one.
    pub async fn enqueue_many<T: Job>(
        &self,
        payloads: impl IntoIterator<Item = T::Payload>,
    ) -> Result<Vec<JobHandle<T>>> {
        self.submit::<T>(payloads.into_iter().collect(), EnqueueOptions::default())
            .await
    }

    /// A handle on an existing job `T` by id. Unlike a handle from an
    /// enqueue, it cannot tell an id that never existed from a job whose
    /// hash expired: both read as [`Error::JobNotFound`].
    pub fn handle<T: Job>(&self, id: impl Into<String>) -> Result<JobHandle<T>> {
        let id = id.into();
        Ok(JobHandle::new(self.queue_of(T::QUEUE, &id)?, id, false))
    }

    /// Cancels job `T` with id `id` (see [`Queue::cancel`]): a waiting job
    /// ends at once and never runs, a running one is stopped at its next
    /// lease renewal and ends as cancelled.
    ///
    /// # Cancellation safety
    /// Safe: cancelling twice answers what the first cancel left.
    pub async fn cancel<T: Job>(&self, id: &str) -> Result<CancelOutcome> {
        self.handle::<T>(id)?.cancel().await
    }

    /// Starts a batch: children added with
    /// [`add`](crate::workflow::BatchBuilder::add), callbacks that run once
    /// every child has settled, then
    /// [`enqueue`](crate::workflow::BatchBuilder::enqueue). See
    /// [`workflow`](crate::workflow).
    pub fn batch(&self) -> crate::workflow::BatchBuilder<'_> {
        crate::workflow::BatchBuilder::new(self)
    }

    /// Starts a chain whose first step is job `T` with `payload`; each
    /// [`then`](crate::workflow::ChainBuilder::then) adds a step that takes
    /// the previous step's output. See [`workflow`](crate::workflow).
    pub fn chain<T: Job>(&self, payload: T::Payload) -> crate::workflow::ChainBuilder<'_, T> {
        crate::workflow::ChainBuilder::new(self, payload)
    }

    /// A handle on batch `id`, living on queue `queue` (its callbacks'
    /// queue; for a sharded queue, the shard is found from the id).
    pub fn batch_handle(&self, queue: &str, id: &str) -> Result<crate::workflow::BatchHandle> {
        Ok(crate::workflow::BatchHandle::existing(
            self.queue_of(queue, id)?,
            id.to_owned(),
        ))
    }

    /// The batches living on queue `queue` (every shard), newest first, at
    /// most `limit` per shard; batches whose keys expired are dropped from
    /// the queue's index on the way.
    ///
    /// # Cancellation safety
    /// Safe: reads, and index entries of expired batches removed.
    pub async fn batches(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<crate::workflow::BatchStatus>> {
        let mut out = Vec::new();
        for shard in self.shard_queues(queue)? {
            let mut gone = Vec::new();
            for id in shard.batch_ids(limit).await? {
                let handle = crate::workflow::BatchHandle::existing(shard.clone(), id.clone());
                match handle.status().await? {
                    Some(status) => out.push(status),
                    None => gone.push(id),
                }
            }
            shard.forget_batches(&gone).await?;
        }
        out.sort_by_key(|b| std::cmp::Reverse(b.created_at_ms));
        Ok(out)
    }

    /// Replaces the fleet-wide limits of queue `queue` (a rate with its
    /// burst, max_running); fields left unset are removed. Every runner
    /// applies them at its next claim, within half a second. The limits of
    /// a sharded queue are split over its shards (each keeps its own state).
    ///
    /// ```no_run
    /// # async fn run(client: jobqueue::Client) -> jobqueue::Result<()> {
    /// use jobqueue::Limits;
    /// client
    ///     .set_limits("email", Limits::new().rate("100/s".parse()?).burst(10))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancellation safety
    /// Safe: setting the same limits again changes nothing.
    pub async fn set_limits(&self, queue: &str, limits: Limits) -> Result<()> {
        limits.check()?;
        let shards = self.shard_queues(queue)?;
        let each = limits.per_shard(shards.len());
        for shard in shards {
            shard.set_limits(&each).await?;
        }
        Ok(())
    }

    /// Replaces the limits every rate key of `queue` gets unless it has
    /// its own ([`set_limits_of_key`](Self::set_limits_of_key)). A key's
    /// jobs all go to one shard, so these are not split.
    ///
    /// # Cancellation safety
    /// As [`set_limits`](Self::set_limits).
    pub async fn set_key_limits(&self, queue: &str, limits: Limits) -> Result<()> {
        limits.check()?;
        for shard in self.shard_queues(queue)? {
            shard.set_key_limits(&limits).await?;
        }
        Ok(())
    }

    /// Gives rate key `key` of `queue` limits of its own, or (`None`) the
    /// per-key defaults again.
    ///
    /// # Cancellation safety
    /// As [`set_limits`](Self::set_limits).
    pub async fn set_limits_of_key(
        &self,
        queue: &str,
        key: &str,
        limits: Option<Limits>,
    ) -> Result<()> {
        for shard in self.shard_queues(queue)? {
            shard.set_limits_of_key(key, limits.as_ref()).await?;
        }
        Ok(())
    }

    /// The limits of queue `queue` (of its first shard, for a sharded one).
    pub async fn limits(&self, queue: &str) -> Result<QueueLimits> {
        self.queue(queue)?.limits().await
    }

    /// Schedules job `T` with `payload` at every tick of `cron` (five
    /// fields, or six with seconds first), in UTC: once per tick across
    /// every runner serving `T`'s queue. See [`Queue::put_schedule`]; true
    /// when it wrote (false: the same schedule was there).
    ///
    /// # Cancellation safety
    /// Safe: scheduling the same again changes nothing.
    pub async fn schedule<T: Job>(
        &self,
        name: &str,
        cron: &str,
        payload: T::Payload,
    ) -> Result<bool> {
        self.schedule_with::<T>(name, cron, payload, ScheduleOptions::new())
            .await
    }

    /// [`schedule`](Self::schedule) with a zone, a misfire policy and job
    /// limits.
    ///
    /// # Cancellation safety
    /// As [`schedule`](Self::schedule).
    pub async fn schedule_with<T: Job>(
        &self,
        name: &str,
        cron: &str,
        payload: T::Payload,
        options: ScheduleOptions,
    ) -> Result<bool> {
        let payload = serde_json::to_string(&payload)?;
        let mut options = options;
        options.max_attempts = options.max_attempts.or(Some(T::MAX_ATTEMPTS));
        options.visibility = options.visibility.or(Some(T::VISIBILITY));
        self.schedule_queue::<T>()?
            .put_schedule(name, cron, T::NAME, &payload, &options)
            .await
    }

    /// Removes schedule `name` of `T`'s queue; false when there was none.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn unschedule<T: Job>(&self, name: &str) -> Result<bool> {
        self.schedule_queue::<T>()?.remove_schedule(name).await
    }

    /// Where `T`'s schedules live: its queue, or a sharded queue's first
    /// shard (so each fires once).
    fn schedule_queue<T: Job>(&self) -> Result<Queue> {
        self.shard_queues(T::QUEUE)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::invalid_option("queue", "a queue has at least one shard"))
    }

    /// The options a job `T` gets when the call leaves them unset: its
    /// `#[job]` attribute's.
    pub(crate) fn job_defaults<T: Job>() -> EnqueueOptions {
        let mut defaults = EnqueueOptions::new()
            .max_attempts(T::MAX_ATTEMPTS)
            .visibility(T::VISIBILITY);
        if let Some(within) = T::EXPIRES {
            defaults = defaults.expires_in(within);
        }
        if let Some(window) = T::UNIQUE_FOR {
            defaults = defaults.unique(Unique::for_window(window).mode(T::UNIQUE_MODE));
        }
        if T::PRIORITY != 0 {
            defaults = defaults.priority(T::PRIORITY);
        }
        defaults
    }

    /// Job `T` with `payload`, as it will be written: its name, `options`
    /// (already merged with the defaults), the payload's rate key when the
    /// options name none, and the enqueuing code's trace context.
    pub(crate) fn new_job<T: Job>(
        payload: &T::Payload,
        options: &EnqueueOptions,
        trace: &[(&'static str, String)],
    ) -> Result<NewJob> {
        let mut options = options.clone();
        if options.rate_key.is_none() {
            options.rate_key = T::rate_key(payload);
        }
        Ok(NewJob::new(payload)?
            .name(T::NAME)
            .options(options)
            .context_fields(trace))
    }

    /// Gives `job` its id (the one its options name, or a new one) and
    /// picks its shard among `shards` (1 for a queue that is not sharded):
    /// a unique job's shard follows its lock, so that the same key always
    /// meets the same lock; a rate key's jobs all go to one shard, so its
    /// limits hold exactly (each shard keeps its own limit state); any
    /// other job goes where its id says, so a handle built from the id
    /// alone (`Client::handle`, `cancel`) finds it.
    pub(crate) fn place(job: NewJob, shards: usize) -> Result<(NewJob, usize)> {
        let by_key = match (job.unique_digest()?, &job.enqueue_options().rate_key) {
            (Some(digest), _) => Some(crate::shards::shard_of(&digest, shards)),
            (None, Some(key)) => Some(crate::shards::shard_of(key, shards)),
            (None, None) => None,
        };
        let mut options = job.enqueue_options().clone();
        let (id, shard) = match (options.id.take(), by_key) {
            (Some(id), Some(shard)) => (id, shard),
            (Some(id), None) => {
                let shard = crate::shards::shard_of(&id, shards);
                (id, shard)
            }
            // An id of that same shard, so a handle built from the id
            // alone finds the job.
            (None, Some(shard)) => (crate::shards::id_in_shard(shard, shards), shard),
            (None, None) => {
                let id = crate::id::random_hex();
                let shard = crate::shards::shard_of(&id, shards);
                (id, shard)
            }
        };
        options.id = Some(id);
        Ok((job.options(options), shard))
    }

    /// Writes jobs `T`, each to the queue (or shard) its id picks, the
    /// queues at once, each in bounded chunks; handles in input order.
    async fn submit<T: Job>(
        &self,
        payloads: Vec<T::Payload>,
        options: EnqueueOptions,
    ) -> Result<Vec<JobHandle<T>>> {
        let options = options.or(&Self::job_defaults::<T>());
        // The enqueuing code's trace context, stored with each job so that
        // its run continues the trace (feature `otel`; empty otherwise).
        let trace = crate::otel::current_context_fields(T::QUEUE);
        // The queues (shards) once per call, not one Queue per job.
        let queues = self.shard_queues(T::QUEUE)?;
        let mut batches: Vec<Vec<NewJob>> = vec![Vec::new(); queues.len()];
        // Where each job goes: its shard, and its place in that shard's batch.
        let mut places = Vec::with_capacity(payloads.len());
        for payload in &payloads {
            let job = Self::new_job::<T>(payload, &options, &trace)?;
            let (job, shard) = Self::place(job, queues.len())?;
            places.push((shard, batches[shard].len()));
            batches[shard].push(job);
        }
        #[cfg(feature = "testing")]
        if let Some(recorder) = &self.recorder {
            return recorder.record::<T>(&queues, batches, places);
        }
        let written = futures_util::future::try_join_all(queues.iter().zip(batches).map(
            |(queue, jobs)| async move {
                if jobs.is_empty() {
                    Ok(Vec::new())
                } else {
                    queue.submit_all(jobs).await
                }
            },
        ))
        .await?;
        #[cfg(feature = "metrics")]
        crate::metrics::enqueued(
            T::QUEUE,
            T::NAME,
            written.iter().flatten().filter(|e| !e.existing).count() as u64,
        );
        Ok(places
            .into_iter()
            .map(|(shard, n)| {
                let e = &written[shard][n];
                JobHandle::new(queues[shard].clone(), e.id.clone(), true).existing(e.existing)
            })
            .collect())
    }
}

/// Builds a [`Client`] with queue options or sharded queues; see
/// [`Client::builder`].
#[derive(Debug)]
#[must_use = "call .build() to get a Client"]
pub struct ClientBuilder {
    conn: Connection,
    queue_options: QueueOptions,
    shards: Vec<(String, usize)>,
}

impl ClientBuilder {
    /// The options of every queue the client opens (layout, payload limit,
    /// histories, defaults for jobs that set none).
    pub fn queue_options(mut self, options: QueueOptions) -> Self {
        self.queue_options = options;
        self
    }

    /// Splits queue `queue` into `shards` physical queues (`queue`, then
    /// `queue~1…`, `queue~2…`), each with its own hash tag, placed at evenly
    /// spaced cluster slots: on a Redis Cluster they spread over the
    /// primaries, so one busy queue can use every node instead of the one
    /// that owns its slot.
    ///
    /// Jobs enqueued through the client go to the shard their id picks;
    /// runners built from it claim from every shard, with one concurrency
    /// limit for the whole queue. Enqueuers and runners must agree on the
    /// count: give both the same client setup.
    ///
    /// Shard 0 is the unsharded queue itself, so jobs waiting when sharding
    /// is turned on still run; but [`Client::handle`] looks a job up in the
    /// shard its id picks, so a handle rebuilt from the id of a job enqueued
    /// before sharding finds nothing (keep the handles you had, or read such
    /// jobs through [`Client::queue`]). The names of shards 1 and up depend
    /// on the count: before changing it, stop enqueuing and let the old
    /// shards drain, or their jobs are left unserved. Queue names containing
    /// `~` are best avoided; they can be mistaken for shards.
    pub fn shards(mut self, queue: impl Into<String>, shards: usize) -> Self {
        self.shards.push((queue.into(), shards));
        self
    }

    /// Checks the queue options and shard counts and builds the client.
    pub fn build(self) -> Result<Client> {
        self.queue_options.validate()?;
        let mut shards = BTreeMap::new();
        for (queue, count) in self.shards {
            let names = crate::shards::shard_names(&queue, count)?;
            shards.insert(queue, names);
        }
        Ok(Client {
            conn: self.conn,
            queue_options: self.queue_options,
            shards: Arc::new(shards),
            queues: Arc::default(),
            #[cfg(feature = "testing")]
            recorder: None,
        })
    }
}
