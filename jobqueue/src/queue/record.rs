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

    /// The job as one JSON object, for tools that print it (`jobqueue show
    /// --json`): every stored field, typed where the data model says what
    /// it holds. A field that does not parse as its type keeps its stored
    /// text, so a malformed field of another client's job shows as it is
    /// instead of failing the read.
    ///
    /// - Numbers: the counts (`attempts`, `max_attempts`, `snoozes`,
    ///   `priority`, which may be negative) and the durations and
    ///   timestamps (every field ending in `_ms` or `_s`), when they are
    ///   decimal digits (the rule of [the data model](crate::docs::data_model)'s
    ///   Numbers).
    /// - Each timestamp (every `*_at_ms`, and `scheduled_for_ms`) is also
    ///   given as RFC 3339 UTC text to the millisecond under its name
    ///   without `_ms` (`enqueued_at_ms: 1764568318123` and `enqueued_at:
    ///   "2025-12-01T05:51:58.123Z"`), `null` for 0 (`claimed_at_ms` is 0
    ///   while no claim holds the job). A stored field of that name is
    ///   kept, not replaced.
    /// - JSON values: `payload`, `result`, `progress` and `chain`, parsed.
    /// - `id`, from the key, when the hash has no `id` field.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        let mut out = serde_json::Map::new();
        for (name, text) in &self.fields {
            out.insert(name.clone(), typed_field(name, text));
        }
        for (name, text) in &self.fields {
            let Some(base) = name.strip_suffix("_ms") else {
                continue;
            };
            if !(base.ends_with("_at") || name == "scheduled_for_ms") || out.contains_key(base) {
                continue;
            }
            let when = decimal(text)
                .filter(|ms| *ms > 0)
                .and_then(|ms| i64::try_from(ms).ok())
                .and_then(jobqueue_rules::utc_millis_text);
            out.insert(base.to_owned(), when.map_or(Value::Null, Value::String));
        }
        out.entry("id")
            .or_insert_with(|| Value::String(self.id.clone()));
        Value::Object(out)
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

/// Decimal digits only (no sign, space or point), within `u64`.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// One stored field as [`JobRecord::to_json`] gives it.
fn typed_field(name: &str, text: &str) -> serde_json::Value {
    use serde_json::Value;
    let as_text = || Value::String(text.to_owned());
    match name {
        "payload" | "result" | "progress" | "chain" => {
            serde_json::from_str(text).unwrap_or_else(|_| as_text())
        }
        "priority" => {
            let level = match text.strip_prefix('-') {
                Some(digits) => decimal(digits)
                    .and_then(|n| i64::try_from(n).ok())
                    .map(|n| Value::from(-n)),
                None => decimal(text).map(Value::from),
            };
            level.unwrap_or_else(as_text)
        }
        "attempts" | "max_attempts" | "snoozes" => decimal(text).map_or_else(as_text, Value::from),
        _ if name.ends_with("_ms") || name.ends_with("_s") => {
            decimal(text).map_or_else(as_text, Value::from)
        }
        _ => as_text(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(fields: &[(&str, &str)]) -> JobRecord {
        let fields = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        JobRecord::new("ab12", fields)
    }

    #[test]
    fn to_json_gives_numbers_json_values_and_utc_times() {
        let job = record(&[
            ("id", "ab12"),
            ("status", "completed"),
            ("attempts", "2"),
            ("max_attempts", "5"),
            ("priority", "-3"),
            ("visibility_ms", "30000"),
            ("completed_ttl_s", "60"),
            ("enqueued_at_ms", "1764568318123"),
            ("claimed_at_ms", "0"),
            ("scheduled_for_ms", "1764568319000"),
            ("unique_for_ms", "1000"),
            ("payload", r#"{"to":"a"}"#),
            ("result", "[1,2]"),
            ("progress", "0.5"),
            ("claim_token", ""),
            ("chain_step", "2/3"),
        ]);
        assert_eq!(
            job.to_json(),
            json!({
                "id": "ab12",
                "status": "completed",
                "attempts": 2,
                "max_attempts": 5,
                "priority": -3,
                "visibility_ms": 30000,
                "completed_ttl_s": 60,
                "enqueued_at_ms": 1_764_568_318_123_u64,
                "enqueued_at": "2025-12-01T05:51:58.123Z",
                "claimed_at_ms": 0,
                "claimed_at": null,
                "scheduled_for_ms": 1_764_568_319_000_u64,
                "scheduled_for": "2025-12-01T05:51:59.000Z",
                "unique_for_ms": 1000,
                "payload": {"to": "a"},
                "result": [1, 2],
                "progress": 0.5,
                "claim_token": "",
                "chain_step": "2/3",
            })
        );
    }

    #[test]
    fn to_json_keeps_what_does_not_parse_as_stored_text() {
        let job = record(&[
            ("payload", "{not json"),
            ("result", "plain words"),
            ("attempts", "+1"),
            ("max_attempts", "1e3"),
            ("priority", "--1"),
            ("enqueued_at_ms", "soon"),
            ("failed_at_ms", "99999999999999999999"),
            ("claimed_at", "a field of another client's"),
            ("claimed_at_ms", "1764568318123"),
        ]);
        let shown = job.to_json();
        assert_eq!(
            shown,
            json!({
                "id": "ab12",
                "payload": "{not json",
                "result": "plain words",
                "attempts": "+1",
                "max_attempts": "1e3",
                "priority": "--1",
                "enqueued_at_ms": "soon",
                "enqueued_at": null,
                "failed_at_ms": "99999999999999999999",
                "failed_at": null,
                "claimed_at": "a field of another client's",
                "claimed_at_ms": 1_764_568_318_123_u64,
            }),
            "the id comes from the key when the hash has none"
        );
    }
}
