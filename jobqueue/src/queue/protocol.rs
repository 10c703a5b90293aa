//! The typed protocol between the Rust side and the Lua scripts: the modes
//! a script is told to run in, and the replies it gives, each decoded in one
//! place. A script's header (`lua/*.lua`) documents the same values.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::{FromRedisValue, ParsingError, RedisWrite, ToRedisArgs, Value};

use super::claimed::{Ack, ClaimedJob};
use crate::error::{Error, Result};

/// How the claim script takes ids from pending (`claim.lua`, `ARGV[6]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimMode {
    /// `LMOVE pending processing RIGHT LEFT` (Redis 6.2 and later).
    Lmove,
    /// `RPOPLPUSH pending processing` (older Redis).
    Rpoplpush,
    /// The id was already moved by a blocking `BRPOPLPUSH`: only stamp it.
    Adopt,
}

impl ToRedisArgs for ClaimMode {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        out.write_arg(match self {
            Self::Lmove => b"lmove",
            Self::Rpoplpush => b"rpoplpush",
            Self::Adopt => b"adopt",
        });
    }
}

/// What the settle script does with one job (`settle.lua`, third value of
/// each settlement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SettleAction {
    /// Completed, with a result.
    Complete,
    /// Back to pending (or scheduled) while attempts remain, else buried.
    Retry,
    /// Buried in the dead letters whatever attempts remain.
    Permanent,
    /// Back to pending (or scheduled), the attempt given back.
    Snooze,
    /// An upstream rate limit: back to the front of its lane, the attempt
    /// given back, and the queue (or its rate key) held back a while.
    Throttle,
}

impl ToRedisArgs for SettleAction {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        out.write_arg(match self {
            Self::Complete => b"complete",
            Self::Retry => b"retry",
            Self::Permanent => b"permanent",
            Self::Snooze => b"snooze",
            Self::Throttle => b"throttle",
        });
    }
}

/// Which step of the sweep `reclaim.lua` runs (`ARGV[1]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SweepStep {
    /// Expired leases, and a window of the processing list.
    Leases,
    /// A window of the completed history, the histories' caps, dead letters
    /// nothing lists any more, and ended claims kept past their time.
    History,
}

impl ToRedisArgs for SweepStep {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        out.write_arg(match self {
            Self::Leases => b"leases",
            Self::History => b"history",
        });
    }
}

/// The "leases" step's reply: next cursor into processing (negative at the
/// end), more expired leases waiting (0 or 1), the ids reclaimed and
/// failed, the entries dropped with the reason, and the ids cancelled.
pub(crate) type LeasesReply = (i64, u8, Vec<Text>, Vec<Text>, Vec<(Text, Text)>, Vec<Text>);

/// The "history" step's reply: next cursor into completed (negative at the
/// end), more dead letters to check (0 or 1), the ids taken off the
/// completed history, and the dead letters deleted because nothing listed
/// them.
pub(crate) type HistoryReply = (i64, u8, Vec<Text>, Vec<Text>);

/// Text read from Redis that another client may have written as any bytes
/// (an id, a field, a reason): read as bytes and decoded lossily, so one
/// entry that is not UTF-8 never makes a whole reply undecodable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Text(pub(crate) String);

impl FromRedisValue for Text {
    fn from_redis_value(v: Value) -> std::result::Result<Self, ParsingError> {
        Vec::<u8>::from_redis_value(v).map(|bytes| Self(lossy(bytes)))
    }
}

impl From<Text> for String {
    fn from(text: Text) -> Self {
        text.0
    }
}

/// Every [`Text`] of `texts` as a `String`.
pub(crate) fn strings(texts: Vec<Text>) -> Vec<String> {
    texts.into_iter().map(String::from).collect()
}

/// Which settling script answered, to read its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    Complete,
    Fail,
    Snooze,
    Release,
}

/// A settling script's answer: `-1` this token already settled the job, `0`
/// the token does not hold it, a positive code what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SettleCode(i64);

impl FromRedisValue for SettleCode {
    fn from_redis_value(v: Value) -> std::result::Result<Self, ParsingError> {
        i64::from_redis_value(v).map(Self)
    }
}

impl SettleCode {
    /// The [`Ack`] this code means for `script`; an unknown code is an error
    /// (a script and this table out of step), never a guess.
    pub(crate) fn ack(self, script: Settle) -> Result<Ack> {
        Ok(match (script, self.0) {
            (_, -1) => Ack::Duplicate,
            (_, 0) => Ack::LeaseLost,
            (Settle::Complete, 1) => Ack::Completed,
            (Settle::Fail, 1) => Ack::Retrying,
            (Settle::Fail | Settle::Snooze, 2) => Ack::Failed,
            (_, 3) => Ack::Cancelled,
            (Settle::Snooze, 4) => Ack::Snoozed,
            (Settle::Release, 1) => Ack::Released,
            (script, code) => {
                return Err(Error::malformed(
                    format!("{script:?} script reply"),
                    format!("unknown code {code}"),
                ));
            }
        })
    }
}

