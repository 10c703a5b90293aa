//! Claim: `claim.lua` takes jobs from pending and stamps each with a token
//! and a lease in one step; while the queue is idle, a claim blocks on a
//! dedicated connection until a job arrives.

use std::time::{Duration, Instant};

use redis::Value;

use super::protocol::{ClaimMode, ClaimReply, Hold, Refusal};
use super::{ClaimedJob, Queue};
use crate::error::{Error, Result};
use crate::retry::Backoff;
use crate::scripts::SCRIPTS;

/// How often a claim on a paused queue looks again.
pub(crate) const PAUSED_POLL: Duration = Duration::from_millis(250);

/// How many answered claim requests one claim deletes at most.
const MAX_ANSWERED_PER_CLAIM: usize = 64;

/// Longest a runner held back by a rate sleeps before it claims again, so
/// a limit raised live applies within a second.
pub(crate) const MAX_THROTTLE_SLEEP: Duration = Duration::from_millis(500);

/// What one run of the claim script gave.
struct Claimed {
    /// Jobs that can run.
    jobs: Vec<ClaimedJob>,
    /// Jobs taken that could not run (failed or dropped here, with a reason).
    unusable: usize,
    /// True when the queue is paused (nothing was claimed).
    paused: bool,
    /// Why fewer jobs came than were asked for, though some may wait.
    hold: Hold,
}

/// What a claim without waiting gave: the jobs, whether the queue is
/// paused, and what held the claim back.
#[derive(Debug, Default)]
pub(crate) struct ClaimNow {
    pub(crate) jobs: Vec<ClaimedJob>,
    pub(crate) paused: bool,
    pub(crate) hold: Hold,
}

impl Queue {
    /// Claims the next job, waiting up to `timeout` for one to arrive (zero:
    /// do not wait). Returns `None` when the time ran out.
    ///
    /// Jobs that cannot run (no hash, a key of another type, a number that
    /// is not decimal digits in range, a payload that is not JSON, out of
    /// attempts) are never returned: they go to `failed` with the reason, or
    /// are dropped when no job stands behind the id, and the claim goes on
    /// to the next one.
    ///
    /// # Cancellation safety
    /// Not cancel-safe once a job has been taken: a dropped future may leave a
    /// claimed job that nobody runs, which the sweep returns to pending when
    /// its lease runs out. Nothing is lost.
    pub async fn claim(&self, timeout: Duration) -> Result<Option<ClaimedJob>> {
        Ok(self.claim_many(1, timeout).await?.pop())
    }

