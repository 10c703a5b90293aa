//! [`Queue`]: the low-level queue bound to one queue name, the Rust
//! counterpart of the reference design's `RedisJobQueue`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Value;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::job::{Ack, ClaimedJob, JobRecord, JobStatus, NewJob};
use crate::keys::{KeyLayout, Keys};
use crate::scripts::SCRIPTS;

/// Options of a [`Queue`], with the reference design's defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueOptions {
    /// The queue's name. Default `jobs`.
    pub name: String,
    /// How key names are spelled. Default (`None`): the reference layout on
    /// a single server, the hash-tagged layout on a Redis Cluster (where the
    /// reference layout cannot work: a queue's keys would land in different
    /// slots).
    pub layout: Option<KeyLayout>,
    /// How long a claim lasts without renewal. Default 5000 ms.
    pub visibility: Duration,
    /// How long a completed job's hash is kept. Default 300 s; zero keeps it
    /// until it is trimmed off the completed history.
    pub completed_ttl: Duration,
    /// How many ids the completed history keeps. Default 50.
    pub completed_history: usize,
    /// How many dead letters the failed list keeps (their hashes live exactly
    /// as long). Default 10,000.
    pub failed_history: usize,
    /// Claims a job gets before it fails for good, for jobs enqueued without
    /// their own. Default 3.
    pub max_attempts: u32,
    /// Largest payload accepted at enqueue, in bytes. Default 512 KiB.
    pub max_payload_bytes: usize,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            name: "jobs".into(),
            layout: None,
            visibility: Duration::from_millis(5000),
            completed_ttl: Duration::from_secs(300),
            completed_history: 50,
            failed_history: 10_000,
            max_attempts: 3,
            max_payload_bytes: 512 * 1024,
        }
    }
}

impl QueueOptions {
    /// The defaults, for queue `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Sets [`layout`](Self::layout).
    pub fn layout(mut self, layout: KeyLayout) -> Self {
        self.layout = Some(layout);
        self
    }

    /// Sets [`visibility`](Self::visibility).
    pub fn visibility(mut self, visibility: Duration) -> Self {
        self.visibility = visibility;
        self
    }

    /// Sets [`completed_ttl`](Self::completed_ttl).
    pub fn completed_ttl(mut self, ttl: Duration) -> Self {
        self.completed_ttl = ttl;
        self
    }

    /// Sets [`completed_history`](Self::completed_history).
    pub fn completed_history(mut self, cap: usize) -> Self {
        self.completed_history = cap;
        self
    }

    /// Sets [`failed_history`](Self::failed_history).
    pub fn failed_history(mut self, cap: usize) -> Self {
        self.failed_history = cap;
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets [`max_payload_bytes`](Self::max_payload_bytes).
    pub fn max_payload_bytes(mut self, limit: usize) -> Self {
        self.max_payload_bytes = limit;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::InvalidOption {
                option: "max_attempts",
                reason: "must be at least 1".into(),
            });
        }
        if self.visibility < Duration::from_millis(100) {
            return Err(Error::InvalidOption {
                option: "visibility",
                reason: format!("{:?} is under the 100 ms minimum", self.visibility),
            });
        }
        millis(self.visibility, "visibility")?;
        for (option, cap) in [
            ("completed_history", self.completed_history),
            ("failed_history", self.failed_history),
        ] {
            if cap == 0 {
                return Err(Error::InvalidOption {
                    option,
                    reason: "must be at least 1: a job's hash lives as long as its listing".into(),
                });
            }
        }
        if self.completed_ttl.subsec_nanos() != 0 {
            return Err(Error::InvalidOption {
                option: "completed_ttl",
                reason: format!(
                    "{:?} is not whole seconds (Redis EXPIRE takes seconds)",
                    self.completed_ttl
                ),
            });
        }
        Ok(())
    }
}

/// A duration in whole milliseconds, refusing zero and absurd values.
pub(crate) fn millis(d: Duration, option: &'static str) -> Result<u64> {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 || ms > 365 * 24 * 3600 * 1000 {
        return Err(Error::InvalidOption {
            option,
            reason: format!("{d:?} is not between 1 ms and a year"),
        });
    }
    Ok(ms)
}

/// Counts and depths of one queue. The totals are fleet-wide: every process
/// updates the same `queue:{name}:stats` hash inside the scripts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Jobs ever enqueued.
    pub enqueued_total: u64,
    /// Jobs ever completed.
    pub completed_total: u64,
    /// Jobs ever failed for good (dead letters).
    pub failed_total: u64,
    /// Claims ever taken back by a sweep.
    pub reclaimed_total: u64,
    /// Failures ever sent back for another attempt.
    pub retried_total: u64,
    /// Jobs waiting.
    pub pending_depth: u64,
    /// Jobs claimed.
    pub processing_depth: u64,
    /// Ids in the completed history.
    pub completed_depth: u64,
    /// Ids in the dead letters.
    pub failed_depth: u64,
    /// Jobs waiting for a time (delayed, or retries in backoff).
    pub scheduled_depth: u64,
    /// The queue's visibility timeout in ms.
    pub visibility_ms: u64,
    /// True while the queue is paused.
    pub paused: bool,
}

