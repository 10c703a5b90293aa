//! Enqueue: a batch of new jobs, each hash written together with its pending
//! (or scheduled) entry by `enqueue.lua`.

use serde::Serialize;
use serde_json::value::RawValue;

use super::{NewJob, Queue};
use crate::error::{Error, Result};
use crate::scripts::SCRIPTS;

/// Longest job id accepted.
const MAX_ID_LEN: usize = 256;

impl Queue {
    /// Enqueues one job with `payload` (any serializable value; the reference
    /// uses JSON objects) and returns its id.
    ///
    /// # Cancellation safety
    /// Dropping the future may or may not have enqueued the job; never half
    /// of it (the hash and the pending entry are written by one script).
    pub async fn enqueue<P: Serialize + ?Sized>(&self, payload: &P) -> Result<String> {
        let mut ids = self.submit_many(vec![NewJob::new(payload)?]).await?;
        Ok(ids.remove(0))
    }

    /// Enqueues a batch of jobs in one round trip, in order; returns their ids.
    ///
    /// # Cancellation safety
    /// As [`enqueue`](Self::enqueue): all of the batch or none of it.
    pub async fn enqueue_many<P: Serialize>(&self, payloads: &[P]) -> Result<Vec<String>> {
        let jobs = payloads.iter().map(NewJob::new).collect::<Result<_>>()?;
        self.submit_many(jobs).await
    }

    /// Enqueues one job with its name and options.
    ///
    /// # Cancellation safety
    /// As [`enqueue`](Self::enqueue).
    pub async fn submit(&self, job: NewJob) -> Result<String> {
        let mut ids = self.submit_many(vec![job]).await?;
        Ok(ids.remove(0))
    }

    /// Enqueues a batch of jobs with their names and options in one round
    /// trip; returns their ids. A job whose id exists already is left as it
    /// is (see [`EnqueueOptions::id`](super::EnqueueOptions::id)).
    ///
    /// # Cancellation safety
    /// As [`enqueue`](Self::enqueue): all of the batch or none of it.
    pub async fn submit_many(&self, jobs: Vec<NewJob>) -> Result<Vec<String>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = SCRIPTS.enqueue.prepare_invoke();
        invocation
            .key(self.keys.pending())
            .key(self.keys.stats())
            .key(self.keys.scheduled());
        let mut ids = Vec::with_capacity(jobs.len());
        for job in &jobs {
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
            invocation
                .key(self.keys.job(&id))
                .arg(&id)
                .arg(&job.payload)
                .arg(job.options.when)
                .arg(extra.len());
            for (field, value) in extra {
                invocation.arg(field).arg(value);
            }
            ids.push(id);
        }
        let _: usize = self.invoke(&invocation).await?;
        Ok(ids)
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
