//! The Runner against a private Redis: dispatch and outcomes, concurrency
//! limits, leases, retries with backoff, delays, shutdown, Redis restarts.
//! Every test but the two that restart or kill a single server (a cluster's
//! equivalent is the failover test in cluster.rs) runs on a single server
//! and on a three-primary cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jobqueue::client::EnqueueOptions;
use jobqueue::queue::{JobStatus, NewJob, QueueOptions};
use jobqueue::registry::Registry;
use jobqueue::{Client, JobContext, JobError, Runner, job};
use jobqueue_tests::*;
use serde_json::json;

/// Handler executions, by test key: each test makes its keys with
/// `unique_key` and carries them in its payloads, so tests running side by
/// side in one process (`cargo test`) never count each other's runs.
static RUNS: Mutex<Vec<(String, Instant)>> = Mutex::new(Vec::new());
/// `occupy` handlers running now, by test key.
static RUNNING: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());
/// The most `occupy` handlers that ran at once, by test key.
static MAX_RUNNING: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn record(key: &str) {
    RUNS.lock().unwrap().push((key.to_owned(), Instant::now()));
}

fn runs(key: &str) -> Vec<Instant> {
    RUNS.lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, t)| *t)
        .collect()
}

#[job(queue = "rt-basic")]
async fn double(n: u64) -> Result<u64, String> {
    Ok(n * 2)
}

#[job(queue = "rt-limit")]
async fn occupy(args: (String, u64)) {
    {
        let mut running = RUNNING.lock().unwrap();
        let now = running.entry(args.0.clone()).or_default();
        *now += 1;
        let mut max = MAX_RUNNING.lock().unwrap();
        let entry = max.entry(args.0.clone()).or_default();
        *entry = (*entry).max(*now);
    }
    tokio::time::sleep(Duration::from_millis(args.1)).await;
    *RUNNING.lock().unwrap().get_mut(&args.0).unwrap() -= 1;
}

#[job(queue = "rt-faults", max_attempts = 2, backoff = "none")]
async fn panics_once(key: String, ctx: JobContext) -> Result<String, String> {
    record(&key);
    if ctx.attempt() == 1 {
        panic!("boom on the first attempt");
    }
    Ok("recovered".into())
}

#[job(queue = "rt-faults", max_attempts = 1, timeout = "200ms")]
async fn overruns(key: String, ctx: JobContext) {
    record(&key);
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(30)) => record(&format!("{key}-slept")),
        () = ctx.cancelled() => record(&format!("{key}-cancelled")),
    }
}

#[job(queue = "rt-faults", max_attempts = 5)]
async fn refuses(key: String, ctx: JobContext) -> Result<(), JobError> {
    record(&key);
    if key.starts_with("permanent") {
        return Err(JobError::permanent("bad input"));
    }
    if ctx.attempt() == 1 {
        return Err(JobError::retry_after("busy", Duration::from_millis(400)));
    }
    Ok(())
}

#[job(queue = "rt-faults", max_attempts = 3, backoff = "fixed(250ms)")]
async fn always_fails(key: String) -> Result<(), String> {
    record(&key);
    Err(format!("{key} failed"))
}

/// The lease of `long_running`. It is what the test is about, yet a whole
/// second: a test process starved of CPU for a third of it (a renewal tick)
/// is common on a loaded machine, for all of it rare.
const LONG_RUNNING_LEASE: Duration = Duration::from_secs(1);

#[job(queue = "rt-time", visibility = "1s")]
async fn long_running(key: String) {
    record(&key);
    tokio::time::sleep(LONG_RUNNING_LEASE * 10).await;
}

/// Its first run waits until the runner tells it to stop (here only a lost
/// lease does), notes that it was told, and returns a result that must never
/// be stored; later runs return the real one.
#[job(
    queue = "rt-lease",
    visibility = "3s",
    max_attempts = 3,
    backoff = "none"
)]
async fn outlives_its_lease(key: String, ctx: JobContext) -> String {
    record(&format!("{key}:attempt-{}", ctx.attempt()));
    if ctx.attempt() == 1 {
        ctx.cancelled().await;
        record(&format!("{key}:cancelled"));
        return "stale".into();
    }
    "fresh".into()
}

