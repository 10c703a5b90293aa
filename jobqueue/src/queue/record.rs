//! Jobs as they are read back: [`JobRecord`], untrusted, and the
//! [`JobStatus`] its `status` field names.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Progress;
use crate::error::{Error, Result};

/// The state a job's `status` field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Cancelled, or expired before it started (`cancel_reason` says which),
    /// listed in `cancelled`.
    Cancelled,
    /// A batch's callback waiting for its batch to complete, in no list
    /// (not in [`ALL`](Self::ALL), which lists the states with a list).
    Waiting,
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
            Self::Cancelled => "cancelled",
            Self::Waiting => "waiting",
        }
    }

    /// Every state, in the order a job passes through them.
    pub const ALL: [Self; 6] = [
        Self::Scheduled,
        Self::Pending,
        Self::Processing,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];
}

/// Parses a stored `status` value (`"pending"`, …); anything else is an
/// [`Error::InvalidStatus`].
impl FromStr for JobStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .chain([Self::Waiting])
            .find(|status| status.as_str() == s)
            .ok_or_else(|| Error::InvalidStatus {
                status: s.to_owned(),
            })
    }
}

/// The stored value, as [`JobStatus::as_str`].
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
        self.field("status").and_then(|s| s.parse().ok())
    }

    /// The `job` field: the handler name, absent for jobs enqueued by
    /// reference clients.
    pub fn name(&self) -> Option<&str> {
        self.field("job")
    }

    /// The number of claims so far (`attempts`; a missing field counts as 0,
    /// as the reference writes it only at enqueue).
    pub fn attempts(&self) -> Result<u32> {
        self.number("attempts")
            .and_then(|n| self.small(n.unwrap_or(0), "attempts"))
    }

    /// The job's own `max_attempts`, when it was enqueued with one.
    pub fn max_attempts(&self) -> Result<Option<u32>> {
        self.number("max_attempts")?
            .map(|n| self.small(n, "max_attempts"))
            .transpose()
    }

    /// A millisecond timestamp field such as `enqueued_at_ms`, in Redis
    /// server milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self, name: &str) -> Result<Option<u64>> {
        self.number(name)
    }

    /// When Redis received the job (`enqueued_at_ms`), by Redis's clock.
    pub fn enqueued_at(&self) -> Result<Option<SystemTime>> {
        Ok(self
            .timestamp_ms("enqueued_at_ms")?
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)))
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

    /// Why the job was cancelled (or that it expired), once it was, or
    /// since its cancel was requested while it runs.
    pub fn cancel_reason(&self) -> Option<&str> {
        self.field("cancel_reason")
    }

    /// The progress the job last reported (`progress`, `progress_at_ms`),
    /// `None` when it reported none; see
    /// [`JobContext::progress`](crate::JobContext::progress). It stays after
    /// the run ends, as the last value reported.
    pub fn progress(&self) -> Result<Option<Progress>> {
        Progress::of(self)
    }

    /// A numeric field: decimal digits only, as the scripts require (Rust's
    /// own parser would also take a leading `+`).
    fn number(&self, name: &str) -> Result<Option<u64>> {
        match self.field(name) {
            None | Some("") => Ok(None),
            Some(v) if v.bytes().all(|b| b.is_ascii_digit()) => v
                .parse()
                .map(Some)
                .map_err(|_| self.malformed(format!("{name} is {v:?}, out of range"))),
            Some(v) => Err(self.malformed(format!("{name} is {v:?}, not a number"))),
        }
    }

    fn small(&self, n: u64, name: &str) -> Result<u32> {
        u32::try_from(n).map_err(|_| self.malformed(format!("{name} is {n}, out of range")))
    }

    fn malformed(&self, reason: impl Into<String>) -> Error {
        Error::malformed(format!("job {}", self.id), reason)
    }
}
