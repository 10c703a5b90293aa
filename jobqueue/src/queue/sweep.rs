//! Sweep: return claims whose lease ran out and keep the histories
//! consistent with the job hashes (`reclaim.lua`), and move due scheduled
//! jobs to pending (`promote.lua`), each in bounded steps.

use serde::Serialize;

use super::protocol::{HistoryReply, LeasesReply, SweepStep, strings};
use super::settle::SETTLED_CAP;
use super::{Queue, SCRIPT_BATCH};
use crate::error::Result;
use crate::scripts::SCRIPTS;

/// What one [`Queue::reclaim_stuck`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SweepReport {
    /// Ids sent back to pending.
    pub reclaimed: Vec<String>,
    /// Ids moved to the dead letters: out of attempts, or unusable.
    pub failed: Vec<String>,
    /// List entries removed because no job stood behind them (no hash, a
    /// key that is not a hash, or a job already settled).
    pub dropped: Vec<String>,
    /// Ids whose lease ran out after a cancel was requested: ended as
    /// cancelled, not sent back.
    pub cancelled: Vec<String>,
    /// Ids taken off the completed history because their hash is gone (its
    /// completed TTL ran out, or it was deleted): the history lists only
    /// jobs that can be read. Full passes only.
    pub expired: Vec<String>,
    /// Dead letters nothing listed any more, whose hashes were deleted: a
    /// reference client's terminal fail trims the failed list to 50 with
    /// `LTRIM`, which leaves the hashes of the ids it cuts off for ever.
    /// Full passes only.
    pub unlisted: Vec<String>,
}

impl Queue {
    /// Sweeps the queue once: claims whose lease ran out go back to pending
    /// (or to the dead letters when that was their last attempt), and
    /// processing entries left behind by other clients, crashes or purges
    /// are reclaimed or dropped. Then the histories are made consistent
    /// with the job hashes: completed entries whose hash expired leave the
    /// history, histories over their cap are trimmed, and dead letters that
    /// another client trimmed off the failed list are deleted. Runs in
    /// bounded steps, so Redis serves other clients between them; entries
    /// that move during the pass may wait for the next one.
    ///
    /// # Cancellation safety
    /// Safe: each step is one atomic script; a dropped pass just stops early.
    pub async fn reclaim_stuck(&self) -> Result<SweepReport> {
        let mut report = self.sweep_leases(true).await?;
        self.sweep_history(&mut report).await?;
        Ok(report)
    }

    /// The cheap part of [`reclaim_stuck`](Self::reclaim_stuck): only claims
    /// of ours whose lease ran out, found in the leases set without walking
    /// the processing list. A runner does this every sweep interval.
    ///
    /// # Cancellation safety
    /// Safe: each step is one atomic script.
    pub async fn reclaim_expired(&self) -> Result<SweepReport> {
        self.sweep_leases(false).await
    }

    async fn sweep_leases(&self, walk: bool) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let mut cursor: i64 = 0;
        let mut walking = walk;
        loop {
            let mut invocation = SCRIPTS.reclaim.prepare_invoke();
            invocation
                .key(self.keys.pending())
                .key(self.keys.processing())
                .key(self.keys.leases())
                .key(self.keys.failed())
                .key(self.keys.stats())
                .key(self.keys.settled())
                .key(self.keys.cancelled())
                .key(self.keys.outbox())
                .key(self.keys.outbox_entries())
                .arg(SweepStep::Leases)
                .arg(self.keys.job_prefix())
                .arg(self.keys.events())
                .arg(self.visibility_ms())
                .arg(self.options.max_attempts)
                .arg(self.options.failed_history)
                .arg(SCRIPT_BATCH)
                .arg(cursor.max(0))
                .arg(if walking { SCRIPT_BATCH } else { 0 });
            let (next, more, reclaimed, failed, dropped, cancelled): LeasesReply =
                self.invoke(&invocation).await?;
            report.reclaimed.extend(strings(reclaimed));
            report.failed.extend(strings(failed));
            report.cancelled.extend(strings(cancelled));
            for (id, reason) in dropped {
                let (id, reason) = (id.0, reason.0);
                tracing::warn!(
                    queue = self.name(),
                    job = id,
                    reason,
                    "sweep dropped a list entry with no job behind it"
                );
                report.dropped.push(id);
            }
            if next < 0 {
                walking = false;
            } else {
                cursor = next;
            }
            if !walking && more == 0 {
                return Ok(report);
            }
        }
    }

    /// The "history" steps of a full pass, until the walk of the completed
    /// history ends and no dead letter is left to check.
    async fn sweep_history(&self, report: &mut SweepReport) -> Result<()> {
        let mut cursor: i64 = 0;
        let mut walking = true;
        loop {
            let mut invocation = SCRIPTS.reclaim.prepare_invoke();
            invocation
                .key(self.keys.completed())
                .key(self.keys.failed())
                .key(self.keys.settled())
                .arg(SweepStep::History)
                .arg(self.keys.job_prefix())
                .arg(self.options.completed_history)
                .arg(self.options.failed_history)
                .arg(cursor.max(0))
                .arg(if walking { SCRIPT_BATCH } else { 0 })
                .arg(SCRIPT_BATCH)
                .arg(SETTLED_CAP);
            let (next, more, expired, unlisted): HistoryReply = self.invoke(&invocation).await?;
            let (expired, unlisted) = (strings(expired), strings(unlisted));
            if !expired.is_empty() {
                tracing::debug!(queue = self.name(), jobs = ?expired, "completed entries whose hash expired left the history");
            }
            if !unlisted.is_empty() {
                tracing::warn!(queue = self.name(), jobs = ?unlisted, "deleted dead letters that another client trimmed off the failed list");
            }
            report.expired.extend(expired);
            report.unlisted.extend(unlisted);
            if next < 0 {
                walking = false;
            } else {
                cursor = next;
            }
            if !walking && more == 0 {
                return Ok(());
            }
        }
    }

    /// Moves scheduled jobs whose time has come (delayed jobs, retries done
    /// waiting) to pending; returns how many moved.
    ///
    /// # Cancellation safety
    /// Safe: each step is one atomic script.
    pub async fn promote_due(&self) -> Result<u64> {
        let mut moved = 0;
        loop {
            let mut invocation = SCRIPTS.promote.prepare_invoke();
            invocation
                .key(self.keys.scheduled())
                .key(self.keys.pending())
                .key(self.keys.cancelled())
                .key(self.keys.stats())
                .key(self.keys.outbox())
                .key(self.keys.outbox_entries())
                .arg(self.keys.job_prefix())
                .arg(SCRIPT_BATCH)
                .arg(self.keys.events())
                .arg(self.options.failed_history);
            let (n, more): (u64, u8) = self.invoke(&invocation).await?;
            moved += n;
            if more == 0 {
                return Ok(moved);
            }
        }
    }
}
