//! Running one job: route it, run its handler in a span, and write the
//! outcome. A panic is caught and counts as a failure; a run past the job's
//! timeout is cancelled and counts as a failure; a shutdown past its grace
//! cancels the run and hands the job back without charging the attempt; a
//! run whose lease is lost is cancelled and writes nothing; a run whose job
//! was cancelled (a lease renewal says so) is stopped, and its job ends as
//! cancelled.
//!
//! The progress a run reported and no lease renewal carried yet is written
//! (one renewal of its own) before its outcome, so the stored progress is
//! the last value the job reported.
//!
//! Cancelling a run cancels its `JobContext` first and keeps polling the
//! handler for up to `CANCEL_GRACE` (middleware.rs), so a handler waiting on
//! `ctx.cancelled()` sees it and can stop cleanly; only then is it dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::acks::Finished;
use super::meter::Meter;
use super::progress::ProgressBuffer;
use super::slot::Slot;
use super::{QueueRt, Shared};
use crate::backoff::Backoff;
use crate::context::JobContext;
use crate::middleware::{JobOutcome, JobRequest, Stops};
use crate::outcome::{Disposition, JobError};
use crate::queue::{Ack, ClaimedJob, Settlement};
use crate::retry;

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
        attempt = job.attempt(),
        name = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        messaging.system = tracing::field::Empty,
        messaging.operation.name = tracing::field::Empty,
        messaging.destination.name = tracing::field::Empty,
        messaging.message.id = tracing::field::Empty,
    );
    crate::otel::continue_trace(&span, &q.logical, job.record());
    run(&shared, &q, Arc::new(job), slot, &interrupt)
        .instrument(span)
        .await;
}

async fn run(
    shared: &Shared,
    q: &QueueRt,
    job: Arc<ClaimedJob>,
    slot: Slot,
    interrupt: &CancellationToken,
) {
    let def = match shared.registry.route(&q.logical, job.record()) {
        Ok(def) => *def,
        Err(e) => {
            tracing::error!(error = %e, "no handler for the job; failing it");
            let outcome = JobOutcome::Failed(JobError::permanent(e));
            let meter = shared.meter(None, &q.logical);
            finish(q, job, outcome, Backoff::None, slot, interrupt, meter).await;
            return;
        }
    };
    tracing::Span::current().record("name", def.name());
    let meter = shared.meter(Some(def.name()), &q.logical);
    let progress = Arc::new(ProgressBuffer::for_claim(q.queue.clone(), Arc::clone(&job)));
    let ticket = q.in_flight.insert(&job, &progress);
    shared.started(&job);
    let cancel = CancellationToken::new();
    let max_attempts = job
        .record()
        .max_attempts()
        .ok()
        .flatten()
        .unwrap_or(q.queue.options().max_attempts);
    let mut ctx = JobContext::new(job.id())
        .with_queue(&q.logical)
        .with_name(def.name())
        .with_attempt(job.attempt(), max_attempts)
        .with_claim_token(job.token())
        .with_cancellation(cancel.clone())
        .with_shared_client(Arc::clone(&shared.client))
        .with_progress_buffer(Arc::clone(&progress));
    if let Ok(Some(time)) = job.record().enqueued_at() {
        ctx = ctx.with_enqueued_at(time);
    }
    tracing::debug!("job started");
    let stops = Stops {
        interrupt: interrupt.clone(),
        lease_lost: ticket.lost.clone(),
        cancelled: ticket.cancel.clone(),
        context: cancel,
    };
    let running = meter.started(&job);
    let request = JobRequest::claimed(ctx, def, Arc::clone(&job), stops);
    let outcome = shared.stack.call(request).await;
    drop(running);
    if !matches!(outcome, JobOutcome::LeaseLost) {
        flush_last_progress(&progress).await;
    }
    ticket.settling.store(true, Ordering::SeqCst);
    finish(q, job, outcome, def.backoff(), slot, interrupt, meter).await;
}

/// How long writing a run's last progress may hold up its outcome.
const LAST_PROGRESS_WITHIN: Duration = Duration::from_secs(2);

/// Writes the progress a run reported that no renewal carried yet (nothing
/// to do, and no round trip, when there is none). Bounded in time: the
/// outcome matters more than the progress, which stays unwritten when Redis
/// does not answer.
async fn flush_last_progress(progress: &ProgressBuffer) {
    match tokio::time::timeout(LAST_PROGRESS_WITHIN, progress.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "the last progress reported was not written"),
        Err(_) => tracing::debug!("the last progress reported was not written in time"),
    }
}

