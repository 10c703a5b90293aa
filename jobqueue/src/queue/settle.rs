//! Settle: complete, fail or release a claimed job, and renew the leases of
//! running ones. Every call is fenced by the claim token and safe to repeat.
//!
//! Every settle records its claim in `queue:{name}:settled`, so a repeat of
//! the call answers [`Ack::Duplicate`] even once the job's hash is gone
//! (trimmed off its history) or a later claim settled the job again.

use std::time::Duration;

use redis::Value;
use serde::Serialize;

use serde_json::value::RawValue;

use super::protocol::{Settle, SettleAction, SettleCode};
use super::{Ack, ClaimedJob, Queue};
use crate::error::{Error, Result};
use crate::scripts::SCRIPTS;

/// How long an ended claim is remembered at least: a repeat comes from a
/// retry after a lost reply, seconds later; the queue's completed TTL when
/// that is longer (a job's own when longer still).
const SETTLED_MIN_KEEP: Duration = Duration::from_secs(300);

/// Most ended claims remembered per queue, the oldest forgotten first: the
/// bound on the settled set (dead letters' records come on top, as many as
/// the failed history holds).
pub(super) const SETTLED_CAP: usize = 10_000;

/// Most jobs one settle script call settles: called directly with 45 jobs a
/// call, the script cost 15 to 20 us of Redis time per job on a two-core
/// machine, so a full batch holds Redis for about 2 ms.
pub const SETTLE_BATCH: usize = 100;