/// What the claim script did with a job it took but could not hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Moved to the dead letters with the reason.
    Failed,
    /// Dropped from the lists: no job stood behind the id.
    Dropped,
    /// Past its `expires_at_ms`: ended as expired, never run.
    Expired,
}

/// A job the claim script refused to hand out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejected {
    pub(crate) id: String,
    pub(crate) refusal: Refusal,
    pub(crate) reason: String,
}

/// The claim script's reply.
#[derive(Debug)]
pub(crate) enum ClaimReply {
    /// The queue is paused: nothing was claimed.
    Paused,
    /// The jobs claimed (each with the problem that keeps it from running,
    /// if any) and the jobs refused.
    Claimed {
        claimed: Vec<(ClaimedJob, Option<Error>)>,
        rejected: Vec<Rejected>,
        hold: Hold,
    },
}

/// Why a claim took fewer jobs than it asked for while jobs may still wait
/// (`claim.lua`'s hold), and what the runner does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Hold {
    /// Nothing held it back: the lanes ran out.
    #[default]
    None,
    /// A rate limit (or a handler's report of an upstream one): claim again
    /// after this long, not before.
    Throttled(Duration),
    /// The queue's max_running: wait for the wake list (a settle that frees
    /// a slot feeds it), at most this long.
    Capped(Duration),
    /// Rate keys with jobs wait for their own limits; the first is ready in
    /// this long.
    Keys(Duration),
}

impl Hold {
    fn decode(kind: &[u8], ms: i64) -> Result<Self> {
        let wait = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        Ok(match kind {
            b"" => Self::None,
            b"throttled" => Self::Throttled(wait),
            b"capped" => Self::Capped(wait),
            b"keys" => Self::Keys(wait),
            other => {
                return Err(Error::malformed(
                    "claim script reply",
                    format!("unknown hold {:?}", String::from_utf8_lossy(other)),
                ));
            }
        })
    }
}

impl ClaimReply {
    /// Decodes `"paused"` or `{ claimed, rejected }`. Every field is read as
    /// bytes: one entry whose id or field is not UTF-8 makes that job
    /// unusable (to be failed with the reason), never the whole reply.
    pub(crate) fn decode(reply: Value) -> Result<Self> {
        let bad = |why: String| Error::malformed("claim script reply", why);
        let parts = match reply {
            Value::SimpleString(s) if s == "paused" => return Ok(Self::Paused),
            Value::BulkString(b) if b == b"paused" => return Ok(Self::Paused),
            Value::Array(parts) if parts.len() == 2 || parts.len() == 4 => parts,
            other => return Err(bad(format!("unexpected reply {other:?}"))),
        };
        let mut parts = parts.into_iter();
        let (Some(Value::Array(entries)), Some(Value::Array(refused))) =
            (parts.next(), parts.next())
        else {
            return Err(bad("expected two arrays".into()));
        };
        let hold = match (parts.next(), parts.next()) {
            (Some(kind), Some(ms)) => {
                let kind: Vec<u8> =
                    FromRedisValue::from_redis_value(kind).map_err(|e| bad(e.to_string()))?;
                let ms: i64 =
                    FromRedisValue::from_redis_value(ms).map_err(|e| bad(e.to_string()))?;
                Hold::decode(&kind, ms)?
            }
            _ => Hold::None,
        };
        let mut claimed = Vec::with_capacity(entries.len());
        for entry in entries {
            let raw: RawEntry =
                FromRedisValue::from_redis_value(entry).map_err(|e| bad(e.to_string()))?;
            if raw.len() != 4 + REPLY_FIELDS.len() {
                return Err(bad(format!("a claimed entry of {} values", raw.len())));
            }
            claimed.push(decode_entry(raw));
        }
        let mut rejected = Vec::with_capacity(refused.len());
        for entry in refused {
            let (id, outcome, reason): (Vec<u8>, Vec<u8>, Vec<u8>) =
                FromRedisValue::from_redis_value(entry).map_err(|e| bad(e.to_string()))?;
            let refusal = match &outcome[..] {
                b"failed" => Refusal::Failed,
                b"dropped" => Refusal::Dropped,
                b"expired" => Refusal::Expired,
                other => {
                    return Err(bad(format!(
                        "unknown refusal {:?}",
                        String::from_utf8_lossy(other)
                    )));
                }
            };
            rejected.push(Rejected {
                id: lossy(id),
                refusal,
                reason: lossy(reason),
            });
        }
        Ok(Self::Claimed {
            claimed,
            rejected,
            hold,
        })
    }
}