#[job(queue = "rt-time")]
async fn stamp(key: String) {
    record(&key);
}

#[job(queue = "rt-shutdown")]
async fn slow(millis: u64) {
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

#[job(queue = "rt-many")]
async fn count(key: String, ctx: JobContext) {
    record(&format!("{key}:{}", ctx.id()));
}

async fn client(server: &RedisServer) -> Client {
    Client::connect(&server.url()).await.unwrap()
}

async fn the_runner_dispatches_by_name_and_stores_results(redis: TestRedis) {
    let client = redis.client().await;
    let handles = client.enqueue_many::<double>(1..=20).await.unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["rt-basic"])
        .concurrency(5)
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    for (n, handle) in (1..=20).zip(&handles) {
        assert_eq!(handle.wait(Duration::from_secs(10)).await.unwrap(), n * 2);
    }
    stop_runner(token, task).await;
    let stats = client.queue("rt-basic").unwrap().stats().await.unwrap();
    assert_eq!(
        (
            stats.completed_total,
            stats.pending_depth,
            stats.processing_depth
        ),
        (20, 0, 0)
    );
}

async fn at_most_n_handlers_run_at_once_and_jobs_wait_in_pending_not_processing(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("global");
    client
        .enqueue_many::<occupy>((0..24).map(|_| (key.clone(), 60)))
        .await
        .unwrap();
    let q = client.queue("rt-limit").unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["rt-limit"])
        .concurrency(4)
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let most_processing = std::sync::atomic::AtomicU64::new(0);
    let done = eventually(Duration::from_secs(20), || async {
        let s = q.stats().await.unwrap();
        most_processing.fetch_max(s.processing_depth, Ordering::SeqCst);
        s.completed_total == 24
    })
    .await;
    let most_processing = most_processing.into_inner();
    assert!(done, "all jobs completed");
    stop_runner(token, task).await;
    let max_running = MAX_RUNNING.lock().unwrap()[&key];
    assert_eq!(max_running, 4, "four ran at once, never more");
    assert!(
        most_processing <= 4,
        "a job waited in processing for a slot: {most_processing}"
    );
}

async fn a_queue_limit_caps_that_queue_within_the_global_limit(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("per-queue");
    client
        .enqueue_many::<occupy>((0..12).map(|_| (key.clone(), 60)))
        .await
        .unwrap();
    let q = client.queue("rt-limit").unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["rt-limit"])
        .concurrency(10)
        .queue_concurrency("rt-limit", 2)
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    assert!(stats_reach(&q, Duration::from_secs(20), |s| s.completed_total == 12).await);
    stop_runner(token, task).await;
    let max_running = MAX_RUNNING.lock().unwrap()[&key];
    assert_eq!(max_running, 2);
}

