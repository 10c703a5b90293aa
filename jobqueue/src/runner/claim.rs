//! The claim loop of one queue: writes the outcomes of finished jobs and
//! claims jobs for the slots that are free, both in one round trip (the
//! settle call and the claim are sent together), as many per call as have
//! gathered, with a few such calls in flight. While the queue is idle it
//! blocks on a connection of its own, holding no slot, and still writes
//! outcomes as jobs finish.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::acks::Finished;
use super::execute::{self, MAX_WRITE_TRIES};
use super::slot::{Slot, slot, try_slot};
use super::{QueueRt, Shared};
use crate::error::Result;
use crate::queue::{Ack, ClaimNow, ClaimedJob, Hold, MAX_THROTTLE_SLEEP, SETTLE_BATCH, Settlement};
use crate::retry::Backoff;

/// Most jobs one claim round trip asks for.
const MAX_BATCH: usize = 100;

/// The idle wait in flight: kept across turns of the loop, so writing
/// outcomes meanwhile does not drop its blocking connection.
type Wait = Pin<Box<dyn Future<Output = Result<Option<Vec<ClaimedJob>>>> + Send>>;

/// How many settle-and-claim calls of one queue may be in flight at once:
/// with two, the runner works on the jobs of one batch while Redis runs the
/// next call, so neither waits for the other. A call carries at most
/// [`MAX_BATCH`] jobs, so a runner with more slots than two calls carry keeps
/// one more call in flight per batch of slots, up to four (at concurrency
/// 500, three or four in flight processed 20-30% more no-op jobs per second
/// than two; at 50, three were no faster).
fn max_rounds(concurrency: usize) -> usize {
    (concurrency / MAX_BATCH + 1).clamp(2, 4)
}

/// What one settle-and-claim call gave back: the outcomes it carried and
/// their acks, the slots it was sent with, and the claim's answer (none when
/// it claimed nothing).
struct Round {
    finished: Vec<Finished>,
    slots: Vec<Slot>,
    /// How many jobs the claim asked for.
    asked: usize,
    settled: Result<Vec<Ack>>,
    claimed: Option<Result<ClaimNow>>,
}

type RoundFuture = Pin<Box<dyn Future<Output = Round> + Send>>;

/// What woke the claim loop.
enum Wake {
    /// A slot is free.
    Slot(Slot),
    /// An outcome waits to be written.
    Outcome,
    /// A back-off ended.
    Timer,
    /// The idle wait ended (with Redis < 6.2, with the jobs it took).
    Waited(Result<Option<Vec<ClaimedJob>>>),
    /// A call in flight answered.
    Answered(Round),
    Stop,
}

pub(super) async fn claim_loop(
    shared: Arc<Shared>,
    q: Arc<QueueRt>,
    jobs: TaskTracker,
    shutdown: CancellationToken,
    interrupt: CancellationToken,
) {
    let legacy = q.queue.connection().legacy_claim();
    let name = q.queue.name().to_owned();
    ClaimLoop {
        shared,
        q,
        jobs,
        shutdown,
        interrupt,
        name,
        legacy,
        claiming: Retry::default(),
        settling: Retry::default(),
        waiting: None,
        watcher: None,
        woken: Arc::new(tokio::sync::Notify::new()),
    }
    .run()
    .await;
}

/// The state of one queue's claim loop.
struct ClaimLoop {
    shared: Arc<Shared>,
    q: Arc<QueueRt>,
    jobs: TaskTracker,
    shutdown: CancellationToken,
    interrupt: CancellationToken,
    name: String,
    legacy: bool,
    claiming: Retry,
    settling: Retry,
    waiting: Option<Wait>,
    /// The `BLPOP` on the queue's wake list, while the loop is idle: it
    /// outlives single waits, so a job that arrives in pending (which ends
    /// the wait) costs no new connection.
    watcher: Option<tokio::task::JoinHandle<()>>,
    /// Fed by the watcher when it takes a wake token (kept until the next
    /// wait if none is running).
    woken: Arc<tokio::sync::Notify>,
}