/// One claimed entry as bytes: id, token, claimed at, lease deadline, then
/// the values of [`REPLY_FIELDS`] (none for a field the hash lacks).
type RawEntry = Vec<Option<Vec<u8>>>;

/// The job fields a claimed entry carries after its first four values, in
/// the order claim.lua's `REPLY_FIELDS` sends them. `traceparent` and
/// `tracestate` are the trace context enqueue stored (feature `otel`), read
/// whatever the features so a runner continues the trace of any client that
/// wrote it; `scheduled_for_ms` dates the wait of a delayed job (feature
/// `metrics`).
const REPLY_FIELDS: [&str; 9] = [
    "attempts",
    "max_attempts",
    "visibility_ms",
    "payload",
    "job",
    "enqueued_at_ms",
    "traceparent",
    "tracestate",
    "scheduled_for_ms",
];

/// One claimed entry; any part that is not UTF-8 becomes the job's problem.
fn decode_entry(raw: RawEntry) -> (ClaimedJob, Option<Error>) {
    let mut raw = raw.into_iter();
    let mut next = || raw.next().flatten().unwrap_or_default();
    let (id, token, claimed_at, deadline) = (next(), next(), next(), next());
    let values: Vec<Option<Vec<u8>>> = raw.collect();
    let mut problem = None;
    let mut text = |bytes: Vec<u8>, what: &str| {
        String::from_utf8(bytes).unwrap_or_else(|e| {
            problem.get_or_insert_with(|| what.to_owned());
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        })
    };
    let id = text(id, "its id is not UTF-8");
    let token = text(token, "its claim token is not UTF-8");
    let mut fields = BTreeMap::new();
    for (name, value) in REPLY_FIELDS.iter().zip(values) {
        if let Some(value) = value {
            let value = text(value, &format!("field {name} is not UTF-8"));
            fields.insert((*name).to_owned(), value);
        }
    }
    let number = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    let claimed_at_ms = number(&claimed_at);
    // The stamp the claim wrote is in the entry, not repeated among the
    // fields.
    fields
        .entry("status".to_owned())
        .or_insert_with(|| "processing".to_owned());
    fields
        .entry("claim_token".to_owned())
        .or_insert_with(|| token.clone());
    if let Some(at) = claimed_at_ms {
        fields
            .entry("claimed_at_ms".to_owned())
            .or_insert_with(|| at.to_string());
    }
    let (job, decode_problem) = ClaimedJob::decode(
        id,
        token,
        claimed_at_ms.unwrap_or(0),
        number(&deadline).unwrap_or(0),
        fields,
    );
    let problem = problem.map(|p| Error::malformed(format!("job {}", job.id()), p));
    (job, problem.or(decode_problem))
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn a_paused_queue_answers_paused() {
        assert!(matches!(
            ClaimReply::decode(Value::SimpleString("paused".into())).unwrap(),
            ClaimReply::Paused
        ));
    }

    /// A claimed entry as claim.lua sends it: job `id`, claimed at 10 with
    /// its lease to 20, on attempt 1 with payload `{}`, and `fields` (the
    /// other reply fields absent), in `REPLY_FIELDS` order.
    fn entry(id: &[u8], fields: &[(&str, &[u8])]) -> Value {
        let mut values = vec![bulk(id), bulk(b"tok"), bulk(b"10"), bulk(b"20")];
        values.extend(REPLY_FIELDS.iter().map(|&name| {
            let given = fields.iter().find(|(field, _)| *field == name);
            match (name, given) {
                (_, Some((_, value))) => bulk(value),
                ("attempts", None) => bulk(b"1"),
                ("payload", None) => bulk(b"{}"),
                _ => Value::Nil,
            }
        }));
        Value::Array(values)
    }

    #[test]
    fn one_entry_that_is_not_utf8_fails_alone() {
        let reply = Value::Array(vec![
            Value::Array(vec![entry(b"good", &[]), entry(b"bad\xff", &[])]),
            Value::Array(vec![Value::Array(vec![
                bulk(b"gone"),
                bulk(b"dropped"),
                bulk(b"no hash"),
            ])]),
        ]);
        let ClaimReply::Claimed {
            claimed,
            rejected,
            hold,
        } = ClaimReply::decode(reply).unwrap()
        else {
            panic!("not a claim");
        };
        assert_eq!(hold, Hold::None, "a reply of two parts holds nothing back");
        assert!(claimed[0].1.is_none());
        assert_eq!(claimed[0].0.lease_deadline_ms(), 20);
        assert!(
            claimed[1]
                .1
                .as_ref()
                .unwrap()
                .to_string()
                .contains("not UTF-8")
        );
        assert_eq!(rejected[0].refusal, Refusal::Dropped);
    }

    /// The trace context a claim carries ends up in the claimed job's
    /// record, where the runner's `job` span reads it.
    #[test]
    fn the_trace_context_a_claim_carries_is_in_the_record() {
        let traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let entry = entry(
            b"id1",
            &[("traceparent", traceparent), ("tracestate", b"vendor=1")],
        );
        let reply = Value::Array(vec![Value::Array(vec![entry]), Value::Array(vec![])]);
        let ClaimReply::Claimed { claimed, .. } = ClaimReply::decode(reply).unwrap() else {
            panic!("not a claim");
        };
        let record = claimed[0].0.record();
        assert_eq!(
            record.field("traceparent").map(str::as_bytes),
            Some(&traceparent[..])
        );
        assert_eq!(record.field("tracestate"), Some("vendor=1"));
    }

    /// claim.lua sends a claimed entry's fields in the order decode_entry
    /// names them.
    #[test]
    fn the_claim_reply_fields_are_named_in_the_scripts_order() {
        let claim = include_str!("../lua/claim.lua");
        let line = claim
            .lines()
            .find_map(|l| l.strip_prefix("local REPLY_FIELDS = "))
            .expect("REPLY_FIELDS in claim.lua");
        let names: Vec<&str> = line
            .trim_matches(|c| c == '{' || c == '}' || c == ' ')
            .split(", ")
            .map(|n| n.trim_matches('\''))
            .collect();
        assert_eq!(names, REPLY_FIELDS);
    }

    /// The limits `common.lua` holds a job's numbers to are jobqueue-rules'
    /// (the scripts cannot call Rust, so they keep a copy).
    #[test]
    fn the_scripts_limits_are_the_rules_limits() {
        let common = include_str!("../lua/common.lua");
        let constant = |name: &str| -> u64 {
            common
                .lines()
                .find_map(|l| l.strip_prefix(&format!("local {name} = ")))
                .unwrap_or_else(|| panic!("{name} in common.lua"))
                .trim()
                .parse()
                .unwrap()
        };
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap();
        assert_eq!(constant("MAX_COUNT"), u64::from(u32::MAX));
        assert_eq!(
            constant("MIN_VISIBILITY_MS"),
            ms(jobqueue_rules::MIN_VISIBILITY)
        );
        assert_eq!(
            constant("MAX_DURATION_MS"),
            ms(jobqueue_rules::MAX_DURATION)
        );
        assert_eq!(
            constant("MAX_TTL_S"),
            jobqueue_rules::MAX_DURATION.as_secs()
        );
    }

    #[test]
    fn settle_codes_map_to_acks_and_unknown_codes_are_errors() {
        assert_eq!(SettleCode(1).ack(Settle::Complete).unwrap(), Ack::Completed);
        assert_eq!(SettleCode(2).ack(Settle::Fail).unwrap(), Ack::Failed);
        assert_eq!(SettleCode(-1).ack(Settle::Release).unwrap(), Ack::Duplicate);
        assert_eq!(SettleCode(0).ack(Settle::Fail).unwrap(), Ack::LeaseLost);
        assert!(SettleCode(2).ack(Settle::Complete).is_err());
    }

    #[test]
    fn a_claim_held_back_by_a_limit_says_why_and_for_how_long() {
        for (kind, ms, hold) in [
            (
                &b"throttled"[..],
                120,
                Hold::Throttled(Duration::from_millis(120)),
            ),
            (b"capped", 900, Hold::Capped(Duration::from_millis(900))),
            (b"keys", 15, Hold::Keys(Duration::from_millis(15))),
            (b"", 0, Hold::None),
        ] {
            let reply = Value::Array(vec![
                Value::Array(vec![]),
                Value::Array(vec![]),
                Value::BulkString(kind.to_vec()),
                Value::Int(ms),
            ]);
            let ClaimReply::Claimed { hold: got, .. } = ClaimReply::decode(reply).unwrap() else {
                panic!("not a claim");
            };
            assert_eq!(got, hold);
        }
        let unknown = Value::Array(vec![
            Value::Array(vec![]),
            Value::Array(vec![]),
            Value::BulkString(b"sleepy".to_vec()),
            Value::Int(1),
        ]);
        assert!(ClaimReply::decode(unknown).is_err());
    }
}
