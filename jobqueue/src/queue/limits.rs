//! Fleet-wide limits of a queue: a rate (jobs per period, with a burst), a
//! cap on the jobs running at once across every runner, and the same for
//! each rate key. They live in Redis (`limits.lua` writes them) and the
//! claim script enforces them, so every runner obeys the same numbers and a
//! change applies at each runner's next claim.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use super::Queue;
use crate::error::{Error, Result};
use crate::keys::MAX_RATE_KEY;
use crate::scripts::SCRIPTS;

/// A rate: at most `count` jobs start per `per`, fleet-wide.
///
/// Parsed from `"100/s"`, `"5/m"`, `"1000/h"`, `"20/d"` or `"10/250ms"`.
///
/// ```
/// use std::time::Duration;
/// use jobqueue::Rate;
///
/// let rate: Rate = "100/s".parse()?;
/// assert_eq!(rate, Rate::new(100, Duration::from_secs(1)));
/// assert_eq!(rate.to_string(), "100/1000ms");
/// # Ok::<(), jobqueue::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rate {
    /// Jobs per period.
    pub count: u32,
    /// The period (whole milliseconds).
    #[serde(rename = "period_ms", serialize_with = "as_millis")]
    pub per: Duration,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

impl Rate {
    /// `count` jobs per `per`.
    pub const fn new(count: u32, per: Duration) -> Self {
        Self { count, per }
    }

    fn period_ms(&self) -> u64 {
        u64::try_from(self.per.as_millis()).unwrap_or(u64::MAX)
    }

    fn check(&self, option: &'static str) -> Result<()> {
        if self.count == 0 || self.count > jobqueue_rules::MAX_RATE_COUNT {
            return Err(Error::invalid_option(
                option,
                format!(
                    "{} jobs per period is not 1 to {}",
                    self.count,
                    jobqueue_rules::MAX_RATE_COUNT
                ),
            ));
        }
        jobqueue_rules::check_millis(self.per).map_err(|e| Error::invalid_option(option, e))?;
        Ok(())
    }
}

impl FromStr for Rate {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let (count, ms) =
            jobqueue_rules::parse_rate(text).map_err(|e| Error::invalid_option("rate", e))?;
        Ok(Self::new(count, Duration::from_millis(ms)))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}ms", self.count, self.per.as_millis())
    }
}

/// Limits of a queue, or of a rate key. Unset fields limit nothing.
///
/// ```
/// use jobqueue::Limits;
///
/// // 100 jobs a second across the fleet, 10 at once at most, and no more
/// // than 20 running at any time.
/// let limits = Limits::new().rate("100/s".parse()?).burst(10).max_running(20);
/// # let _ = limits;
/// # Ok::<(), jobqueue::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Limits {
    /// Jobs started per period, fleet-wide (a generic cell rate limit: jobs
    /// start evenly spaced, up to `burst` at once after a quiet spell).
    pub rate: Option<Rate>,
    /// How many jobs may start at once after a quiet spell. Default: the
    /// rate's count (one period's worth, as a fixed window would allow).
    /// In any window of `w`, at most `burst + w / (per / count)` start.
    pub burst: Option<u32>,
    /// Most jobs running at once across every runner, counted from the
    /// leases held (a lease that ran out counts until the sweep takes it
    /// back).
    pub max_running: Option<u32>,
}

impl Limits {
    /// No limits.
    pub const NONE: Self = Self {
        rate: None,
        burst: None,
        max_running: None,
    };

    /// No limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits from their parts, in a `const` (what `#[job]` generates).
    pub const fn declared(
        rate: Option<Rate>,
        burst: Option<u32>,
        max_running: Option<u32>,
    ) -> Self {
        Self {
            rate,
            burst,
            max_running,
        }
    }

    /// Sets [`rate`](Self::rate).
    pub fn rate(mut self, rate: Rate) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Sets [`burst`](Self::burst).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Sets [`max_running`](Self::max_running).
    pub fn max_running(mut self, n: u32) -> Self {
        self.max_running = Some(n);
        self
    }

    /// True when nothing is limited.
    pub fn is_empty(&self) -> bool {
        self.rate.is_none() && self.max_running.is_none()
    }