impl Stats {
    /// How many ids `status`'s list holds.
    pub fn depth(&self, status: JobStatus) -> u64 {
        match status {
            JobStatus::Pending => self.pending_depth,
            JobStatus::Processing => self.processing_depth,
            JobStatus::Completed => self.completed_depth,
            JobStatus::Failed => self.failed_depth,
            JobStatus::Scheduled => self.scheduled_depth,
        }
    }
}

/// What one [`Queue::reclaim_stuck`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SweepReport {
    /// Ids sent back to pending.
    pub reclaimed: Vec<String>,
    /// Ids moved to the dead letters: out of attempts, or unusable.
    pub failed: Vec<String>,
    /// List entries removed because no job stood behind them (no hash, or a
    /// job already settled).
    pub dropped: Vec<String>,
}

/// How many expired leases, and processing entries, one sweep script
/// handles: keeps each script short (a few ms) so Redis stays responsive.
const SWEEP_BATCH: usize = 200;

/// How often a claim on a paused queue looks again.
pub(crate) const PAUSED_POLL: Duration = Duration::from_millis(250);

/// How many answered claim requests one claim deletes at most.
const MAX_ANSWERED_PER_CLAIM: usize = 64;

/// The stats pipeline's reply: four list lengths, the scheduled count and
/// the counters hash.
type StatsReply = (u64, u64, u64, u64, u64, bool, BTreeMap<String, String>);

/// The sweep script's reply: next cursor, more expired leases waiting, and
/// the ids reclaimed, failed and dropped.
type SweepReply = (i64, u8, Vec<String>, Vec<String>, Vec<String>);

/// One queue of one Redis server. Cheap to clone.
///
/// Every state change runs in one Lua script that also updates the fleet-wide
/// counters and publishes the event; see `docs/data-model.md` for the keys.
#[derive(Debug, Clone)]
pub struct Queue {
    conn: Connection,
    keys: Arc<Keys>,
    options: Arc<QueueOptions>,
    /// Keys of claim requests whose replies arrived, for the next claim to
    /// delete.
    answered: Arc<Mutex<Vec<String>>>,
}

impl Queue {
    /// Connects to `url` and binds queue `options.name`.
    ///
    /// # Cancellation safety
    /// Safe: nothing is written before the future completes.
    pub async fn connect(url: &str, options: QueueOptions) -> Result<Self> {
        let conn = Connection::open(url).await?;
        Self::new(&conn, options)
    }

    /// Binds a queue on an open connection (shared by as many queues as needed).
    pub fn new(conn: &Connection, options: QueueOptions) -> Result<Self> {
        options.validate()?;
        let layout = match (options.layout, conn.is_cluster()) {
            (None, false) => KeyLayout::Reference,
            (None, true) => KeyLayout::HashTagged,
            (Some(KeyLayout::Reference), true) => {
                return Err(Error::InvalidOption {
                    option: "layout",
                    reason: "the reference layout spreads a queue over many cluster slots, \
                             so its scripts would fail with CROSSSLOT; use KeyLayout::HashTagged"
                        .into(),
                });
            }
            (Some(layout), _) => layout,
        };
        let keys = Keys::new(&options.name, layout)?;
        Ok(Self {
            conn: conn.clone(),
            keys: Arc::new(keys),
            options: Arc::new(options),
            answered: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        self.keys.name()
    }

    /// The queue's key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The queue's options.
    pub fn options(&self) -> &QueueOptions {
        &self.options
    }

    /// The visibility timeout in ms.
    pub fn visibility_ms(&self) -> u64 {
        self.options.visibility.as_millis() as u64
    }

    /// The connection the queue uses.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Enqueues one job with `payload` (any serializable value; the reference
    /// uses JSON objects) and returns its id.
    ///
    /// # Cancellation safety
    /// Dropping the future may or may not have enqueued the job; never half
    /// of it (the hash and the pending entry are written by one script).
    pub async fn enqueue<P: Serialize + ?Sized>(&self, payload: &P) -> Result<String> {
        let mut ids = self.submit_many(vec![NewJob::new(payload)?]).await?;
        Ok(ids.remove(0))
    }

    /// Enqueues a batch of jobs in one round trip, in order; returns their ids.
    ///
    /// # Cancellation safety
    /// As [`enqueue`](Self::enqueue): all of the batch or none of it.
    pub async fn enqueue_many<P: Serialize>(&self, payloads: &[P]) -> Result<Vec<String>> {
        let jobs = payloads.iter().map(NewJob::new).collect::<Result<_>>()?;
        self.submit_many(jobs).await
    }

    /// Enqueues one job with options (handler name, max attempts, visibility).
    ///
    /// # Cancellation safety
    /// As [`enqueue`](Self::enqueue).
    pub async fn submit(&self, job: NewJob) -> Result<String> {
        let mut ids = self.submit_many(vec![job]).await?;
        Ok(ids.remove(0))
    }

    /// Enqueues a batch of jobs with options in one round trip; returns their ids.
    ///
    /// # Cancellation safety
    /// As [`enqueue`](Self::enqueue): all of the batch or none of it.
    pub async fn submit_many(&self, jobs: Vec<NewJob>) -> Result<Vec<String>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = SCRIPTS.enqueue.prepare_invoke();
        invocation
            .key(self.keys.pending())
            .key(self.keys.stats())
            .key(self.keys.scheduled());
        let mut ids = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let size = job.payload.len();
            if size > self.options.max_payload_bytes {
                return Err(Error::PayloadTooLarge {
                    size,
                    limit: self.options.max_payload_bytes,
                });
            }
            serde_json::from_str::<&RawValue>(&job.payload)?;
            let extra = job.extra_fields()?;
            let id = job.id.clone().unwrap_or_else(crate::id::random_hex);
            invocation
                .key(self.keys.job(&id))
                .arg(&id)
                .arg(&job.payload)
                .arg(job.when.arg())
                .arg(extra.len());
            for (field, value) in extra {
                invocation.arg(field).arg(value);
            }
            ids.push(id);
        }
        let _: usize = self.invoke(&invocation).await?;
        Ok(ids)
    }

