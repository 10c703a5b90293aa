//! Run with: `scripts/bench` (or `cargo run --release -p jobqueue-tests --bin jobqueue-bench -- --help`).
//!
//! Measures jobqueue against a private `redis-server` (persistence off) and
//! against the ceiling of the same machine in the same run (`redis-benchmark`
//! for LPUSH, LMOVE and a trivial EVALSHA): enqueue rates (W1), processing
//! rates (W2), enqueue-to-start latency (W3), the sweep (W4) and the cost per
//! job in Redis commands, Redis CPU and memory (W5), and one hot queue on a
//! private three-primary cluster in 1, 3 and 6 shards (W6). Prints a table
//! and writes `target/bench.json`.

use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use jobqueue::client::EnqueueOptions;
use jobqueue::connection::Connection;
use jobqueue::queue::{NewJob, Queue, QueueOptions};
use jobqueue::{Client, JobContext, Runner, job};
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
    let args = Args::parse();
    if let Some(url) = &args.worker {
        return worker(url, args.concurrency).await;
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
            let mut left = args.jobs;
            while left > 0 {
                let n = left.min(1000);
                client
                    .enqueue_many::<noop>((0..n).map(|_| payload.clone()))
                    .await
                    .expect("enqueue");
                left -= n;
            }
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

    println!();
    let width = table.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    for (name, value, ratio) in &table {
        println!("{name:width$}  {value:40}  {ratio}");
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench.json");
    let _ = std::fs::create_dir_all(path.parent().expect("dir"));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&Value::Object(report)).expect("json"),
    )
    .expect("write bench.json");
    println!("\nwrote {}", path.display());
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
