//! Jobs as they are written, claimed and read back.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::keys::validate_name;

/// A job to enqueue: its JSON payload and the options stored with it.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Set when the id must be known before the queue is chosen (sharding).
    pub(crate) id: Option<String>,
    pub(crate) payload: String,
    pub(crate) name: Option<String>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) visibility: Option<Duration>,
    pub(crate) when: When,
}

/// When a new job may first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum When {
    /// At once.
    #[default]
    Now,
    /// This long after Redis receives it.
    After(Duration),
    /// At this time (ms since the Unix epoch).
    At(u64),
}

impl When {
    /// The enqueue script's notation: "", "+ms" or "@ms".
    pub(crate) fn arg(self) -> String {
        match self {
            Self::Now => String::new(),
            Self::After(d) => format!("+{}", d.as_millis()),
            Self::At(ms) => format!("@{ms}"),
        }
    }
}

impl NewJob {
    /// A job carrying `payload`, serialized as JSON.
    pub fn new<P: Serialize + ?Sized>(payload: &P) -> Result<Self> {
        Ok(Self::from_json(serde_json::to_string(payload)?))
    }

    /// A job carrying an already serialized JSON payload (checked at enqueue).
    pub fn from_json(payload: impl Into<String>) -> Self {
        Self {
            id: None,
            payload: payload.into(),
            name: None,
            max_attempts: None,
            visibility: None,
            when: When::Now,
        }
    }

    /// Holds the job back for `delay`: it waits in `queue:{name}:scheduled`
    /// and moves to pending once due (within a runner's sweep interval).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.when = if delay.is_zero() {
            When::Now
        } else {
            When::After(delay)
        };
        self
    }

    /// Holds the job back until `time` (this process's clock).
    pub fn at(mut self, time: std::time::SystemTime) -> Self {
        let ms = time
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.when = When::At(ms);
        self
    }

    /// The handler name stored in the `job` field, used by runners to pick
    /// the code that runs it.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How many claims the job gets before it fails for good; stored with the
    /// job so every worker applies the same limit. Default: the queue's.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// How long a claim lasts without renewal. Default: the queue's.
    pub fn visibility(mut self, visibility: Duration) -> Self {
        self.visibility = Some(visibility);
        self
    }

    /// The extra hash fields this job stores besides the reference's.
    pub(crate) fn extra_fields(&self) -> Result<Vec<(&'static str, String)>> {
        let mut fields = Vec::new();
        if let Some(name) = &self.name {
            validate_name(name)?;
            fields.push(("job", name.clone()));
        }
        if let Some(max) = self.max_attempts {
            if max == 0 {
                return Err(Error::InvalidOption {
                    option: "max_attempts",
                    reason: "must be at least 1".into(),
                });
            }
            fields.push(("max_attempts", max.to_string()));
        }
        if let Some(visibility) = self.visibility {
            if visibility < Duration::from_millis(100) {
                return Err(Error::InvalidOption {
                    option: "visibility",
                    reason: format!("{visibility:?} is under the 100 ms minimum"),
                });
            }
            fields.push((
                "visibility_ms",
                crate::queue::millis(visibility, "visibility")?.to_string(),
            ));
        }
        Ok(fields)
    }
}

/// The state a job's `status` field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum JobStatus {
    /// Waiting for its time in `scheduled` (delayed, or a retry in backoff).
    Scheduled,
    /// Waiting in `pending`.
    Pending,
    /// Claimed by a worker, listed in `processing`.
    Processing,
    /// Finished with a result, listed in `completed`.
    Completed,
    /// Out of attempts or failed for good, listed in `failed`.
    Failed,
}

impl JobStatus {
    /// The value stored in the `status` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// The status a stored `status` value names, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "scheduled" => Self::Scheduled,
            "pending" => Self::Pending,
            "processing" => Self::Processing,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's hash as read from Redis, untrusted: the raw fields are kept, and
/// each typed accessor says what is wrong when a field is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRecord {
    id: String,
    fields: BTreeMap<String, String>,
}

impl JobRecord {
    pub(crate) fn new(id: impl Into<String>, fields: BTreeMap<String, String>) -> Self {
        Self {
            id: id.into(),
            fields,
        }
    }