    /// Checks every number, naming the one that is wrong.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(rate) = &self.rate {
            rate.check("rate")?;
        }
        if let Some(burst) = self.burst {
            if self.rate.is_none() {
                return Err(Error::invalid_option("burst", "a burst needs a rate"));
            }
            if burst == 0 || burst > jobqueue_rules::MAX_RATE_COUNT {
                return Err(Error::invalid_option(
                    "burst",
                    format!("{burst} is not 1 to {}", jobqueue_rules::MAX_RATE_COUNT),
                ));
            }
        }
        if self.max_running == Some(0) {
            return Err(Error::invalid_option(
                "max_running",
                "must be at least 1 (pause the queue to stop it)",
            ));
        }
        Ok(())
    }

    /// The limits each of `shards` physical queues gets so that together
    /// they keep these: each shard holds its own state (one slot each on a
    /// cluster), so the numbers are split, rounding up to at least one.
    pub(crate) fn per_shard(&self, shards: usize) -> Self {
        let shards = u32::try_from(shards.max(1)).unwrap_or(u32::MAX);
        let split = |n: u32| n.div_ceil(shards).max(1);
        Self {
            rate: self.rate.map(|r| Rate::new(split(r.count), r.per)),
            burst: self.burst.map(split),
            max_running: self.max_running.map(split),
        }
    }

    /// The stored values, in the order `fields` names them (`rate`,
    /// `period_ms`, `burst`, `max_running`); empty for one not set.
    fn values(&self) -> [String; 4] {
        let text = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
        let burst = self.burst.or(self.rate.map(|r| r.count));
        [
            text(self.rate.map(|r| u64::from(r.count))),
            text(self.rate.map(|r| r.period_ms())),
            text(burst.map(u64::from)),
            text(self.max_running.map(u64::from)),
        ]
    }

    /// Reads limits back from the stored fields (rate, period_ms, burst,
    /// max_running); a field that is not a number reads as unset.
    fn from_values(values: [Option<&str>; 4]) -> Self {
        let num = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok());
        let rate = match (num(values[0]), num(values[1])) {
            (Some(count), period) => Some(Rate::new(
                u32::try_from(count).unwrap_or(u32::MAX),
                Duration::from_millis(period.unwrap_or(1000)),
            )),
            _ => None,
        };
        Self {
            rate,
            burst: num(values[2]).and_then(|n| u32::try_from(n).ok()),
            max_running: num(values[3]).and_then(|n| u32::try_from(n).ok()),
        }
    }
}

/// Everything a queue limits: its own limits, the defaults every rate key
/// gets, and the keys whose limits differ.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct QueueLimits {
    /// The queue's own limits, over all its jobs.
    pub queue: Limits,
    /// The limits of each rate key, unless it has its own.
    pub per_key: Limits,
    /// Rate keys with limits of their own.
    pub keys: BTreeMap<String, Limits>,
}

/// The fields of the queue's own limits and of the per-key defaults.
const QUEUE_FIELDS: [&str; 4] = ["rate", "period_ms", "burst", "max_running"];
const KEY_FIELDS: [&str; 4] = ["key_rate", "key_period_ms", "key_burst", "key_max_running"];

