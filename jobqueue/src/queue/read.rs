//! Reads: stats, job hashes and the lists, none of which changes anything.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::protocol::{Text, strings};
use super::{JobRecord, JobStatus, Queue, SCRIPT_BATCH};
use crate::error::{Error, Result};
use crate::scripts::SCRIPTS;

/// Counts and depths of one queue. The totals are fleet-wide: every process
/// updates the same `queue:{name}:stats` hash inside the scripts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Jobs ever enqueued.
    pub enqueued_total: u64,
    /// Jobs ever completed.
    pub completed_total: u64,
    /// Jobs ever failed for good (dead letters).
    pub failed_total: u64,
    /// Claims ever taken back by a sweep.
    pub reclaimed_total: u64,
    /// Failures ever sent back for another attempt (a failed attempt with
    /// attempts left: `settle.lua`).
    pub retried_total: u64,
    /// Dead letters ever sent back to pending by an operator
    /// ([`Queue::retry_failed`], [`Queue::retry_all_failed`]). Counted apart
    /// from `retried_total` so a mass revival does not read as a wave of
    /// failures.
    pub revived_total: u64,
    /// Jobs ever cancelled by a caller (waiting, or stopped while running).
    pub cancelled_total: u64,
    /// Jobs ever ended because they could not start by their deadline
    /// ([`EnqueueOptions::expires_in`](super::EnqueueOptions::expires_in)).
    pub expired_total: u64,
    /// Snoozes ever taken ([`JobError::snooze`](crate::JobError::snooze)).
    pub snoozed_total: u64,
    /// Jobs waiting, in every lane: `pending`, the other priority levels
    /// and the rate keys' lanes.
    pub pending_depth: u64,
    /// Of those, the jobs waiting at a priority level other than 0.
    pub prioritized_depth: u64,
    /// Of those, the jobs waiting in rate keys' lanes (the first 1,000
    /// keys counted).
    pub keyed_depth: u64,
    /// Rate keys with jobs waiting.
    pub rate_keys: u64,
    /// Jobs claimed.
    pub processing_depth: u64,
    /// Ids in the completed history.
    pub completed_depth: u64,
    /// Ids in the dead letters.
    pub failed_depth: u64,
    /// Ids in the cancelled history (cancelled and expired jobs).
    pub cancelled_depth: u64,
    /// Jobs waiting for a time (delayed, or retries in backoff).
    pub scheduled_depth: u64,
    /// The queue's visibility timeout (serialized as `visibility_ms`).
    #[serde(rename = "visibility_ms", serialize_with = "as_millis")]
    pub visibility: Duration,
    /// True while the queue is paused.
    pub paused: bool,
}

impl Stats {
    /// How many ids `status`'s list holds.
    pub fn depth(&self, status: JobStatus) -> u64 {
        match status {
            JobStatus::Pending => self.pending_depth,
            JobStatus::Processing => self.processing_depth,
            JobStatus::Completed => self.completed_depth,
            JobStatus::Failed => self.failed_depth,
            JobStatus::Scheduled => self.scheduled_depth,
            JobStatus::Cancelled => self.cancelled_depth,
            // Batch callbacks waiting are in no list.
            JobStatus::Waiting => 0,
        }
    }
}

fn as_millis<S: Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The stats script's reply: four list lengths, the scheduled count, the
/// paused flag, the counters hash and the cancelled list's length.
type StatsReply = (
    u64,
    u64,
    u64,
    u64,
    u64,
    bool,
    BTreeMap<String, String>,
    u64,
    u64,
    u64,
    u64,
);

