//! Settle: complete, fail or release a claimed job, and renew the leases of
//! running ones. Every call is fenced by the claim token and safe to repeat.
//!
//! Every settle records its claim in `queue:{name}:settled`, so a repeat of
//! the call answers [`Ack::Duplicate`] even once the job's hash is gone
//! (trimmed off its history) or a later claim settled the job again.

use std::time::Duration;

use redis::Value;
use serde::Serialize;

use super::protocol::{FailMode, Settle, SettleCode};
use super::{Ack, ClaimedJob, Queue};
use crate::error::Result;
use crate::scripts::SCRIPTS;

/// How long an ended claim is remembered at least: a repeat comes from a
/// retry after a lost reply, seconds later; the queue's completed TTL when
/// that is longer (a job's own when longer still).
const SETTLED_MIN_KEEP: Duration = Duration::from_secs(300);

/// Most ended claims remembered per queue, the oldest forgotten first: the
/// bound on the settled set (dead letters' records come on top, as many as
/// the failed history holds).
pub(super) const SETTLED_CAP: usize = 10_000;

impl Queue {
    /// How long an ended claim is remembered, in ms.
    fn settled_keep_ms(&self) -> u64 {
        let keep = self.options.completed_ttl.max(SETTLED_MIN_KEEP);
        u64::try_from(keep.as_millis()).unwrap_or(u64::MAX)
    }

    /// Completes a claimed job with `result` (stored as JSON).
    ///
    /// # Cancellation safety
    /// Dropping the future may or may not complete the job; calling again
    /// with the same job is safe and returns [`Ack::Duplicate`] if it was.
    pub async fn complete<R: Serialize + ?Sized>(
        &self,
        job: &ClaimedJob,
        result: &R,
    ) -> Result<Ack> {
        let result = serde_json::to_string(result)?;
        let mut invocation = SCRIPTS.complete.prepare_invoke();
        invocation
            .key(self.keys.job(job.id()))
            .key(self.keys.processing())
            .key(self.keys.completed())
            .key(self.keys.leases())
            .key(self.keys.stats())
            .key(self.keys.settled())
            .arg(job.id())
            .arg(job.token())
            .arg(result)
            .arg(self.options.completed_ttl.as_secs())
            .arg(self.options.completed_history)
            .arg(self.keys.events())
            .arg(self.keys.job_prefix())
            .arg(self.settled_keep_ms())
            .arg(SETTLED_CAP);
        let code: SettleCode = self.invoke(&invocation).await?;
        code.ack(Settle::Complete)
    }

    /// Records a failure of a claimed job: it goes back to pending while it
    /// has attempts left (decided in Redis from the job's stored attempts and
    /// max attempts), else to the dead letters with `error` as `last_error`.
    ///
    /// # Cancellation safety
    /// As [`complete`](Self::complete).
    pub async fn fail(&self, job: &ClaimedJob, error: &str) -> Result<Ack> {
        self.fail_with(job, error, FailMode::Retry, Duration::ZERO)
            .await
    }

    /// Like [`fail`](Self::fail), but a retry waits `delay` in
    /// `queue:{name}:scheduled` before it is pending again (a runner's sweep
    /// moves it once due).
    ///
    /// # Cancellation safety
    /// As [`complete`](Self::complete).
    pub async fn fail_with_delay(
        &self,
        job: &ClaimedJob,
        error: &str,
        delay: Duration,
    ) -> Result<Ack> {
        self.fail_with(job, error, FailMode::Retry, delay).await
    }

    /// Fails a claimed job for good, whatever attempts it has left.
    ///
    /// # Cancellation safety
    /// As [`complete`](Self::complete).
    pub async fn fail_permanently(&self, job: &ClaimedJob, error: &str) -> Result<Ack> {
        self.fail_with(job, error, FailMode::Permanent, Duration::ZERO)
            .await
    }

    async fn fail_with(
        &self,
        job: &ClaimedJob,
        error: &str,
        mode: FailMode,
        delay: Duration,
    ) -> Result<Ack> {
        let mut invocation = SCRIPTS.fail.prepare_invoke();
        invocation
            .key(self.keys.job(job.id()))
            .key(self.keys.processing())
            .key(self.keys.pending())
            .key(self.keys.failed())
            .key(self.keys.leases())
            .key(self.keys.stats())
            .key(self.keys.scheduled())
            .key(self.keys.settled())
            .arg(job.id())
            .arg(job.token())
            .arg(error)
            .arg(mode)
            .arg(self.options.max_attempts)
            .arg(self.options.failed_history)
            .arg(self.keys.events())
            .arg(self.keys.job_prefix())
            .arg(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            .arg(self.settled_keep_ms())
            .arg(SETTLED_CAP);
        let code: SettleCode = self.invoke(&invocation).await?;
        code.ack(Settle::Fail)
    }

    /// Hands a claimed job back to pending, at the front of the line, without
    /// charging the attempt (for a worker that stops before running it).
    ///
    /// # Cancellation safety
    /// As [`complete`](Self::complete).
    pub async fn release(&self, job: &ClaimedJob) -> Result<Ack> {
        let mut invocation = SCRIPTS.release.prepare_invoke();
        invocation
            .key(self.keys.job(job.id()))
            .key(self.keys.processing())
            .key(self.keys.pending())
            .key(self.keys.leases())
            .key(self.keys.settled())
            .arg(job.id())
            .arg(job.token())
            .arg(self.keys.events())
            .arg(self.settled_keep_ms())
            .arg(SETTLED_CAP);
        let code: SettleCode = self.invoke(&invocation).await?;
        code.ack(Settle::Release)
    }

    /// Renews the lease of a running job for another visibility timeout;
    /// [`Ack::LeaseLost`] when the claim no longer holds the job (another
    /// token, another status, or no longer listed in processing).
    ///
    /// # Cancellation safety
    /// Safe: renewing twice is harmless.
    pub async fn extend(&self, job: &ClaimedJob) -> Result<Ack> {
        Ok(self.extend_many(&[job]).await?.remove(0))
    }

    /// Renews the leases of many running jobs in one round trip; one
    /// [`Ack::Extended`] or [`Ack::LeaseLost`] per job, in order.
    ///
    /// # Cancellation safety
    /// Safe: renewing twice is harmless.
    pub async fn extend_many(&self, jobs: &[&ClaimedJob]) -> Result<Vec<Ack>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = SCRIPTS.extend.prepare_invoke();
        invocation
            .key(self.keys.leases())
            .key(self.keys.processing())
            .arg(self.visibility_ms());
        for job in jobs {
            invocation
                .key(self.keys.job(job.id()))
                .arg(job.id())
                .arg(job.token());
        }
        let deadlines: Vec<Value> = self.invoke(&invocation).await?;
        Ok(deadlines
            .iter()
            .map(|d| match d {
                Value::Int(0) => Ack::LeaseLost,
                _ => Ack::Extended,
            })
            .collect())
    }
}
