//! Administration: pause and resume, send dead letters back, delete one
//! job, purge a whole queue.

use super::{Queue, SCRIPT_BATCH};
use crate::error::Result;
use crate::scripts::SCRIPTS;

impl Queue {
    /// Pauses the queue: runners claim nothing from it until
    /// [`resume`](Self::resume); running jobs finish normally.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn pause(&self) -> Result<()> {
        let key = self.keys.paused();
        self.conn.query(redis::cmd("SET").arg(key).arg("1")).await
    }

    /// Resumes a paused queue.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn resume(&self) -> Result<()> {
        let key = self.keys.paused();
        self.conn.query(redis::cmd("DEL").arg(key)).await
    }

    /// Sends one dead letter back to pending with a fresh set of attempts;
    /// false when `id` is not a failed job.
    ///
    /// # Cancellation safety
    /// Safe: retrying a job that is no longer failed does nothing.
    pub async fn retry_failed(&self, id: &str) -> Result<bool> {
        let (retried, _) = self.retry_script(id).await?;
        Ok(!retried.is_empty())
    }

    /// Sends every dead letter back to pending, oldest first, in bounded
    /// steps; returns their ids.
    ///
    /// # Cancellation safety
    /// Safe: a dropped call leaves the rest failed.
    pub async fn retry_all_failed(&self) -> Result<Vec<String>> {
        let mut all = Vec::new();
        loop {
            let (retried, more) = self.retry_script("").await?;
            let progressed = !retried.is_empty();
            all.extend(retried);
            if more == 0 || !progressed {
                return Ok(all);
            }
        }
    }

    async fn retry_script(&self, id: &str) -> Result<(Vec<String>, u8)> {
        let mut invocation = SCRIPTS.retry.prepare_invoke();
        invocation
            .key(self.keys.failed())
            .key(self.keys.pending())
            .key(self.keys.stats())
            .arg(self.keys.job_prefix())
            .arg(id)
            .arg(SCRIPT_BATCH);
        self.invoke(&invocation).await
    }

    /// Deletes one job wherever it is; false when there was no such job. A
    /// worker running it finds its claim gone.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn delete_job(&self, id: &str) -> Result<bool> {
        let mut invocation = SCRIPTS.delete.prepare_invoke();
        invocation
            .key(self.keys.job(id))
            .key(self.keys.pending())
            .key(self.keys.processing())
            .key(self.keys.completed())
            .key(self.keys.failed())
            .key(self.keys.scheduled())
            .key(self.keys.leases())
            .arg(id);
        let deleted: u8 = self.invoke(&invocation).await?;
        Ok(deleted == 1)
    }

    /// Deletes every key of the queue: its lists, leases, schedule, counters
    /// and job hashes. Returns how many keys were deleted. Not atomic: stop
    /// workers first, or jobs written during the purge survive it.
    ///
    /// # Cancellation safety
    /// Safe to repeat: a dropped purge leaves part of the keys for the next.
    pub async fn purge(&self) -> Result<u64> {
        // Deletes as it scans, and scans again until a pass finds nothing: a
        // pass on a cluster node that lost its slot midway sees only part.
        let mut deleted: u64 = 0;
        for _ in 0..5 {
            let mut pass: u64 = 0;
            let mut scan = self
                .conn
                .keys(&self.keys.pattern(), Some(&self.keys.pending()), usize::MAX)
                .await?;
            while let Some(keys) = scan.next_batch().await? {
                if !keys.is_empty() {
                    let n: u64 = self.conn.query(redis::cmd("UNLINK").arg(&keys)).await?;
                    pass += n;
                }
            }
            deleted += pass;
            if pass == 0 {
                break;
            }
        }
        Ok(deleted)
    }
}