async fn a_panic_is_caught_and_retried_and_the_runner_keeps_going(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("panic");
    let handle = client.enqueue::<panics_once>(key.clone()).await.unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["rt-faults"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    assert_eq!(
        handle.wait(Duration::from_secs(10)).await.unwrap(),
        "recovered"
    );
    stop_runner(token, task).await;
    assert_eq!(runs(&key).len(), 2);
    let record = handle.record().await.unwrap().unwrap();
    assert!(
        record
            .last_error()
            .unwrap()
            .contains("panicked: boom on the first attempt")
    );
}

async fn a_job_past_its_timeout_is_cancelled_and_fails(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("timeout");
    let handle = client.enqueue::<overruns>(key.clone()).await.unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["rt-faults"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    match handle.wait(Duration::from_secs(10)).await {
        Err(jobqueue::Error::JobFailed { error, .. }) => {
            assert_eq!(error, "timed out after 200 ms")
        }
        other => panic!("expected a timeout failure, got {other:?}"),
    }
    stop_runner(token, task).await;
    assert_eq!(runs(&key).len(), 1);
    // The handler itself was told: its `ctx.cancelled()` fired while it ran,
    // before the failure was written, and it never slept its 30 s out.
    assert_eq!(
        runs(&format!("{key}-cancelled")).len(),
        1,
        "the handler's context was not cancelled while it ran"
    );
    assert!(runs(&format!("{key}-slept")).is_empty());
}

/// The runner loses a lease mid-run: the lease is taken away in Redis and a
/// sweep takes the job back. The runner's next renewal is refused, so it
/// cancels the run (the handler sees `ctx.cancelled()`), writes nothing for
/// it, and the job runs again.
async fn a_run_whose_lease_is_lost_is_cancelled_and_its_outcome_never_written(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("lost-lease");
    let q = client.queue("rt-lease").unwrap();
    let handle = client
        .enqueue::<outlives_its_lease>(key.clone())
        .await
        .unwrap();
    let id = handle.id().to_owned();
    // One slot: the second run cannot start before the stale run has ended,
    // whatever it wrote. Only this test sweeps.
    let runner = Runner::builder(client.clone())
        .queues(["rt-lease"])
        .concurrency(1)
        .auto_sweep(false)
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    assert!(
        eventually(Duration::from_secs(10), || async {
            runs(&format!("{key}:attempt-1")).len() == 1
        })
        .await,
        "the first run started"
    );
    // Once back in pending the job stays there, so the state the stale run
    // leaves can be seen before the job runs again.
    q.pause().await.unwrap();
    let claim_token = handle
        .record()
        .await
        .unwrap()
        .unwrap()
        .field("claim_token")
        .unwrap()
        .to_owned();
    assert_eq!(claim_token.len(), 16);
    let c = redis.conn().await;
    // The lease runs out (its deadline moves to the past; XX: only while the
    // claim holds one) and a sweep takes the job back. A renewal landing in
    // between puts the deadline back; then both happen again.
    let lease = format!("{id}:{claim_token}");
    let swept = eventually(Duration::from_secs(10), || {
        let (q, mut c, lease, id) = (&q, c.clone(), &lease, &id);
        async move {
            let _: i64 = redis::cmd("ZADD")
                .arg(q.keys().leases())
                .arg("XX")
                .arg(0)
                .arg(lease)
                .query_async(&mut c)
                .await
                .unwrap();
            q.reclaim_expired().await.unwrap().reclaimed == [id.clone()]
        }
    })
    .await;
    assert!(swept, "a sweep took the job back");
    assert!(
        eventually(Duration::from_secs(20), || async {
            runs(&format!("{key}:cancelled")).len() == 1
        })
        .await,
        "the stale run's ctx.cancelled() never fired"
    );
    // The stale run returned "stale" and ended; none of it reached Redis.
    let record = handle.record().await.unwrap().unwrap();
    assert_eq!(
        (
            record.status(),
            record.attempts().unwrap(),
            record.field("result")
        ),
        (Some(JobStatus::Pending), 1, None)
    );
    assert_eq!(q.stats().await.unwrap().completed_total, 0);
    q.resume().await.unwrap();
    assert_eq!(handle.wait(Duration::from_secs(20)).await.unwrap(), "fresh");
    stop_runner(token, task).await;
    assert_eq!(runs(&format!("{key}:attempt-1")).len(), 1);
    assert_eq!(runs(&format!("{key}:attempt-2")).len(), 1, "ran again");
    let record = handle.record().await.unwrap().unwrap();
    assert_eq!(
        (record.status(), record.attempts().unwrap()),
        (Some(JobStatus::Completed), 2)
    );
    assert_eq!(record.result::<String>().unwrap().as_deref(), Some("fresh"));
    assert!(record.field("reclaimed_at_ms").is_some());
    let s = q.stats().await.unwrap();
    assert_eq!(
        (
            s.completed_total,
            s.reclaimed_total,
            s.failed_total,
            s.retried_total
        ),
        (1, 1, 0, 0)
    );
}

async fn handlers_choose_permanent_failure_or_a_retry_delay(redis: TestRedis) {
    let client = redis.client().await;
    let (permanent_key, later_key) = (unique_key("permanent"), unique_key("later"));
    let permanent = client
        .enqueue::<refuses>(permanent_key.clone())
        .await
        .unwrap();
    let later = client.enqueue::<refuses>(later_key.clone()).await.unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["rt-faults"])
        .sweep_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    assert!(matches!(
        permanent.wait(Duration::from_secs(10)).await,
        Err(jobqueue::Error::JobFailed { .. })
    ));
    later.wait(Duration::from_secs(10)).await.unwrap();
    stop_runner(token, task).await;
    assert_eq!(
        runs(&permanent_key).len(),
        1,
        "a permanent failure is not retried"
    );
    let times = runs(&later_key);
    assert_eq!(times.len(), 2);
    assert!(
        times[1] - times[0] >= Duration::from_millis(400),
        "retried after {:?}",
        times[1] - times[0]
    );
}

async fn retries_wait_out_the_backoff_then_end_in_failed(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("backoff");
    let handle = client.enqueue::<always_fails>(key.clone()).await.unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["rt-faults"])
        .sweep_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let err = handle.wait(Duration::from_secs(10)).await.unwrap_err();
    stop_runner(token, task).await;
    assert!(err.to_string().contains(&format!("{key} failed")), "{err}");
    let times = runs(&key);
    assert_eq!(times.len(), 3, "max_attempts = 3");
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(250),
            "backoff skipped: {:?}",
            pair[1] - pair[0]
        );
    }
    let record = handle.record().await.unwrap().unwrap();
    assert_eq!(
        (record.status(), record.attempts().unwrap()),
        (Some(JobStatus::Failed), 3)
    );
}

