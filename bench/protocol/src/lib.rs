//! The side-by-side protocol of `jobqueue-bench --peers`, spoken by
//! jobqueue's side (`jobqueue-bench` itself) and by the peers of
//! `bench/peers`: `bullmq-peer` (bullmq-official), `sidekiq-peer`
//! (rusty-sidekiq) and `apalis-peer` (apalis with apalis-redis). Each
//! implements [`Peer`]; [`main`] parses the mode and runs it.
//!
//! `jobqueue-bench` measures jobqueue and every peer the same way: each
//! workload runs as a separate process that speaks the same modes, and the
//! orchestrator brackets it with Redis' own CPU and memory counters and the
//! process' CPU from /proc. So a peer only drives its library through its
//! public API with its defaults (the concurrency aside); it measures nothing
//! the orchestrator could measure itself.
//!
//! Every mode prints one JSON line on stdout when it is done; worker modes
//! print `{"ready":true,...}` first. Progress and errors go to stderr.
//!
//! Completions are counted by the orchestrator, from Redis, wherever the
//! library keeps a record of them there (jobqueue's stats hash, bullmq's
//! completed set, apalis' done set). A library that keeps none (rusty-sidekiq
//! forgets a job once its handler returns) counts its handler's returns in
//! the worker process, and the orchestrator asks for that count by writing
//! `count` on the worker's stdin; see [`stdin_lines`].

use std::io::Write;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;

mod steps;

pub use steps::{from_callers, in_batches, one_per_ms, work_from_go};

/// The command line of every peer.
#[derive(Debug, Parser)]
pub struct Args {
    /// The step to run.
    #[command(subcommand)]
    pub mode: Mode,
}

/// The modes of the peer protocol; `jobqueue-bench` has the same ones.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Enqueues `jobs` no-op jobs, `batch` per call (the library's bulk
    /// enqueue, or its closest public API: see each peer).
    EnqueueBulk {
        /// Where the jobs go.
        #[command(flatten)]
        target: Target,
        /// How many jobs.
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
        /// Jobs per call.
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// Payload size in bytes (about).
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// Enqueues `jobs` no-op jobs one call at a time, spread over `callers`
    /// concurrent tasks.
    EnqueueSingle {
        /// Where the jobs go.
        #[command(flatten)]
        target: Target,
        /// How many jobs.
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
        /// Concurrent callers.
        #[arg(long, default_value_t = 50)]
        callers: usize,
        /// Payload size in bytes (about).
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// Builds a worker, prints ready, starts it on a line from stdin and runs
    /// until stdin closes or SIGTERM; the parent counts the completions.
    Worker {
        /// Where the jobs are.
        #[command(flatten)]
        target: Target,
        /// How many jobs at once.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
    },
    /// A started worker that records, for each of `jobs` jobs, how long
    /// after its enqueue began the handler started; prints p50 and p99.
    Latency {
        /// Where the jobs are.
        #[command(flatten)]
        target: Target,
        /// How many jobs to wait for.
        #[arg(long, default_value_t = 2_000)]
        jobs: usize,
        /// How many jobs at once.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
    },
    /// Enqueues one job per ms, one call at a time, each carrying the time
    /// its enqueue began.
    LatencyEnqueue {
        /// Where the jobs go.
        #[command(flatten)]
        target: Target,
        /// How many jobs.
        #[arg(long, default_value_t = 2_000)]
        jobs: usize,
    },
}

/// Where the jobs go.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Redis URL (the orchestrator's private server).
    #[arg(long)]
    pub url: String,
    /// Queue name (jobqueue's side checks it is its job's queue: a `#[job]`
    /// names its queue at compile time).
    #[arg(long)]
    pub queue: String,
}

/// Any error a peer reports before exiting with a failure.
pub type Failure = Box<dyn std::error::Error + Send + Sync>;

/// The job name (or class) of every job the peers enqueue, where the
/// library asks for one.
pub const JOB_NAME: &str = "noop";

/// One system's side of the protocol: a function per mode. The arguments
/// come checked: batches, callers and concurrency are at least 1. An
/// enqueue step returns its result line (`{"elapsed_s":..,"jobs":..}`,
/// from [`in_batches`], [`from_callers`] or [`one_per_ms`]), and [`run`]
/// prints it.
pub trait Peer {
    /// Enqueues `jobs` no-op jobs of about `payload` bytes, `batch` per call.
    fn enqueue_bulk(
        target: &Target,
        jobs: usize,
        batch: usize,
        payload: usize,
    ) -> impl Future<Output = Result<Value, Failure>>;
    /// Enqueues `jobs` no-op jobs one call at a time from `callers` tasks.
    fn enqueue_single(
        target: &Target,
        jobs: usize,
        callers: usize,
        payload: usize,
    ) -> impl Future<Output = Result<Value, Failure>>;
    /// The processing worker (see [`Mode::Worker`] and [`work_from_go`]).
    fn worker(target: &Target, concurrency: usize) -> impl Future<Output = Result<(), Failure>>;
    /// The latency worker (see [`Mode::Latency`]).
    fn latency(
        target: &Target,
        jobs: usize,
        concurrency: usize,
    ) -> impl Future<Output = Result<(), Failure>>;
    /// The latency enqueuer (see [`Mode::LatencyEnqueue`]).
    fn latency_enqueue(
        target: &Target,
        jobs: usize,
    ) -> impl Future<Output = Result<Value, Failure>>;
}

