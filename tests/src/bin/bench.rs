//! Run with: `scripts/bench` (or `cargo run --release -p jobqueue-tests --bin jobqueue-bench -- --help`).
//!
//! Measures jobqueue against a private `redis-server` (persistence off) and
//! against the ceiling of the same machine in the same run (`redis-benchmark`
//! for LPUSH, LMOVE and a trivial EVALSHA): enqueue rates (W1), processing
//! rates (W2), enqueue-to-start latency (W3), the sweep (W4) and the cost per
//! job in Redis commands, Redis CPU and memory (W5), and one hot queue on a
//! private three-primary cluster in 1, 3 and 6 shards (W6), what a
//! unique enqueue and a schedule tick cost Redis (W7), the claim's cost
//! per job with fleet-wide limits set, next to without (W8), and the
//! runner's own CPU per job with in-process metrics on (a Prometheus
//! exporter installed and scraped every second), next to off, each side in
//! runner processes of its own, interleaved (W9). Prints a table and writes
//! `target/bench.json`. `--only W8` (`scripts/bench --only W8`, or `W9`, or
//! `W8,W9`) runs those steps alone and updates only their figures there.
//!
//! With `--peers bullmq=PATH,sidekiq=PATH,apalis=PATH` (`scripts/bench
//! --peers`) it instead runs jobqueue side by side with bullmq-official,
//! rusty-sidekiq and apalis, whose harnesses (`bench/peers`, built apart
//! from this workspace) are at those paths: all speak the same subprocess
//! protocol (the subcommands below), are driven the same way on one private
//! Redis, interleaved over three rounds, and the medians, their ratios and
//! the issue's targets (against bullmq) are printed and written under
//! `peers` in `target/bench.json`.

use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bench_protocol::{Mode, now_ns};
use clap::Parser;
use jobqueue::client::EnqueueOptions;
use jobqueue::connection::Connection;
use jobqueue::queue::{NewJob, Queue, QueueOptions};
use jobqueue::{Client, JobContext, Limits, Rate, Runner, job};
use jobqueue_tests::{RedisCluster, RedisServer, start_runner, stop_runner};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "jobqueue benchmark")]
struct Args {
    /// Jobs per processing and enqueue run.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Runner concurrency for the main processing run.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Payload size in bytes (about).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Jobs in the latency run (one per ms).
    #[arg(long, default_value_t = 2_000)]
    latency_jobs: usize,
    /// Internal: run as a worker process against this Redis URL.
    #[arg(long, hide = true)]
    worker: Option<String>,
    /// Internal: run as W9's runner process against this Redis URL.
    #[arg(long, hide = true, value_name = "URL")]
    metered_worker: Option<String>,
    /// Internal, with `--metered-worker`: install the Prometheus exporter
    /// before the runner is built, and render it every second.
    #[arg(long, hide = true)]
    metrics_exporter: bool,
    /// Runs jobqueue side by side with its peers instead of the W1..W6
    /// suite: `NAME=PATH` of each built peer binary (`bullmq`, `sidekiq`,
    /// `apalis`; bullmq is required, its column carries the targets), comma
    /// separated or repeated; a bare PATH is bullmq's.
    #[arg(long, value_name = "NAME=PATH", value_delimiter = ',', value_parser = peers::parse_peer)]
    peers: Vec<(peers::System, std::path::PathBuf)>,
    /// Rounds of the side-by-side run, of W8 and of W9 (medians are
    /// reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Runs only these steps (comma-separated) on a private redis-server
    /// of their own, and updates only their figures in `target/bench.json`.
    /// Without it, the whole suite runs.
    #[arg(long, value_enum, value_delimiter = ',', ignore_case = true)]
    only: Vec<Step>,
    /// A single step of the side-by-side protocol
    /// (`bench_protocol`, shared with the peers), run as its own process.
    #[command(subcommand)]
    mode: Option<Mode>,
}

/// The steps `--only` can run alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Step {
    /// The claim's cost per job with fleet-wide limits set, next to without.
    #[value(name = "W8")]
    W8,
    /// The runner's CPU per job with metrics on (a Prometheus exporter
    /// installed and scraped), next to off.
    #[value(name = "W9")]
    W9,
}

static DONE: AtomicU64 = AtomicU64::new(0);
static ENQUEUED_AT: Mutex<Vec<Option<Instant>>> = Mutex::new(Vec::new());
static LATENCIES: Mutex<Vec<Duration>> = Mutex::new(Vec::new());

/// The no-op job of the processing runs.
#[job(queue = "bench")]
async fn noop(_payload: String) {
    DONE.fetch_add(1, Ordering::Relaxed);
}

/// Records how long after its enqueue it started.
#[job(queue = "bench-latency")]
async fn stamp(n: usize) {
    let started = Instant::now();
    if let Some(Some(at)) = ENQUEUED_AT.lock().expect("lock").get(n).copied() {
        LATENCIES.lock().expect("lock").push(started - at);
    }
}

/// The latency probe of the side-by-side run: records how long after its
/// enqueue began (`sent_ns`, wall clock, set by another process) it started.
#[job(queue = "bench-latency")]
async fn peer_stamp(probe: Value) {
    // The clock is read first thing: what is measured is the time until the
    // handler starts, not what the handler does.
    protocol::DELAYS.record(now_ns(), probe["sent_ns"].as_u64());
}

