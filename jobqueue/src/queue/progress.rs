//! A running job's progress, as the queue stores it: [`Progress`] as read
//! back, the size limit, the checks a value passes before it is sent, and
//! [`Queue::progress`].
//!
//! A handler reports progress through its context
//! ([`JobContext::progress`](crate::JobContext::progress)); the runner
//! carries the latest value in the lease renewal it sends anyway
//! (`extend.lua`, see [`Queue::extend_with_progress`]), so reporting costs
//! no round trip of its own. The job hash keeps the value in `progress`
//! (JSON text) and the time it was stored in `progress_at_ms` (Redis's
//! clock); every change is published on `queue:{name}:progress`
//! ([`Keys::progress`](crate::queue::Keys::progress)) as
//! `{"id": "...", "progress": <the value>}`.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::protocol::Text;
use super::{JobRecord, Queue};
use crate::error::{Error, Result};

/// The most bytes of JSON one progress value may take. Progress is
/// rewritten and published while the job runs, and travels in every lease
/// renewal until written: a counter, a fraction or a short status fits many
/// times over; a result does not belong here (return it from the handler).
/// `extend.lua` holds the same limit.
pub const MAX_PROGRESS_BYTES: usize = 4096;

/// A job's progress as stored: the latest value its run reported, and when
/// Redis stored it.
///
/// The value stays after the run ends (the last one the job reported), and
/// a later attempt replaces it when it reports its own.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// What the job reported: a fraction from 0.0 to 1.0
    /// ([`JobContext::progress`](crate::JobContext::progress)), or a small
    /// JSON value of its own
    /// ([`JobContext::progress_json`](crate::JobContext::progress_json)).
    pub value: Value,
    /// When Redis stored this value (`progress_at_ms`, by Redis's clock):
    /// the renewal that first carried it. `None` when the field is missing
    /// (a value written by another tool).
    pub at: Option<SystemTime>,
}

impl Progress {
    /// The value as a fraction, when it is a number from 0.0 to 1.0 (what
    /// [`JobContext::progress`](crate::JobContext::progress) reports).
    ///
    /// ```
    /// # fn demo(progress: jobqueue::queue::Progress) {
    /// if let Some(done) = progress.fraction() {
    ///     println!("{:.0}% done", done * 100.0);
    /// }
    /// # }
    /// ```
    pub fn fraction(&self) -> Option<f64> {
        self.value.as_f64().filter(|f| (0.0..=1.0).contains(f))
    }

    /// The progress in `record`'s fields, `None` when it has none.
    pub(super) fn of(record: &JobRecord) -> Result<Option<Self>> {
        let Some(text) = record.field("progress").filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let value = serde_json::from_str(text).map_err(|e| {
            Error::malformed(
                format!("job {}", record.id()),
                format!("progress is not valid JSON: {e}"),
            )
        })?;
        let at = record
            .timestamp_ms("progress_at_ms")?
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        Ok(Some(Self { value, at }))
    }
}

/// One change of a running job's progress, as a lease renewal publishes it
/// on `queue:{name}:progress`: `{"id": "...", "progress": <the value>}`.
/// Published only when the stored value changed, so a run that reports the
/// same value again publishes nothing. It serializes the same way, with a
/// `queue` field added when the queue is known.
///
/// Read them with [`Client::progress_events`](crate::Client::progress_events)
/// or [`Queue::subscribe_progress`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProgressEvent {
    /// The job's id.
    pub id: String,
    /// The value now stored, as [`Progress::value`].
    pub progress: Value,
    /// The queue the message came from (the logical queue's name for
    /// [`Client::progress_events`](crate::Client::progress_events)); empty
    /// from [`ProgressEvent::parse`], as the message does not name it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub queue: String,
}

impl ProgressEvent {
    /// Decodes one message of the progress channel. The message does not
    /// name its queue, so [`queue`](Self::queue) is empty.
    pub fn parse(message: &[u8]) -> Result<Self> {
        Self::decode("progress channel", "", message)
    }

    /// Decodes one message of `channel`, a progress channel of `queue`.
    pub(crate) fn decode(channel: &str, queue: &str, message: &[u8]) -> Result<Self> {
        let mut event: Self = serde_json::from_slice(message).map_err(|e| {
            Error::malformed(
                channel,
                format!(
                    "{:?} is not a progress event: {e}",
                    String::from_utf8_lossy(message)
                ),
            )
        })?;
        queue.clone_into(&mut event.queue);
        Ok(event)
    }

    /// The value as a fraction, as [`Progress::fraction`].
    pub fn fraction(&self) -> Option<f64> {
        self.progress.as_f64().filter(|f| (0.0..=1.0).contains(f))
    }
}

/// Checks that a progress value's JSON text fits [`MAX_PROGRESS_BYTES`].
pub(crate) fn check_size(json: &RawValue) -> Result<()> {
    let size = json.get().len();
    if size > MAX_PROGRESS_BYTES {
        return Err(Error::InvalidProgress {
            reason: format!(
                "{size} bytes of JSON exceed the limit of {MAX_PROGRESS_BYTES} bytes; \
                 report a summary (a count, a fraction), not the data"
            ),
        });
    }
    Ok(())
}

/// The JSON of a progress fraction: a finite number from 0.0 to 1.0.
pub(crate) fn fraction_json(fraction: f64) -> Result<Box<RawValue>> {
    if !(0.0..=1.0).contains(&fraction) {
        // NaN is in no range, so it lands here too.
        return Err(Error::InvalidProgress {
            reason: format!(
                "the fraction {fraction} is not within 0.0..=1.0 \
                 (report other measures with progress_json)"
            ),
        });
    }
    Ok(serde_json::value::to_raw_value(&fraction)?)
}

