//! `apalis-peer`: apalis with its Redis backend (apalis-redis) behind the
//! peer protocol of `jobqueue-bench --peers` (see the package's lib.rs).
//!
//! Enqueues go through `RedisStorage` on `apalis_redis::connect` (the
//! README's first example): `TaskSink::push_bulk` for `enqueue-bulk` (one
//! batch-push script call per batch), `TaskSink::push` for the others.
//!
//! Workers take their storage from `RedisStorageFactory` (the README's
//! factory example: one multiplexed connection that also subscribes to the
//! backend's "tasks available" notifications to wake idle workers) rather
//! than a bare `RedisStorage`, whose idle worker is only woken by its own
//! heartbeat timer (30 s by default). Everything else is the defaults:
//! `Config::default()` but the queue, `WorkerBuilder` with `concurrency`,
//! no `parallelize` (the tasks run on the worker's own task). Each process
//! names its worker after its pid: apalis keys a worker's in-flight set and
//! lease by name, so two processes must not share one.
//!
//! Completions: apalis acks a finished task into the queue's done set
//! (`SADD <queue>:done`), so the orchestrator counts them itself
//! (`SCARD <queue>:done`).

use apalis::prelude::{BackendFactory, BoxDynError, TaskSink, WorkerBuilder, WorkerBuilderExt};
use apalis_redis::factory::RedisStorageFactory;
use apalis_redis::{Client, Config, RedisStorage};
use bench_protocol::{
    Delays, Failure, Peer, Target, emit, from_callers, in_batches, now_ns, one_per_ms, payload_of,
    stdin_lines, work_from_go,
};
use serde_json::{Value, json};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    bench_protocol::main::<Apalis>("apalis-peer").await
}

/// This library's side of the protocol.
struct Apalis;

impl Peer for Apalis {
    async fn enqueue_bulk(
        target: &Target,
        jobs: usize,
        batch: usize,
        size: usize,
    ) -> Result<Value, Failure> {
        let mut storage = storage::<String>(target).await?;
        let payload = payload_of(size);
        in_batches(jobs, batch, async |n| {
            storage.push_bulk(vec![payload.clone(); n]).await?;
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
        let storage = storage::<String>(target).await?;
        let payload = payload_of(size);
        from_callers(jobs, callers, |each| {
            // Clones share the one multiplexed connection.
            let mut storage = storage.clone();
            let payload = payload.clone();
            async move {
                for _ in 0..each {
                    storage.push(payload.clone()).await?;
                }
                Ok(())
            }
        })
        .await
    }

    async fn worker(target: &Target, concurrency: usize) -> Result<(), Failure> {
        let mut factory = factory(target).await?;
        let storage = BackendFactory::<String>::create_with_config(&mut factory, config(target))?;
        let worker = WorkerBuilder::new(worker_name())
            .backend(storage)
            .concurrency(concurrency)
            .build(noop);
        work_from_go(settings(target, concurrency), None, async move || {
            tokio::spawn(exit_if_stopped(worker.run()));
            Ok(())
        })
        .await
    }

    async fn latency(target: &Target, jobs: usize, concurrency: usize) -> Result<(), Failure> {
        DELAYS.want(jobs);
        let mut factory = factory(target).await?;
        let storage = BackendFactory::<Value>::create_with_config(&mut factory, config(target))?;
        let worker = WorkerBuilder::new(worker_name())
            .backend(storage)
            .concurrency(concurrency)
            .build(stamp);
        tokio::spawn(exit_if_stopped(worker.run()));
        emit(json!({ "ready": true, "settings": settings(target, concurrency) }));
        DELAYS.report_when_all_in(stdin_lines(None)).await
    }

    async fn latency_enqueue(target: &Target, jobs: usize) -> Result<Value, Failure> {
        let mut storage = storage::<Value>(target).await?;
        one_per_ms(jobs, async || {
            storage.push(json!({ "sent_ns": now_ns() })).await?;
            Ok(())
        })
        .await
    }
}

/// The libraries' versions, for bench.json.
const LIBRARY: &str = "apalis 1.0.0 + apalis-redis 1.0.0";

/// Each probe's delay, in this latency worker process.
static DELAYS: Delays = Delays::new();

/// The no-op job of the processing runs.
async fn noop(_payload: String) -> Result<(), BoxDynError> {
    Ok(())
}

/// The latency probe: records how long after its enqueue began it started.
async fn stamp(probe: Value) -> Result<(), BoxDynError> {
    // Read as the handler's first thing; the args were decoded before.
    DELAYS.record(now_ns(), probe["sent_ns"].as_u64());
    Ok(())
}

fn config(target: &Target) -> Config {
    Config::default().queue(&target.queue)
}

/// The enqueue side's storage of `T`s on the target queue.
async fn storage<T>(target: &Target) -> Result<RedisStorage<T>, Failure> {
    let conn = apalis_redis::connect(target.url.as_str()).await?;
    Ok(RedisStorage::new(conn).with_config(config(target)))
}

/// What the workers were built with, for bench.json.
fn settings(target: &Target, concurrency: usize) -> Value {
    json!({
        "library": LIBRARY,
        "concurrency": concurrency,
        "config": format!("{:?}", config(target)),
        "storage": "RedisStorageFactory (pubsub wake-up of idle workers), its connection with protocol=resp3",
        "parallelize": "none (the default: tasks run on the worker's own task)",
        "worker_name": worker_name(),
        "completion_count": "SCARD <queue>:done",
    })
}

/// The factory's connection: it receives the notifications as RESP3 pushes,
/// which redis-rs only accepts on a connection opened with `protocol=resp3`
/// (the factory fails with "Can only pass push sender to a connection using
/// RESP3" otherwise).
async fn factory(target: &Target) -> Result<RedisStorageFactory, Failure> {
    let sep = if target.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}protocol=resp3", target.url);
    Ok(RedisStorageFactory::new(Client::open(url)?).await?)
}

/// Runs the worker; if it stops with an error (apalis ends `run` on a
/// backend error, e.g. a failing fetch script), says so and exits with a
/// failure, so the orchestrator sees a dead worker at once rather than a
/// live process that no longer works.
async fn exit_if_stopped<E: std::fmt::Display>(run: impl Future<Output = Result<(), E>>) {
    if let Err(e) = run.await {
        eprintln!("apalis-peer: the worker stopped: {e}");
        std::process::exit(1);
    }
}

fn worker_name() -> String {
    format!("apalis-peer-{}", std::process::id())
}
