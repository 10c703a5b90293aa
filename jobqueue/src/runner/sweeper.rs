//! The sweeper: every sweep interval, for each served queue, promotes due
//! scheduled jobs and reclaims expired leases; every tenth time it also walks
//! the processing list for claims without a lease (reference clients,
//! leftovers). Many runners sweeping at once stay correct: each step is one
//! atomic script.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::retry::Backoff;

/// How many sweeps pass between walks of the processing list.
const WALK_EVERY: u64 = 10;

pub(super) async fn sweep(shared: Arc<Shared>, stop: CancellationToken) {
    let mut round: u64 = 0;
    let mut failures: u32 = 0;
    loop {
        let pause = if failures == 0 {
            shared.sweep_interval
        } else {
            shared.sweep_interval.max(Backoff::LOOP.delay(failures))
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => return,
        }
        round += 1;
        let mut failed = false;
        for q in &shared.queues {
            let queue = &q.queue;
            match queue.promote_due().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(queue = queue.name(), promoted = n, "due jobs promoted"),
                Err(e) => {
                    failed = true;
                    tracing::warn!(queue = queue.name(), error = %e, "promoting due jobs failed");
                }
            }
            let report = if round.is_multiple_of(WALK_EVERY) {
                queue.reclaim_stuck().await
            } else {
                queue.reclaim_expired().await
            };
            match report {
                Ok(r) => {
                    if !r.reclaimed.is_empty() {
                        #[cfg(feature = "metrics")]
                        if let Some(gauges) = shared.metrics.queue(&q.logical) {
                            gauges.reclaimed.increment(r.reclaimed.len() as u64);
                        }
                        tracing::warn!(queue = queue.name(), jobs = ?r.reclaimed, "reclaimed jobs whose lease expired");
                    }
                    if !r.failed.is_empty() {
                        tracing::error!(queue = queue.name(), jobs = ?r.failed, "jobs failed for good after their last lease expired");
                    }
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!(queue = queue.name(), error = %e, "sweep failed");
                }
            }
        }
        failures = if failed {
            failures.saturating_add(1)
        } else {
            0
        };
    }
}
