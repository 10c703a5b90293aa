//! A worker process for the multi-process tests: runs a `Runner` on queue
//! `proc` until SIGTERM or SIGINT.
//!
//! Usage: `jobqueue-test-worker REDIS_URL [CONCURRENCY]`. With
//! `JOBQUEUE_TEST_RECORD=FILE`, every run of every job appends `PID ID` to
//! FILE as it starts, outside the queue: the tests count runs, see which
//! process ran what, and wait for handlers to be running. With
//! `JOBQUEUE_TEST_ENDS=FILE`, `finish_line` jobs append `PID ID` there as
//! their handler returns.
//!
//! `jobqueue-test-worker REDIS_URL enqueue-unique KEY N` instead enqueues N
//! `nap` jobs unique by KEY, all at once, and prints `new ID` or
//! `existing ID` for each.
//!
//! `jobqueue-test-worker REDIS_URL cron` runs a runner on queue `proc-cron`
//! only, whose `every_second` job is scheduled every second.
//!
//! `jobqueue-test-worker REDIS_URL workflow` runs a runner of 20 slots on
//! queues `wfp-a`, `wfp-b`, `wfp-c` (batch children: `wfp_a`, `wfp_b`,
//! `wfp_c`, each taking 30-70 ms and failing for good when its number is a
//! multiple of 10) and `wfp-done` (the callback `wfp_done`, which appends
//! `PID TOTAL SUCCEEDED FAILED FAILURES CHILDREN` to the file named by
//! `JOBQUEUE_TEST_CALLBACKS`). `jobqueue-test-worker REDIS_URL
//! enqueue-batch N` writes a batch of N children over the three queues with
//! `wfp_done` as its callback and prints `batch QUEUE ID`.
//!
//! `jobqueue-test-worker REDIS_URL paced` runs a runner of 10 slots on queue
//! `proc-rate` only, whose `paced` jobs complete at once: the fleet-wide
//! rate limit test sets the queue's limits and counts completions.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use jobqueue::client::EnqueueOptions;
use jobqueue::connection::{Connection, ConnectionOptions};
use jobqueue::queue::QueueOptions;
use jobqueue::workflow::BatchSummary;
use jobqueue::{CancellationToken, Client, JobContext, Runner, job};

/// Never finishes on its own: the process must die or shut down.
#[job(queue = "proc", visibility = "2s")]
async fn hang(_key: String, ctx: JobContext) -> Result<(), String> {
    note_start(&ctx)?;
    ctx.cancelled().await;
    Ok(())
}

/// Sleeps a little, then completes.
#[job(queue = "proc")]
async fn nap(millis: u64, ctx: JobContext) -> Result<(), String> {
    note_start(&ctx)?;
    tokio::time::sleep(Duration::from_millis(millis)).await;
    Ok(())
}

/// Records its run, then completes.
#[job(queue = "proc", visibility = "2s", max_attempts = 50, backoff = "none")]
async fn record(millis: u64, ctx: JobContext) -> Result<(), String> {
    note_start(&ctx)?;
    tokio::time::sleep(Duration::from_millis(millis)).await;
    Ok(())
}

/// Records its start, sleeps, then records its end (with
/// `JOBQUEUE_TEST_ENDS=FILE`) as the last thing before it returns: a job
/// whose end is recorded ran to completion, whether or not its outcome then
/// reached Redis.
#[job(queue = "proc", visibility = "2s", max_attempts = 50, backoff = "none")]
async fn finish_line(millis: u64, ctx: JobContext) -> Result<(), String> {
    note_start(&ctx)?;
    tokio::time::sleep(Duration::from_millis(millis)).await;
    note("JOBQUEUE_TEST_ENDS", &ctx)
}

/// Completes at once (queue `proc-rate`, under a fleet-wide rate limit).
#[job(queue = "proc-rate")]
async fn paced(_n: u32) {}

/// Enqueued every second by its schedule, once across all the runners.
#[job(queue = "proc-cron", cron = "* * * * * *")]
async fn every_second(_unit: ()) {}

/// A batch child (see the module doc): fails for good on multiples of 10.
async fn wfp_child(n: u64) -> Result<u64, jobqueue::JobError> {
    tokio::time::sleep(Duration::from_millis(30 + n % 41)).await;
    if n.is_multiple_of(10) {
        return Err(jobqueue::JobError::permanent(format!("{n} fails for good")));
    }
    Ok(n)
}

#[job(queue = "wfp-a", visibility = "2s", max_attempts = 5)]
async fn wfp_a(n: u64) -> Result<u64, jobqueue::JobError> {
    wfp_child(n).await
}

