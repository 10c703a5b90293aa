//! Periodic schedules: a cron expression and a zone that enqueue a job at
//! every tick, once across the whole fleet.
//!
//! A schedule lives in Redis (`queue:{name}:schedule:{schedule}`, its next
//! tick in `queue:{name}:schedules`), so every runner serving the queue takes
//! part and none leads: each looks for due schedules about once a second,
//! computes the ticks from the stored expression, and fires through
//! `tick.lua`, a compare-and-set on the expected tick that exactly one
//! runner wins. A runner that dies mid-tick holds nothing: the next one
//! fires the tick. The job of a tick has an id derived from the queue, the
//! schedule and the tick, and `scheduled_for_ms`, the tick's time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobqueue_rules::CronSpec;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Queue;
use crate::error::{Error, Result};
use crate::scripts::SCRIPTS;

/// What a schedule does about ticks no runner was up to fire on time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Misfire {
    /// Enqueue one job, for the latest tick missed, however many were
    /// missed (never one per missed tick). The default.
    #[default]
    RunOnce,
    /// Enqueue nothing for ticks later than the grace; count them in
    /// `cron_missed_total`.
    Skip,
}

impl Misfire {
    fn as_str(self) -> &'static str {
        match self {
            Self::RunOnce => "once",
            Self::Skip => "skip",
        }
    }
}

/// How a schedule reads its expression and treats late ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleOptions {
    /// The IANA zone the expression's times are read in. Default `"UTC"`.
    pub tz: String,
    /// Late ticks. Default [`Misfire::RunOnce`].
    pub misfire: Misfire,
    /// How late a tick may fire and still count as on time. Default 30 s.
    pub grace: Duration,
    /// The jobs' own max attempts, if any.
    pub max_attempts: Option<u32>,
    /// The jobs' own lease length, if any.
    pub visibility: Option<Duration>,
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        Self {
            tz: "UTC".to_owned(),
            misfire: Misfire::RunOnce,
            grace: Duration::from_secs(30),
            max_attempts: None,
            visibility: None,
        }
    }
}

impl ScheduleOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`tz`](Self::tz).
    pub fn tz(mut self, tz: impl Into<String>) -> Self {
        self.tz = tz.into();
        self
    }

    /// Sets [`misfire`](Self::misfire).
    pub fn misfire(mut self, misfire: Misfire) -> Self {
        self.misfire = misfire;
        self
    }

    /// Sets [`grace`](Self::grace).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Sets [`visibility`](Self::visibility).
    pub fn visibility(mut self, visibility: Duration) -> Self {
        self.visibility = Some(visibility);
        self
    }
}

/// A schedule as stored, for listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ScheduleInfo {
    /// Its name (unique within the queue).
    pub name: String,
    /// The cron expression.
    pub cron: String,
    /// The zone it is read in.
    pub tz: String,
    /// The job each tick enqueues.
    pub job: String,
    /// The payload, JSON.
    pub payload: String,
    /// The misfire policy: `once` or `skip`.
    pub misfire: String,
    /// The next tick, ms since the epoch.
    pub next_tick_ms: Option<u64>,
    /// The last tick fired (or skipped), ms since the epoch.
    pub last_tick_ms: Option<u64>,
    /// The job the last tick enqueued.
    pub last_job_id: Option<String>,
    /// [`next_tick_ms`](Self::next_tick_ms) as UTC text.
    pub next_run: Option<String>,
    /// [`last_tick_ms`](Self::last_tick_ms) as UTC text.
    pub last_run: Option<String>,
}

/// How many due schedules one look handles, at most.
const DUE_PER_LOOK: usize = 50;

/// Most ticks of one schedule one look fires (ticks within their grace).
const CATCH_UP: usize = 20;

