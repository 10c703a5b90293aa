//! The claim loop of one queue: claims jobs only when slots are free to run
//! them, as many per round trip as there are free slots, and blocks on a
//! connection of its own while the queue is idle, holding no slot.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::slot::{Slot, slot, try_slot};
use super::{QueueRt, Shared, execute};
use crate::queue::ClaimedJob;
use crate::retry::Backoff;

/// Most jobs one claim round trip asks for.
const MAX_BATCH: usize = 100;

pub(super) async fn claim_loop(
    shared: Arc<Shared>,
    q: Arc<QueueRt>,
    jobs: TaskTracker,
    shutdown: CancellationToken,
    interrupt: CancellationToken,
) {
    let name = q.queue.name().to_owned();
    let mut failures: u32 = 0;
    loop {
        let Some(first) = slot(&shared, &q, &shutdown).await else {
            break;
        };
        let mut slots = vec![first];
        // Under load slots free one at a time; letting the tasks that are
        // finishing run first turns many one-job claims into a few batches.
        let target = (shared.concurrency / 4).clamp(1, 16);
        for _ in 0..4 {
            while slots.len() < MAX_BATCH {
                match try_slot(&shared, &q) {
                    Some(slot) => slots.push(slot),
                    None => break,
                }
            }
            if slots.len() >= target {
                break;
            }
            tokio::task::yield_now().await;
        }
        match q.queue.claim_now(slots.len()).await {
            Ok((_, true)) => {
                // Paused: look again shortly, holding no slot.
                drop(slots);
                tokio::select! {
                    () = tokio::time::sleep(crate::queue::PAUSED_POLL * 2) => {}
                    () = shutdown.cancelled() => break,
                }
            }
            Ok((claimed, false)) if claimed.is_empty() => {
                failures = 0;
                drop(slots);
                // Idle: wait for work without holding a slot.
                let adopted = if q.queue.connection().legacy_claim() {
                    // Redis < 6.2: the wait itself moves a job, so it is never
                    // abandoned half way; it ends within claim_block anyway.
                    q.queue.wait_for_job(shared.claim_block).await
                } else {
                    tokio::select! {
                        waited = q.queue.wait_for_job(shared.claim_block) => waited,
                        () = shutdown.cancelled() => break,
                    }
                };
                match adopted {
                    Ok(Some(adopted)) => {
                        // Redis < 6.2: the wait itself took the job. It runs
                        // only if a slot is free now: waiting for one would
                        // let its unrenewed lease run out.
                        for job in adopted {
                            match try_slot(&shared, &q) {
                                Some(slot) if !shutdown.is_cancelled() => {
                                    spawn(&shared, &q, &jobs, &interrupt, job, slot);
                                }
                                _ => hand_back(&q, &job).await,
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        failures += 1;
                        pause_after_error(&name, &e, failures, &shutdown).await;
                    }
                }
            }
            Ok((claimed, false)) => {
                failures = 0;
                if shutdown.is_cancelled() {
                    for job in &claimed {
                        hand_back(&q, job).await;
                    }
                    break;
                }
                for (job, slot) in claimed.into_iter().zip(slots) {
                    spawn(&shared, &q, &jobs, &interrupt, job, slot);
                }
            }
            Err(e) => {
                drop(slots);
                failures += 1;
                pause_after_error(&name, &e, failures, &shutdown).await;
            }
        }
    }
    tracing::debug!(queue = name, "claim loop stopped");
}

fn spawn(
    shared: &Arc<Shared>,
    q: &Arc<QueueRt>,
    jobs: &TaskTracker,
    interrupt: &CancellationToken,
    job: ClaimedJob,
    slot: Slot,
) {
    jobs.spawn(execute::execute(
        Arc::clone(shared),
        Arc::clone(q),
        job,
        slot,
        interrupt.clone(),
    ));
}

/// Gives a job claimed during shutdown straight back.
async fn hand_back(q: &QueueRt, job: &ClaimedJob) {
    if let Err(e) = q.queue.release(job).await {
        tracing::warn!(queue = q.queue.name(), job = job.id(), error = %e, "could not hand back a job claimed during shutdown; its lease will expire");
    }
}

/// Logs a Redis error and backs off (up to a few seconds), so a runner never
/// spins while Redis is down.
async fn pause_after_error(
    queue: &str,
    error: &crate::error::Error,
    failures: u32,
    shutdown: &CancellationToken,
) {
    let pause = Backoff::LOOP.delay(failures.saturating_sub(1));
    tracing::warn!(queue, error = %error, retry_in = ?pause, "claiming failed; Redis unreachable?");
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        () = shutdown.cancelled() => {}
    }
}