#[job(queue = "wfp-b", visibility = "2s", max_attempts = 5)]
async fn wfp_b(n: u64) -> Result<u64, jobqueue::JobError> {
    wfp_child(n).await
}

#[job(queue = "wfp-c", visibility = "2s", max_attempts = 5)]
async fn wfp_c(n: u64) -> Result<u64, jobqueue::JobError> {
    wfp_child(n).await
}

/// The batch's callback: records its run and the summary's counts.
#[job(queue = "wfp-done", visibility = "2s")]
async fn wfp_done(summary: BatchSummary<String>) -> Result<(), String> {
    if let Ok(path) = std::env::var("JOBQUEUE_TEST_CALLBACKS") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| e.to_string())?;
        let line = format!(
            "{} {} {} {} {} {}\n",
            std::process::id(),
            summary.total,
            summary.succeeded,
            summary.failed,
            summary.failures.len(),
            summary.children.len()
        );
        file.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Appends `PID ID` to the file named by JOBQUEUE_TEST_RECORD, if set.
fn note_start(ctx: &JobContext) -> Result<(), String> {
    note("JOBQUEUE_TEST_RECORD", ctx)
}

/// Appends `PID ID` to the file named by the environment variable `var`, if
/// set.
fn note(var: &str, ctx: &JobContext) -> Result<(), String> {
    if let Ok(path) = std::env::var(var) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| e.to_string())?;
        // One write of the whole line: a SIGKILL never leaves half of one,
        // and lines of runs in other processes never interleave with it.
        let line = format!("{} {}\n", std::process::id(), ctx.id());
        file.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> jobqueue::Result<()> {
    tracing_subscriber::fmt()
        // Colour only on a terminal: logs sent to a file or a pipe stay
        // plain text. NO_COLOR turns it off too.
        .with_ansi(
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .expect("usage: jobqueue-test-worker REDIS_URL [CONCURRENCY]");
    let mode = args.next();
    let conn = Connection::connect_with(
        url.as_str(),
        ConnectionOptions::new().startup_wait(Duration::from_secs(60)),
    )
    .await?;
    if mode.as_deref() == Some("enqueue-unique") {
        let key = args.next().expect("a unique key");
        let n: usize = args.next().expect("a count").parse().expect("a number");
        let client = Client::new(&conn);
        let enqueues = (0..n).map(|_| {
            let options = EnqueueOptions::new().unique_key(key.clone());
            client.enqueue_with::<nap>(1, options)
        });
        for handle in futures_util::future::try_join_all(enqueues).await? {
            let what = if handle.is_existing() {
                "existing"
            } else {
                "new"
            };
            println!("{what} {}", handle.id());
        }
        return Ok(());
    }
    if mode.as_deref() == Some("enqueue-batch") {
        let n: u64 = args.next().expect("a count").parse().expect("a number");
        let client = Client::new(&conn);
        let mut batch = client.batch();
        for i in 1..=n {
            batch = match i % 3 {
                0 => batch.add::<wfp_a>(i),
                1 => batch.add::<wfp_b>(i),
                _ => batch.add::<wfp_c>(i),
            };
        }
        let handle = batch
            .on_complete::<wfp_done, _>("processes".to_owned())
            .enqueue()
            .await?;
        println!("batch {} {}", handle.queue().name(), handle.id());
        return Ok(());
    }
    let cron = mode.as_deref() == Some("cron");
    let workflow = mode.as_deref() == Some("workflow");
    let paced = mode.as_deref() == Some("paced");
    let concurrency = if cron || paced {
        10
    } else if workflow {
        20
    } else {
        mode.map_or(10, |n| n.parse().expect("a number"))
    };
    let client = Client::builder(&conn)
        .queue_options(QueueOptions::new().completed_history(100_000))
        .build()
        .unwrap();
    let queues: &[&str] = if cron {
        &["proc-cron"]
    } else if paced {
        &["proc-rate"]
    } else if workflow {
        &["wfp-a", "wfp-b", "wfp-c", "wfp-done"]
    } else {
        &["proc"]
    };
    let runner = Runner::builder(client)
        .queues(queues.iter().copied())
        .concurrency(concurrency)
        .sweep_interval(Duration::from_millis(100))
        .shutdown_timeout(Duration::from_secs(1))
        .build()?;
    let shutdown = CancellationToken::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            shutdown.cancel();
        }
    });
    println!("ready");
    runner.run(shutdown).await;
    Ok(())
}
