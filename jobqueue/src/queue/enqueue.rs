//! Enqueue: a batch of new jobs, each hash written together with its pending
//! (or scheduled) entry by `enqueue.lua`, in bounded chunks.

use redis::{FromRedisValue, Value};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{NewJob, Queue};
use crate::error::{Error, Result};
use crate::scripts::SCRIPTS;

/// Longest job id accepted.
const MAX_ID_LEN: usize = 256;

/// Most jobs one enqueue script call writes. Measured with SLOWLOG on a
/// two-core machine, a call costs about 5 µs of Redis time per job (up to
/// 500 per call; past that the cost per job grows: 1,000 took 9 to 14 ms)
/// plus 2 ns (quiet machine) to 8 ns (busy) per byte of arguments. 200
/// small jobs take about 1 ms, so no call holds Redis (and every other
/// client with it) for more than a few ms.
pub(crate) const ENQUEUE_CHUNK_JOBS: usize = 200;

/// Most bytes of arguments (ids, payloads, extra fields) one enqueue script
/// call carries: 256 KiB is 0.5 to 2 ms of copying into Lua and into the
/// hashes. A job larger than this (up to `max_payload_bytes`) goes alone.
pub(crate) const ENQUEUE_CHUNK_BYTES: usize = 256 * 1024;

/// What an enqueue did with one job.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Enqueued {
    /// The job's id: the new job's, or for a unique job whose lock another
    /// job holds, that job's.
    pub id: String,
    /// True when nothing was written: a unique job found its lock held by
    /// the job [`id`](Self::id) names.
    pub existing: bool,
}

/// One job checked and ready for the script: its id, the extra fields it
/// stores, and how many bytes of arguments it sends.
pub(super) struct Checked {
    job: NewJob,
    pub(super) id: String,
    extra: Vec<(&'static str, String)>,
    pub(super) bytes: usize,
}

impl Queue {
    /// Enqueues one job with `payload` (any serializable value; the reference
    /// uses JSON objects) and returns its id.
    ///
    /// # Cancellation safety
    /// Dropping the future may or may not have enqueued the job; never half
    /// of it (the hash and the pending entry are written by one script).
    pub async fn enqueue<P: Serialize + ?Sized>(&self, payload: &P) -> Result<String> {
        self.submit(NewJob::new(payload)?).await
    }

    /// Enqueues a batch of jobs, in order; returns their ids. Sent in
    /// bounded script calls, as [`submit_many`](Self::submit_many) explains.
    ///
    /// # Cancellation safety
    /// As [`submit_many`](Self::submit_many).
    pub async fn enqueue_many<P: Serialize>(&self, payloads: &[P]) -> Result<Vec<String>> {
        let jobs = payloads.iter().map(NewJob::new).collect::<Result<_>>()?;
        self.submit_many(jobs).await
    }

    /// Enqueues one job with its name and options.
    ///
    /// # Cancellation safety
    /// As [`enqueue`](Self::enqueue).
    ///
    /// Jobs submitted one at a time by many tasks at once are combined (see
    /// [`submit_many`](Self::submit_many)).
    pub async fn submit(&self, job: NewJob) -> Result<String> {
        let mut ids = self.submit_many(vec![job]).await?;
        Ok(ids.remove(0))
    }

    /// Like [`submit_many`](Self::submit_many), saying for each job whether
    /// it was written or was a unique job whose lock another job holds (its
    /// id is then that job's).
    ///
    /// # Cancellation safety
    /// As [`submit_many`](Self::submit_many).
    pub async fn submit_all(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        let mut checked = jobs
            .into_iter()
            .map(|job| self.check(job))
            .collect::<Result<Vec<_>>>()?;
        if checked.len() == 1
            && let Some(job) = checked.pop()
        {
            return Ok(vec![self.submit_combined(job).await?]);
        }
        let mut out: Vec<Enqueued> = checked
            .iter()
            .map(|c| Enqueued {
                id: c.id.clone(),
                existing: false,
            })
            .collect();
        let mut start = 0;
        while start < checked.len() {
            let mut end = start + 1;
            let mut bytes = checked[start].bytes;
            while end < checked.len()
                && end - start < ENQUEUE_CHUNK_JOBS
                && bytes + checked[end].bytes <= ENQUEUE_CHUNK_BYTES
            {
                bytes += checked[end].bytes;
                end += 1;
            }
            for (n, owner) in self.write_chunk(&checked[start..end]).await? {
                out[start + n] = Enqueued {
                    id: owner,
                    existing: true,
                };
            }
            start = end;
        }
        Ok(out)
    }

