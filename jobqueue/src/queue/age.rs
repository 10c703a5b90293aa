//! How long the oldest waiting job has waited: the figure every job system
//! exposes for alerting (asynq's queue latency), because a backlog that
//! grows slowly never shows in the depth alone.

use std::time::Duration;

use redis::{RedisResult, Value};

use super::Queue;
use crate::error::Result;
use crate::keys::{MAX_PRIORITY, MIN_PRIORITY};

/// The job-hash fields that tell when a job became ready to run.
const READY_FIELDS: [&str; 2] = ["enqueued_at_ms", "scheduled_for_ms"];

impl Queue {
    /// How long the oldest job waiting in `pending` or a priority lane
    /// (`pending:{level}`) has been ready to run, by the Redis clock; `None`
    /// when those lanes are empty.
    ///
    /// Each lane is first in, first out, so its oldest job is the one it
    /// hands out next (its right end); the answer is the oldest of those.
    /// A job is ready from its `enqueued_at_ms`, or from its
    /// `scheduled_for_ms` when that is later: a delayed job or a retry that
    /// waited out its backoff has waited only since it came due, so it does
    /// not look an hour old the moment it is promoted. A job sent back by a
    /// sweep or a release keeps these stamps, so its wait counts from its
    /// enqueue (it has waited that long for its work to be done).
    ///
    /// Jobs in the lanes of rate keys (`keyed:{key}`) are left out on
    /// purpose: a throttled key's jobs wait by design, so their age would
    /// measure the rate an operator set rather than a shortage of workers,
    /// and a queue may have thousands of keys, each one more read per call.
    /// Their count is in [`Stats::keyed_depth`](super::Stats::keyed_depth).
    ///
    /// Two pipelined round trips, no script: the lanes' oldest ids, then
    /// those jobs' stamps with `TIME` (in the same pipeline, so on a cluster
    /// the clock read is the one of the node that holds the queue, the
    /// clock that stamped the jobs). A job claimed in between still has its
    /// stamps and counts as waiting until then; one whose hash is gone, or
    /// whose stamp is not a decimal timestamp, is skipped.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn oldest_pending_age(&self) -> Result<Option<Duration>> {
        let lanes: Vec<String> = (MIN_PRIORITY..=MAX_PRIORITY)
            .map(|level| self.keys.priority_lane(level))
            .collect();
        let mut heads = redis::pipe();
        for lane in &lanes {
            heads.cmd("LINDEX").arg(lane).arg(-1);
        }
        // A lane key of another type (written by hand) holds no job; it
        // must not hide the other lanes' answers.
        heads.ignore_errors();
        let replies: Vec<RedisResult<Value>> = self
            .conn
            .run(|mut c| {
                let heads = &heads;
                async move { heads.query_async(&mut c).await }
            })
            .await?;
        let ids: Vec<String> = replies
            .into_iter()
            .filter_map(|reply| match reply {
                Ok(Value::BulkString(id)) => String::from_utf8(id).ok(),
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return Ok(None);
        }

        let mut stamps = redis::pipe();
        for id in &ids {
            stamps
                .cmd("HMGET")
                .arg(self.keys.job(id))
                .arg(&READY_FIELDS[..]);
        }
        stamps.cmd("TIME");
        stamps.ignore_errors();
        let mut replies: Vec<RedisResult<Value>> = self
            .conn
            .run(|mut c| {
                let stamps = &stamps;
                async move { stamps.query_async(&mut c).await }
            })
            .await?;
        let time = match replies.pop() {
            Some(reply) => reply?,
            None => Value::Nil,
        };
        let (secs, micros): (u64, u64) =
            redis::from_redis_value(time).map_err(redis::RedisError::from)?;
        let now_ms = secs.saturating_mul(1_000) + micros / 1_000;
        let oldest = replies
            .into_iter()
            .filter_map(|reply| {
                let fields: Vec<Option<String>> = redis::from_redis_value(reply.ok()?).ok()?;
                ready_at_ms(&fields)
            })
            .min();
        Ok(oldest.map(|ready| Duration::from_millis(now_ms.saturating_sub(ready))))
    }
}

/// When a job became ready, from its [`READY_FIELDS`]: the later of the two
/// stamps that are decimal timestamps, or `None` without an enqueue stamp.
fn ready_at_ms(fields: &[Option<String>]) -> Option<u64> {
    let stamp = |i: usize| fields.get(i)?.as_deref().and_then(decimal);
    let enqueued = stamp(0)?;
    Some(stamp(1).map_or(enqueued, |due| due.max(enqueued)))
}

/// Decimal digits only, as the data model requires of every number (Rust's
/// own parse would take a leading `+`).
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_ready_from_the_later_of_its_stamps() {
        let f = |e: Option<&str>, s: Option<&str>| {
            ready_at_ms(&[e.map(str::to_owned), s.map(str::to_owned)])
        };
        assert_eq!(f(Some("1000"), None), Some(1000));
        assert_eq!(f(Some("1000"), Some("5000")), Some(5000), "came due later");
        assert_eq!(f(Some("5000"), Some("1000")), Some(5000));
        assert_eq!(f(Some("1000"), Some("+9000")), Some(1000), "not a stamp");
        assert_eq!(f(None, Some("5000")), None, "no enqueue stamp");
        assert_eq!(f(Some("-1"), None), None);
        assert_eq!(f(Some(""), None), None);
    }
}
