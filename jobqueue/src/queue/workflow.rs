//! The Redis side of batches and chains: writing a batch, recording its
//! children, reading it back, and the outbox through which a job that ends
//! reports to its batch or chain (`batch_open.lua`, `batch_record.lua`,
//! `relayed.lua`; docs/data-model.md#workflows).
//!
//! These are the building blocks; [`crate::workflow`] is the API.

use std::collections::HashMap;

use redis::{RedisResult, Value};

use super::Queue;
use crate::error::{Error, Result};
use crate::scripts::SCRIPTS;

/// Most children one batch may have: the call that completes a batch reads
/// every child's record and writes the summary, and must stay short.
pub const MAX_BATCH_CHILDREN: usize = 10_000;

/// How a job of a batch or a chain ended, as its queue's outbox holds it
/// until a runner relays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxEntry {
    /// The job's id.
    pub(crate) id: String,
    /// When the entry was written (ms, the outbox's score as read): the
    /// entry is deleted only if it is still this one.
    pub(crate) at_ms: String,
    /// `ok`, `failed`, `cancelled` or `deleted`.
    pub(crate) outcome: String,
    /// The result JSON of a chain step that completed, else the reason.
    pub(crate) detail: String,
    /// `<queue>/<batch id>` of the job's batch, or empty.
    pub(crate) batch: String,
    /// The rest of the job's chain (JSON), or empty.
    pub(crate) chain: String,
}

/// One child's end, as a batch records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChildEnd {
    pub(crate) id: String,
    pub(crate) queue: String,
    pub(crate) outcome: String,
    pub(crate) reason: String,
}

/// What [`Queue::batch_record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Children recorded now, repeats ignored, and whether this call
    /// completed the batch.
    Batch {
        recorded: u64,
        repeats: u64,
        completed: bool,
    },
    /// There is no such batch (it expired, or was never written).
    NoBatch,
}

/// A callback a batch releases when it completes: its role, its id, its
/// payload (JSON, wrapped in the batch's summary on release) and its job
/// fields (`job`, `max_attempts`, ...).
#[derive(Debug, Clone)]
pub(crate) struct Callback {
    pub(crate) role: &'static str,
    pub(crate) id: String,
    pub(crate) payload: String,
    pub(crate) fields: Vec<(&'static str, String)>,
}

impl Queue {
    /// Writes batch `id` with `total` children and its `callbacks` (waiting)
    /// on this queue. Returns false when a batch with that id exists
    /// already (nothing written).
    pub(crate) async fn batch_open(
        &self,
        id: &str,
        total: usize,
        keep_s: u64,
        callbacks: &[Callback],
    ) -> Result<bool> {
        let mut invocation = SCRIPTS.batch_open.prepare_invoke();
        invocation.key(self.keys.batch(id)).key(self.keys.batches());
        for cb in callbacks {
            invocation.key(self.keys.job(&cb.id));
        }
        invocation.arg(id).arg(total).arg(keep_s).arg(self.name());
        for cb in callbacks {
            invocation
                .arg(cb.role)
                .arg(&cb.id)
                .arg(&cb.payload)
                .arg(cb.fields.len());
            for (field, value) in &cb.fields {
                invocation.arg(*field).arg(value);
            }
        }
        let written: i64 = self.invoke(&invocation).await?;
        Ok(written == 1)
    }

    /// Records how children of batch `id` (on this queue) ended; completes
    /// the batch and releases its callbacks when they were the last.
    pub(crate) async fn batch_record(&self, id: &str, ends: &[ChildEnd]) -> Result<Recorded> {
        let mut invocation = SCRIPTS.batch_record.prepare_invoke();
        invocation
            .key(self.keys.batch(id))
            .key(self.keys.batch_settled(id))
            .key(self.keys.pending())
            .key(self.keys.stats())
            .key(self.keys.cancelled())
            .arg(self.keys.job_prefix())
            .arg(self.keys.events())
            .arg(self.options.failed_history);
        for end in ends {
            invocation
                .arg(&end.id)
                .arg(&end.queue)
                .arg(&end.outcome)
                .arg(&end.reason);
        }
        let (recorded, repeats, completed): (i64, u64, u64) = self.invoke(&invocation).await?;
        Ok(if recorded < 0 {
            Recorded::NoBatch
        } else {
            Recorded::Batch {
                recorded: recorded.unsigned_abs(),
                repeats,
                completed: completed == 1,
            }
        })
    }

    /// The fields of batch `id`'s hash, empty when there is no such batch.
    pub(crate) async fn batch_fields(&self, id: &str) -> Result<HashMap<String, String>> {
        self.conn
            .query(redis::cmd("HGETALL").arg(self.keys.batch(id)))
            .await
    }

    /// The ids of the batches homed on this queue, newest first.
    pub(crate) async fn batch_ids(&self, limit: usize) -> Result<Vec<String>> {
        let stop = isize::try_from(limit)
            .unwrap_or(isize::MAX)
            .saturating_sub(1);
        self.conn
            .query(
                redis::cmd("ZRANGE")
                    .arg(self.keys.batches())
                    .arg(0)
                    .arg(stop)
                    .arg("REV"),
            )
            .await
    }

    /// Drops from the batch index the batches whose keys expired.
    pub(crate) async fn forget_batches(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.conn
            .query::<i64>(redis::cmd("ZREM").arg(self.keys.batches()).arg(ids))
            .await
            .map(drop)
    }

    /// The oldest entries of this queue's outbox, at most `limit`: two
    /// round trips (the ids, then their entry hashes, pipelined). An id
    /// whose entry hash is gone (relayed by another runner in between) is
    /// left out.
    pub(crate) async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let stop = isize::try_from(limit)
            .unwrap_or(isize::MAX)
            .saturating_sub(1);
        let listed: Vec<(String, String)> = self
            .conn
            .query(
                redis::cmd("ZRANGE")
                    .arg(self.keys.outbox())
                    .arg(0)
                    .arg(stop)
                    .arg("WITHSCORES"),
            )
            .await?;
        if listed.is_empty() {
            return Ok(Vec::new());
        }
        let mut reads = redis::pipe();
        for (id, _) in &listed {
            reads.cmd("HGETALL").arg(self.keys.outbox_entry(id));
        }
        reads.ignore_errors();
        let replies: Vec<RedisResult<Value>> = self
            .conn
            .run(|mut c| {
                let reads = &reads;
                async move { reads.query_async(&mut c).await }
            })
            .await?;
        let mut entries = Vec::with_capacity(listed.len());
        for ((id, at_ms), reply) in listed.into_iter().zip(replies) {
            let Ok(value) = reply else { continue };
            let mut fields: HashMap<String, String> = redis::from_redis_value(value)
                .map_err(|e| Error::malformed(self.keys.outbox_entry(&id), e.to_string()))?;
            if fields.is_empty() {
                continue;
            }
            let mut take = |name: &str| fields.remove(name).unwrap_or_default();
            entries.push(OutboxEntry {
                outcome: take("outcome"),
                detail: take("detail"),
                batch: take("batch"),
                chain: take("chain"),
                id,
                at_ms,
            });
        }
        Ok(entries)
    }

    /// Deletes outbox entries that were relayed, each only if it is still
    /// the one read. Returns how many went.
    pub(crate) async fn outbox_done(&self, entries: &[&OutboxEntry]) -> Result<u64> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut invocation = SCRIPTS.relayed.prepare_invoke();
        invocation
            .key(self.keys.outbox())
            .arg(self.keys.outbox_prefix());
        for entry in entries {
            invocation.arg(&entry.id).arg(&entry.at_ms);
        }
        self.invoke(&invocation).await
    }
}
