//! [`on_outcome`]: a layer made from a closure.

use std::convert::Infallible;
use std::fmt;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tower::Service;

use super::{JobOutcome, JobRequest};
use crate::context::JobContext;
use crate::definition::JobDefinition;

/// A layer that calls `f` with every run's request and outcome once it
/// ends, before the runner writes it: error reporting, logging, counting.
/// `f` may replace the outcome.
///
/// ```
/// use jobqueue::middleware::{on_outcome, JobOutcome};
///
/// # fn build(client: jobqueue::Client) -> jobqueue::Result<()> {
/// let runner = jobqueue::Runner::builder(client)
///     .layer(on_outcome(|info, outcome| {
///         if let JobOutcome::Panicked(message) = &outcome {
///             eprintln!("job {} panicked: {message}", info.ctx().id());
///         }
///         outcome
///     }))
///     .build()?;
/// # Ok(()) }
/// ```
pub fn on_outcome<F>(f: F) -> OnOutcomeLayer<F>
where
    F: Fn(&JobInfo, JobOutcome) -> JobOutcome + Clone + Send + Sync + 'static,
{
    OnOutcomeLayer { f }
}

/// What [`on_outcome`]'s closure knows of the run: the request's context
/// and definition (the payload is gone by then).
#[derive(Debug, Clone)]
pub struct JobInfo {
    ctx: JobContext,
    definition: JobDefinition,
}

impl JobInfo {
    /// The run's context (id, queue, attempt).
    pub fn ctx(&self) -> &JobContext {
        &self.ctx
    }

    /// The job's registered name.
    pub fn name(&self) -> &'static str {
        self.definition.name()
    }

    /// The job's definition.
    pub fn definition(&self) -> &JobDefinition {
        &self.definition
    }
}

/// The layer [`on_outcome`] makes.
#[derive(Clone)]
pub struct OnOutcomeLayer<F> {
    f: F,
}

impl<F> fmt::Debug for OnOutcomeLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnOutcomeLayer").finish_non_exhaustive()
    }
}

impl<S, F: Clone> tower::Layer<S> for OnOutcomeLayer<F> {
    type Service = OnOutcome<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        OnOutcome {
            inner,
            f: self.f.clone(),
        }
    }
}

/// The service of [`OnOutcomeLayer`].
#[derive(Clone)]
pub struct OnOutcome<S, F> {
    inner: S,
    f: F,
}

impl<S, F> fmt::Debug for OnOutcome<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnOutcome").finish_non_exhaustive()
    }
}

impl<S, F> Service<JobRequest> for OnOutcome<S, F>
where
    S: Service<JobRequest, Response = JobOutcome, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    F: Fn(&JobInfo, JobOutcome) -> JobOutcome + Clone + Send + Sync + 'static,
{
    type Response = JobOutcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, std::result::Result<JobOutcome, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: JobRequest) -> Self::Future {
        let info = JobInfo {
            ctx: request.ctx.clone(),
            definition: request.definition,
        };
        let run = self.inner.call(request);
        let f = self.f.clone();
        Box::pin(async move {
            let outcome = run.await?;
            Ok(f(&info, outcome))
        })
    }
}
