//! Jobs as a worker holds them: [`ClaimedJob`], and the [`Ack`] each
//! settling call answers.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::record::JobRecord;
use crate::error::{Error, Result};

/// A job this process holds a claim on. Settle it with
/// [`Queue::complete`](super::Queue::complete),
/// [`Queue::fail`](super::Queue::fail) or
/// [`Queue::release`](super::Queue::release); keep the claim alive with
/// [`Queue::extend`](super::Queue::extend) while it runs.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub(crate) token: String,
    pub(crate) attempt: u32,
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
        claimed_at_ms: u64,
        deadline_ms: u64,
        fields: BTreeMap<String, String>,
    ) -> (Self, Option<Error>) {
        let record = JobRecord::new(id, fields);
        let attempts = record.attempts();
        let payload = record.payload_json().map(ToOwned::to_owned);
        let mut job = Self::from_claim(String::new(), token);
        job.claimed_at_ms = claimed_at_ms;
        job.lease_deadline_ms = deadline_ms;
        job.record = record;
        match (attempts, payload) {
            (Ok(attempts), Ok(payload)) => {
                job.attempt = attempts;
                job.payload = payload;
                (job, None)
            }
            (Err(e), _) | (_, Err(e)) => (job, Some(e)),
        }
    }

    /// A handle on a claim made elsewhere (another process, a reference
    /// client) from its id and token, to settle or extend it. Only the token
    /// matters to Redis: a wrong or empty one changes nothing. The handle
    /// carries no payload (it reads as `null`) and reports attempt 0.
    pub fn from_claim(id: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            attempt: 0,
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

    /// Which attempt this claim is: 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
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

    /// The fields of the job's hash the claim read, as it left them:
    /// `payload`, `job`, `enqueued_at_ms`, `max_attempts`, `visibility_ms`,
    /// `traceparent`, `tracestate` (those present), and the stamp `status`,
    /// `attempts`, `claimed_at_ms` and `claim_token`. Not the whole hash: reading every field into the
    /// claim script and back cost more than the rest of the claim. Read the
    /// whole hash with [`Queue::get_job`](super::Queue::get_job).
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
    /// The job was snoozed: back to pending (or scheduled) without charging
    /// the attempt.
    Snoozed,
    /// The job ended as cancelled (a cancel was requested while it ran, so
    /// its outcome was not used) or expired (its retry or snooze would have
    /// started past its deadline).
    Cancelled,
    /// The lease was renewed.
    Extended,
    /// The lease was renewed, and a cancel of the job was requested: the
    /// run should stop; whatever it reports, the job ends as cancelled.
    CancelRequested,
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

    use super::ClaimedJob;
    use crate::queue::record::JobRecord;

    /// Field values as Redis might hold them: numbers, JSON, or junk.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u32>().prop_map(|n| n.to_string()),
            Just(String::new()),
            Just("{\"kind\":\"email\",\"n\":1}".to_owned()),
            Just("[1,2,3]".to_owned()),
            Just("+5".to_owned()),
            Just("nan".to_owned()),
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
                Some(v) => {
                    v.is_empty()
                        || (v.bytes().all(|b| b.is_ascii_digit()) && v.parse::<u32>().is_ok())
                }
            };
            let payload_ok = fields
                .get("payload")
                .is_some_and(|p| serde_json::from_str::<serde_json::Value>(p).is_ok());
            let (job, problem) = ClaimedJob::decode("id".into(), "token".into(), 1, 2, fields.clone());
            prop_assert_eq!(problem.is_none(), attempts_ok && payload_ok, "{:?}", problem);
            if problem.is_none() {
                prop_assert_eq!(job.payload_json().get(), fields["payload"].as_str());
            }
            let record = JobRecord::new("id", fields);
            let _ = (record.status(), record.max_attempts(), record.timestamp_ms("enqueued_at_ms"), record.last_error());
        }
    }
}