/// The JSON of any progress value, checked against [`MAX_PROGRESS_BYTES`].
pub(crate) fn value_json<T: Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>> {
    let json = serde_json::value::to_raw_value(value).map_err(|e| Error::InvalidProgress {
        reason: format!("the value cannot be encoded as JSON: {e}"),
    })?;
    check_size(&json)?;
    Ok(json)
}

impl Queue {
    /// The progress job `id` last reported, or `None` when it reported none
    /// (or its hash is gone, or the key holds something else than a hash).
    /// Reads the two progress fields alone, not the whole hash: cheap enough
    /// to poll.
    ///
    /// # Errors
    /// [`Error::Malformed`] when the stored value is not JSON or its time
    /// not a timestamp.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn progress(&self, id: &str) -> Result<Option<Progress>> {
        let read = self
            .conn
            .query::<(Option<Text>, Option<Text>)>(
                redis::cmd("HMGET")
                    .arg(self.keys.job(id))
                    .arg("progress")
                    .arg("progress_at_ms"),
            )
            .await;
        let (value, at) = match read {
            Ok(fields) => fields,
            // Another type than a hash is no job (as for `get_job`).
            Err(Error::Redis(e)) if e.code() == Some("WRONGTYPE") => return Ok(None),
            Err(e) => return Err(e),
        };
        let fields = [("progress", value), ("progress_at_ms", at)]
            .into_iter()
            .filter_map(|(name, text)| Some((name.to_owned(), text?.0)))
            .collect();
        Progress::of(&JobRecord::new(id, fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fraction_is_a_finite_number_from_zero_to_one() {
        assert_eq!(fraction_json(0.4).unwrap().get(), "0.4");
        assert_eq!(fraction_json(0.0).unwrap().get(), "0.0");
        assert_eq!(fraction_json(1.0).unwrap().get(), "1.0");
        for bad in [f64::NAN, f64::INFINITY, -0.1, 1.5, f64::NEG_INFINITY] {
            let err = fraction_json(bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidProgress { reason } if reason.contains("0.0..=1.0")),
                "{bad} gave {err}"
            );
        }
    }

    #[test]
    fn a_value_over_the_limit_is_refused_with_its_size() {
        let fits = "x".repeat(MAX_PROGRESS_BYTES - 2);
        assert_eq!(value_json(&fits).unwrap().get().len(), MAX_PROGRESS_BYTES);
        let over = "x".repeat(MAX_PROGRESS_BYTES - 1);
        let err = value_json(&over).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "invalid progress: {} bytes of JSON exceed the limit of {MAX_PROGRESS_BYTES} \
                 bytes; report a summary (a count, a fraction), not the data",
                MAX_PROGRESS_BYTES + 1
            )
        );
        // A map with non-string keys is no JSON object.
        let map = std::collections::BTreeMap::from([((1, 2), 3)]);
        assert!(matches!(
            value_json(&map),
            Err(Error::InvalidProgress { .. })
        ));
    }

    #[test]
    fn stored_progress_reads_back_with_its_time_and_junk_is_malformed() {
        let record = |fields: &[(&str, &str)]| {
            JobRecord::new(
                "j",
                fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let stored = Progress::of(&record(&[
            ("progress", r#"{"done":40,"of":100}"#),
            ("progress_at_ms", "1700000000123"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(stored.value, serde_json::json!({"done": 40, "of": 100}));
        assert_eq!(
            stored.at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        );
        assert_eq!(stored.fraction(), None);
        let half = Progress::of(&record(&[("progress", "0.5")]))
            .unwrap()
            .unwrap();
        assert_eq!((half.fraction(), half.at), (Some(0.5), None));
        assert_eq!(Progress::of(&record(&[])).unwrap(), None);
        assert_eq!(Progress::of(&record(&[("progress", "")])).unwrap(), None);
        for junk in [
            &[("progress", "{not json")][..],
            &[("progress", "1"), ("progress_at_ms", "soon")],
        ] {
            assert!(matches!(
                Progress::of(&record(junk)),
                Err(Error::Malformed { .. })
            ));
        }
    }

    #[test]
    fn a_progress_message_parses_and_what_is_not_one_is_malformed() {
        let event =
            ProgressEvent::decode("ch", "email", br#"{"id":"a1","progress":{"done":4}}"#).unwrap();
        assert_eq!((event.id.as_str(), event.queue.as_str()), ("a1", "email"));
        assert_eq!(event.progress, serde_json::json!({"done": 4}));
        assert_eq!(event.fraction(), None);
        let half = ProgressEvent::parse(br#"{"progress":0.5,"id":"b"}"#).unwrap();
        assert_eq!((half.fraction(), half.queue.as_str()), (Some(0.5), ""));
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({"id": "a1", "progress": {"done": 4}, "queue": "email"})
        );
        for bad in [
            &b"not json"[..],
            br#"{"progress":1}"#,
            br#"{"id":"x","status":"completed"}"#,
        ] {
            match ProgressEvent::decode("queue:q:progress", "q", bad) {
                Err(Error::Malformed { key, .. }) => assert_eq!(key, "queue:q:progress"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    /// extend.lua cannot call Rust: it keeps a copy of the limit.
    #[test]
    fn the_script_holds_the_same_limit() {
        let script = include_str!("../lua/extend.lua");
        let limit: usize = script
            .lines()
            .find_map(|l| l.strip_prefix("local MAX_PROGRESS_BYTES = "))
            .expect("MAX_PROGRESS_BYTES in extend.lua")
            .trim()
            .parse()
            .unwrap();
        assert_eq!(limit, MAX_PROGRESS_BYTES);
    }
}
