//! Running one job in a test, through the runner's own path but without
//! Redis.

use serde_json::value::RawValue;

use crate::context::JobContext;
use crate::definition::{Job, JobDefinition};
use crate::error::Error;
use crate::middleware::{JobOutcome, JobRequest, Stops, run_handler};
use crate::outcome::JobError;

/// Runs job `T` with `payload` as a runner would, without Redis: the
/// payload goes through its JSON round trip, the handler runs with
/// [`JobContext::for_test`], its output is encoded, its error classified
/// (its [`Disposition`](crate::outcome::Disposition)), a panic caught and
/// the job's `timeout` enforced. The outcome says how it ended.
///
/// ```
/// use jobqueue::{job, testing, JobError};
///
/// #[job(max_attempts = 5)]
/// async fn divide(args: (i64, i64)) -> Result<i64, JobError> {
///     match args.1 {
///         0 => Err(JobError::permanent("division by zero")),
///         d => Ok(args.0 / d),
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let outcome = testing::run::<divide>((84, 2)).await;
/// assert_eq!(outcome.output::<i64>().unwrap(), 42);
///
/// let outcome = testing::run::<divide>((1, 0)).await;
/// assert_eq!(
///     outcome.error().unwrap().disposition(),
///     jobqueue::outcome::Disposition::Permanent
/// );
/// # }
/// ```
pub async fn run<T: Job>(payload: T::Payload) -> JobOutcome {
    run_with::<T>(payload, JobContext::for_test()).await
}

/// [`run`] with a context of the test's own: another attempt, an id, a
/// cancellation token the test cancels (the run then ends as
/// [`JobOutcome::Cancelled`] once the handler returns or its grace ends),
/// a client for the handler to enqueue through.
pub async fn run_with<T: Job>(payload: T::Payload, ctx: JobContext) -> JobOutcome {
    let definition = match registered(T::NAME) {
        Ok(definition) => definition,
        Err(error) => return JobOutcome::Failed(error),
    };
    let json = match serde_json::to_string(&payload).map_err(Error::from) {
        Ok(json) => json,
        Err(e) => return JobOutcome::Failed(JobError::permanent(e)),
    };
    run_json(definition, &json, ctx).await
}

/// Runs `definition`'s handler on payload JSON `json`, as the runner does.
pub(crate) async fn run_json(definition: JobDefinition, json: &str, ctx: JobContext) -> JobOutcome {
    let payload = match RawValue::from_string(json.to_owned()) {
        Ok(payload) => payload,
        Err(e) => {
            return JobOutcome::Failed(JobError::permanent(format!(
                "the payload is not JSON: {e}"
            )));
        }
    };
    let mut ctx = ctx;
    if ctx.queue().is_empty() {
        ctx = ctx.with_queue(definition.queue());
    }
    if ctx.name().is_empty() {
        ctx = ctx.with_name(definition.name());
    }
    let stops = Stops {
        cancelled: ctx.cancellation().clone(),
        context: ctx.cancellation().clone(),
        ..Stops::default()
    };
    run_handler(JobRequest::owned(ctx, definition, payload, stops)).await
}

/// The definition registered as `name`, or the error a run without a
/// handler ends with. It scans what `#[job]` registered rather than building
/// a [`Registry`](crate::registry::Registry): that refuses two jobs of one
/// name, and a binary of merged doctests (edition 2024) may well hold two
/// examples' `send_welcome`.
pub(crate) fn registered(name: &str) -> Result<JobDefinition, JobError> {
    inventory::iter::<JobDefinition>
        .into_iter()
        .find(|d| d.name() == name)
        .copied()
        .ok_or_else(|| {
            JobError::permanent(format!(
                "no handler is registered for job {name:?}: is it a #[job] linked into this test?"
            ))
        })
}