/// Checks a rate key: 1 to 128 printable ASCII characters, no space (it
/// becomes part of a key name and a sorted-set member).
pub(crate) fn check_rate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_RATE_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid_option(
            "rate_key",
            format!("{key:?} is not 1 to {MAX_RATE_KEY} printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

impl Queue {
    /// Replaces the queue's own limits (fields left unset are removed).
    /// Every runner applies them at its next claim: within half a second.
    ///
    /// # Cancellation safety
    /// Safe: setting the same limits again changes nothing.
    pub async fn set_limits(&self, limits: &Limits) -> Result<()> {
        limits.check()?;
        self.write_limits("set", &QUEUE_FIELDS, limits).await
    }

    /// Replaces the limits each rate key gets unless it has its own.
    ///
    /// # Cancellation safety
    /// As [`set_limits`](Self::set_limits).
    pub async fn set_key_limits(&self, limits: &Limits) -> Result<()> {
        limits.check()?;
        self.write_limits("set", &KEY_FIELDS, limits).await
    }

    /// Gives rate key `key` limits of its own, or (`None`) makes it use the
    /// per-key defaults again.
    ///
    /// # Cancellation safety
    /// As [`set_limits`](Self::set_limits).
    pub async fn set_limits_of_key(&self, key: &str, limits: Option<&Limits>) -> Result<()> {
        check_rate_key(key)?;
        let value = match limits {
            None => String::new(),
            Some(limits) => {
                limits.check()?;
                limits
                    .values()
                    .iter()
                    .map(|v| if v.is_empty() { "-" } else { v.as_str() })
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        let mut invocation = SCRIPTS.limits.prepare_invoke();
        invocation
            .key(self.keys.limits())
            .key(self.keys.key_limits())
            .key(self.keys.wake())
            .arg("key")
            .arg(key)
            .arg(value);
        let _: u64 = self.invoke(&invocation).await?;
        Ok(())
    }

    /// Writes limits only where none are set yet: what a `#[job]`
    /// declares, put by every runner at start without ever reverting an
    /// operator's change.
    pub(crate) async fn seed_limits(&self, limits: &Limits) -> Result<u64> {
        limits.check()?;
        let mut invocation = SCRIPTS.limits.prepare_invoke();
        invocation
            .key(self.keys.limits())
            .key(self.keys.key_limits())
            .key(self.keys.wake())
            .arg("seed")
            .arg("");
        let values = limits.values();
        for (field, value) in QUEUE_FIELDS.iter().zip(values) {
            invocation.arg(*field).arg(value);
        }
        self.invoke(&invocation).await
    }

    async fn write_limits(&self, mode: &str, fields: &[&str; 4], limits: &Limits) -> Result<()> {
        let mut invocation = SCRIPTS.limits.prepare_invoke();
        invocation
            .key(self.keys.limits())
            .key(self.keys.key_limits())
            .key(self.keys.wake())
            .arg(mode)
            .arg("");
        for (field, value) in fields.iter().zip(limits.values()) {
            invocation.arg(*field).arg(value);
        }
        let _: u64 = self.invoke(&invocation).await?;
        Ok(())
    }

    /// The queue's limits as stored.
    pub async fn limits(&self) -> Result<QueueLimits> {
        let (fields, keys): (BTreeMap<String, String>, BTreeMap<String, String>) = self
            .conn
            .run(|mut c| {
                let (limits, key_limits) = (self.keys.limits(), self.keys.key_limits());
                async move {
                    redis::pipe()
                        .hgetall(limits)
                        .hgetall(key_limits)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        let pick = |names: &[&str; 4]| names.map(|n| fields.get(n).map(String::as_str));
        let keys = keys
            .into_iter()
            .map(|(key, value)| {
                let mut parts = value.split_whitespace().map(|w| (w != "-").then_some(w));
                let values = [(); 4].map(|()| parts.next().flatten());
                (key, Limits::from_values(values))
            })
            .collect();
        Ok(QueueLimits {
            queue: Limits::from_values(pick(&QUEUE_FIELDS)),
            per_key: Limits::from_values(pick(&KEY_FIELDS)),
            keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_defaults_to_one_period_of_the_rate() {
        let limits = Limits::new().rate(Rate::new(50, Duration::from_secs(1)));
        assert_eq!(limits.values(), ["50", "1000", "50", ""].map(String::from));
        let limits = limits.burst(5).max_running(3);
        assert_eq!(limits.values(), ["50", "1000", "5", "3"].map(String::from));
    }

    #[test]
    fn shards_split_the_limits_rounding_up() {
        let limits = Limits::new()
            .rate(Rate::new(50, Duration::from_secs(1)))
            .burst(5)
            .max_running(3);
        let each = limits.per_shard(4);
        assert_eq!(each.rate, Some(Rate::new(13, Duration::from_secs(1))));
        assert_eq!(each.burst, Some(2));
        assert_eq!(each.max_running, Some(1));
    }

    #[test]
    fn limits_that_limit_nothing_or_stop_everything_are_refused() {
        assert!(Limits::new().max_running(0).check().is_err());
        assert!(Limits::new().burst(3).check().is_err());
        assert!(
            Limits::new()
                .rate(Rate::new(0, Duration::from_secs(1)))
                .check()
                .is_err()
        );
        assert!(check_rate_key("tenant 1").is_err());
        assert!(check_rate_key("").is_err());
        assert!(check_rate_key("tenant:42").is_ok());
    }
}
