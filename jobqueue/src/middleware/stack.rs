//! The runner's stack of layers around [`JobService`], boxed once.

use std::convert::Infallible;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tower::Service;
use tower::util::BoxCloneSyncService;

use super::{JobOutcome, JobRequest, JobService, panic_message, run_handler};
use crate::outcome::JobError;

/// A runner's stack of services, boxed: what each layer wraps.
pub type BoxJobService = BoxCloneSyncService<JobRequest, JobOutcome, Infallible>;

/// A stack of layers around [`JobService`], or none (the handler is called
/// directly, with no boxing).
#[derive(Clone, Default)]
pub(crate) struct Stack {
    service: Option<BoxJobService>,
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("layered", &self.service.is_some())
            .finish()
    }
}

impl Stack {
    /// The stack with `layer` around it. A layer whose service fails (its
    /// error type is not `Infallible`, tower's `Timeout` for one) fails the
    /// run with that error, retried like any error.
    pub(crate) fn push<L>(&mut self, layer: L)
    where
        L: tower::Layer<BoxJobService>,
        L::Service: Service<JobRequest, Response = JobOutcome> + Clone + Send + Sync + 'static,
        <L::Service as Service<JobRequest>>::Error: Into<tower::BoxError>,
        <L::Service as Service<JobRequest>>::Future: Send + 'static,
    {
        let inner = self
            .service
            .take()
            .unwrap_or_else(|| BoxCloneSyncService::new(JobService));
        self.service = Some(BoxCloneSyncService::new(Absorb {
            inner: layer.layer(inner),
            not_ready: None,
        }));
    }

    /// Runs `request` through the stack. A panic in a layer ends the run
    /// as a panic (the handler's own panics are caught inside).
    pub(crate) async fn call(&self, request: JobRequest) -> JobOutcome {
        use tower::ServiceExt;
        match &self.service {
            None => run_handler(request).await,
            Some(service) => {
                let run = service.clone().oneshot(request);
                match AssertUnwindSafe(run).catch_unwind().await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(never)) => match never {},
                    Err(panic) => JobOutcome::Panicked(panic_message(&*panic)),
                }
            }
        }
    }
}

/// A layer's service whose errors become the run's failure, so the stack
/// is infallible.
#[derive(Clone)]
struct Absorb<S> {
    inner: S,
    /// The error the inner service's `poll_ready` returned: the next call
    /// fails with it instead of calling a service that is not ready.
    not_ready: Option<String>,
}

impl<S> Service<JobRequest> for Absorb<S>
where
    S: Service<JobRequest, Response = JobOutcome>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = JobOutcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, std::result::Result<JobOutcome, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.not_ready = Some(e.into().to_string());
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, request: JobRequest) -> Self::Future {
        if let Some(e) = self.not_ready.take() {
            return Box::pin(std::future::ready(Ok(middleware_failed(&e))));
        }
        let run = self.inner.call(request);
        Box::pin(async move {
            Ok(run
                .await
                .unwrap_or_else(|e| middleware_failed(&e.into().to_string())))
        })
    }
}

/// The outcome of a run whose layer failed.
fn middleware_failed(error: &str) -> JobOutcome {
    JobOutcome::Failed(JobError::retry(format!("middleware: {error}")))
}
