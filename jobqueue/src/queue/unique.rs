//! Unique jobs: what makes two jobs the same ([`Unique`]), and the digest
//! that names their lock, `queue:{name}:unique:<digest>`.
//!
//! The lock holds the id of the job that owns it. It is taken by the
//! enqueue script in the same step that writes the job, so concurrent
//! enqueues of one key from any number of processes give one job, and it is
//! released by the script of whichever transition ends the job's hold (see
//! [`UniqueMode`]), only while it still names that job. It also carries a
//! TTL, the window, so it never outlives its job by more than that.

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// How long a unique lock holds, at most, when none is given: a day.
pub const DEFAULT_UNIQUE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// While a job holds its unique lock: another enqueue with the same key
/// meanwhile returns the existing job instead of writing a second one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UniqueMode {
    /// While the job waits (pending or scheduled): released when a worker
    /// takes it, so a new job can be queued while one runs. The default.
    #[default]
    WhilePending,
    /// Until the job has finished: completed, failed for good, cancelled,
    /// expired or deleted (retries and snoozes keep it).
    UntilCompleted,
    /// For the whole window after the enqueue, whatever becomes of the job
    /// (a throttle).
    Window,
}

impl UniqueMode {
    /// The value stored in the job's `unique_mode` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WhilePending => "pending",
            Self::UntilCompleted => "completed",
            Self::Window => "window",
        }
    }
}

/// What makes enqueues of a job the same job, and for how long.
///
/// The key is the job's name and its payload as canonical JSON (object keys
/// sorted, no spaces), or the name and a key the caller gives
/// ([`key`](Self::key)). Uniqueness holds within one queue (and on a
/// sharded queue, the key picks the shard).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Unique {
    /// The key instead of the payload, if given.
    pub key: Option<String>,
    /// While the lock holds.
    pub mode: UniqueMode,
    /// The longest the lock lives (its TTL), whatever the job does.
    pub window: Duration,
}

impl Unique {
    /// Unique by payload, while pending, for at most `window`.
    pub fn for_window(window: Duration) -> Self {
        Self {
            key: None,
            mode: UniqueMode::WhilePending,
            window,
        }
    }

    /// The same, unique by `key` instead of the payload.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The same, holding while `mode` says.
    pub fn mode(mut self, mode: UniqueMode) -> Self {
        self.mode = mode;
        self
    }

    /// Checks the window: at least a millisecond, at most a year.
    pub(crate) fn check(&self) -> Result<()> {
        if self.window < Duration::from_millis(1) || self.window > jobqueue_rules::MAX_DURATION {
            return Err(Error::invalid_option(
                "unique",
                format!(
                    "the window {:?} must be at least 1 ms and at most a year",
                    self.window
                ),
            ));
        }
        Ok(())
    }

    /// The digest naming this job's lock: SHA-256, in hex, over a version
    /// tag, the job's name and its key (the caller's, or the canonical
    /// payload).
    pub(crate) fn digest(&self, name: &str, payload_json: &str) -> Result<String> {
        let mut hasher = Sha256::new();
        hasher.update(b"jobqueue-unique-v1\0");
        hasher.update(name.as_bytes());
        hasher.update(b"\0");
        match &self.key {
            Some(key) => {
                hasher.update(b"key\0");
                hasher.update(key.as_bytes());
            }
            None => {
                let value: Value = serde_json::from_str(payload_json)?;
                let mut canonical = String::with_capacity(payload_json.len());
                write_canonical(&value, &mut canonical);
                hasher.update(b"payload\0");
                hasher.update(canonical.as_bytes());
            }
        }
        Ok(crate::id::hex(&hasher.finalize()))
    }
}

/// `value` as compact JSON with every object's keys sorted, so that the same
/// data serialized in another key order gives the same text.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_payload_in_another_key_order_is_the_same_job() {
        let u = Unique::for_window(Duration::from_secs(60));
        let a = u
            .digest("send", r#"{"to":"a","n":[1,{"y":2,"x":1}]}"#)
            .unwrap();
        let b = u
            .digest("send", r#"{ "n": [1, {"x": 1, "y": 2}], "to": "a" }"#)
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(
            a,
            u.digest("send", r#"{"to":"b","n":[1,{"y":2,"x":1}]}"#)
                .unwrap()
        );
        assert_ne!(
            a,
            u.digest("other", r#"{"to":"a","n":[1,{"y":2,"x":1}]}"#)
                .unwrap()
        );
    }

    #[test]
    fn a_key_replaces_the_payload() {
        let u = Unique::for_window(Duration::from_secs(60)).key("user:42");
        assert_eq!(
            u.digest("send", r#"{"a":1}"#).unwrap(),
            u.digest("send", r#"{"a":2}"#).unwrap()
        );
        assert_ne!(
            u.digest("send", "1").unwrap(),
            Unique::for_window(Duration::from_secs(60))
                .key("user:43")
                .digest("send", "1")
                .unwrap()
        );
    }

    #[test]
    fn windows_are_checked() {
        assert!(Unique::for_window(Duration::ZERO).check().is_err());
        assert!(
            Unique::for_window(Duration::from_secs(400 * 24 * 3600))
                .check()
                .is_err()
        );
        assert!(Unique::for_window(Duration::from_secs(600)).check().is_ok());
    }
}
