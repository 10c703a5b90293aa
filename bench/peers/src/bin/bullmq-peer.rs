//! `bullmq-peer`: bullmq-official (BullMQ's own Rust port) behind the peer
//! protocol of `jobqueue-bench --peers` (see the package's lib.rs).
//!
//! Completions: bullmq keeps completed jobs by default, so the orchestrator
//! counts them itself (`ZCARD bull:<queue>:completed`).

use bench_protocol::{
    Delays, Failure, JOB_NAME, Peer, Target, emit, from_callers, in_batches, now_ns, one_per_ms,
    payload_of, stdin_lines, work_from_go,
};
use bullmq::options::RedisConnectionOptions;
use bullmq::{BulkJob, Job, Queue, QueueOptions, Worker, WorkerOptions};
use serde_json::{Value, json};
use std::process::ExitCode;

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
    ) -> Result<Value, Failure> {
        let queue = queue(target).await?;
        let payload = payload_of(size);
        in_batches(jobs, batch, async |n| {
            let bulk = (0..n)
                .map(|_| BulkJob::new(JOB_NAME, &payload))
                .collect::<Vec<_>>();
            queue.add_bulk(bulk).await?;
            Ok(())
        })
        .await
    }

    async fn enqueue_single(
        target: &Target,
        jobs: usize,
        callers: usize,
        size: usize,
    ) -> Result<Value, Failure> {
        let queue = queue(target).await?;
        let payload = payload_of(size);
        from_callers(jobs, callers, |each| {
            let queue = queue.clone();
            let payload = payload.clone();
            async move {
                for _ in 0..each {
                    queue.add(JOB_NAME, &payload).await?;
                }
                Ok(())
            }
        })
        .await
    }

    async fn worker(target: &Target, concurrency: usize) -> Result<(), Failure> {
        let options = worker_options(target, concurrency);
        let settings = settings(&options);
        let worker = Worker::with_options(
            &target.queue,
            |_job: Job, _token| async { Ok(Value::Null) },
            options,
        )
        .await?;
        // Borrowed, not moved: the worker lives until the process exits.
        work_from_go(settings, None, async || {
            worker.run().await?;
            Ok(())
        })
        .await
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

    async fn latency_enqueue(target: &Target, jobs: usize) -> Result<Value, Failure> {
        let queue = queue(target).await?;
        one_per_ms(jobs, async || {
            queue.add(JOB_NAME, json!({ "sent_ns": now_ns() })).await?;
            Ok(())
        })
        .await
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
