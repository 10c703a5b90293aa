//! `bullmq-peer`: bullmq-official (BullMQ's own Rust port) behind the peer
//! protocol of `jobqueue-bench --peers`.
//!
//! `jobqueue-bench` measures jobqueue and this binary the same way: each
//! workload runs as a separate process that speaks the same modes, and the
//! orchestrator brackets it with Redis' own CPU and memory counters and the
//! process' CPU from /proc. So this file only drives bullmq through its public
//! API with its defaults (the concurrency aside); it measures nothing the
//! orchestrator could measure itself.
//!
//! Every mode prints one JSON line on stdout when it is done; worker modes
//! print `{"ready":true,...}` first. Progress and errors go to stderr.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bullmq::options::RedisConnectionOptions;
use bullmq::{BulkJob, Job, Queue, QueueOptions, Worker, WorkerOptions};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;

#[derive(Debug, Parser)]
#[command(about = "bullmq-official behind the jobqueue-bench peer protocol")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

/// The modes of the peer protocol; `jobqueue-bench` has the same ones.
#[derive(Debug, Subcommand)]
enum Mode {
    /// Enqueues `jobs` no-op jobs, `batch` per call (`Queue::add_bulk`).
    EnqueueBulk {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// Payload size in bytes (about).
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// Enqueues `jobs` no-op jobs one call at a time (`Queue::add`), spread
    /// over `callers` concurrent tasks.
    EnqueueSingle {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
        #[arg(long, default_value_t = 50)]
        callers: usize,
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// Builds a worker, prints ready, starts it on a line from stdin and runs
    /// until stdin closes or SIGTERM; the parent counts the completions.
    Worker {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
    },
    /// A started worker that records, for each of `jobs` jobs, how long
    /// after its enqueue began the handler started; prints p50 and p99.
    Latency {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 2_000)]
        jobs: usize,
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
    },
    /// Enqueues one job per ms, one call at a time, each carrying the time
    /// its enqueue began.
    LatencyEnqueue {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 2_000)]
        jobs: usize,
    },
}

/// Where the jobs go.
#[derive(Debug, clap::Args)]
struct Target {
    /// Redis URL (the orchestrator's private server).
    #[arg(long)]
    url: String,
    /// Queue name.
    #[arg(long)]
    queue: String,
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// The job name of every job this binary enqueues; bullmq's processor does
/// not dispatch on it, it only has to be the same on both sides.
const JOB_NAME: &str = "noop";

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args.mode).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bullmq-peer: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mode: Mode) -> Result<(), Failure> {
    match mode {
        Mode::EnqueueBulk {
            target,
            jobs,
            batch,
            payload,
        } => enqueue_bulk(&target, jobs, batch.max(1), payload).await,
        Mode::EnqueueSingle {
            target,
            jobs,
            callers,
            payload,
        } => enqueue_single(&target, jobs, callers.max(1), payload).await,
        Mode::Worker {
            target,
            concurrency,
        } => worker(&target, concurrency).await,
        Mode::Latency {
            target,
            jobs,
            concurrency,
        } => latency(&target, jobs, concurrency).await,
        Mode::LatencyEnqueue { target, jobs } => latency_enqueue(&target, jobs).await,
    }
}

/// The payload of the no-op jobs: a JSON string of about `size` bytes, the
/// same formula `jobqueue-bench` uses.
fn payload_of(size: usize) -> String {
    "x".repeat(size.saturating_sub(10))
}

fn connection(target: &Target) -> RedisConnectionOptions {
    RedisConnectionOptions::new().url(&target.url)
}

async fn queue(target: &Target) -> Result<Queue, Failure> {
    let options = QueueOptions::new().connection(connection(target));
    Ok(Queue::with_options(&target.queue, options).await?)
}

