//! `bullmq-peer`: bullmq-official (BullMQ's own Rust port) behind the peer
//! protocol of `jobqueue-bench --peers` (see the package's lib.rs).
//!
//! Completions: bullmq keeps completed jobs by default, so the orchestrator
//! counts them itself (`ZCARD bull:<queue>:completed`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bench_protocol::{
    Delays, Failure, JOB_NAME, Peer, Target, emit, now_ns, payload_of, stdin_lines,
    until_told_to_stop,
};
use bullmq::options::RedisConnectionOptions;
use bullmq::{BulkJob, Job, Queue, QueueOptions, Worker, WorkerOptions};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> ExitCode {
    bench_protocol::main::<Bullmq>("bullmq-peer").await
}

/// This library's side of the protocol.
struct Bullmq;

impl Peer for Bullmq {
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
        let mut stdin = stdin_lines(None);
        if stdin.recv().await.is_none() {
            return Ok(());
        }
        worker.run().await?;
        until_told_to_stop(stdin).await;
        // Exit at once rather than `close`: the parent has read its figures and
        // waits for nothing this process would still write.
        std::process::exit(0);
    }

    async fn latency(target: &Target, jobs: usize, concurrency: usize) -> Result<(), Failure> {
        DELAYS.want(jobs);
        let options = worker_options(target, concurrency);
        let settings = settings(&options);
        let worker = Worker::with_options(
            &target.queue,
            |job: Job, _token| {
                let started = now_ns();
                DELAYS.record(started, job.data()["sent_ns"].as_u64());
                async { Ok(Value::Null) }
            },
            options,
        )
        .await?;
        worker.run().await?;
        emit(json!({ "ready": true, "settings": settings }));
        DELAYS.report_when_all_in(stdin_lines(None)).await
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
}

fn connection(target: &Target) -> RedisConnectionOptions {
    RedisConnectionOptions::new().url(&target.url)
}

async fn queue(target: &Target) -> Result<Queue, Failure> {
    let options = QueueOptions::new().connection(connection(target));
    Ok(Queue::with_options(&target.queue, options).await?)
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

/// Each probe's delay, in this worker process.
static DELAYS: Delays = Delays::new();