impl ClaimLoop {
    async fn run(mut self) {
        let (shared, q) = (Arc::clone(&self.shared), Arc::clone(&self.q));
        let mut rounds: FuturesUnordered<RoundFuture> = FuturesUnordered::new();
        // Under load slots free one at a time; letting the tasks that are
        // finishing run first turns many one-job calls into a few batches.
        let target = (shared.concurrency / 2).clamp(1, 64);
        let max_rounds = max_rounds(shared.concurrency);
        loop {
            let now = Instant::now();
            let can_start = rounds.len() < max_rounds;
            let can_claim = can_start && self.claiming.ready(now) && self.waiting.is_none();
            let can_settle = can_start && self.settling.ready(now);
            let mut slots: Vec<Slot> = Vec::new();
            if !(can_settle && q.acks.len() > 0) {
                let timer = [self.claiming.after, self.settling.after]
                    .into_iter()
                    .flatten()
                    .filter(|t| *t > now)
                    .min();
                let legacy_wait = self.legacy && self.waiting.is_some();
                let wake = tokio::select! {
                    got = slot(&shared, &q, &self.shutdown), if can_claim => match got {
                        Some(got) => Wake::Slot(got),
                        None => Wake::Stop,
                    },
                    () = q.acks.ready(), if can_settle => Wake::Outcome,
                    () = sleep_until(timer) => Wake::Timer,
                    waited = idle(&mut self.waiting) => Wake::Waited(waited),
                    Some(round) = rounds.next(), if !rounds.is_empty() => Wake::Answered(round),
                    // BRPOPLPUSH moves the job itself: it is not abandoned.
                    () = self.shutdown.cancelled(), if !legacy_wait => Wake::Stop,
                };
                match wake {
                    Wake::Slot(got) => slots.push(got),
                    Wake::Outcome => {}
                    Wake::Timer => continue,
                    Wake::Stop => break,
                    Wake::Answered(round) => {
                        self.answered(round).await;
                        continue;
                    }
                    Wake::Waited(waited) => {
                        self.waiting = None;
                        self.waited(waited).await;
                        if self.shutdown.is_cancelled() {
                            break;
                        }
                        // A job may have arrived: claim.
                        continue;
                    }
                }
            }
            if self.shutdown.is_cancelled() {
                break;
            }
            // Gather what else is ready: free slots (when claiming) and
            // outcomes.
            for _ in 0..4 {
                if can_claim {
                    while slots.len() < MAX_BATCH {
                        match try_slot(&shared, &q) {
                            Some(slot) => slots.push(slot),
                            None => break,
                        }
                    }
                }
                if slots.len() + q.acks.len() >= target {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let finished = if can_settle {
                q.acks.take(SETTLE_BATCH)
            } else {
                Vec::new()
            };
            // The slots of the finished jobs go to the jobs claimed with them
            // (with weights, those it is this queue's turn to keep; the rest
            // are freed once the outcomes are written).
            let want = if can_claim {
                let reuse = match &shared.arbiter {
                    Some(arbiter) => arbiter.keep(q.lane, finished.len()),
                    None => finished.len(),
                };
                (slots.len() + reuse).min(MAX_BATCH)
            } else {
                0
            };
            if finished.is_empty() && want == 0 {
                continue;
            }
            let q = Arc::clone(&q);
            rounds.push(Box::pin(async move {
                let (settled, claimed) = tokio::join!(settle(&q, &finished), async {
                    if want == 0 {
                        None
                    } else {
                        Some(q.queue.claim_now(want).await)
                    }
                });
                Round {
                    finished,
                    slots,
                    asked: want,
                    settled,
                    claimed,
                }
            }));
        }
        // Stopped claiming: the calls in flight are answered (jobs they
        // claimed are handed back), an idle wait is dropped (with
        // BRPOPLPUSH it runs to its end first), and the outcomes waiting are
        // written now; jobs that finish from here on write their own.
        while let Some(round) = rounds.next().await {
            self.answered(round).await;
        }
        if let Some(wait) = self.waiting.take()
            && self.legacy
            && let Ok(Some(adopted)) = wait.await
        {
            for job in &adopted {
                hand_back(&q, job).await;
            }
        }
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        flush_at_exit(&q).await;
        tracing::debug!(queue = self.name, "claim loop stopped");
    }

    /// Takes in what a settle-and-claim call answered: logs the outcomes
    /// written and frees their jobs, starts the jobs claimed (in the slots
    /// it was sent with), and sets the back-offs.
    async fn answered(&mut self, round: Round) {
        let Round {
            finished,
            slots: mut pool,
            asked,
            settled,
            claimed,
        } = round;
        let q = Arc::clone(&self.q);
        match settled {
            Ok(acks) => {
                self.settling.succeeded();
                for (done, ack) in finished.into_iter().zip(acks) {
                    done.span
                        .in_scope(|| execute::log_written(Some(&done.settlement), ack));
                    done.meter.written(ack);
                    q.in_flight.remove(&done.job);
                    pool.push(done.slot);
                }
            }
            Err(e) => {
                // The outcomes wait for a later call; their jobs keep their
                // slots and their leases meanwhile. One that failed to be
                // written too often is given up: its lease runs out and the
                // job runs again (at least once).
                self.settling.failed(&self.name, &e);
                let mut retry = Vec::with_capacity(finished.len());
                for mut done in finished {
                    done.tries += 1;
                    if done.tries < MAX_WRITE_TRIES {
                        retry.push(done);
                    } else {
                        done.span.in_scope(|| tracing::error!("gave up recording the outcome; the lease will expire and the job run again"));
                        q.in_flight.remove(&done.job);
                    }
                }
                q.acks.put_back(retry);
            }
        }
        match claimed {
            None => {}
            Some(Ok(ClaimNow { paused: true, .. })) => {
                self.backlog(false);
                // Paused: look again shortly, holding no slot.
                self.claiming.after = Some(Instant::now() + crate::queue::PAUSED_POLL * 2);
            }
            Some(Ok(ClaimNow {
                jobs: jobs_claimed,
                hold,
                ..
            })) => {
                self.claiming.succeeded();
                self.backlog(jobs_claimed.len() == asked);
                // Pending ran out before the claim had all it asked for
                // (nothing at all: the queue is idle). Wait for the next job
                // without holding a slot, instead of asking again at once:
                // at low rates that second claim found nothing nearly every
                // time and cost Redis a script call per job. The wait
                // answers at once when a job came meanwhile. A limit that
                // held the claim back says how to wait instead.
                if jobs_claimed.len() < asked
                    && self.waiting.is_none()
                    && !self.shutdown.is_cancelled()
                {
                    let queue = q.queue.clone();
                    let block = self.shared.claim_block;
                    match hold {
                        Hold::Throttled(wait) => {
                            // Sleep without calling Redis; a little jitter
                            // keeps a fleet from claiming in lockstep.
                            let wait = wait.min(MAX_THROTTLE_SLEEP);
                            self.claiming.after = Some(Instant::now() + wait + jitter(wait));
                        }
                        Hold::Capped(wait) => {
                            let block = block.min(wait).max(Duration::from_millis(10));
                            self.watch_wake();
                            let woken = Arc::clone(&self.woken);
                            self.waiting = Some(Box::pin(async move {
                                let _ = tokio::time::timeout(block, woken.notified()).await;
                                Ok(None)
                            }));
                        }
                        Hold::Keys(_) | Hold::None => {
                            let block = match hold {
                                Hold::Keys(wait) => block.min(wait),
                                _ => block,
                            };
                            self.watch_wake();
                            let woken = Arc::clone(&self.woken);
                            self.waiting = Some(Box::pin(async move {
                                queue
                                    .wait_for_job_or(block, async move {
                                        woken.notified().await;
                                        Ok(())
                                    })
                                    .await
                            }));
                        }
                    }
                }
                for job in jobs_claimed {
                    match pool.pop() {
                        Some(slot) if !self.shutdown.is_cancelled() => self.spawn(job, slot),
                        _ => hand_back(&q, &job).await,
                    }
                }
            }
            Some(Err(e)) => {
                self.backlog(false);
                self.claiming.failed(&self.name, &e);
            }
        }
    }

    /// Starts the wake-list watcher unless one runs: it blocks on the wake
    /// list for up to the claim block, and on a token wakes the idle wait.
    fn watch_wake(&mut self) {
        if self.watcher.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        let queue = self.q.queue.clone();
        let (woken, stop) = (Arc::clone(&self.woken), self.shutdown.clone());
        let block = self.shared.claim_block;
        self.watcher = Some(tokio::spawn(async move {
            tokio::select! {
                got = queue.wait_for_wake(block) => match got {
                    Ok(true) => woken.notify_one(),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!(queue = queue.name(), error = %e, "waiting on the wake list failed");
                        tokio::time::sleep(Backoff::COMMAND.delay(0)).await;
                    }
                },
                () = stop.cancelled() => {}
            }
        }));
    }

    /// Tells the arbiter, if any, whether this queue has more waiting.
    fn backlog(&self, backlog: bool) {
        if let Some(arbiter) = &self.shared.arbiter {
            arbiter.backlog(self.q.lane, backlog);
        }
    }

    /// Takes in the end of the idle wait.
    async fn waited(&mut self, waited: Result<Option<Vec<ClaimedJob>>>) {
        match waited {
            Ok(Some(adopted)) => {
                // Redis < 6.2: the wait itself took the job. It runs only if
                // a slot is free now: waiting for one would let its
                // unrenewed lease run out.
                for job in adopted {
                    match try_slot(&self.shared, &self.q) {
                        Some(slot) if !self.shutdown.is_cancelled() => self.spawn(job, slot),
                        _ => hand_back(&self.q, &job).await,
                    }
                }
            }
            Ok(None) => self.claiming.succeeded(),
            Err(e) => {
                self.claiming.failed(&self.name, &e);
            }
        }
    }

    fn spawn(&self, job: ClaimedJob, slot: Slot) {
        self.jobs.spawn(execute::execute(
            Arc::clone(&self.shared),
            Arc::clone(&self.q),
            job,
            slot,
            self.interrupt.clone(),
        ));
    }
}

/// Up to a tenth of `wait` (at least 1 ms), different for every call.
fn jitter(wait: Duration) -> Duration {
    let spread = u64::try_from(wait.as_micros() / 10)
        .unwrap_or(u64::MAX)
        .max(1_000);
    Duration::from_micros(rand::random_range(0..spread))
}

/// Sleeps until `at`; never, without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The idle wait in flight, if any (never ends without one).
async fn idle(waiting: &mut Option<Wait>) -> Result<Option<Vec<ClaimedJob>>> {
    match waiting.as_mut() {
        Some(wait) => wait.await,
        None => std::future::pending().await,
    }
}

/// Writes the outcomes of `finished` in one settle call (none: no call).
async fn settle(q: &QueueRt, finished: &[Finished]) -> Result<Vec<Ack>> {
    if finished.is_empty() {
        return Ok(Vec::new());
    }
    let batch: Vec<(&ClaimedJob, &Settlement)> =
        finished.iter().map(|f| (&*f.job, &f.settlement)).collect();
    q.queue.settle_many(&batch).await
}

/// Writes the outcomes still waiting when the loop stops, retrying a few
/// times; an outcome that cannot be written is given up (its lease runs out
/// and the job runs again).
async fn flush_at_exit(q: &QueueRt) {
    let rest = q.acks.close();
    if rest.is_empty() {
        return;
    }
    let mut failures = 0;
    loop {
        match settle(q, &rest).await {
            Ok(acks) => {
                for (done, ack) in rest.iter().zip(acks) {
                    done.span
                        .in_scope(|| execute::log_written(Some(&done.settlement), ack));
                    done.meter.written(ack);
                    q.in_flight.remove(&done.job);
                }
                return;
            }
            Err(e) if failures < 3 => {
                failures += 1;
                tracing::warn!(queue = q.queue.name(), error = %e, "could not record outcomes at shutdown; retrying");
                tokio::time::sleep(Backoff::COMMAND.delay(failures + 2)).await;
            }
            Err(e) => {
                tracing::error!(queue = q.queue.name(), error = %e, jobs = rest.len(), "gave up recording outcomes at shutdown; their leases will expire and the jobs run again");
                for done in &rest {
                    q.in_flight.remove(&done.job);
                }
                return;
            }
        }
    }
}

/// Gives a job claimed during shutdown straight back.
async fn hand_back(q: &QueueRt, job: &ClaimedJob) {
    if let Err(e) = q.queue.release(job).await {
        tracing::warn!(queue = q.queue.name(), job = job.id(), error = %e, "could not hand back a job claimed during shutdown; its lease will expire");
    }
}

/// Consecutive failures of one kind of call (claims, or outcome writes),
/// and when to try it again. Back-offs are deadlines, not sleeps: while
/// claiming waits (a paused queue, Redis errors) outcomes are still written,
/// and the other way round.
#[derive(Debug, Default)]
struct Retry {
    failures: u32,
    after: Option<Instant>,
}

impl Retry {
    fn ready(&self, now: Instant) -> bool {
        self.after.is_none_or(|t| now >= t)
    }

    fn succeeded(&mut self) {
        *self = Self::default();
    }

    /// Logs the error and backs off, longer after each failure in a row (up
    /// to a few seconds), so a runner never spins while Redis is down.
    fn failed(&mut self, queue: &str, error: &crate::error::Error) {
        self.failures += 1;
        let pause = Backoff::LOOP.delay(self.failures - 1);
        tracing::warn!(queue, error = %error, retry_in = ?pause, "claiming or recording outcomes failed; Redis unreachable?");
        self.after = Some(Instant::now() + pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runners_with_more_slots_keep_more_calls_in_flight_two_to_four() {
        assert_eq!(max_rounds(1), 2);
        assert_eq!(max_rounds(50), 2);
        assert_eq!(max_rounds(MAX_BATCH), 2);
        assert_eq!(max_rounds(2 * MAX_BATCH), 3);
        assert_eq!(max_rounds(500), 4);
        assert_eq!(max_rounds(100_000), 4);
    }
}
