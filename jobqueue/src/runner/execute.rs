//! Running one job: route it, run its handler in a span, and write the
//! outcome. A panic is caught and counts as a failure; a run past the job's
//! timeout is cancelled and counts as a failure; a shutdown past its grace
//! cancels the run and hands the job back without charging the attempt.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::claim::Slot;
use super::{QueueRt, Shared};
use crate::backoff::Backoff;
use crate::connection::backoff;
use crate::context::JobContext;
use crate::job::{Ack, ClaimedJob};
use crate::outcome::{ErrorKind, JobError};

/// How a run ended.
enum Outcome {
    /// The handler's result, checked to be JSON once.
    Completed(Box<RawValue>),
    Failed(JobError),
    Interrupted,
    LeaseLost,
}

pub(super) async fn execute(
    shared: Arc<Shared>,
    q: Arc<QueueRt>,
    job: ClaimedJob,
    slot: Slot,
    interrupt: CancellationToken,
) {
    let span = tracing::info_span!(
        "job",
        queue = q.queue.name(),
        id = job.id(),
        attempt = job.attempts(),
        name = tracing::field::Empty,
    );
    run(&shared, &q, &Arc::new(job), &interrupt)
        .instrument(span)
        .await;
    drop(slot);
}

async fn run(shared: &Shared, q: &QueueRt, job: &Arc<ClaimedJob>, interrupt: &CancellationToken) {
    let def = match shared.registry.route(&q.logical, job.record()) {
        Ok(def) => *def,
        Err(e) => {
            tracing::error!(error = %e, "no handler for the job; failing it");
            write(
                q,
                job,
                &Outcome::Failed(JobError::permanent(e)),
                Backoff::None,
                interrupt,
            )
            .await;
            return;
        }
    };
    tracing::Span::current().record("name", def.name());
    let ticket = q.in_flight.insert(job);
    shared.job_started.notify_one();
    let cancel = CancellationToken::new();
    let ctx = JobContext::new(job.id(), &q.logical, def.name(), job.attempts())
        .with_claim_token(job.token())
        .with_cancellation(cancel.clone());
    tracing::debug!("job started");
    let handler = AssertUnwindSafe(def.run(job.payload_json().get(), ctx)).catch_unwind();
    let timeout = def.timeout_ms().map(Duration::from_millis);
    let timed = async {
        match timeout {
            Some(limit) => tokio::time::timeout(limit, handler).await.ok(),
            None => Some(handler.await),
        }
    };
    let outcome = tokio::select! {
        ran = timed => match ran {
            Some(Ok(Ok(result))) => match RawValue::from_string(result) {
                Ok(json) => Outcome::Completed(json),
                Err(e) => Outcome::Failed(JobError::permanent(format!("the result is not JSON: {e}"))),
            },
            Some(Ok(Err(error))) => Outcome::Failed(error),
            Some(Err(panic)) => Outcome::Failed(JobError::retry(format!("the handler panicked: {}", panic_message(&*panic)))),
            None => Outcome::Failed(JobError::retry(format!(
                "timed out after {} ms", timeout.map_or(0, |t| t.as_millis())
            ))),
        },
        () = interrupt.cancelled() => Outcome::Interrupted,
        () = ticket.lost.cancelled() => Outcome::LeaseLost,
    };
    // Whatever ended the run, the handler's context says stop.
    cancel.cancel();
    ticket.settling.store(true, Ordering::SeqCst);
    write(q, job, &outcome, def.backoff(), interrupt).await;
    q.in_flight.remove(job);
}

/// Writes the outcome, retrying while Redis is unreachable: the lease keeps
/// being renewed meanwhile, and if it runs out first the sweep takes the job
/// back and this write is refused (the job runs again: at least once).
async fn write(
    q: &QueueRt,
    job: &ClaimedJob,
    outcome: &Outcome,
    policy: Backoff,
    interrupt: &CancellationToken,
) {
    let mut failures = 0;
    loop {
        let written = match outcome {
            Outcome::Completed(result) => q.queue.complete(job, result).await,
            Outcome::Failed(error) => match error.kind() {
                ErrorKind::Abandon => {
                    tracing::warn!(reason = error.message(), "job abandoned: left to the sweep");
                    return;
                }
                ErrorKind::Permanent => q.queue.fail_permanently(job, error.message()).await,
                ErrorKind::RetryAfter(delay) => {
                    q.queue.fail_with_delay(job, error.message(), delay).await
                }
                _ => {
                    q.queue
                        .fail_with_delay(job, error.message(), policy.delay(job.attempts()))
                        .await
                }
            },
            Outcome::Interrupted => q.queue.release(job).await,
            Outcome::LeaseLost => return,
        };
        match written {
            Ok(ack) => {
                log(outcome, ack);
                return;
            }
            Err(e) if failures < 20 && !(interrupt.is_cancelled() && failures > 2) => {
                failures += 1;
                tracing::warn!(error = %e, "could not record the outcome; retrying");
                tokio::time::sleep(backoff(failures + 2)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "gave up recording the outcome; the lease will expire and the job run again");
                return;
            }
        }
    }
}

fn log(outcome: &Outcome, ack: Ack) {
    match (outcome, ack) {
        (_, Ack::LeaseLost) => tracing::warn!(
            "the lease was lost before the outcome was recorded; the job will run again"
        ),
        (_, Ack::Duplicate) => tracing::debug!("outcome already recorded"),
        (Outcome::Completed(_), _) => tracing::debug!("job completed"),
        (Outcome::Failed(e), Ack::Retrying) => tracing::warn!(error = %e, "job failed; will retry"),
        (Outcome::Failed(e), _) => tracing::error!(error = %e, "job failed for good"),
        (Outcome::Interrupted, _) => {
            tracing::info!("job interrupted by shutdown; handed back to pending")
        }
        (Outcome::LeaseLost, _) => {}
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}
