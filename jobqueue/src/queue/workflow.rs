//! The Redis side of batches and chains: writing a batch, recording its
//! children, reading it back, and the outbox through which a job that ends
//! reports to its batch or chain (`batch_open.lua`, `batch_record.lua`,
//! `relayed.lua`; docs/data-model.md#workflows).
//!
//! These are the building blocks; [`crate::workflow`] is the API.

use std::collections::HashMap;

use super::Queue;
use crate::error::Result;
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Children recorded now, repeats ignored, whether this call completed
    /// the batch, and the callbacks it could not release (not waiting:
    /// cancelled or deleted by hand).
    Batch {
        recorded: u64,
        repeats: u64,
        completed: bool,
        unreleased: Vec<String>,
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
            .key(self.keys.outbox())
            .key(self.keys.outbox_entries())
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
        let (recorded, repeats, completed, unreleased): (i64, u64, u64, Vec<String>) =
            self.invoke(&invocation).await?;
        Ok(if recorded < 0 {
            Recorded::NoBatch
        } else {
            Recorded::Batch {
                recorded: recorded.unsigned_abs(),
                repeats,
                completed: completed == 1,
                unreleased,
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
                // ZREVRANGE, not ZRANGE REV: Redis before 6.2 has no REV.
                redis::cmd("ZREVRANGE")
                    .arg(self.keys.batches())
                    .arg(0)
                    .arg(stop),
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
    /// round trips (the ids with their times, then their entries). An id
    /// whose entry is gone (relayed by another runner in between) is left
    /// out; an entry that does not decode (written by hand) is logged and
    /// returned with an empty outcome, so the relay deletes it.
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
        let raw: Vec<Option<Vec<u8>>> = self
            .conn
            .query(
                redis::cmd("HMGET")
                    .arg(self.keys.outbox_entries())
                    .arg(listed.iter().map(|(id, _)| id).collect::<Vec<_>>()),
            )
            .await?;
        let mut entries = Vec::with_capacity(listed.len());
        for ((id, at_ms), raw) in listed.into_iter().zip(raw) {
            let Some(raw) = raw else { continue };
            #[derive(serde::Deserialize)]
            struct Stored {
                outcome: String,
                #[serde(default)]
                detail: String,
                #[serde(default)]
                batch: String,
                #[serde(default)]
                chain: String,
            }
            let entry = match serde_json::from_slice::<Stored>(&raw) {
                Ok(stored) => OutboxEntry {
                    id,
                    at_ms,
                    outcome: stored.outcome,
                    detail: stored.detail,
                    batch: stored.batch,
                    chain: stored.chain,
                },
                Err(e) => {
                    tracing::error!(queue = self.name(), job = %id, error = %e, "an outbox entry does not decode; dropped, its batch or chain does not hear of this job");
                    OutboxEntry {
                        id,
                        at_ms,
                        outcome: String::new(),
                        detail: String::new(),
                        batch: String::new(),
                        chain: String::new(),
                    }
                }
            };
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Moves entries that could not be relayed now a minute later in the
    /// outbox's order, so entries stuck on an error do not hold back the
    /// others (each pass reads the oldest).
    pub(crate) async fn outbox_defer(&self, entries: &[&OutboxEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(self.keys.outbox()).arg("XX");
        for entry in entries {
            let later = entry.at_ms.parse::<f64>().unwrap_or(0.0) + 60_000.0;
            cmd.arg(later).arg(&entry.id);
        }
        self.conn.query::<i64>(&cmd).await.map(drop)
    }

    /// Notes on the completed step `id` that its chain stopped after it,
    /// and why (the next step could not be written), for
    /// [`ChainHandle::wait`](crate::workflow::ChainHandle::wait) to report.
    /// Nothing is written when the step's hash is gone.
    pub(crate) async fn mark_chain_stopped(&self, id: &str, reason: &str) -> Result<()> {
        let key = self.keys.job(id);
        let exists: bool = self.conn.query(redis::cmd("EXISTS").arg(&key)).await?;
        if exists {
            self.conn
                .query::<i64>(
                    redis::cmd("HSET")
                        .arg(&key)
                        .arg("chain_stopped")
                        .arg(reason),
                )
                .await?;
        }
        Ok(())
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
            .key(self.keys.outbox_entries());
        for entry in entries {
            invocation.arg(&entry.id).arg(&entry.at_ms);
        }
        self.invoke(&invocation).await
    }
}