async fn a_delayed_job_never_starts_before_its_time(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("delay");
    let enqueued = Instant::now();
    let handle = client
        .enqueue_with::<stamp>(
            key.clone(),
            EnqueueOptions::new().delay(Duration::from_millis(700)),
        )
        .await
        .unwrap();
    assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Scheduled));
    let q = client.queue("rt-time").unwrap();
    assert_eq!(
        q.list_scheduled(0..10).await.unwrap(),
        vec![handle.id().to_owned()]
    );
    let runner = Runner::builder(client.clone())
        .queues(["rt-time"])
        .sweep_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    handle.wait(Duration::from_secs(10)).await.unwrap();
    stop_runner(token, task).await;
    let started = runs(&key)[0];
    assert!(
        started - enqueued >= Duration::from_millis(700),
        "started after {:?}",
        started - enqueued
    );
}

async fn a_job_running_ten_times_its_visibility_keeps_its_lease_and_runs_once(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("lease");
    let handle = client.enqueue::<long_running>(key.clone()).await.unwrap();
    // A second runner sweeps too: neither may take the job while it runs.
    let runners: Vec<_> = (0..2)
        .map(|_| {
            Runner::builder(client.clone())
                .queues(["rt-time"])
                .sweep_interval(Duration::from_millis(50))
                .build()
                .unwrap()
        })
        .map(start_runner)
        .collect();
    handle.wait(Duration::from_secs(60)).await.unwrap();
    for (token, task) in runners {
        stop_runner(token, task).await;
    }
    assert_eq!(runs(&key).len(), 1);
    let stats = client.queue("rt-time").unwrap().stats().await.unwrap();
    assert_eq!(stats.reclaimed_total, 0);
}

/// `n` `slow` jobs of `millis` each, all running on a runner with room for
/// exactly `n` and `shutdown_timeout`; returns once every one is claimed.
async fn all_running(
    redis: &TestRedis,
    n: usize,
    millis: u64,
    shutdown_timeout: Duration,
) -> (
    jobqueue::queue::Queue,
    jobqueue::CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let client = redis.client().await;
    let q = client.queue("rt-shutdown").unwrap();
    client
        .enqueue_many::<slow>((0..n).map(|_| millis))
        .await
        .unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["rt-shutdown"])
        .concurrency(n)
        .shutdown_timeout(shutdown_timeout)
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let all = stats_reach(&q, Duration::from_secs(10), |s| {
        s.processing_depth == n as u64
    })
    .await;
    assert!(all, "all {n} jobs running");
    (q, token, task)
}