    /// Enqueues a batch of jobs with their names and options; returns their
    /// ids. A job whose id exists already is left as it is (see
    /// [`EnqueueOptions::id`](super::EnqueueOptions::id)).
    ///
    /// A batch of one job is combined with the single jobs other tasks
    /// submit to this queue (and its clones) meanwhile: while one enqueue
    /// call is in flight, they wait and go together in the next call, so
    /// fifty callers enqueueing one job each cost Redis a few script calls
    /// instead of fifty. A lone caller's job goes at once, alone.
    ///
    /// Every job is checked (payload size and JSON, names, options) before
    /// anything is sent: a bad job anywhere refuses the whole batch with
    /// nothing written. The batch is then written in chunks of at most 200
    /// jobs or 256 KiB, one script call each, one after the other and in
    /// order, so that no call holds Redis for more than a few ms however big
    /// the batch (one call of 100,000 jobs held it for over a second, and
    /// every other client with it).
    ///
    /// # Atomicity and retries
    /// Each chunk is atomic: each of its jobs is written whole (hash and
    /// pending or scheduled entry) or not at all, and a chunk is written
    /// entirely or not at all. The batch as a whole is not: runners may
    /// start on the first chunks while later ones are being sent, and when
    /// an error ends the call, the chunks before the failed one stay
    /// enqueued (the error does not say how many). A chunk whose reply is
    /// lost (a connection error, or no reply within the response timeout)
    /// is sent again with the same ids, and the script skips the ids that
    /// exist, so the retry writes each job once. To resend a whole batch
    /// after an error without duplicating its first chunks, give the jobs
    /// ids ([`EnqueueOptions::id`](super::EnqueueOptions::id)): the resent
    /// jobs that were written are skipped.
    ///
    /// # Cancellation safety
    /// Dropping the future leaves a prefix of the chunks enqueued (none,
    /// some or all); never half of a chunk.
    pub async fn submit_many(&self, jobs: Vec<NewJob>) -> Result<Vec<String>> {
        Ok(self
            .submit_all(jobs)
            .await?
            .into_iter()
            .map(|e| e.id)
            .collect())
    }

    /// Checks one job and picks its id; writes nothing.
    pub(super) fn check(&self, job: NewJob) -> Result<Checked> {
        let size = job.payload.len();
        if size > self.options.max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                size,
                limit: self.options.max_payload_bytes,
            });
        }
        serde_json::from_str::<&RawValue>(&job.payload)?;
        let extra = job.extra_fields()?;
        let id = match &job.options.id {
            Some(id) => check_id(id)?.to_owned(),
            None => crate::id::random_hex(),
        };
        let bytes = size
            + 2 * id.len()
            + extra
                .iter()
                .map(|(field, value)| field.len() + value.len())
                .sum::<usize>();
        Ok(Checked {
            job,
            id,
            extra,
            bytes,
        })
    }

    /// Writes one chunk of checked jobs with one script call; returns the
    /// unique jobs not written, by index in the chunk, with the id of the
    /// job holding their lock.
    pub(super) async fn write_chunk(&self, chunk: &[Checked]) -> Result<Vec<(usize, String)>> {
        let mut invocation = SCRIPTS.enqueue.prepare_invoke();
        invocation
            .key(self.keys.pending())
            .key(self.keys.stats())
            .key(self.keys.scheduled());
        // A batch of one kind of job has the same extra fields in every job:
        // they are sent once for the call.
        let shared: &[(&str, String)] = match chunk.split_first() {
            Some((first, rest)) if rest.iter().all(|c| c.extra == first.extra) => &first.extra,
            _ => &[],
        };
        invocation.arg(shared.len());
        for (field, value) in shared {
            invocation.arg(*field).arg(value);
        }
        for c in chunk {
            let own: &[(&str, String)] = if shared.is_empty() { &c.extra } else { &[] };
            invocation
                .key(self.keys.job(&c.id))
                .arg(&c.id)
                .arg(&c.job.payload)
                .arg(c.job.options.when)
                .arg(own.len());
            for (field, value) in own {
                invocation.arg(*field).arg(value);
            }
        }
        let (_written, duplicates): (usize, Vec<Value>) = self.invoke(&invocation).await?;
        duplicates
            .chunks(2)
            .map(|pair| match pair {
                [n, owner] => {
                    let n = usize::from_redis_value(n.clone())
                        .map_err(|e| Error::malformed("enqueue script reply", e.to_string()))?;
                    let owner = String::from_redis_value(owner.clone())
                        .map_err(|e| Error::malformed("enqueue script reply", e.to_string()))?;
                    n.checked_sub(1)
                        .filter(|&i| i < chunk.len())
                        .map(|i| (i, owner))
                        .ok_or_else(|| {
                            Error::malformed("enqueue script reply", format!("job number {n}"))
                        })
                }
                _ => Err(Error::malformed(
                    "enqueue script reply",
                    "an odd-length duplicates list",
                )),
            })
            .collect()
    }
}

/// A caller-chosen id: not empty, at most 256 bytes, no whitespace or
/// control characters (it becomes part of a key name and of log lines).
fn check_id(id: &str) -> Result<&str> {
    let problem = if id.is_empty() {
        Some("it is empty")
    } else if id.len() > MAX_ID_LEN {
        Some("it is longer than 256 bytes")
    } else if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace or a control character")
    } else {
        None
    };
    match problem {
        Some(reason) => Err(Error::InvalidName {
            name: id.to_owned(),
            reason: reason.to_owned(),
        }),
        None => Ok(id),
    }
}
