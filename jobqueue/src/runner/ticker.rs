//! The ticker: writes the periodic schedules of the `#[job(cron)]` jobs this
//! runner serves, then fires due schedules of its queues every half second
//! (with jitter), catching up ticks still within their grace one at a time.
//! Every runner ticks; `tick.lua` lets exactly one of them fire each tick.
//!
//! It also writes the limits `#[job(rate, burst, max_running)]` declares,
//! where the queue has none set: a deploy never reverts an operator's
//! change.
//!
//! The schedules declared in code are written again every minute (an
//! unchanged one costs one read): a purge, or an `unschedule` of a schedule
//! the code still declares, is undone, so the code stays the truth. To stop
//! a `#[job(cron)]`, remove the `cron` and then the schedule.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::queue::ScheduleOptions;
use crate::retry::Backoff;

/// How often a runner looks for due schedules, before jitter.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// How often the schedules declared in code are written again.
const PUT_EVERY: Duration = Duration::from_secs(60);

pub(super) async fn tick(shared: Arc<Shared>, stop: CancellationToken) {
    // The schedules of the cron jobs this runner knows, on the first queue
    // (shard) of their logical queue, so a sharded queue fires once.
    let mut written = false;
    let mut last_put = tokio::time::Instant::now();
    let mut failures: u32 = 0;
    loop {
        if !written || last_put.elapsed() >= PUT_EVERY {
            written = put_schedules(&shared).await & put_limits(&shared).await;
            last_put = tokio::time::Instant::now();
        }
        let mut failed = !written;
        for q in &shared.queues {
            match q.queue.tick_schedules().await {
                Ok(ids) if !ids.is_empty() => {
                    tracing::debug!(queue = q.queue.name(), jobs = ?ids, "schedules fired");
                }
                Ok(_) => {}
                Err(e) => {
                    failed = true;
                    tracing::warn!(queue = q.queue.name(), error = %e, "looking for due schedules failed");
                }
            }
        }
        failures = if failed {
            failures.saturating_add(1)
        } else {
            0
        };
        let pause = if failures == 0 {
            LOOK_EVERY.mul_f64(rand::random_range(0.8..1.2))
        } else {
            LOOK_EVERY.max(Backoff::LOOP.delay(failures))
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Writes the schedule of every cron job whose queue this runner serves;
/// false when one could not be written (tried again next look).
async fn put_schedules(shared: &Shared) -> bool {
    let mut ok = true;
    for def in shared.registry.jobs() {
        let Some(schedule) = def.cron() else {
            continue;
        };
        let (cron, tz) = (schedule.cron, schedule.tz);
        let Some(q) = shared.queues.iter().find(|q| q.logical == def.queue()) else {
            continue;
        };
        let payload = match (schedule.payload)() {
            Ok(payload) => payload,
            Err(e) => {
                tracing::error!(job = def.name(), error = %e, "the cron job's payload does not serialize; not scheduled");
                continue;
            }
        };
        let options = ScheduleOptions::new()
            .tz(tz)
            .misfire(schedule.misfire)
            .max_attempts(def.max_attempts())
            .visibility(def.visibility());
        match q
            .queue
            .put_schedule(def.name(), cron, def.name(), &payload, &options)
            .await
        {
            Ok(true) => tracing::info!(job = def.name(), cron, tz, "schedule written"),
            Ok(false) => {}
            Err(e) => {
                ok = false;
                tracing::warn!(job = def.name(), error = %e, "could not write the job's schedule");
            }
        }
    }
    ok
}

/// Writes the limits the jobs of each served queue declare, where the
/// queue has none set (split over a sharded queue's shards); false when one
/// could not be written.
async fn put_limits(shared: &Shared) -> bool {
    let mut ok = true;
    let mut done: Vec<&str> = Vec::new();
    for def in shared.registry.jobs() {
        let limits = def.limits();
        if limits.is_empty() {
            continue;
        }
        if done.contains(&def.queue()) {
            tracing::warn!(
                job = def.name(),
                queue = def.queue(),
                "another job of this queue declared its limits first; these are not used"
            );
            continue;
        }
        let shards: Vec<_> = shared
            .queues
            .iter()
            .filter(|q| q.logical == def.queue())
            .collect();
        if shards.is_empty() {
            continue;
        }
        done.push(def.queue());
        let each = limits.per_shard(shards.len());
        for q in shards {
            match q.queue.seed_limits(&each).await {
                Ok(0) => {}
                Ok(_) => {
                    tracing::info!(queue = q.queue.name(), job = def.name(), limits = ?each, "declared limits written")
                }
                Err(e) => {
                    ok = false;
                    tracing::warn!(queue = q.queue.name(), error = %e, "could not write the declared limits");
                }
            }
        }
    }
    ok
}