async fn shutdown_hands_unfinished_jobs_back_without_charging_the_attempt(redis: TestRedis) {
    let (q, token, task) = all_running(&redis, 50, 60_000, Duration::from_millis(300)).await;
    let stopping = Instant::now();
    stop_runner(token, task).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "run returned after {:?}",
        stopping.elapsed()
    );
    let s = q.stats().await.unwrap();
    assert_eq!(
        (
            s.pending_depth,
            s.processing_depth,
            s.completed_total,
            s.failed_total
        ),
        (50, 0, 0, 0)
    );
    for id in q.list_pending(0..50).await.unwrap() {
        assert_eq!(
            q.get_job(&id).await.unwrap().unwrap().attempts().unwrap(),
            0,
            "no attempt charged"
        );
    }
}

async fn shutdown_lets_running_jobs_finish_within_the_timeout(redis: TestRedis) {
    let (q, token, task) = all_running(&redis, 10, 300, Duration::from_secs(10)).await;
    stop_runner(token, task).await;
    let s = q.stats().await.unwrap();
    assert_eq!(
        (s.completed_total, s.pending_depth, s.processing_depth),
        (10, 0, 0)
    );
}

async fn two_runners_on_10000_jobs_never_run_a_job_twice(redis: TestRedis) {
    let client_a = redis.client().await;
    let client_b = redis.client().await;
    let q = client_a.queue("rt-many").unwrap();
    let key = unique_key("many");
    for chunk in 0..10 {
        client_a
            .enqueue_many::<count>((0..1000).map(|_| format!("{key}-{chunk}")))
            .await
            .unwrap();
    }
    let runners: Vec<_> = [client_a.clone(), client_b]
        .into_iter()
        .map(|c| {
            Runner::builder(c)
                .queues(["rt-many"])
                .concurrency(20)
                .build()
                .unwrap()
        })
        .map(start_runner)
        .collect();
    assert!(stats_reach(&q, Duration::from_secs(60), |s| s.completed_total == 10_000).await);
    for (token, task) in runners {
        stop_runner(token, task).await;
    }
    let mut per_job: HashMap<String, usize> = HashMap::new();
    let prefix = format!("{key}-");
    for (run, _) in RUNS.lock().unwrap().iter() {
        if run.starts_with(&prefix) {
            *per_job.entry(run.clone()).or_default() += 1;
        }
    }
    assert_eq!(per_job.len(), 10_000, "every job ran");
    assert!(per_job.values().all(|&n| n == 1), "a job ran twice");
}