    /// Claims the next job, waiting up to `timeout` for one to arrive (zero:
    /// do not wait). Returns `None` when the time ran out.
    ///
    /// Jobs that cannot run (no hash, a non-numeric field, a payload that is
    /// not JSON, out of attempts) are never returned: they go to `failed` with
    /// the reason, or are dropped when no job stands behind the id, and the
    /// claim goes on to the next one.
    ///
    /// # Cancellation safety
    /// Not cancel-safe once a job has been taken: a dropped future may leave a
    /// claimed job that nobody runs, which the sweep returns to pending when
    /// its lease runs out. Nothing is lost.
    pub async fn claim(&self, timeout: Duration) -> Result<Option<ClaimedJob>> {
        Ok(self.claim_many(1, timeout).await?.pop())
    }

    /// How the claim script takes ids from pending on this server.
    fn pop_mode(&self) -> &'static str {
        if self.conn.legacy_claim() {
            "rpoplpush"
        } else {
            "lmove"
        }
    }

    /// Claims up to `n` jobs without waiting; `paused` is true when the queue
    /// is paused (nothing was claimed).
    pub(crate) async fn claim_now(&self, n: usize) -> Result<(Vec<ClaimedJob>, bool)> {
        let mode = self.pop_mode();
        // When only jobs that cannot run came out (now failed), pending may
        // hold good ones behind them: claim again at once.
        loop {
            let (jobs, unusable, paused) = self.run_claim(mode, "", n).await?;
            if !jobs.is_empty() || paused || unusable == 0 {
                return Ok((jobs, paused));
            }
        }
    }

    /// Claims up to `n` jobs in one round trip, waiting up to `timeout` for
    /// the first to arrive. Returns an empty vector when the time ran out.
    ///
    /// # Cancellation safety
    /// As [`claim`](Self::claim).
    pub async fn claim_many(&self, n: usize, timeout: Duration) -> Result<Vec<ClaimedJob>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let (jobs, paused) = self.claim_now(n).await?;
            if !jobs.is_empty() {
                return Ok(jobs);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(jobs);
            }
            if paused {
                tokio::time::sleep(left.min(PAUSED_POLL)).await;
                continue;
            }
            if let Some(jobs) = self.wait_for_job(left).await?
                && !jobs.is_empty()
            {
                return Ok(jobs);
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// Blocks on a dedicated connection until pending holds a job or `left`
    /// passes. With `BLMOVE` it rotates pending onto itself (`RIGHT RIGHT`
    /// leaves the list as it was) so the claim script then takes the job with
    /// its stamp. With `BRPOPLPUSH` (Redis < 6.2) the job moves to processing
    /// here and the claim script adopts it; `Some` carries what was adopted.
    pub(crate) async fn wait_for_job(&self, left: Duration) -> Result<Option<Vec<ClaimedJob>>> {
        let block = left.max(Duration::from_millis(10));
        let mut conn = self.conn.blocking().await?;
        let legacy = self.conn.legacy_claim();
        let cmd = if legacy {
            // BRPOPLPUSH takes whole seconds before Redis 6.0.
            let secs = block.as_secs_f64().ceil().max(1.0) as u64;
            let mut cmd = redis::cmd("BRPOPLPUSH");
            cmd.arg(self.keys.pending())
                .arg(self.keys.processing())
                .arg(secs);
            cmd
        } else {
            let mut cmd = redis::cmd("BLMOVE");
            cmd.arg(self.keys.pending())
                .arg(self.keys.pending())
                .arg("RIGHT")
                .arg("RIGHT")
                .arg(format!("{:.3}", block.as_secs_f64()));
            cmd
        };
        let limit = block + self.conn.options().response_timeout;
        let reply = tokio::time::timeout(limit, cmd.query_async::<Option<String>>(&mut conn.conn))
            .await
            .map_err(|_| {
                Error::Redis(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "blocking claim got no reply in time",
                )))
            })?;
        let id = match reply {
            Ok(id) => {
                conn.give_back();
                id
            }
            Err(e) => {
                let err = Error::from(e);
                if err.is_connection_error() {
                    // The connection is dropped; the next wait opens a new one.
                    tracing::debug!(error = %err, "blocking claim connection lost");
                    tokio::time::sleep(crate::connection::backoff(0)).await;
                    return Ok(None);
                }
                return Err(err);
            }
        };
        match (legacy, id) {
            (true, Some(id)) => Ok(Some(self.run_claim("adopt", &id, 1).await?.0)),
            _ => Ok(None),
        }
    }

    /// One claim request: id `request` and one token per job wanted. A
    /// retry after a lost reply repeats the same request (same key, same
    /// tokens), and the script answers it with the jobs the first run took.
    async fn claim_request(
        &self,
        mode: &str,
        adopt: &str,
        request: &str,
        tokens: &[String],
    ) -> Result<Value> {
        let request = self.keys.request(request);
        let answered: Vec<String> = {
            let mut answered = self.answered.lock().expect("answered lock");
            let keep = answered.len().saturating_sub(MAX_ANSWERED_PER_CLAIM);
            answered.split_off(keep)
        };
        let mut invocation = SCRIPTS.claim.prepare_invoke();
        invocation
            .key(self.keys.pending())
            .key(self.keys.processing())
            .key(self.keys.leases())
            .key(self.keys.failed())
            .key(self.keys.stats())
            .key(&request)
            .key(self.keys.paused())
            .key(&answered)
            .arg(self.keys.job_prefix())
            .arg(self.keys.events())
            .arg(self.visibility_ms())
            .arg(self.options.max_attempts)
            .arg(self.options.failed_history)
            .arg(mode)
            .arg(adopt)
            .arg(tokens);
        let reply: Value = self.invoke(&invocation).await?;
        self.answered.lock().expect("answered lock").push(request);
        Ok(reply)
    }

    /// Sends one claim request with a chosen id and tokens, as a retry after
    /// a lost reply would. For tests of that path; not a public API.
    #[doc(hidden)]
    pub async fn __claim_request(
        &self,
        request: &str,
        tokens: &[String],
    ) -> Result<Vec<ClaimedJob>> {
        let reply = self.claim_request("lmove", "", request, tokens).await?;
        Ok(decode_claim_reply(reply)?
            .claimed
            .into_iter()
            .map(|(job, _)| job)
            .collect())
    }

    /// Runs the claim script; returns the jobs that can run, how many
    /// were taken but could not run (failed here with the reason), and whether
    /// the queue is paused.
    async fn run_claim(
        &self,
        mode: &str,
        adopt: &str,
        n: usize,
    ) -> Result<(Vec<ClaimedJob>, usize, bool)> {
        let tokens: Vec<String> = (0..n).map(|_| crate::id::random_hex()).collect();
        let reply = self
            .claim_request(mode, adopt, &crate::id::random_hex(), &tokens)
            .await?;
        if is_paused_reply(&reply) {
            return Ok((Vec::new(), 0, true));
        }
        let ClaimReply { claimed, rejected } = decode_claim_reply(reply)?;
        let rejected_count = rejected.len();
        for (id, outcome, reason) in rejected {
            tracing::warn!(
                queue = self.name(),
                job = id,
                outcome,
                reason,
                "claim skipped a job"
            );
        }
        let mut jobs = Vec::with_capacity(claimed.len());
        let mut unusable = rejected_count;
        for entry in claimed {
            match entry {
                (job, None) => jobs.push(job),
                (job, Some(err)) => {
                    tracing::warn!(queue = self.name(), job = job.id(), error = %err, "claimed job cannot run; failing it");
                    // On an error here the claim stays with its lease, and
                    // the sweep takes it back; the other jobs still run.
                    if let Err(e) = self.fail_permanently(&job, &err.to_string()).await {
                        tracing::warn!(queue = self.name(), job = job.id(), error = %e, "could not fail an unusable job; its lease will expire");
                    }
                    unusable += 1;
                }
            }
        }
        Ok((jobs, unusable, false))
    }

    /// Completes a claimed job with `result` (stored as JSON).
    ///
    /// # Cancellation safety
    /// Dropping the future may or may not complete the job; calling again
    /// with the same job is safe and returns [`Ack::Duplicate`] if it was.
    pub async fn complete<R: Serialize + ?Sized>(
        &self,
        job: &ClaimedJob,
        result: &R,
    ) -> Result<Ack> {
        let result = serde_json::to_string(result)?;
        let mut invocation = SCRIPTS.complete.prepare_invoke();
        invocation
            .key(self.keys.job(job.id()))
            .key(self.keys.processing())
            .key(self.keys.completed())
            .key(self.keys.leases())
            .key(self.keys.stats())
            .arg(job.id())
            .arg(job.token())
            .arg(result)
            .arg(self.options.completed_ttl.as_secs())
            .arg(self.options.completed_history)
            .arg(self.keys.events())
            .arg(self.keys.job_prefix());
        let code = self.invoke(&invocation).await?;
        Ok(ack(code, &[(1, Ack::Completed)]))
    }

    /// Records a failure of a claimed job: it goes back to pending while it
    /// has attempts left (decided in Redis from the job's stored attempts and
    /// max attempts), else to the dead letters with `error` as `last_error`.
    ///
    /// # Cancellation safety
    /// As [`complete`](Self::complete).
    pub async fn fail(&self, job: &ClaimedJob, error: &str) -> Result<Ack> {
        self.fail_with(job, error, "retry", Duration::ZERO).await
    }

    /// Like [`fail`](Self::fail), but a retry waits `delay` in
    /// `queue:{name}:scheduled` before it is pending again (a runner's sweep
    /// moves it once due).
    ///
    /// # Cancellation safety
    /// As [`complete`](Self::complete).
    pub async fn fail_with_delay(
        &self,
        job: &ClaimedJob,
        error: &str,
        delay: Duration,
    ) -> Result<Ack> {
        self.fail_with(job, error, "retry", delay).await
    }

    /// Fails a claimed job for good, whatever attempts it has left.
    ///
    /// # Cancellation safety
    /// As [`complete`](Self::complete).
    pub async fn fail_permanently(&self, job: &ClaimedJob, error: &str) -> Result<Ack> {
        self.fail_with(job, error, "permanent", Duration::ZERO)
            .await
    }

    async fn fail_with(
        &self,
        job: &ClaimedJob,
        error: &str,
        mode: &str,
        delay: Duration,
    ) -> Result<Ack> {
        let mut invocation = SCRIPTS.fail.prepare_invoke();
        invocation
            .key(self.keys.job(job.id()))
            .key(self.keys.processing())
            .key(self.keys.pending())
            .key(self.keys.failed())
            .key(self.keys.leases())
            .key(self.keys.stats())
            .key(self.keys.scheduled())
            .arg(job.id())
            .arg(job.token())
            .arg(error)
            .arg(mode)
            .arg(self.options.max_attempts)
            .arg(self.options.failed_history)
            .arg(self.keys.events())
            .arg(self.keys.job_prefix())
            .arg(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        let code = self.invoke(&invocation).await?;
        Ok(ack(code, &[(1, Ack::Retrying), (2, Ack::Failed)]))
    }

    /// Hands a claimed job back to pending, at the front of the line, without
    /// charging the attempt (for a worker that stops before running it).
    ///
    /// # Cancellation safety
    /// As [`complete`](Self::complete).
    pub async fn release(&self, job: &ClaimedJob) -> Result<Ack> {
        let mut invocation = SCRIPTS.release.prepare_invoke();
        invocation
            .key(self.keys.job(job.id()))
            .key(self.keys.processing())
            .key(self.keys.pending())
            .key(self.keys.leases())
            .arg(job.id())
            .arg(job.token())
            .arg(self.keys.events());
        let code = self.invoke(&invocation).await?;
        Ok(ack(code, &[(1, Ack::Released)]))
    }

    /// Renews the lease of a running job for another visibility timeout.
    ///
    /// # Cancellation safety
    /// Safe: renewing twice is harmless.
    pub async fn extend(&self, job: &ClaimedJob) -> Result<Ack> {
        Ok(self.extend_many(&[job]).await?.remove(0))
    }

    /// Renews the leases of many running jobs in one round trip; one
    /// [`Ack::Extended`] or [`Ack::LeaseLost`] per job, in order.
    ///
    /// # Cancellation safety
    /// Safe: renewing twice is harmless.
    pub async fn extend_many(&self, jobs: &[&ClaimedJob]) -> Result<Vec<Ack>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = SCRIPTS.extend.prepare_invoke();
        invocation.key(self.keys.leases()).arg(self.visibility_ms());
        for job in jobs {
            invocation
                .key(self.keys.job(job.id()))
                .arg(job.id())
                .arg(job.token());
        }
        let deadlines: Vec<Value> = self.invoke(&invocation).await?;
        Ok(deadlines
            .iter()
            .map(|d| match d {
                Value::Int(0) => Ack::LeaseLost,
                _ => Ack::Extended,
            })
            .collect())
    }

    /// Sweeps the queue once: claims whose lease ran out go back to pending
    /// (or to the dead letters when that was their last attempt), and
    /// processing entries left behind by other clients, crashes or purges
    /// are reclaimed or dropped. Runs in bounded steps, so Redis serves other
    /// clients between them; entries that move during the pass may wait for
    /// the next one.
    ///
    /// # Cancellation safety
    /// Safe: each step is one atomic script; a dropped pass just stops early.
    pub async fn reclaim_stuck(&self) -> Result<SweepReport> {
        self.sweep(true).await
    }

    /// The cheap part of [`reclaim_stuck`](Self::reclaim_stuck): only claims
    /// of ours whose lease ran out, found in the leases set without walking
    /// the processing list. A runner does this every sweep interval.
    ///
    /// # Cancellation safety
    /// Safe: each step is one atomic script.
    pub async fn reclaim_expired(&self) -> Result<SweepReport> {
        self.sweep(false).await
    }

    async fn sweep(&self, walk: bool) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let mut cursor: i64 = 0;
        let mut walking = walk;
        loop {
            let mut invocation = SCRIPTS.reclaim.prepare_invoke();
            invocation
                .key(self.keys.pending())
                .key(self.keys.processing())
                .key(self.keys.leases())
                .key(self.keys.failed())
                .key(self.keys.stats())
                .arg(self.keys.job_prefix())
                .arg(self.keys.events())
                .arg(self.visibility_ms())
                .arg(self.options.max_attempts)
                .arg(self.options.failed_history)
                .arg(SWEEP_BATCH)
                .arg(cursor.max(0))
                .arg(if walking { SWEEP_BATCH } else { 0 });
            let (next, more, reclaimed, failed, dropped): SweepReply =
                self.invoke(&invocation).await?;
            report.reclaimed.extend(reclaimed);
            report.failed.extend(failed);
            report.dropped.extend(dropped);
            if next < 0 {
                walking = false;
            } else {
                cursor = next;
            }
            if !walking && more == 0 {
                break;
            }
        }
        for id in &report.dropped {
            tracing::warn!(
                queue = self.name(),
                job = id,
                "sweep dropped a list entry with no job behind it"
            );
        }
        Ok(report)
    }

    /// Moves scheduled jobs whose time has come (delayed jobs, retries done
    /// waiting) to pending; returns how many moved.
    ///
    /// # Cancellation safety
    /// Safe: each step is one atomic script.
    pub async fn promote_due(&self) -> Result<u64> {
        let mut moved = 0;
        loop {
            let mut invocation = SCRIPTS.promote.prepare_invoke();
            invocation
                .key(self.keys.scheduled())
                .key(self.keys.pending())
                .arg(self.keys.job_prefix())
                .arg(SWEEP_BATCH);
            let (n, more): (u64, u8) = self.invoke(&invocation).await?;
            moved += n;
            if more == 0 {
                return Ok(moved);
            }
        }
    }

    /// Runs a script on the shared connection, retrying connection errors.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        self.conn
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
    }

    /// Pauses the queue: runners claim nothing from it until
    /// [`resume`](Self::resume); running jobs finish normally.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn pause(&self) -> Result<()> {
        let key = self.keys.paused();
        self.conn.query(redis::cmd("SET").arg(key).arg("1")).await
    }

    /// Resumes a paused queue.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn resume(&self) -> Result<()> {
        let key = self.keys.paused();
        self.conn.query(redis::cmd("DEL").arg(key)).await
    }

    /// Sends one dead letter back to pending with a fresh set of attempts;
    /// false when `id` is not a failed job.
    ///
    /// # Cancellation safety
    /// Safe: retrying a job that is no longer failed does nothing.
    pub async fn retry_failed(&self, id: &str) -> Result<bool> {
        let (retried, _) = self.retry_script(id).await?;
        Ok(!retried.is_empty())
    }

    /// Sends every dead letter back to pending, oldest first, in bounded
    /// steps; returns their ids.
    ///
    /// # Cancellation safety
    /// Safe: a dropped call leaves the rest failed.
    pub async fn retry_all_failed(&self) -> Result<Vec<String>> {
        let mut all = Vec::new();
        loop {
            let (retried, more) = self.retry_script("").await?;
            let progressed = !retried.is_empty();
            all.extend(retried);
            if more == 0 || !progressed {
                return Ok(all);
            }
        }
    }

    async fn retry_script(&self, id: &str) -> Result<(Vec<String>, u8)> {
        let mut invocation = SCRIPTS.retry.prepare_invoke();
        invocation
            .key(self.keys.failed())
            .key(self.keys.pending())
            .key(self.keys.stats())
            .arg(self.keys.job_prefix())
            .arg(id)
            .arg(SWEEP_BATCH);
        self.invoke(&invocation).await
    }

    /// Deletes one job wherever it is; false when there was no such job. A
    /// worker running it finds its claim gone.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn delete_job(&self, id: &str) -> Result<bool> {
        let mut invocation = SCRIPTS.delete.prepare_invoke();
        invocation
            .key(self.keys.job(id))
            .key(self.keys.pending())
            .key(self.keys.processing())
            .key(self.keys.completed())
            .key(self.keys.failed())
            .key(self.keys.scheduled())
            .key(self.keys.leases())
            .arg(id);
        let deleted: u8 = self.invoke(&invocation).await?;
        Ok(deleted == 1)
    }

    /// Depths and fleet-wide totals, read as one consistent snapshot.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn stats(&self) -> Result<Stats> {
        let mut invocation = SCRIPTS.stats.prepare_invoke();
        invocation
            .key(self.keys.pending())
            .key(self.keys.processing())
            .key(self.keys.completed())
            .key(self.keys.failed())
            .key(self.keys.scheduled())
            .key(self.keys.paused())
            .key(self.keys.stats())
            .arg(0);
        let (pending, processing, completed, failed, scheduled, paused, totals): StatsReply =
            self.invoke(&invocation).await?;
        let total = |name: &str| -> Result<u64> {
            match totals.get(name) {
                None => Ok(0),
                Some(v) => v.parse().map_err(|_| {
                    Error::malformed(self.keys.stats(), format!("{name} is {v:?}, not a number"))
                }),
            }
        };
        Ok(Stats {
            enqueued_total: total("enqueued_total")?,
            completed_total: total("completed_total")?,
            failed_total: total("failed_total")?,
            reclaimed_total: total("reclaimed_total")?,
            retried_total: total("retried_total")?,
            pending_depth: pending,
            processing_depth: processing,
            completed_depth: completed,
            failed_depth: failed,
            scheduled_depth: scheduled,
            paused,
            visibility_ms: self.visibility_ms(),
        })
    }

    /// One job's hash, or `None` when it does not exist.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn get_job(&self, id: &str) -> Result<Option<JobRecord>> {
        Ok(self.get_jobs(&[id]).await?.pop().flatten())
    }

    /// Many jobs' hashes in one round trip, in order; `None` for ids whose
    /// hash does not exist (expired, purged, trimmed).
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn get_jobs<S: AsRef<str>>(&self, ids: &[S]) -> Result<Vec<Option<JobRecord>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = SCRIPTS.read.prepare_invoke();
        for id in ids {
            invocation.key(self.keys.job(id.as_ref()));
        }
        invocation.arg(0);
        let hashes: Vec<BTreeMap<String, String>> = self.invoke(&invocation).await?;
        Ok(ids
            .iter()
            .zip(hashes)
            .map(|(id, fields)| (!fields.is_empty()).then(|| JobRecord::new(id.as_ref(), fields)))
            .collect())
    }

    /// Ids in `status`'s list, in that list's order (see the `list_*`
    /// methods); `range` pages through them.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn list(&self, status: JobStatus, range: Range<usize>) -> Result<Vec<String>> {
        match status {
            JobStatus::Pending => self.list_pending(range).await,
            JobStatus::Processing => self.list_processing(range).await,
            JobStatus::Completed => self.list_completed(range).await,
            JobStatus::Failed => self.list_failed(range).await,
            JobStatus::Scheduled => self.list_scheduled(range).await,
        }
    }

    /// Ids waiting, oldest (next to run) first; `range` pages through them.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn list_pending(&self, range: Range<usize>) -> Result<Vec<String>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        // The oldest job sits at the right end: index -1.
        let (start, stop) = (-(range.end as isize), -(range.start as isize) - 1);
        let mut ids = self.lrange(self.keys.pending(), start, stop).await?;
        ids.reverse();
        Ok(ids)
    }

    /// Ids claimed, most recently claimed first.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn list_processing(&self, range: Range<usize>) -> Result<Vec<String>> {
        self.list_from_head(self.keys.processing(), range).await
    }

    /// Ids in the completed history, newest first.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn list_completed(&self, range: Range<usize>) -> Result<Vec<String>> {
        self.list_from_head(self.keys.completed(), range).await
    }

    /// Ids waiting for a time, soonest first.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn list_scheduled(&self, range: Range<usize>) -> Result<Vec<String>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.keys.scheduled();
        let (start, stop) = (range.start as isize, range.end as isize - 1);
        self.conn
            .query(redis::cmd("ZRANGE").arg(key).arg(start).arg(stop))
            .await
    }

    /// Ids in the dead letters, newest first.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn list_failed(&self, range: Range<usize>) -> Result<Vec<String>> {
        self.list_from_head(self.keys.failed(), range).await
    }

    async fn list_from_head(&self, key: String, range: Range<usize>) -> Result<Vec<String>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        self.lrange(key, range.start as isize, range.end as isize - 1)
            .await
    }

    async fn lrange(&self, key: String, start: isize, stop: isize) -> Result<Vec<String>> {
        self.conn
            .query(redis::cmd("LRANGE").arg(key).arg(start).arg(stop))
            .await
    }

    /// Deletes every key of the queue: its lists, leases, schedule, counters
    /// and job hashes. Returns how many keys were deleted. Not atomic: stop
    /// workers first, or jobs written during the purge survive it.
    ///
    /// # Cancellation safety
    /// Safe to repeat: a dropped purge leaves part of the keys for the next.
    pub async fn purge(&self) -> Result<u64> {
        // Deletes as it scans, and scans again until a pass finds nothing: a
        // pass on a cluster node that lost its slot midway sees only part.
        let mut deleted: u64 = 0;
        for _ in 0..5 {
            let mut pass: u64 = 0;
            let mut scan = self
                .conn
                .keys(&self.keys.pattern(), Some(&self.keys.pending()), usize::MAX)
                .await?;
            while let Some(keys) = scan.next_batch().await? {
                if !keys.is_empty() {
                    let n: u64 = self.conn.query(redis::cmd("UNLINK").arg(&keys)).await?;
                    pass += n;
                }
            }
            deleted += pass;
            if pass == 0 {
                break;
            }
        }
        Ok(deleted)
    }
}

