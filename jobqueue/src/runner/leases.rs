//! Lease renewal: one task renews every running job's lease, batched into
//! one round trip per queue per tick, so a healthy job is never reclaimed
//! however long it runs. Each renewal also carries the progress its job
//! reported since the last one (`progress.rs`): no round trip of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use super::Shared;
use super::progress::{Outgoing, ProgressBuffer};
use crate::queue::{Ack, ClaimedJob};

/// The running jobs of one queue, by claim token (each claim has its own):
/// a job retried at once can be claimed again while its previous run is
/// still winding down.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    jobs: Mutex<HashMap<String, Running>>,
}

#[derive(Debug)]
struct Running {
    job: Arc<ClaimedJob>,
    /// Cancelled when the lease is lost: the run is no longer ours.
    lost: CancellationToken,
    /// Cancelled when a renewal reports that the job's cancel was requested.
    cancel: CancellationToken,
    /// Set once the outcome is being written: a renewal refused then is the
    /// settle racing it, not a lost lease.
    settling: Arc<AtomicBool>,
    /// What the run reported and no renewal carried yet.
    progress: Arc<ProgressBuffer>,
}

/// What the executing task keeps of its registration.
#[derive(Debug)]
pub(super) struct Ticket {
    pub(super) lost: CancellationToken,
    pub(super) cancel: CancellationToken,
    pub(super) settling: Arc<AtomicBool>,
}

impl InFlight {
    pub(super) fn insert(&self, job: &Arc<ClaimedJob>, progress: &Arc<ProgressBuffer>) -> Ticket {
        let lost = CancellationToken::new();
        let cancel = CancellationToken::new();
        let settling = Arc::new(AtomicBool::new(false));
        self.jobs.lock().expect("in-flight lock").insert(
            job.token().to_owned(),
            Running {
                job: Arc::clone(job),
                lost: lost.clone(),
                cancel: cancel.clone(),
                settling: Arc::clone(&settling),
                progress: Arc::clone(progress),
            },
        );
        Ticket {
            lost,
            cancel,
            settling,
        }
    }

    pub(super) fn remove(&self, job: &ClaimedJob) {
        self.jobs
            .lock()
            .expect("in-flight lock")
            .remove(job.token());
    }

    /// Every running job, with the progress its renewal should carry.
    fn snapshot(&self) -> Vec<(Arc<ClaimedJob>, Option<Outgoing>)> {
        self.jobs
            .lock()
            .expect("in-flight lock")
            .values()
            .map(|r| (Arc::clone(&r.job), r.progress.outgoing()))
            .collect()
    }

    /// The shortest lease among running jobs, if any run.
    fn shortest_lease(&self) -> Option<Duration> {
        self.jobs
            .lock()
            .expect("in-flight lock")
            .values()
            .map(|r| {
                Duration::from_millis(
                    r.job
                        .lease_deadline_ms()
                        .saturating_sub(r.job.claimed_at_ms()),
                )
            })
            .min()
    }

    /// Marks this claim's lease lost, unless its outcome is already being
    /// written.
    fn lose(&self, job: &ClaimedJob) {
        let id = job.id();
        let jobs = self.jobs.lock().expect("in-flight lock");
        if let Some(running) = jobs.get(job.token())
            && !running.settling.load(Ordering::SeqCst)
        {
            tracing::warn!(
                job = id,
                "lease lost: a sweep took the job back; stopping this run"
            );
            running.lost.cancel();
        }
    }
}

impl InFlight {
    /// Stops this claim's run because its cancel was requested, unless its
    /// outcome is already being written (the settle ends it as cancelled
    /// either way).
    fn cancel_requested(&self, job: &ClaimedJob) {
        let jobs = self.jobs.lock().expect("in-flight lock");
        if let Some(running) = jobs.get(job.token())
            && !running.settling.load(Ordering::SeqCst)
            && !running.cancel.is_cancelled()
        {
            tracing::info!(job = job.id(), "cancel requested; stopping this run");
            running.cancel.cancel();
        }
    }
}

/// Renews leases until `stop` is cancelled. Renews at a third of the
/// shortest running lease, so two renewals can fail before a lease runs out;
/// a newly started job wakes it to shorten the wait if its lease is shorter.
pub(super) async fn renew(shared: Arc<Shared>, stop: CancellationToken) {
    let tick = |shared: &Shared| {
        let shortest = shared
            .queues
            .iter()
            .filter_map(|q| q.in_flight.shortest_lease())
            .min();
        // Jobs starting with a lease at least this long need no earlier tick.
        let basis = shortest.map_or(u64::MAX, |l| {
            u64::try_from(l.as_millis()).unwrap_or(u64::MAX)
        });
        shared.renew_basis.store(basis, Ordering::Relaxed);
        shortest
            .map_or(Duration::from_secs(10), |lease| lease / 3)
            .clamp(Duration::from_millis(30), Duration::from_secs(10))
    };
    let mut due = Instant::now() + tick(&shared);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = shared.job_started.notified() => {
                due = due.min(Instant::now() + tick(&shared));
                continue;
            }
            () = stop.cancelled() => return,
        }
        let every = tick(&shared);
        due = Instant::now() + every;
        // Every queue's batch at once, each bounded by two ticks: one slow
        // reply must not hold back the other queues' renewals.
        let limit = (every * 2).max(Duration::from_millis(250));
        let renewals = shared.queues.iter().map(|q| async move {
            let jobs = q.in_flight.snapshot();
            if jobs.is_empty() {
                return;
            }
            let batch: Vec<_> = jobs
                .iter()
                .map(|(job, progress)| (&**job, progress.as_ref().map(Outgoing::value)))
                .collect();
            let renewed = tokio::time::timeout(limit, q.queue.extend_with_progress(&batch)).await;
            drop(batch);
            match renewed {
                Ok(Ok(acks)) => {
                    for ((job, progress), ack) in jobs.into_iter().zip(acks) {
                        match ack {
                            Ack::LeaseLost => q.in_flight.lose(&job),
                            Ack::CancelRequested => q.in_flight.cancel_requested(&job),
                            _ => {}
                        }
                        if ack != Ack::LeaseLost
                            && let Some(progress) = progress
                        {
                            progress.written();
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(queue = q.queue.name(), error = %e, "lease renewal failed; retrying next tick");
                }
                Err(_) => {
                    tracing::warn!(queue = q.queue.name(), "lease renewal got no reply in time; retrying");
                }
            }
        });
        futures_util::future::join_all(renewals).await;
    }
}