/// How a claimed job ends, for [`Queue::settle_many`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Settlement {
    /// Completed, with the result's JSON.
    Complete(Box<RawValue>),
    /// Failed: back to pending (after `delay`, in `scheduled`, when it is
    /// not zero) while attempts remain, else to the dead letters.
    Retry {
        /// Stored as `last_error`.
        error: String,
        /// How long the retry waits.
        delay: Duration,
    },
    /// Failed for good, whatever attempts remain.
    Fail {
        /// Stored as `last_error`.
        error: String,
    },
    /// Not run to an outcome: back to pending (after `delay`, in
    /// `scheduled`, when it is not zero) without charging the attempt; to
    /// the dead letters once the queue's
    /// [`max_snoozes`](super::QueueOptions::max_snoozes) are used up.
    Snooze {
        /// How long the job waits before it is pending again.
        delay: Duration,
    },
    /// An upstream rate limit: back to the front of its lane without
    /// charging the attempt (a snooze), and its queue, or its rate key when
    /// it has one, takes no job for `retry_after`.
    RateLimited {
        /// How long the queue (or rate key) is held back.
        retry_after: Duration,
    },
}

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
        let result = serde_json::value::to_raw_value(result)?;
        self.settle(job, &Settlement::Complete(result)).await
    }

    /// Records a failure of a claimed job: it goes back to pending while it
    /// has attempts left (decided in Redis from the job's stored attempts and
    /// max attempts), else to the dead letters with `error` as `last_error`.
    ///
    /// # Cancellation safety
    /// As [`complete`](Self::complete).
    pub async fn fail(&self, job: &ClaimedJob, error: &str) -> Result<Ack> {
        self.fail_with_delay(job, error, Duration::ZERO).await
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
        let settlement = Settlement::Retry {
            error: error.to_owned(),
            delay,
        };
        self.settle(job, &settlement).await
    }

    /// Fails a claimed job for good, whatever attempts it has left.
    ///
    /// # Cancellation safety
    /// As [`complete`](Self::complete).
    pub async fn fail_permanently(&self, job: &ClaimedJob, error: &str) -> Result<Ack> {
        let settlement = Settlement::Fail {
            error: error.to_owned(),
        };
        self.settle(job, &settlement).await
    }

    /// Settles one job, as [`settle_many`](Self::settle_many) would.
    pub(crate) async fn settle(&self, job: &ClaimedJob, settlement: &Settlement) -> Result<Ack> {
        let mut acks = self.settle_many(&[(job, settlement)]).await?;
        acks.pop()
            .ok_or_else(|| Error::malformed("settle script reply", "no code"))
    }

    /// Settles many claimed jobs of this queue in one script call: one
    /// [`Ack`] per job, in order, as [`complete`](Self::complete),
    /// [`fail_with_delay`](Self::fail_with_delay) and
    /// [`fail_permanently`](Self::fail_permanently) would answer each.
    ///
    /// One call costs Redis far less than one call per job: the call's fixed
    /// price, the clock, counters and history trim are paid once. Each job
    /// is settled on its own terms (a stale token changes nothing for that
    /// job only) and gets its own event. At most [`SETTLE_BATCH`] jobs per
    /// call keep the script short; more are sent in several calls.
    ///
    /// # Cancellation safety
    /// As [`complete`](Self::complete): a repeat answers
    /// [`Ack::Duplicate`] for the jobs the first call settled.
    pub async fn settle_many(&self, jobs: &[(&ClaimedJob, &Settlement)]) -> Result<Vec<Ack>> {
        let mut acks = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(SETTLE_BATCH) {
            let mut invocation = SCRIPTS.settle.prepare_invoke();
            invocation
                .key(self.keys.processing())
                .key(self.keys.pending())
                .key(self.keys.completed())
                .key(self.keys.failed())
                .key(self.keys.leases())
                .key(self.keys.stats())
                .key(self.keys.scheduled())
                .key(self.keys.settled())
                .key(self.keys.cancelled())
                .key(self.keys.outbox())
                .key(self.keys.outbox_entries())
                .arg(self.keys.job_prefix())
                .arg(self.keys.events())
                .arg(self.options.completed_ttl.as_secs())
                .arg(self.options.completed_history)
                .arg(self.options.failed_history)
                .arg(self.options.max_attempts)
                .arg(self.settled_keep_ms())
                .arg(SETTLED_CAP)
                .arg(self.options.max_snoozes);
            for (job, settlement) in chunk {
                invocation
                    .key(self.keys.job(job.id()))
                    .arg(job.id())
                    .arg(job.token());
                match settlement {
                    Settlement::Complete(result) => invocation
                        .arg(SettleAction::Complete)
                        .arg(result.get())
                        .arg(0),
                    Settlement::Retry { error, delay } => invocation
                        .arg(SettleAction::Retry)
                        .arg(error)
                        .arg(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
                    Settlement::Fail { error } => {
                        invocation.arg(SettleAction::Permanent).arg(error).arg(0)
                    }
                    Settlement::Snooze { delay } => invocation
                        .arg(SettleAction::Snooze)
                        .arg("")
                        .arg(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
                    Settlement::RateLimited { retry_after } => invocation
                        .arg(SettleAction::Throttle)
                        .arg("")
                        .arg(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX)),
                };
            }
            let codes: Vec<SettleCode> = self.invoke(&invocation).await?;
            if codes.len() != chunk.len() {
                return Err(Error::malformed(
                    "settle script reply",
                    format!("{} codes for {} jobs", codes.len(), chunk.len()),
                ));
            }
            for ((_, settlement), code) in chunk.iter().zip(codes) {
                acks.push(code.ack(match settlement {
                    Settlement::Complete(_) => Settle::Complete,
                    Settlement::Retry { .. } | Settlement::Fail { .. } => Settle::Fail,
                    Settlement::Snooze { .. } | Settlement::RateLimited { .. } => Settle::Snooze,
                })?);
            }
        }
        Ok(acks)
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
            .key(self.keys.cancelled())
            .key(self.keys.stats())
            .key(self.keys.outbox())
            .key(self.keys.outbox_entries())
            .arg(job.id())
            .arg(job.token())
            .arg(self.keys.events())
            .arg(self.settled_keep_ms())
            .arg(SETTLED_CAP)
            .arg(self.keys.job_prefix())
            .arg(self.options.failed_history);
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
    /// [`Ack::Extended`], [`Ack::CancelRequested`] (renewed, but the job's
    /// cancel was requested: stop the run) or [`Ack::LeaseLost`] per job, in
    /// order.
    ///
    /// # Cancellation safety
    /// Safe: renewing twice is harmless.
    pub async fn extend_many(&self, jobs: &[&ClaimedJob]) -> Result<Vec<Ack>> {
        let jobs: Vec<_> = jobs.iter().map(|job| (*job, None)).collect();
        self.extend_with_progress(&jobs).await
    }

    /// [`extend_many`](Self::extend_many), writing each job's progress given
    /// in the same call: the lease renewal a running job needs anyway
    /// carries it, so progress costs no round trip of its own (the runner
    /// sends what [`JobContext::progress`](crate::JobContext::progress)
    /// buffered this way).
    ///
    /// A job's value is written to its hash (`progress`, and
    /// `progress_at_ms` by Redis's clock) only while the claim holds the job
    /// (a stale token writes nothing), and only when it differs from the
    /// stored one; each change is published on `queue:{name}:progress`
    /// ([`Keys::progress`](super::Keys::progress)) as
    /// `{"id": "...", "progress": <value>}`. `None` renews the lease alone.
    ///
    /// # Errors
    /// [`Error::InvalidProgress`] when a value is over
    /// [`MAX_PROGRESS_BYTES`](super::MAX_PROGRESS_BYTES); nothing is sent.
    ///
    /// # Cancellation safety
    /// Safe: renewing twice is harmless, and a value sent twice is written
    /// and published once.
    pub async fn extend_with_progress(
        &self,
        jobs: &[(&ClaimedJob, Option<&RawValue>)],
    ) -> Result<Vec<Ack>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        for (_, progress) in jobs {
            if let Some(progress) = progress {
                super::progress::check_size(progress)?;
            }
        }
        let mut invocation = SCRIPTS.extend.prepare_invoke();
        invocation
            .key(self.keys.leases())
            .key(self.keys.processing())
            .arg(self.visibility_ms())
            .arg(self.keys.progress());
        for (job, progress) in jobs {
            invocation
                .key(self.keys.job(job.id()))
                .arg(job.id())
                .arg(job.token())
                .arg(progress.map_or("", |p| p.get()));
        }
        let deadlines: Vec<Value> = self.invoke(&invocation).await?;
        if deadlines.len() != jobs.len() {
            return Err(Error::malformed(
                "extend script reply",
                format!("{} replies for {} jobs", deadlines.len(), jobs.len()),
            ));
        }
        Ok(deadlines
            .iter()
            .map(|d| match d {
                Value::Int(0) => Ack::LeaseLost,
                Value::Int(-1) => Ack::CancelRequested,
                _ => Ack::Extended,
            })
            .collect())
    }
}