impl Queue {
    /// Writes schedule `name`: `cron` (five fields, or six with seconds
    /// first) in `options.tz`, enqueueing job `job` with `payload_json` at
    /// every tick. Unchanged when the same definition is already stored (a
    /// restart never moves a schedule); a changed one starts at its first
    /// tick after the later of now and its last tick fired. Returns true
    /// when it wrote.
    ///
    /// # Cancellation safety
    /// Safe: writing the same schedule again changes nothing.
    pub async fn put_schedule(
        &self,
        name: &str,
        cron: &str,
        job: &str,
        payload_json: &str,
        options: &ScheduleOptions,
    ) -> Result<bool> {
        crate::keys::validate_name(name)?;
        crate::keys::validate_name(job)?;
        let spec = CronSpec::parse(cron, &options.tz)
            .map_err(|reason| Error::invalid_option("cron", reason))?;
        serde_json::from_str::<&serde_json::value::RawValue>(payload_json)?;
        super::options::check_job_limits(options.max_attempts, options.visibility)?;
        let grace_ms = millis(options.grace);
        let max_attempts = options
            .max_attempts
            .map(|m| m.to_string())
            .unwrap_or_default();
        let visibility = options
            .visibility
            .map(|v| millis(v).to_string())
            .unwrap_or_default();
        let spec_ver = hex16(&[
            cron.as_bytes(),
            options.tz.as_bytes(),
            job.as_bytes(),
            payload_json.as_bytes(),
            options.misfire.as_str().as_bytes(),
            grace_ms.to_string().as_bytes(),
            max_attempts.as_bytes(),
            visibility.as_bytes(),
        ]);
        let last: Option<i64> = self
            .conn
            .query(
                redis::cmd("HGET")
                    .arg(self.keys.schedule(name))
                    .arg("last_tick_ms"),
            )
            .await
            .ok()
            .flatten()
            .and_then(|v: String| v.parse().ok());
        let now = self.redis_now_ms().await?;
        let first = spec.next_after(now.max(last.unwrap_or(0))).ok_or_else(|| {
            Error::invalid_option("cron", format!("{cron:?} has no tick after now"))
        })?;
        let mut invocation = SCRIPTS.schedule.prepare_invoke();
        invocation
            .key(self.keys.schedules())
            .key(self.keys.schedule(name))
            .arg("put")
            .arg(name)
            .arg(&spec_ver)
            .arg(cron)
            .arg(&options.tz)
            .arg(job)
            .arg(payload_json)
            .arg(options.misfire.as_str())
            .arg(grace_ms)
            .arg(&max_attempts)
            .arg(&visibility)
            .arg(first);
        let outcome: String = self.invoke(&invocation).await?;
        Ok(outcome == "written")
    }