fn ack(code: i64, applied: &[(i64, Ack)]) -> Ack {
    match code {
        -1 => Ack::Duplicate,
        _ => applied
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(Ack::LeaseLost, |(_, a)| *a),
    }
}

/// True for the claim script's answer on a paused queue.
fn is_paused_reply(reply: &Value) -> bool {
    match reply {
        Value::SimpleString(s) => s == "paused",
        Value::BulkString(b) => b == b"paused",
        _ => false,
    }
}

/// A job the claim script refused to hand out: id, outcome, reason.
type Rejected = (String, String, String);

/// The claim script's reply: the jobs claimed (each with the problem that
/// keeps it from running, if any) and the jobs refused.
struct ClaimReply {
    claimed: Vec<(ClaimedJob, Option<Error>)>,
    rejected: Vec<Rejected>,
}

/// Decodes `{ claimed, rejected }` from the claim script.
fn decode_claim_reply(reply: Value) -> Result<ClaimReply> {
    let bad = |why: &str| Error::malformed("claim script reply", why.to_owned());
    let Value::Array(mut parts) = reply else {
        return Err(bad("not an array"));
    };
    if parts.len() != 2 {
        return Err(bad("expected two parts"));
    }
    let rejected: Vec<Rejected> = redis::from_redis_value(parts.pop().expect("two parts"))
        .map_err(|e| bad(&e.to_string()))?;
    let Value::Array(entries) = parts.pop().expect("two parts") else {
        return Err(bad("claimed part is not an array"));
    };
    let mut claimed = Vec::with_capacity(entries.len());
    for entry in entries {
        let (id, token, claimed_at, deadline, raw): (
            String,
            String,
            String,
            String,
            BTreeMap<String, Vec<u8>>,
        ) = redis::from_redis_value(entry).map_err(|e| bad(&e.to_string()))?;
        // A field that is not UTF-8 makes this job unusable, not the batch.
        let mut problem = None;
        let fields = raw
            .into_iter()
            .map(|(name, value)| {
                let value = String::from_utf8(value).unwrap_or_else(|e| {
                    problem = Some(Error::malformed(
                        format!("job {id}"),
                        format!("field {name} is not UTF-8"),
                    ));
                    String::from_utf8_lossy(e.as_bytes()).into_owned()
                });
                (name, value)
            })
            .collect();
        let (job, decode_problem) =
            ClaimedJob::decode(id.clone(), token, &claimed_at, &deadline, fields);
        claimed.push((job, problem.or(decode_problem)));
    }
    Ok(ClaimReply { claimed, rejected })
}
