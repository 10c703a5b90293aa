//! `sidekiq-peer`: rusty-sidekiq (Sidekiq's Redis protocol in Rust) behind
//! the peer protocol of `jobqueue-bench --peers` (see the package's lib.rs).
//!
//! What rusty-sidekiq cannot do the way the protocol asks, and what this
//! binary does instead:
//! - No bulk enqueue (Ruby Sidekiq's `push_bulk` has no Rust twin): the
//!   `enqueue-bulk` mode sends each batch as `batch` concurrent
//!   `WorkerOpts::perform_async` calls (each a pool checkout, SADD queues and
//!   LPUSH) and waits for the whole batch before the next; its result line
//!   says so under `api`.
//! - No record of a completed job in Redis: a worker BRPOPs a job and, once
//!   the handler returns, forgets it (no ack, no counter; Ruby Sidekiq's
//!   `stat:processed` is not kept either). So the worker counts its
//!   handler's returns in-process and answers the orchestrator's `count`
//!   lines with it (see `peers::stdin_lines`).
//!
//! Connections come from a bb8 pool built as the crate's README shows
//! (`bb8::Pool::builder().build(manager)`), bb8's defaults but the size: the
//! pool is sized to the mode's concurrency (the processor's workers plus
//! its three background loops; the callers of `enqueue-single`), as the
//! README's "best practices" advise, since with fewer connections than
//! workers the workers wait for one another's connections.

use async_trait::async_trait;
use bench_protocol::{
    Delays, Failure, Peer, Target, emit, from_callers, in_batches, now_ns, one_per_ms, payload_of,
    stdin_lines, work_from_go,
};
use serde_json::{Value, json};
use sidekiq::{Processor, ProcessorConfig, RedisConnectionManager, RedisPool, Worker};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

#[tokio::main]
async fn main() -> ExitCode {
    bench_protocol::main::<Sidekiq>("sidekiq-peer").await
}

/// This library's side of the protocol.
struct Sidekiq;

impl Peer for Sidekiq {
    async fn enqueue_bulk(
        target: &Target,
        jobs: usize,
        batch: usize,
        size: usize,
    ) -> Result<Value, Failure> {
        let pool = pool(target, None).await?;
        let payload = payload_of(size);
        let opts = Noop::opts().queue(target.queue.as_str());
        let mut line = in_batches(jobs, batch, async |n| {
            futures::future::try_join_all(
                (0..n).map(|_| opts.perform_async(&pool, payload.clone())),
            )
            .await?;
            Ok(())
        })
        .await?;
        line["api"] = json!(format!(
            "no bulk enqueue in rusty-sidekiq: each batch is {batch} concurrent WorkerOpts::perform_async calls (SADD queues + LPUSH each) over a bb8 pool of its default size (10)"
        ));
        Ok(line)
    }

    async fn enqueue_single(
        target: &Target,
        jobs: usize,
        callers: usize,
        size: usize,
    ) -> Result<Value, Failure> {
        let pool = pool(target, Some(u32::try_from(callers)?)).await?;
        let payload = payload_of(size);
        from_callers(jobs, callers, |each| {
            let pool = pool.clone();
            let payload = payload.clone();
            let opts = Noop::opts().queue(target.queue.clone());
            async move {
                for _ in 0..each {
                    opts.perform_async(&pool, payload.clone()).await?;
                }
                Ok(())
            }
        })
        .await
    }

    async fn worker(target: &Target, concurrency: usize) -> Result<(), Failure> {
        let (mut processor, settings) = processor(target, concurrency).await?;
        processor.register(Noop);
        work_from_go(settings, Some(&DONE), async move || {
            tokio::spawn(processor.run());
            Ok(())
        })
        .await
    }

    async fn latency(target: &Target, jobs: usize, concurrency: usize) -> Result<(), Failure> {
        DELAYS.want(jobs);
        let (mut processor, settings) = processor(target, concurrency).await?;
        processor.register(Stamp);
        tokio::spawn(processor.run());
        emit(json!({ "ready": true, "settings": settings }));
        DELAYS.report_when_all_in(stdin_lines(None)).await
    }

    async fn latency_enqueue(target: &Target, jobs: usize) -> Result<Value, Failure> {
        let pool = pool(target, None).await?;
        let opts = Stamp::opts().queue(target.queue.as_str());
        one_per_ms(jobs, async || {
            opts.perform_async(&pool, json!({ "sent_ns": now_ns() }))
                .await?;
            Ok(())
        })
        .await
    }
}

/// The background loops `Processor::run` starts next to its workers (the
/// heartbeat, the retry/scheduled poller, the periodic poller), each taking
/// a pooled connection now and then.
const BACKGROUND_LOOPS: u32 = 3;

/// The library's version, for bench.json.
const LIBRARY: &str = "rusty-sidekiq 0.15.2";

/// Jobs whose handler returned, in this worker process.
static DONE: AtomicU64 = AtomicU64::new(0);

/// Each probe's delay, in this latency worker process.
static DELAYS: Delays = Delays::new();

/// The no-op job of the processing runs.
struct Noop;

#[async_trait]
impl Worker<String> for Noop {
    async fn perform(&self, _payload: String) -> sidekiq::Result<()> {
        DONE.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The latency probe: records how long after its enqueue began it started.
struct Stamp;

#[async_trait]
impl Worker<Value> for Stamp {
    async fn perform(&self, probe: Value) -> sidekiq::Result<()> {
        // Read as the handler's first thing; the args were decoded before.
        DELAYS.record(now_ns(), probe["sent_ns"].as_u64());
        Ok(())
    }
}

/// A pool of at most `size` connections (bb8's default, 10, with `None`),
/// bb8's defaults otherwise.
async fn pool(target: &Target, size: Option<u32>) -> Result<RedisPool, Failure> {
    let manager = RedisConnectionManager::new(target.url.as_str())?;
    let builder = bb8::Pool::builder();
    let builder = match size {
        Some(size) => builder.max_size(size),
        None => builder,
    };
    Ok(builder.build(manager).await?)
}

/// A processor on the queue with its defaults but the number of workers
/// (its concurrency), and what it was built with, for bench.json.
async fn processor(target: &Target, concurrency: usize) -> Result<(Processor, Value), Failure> {
    let size = u32::try_from(concurrency)? + BACKGROUND_LOOPS;
    let pool = pool(target, Some(size)).await?;
    let config = ProcessorConfig::default().num_workers(concurrency);
    let settings = json!({
        "library": LIBRARY,
        "concurrency": concurrency,
        "num_workers": config.num_workers,
        "pool_max_size": size,
        "pool": "bb8 defaults but max_size (test_on_check_out: a PING per checkout)",
        "fetch": "BRPOP with a 2 s timeout per worker, one job per call",
        "ack": "none: a job is gone from Redis once fetched",
        "completion_count": "handler returns counted in-process, read over stdin",
    });
    let processor = Processor::new(pool, vec![target.queue.clone()]).with_config(config);
    Ok((processor, settings))
}
