//! Sweep: return claims whose lease ran out (`reclaim.lua`) and move due
//! scheduled jobs to pending (`promote.lua`), each in bounded steps.

use serde::Serialize;

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
    /// List entries removed because no job stood behind them (no hash, or a
    /// job already settled).
    pub dropped: Vec<String>,
}

/// The sweep script's reply: next cursor, more expired leases waiting, and
/// the ids reclaimed, failed and dropped.
type SweepReply = (i64, u8, Vec<String>, Vec<String>, Vec<String>);

impl Queue {
    /// Sweeps the queue once: claims whose lease ran out go back to pending
    /// (or to the dead letters when that was their last attempt), and
    /// processing entries left behind by other clients, crashes or purges
    /// are reclaimed or dropped. Runs in bounded steps, so Redis serves other
    /// clients between them; entries that move during the pass may wait for
    /// the next one.
    ///
    /// # Cancellation safety
    /// Safe: each step is one atomic script; a dropped pass just stops early.
    pub async fn reclaim_stuck(&self) -> Result<SweepReport> {
        self.sweep(true).await
    }

    /// The cheap part of [`reclaim_stuck`](Self::reclaim_stuck): only claims
    /// of ours whose lease ran out, found in the leases set without walking
    /// the processing list. A runner does this every sweep interval.
    ///
    /// # Cancellation safety
    /// Safe: each step is one atomic script.
    pub async fn reclaim_expired(&self) -> Result<SweepReport> {
        self.sweep(false).await
    }

    async fn sweep(&self, walk: bool) -> Result<SweepReport> {
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
                .arg(self.keys.job_prefix())
                .arg(self.keys.events())
                .arg(self.visibility_ms())
                .arg(self.options.max_attempts)
                .arg(self.options.failed_history)
                .arg(SCRIPT_BATCH)
                .arg(cursor.max(0))
                .arg(if walking { SCRIPT_BATCH } else { 0 });
            let (next, more, reclaimed, failed, dropped): SweepReply =
                self.invoke(&invocation).await?;
            report.reclaimed.extend(reclaimed);
            report.failed.extend(failed);
            report.dropped.extend(dropped);
            if next < 0 {
                walking = false;
            } else {
                cursor = next;
            }
            if !walking && more == 0 {
                break;
            }
        }
        for id in &report.dropped {
            tracing::warn!(
                queue = self.name(),
                job = id,
                "sweep dropped a list entry with no job behind it"
            );
        }
        Ok(report)
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
                .arg(self.keys.job_prefix())
                .arg(SCRIPT_BATCH);
            let (n, more): (u64, u8) = self.invoke(&invocation).await?;
            moved += n;
            if more == 0 {
                return Ok(moved);
            }
        }
    }
}