    /// Removes schedule `name`; false when there was none. Jobs it already
    /// enqueued stay.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn remove_schedule(&self, name: &str) -> Result<bool> {
        let mut invocation = SCRIPTS.schedule.prepare_invoke();
        invocation
            .key(self.keys.schedules())
            .key(self.keys.schedule(name))
            .arg("remove")
            .arg(name);
        let removed: u8 = self.invoke(&invocation).await?;
        Ok(removed == 1)
    }

    /// The queue's schedules, soonest next tick first.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn schedules(&self) -> Result<Vec<ScheduleInfo>> {
        let names: Vec<String> = self
            .conn
            .query(
                redis::cmd("ZRANGE")
                    .arg(self.keys.schedules())
                    .arg(0)
                    .arg(-1),
            )
            .await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let fields: std::collections::HashMap<String, String> = self
                .conn
                .query(redis::cmd("HGETALL").arg(self.keys.schedule(&name)))
                .await?;
            if fields.is_empty() {
                continue;
            }
            let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
            let num = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
            let text = |k: &str| {
                num(k).map(|ms| jobqueue_rules::utc_text(i64::try_from(ms).unwrap_or(i64::MAX)))
            };
            out.push(ScheduleInfo {
                cron: get("cron"),
                tz: get("tz"),
                job: get("job"),
                payload: get("payload"),
                misfire: get("misfire"),
                next_tick_ms: num("next_tick_ms"),
                last_tick_ms: num("last_tick_ms"),
                last_job_id: fields.get("last_job_id").cloned(),
                next_run: text("next_tick_ms"),
                last_run: text("last_tick_ms"),
                name,
            });
        }
        Ok(out)
    }

    /// Fires the queue's due schedules (a runner does this about once a
    /// second): for each, the job of its latest due tick, unless another
    /// process fired it first. Returns the ids of the jobs this call
    /// enqueued.
    ///
    /// # Cancellation safety
    /// Safe: each tick is one atomic compare-and-set.
    pub async fn tick_schedules(&self) -> Result<Vec<String>> {
        let now = self.redis_now_ms().await?;
        let due: Vec<String> = self
            .conn
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.keys.schedules())
                    .arg("-inf")
                    .arg(now)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(DUE_PER_LOOK),
            )
            .await?;
        let mut fired = Vec::new();
        for name in due {
            if let Err(e) = self.fire_due(&name, now, &mut fired).await {
                tracing::warn!(queue = self.name(), schedule = name, error = %e, "could not fire a due schedule");
            }
        }
        Ok(fired)
    }

    /// Fires schedule `name`'s ticks due by `now`, adding the ids of the
    /// jobs enqueued to `fired`. The schedule is read once; each tick is one
    /// script call, whose compare-and-set stops the loop as soon as another
    /// process has moved the schedule on. Ticks within their grace fire one
    /// by one, so a look that comes late still gives every one its job.
    async fn fire_due(&self, name: &str, now: i64, fired: &mut Vec<String>) -> Result<()> {
        let key = self.keys.schedule(name);
        let [cron, tz, spec_ver, next, grace]: [Option<String>; 5] = self
            .conn
            .query(
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("cron")
                    .arg("tz")
                    .arg("spec_ver")
                    .arg("next_tick_ms")
                    .arg("grace_ms"),
            )
            .await?;
        let (Some(cron), Some(tz), Some(spec_ver), Some(mut expected)) =
            (cron, tz, spec_ver, next.and_then(|n| n.parse::<i64>().ok()))
        else {
            return Ok(());
        };
        let grace = grace.and_then(|g| g.parse::<i64>().ok()).unwrap_or(0);
        let spec = CronSpec::parse(&cron, &tz).map_err(|reason| Error::malformed(&key, reason))?;
        for _ in 0..CATCH_UP {
            if expected > now {
                break;
            }
            // On time (within the grace): this tick, then the next. Late:
            // the latest tick due stands for every one missed (or is
            // skipped, as the misfire policy says), and the schedule
            // resumes after now.
            let (fire, after) = if now - expected <= grace {
                (expected, spec.next_after(expected))
            } else {
                let fire = spec
                    .last_at_or_before(now)
                    .filter(|&t| t >= expected)
                    .unwrap_or(expected);
                (fire, spec.next_after(now))
            };
            let after = after.ok_or_else(|| {
                Error::malformed(&key, format!("{cron:?} has no tick after {fire}"))
            })?;
            let id = hex16(&[
                self.name().as_bytes(),
                name.as_bytes(),
                fire.to_string().as_bytes(),
            ]);
            let mut invocation = SCRIPTS.tick.prepare_invoke();
            invocation
                .key(self.keys.schedules())
                .key(&key)
                .key(self.keys.pending())
                .key(self.keys.stats())
                .key(self.keys.job(&id))
                .arg(name)
                .arg(&spec_ver)
                .arg(expected)
                .arg(fire)
                .arg(after)
                .arg(&id);
            let reply: Vec<String> = self.invoke(&invocation).await?;
            match reply.first().map(String::as_str) {
                Some("fired") => fired.push(id),
                Some("skipped") => {}
                // Moved on by another process, changed, gone, or early.
                _ => break,
            }
            expected = after;
        }
        Ok(())
    }

    /// The Redis clock, ms since the epoch: every timestamp comes from it.
    async fn redis_now_ms(&self) -> Result<i64> {
        let (secs, micros): (i64, i64) = self.conn.query(&redis::cmd("TIME")).await?;
        Ok(secs * 1000 + micros / 1000)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The first 16 hex digits of SHA-256 over `parts`, each followed by a NUL:
/// the reference's id format.
fn hex16(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
        hasher.update([0]);
    }
    crate::id::hex(&hasher.finalize()[..8])
}

/// A tick's time as a `SystemTime`.
pub fn tick_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}
