//! What `#[job]` defines: the [`Job`] trait on the generated type, and the
//! [`JobDefinition`] it registers through `inventory`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backoff::Backoff;
use crate::context::JobContext;
use crate::outcome::JobError;

/// A job type, implemented by the type `#[job]` generates (named like the
/// function). It is the `T` of [`Client::enqueue::<T>()`](crate::Client::enqueue):
/// the payload type checks the call at compile time.
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
    const VISIBILITY_MS: u64;
    /// The longest a run may take, if limited.
    const TIMEOUT_MS: Option<u64>;
    /// How long a failed attempt waits before the next.
    const BACKOFF: Backoff = Backoff::DEFAULT;
}

/// The future a registered handler returns: the result as JSON, or the error.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<String, JobError>> + Send>>;

/// A registered handler: decodes the payload JSON and runs the job.
pub type HandlerFn = fn(&str, JobContext) -> HandlerFuture;

/// A job as registered by `#[job]`: its settings and its handler.
#[derive(Clone, Copy)]
pub struct JobDefinition {
    name: &'static str,
    queue: &'static str,
    module_path: &'static str,
    max_attempts: u32,
    visibility_ms: u64,
    timeout_ms: Option<u64>,
    backoff: Backoff,
    handler: HandlerFn,
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
            visibility_ms: T::VISIBILITY_MS,
            timeout_ms: T::TIMEOUT_MS,
            backoff: T::BACKOFF,
            handler,
        }
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

    /// The lease length in ms.
    pub fn visibility_ms(&self) -> u64 {
        self.visibility_ms
    }

    /// The longest a run may take, in ms, if limited.
    pub fn timeout_ms(&self) -> Option<u64> {
        self.timeout_ms
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
            .field("visibility_ms", &self.visibility_ms)
            .field("timeout_ms", &self.timeout_ms)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

inventory::collect!(JobDefinition);