#[tokio::test]
async fn the_runner_rides_out_a_redis_restart() {
    let mut server = RedisServer::start();
    let client = client(&server).await;
    let q = client.queue("rt-basic").unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["rt-basic"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let first = client.enqueue::<double>(1).await.unwrap();
    assert_eq!(first.wait(Duration::from_secs(10)).await.unwrap(), 2);
    server.restart();
    let second = client.enqueue::<double>(2).await.unwrap();
    assert_eq!(second.wait(Duration::from_secs(20)).await.unwrap(), 4);
    stop_runner(token, task).await;
    assert_eq!(q.stats().await.unwrap().completed_total, 2);
}

async fn a_job_no_handler_can_run_fails_at_once_with_the_reason(redis: TestRedis) {
    let (_redis, q, mut c) = setup_on(&redis, "rt-faults", QueueOptions::new()).await;
    let client = Client::new(q.connection());
    reference_enqueue_at(&mut c, q.keys(), "00000000000000aa", r#"{"kind": "fax"}"#).await;
    let bad = q
        .submit(NewJob::new(&json!("x")).unwrap().name("always_fails"))
        .await
        .unwrap();
    let runner = Runner::builder(client)
        .queues(["rt-faults"])
        .sweep_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    assert!(stats_reach(&q, Duration::from_secs(10), |s| s.failed_total >= 1).await);
    // `bad` has a handler: it fails and is retried (its second attempt, after
    // the 250 ms backoff), unlike the job nobody can run.
    let retried = eventually(Duration::from_secs(10), || async {
        q.get_job(&bad)
            .await
            .unwrap()
            .is_some_and(|r| r.attempts().unwrap() >= 2)
    })
    .await;
    stop_runner(token, task).await;
    assert!(retried, "{:?}", q.get_job(&bad).await.unwrap());
    let record = q.get_job("00000000000000aa").await.unwrap().unwrap();
    assert_eq!(
        (record.status(), record.attempts().unwrap()),
        (Some(JobStatus::Failed), 1)
    );
    assert!(
        record
            .last_error()
            .unwrap()
            .contains("payload kind \"fax\" names no job")
    );
    // The payload of `bad` is a string, as always_fails expects: it is retried.
    assert!(q.get_job(&bad).await.unwrap().is_some());
    let bad = q.get_job(&bad).await.unwrap().unwrap();
    assert_eq!(bad.last_error(), Some("x failed"), "{bad:?}");
}

#[test]
fn build_validates_the_configuration() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = RedisServer::start();
        let client = client(&server).await;
        let err = Runner::builder(client.clone())
            .concurrency(0)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("concurrency"), "{err}");
        let err = Runner::builder(client.clone())
            .queues(["bad queue"])
            .build()
            .unwrap_err();
        assert!(matches!(err, jobqueue::Error::InvalidName { .. }), "{err}");
        let runner = Runner::builder(client).build().unwrap();
        let mut served: Vec<&str> = runner.queues().collect();
        served.sort_unstable();
        assert_eq!(
            served,
            [
                "rt-basic",
                "rt-faults",
                "rt-lease",
                "rt-limit",
                "rt-many",
                "rt-shutdown",
                "rt-time",
                "rt-trickle"
            ]
        );
        assert!(Registry::from_inventory().unwrap().get("double").is_some());
    });
}

#[test]
fn the_runner_survives_killed_connections_and_waits_out_an_outage_without_spinning() {
    // The runner's tasks run on threads named for this test, so the CPU
    // they use is told apart from that of tests running beside it.
    const THREADS: &str = "outage-runtime";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name(THREADS)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(killed_connections_and_an_outage(THREADS));
}