/// Holds its slot for a while, to measure runner memory per running job.
#[job(queue = "bench-rss", visibility = "30s")]
async fn hold(millis: u64, ctx: JobContext) {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(millis)) => {}
        () = ctx.cancelled() => {}
    }
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if let Some(mode) = args.mode.take() {
        if let Err(e) = bench_protocol::run::<protocol::Jobqueue>(mode).await {
            eprintln!("jobqueue-bench: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(url) = &args.worker {
        return worker(url, args.concurrency).await;
    }
    if let Some(url) = &args.metered_worker {
        return runner_cpu::child(
            url,
            args.jobs.max(1),
            args.concurrency,
            args.metrics_exporter,
        )
        .await;
    }
    if !args.peers.is_empty() {
        return peers::run(&args).await;
    }
    if !args.only.is_empty() {
        return only(&args).await;
    }
    let server = RedisServer::start();
    let url = server.url();
    let mut report = serde_json::Map::new();
    let mut table: Vec<(String, String, String)> = Vec::new();

    progress("ceiling: redis-benchmark");
    let ceiling = ceiling(server.port());
    for (name, rate) in &ceiling {
        table.push((
            format!("ceiling: redis-benchmark {name}"),
            format!("{rate:.0} ops/s"),
            String::new(),
        ));
    }
    report.insert(
        "ceiling".into(),
        json!(
            ceiling
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
        ),
    );
    let lpush = ceiling
        .iter()
        .find(|(n, _)| n == "LPUSH")
        .map_or(1.0, |(_, r)| *r);
    let evalsha = ceiling
        .iter()
        .find(|(n, _)| n == "EVALSHA")
        .map_or(1.0, |(_, r)| *r);

    let conn = Connection::connect(url.as_str()).await.expect("connect");
    let payload = "x".repeat(args.payload.saturating_sub(10));

    // W1: enqueue, one at a time by 50 callers, and in batches.
    let q = Queue::new_with(&conn, "bench", QueueOptions::new()).expect("queue");
    progress("W1 enqueue, 50 concurrent callers");
    let started = Instant::now();
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let q = q.clone();
            let payload = payload.clone();
            let n = args.jobs / 50;
            tokio::spawn(async move {
                for _ in 0..n {
                    q.submit(NewJob::new(&payload).expect("json").name("noop"))
                        .await
                        .expect("enqueue");
                }
            })
        })
        .collect();
    for c in callers {
        c.await.expect("caller");
    }
    let single = (args.jobs / 50 * 50) as f64 / started.elapsed().as_secs_f64();
    q.purge().await.expect("purge");
    progress("W1 enqueue_many, batches of 1000");
    let (cpu0, started) = (redis_cpu(&server), Instant::now());
    enqueue_batch(&q, args.jobs, &payload).await;
    let bulk = args.jobs as f64 / started.elapsed().as_secs_f64();
    let enqueue_cpu_us = (redis_cpu(&server) - cpu0) * 1e6 / args.jobs as f64;
    let memory = used_memory(&server) as f64;
    q.purge().await.expect("purge");
    let memory_per_job = (memory - used_memory(&server) as f64) / args.jobs as f64;
    table.push((
        "W1 enqueue, 50 callers one at a time".into(),
        format!("{single:.0} jobs/s"),
        format!("{:.2}x LPUSH", single / lpush),
    ));
    table.push((
        "W1 enqueue_many (1000 per call)".into(),
        format!("{bulk:.0} jobs/s"),
        format!("{:.2}x LPUSH", bulk / lpush),
    ));
    report.insert("enqueue".into(), json!({ "single_jobs_per_s": single, "bulk_jobs_per_s": bulk, "bulk_redis_cpu_us_per_job": enqueue_cpu_us }));

    // W2: processing.
    let mut processing = serde_json::Map::new();
    let mut after_runs: Vec<u64> = Vec::new();
    for (label, concurrency, processes) in [
        (
            format!("concurrency {}", args.concurrency),
            args.concurrency,
            1,
        ),
        ("concurrency 500".to_owned(), 500, 1),
        (
            format!("2 processes x concurrency {}", args.concurrency),
            args.concurrency,
            2,
        ),
    ] {
        progress(&format!("W2 processing {} no-op jobs, {label}", args.jobs));
        enqueue_batch(&q, args.jobs, &payload).await;
        reset_stats(&server);
        let cpu0 = redis_cpu(&server);
        let started = Instant::now();
        if processes == 1 {
            DONE.store(0, Ordering::Relaxed);
            let client = Client::new(&conn);
            let runner = Runner::builder(client)
                .queues(["bench"])
                .concurrency(concurrency)
                .build()
                .expect("runner");
            let (token, task) = start_runner(runner);
            wait_completed(&q, args.jobs).await;
            stop_runner(token, task).await;
        } else {
            let exe = std::env::current_exe().expect("own path");
            let mut children: Vec<_> = (0..processes)
                .map(|_| {
                    Command::new(&exe)
                        .args(["--worker", &url, "--concurrency", &concurrency.to_string()])
                        .spawn()
                        .expect("worker process")
                })
                .collect();
            wait_completed(&q, args.jobs).await;
            for c in &mut children {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let rate = args.jobs as f64 / secs;
        let cpu_us = (redis_cpu(&server) - cpu0) * 1e6 / args.jobs as f64;
        let (calls, round_trips) = command_counts(&server);
        table.push((
            format!("W2 processing, {label}"),
            format!("{rate:.0} jobs/s, Redis CPU {cpu_us:.1} µs/job"),
            format!(
                "{:.2}x EVALSHA; {:.1} commands, {:.2} round trips per job",
                rate / evalsha,
                calls / args.jobs as f64,
                round_trips / args.jobs as f64
            ),
        ));
        processing.insert(
            label,
            json!({ "jobs_per_s": rate, "redis_cpu_us_per_job": cpu_us, "commands_per_job": calls / args.jobs as f64, "round_trips_per_job": round_trips / args.jobs as f64 }),
        );
        q.purge().await.expect("purge");
        after_runs.push(used_memory(&server));
    }
    let drift = after_runs.iter().max().copied().unwrap_or(0) as i64
        - after_runs.iter().min().copied().unwrap_or(0) as i64;
    table.push((
        "W5 Redis used_memory after each W2 run (purged)".into(),
        format!("{after_runs:?} bytes"),
        format!("spread {drift} bytes across runs"),
    ));
    report.insert("processing".into(), Value::Object(processing));
    report.insert("used_memory_after_runs".into(), json!(after_runs));

    // W6: one hot queue on a private three-primary cluster, in 1, 3 and 6
    // shards. On one machine the primaries share its cores, so the telling
    // figure is the busiest primary's CPU per job: how much of one node a
    // job costs, which bounds the queue's rate on real separate nodes.
    let mut sharding = serde_json::Map::new();
    {
        let cluster = RedisCluster::start(3, 0);
        let cconn = Connection::connect(cluster.url().as_str())
            .await
            .expect("connect to the private cluster");
        let mut one_shard = None;
        for shards in [1usize, 3, 6] {
            progress(&format!(
                "W6 cluster of 3 primaries: {} no-op jobs in one queue of {shards} shard(s)",
                args.jobs
            ));
            let client = Client::builder(&cconn)
                .shards("bench", shards)
                .build()
                .expect("shards");
            let queues = client.shard_queues("bench").expect("shard queues");
            enqueue_jobs::<noop>(&client, args.jobs, &payload).await;
            let cpu0: Vec<f64> = cluster.nodes().iter().map(redis_cpu).collect();
            let started = Instant::now();
            let runner = Runner::builder(client.clone())
                .queues(["bench"])
                .concurrency(args.concurrency)
                .build()
                .expect("runner");
            let (token, task) = start_runner(runner);
            loop {
                let mut completed = 0;
                for q in &queues {
                    completed += q.stats().await.expect("stats").completed_total;
                }
                if completed as usize >= args.jobs {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let secs = started.elapsed().as_secs_f64();
            stop_runner(token, task).await;
            let busiest_us = cluster
                .nodes()
                .iter()
                .zip(&cpu0)
                .map(|(node, before)| (redis_cpu(node) - before) * 1e6 / args.jobs as f64)
                .fold(0.0_f64, f64::max);
            let rate = args.jobs as f64 / secs;
            let (base_rate, base_cpu) = *one_shard.get_or_insert((rate, busiest_us));
            table.push((
                format!("W6 cluster, one queue in {shards} shard(s)"),
                format!("{rate:.0} jobs/s, busiest primary {busiest_us:.1} µs/job"),
                format!(
                    "{:.2}x the rate, {:.2}x the busiest node's CPU of 1 shard",
                    rate / base_rate,
                    busiest_us / base_cpu
                ),
            ));
            sharding.insert(
                format!("{shards}_shards"),
                json!({ "jobs_per_s": rate, "busiest_primary_cpu_us_per_job": busiest_us }),
            );
            for q in &queues {
                q.purge().await.expect("purge");
            }
        }
    }
    report.insert("cluster_sharding".into(), Value::Object(sharding));

    // W3: latency with an idle runner, one job per ms.
    progress("W3 latency, one job per ms");
    let lq = Queue::new_with(&conn, "bench-latency", QueueOptions::new()).expect("queue");
    *ENQUEUED_AT.lock().expect("lock") = vec![None; args.latency_jobs];
    let runner = Runner::builder(Client::new(&conn))
        .queues(["bench-latency"])
        .concurrency(50)
        .build()
        .expect("runner");
    let (token, task) = start_runner(runner);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for n in 0..args.latency_jobs {
        tick.tick().await;
        ENQUEUED_AT.lock().expect("lock")[n] = Some(Instant::now());
        lq.submit(NewJob::new(&n).expect("json").name("stamp"))
            .await
            .expect("enqueue");
    }
    wait_completed(&lq, args.latency_jobs).await;
    stop_runner(token, task).await;
    let mut latencies = LATENCIES.lock().expect("lock").clone();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let (p50, p99, p999) = (pct(0.50), pct(0.99), pct(0.999));
    table.push((
        "W3 enqueue-to-start latency p50 / p99 / p99.9".into(),
        format!("{:.2} / {:.2} / {:.2} ms", ms(p50), ms(p99), ms(p999)),
        String::new(),
    ));
    report.insert(
        "latency_ms".into(),
        json!({ "p50": ms(p50), "p99": ms(p99), "p999": ms(p999) }),
    );

    // W4: one sweep with 10,000 in flight, none and 1,000 expired.
    progress("W4 sweep with 10,000 jobs in processing");
    let sq = Queue::new_with(
        &conn,
        "bench-sweep",
        QueueOptions::new().visibility(Duration::from_secs(60)),
    )
    .expect("queue");
    enqueue_batch(&sq, 9_000, &payload).await;
    let mut claimed = 0;
    while claimed < 9_000 {
        claimed += sq
            .claim_many(100, Duration::ZERO)
            .await
            .expect("claim")
            .len();
    }
    let short: Vec<NewJob> = (0..1_000)
        .map(|_| {
            NewJob::new(&payload)
                .expect("json")
                .options(EnqueueOptions::new().visibility(Duration::from_millis(100)))
        })
        .collect();
    sq.submit_many(short).await.expect("enqueue");
    let mut sweeps = serde_json::Map::new();
    for (label, wait) in [("none expired", false), ("1,000 expired", true)] {
        if wait {
            while claimed < 10_000 {
                claimed += sq
                    .claim_many(100, Duration::ZERO)
                    .await
                    .expect("claim")
                    .len();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        slowlog_reset(&server);
        let cpu0 = redis_cpu(&server);
        let started = Instant::now();
        let report = sq.reclaim_expired().await.expect("sweep");
        let took = started.elapsed();
        let cpu = redis_cpu(&server) - cpu0;
        let longest = slowlog_longest_us(&server) as f64 / 1e3;
        slowlog_reset(&server);
        let walk_started = Instant::now();
        let _ = sq.reclaim_stuck().await.expect("sweep");
        let walk = walk_started.elapsed();
        let longest_walk = slowlog_longest_us(&server) as f64 / 1e3;
        table.push((
            format!("W4 sweep, 10,000 in flight, {label}"),
            format!("{:.2} ms, Redis CPU {:.2} ms", ms(took), cpu * 1e3),
            format!(
                "{} reclaimed; longest script {longest:.2} ms; full walk {:.2} ms, longest step {longest_walk:.2} ms",
                report.reclaimed.len(),
                ms(walk)
            ),
        ));
        sweeps.insert(
            label.into(),
            json!({ "ms": ms(took), "redis_cpu_ms": cpu * 1e3, "reclaimed": report.reclaimed.len(),
                    "longest_script_ms": longest, "full_walk_ms": ms(walk), "full_walk_longest_step_ms": longest_walk }),
        );
        if !wait {
            // Let the 1,000 short leases lapse for the next row.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    report.insert("sweep".into(), Value::Object(sweeps));

    // W5: memory per pending job, runner memory at concurrency 1,000.
    progress("W5 runner memory at concurrency 1,000");
    let rq = Queue::new_with(&conn, "bench-rss", QueueOptions::new()).expect("queue");
    let rss0 = rss_kib();
    let holds: Vec<NewJob> = (0..1_000)
        .map(|_| NewJob::new(&3_000_u64).expect("json").name("hold"))
        .collect();
    rq.submit_many(holds).await.expect("enqueue");
    let runner = Runner::builder(Client::new(&conn))
        .queues(["bench-rss"])
        .concurrency(1_000)
        .build()
        .expect("runner");
    let (token, task) = start_runner(runner);
    let started = Instant::now();
    while rq.stats().await.expect("stats").processing_depth < 1_000
        && started.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss1 = rss_kib();
    stop_runner(token, task).await;
    table.push((
        "W5 Redis memory per pending job".into(),
        format!("{memory_per_job:.0} bytes"),
        format!("payload {} bytes", args.payload),
    ));
    table.push((
        "W5 runner RSS growth with 1,000 running jobs".into(),
        format!("{} KiB", rss1.saturating_sub(rss0)),
        format!(
            "{:.1} KiB per job",
            rss1.saturating_sub(rss0) as f64 / 1000.0
        ),
    ));
    report.insert("memory".into(), json!({ "redis_bytes_per_pending_job": memory_per_job, "runner_rss_kib_at_1000": rss1.saturating_sub(rss0) }));

    // W7: what the controls cost Redis: an enqueue with a unique key next to
    // a plain one (50 callers one at a time, each job new), and a periodic
    // tick (a due schedule's compare-and-set and its job's enqueue).
    progress("W7 unique enqueue and schedule ticks");
    let uq = Queue::new_with(&conn, "bench-unique", QueueOptions::new()).expect("queue");
    let n = (args.jobs / 4).max(50) / 50 * 50;
    let mut per_job = Vec::new();
    for unique in [false, true] {
        uq.purge().await.expect("purge");
        let cpu0 = redis_cpu(&server);
        let callers: Vec<_> = (0..50)
            .map(|c| {
                let uq = uq.clone();
                let payload = payload.clone();
                tokio::spawn(async move {
                    for i in 0..n / 50 {
                        let mut options = EnqueueOptions::new();
                        if unique {
                            options = options.unique_key(format!("key-{c}-{i}"));
                        }
                        let job = NewJob::new(&payload)
                            .expect("json")
                            .name("noop")
                            .options(options);
                        uq.submit(job).await.expect("enqueue");
                    }
                })
            })
            .collect();
        for c in callers {
            c.await.expect("caller");
        }
        per_job.push((redis_cpu(&server) - cpu0) * 1e6 / n as f64);
    }
    uq.purge().await.expect("purge");
    let schedules = 200;
    let sq = Queue::new_with(&conn, "bench-cron", QueueOptions::new()).expect("queue");
    for i in 0..schedules {
        sq.put_schedule(
            &format!("s{i}"),
            "* * * * * *",
            "noop",
            "null",
            &jobqueue::queue::ScheduleOptions::new(),
        )
        .await
        .expect("schedule");
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let cpu0 = redis_cpu(&server);
    let fired = sq.tick_schedules().await.expect("tick").len().max(1);
    let tick_us = (redis_cpu(&server) - cpu0) * 1e6 / fired as f64;
    sq.purge().await.expect("purge");
    for i in 0..schedules {
        let _ = sq.remove_schedule(&format!("s{i}")).await;
    }
    table.push((
        "W7 Redis CPU per enqueue, unique key".into(),
        format!("{:.1} µs", per_job[1]),
        format!(
            "{:.2}x a plain enqueue ({:.1} µs)",
            per_job[1] / per_job[0],
            per_job[0]
        ),
    ));
    table.push((
        format!("W7 Redis CPU per schedule tick ({fired} ticks)"),
        format!("{tick_us:.1} µs"),
        format!("{:.2}x a plain enqueue", tick_us / per_job[0]),
    ));
    report.insert("controls".into(), json!({ "plain_enqueue_redis_cpu_us": per_job[0], "unique_enqueue_redis_cpu_us": per_job[1], "tick_redis_cpu_us": tick_us, "ticks_fired": fired }));

    claim_limits(
        &server,
        &conn,
        args.jobs,
        args.rounds,
        &payload,
        &mut table,
        &mut report,
    )
    .await;

    runner_cpu::run(&args, &conn, &url, &mut table, &mut report).await;

    finish(&table, report, false);
}

/// `--only`: the steps named, on a private redis-server of their own.
async fn only(args: &Args) {
    let server = RedisServer::start();
    let conn = Connection::connect(server.url().as_str())
        .await
        .expect("connect");
    let payload = "x".repeat(args.payload.saturating_sub(10));
    let mut report = serde_json::Map::new();
    let mut table: Vec<(String, String, String)> = Vec::new();
    let mut steps = args.only.clone();
    steps.dedup();
    for step in steps {
        match step {
            Step::W8 => {
                claim_limits(
                    &server,
                    &conn,
                    args.jobs,
                    args.rounds,
                    &payload,
                    &mut table,
                    &mut report,
                )
                .await;
            }
            Step::W9 => {
                runner_cpu::run(args, &conn, &server.url(), &mut table, &mut report).await;
            }
        }
    }
    finish(&table, report, true);
}

/// Prints the table and writes `target/bench.json`: the whole suite's
/// figures replace the file's (all but the side-by-side ones), a partial
/// run's (`--only`) replace only their own keys.
fn finish(
    table: &[(String, String, String)],
    report: serde_json::Map<String, Value>,
    partial: bool,
) {
    println!();
    let width = table.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    for (name, value, ratio) in table {
        println!("{name:width$}  {value:40}  {ratio}");
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench.json");
    let old = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok());
    let report = if partial {
        let mut all = match old {
            Some(Value::Object(old)) => old,
            _ => serde_json::Map::new(),
        };
        all.extend(report);
        all
    } else {
        // The side-by-side figures (`--peers`) are a separate run with its
        // own date and commit: keep them rather than drop them with the old
        // suite's.
        let mut report = report;
        if let Some(peers) = old.and_then(|mut old| old.get_mut("peers").map(Value::take)) {
            report.insert("peers".into(), peers);
        }
        report
    };
    let _ = std::fs::create_dir_all(path.parent().expect("dir"));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&Value::Object(report)).expect("json"),
    )
    .expect("write bench.json");
    println!("\nwrote {}", path.display());
}

/// One way W8 fills and limits a queue.
struct ClaimCase {
    /// Key in bench.json.
    key: &'static str,
    /// Row label.
    label: &'static str,
    /// Jobs spread over [`RATE_KEYS`] rate keys, each in its key's lane.
    keyed: bool,
    /// The queue's own limits.
    queue_limits: Limits,
    /// The limits each rate key gets.
    key_limits: Limits,
}

/// Rate keys of W8's keyed cases.
const RATE_KEYS: usize = 50;
/// Jobs per claim in W8: the runner's batch at concurrency 25 (its claims
/// ask for the free slots, up to 100 a call).
const CLAIM_BATCH: usize = 25;
/// Jobs W8 claims from one queue before it turns to the next.
const SLICE: usize = 1_000;

/// W8: what fleet-wide limits cost the claim script. Four queues get the
/// same jobs: one with no limits, one with a rate, a burst and a
/// max_running that never bind yet are read, checked and charged on every
/// claim (the largest rate allowed, 1,000,000 per ms, and max_running
/// 1,000,000), and the same two over 50 rate keys (each key its own lane,
/// lease set and, in the second, limits). In each round all four are
/// filled, then drained in claims of 25 without settling (the claim alone
/// is measured), 1,000 jobs from one queue and then the next, the order
/// rotating, so drift in the machine (other load) falls on all four alike.
/// Measured per slice: Redis CPU per claimed job (INFO cpu, as W7) and the
/// claim script's own time (INFO commandstats, EVALSHA usec); reported:
/// the medians over all slices, and the median and quartiles of the ratios
/// between slices taken back to back.
async fn claim_limits(
    server: &RedisServer,
    conn: &Connection,
    jobs: usize,
    rounds: usize,
    payload: &str,
    table: &mut Vec<(String, String, String)>,
    report: &mut serde_json::Map<String, Value>,
) {
    let (jobs, rounds) = (jobs.max(1), rounds.max(1));
    // The largest count a rate, a burst and (here) max_running may have.
    const MOST: u32 = 1_000_000;
    let never_binding = Limits::new()
        .rate(Rate::new(MOST, Duration::from_millis(1)))
        .burst(MOST)
        .max_running(MOST);
    let cases = [
        ClaimCase {
            key: "no_limits",
            label: "no limits",
            keyed: false,
            queue_limits: Limits::new(),
            key_limits: Limits::new(),
        },
        ClaimCase {
            key: "queue_limits",
            label: "queue rate + max_running set",
            keyed: false,
            queue_limits: never_binding,
            key_limits: Limits::new(),
        },
        ClaimCase {
            key: "keys_no_limits",
            label: "50 rate keys, no limits",
            keyed: true,
            queue_limits: Limits::new(),
            key_limits: Limits::new(),
        },
        ClaimCase {
            key: "keys_with_limits",
            label: "50 rate keys with rate + max_running",
            keyed: true,
            queue_limits: Limits::new(),
            key_limits: never_binding,
        },
    ];
    let mut queues = Vec::new();
    for case in &cases {
        let q = Queue::new_with(
            conn,
            &format!("bench-claim-{}", case.key),
            QueueOptions::new(),
        )
        .expect("queue");
        q.purge().await.expect("purge");
        q.set_limits(&case.queue_limits).await.expect("limits");
        q.set_key_limits(&case.key_limits)
            .await
            .expect("key limits");
        queues.push(q);
    }
    // Per case, per slice: (Redis CPU µs/job, script µs/job, claims/s).
    let mut figures = vec![Vec::new(); cases.len()];
    let mut turn = 0;
    for round in 0..rounds {
        progress(&format!(
            "W8 claim cost with limits, round {} of {rounds}: {jobs} jobs in each of {} queues",
            round + 1,
            cases.len()
        ));
        for (case, q) in cases.iter().zip(&queues) {
            let mut left = jobs;
            let mut n = 0;
            while left > 0 {
                let batch: Vec<NewJob> = (0..left.min(1000))
                    .map(|_| {
                        let job = NewJob::new(payload).expect("json").name("noop");
                        n += 1;
                        if case.keyed {
                            job.options(
                                EnqueueOptions::new().rate_key(format!("tenant-{}", n % RATE_KEYS)),
                            )
                        } else {
                            job
                        }
                    })
                    .collect();
                left -= batch.len();
                q.submit_many(batch).await.expect("enqueue");
            }
        }
        // Drained in slices, the four in turn, the order rotating.
        let mut left = jobs;
        while left > 0 {
            let slice = left.min(SLICE);
            left -= slice;
            for i in (0..cases.len()).map(|i| (i + turn) % cases.len()) {
                let q = &queues[i];
                reset_stats(server);
                let cpu0 = redis_cpu(server);
                let started = Instant::now();
                let mut claimed = 0;
                while claimed < slice {
                    let got = q
                        .claim_many(CLAIM_BATCH.min(slice - claimed), Duration::ZERO)
                        .await
                        .expect("claim")
                        .len();
                    assert!(
                        got > 0,
                        "W8 {}: a claim came back empty with jobs pending: a limit bound",
                        cases[i].label
                    );
                    claimed += got;
                }
                let secs = started.elapsed().as_secs_f64();
                let cpu_us = (redis_cpu(server) - cpu0) * 1e6 / slice as f64;
                let script_us = script_usec(server) / slice as f64;
                figures[i].push((cpu_us, script_us, slice as f64 / secs));
            }
            turn += 1;
        }
        for q in &queues {
            assert_eq!(q.stats().await.expect("stats").pending_depth, 0);
            q.purge().await.expect("purge");
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let col = |i: usize, f: fn(&(f64, f64, f64)) -> f64| median(figures[i].iter().map(f).collect());
    // Case a's figure over case b's in slices taken back to back: the
    // median and the quartiles (the middle half), over all slices.
    let ratio = |a: usize, b: usize, f: fn(&(f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = figures[a]
            .iter()
            .zip(&figures[b])
            .map(|(x, y)| f(x) / f(y))
            .collect();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() / 4], v[v.len() * 3 / 4])
    };
    let cpu = |r: &(f64, f64, f64)| r.0;
    let script = |r: &(f64, f64, f64)| r.1;
    let versus = |a: usize, b: usize| {
        let (m, q1, q3) = ratio(a, b, cpu);
        format!(
            "{m:.2}x {} (middle half {q1:.2}-{q3:.2}x), script {:.2}x",
            cases[b].label,
            ratio(a, b, script).0
        )
    };
    let mut cases_json = serde_json::Map::new();
    for (i, case) in cases.iter().enumerate() {
        let base = if i == 3 { 2 } else { 0 };
        let compared = match i {
            0 => format!(
                "{:.0} jobs/s in claims of {CLAIM_BATCH}; medians of {} slices",
                col(0, |r| r.2),
                figures[0].len()
            ),
            3 => format!("{}; {:.2}x no limits", versus(3, 2), ratio(3, 0, cpu).0),
            _ => versus(i, 0),
        };
        table.push((
            format!("W8 claim, {}", case.label),
            format!(
                "Redis CPU {:.1} µs/job, script {:.1} µs",
                col(i, cpu),
                col(i, script)
            ),
            compared,
        ));
        let (cpu_ratio, cpu_q1, cpu_q3) = ratio(i, base, cpu);
        cases_json.insert(
            case.key.into(),
            json!({
                "redis_cpu_us_per_job": col(i, cpu),
                "script_us_per_job": col(i, script),
                "claims_per_s": col(i, |r| r.2),
                "ratio_to": cases[base].key,
                "redis_cpu_ratio": cpu_ratio,
                "redis_cpu_ratio_quartiles": [cpu_q1, cpu_q3],
                "script_ratio": ratio(i, base, script).0,
                "slices": figures[i].iter().map(|r| json!({ "redis_cpu_us_per_job": r.0, "script_us_per_job": r.1, "claims_per_s": r.2 })).collect::<Vec<_>>(),
            }),
        );
    }
    for q in &queues {
        q.set_limits(&Limits::new()).await.expect("limits");
        q.set_key_limits(&Limits::new()).await.expect("key limits");
    }
    report.insert(
        "claim_limits".into(),
        json!({ "jobs": jobs, "claim_batch": CLAIM_BATCH, "slice": SLICE, "rate_keys": RATE_KEYS, "rounds": rounds, "cases": cases_json }),
    );
}

/// A worker process for the two-process run.
async fn worker(url: &str, concurrency: usize) {
    let client = Client::connect(url).await.expect("connect");
    let runner = Runner::builder(client)
        .queues(["bench"])
        .concurrency(concurrency)
        .build()
        .expect("runner");
    let _ = runner.run(jobqueue::CancellationToken::new()).await;
}

fn progress(what: &str) {
    eprintln!("... {what}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn enqueue_batch(q: &Queue, n: usize, payload: &str) {
    let mut left = n;
    while left > 0 {
        let batch: Vec<NewJob> = (0..left.min(1000))
            .map(|_| NewJob::new(payload).expect("json").name("noop"))
            .collect();
        left -= batch.len();
        q.submit_many(batch).await.expect("enqueue");
    }
}

/// Enqueues `n` jobs `T` carrying `payload` through `client`, 1,000 per
/// call (the typed path, as an application enqueues).
async fn enqueue_jobs<T: jobqueue::definition::Job<Payload = String>>(
    client: &Client,
    n: usize,
    payload: &str,
) {
    let mut left = n;
    while left > 0 {
        let chunk = left.min(1000);
        client
            .enqueue_many::<T>((0..chunk).map(|_| payload.to_owned()))
            .await
            .expect("enqueue");
        left -= chunk;
    }
}

async fn wait_completed(q: &Queue, n: usize) {
    let started = Instant::now();
    loop {
        let s = q.stats().await.expect("stats");
        if s.completed_total as usize >= n {
            return;
        }
        if started.elapsed() > Duration::from_secs(600) {
            panic!("not done after 10 minutes: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `redis-benchmark` rates for the ceiling rows.
fn ceiling(port: u16) -> Vec<(String, f64)> {
    let run = |args: &[&str]| -> f64 {
        let out = Command::new("redis-benchmark")
            .args(["-p", &port.to_string(), "-n", "100000", "-c", "50", "-q"])
            .args(args)
            .output()
            .expect("redis-benchmark (package redis-tools) runs");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .zip(text.split_whitespace().skip(1))
            .find(|(_, next)| *next == "requests")
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or(0.0)
    };
    let mut rows = vec![("LPUSH".to_owned(), run(&["-t", "lpush"]))];
    let mut setup = Command::new("redis-cli");
    setup.args(["-p", &port.to_string(), "RPUSH", "bench:rotate", "x"]);
    let _ = setup.output();
    rows.push((
        "LMOVE".to_owned(),
        run(&["LMOVE", "bench:rotate", "bench:rotate", "RIGHT", "LEFT"]),
    ));
    rows.push(("EVALSHA".to_owned(), run(&["EVAL", "return 1", "0"])));
    rows
}

fn info_field(server: &RedisServer, section: &str, field: &str) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &server.port().to_string(), "INFO", section])
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// Redis server CPU seconds (user + system).
fn redis_cpu(server: &RedisServer) -> f64 {
    let f = |k| info_field(server, "cpu", k).parse::<f64>().unwrap_or(0.0);
    f("used_cpu_user") + f("used_cpu_sys")
}

fn used_memory(server: &RedisServer) -> u64 {
    info_field(server, "memory", "used_memory")
        .parse()
        .unwrap_or(0)
}

fn slowlog_reset(server: &RedisServer) {
    let port = server.port().to_string();
    let _ = Command::new("redis-cli")
        .args(["-p", &port, "CONFIG", "SET", "slowlog-log-slower-than", "0"])
        .output();
    let _ = Command::new("redis-cli")
        .args(["-p", &port, "CONFIG", "SET", "slowlog-max-len", "10000"])
        .output();
    let _ = Command::new("redis-cli")
        .args(["-p", &port, "SLOWLOG", "RESET"])
        .output();
}

/// The longest single command (a script call counts as one) since the last
/// reset, in µs: how long Redis was blocked at a stretch.
fn slowlog_longest_us(server: &RedisServer) -> u64 {
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &server.port().to_string(),
            "--no-raw",
            "SLOWLOG",
            "GET",
            "10000",
        ])
        .output()
        .expect("redis-cli runs");
    // Each entry prints: id, timestamp, "3) (integer) <µs>", arguments...
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("3) (integer) "))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// The time Redis spent in script calls (EVALSHA and EVAL, each call
/// whole with the commands it ran) since the last reset, in µs, from INFO
/// commandstats.
fn script_usec(server: &RedisServer) -> f64 {
    let out = Command::new("redis-cli")
        .args(["-p", &server.port().to_string(), "INFO", "commandstats"])
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.strip_prefix("cmdstat_evalsha:")
                .or_else(|| l.strip_prefix("cmdstat_eval:"))
        })
        .filter_map(|rest| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix("usec="))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .sum()
}

fn reset_stats(server: &RedisServer) {
    let _ = Command::new("redis-cli")
        .args(["-p", &server.port().to_string(), "CONFIG", "RESETSTAT"])
        .output();
}

/// Commands Redis ran (including inside scripts) and round trips (commands
/// clients sent), from INFO commandstats since the last reset.
fn command_counts(server: &RedisServer) -> (f64, f64) {
    let out = Command::new("redis-cli")
        .args(["-p", &server.port().to_string(), "INFO", "commandstats"])
        .output()
        .expect("redis-cli runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut calls = 0.0;
    let mut scripts = 0.0;
    let mut inside = 0.0;
    for line in text.lines() {
        let Some((name, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let n: f64 = rest
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        calls += n;
        match name {
            "evalsha" | "eval" => scripts += n,
            // Commands only scripts send in these runs.
            "hset" | "hmget" | "hget" | "lrem" | "lpush" | "rpush" | "zadd" | "zrem" | "zscore"
            | "expire" | "hincrby" | "publish" | "time" | "exists" | "lmove" | "hgetall"
            | "llen" | "rpop" | "del" | "zrangebyscore" | "lrange" | "get" | "set" | "persist"
            | "hdel" => inside += n,
            _ => {}
        }
    }
    // Round trips: the script calls plus whatever was sent outside scripts
    // (the stats polls of this benchmark are included, a small overcount).
    (calls, (calls - inside).max(scripts))
}

/// This process's resident memory in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

/// W9: the runner's own CPU per job with the `metrics` feature's recorder
/// installed (metrics-exporter-prometheus, its exposition rendered every
/// second as a scraper would, with its upkeep) next to none (off: the
/// feature compiled in, nothing installed, the facade's no-op). A recorder
/// is global to a process and cannot be removed, so each slice is a runner
/// process of its own: this binary with `--metered-worker`. The queue is
/// filled with `jobs` no-op jobs first; the process builds its runner and
/// says ready; its CPU (every thread's time on a CPU, in ns, from
/// /proc/PID/task/*/schedstat; the 10 ms ticks of /proc/PID/stat are kept
/// as a cross-check) is read before it is told to go and after it has run
/// them all and stopped its runner. Process start, connecting and the
/// enqueues are not counted; the parent waits on the process's stdout, so
/// nothing polls Redis meanwhile. Each round runs five blocks of off, on,
/// on, off, so drift in the machine falls on both; reported: the medians,
/// and the median and quartiles (the middle half) of the on/off ratios of
/// the slices taken back to back.
mod runner_cpu {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use jobqueue::connection::Connection;
    use jobqueue::{CancellationToken, Client, Runner, job};
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
    use serde_json::{Value, json};
    use tokio::sync::Notify;

    use super::Args;
    use super::peers::Worker;
    use super::progress;
    use bench_protocol::{emit, stdin_lines, until_told_to_stop};

    /// The queue of W9's jobs ([`metered()`](fn@metered)).
    const QUEUE: &str = "bench-meter";
    /// What the issue allows metrics to cost: under 5% more CPU per job.
    const TARGET: f64 = 1.05;
    /// How often the process with the exporter renders its exposition.
    const SCRAPE_EVERY: Duration = Duration::from_secs(1);
    /// The longest a slice may take.
    const SLICE_LIMIT: Duration = Duration::from_secs(600);
    /// Blocks of off, on, on, off per round: a slice of 20,000 jobs takes
    /// about a second, and on a busy machine a 5% difference needs tens of
    /// pairs to show through the noise.
    const BLOCKS: usize = 5;

    /// Jobs the runner process has run.
    static RAN: AtomicU64 = AtomicU64::new(0);
    /// Jobs it runs before it stops.
    static WANTED: AtomicU64 = AtomicU64::new(u64::MAX);
    /// Signalled by the job that brings [`RAN`] to [`WANTED`].
    static ALL_IN: Notify = Notify::const_new();

    /// W9's no-op job: counts itself, and tells when the last one has run.
    #[job(queue = "bench-meter")]
    async fn metered(_payload: String) {
        if RAN.fetch_add(1, Ordering::Relaxed) + 1 == WANTED.load(Ordering::Relaxed) {
            ALL_IN.notify_one();
        }
    }

    /// The runner process (`--metered-worker URL [--metrics-exporter]`):
    /// installs the Prometheus recorder if asked, builds a runner on
    /// [`QUEUE`] at `concurrency`, prints `{"ready":true}`, and on a line
    /// on stdin runs until `jobs` jobs have run; then stops its runner,
    /// prints `{"done":true,...}` and waits for stdin to close.
    pub(crate) async fn child(url: &str, jobs: usize, concurrency: usize, exporter: bool) {
        // Before the runner is built: it takes its metric handles then.
        // Before "ready" too, so the exporter's one-time set-up (quanta
        // calibrates its clock, a busy loop of up to 200 ms) is not counted:
        // a long-running worker pays it once.
        // Configured as the README recommends: buckets for jobqueue's
        // histograms (the default summaries cost about twice as much).
        let handle = exporter.then(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Prefix("jobqueue_".into()),
                    jobqueue::metrics::BUCKETS,
                )
                .expect("buckets are not empty")
                .install_recorder()
                .expect("install the Prometheus recorder")
        });
        WANTED.store(jobs as u64, Ordering::Relaxed);
        let client = Client::connect(url).await.expect("connect");
        let runner = Runner::builder(client)
            .queues([QUEUE])
            .concurrency(concurrency)
            .build()
            .expect("runner");
        emit(json!({ "ready": true }));
        let mut stdin = stdin_lines(None);
        if stdin.recv().await.is_none() {
            return;
        }
        let stop = CancellationToken::new();
        let scraper = handle
            .clone()
            .map(|handle| tokio::spawn(scrape(handle, stop.clone())));
        let running = tokio::spawn(runner.run(stop.clone()));
        ALL_IN.notified().await;
        stop.cancel();
        running.await.expect("the runner");
        if let Some(scraper) = scraper {
            scraper.await.expect("the scraper");
        }
        // A last scrape (counted, as a scraper's would be): it must count
        // every start, or the exporter was not what the runner reported to.
        let started = handle.map(|handle| started_total(&handle.render()));
        emit(json!({
            "done": true,
            "jobs": RAN.load(Ordering::Relaxed),
            "exposition_started_total": started,
        }));
        until_told_to_stop(stdin).await;
    }

    /// Renders the exposition every [`SCRAPE_EVERY`] and runs the
    /// exporter's upkeep, as a process serving `/metrics` would, until
    /// `stop`.
    async fn scrape(handle: PrometheusHandle, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SCRAPE_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    std::hint::black_box(handle.render());
                    handle.run_upkeep();
                }
                () = stop.cancelled() => return,
            }
        }
    }

    /// `jobqueue_jobs_started_total` of [`QUEUE`] in an exposition.
    fn started_total(exposition: &str) -> u64 {
        let label = format!("queue=\"{QUEUE}\"");
        exposition
            .lines()
            .filter(|l| l.starts_with("jobqueue_jobs_started_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Each thread of process `pid`, by id: its time on a CPU in ns.
    fn thread_cpu_ns(pid: u32) -> BTreeMap<String, u64> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return BTreeMap::new();
        };
        tasks
            .flatten()
            .filter_map(|task| {
                let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
                let ns = text.split_whitespace().next()?.parse().ok()?;
                Some((task.file_name().to_string_lossy().into_owned(), ns))
            })
            .collect()
    }

    /// User + system clock ticks process `pid` has used (all its threads,
    /// exited ones too).
    fn process_ticks(pid: u32) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        jobqueue_tests::cpu_ticks_in(&stat)
    }

    /// One slice: one runner process, metrics on or off.
    #[derive(Debug)]
    struct Slice {
        on: bool,
        /// CPU µs per job from the threads' schedstat.
        cpu_us: f64,
        /// The same from /proc/PID/stat's ticks.
        ticks_us: f64,
        /// From go to done.
        secs: f64,
        /// Threads gone by the end (their time after the start is lost).
        threads_exited: usize,
    }

    /// Runs one slice: fills the queue, starts the process, measures.
    async fn slice(
        args: &Args,
        client: &Client,
        url: &str,
        payload: &str,
        clk_tck: f64,
        on: bool,
    ) -> Slice {
        let jobs = args.jobs.max(1);
        super::enqueue_jobs::<metered>(client, jobs, payload).await;
        let mut child_args = vec![
            "--metered-worker".to_owned(),
            url.to_owned(),
            "--jobs".into(),
            jobs.to_string(),
            "--concurrency".into(),
            args.concurrency.to_string(),
        ];
        if on {
            child_args.push("--metrics-exporter".into());
        }
        let exe = std::env::current_exe().expect("own path");
        let (mut worker, _) = Worker::start(&exe, &child_args).await;
        let (threads0, ticks0) = (thread_cpu_ns(worker.pid), process_ticks(worker.pid));
        worker.go().await;
        let started = Instant::now();
        let done = worker.line(SLICE_LIMIT).await;
        let secs = started.elapsed().as_secs_f64();
        let (threads1, ticks1) = (thread_cpu_ns(worker.pid), process_ticks(worker.pid));
        worker.stop().await;
        assert_eq!(
            done["jobs"].as_u64(),
            Some(jobs as u64),
            "W9: the runner process said {done}"
        );
        if on {
            assert_eq!(
                done["exposition_started_total"].as_u64(),
                Some(jobs as u64),
                "W9: the exporter did not count every start: {done}"
            );
        }
        let mut ns = 0;
        let mut threads_exited = 0;
        for (tid, before) in &threads0 {
            match threads1.get(tid) {
                Some(after) => ns += after.saturating_sub(*before),
                None => threads_exited += 1,
            }
        }
        ns += threads1
            .iter()
            .filter(|(tid, _)| !threads0.contains_key(*tid))
            .map(|(_, after)| after)
            .sum::<u64>();
        let ticks_us = ticks1.saturating_sub(ticks0) as f64 / clk_tck * 1e6 / jobs as f64;
        Slice {
            on,
            // Without schedstat (a kernel without CONFIG_SCHED_INFO), the
            // ticks.
            cpu_us: if ns > 0 {
                ns as f64 / 1e3 / jobs as f64
            } else {
                ticks_us
            },
            ticks_us,
            secs,
            threads_exited,
        }
    }

    /// The lower quartile, the median and the upper quartile of `values`.
    fn quartiles(mut values: Vec<f64>) -> (f64, f64, f64) {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        (values[n / 4], median, values[(3 * n) / 4])
    }

    /// W9, in this process: the slices, the table rows, the report.
    pub(crate) async fn run(
        args: &Args,
        conn: &Connection,
        url: &str,
        table: &mut Vec<(String, String, String)>,
        report: &mut serde_json::Map<String, Value>,
    ) {
        let rounds = args.rounds.max(1);
        let payload = "x".repeat(args.payload.saturating_sub(10));
        let clk_tck = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0);
        let client = Client::new(conn);
        client
            .queue(QUEUE)
            .expect("queue")
            .purge()
            .await
            .expect("purge");
        let mut slices = Vec::new();
        for round in 0..rounds {
            progress(&format!(
                "W9 runner CPU with metrics off and on, round {} of {rounds}: {BLOCKS} x (off, on, on, off), {} jobs each at concurrency {}",
                round + 1,
                args.jobs.max(1),
                args.concurrency
            ));
            for on in [false, true, true, false].repeat(BLOCKS) {
                let s = slice(args, &client, url, &payload, clk_tck, on).await;
                client
                    .queue(QUEUE)
                    .expect("queue")
                    .purge()
                    .await
                    .expect("purge");
                slices.push(s);
            }
        }
        let of = |on: bool, f: fn(&Slice) -> f64| -> Vec<f64> {
            slices.iter().filter(|s| s.on == on).map(f).collect()
        };
        // Back to back: off then on, and on then off, in every round.
        let ratios: Vec<f64> = slices
            .chunks(4)
            .flat_map(|r| [r[1].cpu_us / r[0].cpu_us, r[2].cpu_us / r[3].cpu_us])
            .collect();
        let (_, off, _) = quartiles(of(false, |s| s.cpu_us));
        let (_, on, _) = quartiles(of(true, |s| s.cpu_us));
        let (_, off_ticks, _) = quartiles(of(false, |s| s.ticks_us));
        let (_, on_ticks, _) = quartiles(of(true, |s| s.ticks_us));
        let jobs = args.jobs.max(1) as f64;
        let (_, off_rate, _) = quartiles(of(false, |s| s.secs).iter().map(|s| jobs / s).collect());
        let (_, on_rate, _) = quartiles(of(true, |s| s.secs).iter().map(|s| jobs / s).collect());
        let (q1, ratio, q3) = quartiles(ratios.clone());
        let verdict = if ratio < TARGET { "met" } else { "NOT met" };
        let line = format!(
            "W9 runner CPU per job: metrics off {off:.1} µs, on {on:.1} µs = {ratio:.3}x (middle half {q1:.2}-{q3:.2}x)"
        );
        progress(&line);
        table.push((
            "W9 runner CPU per job, metrics off / on".into(),
            format!("off {off:.1} µs, on {on:.1} µs"),
            format!(
                "= {ratio:.3}x (middle half {q1:.2}-{q3:.2}x), {} pairs; target under {TARGET}x: {verdict}",
                ratios.len()
            ),
        ));
        table.push((
            "W9 runner rate, metrics off / on".into(),
            format!("{off_rate:.0} / {on_rate:.0} jobs/s"),
            format!(
                "per /proc ticks: off {off_ticks:.1} µs, on {on_ticks:.1} µs = {:.2}x",
                on_ticks / off_ticks
            ),
        ));
        report.insert(
            "runner_cpu_metrics".into(),
            json!({
                "summary": line,
                "jobs": jobs,
                "concurrency": args.concurrency,
                "rounds": rounds,
                "blocks_per_round": BLOCKS,
                "order": "off, on, on, off per block, each slice a runner process of its own",
                "on": "metrics-exporter-prometheus installed before the runner is built, rendered and upkept every second",
                "off": "feature metrics compiled in, no recorder installed",
                "cpu_source": "/proc/PID/task/*/schedstat (ns)",
                "off_cpu_us_per_job": off,
                "on_cpu_us_per_job": on,
                "ratio": ratio,
                "ratio_quartiles": [q1, q3],
                "ratio_of_medians": on / off,
                "target_ratio_below": TARGET,
                "target_met": ratio < TARGET,
                "ticks_off_cpu_us_per_job": off_ticks,
                "ticks_on_cpu_us_per_job": on_ticks,
                "off_jobs_per_s": off_rate,
                "on_jobs_per_s": on_rate,
                "pair_ratios": ratios,
                "slices": slices.iter().map(|s| json!({
                    "metrics": if s.on { "on" } else { "off" },
                    "cpu_us_per_job": s.cpu_us,
                    "ticks_cpu_us_per_job": s.ticks_us,
                    "secs": s.secs,
                    "threads_exited": s.threads_exited,
                })).collect::<Vec<_>>(),
            }),
        );
    }
}

/// jobqueue's side of the side-by-side protocol (`bench_protocol`, which
/// the peers of `bench/peers` speak too). Only the public API: `Client`
/// enqueues, `Runner` runs, with its defaults apart from the queues and the
/// concurrency.
mod protocol {
    use bench_protocol::{
        Delays, Failure, Peer, Target, emit, from_callers, in_batches, now_ns, one_per_ms,
        payload_of, stdin_lines, work_from_go,
    };
    use jobqueue::definition::Job;
    use jobqueue::{CancellationToken, Client, Runner};
    use serde_json::{Value, json};

    use super::{noop, peer_stamp};

    /// Each latency probe's delay, in the latency worker process.
    pub(crate) static DELAYS: Delays = Delays::new();

    /// jobqueue, as a [`Peer`].
    pub(crate) struct Jobqueue;

    /// Connects, after checking that `queue` is where job `T` goes.
    async fn client_for<T: Job>(target: &Target) -> Result<Client, Failure> {
        if target.queue != T::QUEUE {
            return Err(format!(
                "job {} goes to queue {:?}, not {:?}: the queue of a #[job] is fixed at compile time",
                T::NAME,
                T::QUEUE,
                target.queue
            )
            .into());
        }
        Ok(Client::connect(&target.url).await?)
    }

    /// A runner on `queue` with its defaults but the concurrency, and what
    /// it was built with, for bench.json.
    fn runner(client: Client, queue: &str, concurrency: usize) -> Result<(Runner, Value), Failure> {
        let builder = Runner::builder(client)
            .queues([queue])
            .concurrency(concurrency);
        let settings = json!({
            "library": "jobqueue (this workspace)",
            "concurrency": concurrency,
            "runner_builder": format!("{builder:?}"),
        });
        Ok((builder.build()?, settings))
    }

    impl Peer for Jobqueue {
        async fn enqueue_bulk(
            target: &Target,
            jobs: usize,
            batch: usize,
            size: usize,
        ) -> Result<Value, Failure> {
            let client = client_for::<noop>(target).await?;
            let payload = payload_of(size);
            in_batches(jobs, batch, async |n| {
                client
                    .enqueue_many::<noop>((0..n).map(|_| payload.clone()))
                    .await?;
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
            let client = client_for::<noop>(target).await?;
            let payload = payload_of(size);
            from_callers(jobs, callers, |each| {
                let client = client.clone();
                let payload = payload.clone();
                async move {
                    for _ in 0..each {
                        client.enqueue::<noop>(payload.clone()).await?;
                    }
                    Ok(())
                }
            })
            .await
        }

        async fn worker(target: &Target, concurrency: usize) -> Result<(), Failure> {
            let client = client_for::<noop>(target).await?;
            let (runner, settings) = runner(client, &target.queue, concurrency)?;
            work_from_go(settings, None, async move || {
                tokio::spawn(runner.run(CancellationToken::new()));
                Ok(())
            })
            .await
        }

        async fn latency(target: &Target, jobs: usize, concurrency: usize) -> Result<(), Failure> {
            let client = client_for::<peer_stamp>(target).await?;
            DELAYS.want(jobs);
            let (runner, settings) = runner(client, &target.queue, concurrency)?;
            tokio::spawn(runner.run(CancellationToken::new()));
            emit(json!({ "ready": true, "settings": settings }));
            DELAYS.report_when_all_in(stdin_lines(None)).await
        }

        async fn latency_enqueue(target: &Target, jobs: usize) -> Result<Value, Failure> {
            let client = client_for::<peer_stamp>(target).await?;
            one_per_ms(jobs, async || {
                client
                    .enqueue::<peer_stamp>(json!({ "sent_ns": now_ns() }))
                    .await?;
                Ok(())
            })
            .await
        }
    }
}

/// The side-by-side run (`--peers`): jobqueue, bullmq-official and the other
/// peers given (rusty-sidekiq, apalis) on one private Redis, interleaved
/// (the order of the systems rotates by one each round: j,b,s,a / b,s,a,j /
/// s,a,j,b) so drift in the machine (thermal, other load) falls on all,
/// each step a fresh process of the same protocol ([`Mode`]) started the
/// same way, the server flushed before every step so none inherits
/// another's keys (or its own leftovers).
mod peers {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use jobqueue::connection::Connection;
    use jobqueue::queue::{Queue, QueueOptions};
    use jobqueue_tests::{RedisServer, ServerExt};
    use serde_json::{Value, json};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
    use tokio::process::{Child, ChildStdin, ChildStdout, Command};

    use super::{Args, ceiling, info_field, progress, redis_cpu, used_memory};

    /// The queue of the enqueue and processing steps (jobqueue's `noop`).
    const QUEUE: &str = "bench";
    /// The queue of the latency step (jobqueue's `peer_stamp`).
    const LATENCY_QUEUE: &str = "bench-latency";
    /// How often completion is polled while workers run.
    const POLL: Duration = Duration::from_millis(5);
    /// Jobs per `enqueue-bulk` call and callers of `enqueue-single`.
    const BATCH: usize = 1_000;
    const CALLERS: usize = 50;
    /// Idle time before the latency enqueuer starts, so both workers are
    /// parked in their blocking wait, the state latency is about.
    const LATENCY_IDLE: Duration = Duration::from_millis(300);
    /// The name of the reference layout's floor among the medians.
    const FLOOR: &str = "reference_floor";

    /// A system of the comparison: jobqueue (this binary) or a peer.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    pub(crate) enum System {
        Jobqueue,
        Bullmq,
        Sidekiq,
        Apalis,
    }

    impl System {
        /// The peers `--peers` accepts, in the table's column order.
        const PEERS: [System; 3] = [System::Bullmq, System::Sidekiq, System::Apalis];

        fn name(self) -> &'static str {
            match self {
                System::Jobqueue => "jobqueue",
                System::Bullmq => "bullmq",
                System::Sidekiq => "sidekiq",
                System::Apalis => "apalis",
            }
        }

        /// The library measured, for bench.json.
        fn library(self) -> &'static str {
            match self {
                System::Jobqueue => "jobqueue (this workspace)",
                System::Bullmq => "bullmq-official 1.4.4 (bench/peers, its Cargo.lock)",
                System::Sidekiq => "rusty-sidekiq 0.15.2 (bench/peers, its Cargo.lock)",
                System::Apalis => "apalis 1.0.0 + apalis-redis 1.0.0 (bench/peers, its Cargo.lock)",
            }
        }

        /// How its completions are counted while its workers run: one
        /// command per poll for every system whose library records them
        /// in Redis, so polling costs each the same; rusty-sidekiq keeps no
        /// record of a finished job, so its workers count their handler's
        /// returns and answer a `count` line on stdin.
        fn completion_count(self) -> String {
            match self {
                System::Jobqueue => format!("HGET queue:{QUEUE}:stats completed_total"),
                System::Bullmq => format!(
                    "ZCARD bull:{QUEUE}:completed (removeOnComplete left at its default, false)"
                ),
                System::Sidekiq => "each worker process' own count of handler returns, asked with a `count` line on its stdin (rusty-sidekiq keeps no record of completed jobs in Redis)".into(),
                System::Apalis => format!("SCARD {QUEUE}:done (apalis-redis' done set)"),
            }
        }
    }

    /// Parses a `--peers` value: `NAME=PATH`, or a bare PATH for bullmq.
    pub(crate) fn parse_peer(value: &str) -> Result<(System, std::path::PathBuf), String> {
        let Some((name, path)) = value.split_once('=') else {
            return Ok((System::Bullmq, value.into()));
        };
        let system = System::PEERS
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                format!("unknown peer {name:?}: expected one of bullmq, sidekiq, apalis")
            })?;
        Ok((system, path.into()))
    }

    /// One round's figures of one system, by key.
    type Figures = BTreeMap<String, f64>;

    /// What the issue asks of jobqueue / bullmq for a figure.
    #[derive(Clone, Copy, Debug)]
    enum Goal {
        /// No target: shown for context.
        None,
        /// The ratio is at least this.
        AtLeast(f64),
        /// The ratio is at most this.
        AtMost(f64),
        /// The ratio is at most the first, and jobqueue's own figure at
        /// most the second.
        AtMostAndBelow(f64, f64),
    }

    impl Goal {
        fn text(self, unit: &str) -> String {
            match self {
                Goal::None => String::new(),
                Goal::AtLeast(r) => format!(">= {r}x"),
                Goal::AtMost(r) => format!("<= {r}x"),
                Goal::AtMostAndBelow(r, v) => format!("<= {r}x and <= {v} {unit}"),
            }
        }

        fn met(self, jobqueue: f64, ratio: f64) -> Option<bool> {
            match self {
                Goal::None => None,
                Goal::AtLeast(r) => Some(ratio >= r),
                Goal::AtMost(r) => Some(ratio <= r),
                Goal::AtMostAndBelow(r, v) => Some(ratio <= r && jobqueue <= v),
            }
        }
    }

    /// A row of the comparison.
    #[derive(Debug)]
    struct Figure {
        key: String,
        label: String,
        unit: &'static str,
        goal: Goal,
    }

    impl Figure {
        fn new(
            key: impl Into<String>,
            label: impl Into<String>,
            unit: &'static str,
            goal: Goal,
        ) -> Self {
            Self {
                key: key.into(),
                label: label.into(),
                unit,
                goal,
            }
        }
    }

    fn format_value(value: f64, unit: &str) -> String {
        if !value.is_finite() {
            // A step that failed in every round (see "failures").
            return "failed".into();
        }
        match unit {
            "µs/job" => format!("{value:.1} {unit}"),
            "ms" => format!("{value:.2} {unit}"),
            _ => format!("{value:.0} {unit}"),
        }
    }

    fn format_ratio(ratio: f64) -> String {
        if ratio.is_finite() {
            format!("{ratio:.2}x")
        } else {
            "-".into()
        }
    }

    /// Prints `rows` as columns two spaces apart, the columns in `left`
    /// aligned left and the others right.
    fn print_table(rows: &[Vec<String>], left: &[usize]) {
        let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                rows.iter()
                    .map(|r| r.get(c).map_or(0, |cell| cell.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, w))| {
                    if left.contains(&c) {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                })
                .collect();
            println!("{}", cells.join("  ").trim_end());
        }
    }

    /// The processing runs: worker processes x concurrency each.
    fn processing_runs(concurrency: usize) -> [(usize, usize); 3] {
        [(1, concurrency), (2, concurrency), (1, 500)]
    }

    fn processing_key(processes: usize, concurrency: usize, what: &str) -> String {
        format!("processing_{processes}x{concurrency}_{what}")
    }

    /// Every figure, in table order, with the issue's targets.
    fn figures(concurrency: usize) -> Vec<Figure> {
        let mut rows = vec![
            Figure::new(
                "bulk_jobs_per_s",
                format!("bulk enqueue ({BATCH} per call)"),
                "jobs/s",
                Goal::AtLeast(4.0),
            ),
            Figure::new(
                "bulk_redis_cpu_us_per_job",
                "  Redis CPU",
                "µs/job",
                Goal::None,
            ),
            Figure::new(
                "redis_bytes_per_pending_job",
                "  Redis memory per pending job",
                "bytes",
                Goal::None,
            ),
        ];
        for (processes, c) in processing_runs(concurrency) {
            let workers = if processes == 1 { "worker" } else { "workers" };
            rows.push(Figure::new(
                processing_key(processes, c, "jobs_per_s"),
                format!("processing, {processes} {workers} x concurrency {c}"),
                "jobs/s",
                Goal::AtLeast(2.0),
            ));
            rows.push(Figure::new(
                processing_key(processes, c, "redis_cpu_us_per_job"),
                "  Redis CPU",
                "µs/job",
                Goal::AtMostAndBelow(0.33, 25.0),
            ));
            rows.push(Figure::new(
                processing_key(processes, c, "client_cpu_us_per_job"),
                format!("  worker process CPU ({processes} {workers})"),
                "µs/job",
                Goal::AtMost(0.5),
            ));
        }
        rows.extend([
            Figure::new(
                "single_jobs_per_s",
                format!("enqueue one at a time, {CALLERS} callers"),
                "jobs/s",
                Goal::None,
            ),
            Figure::new(
                "single_redis_cpu_us_per_job",
                "  Redis CPU",
                "µs/job",
                Goal::None,
            ),
            Figure::new(
                "latency_p50_ms",
                "enqueue-to-start latency p50, 1 job/ms",
                "ms",
                Goal::AtMost(1.0),
            ),
            Figure::new(
                "latency_p99_ms",
                "enqueue-to-start latency p99, 1 job/ms",
                "ms",
                Goal::AtMost(1.0),
            ),
        ]);
        rows
    }

    /// A worker-mode child: ready line read, then told to go, then killed
    /// (W9's runner processes too).
    pub(crate) struct Worker {
        child: Child,
        stdin: Option<ChildStdin>,
        stdout: Lines<BufReader<ChildStdout>>,
        /// The last line the child wrote on stderr (which is passed on to
        /// this process' stderr line by line), to say why it died.
        last_error: std::sync::Arc<std::sync::Mutex<Option<String>>>,
        pub(crate) pid: u32,
    }

    impl Worker {
        /// Starts `exe args…` and waits for its ready line; returns it too.
        pub(crate) async fn start(exe: &Path, args: &[String]) -> (Self, Value) {
            let mut child = Command::new(exe)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
            let pid = child.id().expect("a running child has a pid");
            let stdin = child.stdin.take();
            let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
            let last_error = std::sync::Arc::new(std::sync::Mutex::new(None));
            let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
            let last = last_error.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = stderr.next_line().await {
                    eprintln!("{line}");
                    *last.lock().expect("last_error lock") = Some(line);
                }
            });
            let mut worker = Self {
                child,
                stdin,
                stdout,
                last_error,
                pid,
            };
            let ready = worker.line(Duration::from_secs(60)).await;
            assert_eq!(
                ready["ready"],
                json!(true),
                "{} {args:?} said {ready} instead of ready",
                exe.display()
            );
            (worker, ready)
        }

        /// The next line of stdout, as JSON.
        pub(crate) async fn line(&mut self, within: Duration) -> Value {
            let line = tokio::time::timeout(within, self.stdout.next_line())
                .await
                .unwrap_or_else(|_| panic!("worker {} said nothing for {within:?}", self.pid))
                .expect("read the worker's stdout")
                .unwrap_or_else(|| panic!("worker {} ended without a line", self.pid));
            serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("worker {} printed {line:?}, not JSON: {e}", self.pid))
        }

        pub(crate) async fn go(&mut self) {
            let stdin = self.stdin.as_mut().expect("stdin kept until the end");
            stdin
                .write_all(b"go\n")
                .await
                .expect("tell the worker to go");
            stdin.flush().await.expect("tell the worker to go");
        }

        /// The worker's own count of completed jobs, for a system whose
        /// library keeps none in Redis (see `System::completion_count`).
        async fn count(&mut self) -> u64 {
            let stdin = self.stdin.as_mut().expect("stdin kept until the end");
            stdin.write_all(b"count\n").await.expect("ask the count");
            stdin.flush().await.expect("ask the count");
            let answer = self.line(Duration::from_secs(10)).await;
            answer["completed"]
                .as_u64()
                .unwrap_or_else(|| panic!("worker {} answered {answer} to count", self.pid))
        }

        /// Whether the process has ended (a worker that stopped on an
        /// error): its exit status and the last line it wrote on stderr.
        async fn exited(&mut self) -> Option<(std::process::ExitStatus, String)> {
            let status = self.child.try_wait().ok().flatten()?;
            // Give the stderr forwarder a moment to read the last words.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let last = self.last_error.lock().expect("last_error lock").clone();
            Some((status, last.unwrap_or_default()))
        }

        pub(crate) async fn stop(mut self) {
            drop(self.stdin.take());
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }

    /// Everything the steps share.
    struct Bench<'a> {
        server: &'a RedisServer,
        url: String,
        /// Each system's binary: this one for jobqueue, the peers' own.
        exes: BTreeMap<System, std::path::PathBuf>,
        jobs: usize,
        payload: usize,
        concurrency: usize,
        latency_jobs: usize,
        clk_tck: f64,
        /// The queue whose stats hash counts jobqueue's completions.
        queue: Queue,
        /// Reads each system's completed count with one command per poll
        /// (see `System::completion_count`).
        raw: redis::aio::MultiplexedConnection,
        /// The settings each system's workers reported, by system and step.
        settings: BTreeMap<&'static str, BTreeMap<String, Value>>,
        /// The steps that failed (a worker process that died), in order:
        /// their figures are left out of the round, and the run goes on.
        failures: Vec<Value>,
        /// The round being run, for `failures`.
        round: usize,
    }

    impl Bench<'_> {
        fn exe(&self, system: System) -> &Path {
            &self.exes[&system]
        }

        fn args(&self, mode: &str, queue: &str, rest: &[(&str, usize)]) -> Vec<String> {
            let mut args = vec![
                mode.to_owned(),
                "--url".into(),
                self.url.clone(),
                "--queue".into(),
                queue.into(),
            ];
            for (flag, value) in rest {
                args.push(format!("--{flag}"));
                args.push(value.to_string());
            }
            args
        }

        fn flush(&self) {
            let reply = self.server.cli(&["FLUSHALL"]);
            assert!(reply.trim() == "OK", "FLUSHALL said {reply:?}");
        }

        /// Runs a one-shot mode to its end; its result line.
        async fn once(&self, system: System, args: &[String]) -> Value {
            let exe = self.exe(system);
            let out = Command::new(exe)
                .args(args)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .output()
                .await
                .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()));
            assert!(
                out.status.success(),
                "{} {args:?} failed: {}",
                exe.display(),
                out.status
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default();
            serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{} {args:?} printed {line:?}, not JSON: {e}", exe.display())
            })
        }

        /// CPU seconds (user + system, all threads) process `pid` has used.
        fn process_cpu(&self, pid: u32) -> f64 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            jobqueue_tests::cpu_ticks_in(&stat) as f64 / self.clk_tck
        }

        /// The completed count of `system` (see `System::completion_count`),
        /// `workers` being the processing run's worker processes.
        async fn completed(&mut self, system: System, workers: &mut [Worker]) -> u64 {
            match system {
                // One command per poll for each system, so polling costs
                // each the same: the counter, not a stats script call.
                System::Jobqueue => redis::cmd("HGET")
                    .arg(self.queue.keys().stats())
                    .arg("completed_total")
                    .query_async::<Option<u64>>(&mut self.raw)
                    .await
                    .expect("HGET")
                    .unwrap_or(0),
                System::Bullmq => redis::cmd("ZCARD")
                    .arg(format!("bull:{QUEUE}:completed"))
                    .query_async(&mut self.raw)
                    .await
                    .expect("ZCARD"),
                System::Apalis => redis::cmd("SCARD")
                    .arg(format!("{QUEUE}:done"))
                    .query_async(&mut self.raw)
                    .await
                    .expect("SCARD"),
                System::Sidekiq => {
                    let mut done = 0;
                    for worker in workers {
                        done += worker.count().await;
                    }
                    done
                }
            }
        }

        /// Notes how a peer said it did a step its library has no API for
        /// (its result line's `api`), with the workers' settings.
        fn note_api(&mut self, system: System, step: &str, out: &Value) {
            if let Some(api) = out.get("api") {
                self.settings
                    .entry(system.name())
                    .or_default()
                    .entry(step.to_owned())
                    .or_insert_with(|| api.clone());
            }
        }

        fn note_settings(&mut self, system: System, step: String, ready: &Value) {
            self.settings
                .entry(system.name())
                .or_default()
                .entry(step)
                .or_insert_with(|| ready["settings"].clone());
        }

        /// Enqueues the jobs of a processing run, untimed.
        async fn fill(&self, system: System) {
            let args = self.args(
                "enqueue-bulk",
                QUEUE,
                &[
                    ("jobs", self.jobs),
                    ("batch", BATCH),
                    ("payload", self.payload),
                ],
            );
            self.once(system, &args).await;
        }

        /// a. Bulk enqueue: rate, Redis CPU and memory per pending job.
        async fn bulk(&mut self, system: System, figures: &mut Figures) {
            self.flush();
            let (memory0, cpu0) = (used_memory(self.server), redis_cpu(self.server));
            let args = self.args(
                "enqueue-bulk",
                QUEUE,
                &[
                    ("jobs", self.jobs),
                    ("batch", BATCH),
                    ("payload", self.payload),
                ],
            );
            let out = self.once(system, &args).await;
            let (cpu1, memory1) = (redis_cpu(self.server), used_memory(self.server));
            self.note_api(system, "enqueue-bulk", &out);
            let jobs = out["jobs"].as_f64().expect("jobs");
            figures.insert(
                "bulk_jobs_per_s".into(),
                jobs / out["elapsed_s"].as_f64().expect("elapsed_s"),
            );
            figures.insert(
                "bulk_redis_cpu_us_per_job".into(),
                (cpu1 - cpu0) * 1e6 / jobs,
            );
            figures.insert(
                "redis_bytes_per_pending_job".into(),
                (memory1 as f64 - memory0 as f64) / jobs,
            );
        }

        /// b, c. Processing the pending jobs with `processes` worker
        /// processes of `concurrency` each: started and ready first, so
        /// the clock and the CPU counters cover processing only.
        async fn process(
            &mut self,
            system: System,
            processes: usize,
            concurrency: usize,
            figures: &mut Figures,
        ) {
            let args = self.args("worker", QUEUE, &[("concurrency", concurrency)]);
            let mut workers = Vec::new();
            for _ in 0..processes {
                let (worker, ready) = Worker::start(self.exe(system), &args).await;
                self.note_settings(system, format!("worker, concurrency {concurrency}"), &ready);
                workers.push(worker);
            }
            assert_eq!(
                self.completed(system, &mut workers).await,
                0,
                "a processing run starts with nothing completed"
            );
            let client0: f64 = workers.iter().map(|w| self.process_cpu(w.pid)).sum();
            let redis0 = redis_cpu(self.server);
            for worker in &mut workers {
                worker.go().await;
            }
            let started = Instant::now();
            loop {
                let mut died = None;
                for worker in &mut workers {
                    if let Some(end) = worker.exited().await {
                        died = Some(end);
                        break;
                    }
                }
                if let Some((status, last_words)) = died {
                    // A peer's worker died: note it with its last stderr
                    // line, leave this run's figures out, go on.
                    let step = format!("processing, {processes} x concurrency {concurrency}");
                    let error = format!(
                        "a worker process ended ({status}) after {:.1} s, before the {} jobs were done; its last stderr line: {last_words}",
                        started.elapsed().as_secs_f64(),
                        self.jobs
                    );
                    progress(&format!("{}: {step}: {error}", system.name()));
                    self.failures.push(json!({
                        "round": self.round, "system": system.name(), "step": step, "error": error,
                    }));
                    for worker in workers {
                        worker.stop().await;
                    }
                    return;
                }
                let done = self.completed(system, &mut workers).await;
                if done as usize >= self.jobs {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(300),
                    "{}: {done} of {} completed after 5 minutes",
                    system.name(),
                    self.jobs
                );
                tokio::time::sleep(POLL).await;
            }
            let secs = started.elapsed().as_secs_f64();
            let client1: f64 = workers.iter().map(|w| self.process_cpu(w.pid)).sum();
            let redis1 = redis_cpu(self.server);
            for worker in workers {
                worker.stop().await;
            }
            let jobs = self.jobs as f64;
            figures.insert(
                processing_key(processes, concurrency, "jobs_per_s"),
                jobs / secs,
            );
            figures.insert(
                processing_key(processes, concurrency, "redis_cpu_us_per_job"),
                (redis1 - redis0) * 1e6 / jobs,
            );
            figures.insert(
                processing_key(processes, concurrency, "client_cpu_us_per_job"),
                (client1 - client0) * 1e6 / jobs,
            );
        }

        /// d. Enqueue one at a time by concurrent callers.
        async fn single(&self, system: System, figures: &mut Figures) {
            self.flush();
            let cpu0 = redis_cpu(self.server);
            let args = self.args(
                "enqueue-single",
                QUEUE,
                &[
                    ("jobs", self.jobs),
                    ("callers", CALLERS),
                    ("payload", self.payload),
                ],
            );
            let out = self.once(system, &args).await;
            let cpu1 = redis_cpu(self.server);
            let jobs = out["jobs"].as_f64().expect("jobs");
            figures.insert(
                "single_jobs_per_s".into(),
                jobs / out["elapsed_s"].as_f64().expect("elapsed_s"),
            );
            figures.insert(
                "single_redis_cpu_us_per_job".into(),
                (cpu1 - cpu0) * 1e6 / jobs,
            );
        }

        /// e. Enqueue-to-start latency with an idle worker, one job per ms.
        async fn latency(&mut self, system: System, figures: &mut Figures) {
            self.flush();
            let args = self.args(
                "latency",
                LATENCY_QUEUE,
                &[("jobs", self.latency_jobs), ("concurrency", 50)],
            );
            let (mut worker, ready) = Worker::start(self.exe(system), &args).await;
            self.note_settings(system, "latency worker, concurrency 50".into(), &ready);
            tokio::time::sleep(LATENCY_IDLE).await;
            let args = self.args(
                "latency-enqueue",
                LATENCY_QUEUE,
                &[("jobs", self.latency_jobs)],
            );
            self.once(system, &args).await;
            let result = worker.line(Duration::from_secs(60)).await;
            worker.stop().await;
            assert_eq!(
                result["n"].as_u64(),
                Some(self.latency_jobs as u64),
                "{}: latency worker said {result}",
                system.name()
            );
            figures.insert(
                "latency_p50_ms".into(),
                result["p50_ms"].as_f64().expect("p50_ms"),
            );
            figures.insert(
                "latency_p99_ms".into(),
                result["p99_ms"].as_f64().expect("p99_ms"),
            );
        }

        /// The reference layout's floor (see `jobqueue_tests::floor`): its
        /// Redis CPU per job for the bulk enqueue and for processing, run
        /// by this process on the same server between the systems' rounds.
        /// Processing claims and completes half the concurrency's jobs per
        /// call with 2 calls in flight, about what one runner does at that
        /// concurrency.
        async fn floor(&self) -> Figures {
            let mut figures = Figures::new();
            let mut conn = self.raw.clone();
            let payload = "x".repeat(self.payload.saturating_sub(10));
            self.flush();
            let cpu0 = redis_cpu(self.server);
            jobqueue_tests::floor::enqueue(&mut conn, self.jobs, BATCH, &payload).await;
            let cpu1 = redis_cpu(self.server);
            let done =
                jobqueue_tests::floor::process(&conn, (self.concurrency / 2).max(1), 2).await;
            let cpu2 = redis_cpu(self.server);
            assert_eq!(done, self.jobs, "the floor processed every job");
            let jobs = self.jobs as f64;
            figures.insert(
                "bulk_redis_cpu_us_per_job".into(),
                (cpu1 - cpu0) * 1e6 / jobs,
            );
            figures.insert(
                processing_key(1, self.concurrency, "redis_cpu_us_per_job"),
                (cpu2 - cpu1) * 1e6 / jobs,
            );
            self.flush();
            figures
        }

        /// One round of every step for one system.
        async fn round(&mut self, system: System) -> Figures {
            let mut figures = Figures::new();
            let who = system.name();
            progress(&format!("{who}: bulk enqueue {} jobs", self.jobs));
            self.bulk(system, &mut figures).await;
            for (n, (processes, concurrency)) in
                processing_runs(self.concurrency).into_iter().enumerate()
            {
                if n > 0 {
                    self.flush();
                    self.fill(system).await;
                }
                progress(&format!(
                    "{who}: processing, {processes} process(es) x concurrency {concurrency}"
                ));
                self.process(system, processes, concurrency, &mut figures)
                    .await;
            }
            progress(&format!("{who}: enqueue one at a time, {CALLERS} callers"));
            self.single(system, &mut figures).await;
            progress(&format!(
                "{who}: latency, {} jobs at one per ms",
                self.latency_jobs
            ));
            self.latency(system, &mut figures).await;
            self.flush();
            figures
        }
    }

    fn median(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => values[n / 2],
            n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        }
    }

    /// Output of `program args…`, trimmed; "unknown" if it cannot run.
    fn output_of(program: &str, args: &[&str]) -> String {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into())
    }

    /// The machine, for bench.json: figures only compare on one machine.
    fn machine(clk_tck: f64, clk_tck_source: &str) -> Value {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_else(|| "unknown".into());
        json!({
            "uname": output_of("uname", &["-a"]),
            "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "cpu_model": cpu_model,
            "clk_tck": clk_tck,
            "clk_tck_source": clk_tck_source,
        })
    }

    /// The jobqueue commit measured, "+dirty" if the tree has changes.
    fn jobqueue_commit() -> String {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let head = output_of("git", &["-C", root, "rev-parse", "HEAD"]);
        let dirty = output_of(
            "git",
            &["-C", root, "status", "--porcelain", "--untracked-files=no"],
        );
        if dirty.is_empty() || dirty == "unknown" {
            head
        } else {
            format!("{head}+dirty")
        }
    }

    pub(crate) async fn run(args: &Args) {
        let mut exes = BTreeMap::new();
        for (system, path) in &args.peers {
            assert!(
                path.is_file(),
                "{} ({}) is not a file: build it with `cargo build --release --manifest-path bench/peers/Cargo.toml --target-dir target/peers` (scripts/bench --peers does)",
                path.display(),
                system.name()
            );
            assert!(
                exes.insert(*system, path.clone()).is_none(),
                "--peers names {} twice",
                system.name()
            );
        }
        assert!(
            exes.contains_key(&System::Bullmq),
            "--peers needs bullmq=PATH: the table's targets are against bullmq"
        );
        // jobqueue first, then the peers in the table's column order.
        let systems: Vec<System> = std::iter::once(System::Jobqueue)
            .chain(System::PEERS.into_iter().filter(|s| exes.contains_key(s)))
            .collect();
        let others: Vec<System> = systems
            .iter()
            .copied()
            .filter(|s| !matches!(s, System::Jobqueue | System::Bullmq))
            .collect();
        exes.insert(System::Jobqueue, std::env::current_exe().expect("own path"));
        let (clk_tck, clk_tck_source) = match output_of("getconf", &["CLK_TCK"]).parse::<f64>() {
            Ok(t) if t > 0.0 => (t, "getconf CLK_TCK"),
            _ => (100.0, "assumed (getconf CLK_TCK failed)"),
        };
        let server = RedisServer::start();
        let url = server.url();
        progress("ceiling: redis-benchmark");
        let ceiling = ceiling(server.port());
        let lpush = ceiling
            .iter()
            .find(|(n, _)| n == "LPUSH")
            .map_or(f64::NAN, |(_, r)| *r);
        let conn = Connection::connect(url.as_str()).await.expect("connect");
        let raw = redis::Client::open(url.as_str())
            .expect("redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let mut bench = Bench {
            server: &server,
            url: url.clone(),
            exes,
            jobs: args.jobs,
            payload: args.payload,
            concurrency: args.concurrency,
            latency_jobs: args.latency_jobs,
            clk_tck,
            queue: Queue::new_with(&conn, QUEUE, QueueOptions::new()).expect("queue"),
            raw,
            settings: BTreeMap::new(),
            failures: Vec::new(),
            round: 0,
        };
        bench.flush();

        let rounds_wanted = args.rounds.max(1);
        let mut rounds = Vec::new();
        let mut samples: BTreeMap<&str, Vec<Figures>> = BTreeMap::new();
        for round in 1..=rounds_wanted {
            bench.round = round;
            // Each round starts one system later than the one before.
            let mut order = systems.clone();
            order.rotate_left((round - 1) % systems.len());
            let mut this = serde_json::Map::new();
            this.insert("round".into(), json!(round));
            this.insert(
                "order".into(),
                json!(order.iter().map(|s| s.name()).collect::<Vec<_>>()),
            );
            for system in order {
                progress(&format!("round {round}/{rounds_wanted}: {}", system.name()));
                let figures = bench.round(system).await;
                this.insert(system.name().into(), json!(figures));
                samples.entry(system.name()).or_default().push(figures);
            }
            progress(&format!(
                "round {round}/{rounds_wanted}: the reference layout's floor"
            ));
            let figures = bench.floor().await;
            this.insert(FLOOR.into(), json!(figures));
            samples.entry(FLOOR).or_default().push(figures);
            rounds.push(Value::Object(this));
        }
        let medians: BTreeMap<&str, Figures> = samples
            .iter()
            .map(|(system, runs)| {
                let keys = runs
                    .iter()
                    .flat_map(|f| f.keys().cloned())
                    .collect::<std::collections::BTreeSet<_>>();
                let m = keys
                    .into_iter()
                    .map(|k| {
                        let values = runs.iter().filter_map(|f| f.get(&k).copied()).collect();
                        (k, median(values))
                    })
                    .collect();
                (*system, m)
            })
            .collect();

        // The table and its JSON twin: the first five columns are jobqueue
        // against bullmq with the issue's targets; each other peer adds its
        // figure and jobqueue's ratio to it.
        let get = |system: System, key: &str| {
            medians
                .get(system.name())
                .and_then(|m| m.get(key))
                .copied()
                .unwrap_or(f64::NAN)
        };
        let mut header: Vec<String> = vec![
            "figure (median of rounds)".into(),
            "jobqueue".into(),
            "bullmq".into(),
            "jobqueue/bullmq".into(),
            "target".into(),
        ];
        for other in &others {
            header.push(other.name().into());
            header.push(format!("jobqueue/{}", other.name()));
        }
        let mut rows: Vec<Vec<String>> = vec![header];
        let mut comparison = Vec::new();
        for figure in figures(args.concurrency) {
            let (j, b) = (
                get(System::Jobqueue, &figure.key),
                get(System::Bullmq, &figure.key),
            );
            let ratio = j / b;
            let met = figure.goal.met(j, ratio);
            let verdict = match met {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "",
            };
            let mut row = vec![
                figure.label.clone(),
                format_value(j, figure.unit),
                format_value(b, figure.unit),
                format_ratio(ratio),
                format!("{} {verdict}", figure.goal.text(figure.unit))
                    .trim()
                    .to_owned(),
            ];
            let mut entry = json!({
                "key": figure.key, "figure": figure.label.trim(), "unit": figure.unit,
                "jobqueue": j, "bullmq": b, "ratio": ratio,
                "target": figure.goal.text(figure.unit), "pass": met,
            });
            for other in &others {
                let o = get(*other, &figure.key);
                row.push(format_value(o, figure.unit));
                row.push(format_ratio(j / o));
                entry[other.name()] = json!(o);
                entry[format!("jobqueue_over_{}", other.name())] = json!(j / o);
            }
            rows.push(row);
            comparison.push(entry);
        }
        let (j, b) = (
            get(System::Jobqueue, "single_jobs_per_s"),
            get(System::Bullmq, "single_jobs_per_s"),
        );
        let met = j / lpush >= 0.8;
        let mut row = vec![
            format!("  vs redis-benchmark LPUSH -c 50 ({lpush:.0}/s)"),
            format!("{:.2}x LPUSH", j / lpush),
            format!("{:.2}x LPUSH", b / lpush),
            String::new(),
            format!(
                "jobqueue >= 0.8x LPUSH {}",
                if met { "PASS" } else { "MISS" }
            ),
        ];
        let mut entry = json!({
            "key": "single_vs_lpush", "figure": "enqueue one at a time vs redis-benchmark LPUSH -c 50",
            "unit": "x LPUSH", "jobqueue": j / lpush, "bullmq": b / lpush, "lpush_ops_per_s": lpush,
            "target": "jobqueue >= 0.8x LPUSH", "pass": met,
        });
        for other in &others {
            let o = get(*other, "single_jobs_per_s");
            row.push(format!("{:.2}x LPUSH", o / lpush));
            row.push(String::new());
            entry[other.name()] = json!(o / lpush);
        }
        rows.push(row);
        comparison.push(entry);

        println!();
        print_table(&rows, &[0, 4]);

        // The floor: what the reference layout itself costs Redis.
        let floor_rows = [
            (
                "bulk_redis_cpu_us_per_job".to_owned(),
                format!("bulk enqueue ({BATCH} per call)"),
            ),
            (
                processing_key(1, args.concurrency, "redis_cpu_us_per_job"),
                format!("processing, concurrency {}", args.concurrency),
            ),
        ];
        println!(
            "\nRedis CPU floor of the reference layout: its own commands only, batched, no checks or fencing sets (tests/src/floor.rs)"
        );
        let mut header: Vec<String> = vec![
            "Redis CPU per job".into(),
            "floor".into(),
            "floor/bullmq".into(),
            "jobqueue/floor".into(),
        ];
        for other in &others {
            header.push(format!("floor/{}", other.name()));
        }
        let mut table = vec![header];
        let mut floor = Vec::new();
        for (key, label) in floor_rows {
            let f = medians
                .get(FLOOR)
                .and_then(|m| m.get(&key))
                .copied()
                .unwrap_or(f64::NAN);
            let (j, b) = (get(System::Jobqueue, &key), get(System::Bullmq, &key));
            let mut row = vec![
                label.clone(),
                format_value(f, "µs/job"),
                format_ratio(f / b),
                format_ratio(j / f),
            ];
            let mut entry = json!({
                "key": key, "figure": label, "unit": "µs/job", "floor": f,
                "floor_over_bullmq": f / b, "jobqueue_over_floor": j / f,
            });
            for other in &others {
                let o = get(*other, &key);
                row.push(format_ratio(f / o));
                entry[format!("floor_over_{}", other.name())] = json!(f / o);
            }
            table.push(row);
            floor.push(entry);
        }
        print_table(&table, &[0]);

        if !bench.failures.is_empty() {
            println!(
                "\nfailed steps (left out of the medians; \"failed\" above: every round failed):"
            );
            for failure in &bench.failures {
                println!(
                    "  round {}, {}, {}: {}",
                    failure["round"],
                    failure["system"].as_str().unwrap_or_default(),
                    failure["step"].as_str().unwrap_or_default(),
                    failure["error"].as_str().unwrap_or_default()
                );
            }
        }

        let completion_count: serde_json::Map<String, Value> = systems
            .iter()
            .map(|s| (s.name().to_owned(), json!(s.completion_count())))
            .collect();
        let libraries: serde_json::Map<String, Value> = systems
            .iter()
            .map(|s| (s.name().to_owned(), json!(s.library())))
            .collect();
        let report = json!({
            "date": output_of("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            "machine": machine(clk_tck, clk_tck_source),
            "redis_version": info_field(&server, "server", "redis_version"),
            "jobqueue_commit": jobqueue_commit(),
            "bullmq": System::Bullmq.library(),
            "libraries": libraries,
            "settings": {
                "jobs": args.jobs,
                "payload_bytes": args.payload,
                "bulk_batch": BATCH,
                "single_callers": CALLERS,
                "processing_runs": processing_runs(args.concurrency).map(|(p, c)| json!({ "processes": p, "concurrency": c })),
                "latency_jobs": args.latency_jobs,
                "latency_rate": "one job per ms, one enqueue call at a time (tokio interval, MissedTickBehavior::Burst)",
                "latency_idle_ms": LATENCY_IDLE.as_millis() as u64,
                "completion_poll_ms": POLL.as_millis() as u64,
                "completion_count": completion_count,
                "rounds": rounds_wanted,
                "order": "the systems' order rotates by one each round",
                "redis": "one private redis-server, persistence off, FLUSHALL before every step",
                "workers": bench.settings,
            },
            "ceiling_ops_per_s": ceiling.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "rounds": rounds,
            "median": medians,
            "comparison": comparison,
            "reference_floor": floor,
            "failures": bench.failures,
        });
        // Other keys (the W1..W6 suite's) are kept: the two runs are separate.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench.json");
        let mut whole = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|v| match v {
                Value::Object(map) => Some(map),
                _ => None,
            })
            .unwrap_or_default();
        whole.insert("peers".into(), report);
        let _ = std::fs::create_dir_all(path.parent().expect("dir"));
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&Value::Object(whole)).expect("json"),
        )
        .expect("write bench.json");
        println!("\nwrote {} (key \"peers\")", path.display());
    }
}