/// Prints the one result line and makes sure it leaves the process before
/// the parent reads it or the process exits.
fn emit(line: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn enqueue_bulk(
    target: &Target,
    jobs: usize,
    batch: usize,
    size: usize,
) -> Result<(), Failure> {
    let queue = queue(target).await?;
    let payload = payload_of(size);
    let started = Instant::now();
    let mut left = jobs;
    while left > 0 {
        let n = left.min(batch);
        let bulk = (0..n)
            .map(|_| BulkJob::new(JOB_NAME, &payload))
            .collect::<Vec<_>>();
        queue.add_bulk(bulk).await?;
        left -= n;
    }
    emit(json!({ "elapsed_s": started.elapsed().as_secs_f64(), "jobs": jobs }));
    Ok(())
}

async fn enqueue_single(
    target: &Target,
    jobs: usize,
    callers: usize,
    size: usize,
) -> Result<(), Failure> {
    let queue = queue(target).await?;
    let payload = payload_of(size);
    let each = jobs / callers;
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let queue = queue.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                for _ in 0..each {
                    queue.add(JOB_NAME, &payload).await?;
                }
                Ok::<(), bullmq::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    emit(json!({ "elapsed_s": started.elapsed().as_secs_f64(), "jobs": each * callers }));
    Ok(())
}

/// bullmq's defaults except the concurrency; `manual_start` only so the
/// worker's connections are open before "ready" and its clock starts at
/// "go", as jobqueue's runner is built before and run at "go".
fn worker_options(target: &Target, concurrency: usize) -> WorkerOptions {
    WorkerOptions::new()
        .connection(connection(target))
        .concurrency(concurrency)
        .manual_start()
}

/// The options that shape a run, for bench.json.
fn settings(options: &WorkerOptions) -> Value {
    json!({
        "library": "bullmq-official 1.4.4",
        "concurrency": options.concurrency,
        "lock_duration_ms": options.lock_duration,
        "lock_renew_time_ms": options.effective_lock_renew_time(),
        "stalled_interval_ms": options.stalled_interval,
        "max_stalled_count": options.max_stalled_count,
        "drain_delay_s": options.drain_delay,
        "remove_on_complete": format!("{:?}", options.remove_on_complete),
        "remove_on_fail": format!("{:?}", options.remove_on_fail),
        "max_connections": options.connection.max_connections,
        "metrics": options.metrics.is_some(),
        "limiter": options.limiter.is_some(),
        "skip_stalled_check": options.skip_stalled_check,
        "skip_lock_renewal": options.skip_lock_renewal,
        "autorun": options.autorun,
        "prefix": options.prefix,
    })
}

/// The processing worker: ready, then "go" on stdin, then runs until the
/// parent closes stdin, sends SIGTERM or kills it.
async fn worker(target: &Target, concurrency: usize) -> Result<(), Failure> {
    let options = worker_options(target, concurrency);
    let settings = settings(&options);
    let worker = Worker::with_options(
        &target.queue,
        |_job: Job, _token| async { Ok(Value::Null) },
        options,
    )
    .await?;
    emit(json!({ "ready": true, "settings": settings }));
    let mut stdin = stdin_lines();
    if stdin.recv().await.is_none() {
        return Ok(());
    }
    worker.run().await?;
    until_told_to_stop(stdin).await;
    // Exit at once rather than `close`: the parent has read its figures and
    // waits for nothing this process would still write.
    std::process::exit(0);
}

/// The lines the parent writes on stdin, read by a plain thread (the
/// parent writes one line, "go", then only closes the pipe, so a thread
/// costs nothing while measuring); `None` once stdin ends.
fn stdin_lines() -> UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Returns when stdin reaches its end (the parent closed it or died) or
/// SIGTERM arrives.
async fn until_told_to_stop(mut stdin: UnboundedReceiver<String>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    let eof = async { while stdin.recv().await.is_some() {} };
    tokio::select! {
        () = sigterm => {}
        () = eof => {}
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What the latency handlers share: each job's delay in ns, and a signal
/// once `target` of them are in.
struct Delays {
    samples: Mutex<Vec<u64>>,
    target: usize,
    all_in: Notify,
}

async fn latency(target: &Target, jobs: usize, concurrency: usize) -> Result<(), Failure> {
    let delays = Arc::new(Delays {
        samples: Mutex::new(Vec::with_capacity(jobs)),
        target: jobs,
        all_in: Notify::new(),
    });
    let options = worker_options(target, concurrency);
    let settings = settings(&options);
    let shared = delays.clone();
    let worker = Worker::with_options(
        &target.queue,
        move |job: Job, _token| {
            // The clock is read first thing: what is measured is the time
            // until the handler starts, not what the handler does.
            let started = now_ns();
            let sent = job.data()["sent_ns"].as_u64();
            let delays = shared.clone();
            async move {
                if let Some(sent) = sent {
                    let mut samples = delays.samples.lock().expect("samples lock");
                    samples.push(started.saturating_sub(sent));
                    if samples.len() == delays.target {
                        delays.all_in.notify_one();
                    }
                }
                Ok(Value::Null)
            }
        },
        options,
    )
    .await?;
    worker.run().await?;
    emit(json!({ "ready": true, "settings": settings }));
    let stdin = stdin_lines();
    tokio::select! {
        () = delays.all_in.notified() => {}
        () = until_told_to_stop(stdin) => std::process::exit(1),
    }
    let mut samples = delays.samples.lock().expect("samples lock").clone();
    samples.sort_unstable();
    let pct = |p: f64| {
        let i = ((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1));
        samples.get(i).copied().unwrap_or(0) as f64 / 1e6
    };
    emit(json!({ "p50_ms": pct(0.50), "p99_ms": pct(0.99), "n": samples.len() }));
    std::process::exit(0);
}

async fn latency_enqueue(target: &Target, jobs: usize) -> Result<(), Failure> {
    let queue = queue(target).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for _ in 0..jobs {
        tick.tick().await;
        queue.add(JOB_NAME, json!({ "sent_ns": now_ns() })).await?;
    }
    emit(json!({ "elapsed_s": started.elapsed().as_secs_f64(), "jobs": jobs }));
    Ok(())
}
