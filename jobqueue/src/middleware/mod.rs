//! Middleware: code that wraps every job's run without editing each handler
//! (timing, a database transaction, a tenant guard, error reporting), as
//! tower [`Layer`](tower::Layer)s, the way axum users wrap their routes.
//!
//! A runner calls its jobs through a tower [`Service`] of
//! [`JobRequest`] to [`JobOutcome`]. The innermost service, [`JobService`],
//! runs the handler and turns everything that can end a run into an
//! outcome: its result, its error, a panic, its timeout, a cancel of the
//! job, the runner's shutdown, a lost lease. So a layer added with
//! [`RunnerBuilder::layer`](crate::runner::RunnerBuilder::layer) sees every
//! run end, however it ends, and can change the outcome (turn an error into
//! a permanent one, say) or not call the handler at all (a guard that
//! refuses the job).
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! use jobqueue::middleware::{JobOutcome, JobRequest};
//! use tower::{Service, ServiceExt};
//!
//! /// Counts the runs that did not complete.
//! #[derive(Clone)]
//! struct CountFailures<S> {
//!     inner: S,
//!     failures: Arc<AtomicU64>,
//! }
//!
//! impl<S> Service<JobRequest> for CountFailures<S>
//! where
//!     S: Service<JobRequest, Response = JobOutcome, Error = Infallible> + Clone + Send + 'static,
//!     S::Future: Send,
//! {
//!     type Response = JobOutcome;
//!     type Error = Infallible;
//!     type Future = futures_util::future::BoxFuture<'static, Result<JobOutcome, Infallible>>;
//!
//!     fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
//!         self.inner.poll_ready(cx)
//!     }
//!
//!     fn call(&mut self, request: JobRequest) -> Self::Future {
//!         let inner = self.inner.clone();
//!         let failures = Arc::clone(&self.failures);
//!         Box::pin(async move {
//!             let outcome = inner.oneshot(request).await?;
//!             if !outcome.is_completed() {
//!                 failures.fetch_add(1, Ordering::Relaxed);
//!             }
//!             Ok(outcome)
//!         })
//!     }
//! }
//!
//! # fn build(client: jobqueue::Client) -> jobqueue::Result<()> {
//! let failures = Arc::new(AtomicU64::new(0));
//! let layer = tower::layer::layer_fn({
//!     let failures = Arc::clone(&failures);
//!     move |inner| CountFailures { inner, failures: Arc::clone(&failures) }
//! });
//! let runner = jobqueue::Runner::builder(client).layer(layer).build()?;
//! # Ok(()) }
//! ```
//!
//! For the common cases, [`on_outcome`] makes a layer from a closure.

use std::convert::Infallible;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::context::JobContext;
use crate::definition::JobDefinition;
use crate::error::{Error, Result};
use crate::outcome::JobError;
use crate::queue::ClaimedJob;

mod on_outcome;
mod stack;

pub use on_outcome::{JobInfo, OnOutcome, OnOutcomeLayer, on_outcome};
pub use stack::BoxJobService;
pub(crate) use stack::Stack;

/// How long a handler whose run was stopped (timeout, shutdown, lost lease,
/// cancel) gets to return after its context says stop, before it is
/// dropped. A handler that watches its context returns at its next poll;
/// one that ignores it keeps its slot this much longer than it would have.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// One run of one job, as the services of a runner's stack see it.
pub struct JobRequest {
    ctx: JobContext,
    definition: JobDefinition,
    payload: Payload,
    stops: Stops,
}

/// Where the payload JSON is: in the claimed job (no copy), or owned (a
/// test's run).
enum Payload {
    Claimed(Arc<ClaimedJob>),
    #[cfg(feature = "testing")]
    Owned(Box<RawValue>),
}

/// What stops a run before its handler returns, besides its timeout: the
/// runner's shutdown past its grace, a lost lease, a cancel of the job.
#[derive(Clone, Default)]
pub(crate) struct Stops {
    pub(crate) interrupt: CancellationToken,
    pub(crate) lease_lost: CancellationToken,
    pub(crate) cancelled: CancellationToken,
    /// Cancelled when the run ends, whatever ended it: the handler's
    /// `JobContext::cancelled`.
    pub(crate) context: CancellationToken,
}

impl fmt::Debug for JobRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobRequest")
            .field("job", &self.definition.name())
            .field("queue", &self.ctx.queue())
            .field("id", &self.ctx.id())
            .field("attempt", &self.ctx.attempt())
            .finish_non_exhaustive()
    }
}

impl JobRequest {
    /// A run of a claimed job.
    pub(crate) fn claimed(
        ctx: JobContext,
        definition: JobDefinition,
        job: Arc<ClaimedJob>,
        stops: Stops,
    ) -> Self {
        Self {
            ctx,
            definition,
            payload: Payload::Claimed(job),
            stops,
        }
    }

    /// A run with its own payload and stops (a test's).
    #[cfg(feature = "testing")]
    pub(crate) fn owned(
        ctx: JobContext,
        definition: JobDefinition,
        payload: Box<RawValue>,
        stops: Stops,
    ) -> Self {
        Self {
            ctx,
            definition,
            payload: Payload::Owned(payload),
            stops,
        }
    }

    /// The context the handler gets: the job's id, queue, name, attempt.
    pub fn ctx(&self) -> &JobContext {
        &self.ctx
    }

    /// The job's registered definition: its name, queue, limits.
    pub fn definition(&self) -> &JobDefinition {
        &self.definition
    }