    /// The job's id (the key's suffix, whatever the `id` field says).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Every field of the hash, as stored.
    pub fn fields(&self) -> &BTreeMap<String, String> {
        &self.fields
    }

    /// One field, as stored.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The `status` field, when it names one of the four states.
    pub fn status(&self) -> Option<JobStatus> {
        self.field("status").and_then(JobStatus::parse)
    }

    /// The `job` field: the handler name, absent for jobs enqueued by
    /// reference clients.
    pub fn name(&self) -> Option<&str> {
        self.field("job")
    }

    /// The number of claims so far (`attempts`; a missing field counts as 0,
    /// as the reference writes it only at enqueue).
    pub fn attempts(&self) -> Result<u32> {
        self.number("attempts").map(|n| n.unwrap_or(0) as u32)
    }

    /// The job's own `max_attempts`, when it was enqueued with one.
    pub fn max_attempts(&self) -> Result<Option<u32>> {
        self.number("max_attempts").map(|n| n.map(|n| n as u32))
    }

    /// A millisecond timestamp field such as `enqueued_at_ms`.
    pub fn timestamp_ms(&self, name: &str) -> Result<Option<u64>> {
        self.number(name)
    }

    /// The payload's JSON text, checked to be valid JSON.
    pub fn payload_json(&self) -> Result<&RawValue> {
        let text = self
            .field("payload")
            .ok_or_else(|| self.malformed("payload field is missing"))?;
        serde_json::from_str(text)
            .map_err(|e| self.malformed(format!("payload is not valid JSON: {e}")))
    }

    /// The payload, deserialized.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T> {
        let raw = self.payload_json()?;
        serde_json::from_str(raw.get())
            .map_err(|e| self.malformed(format!("payload does not fit the expected type: {e}")))
    }

    /// The result a completed job stored, deserialized; `None` before completion.
    pub fn result<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        match self.field("result") {
            None => Ok(None),
            Some(text) => serde_json::from_str(text)
                .map(Some)
                .map_err(|e| self.malformed(format!("result is not valid JSON: {e}"))),
        }
    }

    /// The last error recorded (kept after a later success, as history).
    pub fn last_error(&self) -> Option<&str> {
        self.field("last_error").filter(|e| !e.is_empty())
    }

    fn number(&self, name: &str) -> Result<Option<u64>> {
        match self.field(name) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| self.malformed(format!("{name} is {v:?}, not a number"))),
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> Error {
        Error::malformed(format!("job {}", self.id), reason)
    }
}

/// A job this process holds a claim on. Settle it with
/// [`Queue::complete`](crate::Queue::complete),
/// [`Queue::fail`](crate::Queue::fail) or
/// [`Queue::release`](crate::Queue::release); keep the claim alive with
/// [`Queue::extend`](crate::Queue::extend) while it runs.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub(crate) token: String,
    pub(crate) attempts: u32,
    pub(crate) claimed_at_ms: u64,
    pub(crate) lease_deadline_ms: u64,
    pub(crate) payload: Box<RawValue>,
    pub(crate) record: JobRecord,
}

impl ClaimedJob {
    /// Decodes one entry of the claim script's reply. The payload must be
    /// valid JSON and `attempts` a number; when either is not, the job comes
    /// back with the problem, to be failed with it as the reason.
    pub(crate) fn decode(
        id: String,
        token: String,
        claimed_at_ms: &str,
        deadline_ms: &str,
        fields: BTreeMap<String, String>,
    ) -> (Self, Option<Error>) {
        let record = JobRecord::new(id, fields);
        let attempts = record.attempts();
        let payload = record.payload_json().map(ToOwned::to_owned);
        let mut job = Self::from_claim(String::new(), token);
        job.claimed_at_ms = claimed_at_ms.parse().unwrap_or(0);
        job.lease_deadline_ms = deadline_ms.parse().unwrap_or(0);
        job.record = record;
        match (attempts, payload) {
            (Ok(attempts), Ok(payload)) => {
                job.attempts = attempts;
                job.payload = payload;
                (job, None)
            }
            (Err(e), _) | (_, Err(e)) => (job, Some(e)),
        }
    }

