//! What every system's steps do the same way around its own library calls:
//! the clock and the result line of the enqueue steps, and the processing
//! worker's life from "ready" to its exit. A peer passes only the calls
//! that differ, so each system is timed by one piece of code.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Failure, emit, stdin_lines, until_told_to_stop};

/// The result line of an enqueue step that began at `started` and
/// enqueued `jobs`.
fn enqueued(started: Instant, jobs: usize) -> Value {
    json!({ "elapsed_s": started.elapsed().as_secs_f64(), "jobs": jobs })
}

/// Enqueues `jobs` with one `push(n)` call after the other, each for `n`
/// jobs, at most `batch` (the `enqueue-bulk` step).
pub async fn in_batches(
    jobs: usize,
    batch: usize,
    mut push: impl AsyncFnMut(usize) -> Result<(), Failure>,
) -> Result<Value, Failure> {
    let started = Instant::now();
    let mut left = jobs;
    while left > 0 {
        let n = left.min(batch);
        push(n).await?;
        left -= n;
    }
    Ok(enqueued(started, jobs))
}

/// Enqueues from `callers` tasks at once, each the future `caller(each)`
/// that enqueues `each` (`jobs / callers`) jobs one call at a time (the
/// `enqueue-single` step). A caller is spawned, so the callers run on
/// every worker thread of the runtime, as an application's would.
pub async fn from_callers<F, Fut>(jobs: usize, callers: usize, caller: F) -> Result<Value, Failure>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), Failure>> + Send + 'static,
{
    let each = jobs / callers;
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers).map(|_| tokio::spawn(caller(each))).collect();
    for task in tasks {
        task.await??;
    }
    Ok(enqueued(started, each * callers))
}

/// Enqueues `jobs` latency probes with `push()`, one per ms; a tick missed
/// behind a slow call is made up at once (the `latency-enqueue` step).
pub async fn one_per_ms(
    jobs: usize,
    mut push: impl AsyncFnMut() -> Result<(), Failure>,
) -> Result<Value, Failure> {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for _ in 0..jobs {
        tick.tick().await;
        push().await?;
    }
    Ok(enqueued(started, jobs))
}

/// The processing worker's life, once it is built: prints ready with
/// `settings`, waits for "go" on stdin, `start`s the worker and runs until
/// the parent closes stdin, sends SIGTERM or kills it. `completions` is
/// for a library that keeps no count in Redis (see [`stdin_lines`]).
///
/// The process then exits at once rather than stop the worker: the parent
/// has read its figures and waits for nothing this process would still
/// write.
pub async fn work_from_go(
    settings: Value,
    completions: Option<&'static AtomicU64>,
    start: impl AsyncFnOnce() -> Result<(), Failure>,
) -> Result<(), Failure> {
    emit(json!({ "ready": true, "settings": settings }));
    let mut stdin = stdin_lines(completions);
    if stdin.recv().await.is_none() {
        return Ok(());
    }
    start().await?;
    until_told_to_stop(stdin).await;
    std::process::exit(0);
}
