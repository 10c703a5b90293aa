//! What `#[job]` defines: the [`Job`] trait on the generated type, the
//! [`JobDefinition`] it registers through `inventory`, and the [`Backoff`]
//! policy between attempts.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

pub use crate::backoff::Backoff;
use crate::context::JobContext;
use crate::outcome::JobError;

/// A job type, implemented by the type `#[job]` generates (named like the
/// function). It is the `T` of [`Client::enqueue::<T>()`](crate::Client::enqueue):
/// the payload type checks the call at compile time. Implement it by hand
/// only for jobs another process runs (enqueue-only); `#[job]` also
/// registers the handler.
pub trait Job: Send + Sync + 'static {
    /// What the handler takes, stored as JSON in the job's `payload` field.
    type Payload: Serialize + DeserializeOwned + Send + 'static;
    /// What the handler returns on success, stored as JSON in `result`.
    type Output: Serialize + Send + 'static;
    /// The stable name stored in the job's `job` field (default: the fn's name).
    const NAME: &'static str;
    /// The queue the job goes to.
    const QUEUE: &'static str;
    /// Claims the job gets before it fails for good.
    const MAX_ATTEMPTS: u32;
    /// The lease length, renewed while the handler runs.
    const VISIBILITY: Duration;
    /// The longest a run may take, if limited.
    const TIMEOUT: Option<Duration>;
    /// How long a failed attempt waits before the next.
    const BACKOFF: Backoff = Backoff::DEFAULT;
    /// How long after its due time a job may still start; one not started
    /// by then never runs and ends as expired. `None`: no deadline.
    const EXPIRES: Option<Duration> = None;
    /// Makes the job unique by its payload for at most this long (its
    /// lock's TTL); `None`: not unique. See [`crate::queue::Unique`].
    const UNIQUE_FOR: Option<Duration> = None;
    /// While a unique job holds its lock.
    const UNIQUE_MODE: crate::queue::UniqueMode = crate::queue::UniqueMode::WhilePending;
    /// A cron expression: every runner serving the queue enqueues the job
    /// at each tick, once across the fleet (`#[job(cron = "...")]`).
    const CRON: Option<&'static str> = None;
    /// The IANA zone [`CRON`](Self::CRON) is read in.
    const TZ: &'static str = "UTC";
    /// What [`CRON`](Self::CRON) does about ticks no runner was up for.
    const MISFIRE: crate::queue::Misfire = crate::queue::Misfire::RunOnce;
    /// The priority level of the job's enqueues (-3 to 3; see
    /// [`EnqueueOptions::priority`](crate::client::EnqueueOptions::priority)).
    const PRIORITY: i8 = 0;
    /// Fleet-wide limits the job declares for its queue
    /// (`#[job(rate = "100/s", burst = 10, max_running = 5)]`). Every runner
    /// writes them where the queue has none set, so an operator's change
    /// (`jobqueue limit`, the dashboard, [`Client::set_limits`](crate::Client::set_limits))
    /// is never reverted by a deploy.
    const LIMITS: crate::queue::Limits = crate::queue::Limits::NONE;

    /// The rate key of a job with this payload (`#[job(rate_key = ...)]`):
    /// its jobs wait in the key's own lane and run within the key's limits.
    /// `None`: no key.
    fn rate_key(payload: &Self::Payload) -> Option<String> {
        let _ = payload;
        None
    }
}

/// The JSON payload of a periodic job's ticks (its payload type's default).
pub type CronPayloadFn = fn() -> Result<String, serde_json::Error>;

/// The future a registered handler returns: the result as JSON (checked
/// once, when it was serialized), or the error.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Box<RawValue>, JobError>> + Send>>;

/// A registered handler: decodes the payload JSON and runs the job.
pub type HandlerFn = fn(&str, JobContext) -> HandlerFuture;

/// A job as registered by `#[job]`: its settings and its handler.
#[derive(Clone, Copy)]
pub struct JobDefinition {
    name: &'static str,
    queue: &'static str,
    module_path: &'static str,
    max_attempts: u32,
    visibility: Duration,
    timeout: Option<Duration>,
    backoff: Backoff,
    handler: HandlerFn,
    cron: Option<CronSchedule>,
    limits: crate::queue::Limits,
}

/// A `#[job(cron)]`'s schedule, as its definition carries it.
#[derive(Clone, Copy, Debug)]
pub struct CronSchedule {
    /// The cron expression.
    pub cron: &'static str,
    /// The zone it is read in.
    pub tz: &'static str,
    /// Late ticks.
    pub misfire: crate::queue::Misfire,
    /// The payload of each tick's job.
    pub payload: CronPayloadFn,
}

impl JobDefinition {
    /// The definition of job type `T`, registered from `module_path`.
    /// Called by the code `#[job]` generates.
    pub const fn new<T: Job>(module_path: &'static str, handler: HandlerFn) -> Self {
        Self {
            name: T::NAME,
            queue: T::QUEUE,
            module_path,
            max_attempts: T::MAX_ATTEMPTS,
            visibility: T::VISIBILITY,
            timeout: T::TIMEOUT,
            backoff: T::BACKOFF,
            handler,
            cron: None,
            limits: T::LIMITS,
        }
    }

    /// The same definition, enqueued by its `T::CRON` schedule with the
    /// payload `payload` gives. Called by the code `#[job(cron)]` generates.
    pub const fn with_cron<T: Job>(mut self, payload: CronPayloadFn) -> Self {
        if let Some(cron) = T::CRON {
            self.cron = Some(CronSchedule {
                cron,
                tz: T::TZ,
                misfire: T::MISFIRE,
                payload,
            });
        }
        self
    }

    /// The fleet-wide limits the job declares for its queue.
    pub fn limits(&self) -> crate::queue::Limits {
        self.limits
    }

    /// The job's periodic schedule, if any.
    pub fn cron(&self) -> Option<CronSchedule> {
        self.cron
    }

    /// The stable name stored with each job.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The queue.
    pub fn queue(&self) -> &'static str {
        self.queue
    }

    /// The module the job was defined in.
    pub fn module_path(&self) -> &'static str {
        self.module_path
    }

    /// Claims a job gets before it fails for good.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The lease length.
    pub fn visibility(&self) -> Duration {
        self.visibility
    }

    /// The longest a run may take, if limited.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// How long a failed attempt waits before the next.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Runs the handler on a payload's JSON text.
    pub fn run(&self, payload: &str, ctx: JobContext) -> HandlerFuture {
        (self.handler)(payload, ctx)
    }
}

impl fmt::Debug for JobDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobDefinition")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .field("module_path", &self.module_path)
            .field("max_attempts", &self.max_attempts)
            .field("visibility", &self.visibility)
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

inventory::collect!(JobDefinition);