/// Hands a completed or failed job's outcome to the claim loop, which writes
/// it in its next settle call; the job stays among the running ones (its
/// lease renewed) until then. A job handed back at shutdown is released
/// here, and so is every outcome once the claim loop has stopped.
async fn finish(
    q: &QueueRt,
    job: Arc<ClaimedJob>,
    outcome: JobOutcome,
    policy: Backoff,
    slot: Slot,
    interrupt: &CancellationToken,
    meter: Meter,
) {
    let error = match outcome {
        JobOutcome::Completed(result) => {
            let settlement = Settlement::Complete(result);
            return hand_over(q, job, settlement, slot, interrupt, meter).await;
        }
        // Any settlement ends a job whose cancel was requested as
        // cancelled; failing it for good says so if the flag were gone.
        JobOutcome::Cancelled => {
            let settlement = Settlement::Fail {
                error: "cancelled while running".to_owned(),
            };
            return hand_over(q, job, settlement, slot, interrupt, meter).await;
        }
        JobOutcome::Interrupted => {
            write(q, &job, None, interrupt, &meter).await;
            q.in_flight.remove(&job);
            return;
        }
        JobOutcome::LeaseLost => {
            q.in_flight.remove(&job);
            return;
        }
        JobOutcome::Failed(error) => error,
        JobOutcome::Panicked(message) => {
            JobError::retry(format!("the handler panicked: {message}"))
        }
        JobOutcome::TimedOut(limit) => {
            JobError::retry(format!("timed out after {} ms", limit.as_millis()))
        }
    };
    match failure(&job, &error, policy) {
        Some(settlement) => hand_over(q, job, settlement, slot, interrupt, meter).await,
        None => {
            tracing::warn!(reason = error.message(), "job abandoned: left to the sweep");
            q.in_flight.remove(&job);
        }
    }
}

/// Queues a settlement for the claim loop, or writes it here once the loop
/// has stopped (shutdown).
async fn hand_over(
    q: &QueueRt,
    job: Arc<ClaimedJob>,
    settlement: Settlement,
    slot: Slot,
    interrupt: &CancellationToken,
    meter: Meter,
) {
    let finished = Finished {
        job,
        settlement,
        slot,
        span: tracing::Span::current(),
        tries: 0,
        meter,
    };
    if let Some(finished) = q.acks.push(finished) {
        write(
            q,
            &finished.job,
            Some(&finished.settlement),
            interrupt,
            &finished.meter,
        )
        .await;
        q.in_flight.remove(&finished.job);
    }
}

/// The settle call that records a failure, by its disposition (none for a
/// run abandoned to the sweep, a test hook).
fn failure(job: &ClaimedJob, error: &JobError, policy: Backoff) -> Option<Settlement> {
    let message = error.message().to_owned();
    Some(match error.disposition() {
        #[cfg(feature = "test-hooks")]
        Disposition::Abandon => return None,
        Disposition::Permanent => Settlement::Fail { error: message },
        Disposition::Snooze(delay) => Settlement::Snooze { delay },
        Disposition::RateLimited(retry_after) => Settlement::RateLimited { retry_after },
        Disposition::RetryAfter(delay) => Settlement::Retry {
            error: message,
            delay,
        },
        Disposition::Retry => Settlement::Retry {
            error: message,
            delay: policy.delay(job.attempt()),
        },
    })
}

/// Logs what writing an outcome did, in the job's span: a settlement, or
/// (`None`) the hand-back of a job interrupted by shutdown.
pub(super) fn log_written(settlement: Option<&Settlement>, ack: Ack) {
    match (settlement, ack) {
        (_, Ack::LeaseLost) => tracing::warn!(
            "the lease was lost before the outcome was recorded; the job will run again"
        ),
        (_, Ack::Duplicate) => tracing::debug!("outcome already recorded"),
        (_, Ack::Cancelled) => tracing::info!("job ended as cancelled"),
        (_, Ack::Snoozed) => tracing::debug!("job snoozed"),
        (None, _) => tracing::info!("job interrupted by shutdown; handed back to pending"),
        (Some(Settlement::Complete(_)), _) => tracing::debug!("job completed"),
        (Some(Settlement::Retry { error, .. }), Ack::Retrying) => {
            tracing::warn!(error = %error, "job failed; will retry")
        }
        (Some(Settlement::Retry { error, .. } | Settlement::Fail { error }), _) => {
            tracing::error!(error = %error, "job failed for good")
        }
        (Some(Settlement::Snooze { .. } | Settlement::RateLimited { .. }), _) => {
            tracing::error!("job snoozed once too often; failed for good")
        }
    }
}

/// How many times an outcome write is tried before the job is left to the
/// sweep (its lease runs out and it runs again), here and in the claim
/// loop's batched writes alike.
pub(super) const MAX_WRITE_TRIES: u32 = 20;

/// Writes one outcome (a settlement, or `None`: hand the job back), retrying
/// while Redis is unreachable: the lease keeps being renewed meanwhile, and
/// if it runs out first the sweep takes the job back and this write is
/// refused (the job runs again: at least once).
async fn write(
    q: &QueueRt,
    job: &ClaimedJob,
    settlement: Option<&Settlement>,
    interrupt: &CancellationToken,
    meter: &Meter,
) {
    let mut failures = 0;
    loop {
        let written = match settlement {
            Some(settlement) => q.queue.settle(job, settlement).await,
            None => q.queue.release(job).await,
        };
        match written {
            Ok(ack) => {
                log_written(settlement, ack);
                meter.written(ack);
                return;
            }
            Err(e) if failures < MAX_WRITE_TRIES && !(interrupt.is_cancelled() && failures > 2) => {
                failures += 1;
                tracing::warn!(error = %e, "could not record the outcome; retrying");
                tokio::time::sleep(retry::Backoff::COMMAND.delay(failures + 2)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "gave up recording the outcome; the lease will expire and the job run again");
                return;
            }
        }
    }
}