    /// Claims up to `n` jobs in one round trip (at most 100: one claim script
    /// call stays short), waiting up to `timeout` for the first to arrive.
    /// Returns an empty vector when the time ran out.
    ///
    /// # Cancellation safety
    /// As [`claim`](Self::claim).
    pub async fn claim_many(&self, n: usize, timeout: Duration) -> Result<Vec<ClaimedJob>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let ClaimNow { jobs, paused, hold } = self.claim_now(n).await?;
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
            let waited = match hold {
                Hold::Throttled(wait) => {
                    tokio::time::sleep(left.min(wait).min(MAX_THROTTLE_SLEEP)).await;
                    None
                }
                Hold::Capped(wait) => {
                    self.wait_for_wake(left.min(wait)).await?;
                    None
                }

                Hold::Keys(wait) => self.wait_for_job(left.min(wait)).await?,
                Hold::None => self.wait_for_job(left).await?,
            };
            if let Some(jobs) = waited
                && !jobs.is_empty()
            {
                return Ok(jobs);
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// How the claim script takes ids from pending on this server.
    fn pop_mode(&self) -> ClaimMode {
        if self.conn.legacy_claim() {
            ClaimMode::Rpoplpush
        } else {
            ClaimMode::Lmove
        }
    }

    /// Claims up to `n` jobs without waiting.
    pub(crate) async fn claim_now(&self, n: usize) -> Result<ClaimNow> {
        let n = n.min(super::CLAIM_BATCH);
        let mode = self.pop_mode();
        // When only jobs that cannot run came out (now failed), pending may
        // hold good ones behind them: claim again at once.
        loop {
            let claimed = self.run_claim(mode, "", n).await?;
            if !claimed.jobs.is_empty() || claimed.paused || claimed.unusable == 0 {
                return Ok(ClaimNow {
                    jobs: claimed.jobs,
                    paused: claimed.paused,
                    hold: claimed.hold,
                });
            }
        }
    }

    /// Blocks until the queue's wake list holds a token (taking it) or
    /// `left` passes: the wait of a runner held back by max_running, which
    /// a settle freeing a slot ends. Pending is not watched: it may hold
    /// jobs the cap keeps back.
    pub(crate) async fn wait_for_wake(&self, left: Duration) -> Result<bool> {
        let block = left.max(Duration::from_millis(10));
        let mut cmd = redis::cmd("BLPOP");
        cmd.arg(self.keys.wake())
            .arg(format!("{:.3}", block.as_secs_f64()));
        let token: Option<(String, String)> = self.blocking_query(cmd, block).await?.flatten();
        Ok(token.is_some())
    }

    /// Runs one blocking command on a dedicated connection, bounded by
    /// `block` plus the response timeout. `None` when the connection was
    /// lost (after a short pause; the next wait opens a new one).
    async fn blocking_query<T: redis::FromRedisValue>(
        &self,
        cmd: redis::Cmd,
        block: Duration,
    ) -> Result<Option<T>> {
        let mut conn = self.conn.blocking().await?;
        let limit = block + self.conn.options().response_timeout;
        let reply = tokio::time::timeout(limit, cmd.query_async::<T>(&mut conn.conn))
            .await
            .map_err(|_| {
                Error::Redis(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "blocking claim got no reply in time",
                )))
            })?;
        match reply {
            Ok(value) => {
                conn.give_back();
                Ok(Some(value))
            }
            Err(e) => {
                let err = Error::from(e);
                if err.is_connection_error() {
                    tracing::debug!(error = %err, "blocking claim connection lost");
                    tokio::time::sleep(Backoff::COMMAND.delay(0)).await;
                    return Ok(None);
                }
                Err(err)
            }
        }
    }

    /// Blocks on dedicated connections until pending holds a job, the
    /// queue's wake list holds a token (a job in another lane, a freed
    /// slot, new limits), or `left` passes. With `BLMOVE` it rotates pending
    /// onto itself (`RIGHT RIGHT` leaves the list as it was) so the claim
    /// script then takes the job with its stamp; the two waits race and the
    /// one that loses is dropped with its connection. With `BRPOPLPUSH`
    /// (Redis < 6.2) the job moves to processing here and the claim script
    /// adopts it; `Some` carries what was adopted. That move cannot be
    /// abandoned half way, so there the wake list is looked at between
    /// waits of at most a second.
    pub(crate) async fn wait_for_job(&self, left: Duration) -> Result<Option<Vec<ClaimedJob>>> {
        self.wait_for_job_or(left, async { self.wait_for_wake(left).await.map(|_| ()) })
            .await
    }

    /// [`wait_for_job`](Self::wait_for_job) with the wake-list wait given
    /// by the caller: a runner keeps one `BLPOP` of its own running across
    /// waits (a wait dropped half way closes its connection, and opening
    /// one per job that arrives would cost more than the job).
    pub(crate) async fn wait_for_job_or(
        &self,
        left: Duration,
        woken: impl std::future::Future<Output = Result<()>>,
    ) -> Result<Option<Vec<ClaimedJob>>> {
        let block = left.max(Duration::from_millis(10));
        if self.conn.legacy_claim() {
            // BRPOPLPUSH takes whole seconds before Redis 6.0.
            let block = block.min(Duration::from_secs(1));
            let woken: Option<Option<String>> = self
                .conn
                .run(|mut c| {
                    let wake = self.keys.wake();
                    async move { redis::cmd("LPOP").arg(wake).query_async(&mut c).await }
                })
                .await
                .map(Some)?;
            if matches!(woken, Some(Some(_))) {
                return Ok(None);
            }
            let secs = block.as_secs_f64().ceil().max(1.0) as u64;
            let mut cmd = redis::cmd("BRPOPLPUSH");
            cmd.arg(self.keys.pending())
                .arg(self.keys.processing())
                .arg(secs);
            let id: Option<String> = self.blocking_query(cmd, block).await?.flatten();
            return match id {
                Some(id) => Ok(Some(self.run_claim(ClaimMode::Adopt, &id, 1).await?.jobs)),
                None => Ok(None),
            };
        }
        let mut pending = redis::cmd("BLMOVE");
        pending
            .arg(self.keys.pending())
            .arg(self.keys.pending())
            .arg("RIGHT")
            .arg("RIGHT")
            .arg(format!("{:.3}", block.as_secs_f64()));
        tokio::select! {
            got = self.blocking_query::<Option<String>>(pending, block) => { got?; }
            got = woken => got?,
        }
        Ok(None)
    }

    /// One claim request: id `request` and one token per job wanted. A
    /// retry after a lost reply repeats the same request (same key, same
    /// tokens), and the script answers it with the jobs the first run took.
    async fn claim_request(
        &self,
        mode: ClaimMode,
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
            .key(self.keys.settled())
            .key(self.keys.cancelled())
            .key(self.keys.outbox())
            .key(self.keys.outbox_entries())
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
    /// a lost reply would. A test hook, not a stable API.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub async fn __claim_request(
        &self,
        request: &str,
        tokens: &[String],
    ) -> Result<Vec<ClaimedJob>> {
        let reply = self
            .claim_request(ClaimMode::Lmove, "", request, tokens)
            .await?;
        Ok(match ClaimReply::decode(reply)? {
            ClaimReply::Paused => Vec::new(),
            ClaimReply::Claimed { claimed, .. } => {
                claimed.into_iter().map(|(job, _)| job).collect()
            }
        })
    }

    /// Runs the claim script, and fails at once the jobs it took that cannot
    /// run.
    async fn run_claim(&self, mode: ClaimMode, adopt: &str, n: usize) -> Result<Claimed> {
        let tokens: Vec<String> = (0..n).map(|_| crate::id::random_hex()).collect();
        let reply = self
            .claim_request(mode, adopt, &crate::id::random_hex(), &tokens)
            .await?;
        let (claimed, rejected, hold) = match ClaimReply::decode(reply)? {
            ClaimReply::Paused => {
                return Ok(Claimed {
                    jobs: Vec::new(),
                    unusable: 0,
                    paused: true,
                    hold: Hold::None,
                });
            }
            ClaimReply::Claimed {
                claimed,
                rejected,
                hold,
            } => (claimed, rejected, hold),
        };
        for rejected in &rejected {
            let outcome = match rejected.refusal {
                Refusal::Failed => "failed",
                Refusal::Dropped => "dropped",
                Refusal::Expired => "expired",
            };
            tracing::warn!(
                queue = self.name(),
                job = rejected.id,
                outcome,
                reason = rejected.reason,
                "claim skipped a job"
            );
        }
        let mut jobs = Vec::with_capacity(claimed.len());
        let mut unusable = rejected.len();
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
        Ok(Claimed {
            jobs,
            unusable,
            paused: false,
            hold,
        })
    }
}