    /// The job's registered name.
    pub fn name(&self) -> &'static str {
        self.definition.name()
    }

    /// The queue the job came from (the logical queue of a shard).
    pub fn queue(&self) -> &str {
        self.ctx.queue()
    }

    /// The payload, as the JSON stored with the job.
    pub fn payload_json(&self) -> &RawValue {
        match &self.payload {
            Payload::Claimed(job) => job.payload_json(),
            #[cfg(feature = "testing")]
            Payload::Owned(json) => json,
        }
    }

    /// The payload decoded as `T` (a tenant id for a guard, say).
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(self.payload_json().get()).map_err(|e| {
            Error::malformed(
                "payload",
                format!("job {}: not the expected JSON: {e}", self.ctx.id()),
            )
        })
    }
}

/// How a run ended, as the runner's services return it. The runner writes
/// it: [`Completed`](Self::Completed) completes the job,
/// [`Failed`](Self::Failed) goes by its error's
/// [`Disposition`](crate::outcome::Disposition), a panic and a timeout are
/// retried like any error, a cancelled job ends as cancelled, an
/// interrupted one goes back to pending without charging the attempt, and
/// a run whose lease was lost writes nothing (the job runs again).
#[derive(Debug)]
#[non_exhaustive]
pub enum JobOutcome {
    /// The handler returned its output, serialized as JSON.
    Completed(Box<RawValue>),
    /// The handler returned an error.
    Failed(JobError),
    /// The handler panicked, with this message.
    Panicked(String),
    /// The run passed the job's `timeout`.
    TimedOut(Duration),
    /// A cancel of the job was requested while it ran.
    Cancelled,
    /// The runner shut down past its grace period.
    Interrupted,
    /// The run's lease ran out and the job was taken back by a sweep.
    LeaseLost,
}

impl JobOutcome {
    /// True when the handler completed.
    pub fn is_completed(&self) -> bool {
        matches!(self, Self::Completed(_))
    }

    /// A short name for the outcome, fit for a metric label or a log field:
    /// `completed`, `error`, `panic`, `timeout`, `cancelled`, `interrupted`
    /// or `lease_lost`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Completed(_) => "completed",
            Self::Failed(_) => "error",
            Self::Panicked(_) => "panic",
            Self::TimedOut(_) => "timeout",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
            Self::LeaseLost => "lease_lost",
        }
    }

    /// The handler's output decoded as `O` (usually the job's `Output`
    /// type); an error naming the outcome when the run did not complete.
    pub fn output<O: DeserializeOwned>(&self) -> Result<O> {
        match self {
            Self::Completed(json) => serde_json::from_str(json.get()).map_err(|e| {
                Error::malformed(
                    "result",
                    format!("{} is not the expected output: {e}", json.get()),
                )
            }),
            other => Err(Error::malformed(
                "result",
                format!("the run did not complete: {other:?}"),
            )),
        }
    }

    /// The error of a failed run (`None` for the other outcomes: a panic
    /// or a timeout is recorded as a retryable error by the runner).
    pub fn error(&self) -> Option<&JobError> {
        match self {
            Self::Failed(error) => Some(error),
            _ => None,
        }
    }
}

/// The innermost service of every runner: runs the job's handler with its
/// payload and context, and ends it early when its timeout passes or the
/// run is stopped (the context is cancelled first, and the handler gets a
/// second to return before it is dropped).
#[derive(Debug, Clone, Copy, Default)]
pub struct JobService;

impl Service<JobRequest> for JobService {
    type Response = JobOutcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, std::result::Result<JobOutcome, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: JobRequest) -> Self::Future {
        Box::pin(run_handler(request).map(Ok))
    }
}

/// What [`JobService`] does, callable without boxing when no layer is set.
pub(crate) async fn run_handler(request: JobRequest) -> JobOutcome {
    let JobRequest {
        ctx,
        definition,
        payload,
        stops,
    } = request;
    let json = match &payload {
        Payload::Claimed(job) => job.payload_json().get(),
        #[cfg(feature = "testing")]
        Payload::Owned(json) => json.get(),
    };
    let handler = AssertUnwindSafe(definition.run(json, ctx)).catch_unwind();
    tokio::pin!(handler);
    let timeout = definition.timeout();
    let time_up = async {
        match timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    // Either the handler returned, or the run was stopped, for the reason
    // that becomes its outcome.
    let ran = tokio::select! {
        ran = &mut handler => Ok(ran),
        () = time_up => Err(JobOutcome::TimedOut(timeout.unwrap_or_default())),
        () = stops.interrupt.cancelled() => Err(JobOutcome::Interrupted),
        () = stops.lease_lost.cancelled() => Err(JobOutcome::LeaseLost),
        () = stops.cancelled.cancelled() => Err(JobOutcome::Cancelled),
    };
    // Whatever ended the run, the handler's context says stop.
    stops.context.cancel();
    match ran {
        Ok(Ok(Ok(result))) => JobOutcome::Completed(result),
        Ok(Ok(Err(error))) => JobOutcome::Failed(error),
        Ok(Err(panic)) => JobOutcome::Panicked(panic_message(&*panic)),
        Err(stopped) => {
            // The handler is still running: it sees the cancellation only if
            // it is polled again, so it gets a grace to return (what it
            // returns is not used: the reason it was stopped is the outcome),
            // and is dropped if it does not.
            if tokio::time::timeout(CANCEL_GRACE, &mut handler)
                .await
                .is_err()
            {
                tracing::warn!(
                    grace = ?CANCEL_GRACE,
                    "the handler ignored its cancellation; dropped"
                );
            }
            stopped
        }
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}