impl Queue {
    /// Depths and fleet-wide totals, read as one consistent snapshot.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn stats(&self) -> Result<Stats> {
        let mut invocation = SCRIPTS.stats.prepare_invoke();
        invocation
            .key(self.keys.pending())
            .key(self.keys.processing())
            .key(self.keys.completed())
            .key(self.keys.failed())
            .key(self.keys.scheduled())
            .key(self.keys.paused())
            .key(self.keys.stats())
            .key(self.keys.cancelled())
            .arg(0);
        let (
            pending,
            processing,
            completed,
            failed,
            scheduled,
            paused,
            totals,
            cancelled,
            prioritized,
            keyed,
            rate_keys,
        ): StatsReply = self.invoke(&invocation).await?;
        let total = |name: &str| -> Result<u64> {
            match totals.get(name) {
                None => Ok(0),
                Some(v) => v.parse().map_err(|_| {
                    Error::malformed(self.keys.stats(), format!("{name} is {v:?}, not a number"))
                }),
            }
        };
        Ok(Stats {
            enqueued_total: total("enqueued_total")?,
            completed_total: total("completed_total")?,
            failed_total: total("failed_total")?,
            reclaimed_total: total("reclaimed_total")?,
            retried_total: total("retried_total")?,
            revived_total: total("revived_total")?,
            cancelled_total: total("cancelled_total")?,
            expired_total: total("expired_total")?,
            snoozed_total: total("snoozed_total")?,
            pending_depth: pending + prioritized + keyed,
            prioritized_depth: prioritized,
            keyed_depth: keyed,
            rate_keys,
            processing_depth: processing,
            completed_depth: completed,
            failed_depth: failed,
            cancelled_depth: cancelled,
            scheduled_depth: scheduled,
            paused,
            visibility: self.visibility(),
        })
    }

    /// True when the queue has any key in Redis: a queue whose lists are
    /// empty but that keeps counters, limits, a pause flag, schedules or
    /// batches exists; one never used, or purged without limits, does not.
    ///
    /// First one `EXISTS` over every key whose name is fixed (the lists,
    /// sets, counters, flags, limits, schedules, batches and outbox). Only
    /// when none exists, a `SCAN` of the queue's own pattern (on a cluster,
    /// on the primary holding the queue's slot) looks for the others (job
    /// hashes, unique locks, claim request keys, a rate key's lane), and
    /// stops at the first it finds: for a queue that does not exist it
    /// walks the node's whole keyspace, 1,000 keys a step.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn exists(&self) -> Result<bool> {
        let k = &self.keys;
        let mut fixed = vec![
            k.pending(),
            k.processing(),
            k.completed(),
            k.failed(),
            k.cancelled(),
            k.scheduled(),
            k.leases(),
            k.settled(),
            k.stats(),
            k.paused(),
            k.levels(),
            k.rate_keys(),
            k.throttle(),
            k.wake(),
            k.limits(),
            k.key_limits(),
            k.schedules(),
            k.batches(),
            k.outbox(),
            k.outbox_entries(),
        ];
        fixed.extend(
            (crate::keys::MIN_PRIORITY..=crate::keys::MAX_PRIORITY)
                .filter(|p| *p != 0)
                .map(|p| k.priority_lane(p)),
        );
        let found: u64 = self.conn.query(redis::cmd("EXISTS").arg(&fixed)).await?;
        if found > 0 {
            return Ok(true);
        }
        let mut scan = self
            .conn
            .keys(&k.pattern(), Some(&k.pending()), usize::MAX)
            .await?;
        while let Some(keys) = scan.next_batch().await? {
            if !keys.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One job's hash, or `None` when it does not exist.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn get_job(&self, id: &str) -> Result<Option<JobRecord>> {
        Ok(self.get_jobs(&[id]).await?.pop().flatten())
    }

    /// Many jobs' hashes, in order; `None` for ids whose hash does not exist
    /// (expired, purged, trimmed). Read by one script call per 200 ids, so
    /// a long list of ids never holds Redis for long; each call is a
    /// snapshot of its ids, the whole list is not.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn get_jobs<S: AsRef<str>>(&self, ids: &[S]) -> Result<Vec<Option<JobRecord>>> {
        let mut records = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(SCRIPT_BATCH) {
            let mut invocation = SCRIPTS.read.prepare_invoke();
            for id in chunk {
                invocation.key(self.keys.job(id.as_ref()));
            }
            invocation.arg(0);
            // Fields are read as bytes: a value another client wrote that is
            // not UTF-8 shows lossily in its own record, never fails the read.
            let hashes: Vec<Vec<(Text, Text)>> = self.invoke(&invocation).await?;
            records.extend(chunk.iter().zip(hashes).map(|(id, fields)| {
                (!fields.is_empty()).then(|| {
                    let fields: BTreeMap<String, String> =
                        fields.into_iter().map(|(k, v)| (k.0, v.0)).collect();
                    JobRecord::new(id.as_ref(), fields)
                })
            }));
        }
        Ok(records)
    }

    /// Ids in `status`'s list, in that list's order (see the `list_*`
    /// methods); `range` pages through them.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn list(&self, status: JobStatus, range: Range<usize>) -> Result<Vec<String>> {
        match status {
            JobStatus::Pending => self.list_pending(range).await,
            JobStatus::Processing => self.list_processing(range).await,
            JobStatus::Completed => self.list_completed(range).await,
            JobStatus::Failed => self.list_failed(range).await,
            JobStatus::Scheduled => self.list_scheduled(range).await,
            JobStatus::Cancelled => self.list_cancelled(range).await,
            // In no list: a batch's callbacks are found through the batch.
            JobStatus::Waiting => Ok(Vec::new()),
        }
    }

    /// Ids waiting, in the order claims take them: the priority lanes
    /// highest first (`pending` is level 0), then the lanes of the rate keys
    /// (the first 1,000 keys, soonest ready first), each oldest first;
    /// `range` pages through them.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn list_pending(&self, range: Range<usize>) -> Result<Vec<String>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let mut lanes: Vec<String> = (crate::keys::MIN_PRIORITY..=crate::keys::MAX_PRIORITY)
            .rev()
            .map(|level| self.keys.priority_lane(level))
            .collect();
        let keys: Vec<Text> = self
            .conn
            .query(
                redis::cmd("ZRANGE")
                    .arg(self.keys.rate_keys())
                    .arg(0)
                    .arg(999),
            )
            .await?;
        lanes.extend(strings(keys).iter().map(|k| self.keys.keyed_lane(k)));
        let (mut skip, mut want) = (range.start, range.len());
        let mut out = Vec::with_capacity(want.min(1_000));
        for lane in lanes {
            if want == 0 {
                break;
            }
            let len: usize = match self.conn.query(redis::cmd("LLEN").arg(&lane)).await {
                Ok(len) => len,
                // A lane key of another type (written by hand) holds no
                // job: jobs that could not go there wait in pending.
                Err(Error::Redis(e))
                    if e.code() == Some("WRONGTYPE") && lane != self.keys.pending() =>
                {
                    0
                }
                Err(e) => return Err(e),
            };
            if skip >= len {
                skip -= len;
                continue;
            }
            let take = want.min(len - skip);
            // The oldest job of a lane sits at its right end: index -1.
            let (start, stop) = (-((skip + take) as isize), -(skip as isize) - 1);
            let mut ids = self.lrange(lane, start, stop).await?;
            ids.reverse();
            want -= ids.len();
            out.extend(ids);
            skip = 0;
        }
        Ok(out)
    }

    /// Ids claimed, most recently claimed first.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn list_processing(&self, range: Range<usize>) -> Result<Vec<String>> {
        self.list_from_head(self.keys.processing(), range).await
    }

    /// Ids in the completed history, newest first.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn list_completed(&self, range: Range<usize>) -> Result<Vec<String>> {
        self.list_from_head(self.keys.completed(), range).await
    }

    /// Ids waiting for a time, soonest first.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn list_scheduled(&self, range: Range<usize>) -> Result<Vec<String>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.keys.scheduled();
        let (start, stop) = (range.start as isize, range.end as isize - 1);
        let ids: Vec<Text> = self
            .conn
            .query(redis::cmd("ZRANGE").arg(key).arg(start).arg(stop))
            .await?;
        Ok(strings(ids))
    }

    /// Ids in the dead letters, newest first.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn list_failed(&self, range: Range<usize>) -> Result<Vec<String>> {
        self.list_from_head(self.keys.failed(), range).await
    }

    /// Ids cancelled or expired, most recent first.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn list_cancelled(&self, range: Range<usize>) -> Result<Vec<String>> {
        self.list_from_head(self.keys.cancelled(), range).await
    }

    async fn list_from_head(&self, key: String, range: Range<usize>) -> Result<Vec<String>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        self.lrange(key, range.start as isize, range.end as isize - 1)
            .await
    }

    /// Ids of a list, decoded lossily: an id another client wrote that is
    /// not UTF-8 shows with replacement characters instead of failing the
    /// page it is on.
    async fn lrange(&self, key: String, start: isize, stop: isize) -> Result<Vec<String>> {
        let ids: Vec<Text> = self
            .conn
            .query(redis::cmd("LRANGE").arg(key).arg(start).arg(stop))
            .await?;
        Ok(strings(ids))
    }
}
