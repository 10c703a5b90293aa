//! Administration: pause and resume, send dead letters back, delete one
//! job, purge a whole queue.

use super::{Queue, SCRIPT_BATCH};
use crate::error::{Error, Result};
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
    /// false when `id` is not a failed job. Counted in
    /// [`Stats::revived_total`](super::Stats::revived_total).
    ///
    /// # Cancellation safety
    /// Safe: retrying a job that is no longer failed does nothing.
    pub async fn retry_failed(&self, id: &str) -> Result<bool> {
        let (revived, _, _, refused) = self.retry_script(id, 0).await?;
        if let [_, holder] = &refused[..] {
            return Err(Error::UniqueLockHeld {
                id: id.to_owned(),
                holder: holder.clone(),
            });
        }
        Ok(!revived.is_empty())
    }

    /// Sends the dead letters back to pending with a fresh set of attempts,
    /// oldest first; returns their ids. Counted in
    /// [`Stats::revived_total`](super::Stats::revived_total).
    ///
    /// Bounded twice: each script call takes at most 200 entries off the
    /// dead letters (a few ms of Redis time), and the whole call takes at
    /// most as many entries as were listed when it started. A revived job
    /// that fails again while this runs is listed anew at the other end, so
    /// it is not revived a second time, and the call ends even if every job
    /// fails again at once. Entries whose job is no longer a dead letter (no
    /// hash, revived or deleted meanwhile, listed twice) are dropped from the
    /// list, not revived.
    ///
    /// Each step is atomic; the call is not. After an error, the steps before
    /// it stay done, and calling again revives the rest. A step retried after
    /// its reply was lost takes the next entries: the jobs the lost reply
    /// named are revived but missing from the returned ids.
    ///
    /// # Cancellation safety
    /// Safe: a dropped call leaves the rest failed.
    pub async fn retry_all_failed(&self) -> Result<Vec<String>> {
        let mut all = Vec::new();
        // Entries left to take, known from the first step's reply.
        let mut left: Option<usize> = None;
        loop {
            let limit = left.map_or(SCRIPT_BATCH, |left| left.min(SCRIPT_BATCH));
            if limit == 0 {
                return Ok(all);
            }
            let (revived, taken, listed, refused) = self.retry_script("", limit).await?;
            for pair in refused.chunks(2) {
                if let [id, holder] = pair {
                    tracing::warn!(
                        queue = self.name(),
                        job = id,
                        holder,
                        "dead letter not retried: another job holds its unique lock"
                    );
                }
            }
            all.extend(revived);
            left = Some(left.unwrap_or(listed).saturating_sub(taken));
            if taken == 0 {
                return Ok(all);
            }
        }
    }

    /// Runs `retry.lua` for one id, or with `id` empty for at most `limit`
    /// of the oldest entries: (revived ids, entries taken, entries listed
    /// before, refused ids each followed by the holder of its unique lock).
    async fn retry_script(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<(Vec<String>, usize, usize, Vec<String>)> {
        let mut invocation = SCRIPTS.retry.prepare_invoke();
        invocation
            .key(self.keys.failed())
            .key(self.keys.pending())
            .key(self.keys.stats())
            .arg(self.keys.job_prefix())
            .arg(id)
            .arg(limit);
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
            .key(self.keys.cancelled())
            .key(self.keys.scheduled())
            .key(self.keys.leases())
            .key(self.keys.settled())
            .key(self.keys.outbox())
            .key(self.keys.outbox_entries())
            .arg(id);
        let deleted: u8 = self.invoke(&invocation).await?;
        Ok(deleted == 1)
    }

    /// Deletes every key of the queue: its lists, leases, schedule, counters,
    /// pause flag, claim request keys and job hashes. Returns how many keys
    /// were deleted.
    ///
    /// Not atomic, but safe beside writers. One script first deletes the
    /// lists, sets, counters and pause flag at once and notes the Redis time
    /// T (the cut); then a `SCAN` walks the queue's keys and deletes, in
    /// script calls of at most 200 keys, every job hash enqueued before T
    /// and every other key but those fixed ones. A hash stamped T itself
    /// goes unless its state's list still holds it (near the end a job
    /// written after the cut would be). So a job enqueued while a purge runs
    /// is deleted whole (enqueued before the cut) or survives whole, hash and
    /// pending entry (after it), never half. The cut does not wait for the
    /// clock: Redis 7.2 and later and Valkey stop it for a whole script. A
    /// job running when the purge starts loses its claim (settling it answers
    /// [`Ack::LeaseLost`](super::Ack::LeaseLost)) and its hash goes. Claim
    /// request keys written during the purge go too: a claim retried after
    /// its reply was lost then takes other jobs, and the ones the first try
    /// took come back when their leases run out.
    ///
    /// The cut compares `enqueued_at_ms`, which jobqueue writes from the
    /// Redis clock. Reference clients write their own clock: for their jobs
    /// written during a purge, a clock behind Redis's can delete the hash and
    /// leave the entry (the next claim drops it with a warning), and a clock
    /// ahead can keep a hash whose entry went. A Redis clock stepped back
    /// does the same. A job re-enqueued with its own id
    /// ([`EnqueueOptions::id`](super::EnqueueOptions::id)) during a purge
    /// while its old hash still stands is skipped as a duplicate, and then
    /// deleted with the old hash.
    ///
    /// # Cancellation safety
    /// Safe to repeat: a dropped purge leaves part of the job hashes, with no
    /// list naming them, for the next purge.
    pub async fn purge(&self) -> Result<u64> {
        let mut fixed = vec![
            self.keys.pending(),
            self.keys.processing(),
            self.keys.completed(),
            self.keys.failed(),
            self.keys.cancelled(),
            self.keys.leases(),
            self.keys.scheduled(),
            self.keys.stats(),
            self.keys.paused(),
            self.keys.levels(),
            self.keys.rate_keys(),
            self.keys.wake(),
            self.keys.throttle(),
        ];
        fixed.extend(
            (crate::keys::MIN_PRIORITY..=crate::keys::MAX_PRIORITY)
                .filter(|p| *p != 0)
                .map(|p| self.keys.priority_lane(p)),
        );
        let mut cut = SCRIPTS.purge.prepare_invoke();
        cut.key(&fixed).arg("cut");
        // The queue's limits are configuration, not jobs: a purge keeps
        // them (the sweep leaves alone every key named after "sweep").
        let mut kept = fixed.clone();
        kept.push(self.keys.limits());
        kept.push(self.keys.key_limits());
        let (at, mut deleted): (i64, u64) = self.invoke(&cut).await?;
        // Scans again until a pass deletes nothing: a pass on a cluster node
        // that lost its slot midway sees only part of the keys.
        for _ in 0..5 {
            let mut pass: u64 = 0;
            let mut scan = self
                .conn
                .keys(&self.keys.pattern(), Some(&self.keys.pending()), usize::MAX)
                .await?;
            while let Some(keys) = scan.next_batch().await? {
                for chunk in keys.chunks(SCRIPT_BATCH) {
                    let mut sweep = SCRIPTS.purge.prepare_invoke();
                    sweep
                        .key(&kept)
                        .key(chunk)
                        .arg("sweep")
                        .arg(at)
                        .arg(self.keys.job_prefix())
                        .arg(kept.len());
                    let n: u64 = self.invoke(&sweep).await?;
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
