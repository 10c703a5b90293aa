//! What a run reports to the `metrics` feature's recorder: a [`Meter`] per
//! run, holding the handles of its (queue, job). Without the feature it is
//! empty and every call compiles to nothing.

use crate::queue::{Ack, ClaimedJob};

/// The metric handles of one run's queue and job.
#[derive(Debug, Clone, Default)]
pub(super) struct Meter {
    #[cfg(feature = "metrics")]
    job: Option<std::sync::Arc<crate::metrics::JobMetrics>>,
}

/// A run in progress: counted in `jobqueue_running_jobs` and timed until
/// dropped.
#[must_use = "the run is counted as running until this is dropped"]
pub(super) struct Running {
    #[cfg(feature = "metrics")]
    started: Option<(
        std::sync::Arc<crate::metrics::JobMetrics>,
        std::time::Instant,
    )>,
}

impl Drop for Running {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        if let Some((job, started)) = self.started.take() {
            job.running.decrement(1.0);
            job.duration.record(started.elapsed().as_secs_f64());
        }
    }
}

impl Meter {
    #[cfg(feature = "metrics")]
    pub(super) fn new(job: std::sync::Arc<crate::metrics::JobMetrics>) -> Self {
        Self { job: Some(job) }
    }

    /// Counts the start of `job`'s run; the wait (from enqueue to claim,
    /// both by the Redis clock) of its first attempt.
    pub(super) fn started(&self, job: &ClaimedJob) -> Running {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.job {
            metrics.started.increment(1);
            metrics.running.increment(1.0);
            if job.attempt() == 1
                && let Some(due) = due_ms(job)
            {
                let waited = job.claimed_at_ms().saturating_sub(due);
                metrics.wait.record(waited as f64 / 1000.0);
            }
            return Running {
                started: Some((std::sync::Arc::clone(metrics), std::time::Instant::now())),
            };
        }
        let _ = job;
        Running {
            #[cfg(feature = "metrics")]
            started: None,
        }
    }

    /// Counts what writing a run's outcome did.
    pub(super) fn written(&self, ack: Ack) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.job {
            match ack {
                Ack::Completed => metrics.completed.increment(1),
                Ack::Retrying => metrics.retried.increment(1),
                Ack::Failed => metrics.failed.increment(1),
                Ack::Cancelled => metrics.cancelled.increment(1),
                _ => {}
            }
        }
        let _ = ack;
    }
}

/// When the job became due: the later of its enqueue and its scheduled
/// time, as its hash says.
#[cfg(feature = "metrics")]
fn due_ms(job: &ClaimedJob) -> Option<u64> {
    let record = job.record();
    let enqueued = record.timestamp_ms("enqueued_at_ms").ok().flatten()?;
    let scheduled = record
        .timestamp_ms("scheduled_for_ms")
        .ok()
        .flatten()
        .unwrap_or(0);
    Some(enqueued.max(scheduled))
}

/// How often a runner samples its queues' depths for the gauges.
#[cfg(feature = "metrics")]
const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Sets the gauges read from Redis (`jobqueue_pending_jobs`,
/// `jobqueue_oldest_pending_age_seconds`) for every logical queue the
/// runner serves, every few seconds, until `stop`.
#[cfg(feature = "metrics")]
pub(super) async fn sample(
    shared: std::sync::Arc<super::Shared>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let mut by_queue: std::collections::BTreeMap<&str, (u64, Option<std::time::Duration>)> =
            std::collections::BTreeMap::new();
        for q in &shared.queues {
            let entry = by_queue.entry(q.logical.as_str()).or_default();
            match q.queue.stats().await {
                Ok(stats) => entry.0 += stats.pending_depth,
                Err(e) => {
                    tracing::debug!(queue = q.queue.name(), error = %e, "sampling depths failed");
                }
            }
            match q.queue.oldest_pending_age().await {
                Ok(Some(age)) => entry.1 = Some(entry.1.map_or(age, |a| a.max(age))),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(queue = q.queue.name(), error = %e, "sampling the oldest wait failed");
                }
            }
        }
        for (queue, (pending, age)) in by_queue {
            if let Some(gauges) = shared.metrics.queue(queue) {
                gauges.pending.set(pending as f64);
                gauges.oldest_age.set(age.map_or(0.0, |a| a.as_secs_f64()));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}