/// Runs `mode` on peer `P`, and prints an enqueue step's result line.
pub async fn run<P: Peer>(mode: Mode) -> Result<(), Failure> {
    let line = match mode {
        Mode::EnqueueBulk {
            target,
            jobs,
            batch,
            payload,
        } => P::enqueue_bulk(&target, jobs, batch.max(1), payload).await?,
        Mode::EnqueueSingle {
            target,
            jobs,
            callers,
            payload,
        } => P::enqueue_single(&target, jobs, callers.max(1), payload).await?,
        Mode::Worker {
            target,
            concurrency,
        } => return P::worker(&target, concurrency.max(1)).await,
        Mode::Latency {
            target,
            jobs,
            concurrency,
        } => return P::latency(&target, jobs, concurrency.max(1)).await,
        Mode::LatencyEnqueue { target, jobs } => P::latency_enqueue(&target, jobs).await?,
    };
    emit(line);
    Ok(())
}

/// A peer binary's `main`: parses the command line, runs the mode on `P`
/// and turns its outcome into the exit code; `name` prefixes the error on
/// stderr.
pub async fn main<P: Peer>(name: &str) -> ExitCode {
    let args = Args::parse();
    match run::<P>(args.mode).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The payload of the no-op jobs: a JSON string of about `size` bytes, the
/// same formula `jobqueue-bench` uses.
pub fn payload_of(size: usize) -> String {
    "x".repeat(size.saturating_sub(10))
}

/// Prints the one result line and makes sure it leaves the process before
/// the parent reads it or the process exits.
pub fn emit(line: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The wall clock in ns since the epoch: the latency probes cross
/// processes, so a monotonic `Instant` cannot be carried.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The lines the parent writes on stdin, read by a plain thread (the
/// parent writes "go", then only closes the pipe, so a thread costs nothing
/// while measuring); `None` once stdin ends.
///
/// With `completions` (a worker whose library keeps no record of completed
/// jobs in Redis), the thread answers each `count` line itself, at once,
/// with `{"completed":N}` on stdout, and does not pass it on: the parent
/// polls that as often as it polls Redis for the other systems, and the
/// answer costs the worker a read of one atomic and one write.
pub fn stdin_lines(completions: Option<&'static AtomicU64>) -> UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if let Some(done) = completions
                && line == "count"
            {
                emit(json!({ "completed": done.load(Ordering::Relaxed) }));
                continue;
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Returns when stdin reaches its end (the parent closed it or died) or
/// SIGTERM arrives.
pub async fn until_told_to_stop(mut stdin: UnboundedReceiver<String>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
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

/// What the latency handlers of a worker process share: each job's delay
/// in ns, and a signal once the wanted number of them are in.
pub struct Delays {
    samples: Mutex<Vec<u64>>,
    wanted: AtomicUsize,
    all_in: Notify,
}

impl Delays {
    /// An empty record waiting for no job yet (see [`Delays::want`]).
    pub const fn new() -> Self {
        Self {
            samples: Mutex::new(Vec::new()),
            wanted: AtomicUsize::new(usize::MAX),
            all_in: Notify::const_new(),
        }
    }

    /// Sets how many probes to wait for.
    pub fn want(&self, jobs: usize) {
        self.wanted.store(jobs, Ordering::Relaxed);
    }

    /// Records a probe whose handler started at `started` (read first thing
    /// in the handler: what is measured is the time until the handler
    /// starts, not what it does) and whose enqueue began at `sent`.
    pub fn record(&self, started: u64, sent: Option<u64>) {
        let Some(sent) = sent else { return };
        let mut samples = self.samples.lock().expect("samples lock");
        samples.push(started.saturating_sub(sent));
        if samples.len() == self.wanted.load(Ordering::Relaxed) {
            self.all_in.notify_one();
        }
    }

    /// Waits for every wanted probe, or exits with a failure if the parent
    /// gives up first; then prints p50 and p99 and exits.
    pub async fn report_when_all_in(&self, stdin: UnboundedReceiver<String>) -> ! {
        tokio::select! {
            () = self.all_in.notified() => {}
            () = until_told_to_stop(stdin) => std::process::exit(1),
        }
        let mut samples = self.samples.lock().expect("samples lock").clone();
        samples.sort_unstable();
        let pct = |p: f64| {
            let i = ((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1));
            samples.get(i).copied().unwrap_or(0) as f64 / 1e6
        };
        emit(json!({ "p50_ms": pct(0.50), "p99_ms": pct(0.99), "n": samples.len() }));
        std::process::exit(0);
    }
}

impl Default for Delays {
    fn default() -> Self {
        Self::new()
    }
}