async fn killed_connections_and_an_outage(runtime_threads: &str) {
    let mut server = RedisServer::start();
    let client = client(&server).await;
    let runner = Runner::builder(client.clone())
        .queues(["rt-basic"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    assert_eq!(
        client
            .enqueue::<double>(1)
            .await
            .unwrap()
            .wait(Duration::from_secs(10))
            .await
            .unwrap(),
        2
    );

    // Every client connection is killed: the runner reconnects on its own.
    assert!(
        server
            .command(&["CLIENT", "KILL", "TYPE", "normal"])
            .starts_with(':')
    );
    let handle = client.enqueue::<double>(2).await.unwrap();
    assert_eq!(handle.wait(Duration::from_secs(20)).await.unwrap(), 4);

    // Redis goes away: the runner backs off instead of spinning.
    server.kill();
    let (cpu, wall) = (CpuOfThreads::start(runtime_threads), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu.used();
    assert!(
        used < wall.elapsed() / 4,
        "used {used:?} of CPU in {:?} while Redis was down",
        wall.elapsed()
    );
    server.restart();
    let handle = client.enqueue::<double>(3).await.unwrap();
    assert_eq!(handle.wait(Duration::from_secs(30)).await.unwrap(), 6);
    stop_runner(token, task).await;
}

async fn a_job_scheduled_at_a_time_waits_for_it(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("at");
    let enqueued = Instant::now();
    let at = std::time::SystemTime::now() + Duration::from_millis(600);
    let handle = client
        .enqueue_with::<stamp>(key.clone(), EnqueueOptions::new().at(at))
        .await
        .unwrap();
    let record = handle.record().await.unwrap().unwrap();
    assert_eq!(record.status(), Some(JobStatus::Scheduled));
    let due = record.timestamp_ms("scheduled_for_ms").unwrap().unwrap();
    assert_eq!(
        due,
        at.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    );
    let runner = Runner::builder(client.clone())
        .queues(["rt-time"])
        .sweep_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    handle.wait(Duration::from_secs(10)).await.unwrap();
    stop_runner(token, task).await;
    assert!(runs(&key)[0] - enqueued >= Duration::from_millis(590));
}

#[job(queue = "rt-trickle")]
async fn trickle(n: u64) -> u64 {
    n
}

/// A runner whose queue is empty between jobs asks Redis for work once per
/// job: the blocking wait wakes it, one claim takes the job, and it waits
/// again. Before, a claim that got less than it asked for was followed by
/// another that found nothing, every time: two claim calls per job at low
/// rates. Counted by the claim script's one LRANGE of pending per call (the
/// sweep, which also reads lists, does not run here; a queue without
/// priority levels or rate keys reads no other lane).
#[tokio::test]
async fn an_idle_runner_asks_redis_for_work_once_per_job_that_arrives() {
    const JOBS: u64 = 20;
    let server = RedisServer::start();
    let client = client(&server).await;
    let runner = Runner::builder(client.clone())
        .queues(["rt-trickle"])
        .concurrency(10)
        .sweep_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let mut raw = server.conn().await;
    // The runner is up and idle: the first job runs.
    let first = client.enqueue::<trickle>(JOBS).await.unwrap();
    assert_eq!(first.wait(Duration::from_secs(10)).await.unwrap(), JOBS);
    tokio::time::sleep(Duration::from_millis(100)).await;
    exec(&mut raw, &["CONFIG", "RESETSTAT"]).await;
    for n in 0..JOBS {
        let handle = client.enqueue::<trickle>(n).await.unwrap();
        assert_eq!(handle.wait(Duration::from_secs(10)).await.unwrap(), n);
    }
    let stats = commandstats(&mut raw).await;
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut raw)
        .await
        .unwrap();
    stop_runner(token, task).await;
    let claims = command_calls(&stats, "lrange");
    assert!(
        (JOBS..=JOBS + 2).contains(&claims),
        "{claims} claim calls for {JOBS} jobs arriving one at a time"
    );
    // The idle wait's two blocking reads (pending, the wake list) cost no
    // new connection per job: the wake-list read outlives the waits instead
    // of being dropped with its connection each time a job arrives. (Each
    // `wait` above subscribes to events on a connection of its own: one per
    // job. Dropping the losing read cost one more per job: 40 for 20.)
    let connections: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    println!("{claims} claim calls and {connections} new connections for {JOBS} jobs");
    assert!(
        connections <= JOBS + 3,
        "{connections} new connections for {JOBS} jobs"
    );
}

on_each_topology! {
    #[tokio::test] the_runner_dispatches_by_name_and_stores_results,
    #[tokio::test] at_most_n_handlers_run_at_once_and_jobs_wait_in_pending_not_processing,
    #[tokio::test] a_queue_limit_caps_that_queue_within_the_global_limit,
    #[tokio::test] a_panic_is_caught_and_retried_and_the_runner_keeps_going,
    #[tokio::test] a_job_past_its_timeout_is_cancelled_and_fails,
    #[tokio::test] handlers_choose_permanent_failure_or_a_retry_delay,
    #[tokio::test] retries_wait_out_the_backoff_then_end_in_failed,
    #[tokio::test] a_delayed_job_never_starts_before_its_time,
    #[tokio::test] a_job_running_ten_times_its_visibility_keeps_its_lease_and_runs_once,
    #[tokio::test] a_run_whose_lease_is_lost_is_cancelled_and_its_outcome_never_written,
    #[tokio::test] shutdown_hands_unfinished_jobs_back_without_charging_the_attempt,
    #[tokio::test] shutdown_lets_running_jobs_finish_within_the_timeout,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] two_runners_on_10000_jobs_never_run_a_job_twice,
    #[tokio::test] a_job_no_handler_can_run_fails_at_once_with_the_reason,
    #[tokio::test] a_job_scheduled_at_a_time_waits_for_it,
}