    /// A handle on a claim made elsewhere (another process, a reference
    /// client) from its id and token, to settle or extend it. Only the token
    /// matters to Redis: a wrong or empty one changes nothing. The handle
    /// carries no payload (it reads as `null`) and reports 0 attempts.
    pub fn from_claim(id: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            attempts: 0,
            claimed_at_ms: 0,
            lease_deadline_ms: 0,
            payload: RawValue::from_string("null".into()).expect("null is JSON"),
            record: JobRecord::new(id, BTreeMap::new()),
        }
    }

    /// The job's id.
    pub fn id(&self) -> &str {
        self.record.id()
    }

    /// The claim token that fences every change this claim makes.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Which claim this is: 1 for the first.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the claim was made, in Redis server milliseconds.
    pub fn claimed_at_ms(&self) -> u64 {
        self.claimed_at_ms
    }

    /// When the lease runs out unless renewed, in Redis server milliseconds.
    pub fn lease_deadline_ms(&self) -> u64 {
        self.lease_deadline_ms
    }

    /// The handler name (`job` field), if the job has one.
    pub fn name(&self) -> Option<&str> {
        self.record.name()
    }

    /// The payload's JSON text.
    pub fn payload_json(&self) -> &RawValue {
        &self.payload
    }

    /// The payload, deserialized.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_str(self.payload.get())?)
    }

    /// The whole hash as it was right after the claim.
    pub fn record(&self) -> &JobRecord {
        &self.record
    }
}

/// What a settling call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "a claim that no longer holds the job means another worker owns it"]
pub enum Ack {
    /// The job is now completed.
    Completed,
    /// The job went back to pending for another attempt.
    Retrying,
    /// The job is now in the dead letters (`failed`).
    Failed,
    /// The job went back to pending without charging the attempt.
    Released,
    /// The lease was renewed.
    Extended,
    /// This claim had already settled the job; nothing changed now. Also what
    /// a call returns when its first send was applied but its reply lost, and
    /// the connection retry found the work done.
    Duplicate,
    /// The claim no longer holds the job: its lease ran out and a sweep took
    /// it back, or the token is empty or unknown. Nothing changed.
    LeaseLost,
}

impl Ack {
    /// True when the call changed the job's state.
    pub fn is_applied(self) -> bool {
        !matches!(self, Self::Duplicate | Self::LeaseLost)
    }
}

#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::{ClaimedJob, JobRecord};

    /// Field values as Redis might hold them: numbers, JSON, or junk.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u32>().prop_map(|n| n.to_string()),
            Just(String::new()),
            Just("{\"kind\":\"email\",\"n\":1}".to_owned()),
            Just("[1,2,3]".to_owned()),
            "\\PC{0,16}",
        ]
    }

    fn hash() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map(
            prop_oneof![
                Just("attempts".to_owned()),
                Just("payload".to_owned()),
                Just("status".to_owned()),
                Just("max_attempts".to_owned()),
                Just("enqueued_at_ms".to_owned()),
                "[a-z_]{1,12}",
            ],
            value(),
            0..8,
        )
    }

    proptest! {
        /// The decoder never panics on whatever a hash holds, and hands out
        /// a job exactly when its attempts and payload are usable.
        #[test]
        fn decoding_a_claimed_hash_fails_exactly_on_unusable_fields(fields in hash()) {
            let attempts_ok = match fields.get("attempts") {
                None => true,
                Some(v) => v.is_empty() || v.parse::<u64>().is_ok(),
            };
            let payload_ok = fields
                .get("payload")
                .is_some_and(|p| serde_json::from_str::<serde_json::Value>(p).is_ok());
            let (job, problem) = ClaimedJob::decode("id".into(), "token".into(), "1", "2", fields.clone());
            prop_assert_eq!(problem.is_none(), attempts_ok && payload_ok, "{:?}", problem);
            if problem.is_none() {
                prop_assert_eq!(job.payload_json().get(), fields["payload"].as_str());
            }
            let record = JobRecord::new("id", fields);
            let _ = (record.status(), record.max_attempts(), record.timestamp_ms("enqueued_at_ms"), record.last_error());
        }
    }
}
