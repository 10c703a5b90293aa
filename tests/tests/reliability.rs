//! Redis faults under a running Runner: a crash and restart with an
//! append-only file, a pause longer than the response timeout, a pause
//! longer than the lease; and memory that returns to what the history caps
//! allow after 100,000 jobs.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobqueue::connection::{Connection, ConnectionOptions};
use jobqueue::queue::{JobStatus, NewJob, QueueOptions};
use jobqueue::{Client, JobContext, JobError, Runner, job};
use jobqueue_tests::*;

/// Completes, unless its payload asks it to fail for good.
#[job(queue = "rel")]
async fn unit(fail: bool) -> Result<(), JobError> {
    if fail {
        return Err(JobError::permanent("asked to fail"));
    }
    Ok(())
}

/// The `outlived` jobs whose first run started, and those whose first run
/// saw its context cancelled, by id (ids are random: no other test's).
static STARTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static TOLD: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Its first run lasts until the runner tells it to stop (here only a lost
/// lease can), and returns a result that must never be stored; its later
/// runs return the real one at once.
#[job(
    queue = "rel-lease",
    visibility = "1s",
    max_attempts = 5,
    backoff = "none"
)]
async fn outlived(_n: u32, ctx: JobContext) -> String {
    if ctx.attempt() > 1 {
        return "fresh".into();
    }
    STARTED.lock().unwrap().insert(ctx.id().to_owned());
    ctx.cancelled().await;
    TOLD.lock().unwrap().insert(ctx.id().to_owned());
    "stale".into()
}

/// Enqueues `n` `unit` jobs, every `fail_every`-th asked to fail; returns
/// their ids.
async fn enqueue(q: &jobqueue::queue::Queue, n: usize, fail_every: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    let mut batch = Vec::new();
    for i in 0..n {
        let fail = fail_every > 0 && i % fail_every == 0;
        batch.push(NewJob::new(&fail).unwrap().name("unit"));
        if batch.len() == 1000 {
            ids.extend(q.submit_many(std::mem::take(&mut batch)).await.unwrap());
        }
    }
    ids.extend(q.submit_many(batch).await.unwrap());
    ids
}

/// `n` jobs on queue `rel` of `server` (history long enough to check them
/// all) and a runner working them over a connection with `options`; the
/// queue, the jobs' ids, and the runner's token and task.
async fn run_jobs(
    server: &RedisServer,
    n: usize,
    options: ConnectionOptions,
) -> (
    jobqueue::queue::Queue,
    Vec<String>,
    jobqueue::CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let queue_options = QueueOptions::new().completed_history(10_000);
    let q = queue(server, "rel", queue_options.clone()).await;
    let ids = enqueue(&q, n, 0).await;
    let conn = Connection::connect_with(server.url().as_str(), options)
        .await
        .unwrap();
    let runner = Runner::builder(
        Client::builder(&conn)
            .queue_options(queue_options)
            .build()
            .unwrap(),
    )
    .queues(["rel"])
    .concurrency(20)
    .sweep_interval(Duration::from_millis(200))
    .build()
    .unwrap();
    let (token, task) = start_runner(runner);
    (q, ids, token, task)
}

/// Every id listed in a state, with a pipelined status check of each.
async fn statuses(
    q: &jobqueue::queue::Queue,
    ids: &[String],
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for chunk in ids.chunks(1000) {
        for record in q.get_jobs(chunk).await.unwrap() {
            let status = record
                .and_then(|r| r.field("status").map(str::to_owned))
                .unwrap_or_else(|| "missing".into());
            *counts.entry(status).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_crash_and_restart_with_an_append_only_file_loses_no_job() {
    let mut server = RedisServer::builder()
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .start();
    let (q, ids, token, task) = run_jobs(&server, 3000, ConnectionOptions::new()).await;
    // The kill lands mid-run: some jobs completed, some held by the runner.
    let waiting = Instant::now();
    let at_kill = loop {
        let s = q.stats().await.unwrap();
        if s.completed_total >= 500 && s.processing_depth > 0 {
            break s;
        }
        assert!(
            s.completed_total < 3000 && waiting.elapsed() < Duration::from_secs(30),
            "no moment mid-run to kill Redis in: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    server.kill(); // SIGKILL: whatever was acknowledged is in the AOF
    assert!(
        0 < at_kill.completed_total
            && at_kill.completed_total < 3000
            && at_kill.processing_depth > 0,
        "{at_kill:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    // What Redis acknowledged before the kill came back from the AOF.
    let restored = q.stats().await.unwrap();
    assert!(
        restored.completed_total >= at_kill.completed_total,
        "acknowledged completions lost: {at_kill:?} before the kill, {restored:?} after"
    );
    let done = stats_reach(&q, Duration::from_secs(90), |s| {
        s.completed_total == 3000 && s.processing_depth == 0
    })
    .await;
    stop_runner(token, task).await;
    let s = q.stats().await.unwrap();
    assert!(done, "{s:?}");
    assert_eq!(
        (
            s.enqueued_total,
            s.completed_total,
            s.failed_total,
            s.pending_depth,
            s.scheduled_depth
        ),
        (3000, 3000, 0, 0, 0)
    );
    let completed = q.list_completed(0..10_000).await.unwrap();
    assert_eq!(completed.len(), 3000);
    assert_eq!(
        statuses(&q, &completed).await,
        [("completed".to_owned(), 3000)].into()
    );
    // Every job enqueued is one of them, and its own hash says completed.
    assert_eq!(
        completed.iter().collect::<BTreeSet<_>>(),
        ids.iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(
        statuses(&q, &ids).await,
        [("completed".to_owned(), 3000)].into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_pause_longer_than_the_response_timeout_is_ridden_out() {
    let server = RedisServer::start();
    let options = ConnectionOptions::new().response_timeout(Duration::from_millis(500));
    let (q, _ids, token, task) = run_jobs(&server, 2000, options).await;
    assert!(stats_reach(&q, Duration::from_secs(30), |s| s.completed_total >= 200).await);
    server.pause(Duration::from_millis(2000)); // four response timeouts
    let done = stats_reach(&q, Duration::from_secs(60), |s| {
        s.completed_total == 2000 && s.processing_depth == 0
    })
    .await;
    stop_runner(token, task).await;
    let s = q.stats().await.unwrap();
    assert!(done, "{s:?}");
    assert_eq!(
        (s.completed_total, s.failed_total, s.pending_depth),
        (2000, 0, 0)
    );
}

/// Redis pauses for three times the lease while every job runs: the leases
/// run out, a sweep takes the jobs back as the pause ends, the runner's next
/// renewals are refused, so it cancels the stale runs (their handlers see
/// `ctx.cancelled()`) and writes nothing for them, and every job completes
/// on its next attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_pause_longer_than_the_lease_hands_the_jobs_to_a_sweep_and_they_run_again() {
    const JOBS: u32 = 10;
    const LEASE: Duration = Duration::from_secs(1);
    let server = RedisServer::start();
    let conn = Connection::connect_with(
        server.url().as_str(),
        ConnectionOptions::new().response_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    let client = Client::new(&conn);
    let ids: BTreeSet<String> = client
        .enqueue_many::<outlived>(0..JOBS)
        .await
        .unwrap()
        .iter()
        .map(|h| h.id().to_owned())
        .collect();
    // A slot for every job, and no sweeper of its own: while the first runs
    // wait, the runner sends nothing but renewals, and only the sweeps below
    // take jobs back.
    let runner = Runner::builder(client)
        .queues(["rel-lease"])
        .concurrency(JOBS as usize)
        .auto_sweep(false)
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    // The sweeper has a connection of its own whose response timeout
    // outlasts the pause, so its sweep waits the pause out.
    let sweeper = queue(&server, "rel-lease", QueueOptions::new()).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            ids.is_subset(&STARTED.lock().unwrap())
        })
        .await,
        "every first run started"
    );
    // A first sweep loads the script, so the sweep sent during a pause is a
    // single command. (It finds nothing, unless this process was starved
    // for a whole lease; then it takes those jobs back as the pause would.)
    let mut reclaimed: BTreeSet<String> = sweeper
        .reclaim_expired()
        .await
        .unwrap()
        .reclaimed
        .into_iter()
        .collect();
    // The sweep is sent the moment the pause begins, so it runs as soon as
    // the pause ends, ahead of the renewals the runner sent meanwhile; unless
    // a renewal was sent in that very moment: then it renewed the leases
    // first, nothing was taken back, and Redis is paused again.
    let mut pauses = 0;
    while reclaimed.len() < ids.len() && pauses < 10 {
        pauses += 1;
        server.pause(LEASE * 3);
        reclaimed.extend(sweeper.reclaim_expired().await.unwrap().reclaimed);
    }
    println!(
        "{pauses} pause(s) of 3 s took back {} jobs",
        reclaimed.len()
    );
    assert_eq!(
        reclaimed, ids,
        "a sweep took back every job whose lease ran out"
    );
    let done = stats_reach(&sweeper, Duration::from_secs(30), |s| {
        s.completed_total == u64::from(JOBS) && s.processing_depth == 0
    })
    .await;
    stop_runner(token, task).await;
    let s = sweeper.stats().await.unwrap();
    assert!(done, "{s:?}");
    assert_eq!(
        (s.completed_total, s.failed_total, s.pending_depth),
        (u64::from(JOBS), 0, 0)
    );
    assert!(s.reclaimed_total >= u64::from(JOBS), "{s:?}");
    // Every stale run was told to stop while it ran.
    assert!(
        ids.is_subset(&TOLD.lock().unwrap()),
        "stale runs never told"
    );
    let ids: Vec<String> = ids.into_iter().collect();
    for (id, record) in ids.iter().zip(sweeper.get_jobs(&ids).await.unwrap()) {
        let record = record.unwrap();
        assert_eq!(record.status(), Some(JobStatus::Completed), "{id}");
        assert!(record.attempts().unwrap() >= 2, "{id}: {record:?}");
        assert!(record.field("reclaimed_at_ms").is_some(), "{id}");
        // The stale run's "stale" never reached Redis.
        assert_eq!(
            record.result::<String>().unwrap().as_deref(),
            Some("fresh"),
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_100000_jobs_redis_memory_is_back_within_what_the_caps_allow() {
    let (server, q, mut c) = setup("rel", QueueOptions::new()).await;
    let info_memory = |c: &mut redis::aio::MultiplexedConnection| {
        let mut c = c.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("memory")
                .query_async(&mut c)
                .await
                .unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .unwrap()
                .trim()
                .parse::<i64>()
                .unwrap()
        }
    };
    let client = Client::connect(&server.url()).await.unwrap();
    let baseline = info_memory(&mut c).await;
    // One job in 20 fails for good: 5,000 dead letters, under the 10,000 cap.
    enqueue(&q, 100_000, 20).await;
    let runner = Runner::builder(client)
        .queues(["rel"])
        .concurrency(50)
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    assert!(
        stats_reach(&q, Duration::from_secs(240), |s| s.completed_total
            + s.failed_total
            == 100_000
            && s.processing_depth == 0)
        .await
    );
    stop_runner(token, task).await;
    let s = q.stats().await.unwrap();
    assert_eq!(
        (
            s.completed_total,
            s.failed_total,
            s.completed_depth,
            s.failed_depth
        ),
        (95_000, 5_000, 50, 5_000)
    );

    // What may remain: the completed history (50 hashes), the dead letters
    // (5,000 hashes), their two lists, the stats hash, the settled set
    // (ended claims, capped, and the dead letters' records), and claim
    // request keys not yet cleaned up. Each is measured with MEMORY USAGE.
    let reader = c.clone();
    let usage = |key: String| {
        let mut c = reader.clone();
        async move {
            redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .query_async::<Option<i64>>(&mut c)
                .await
                .unwrap()
                .unwrap_or(0)
        }
    };
    let mut allowed = 0;
    for id in q
        .list_completed(0..50)
        .await
        .unwrap()
        .into_iter()
        .chain(q.list_failed(0..5_000).await.unwrap())
    {
        allowed += usage(format!("queue:rel:job:{id}")).await;
    }
    for key in [
        "queue:rel:completed",
        "queue:rel:failed",
        "queue:rel:stats",
        "queue:rel:settled",
    ] {
        allowed += usage(key.to_owned()).await;
    }
    let requests: Vec<String> = redis::cmd("KEYS")
        .arg("queue:rel:request:*")
        .query_async(&mut c)
        .await
        .unwrap();
    for key in &requests {
        allowed += usage(key.clone()).await;
    }
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(
        keys,
        50 + 5_000 + 4 + requests.len() as u64,
        "only the capped history and dead letters remain"
    );
    let grown = info_memory(&mut c).await - baseline;
    // Allocator and dictionary overhead (10 % of what remains), plus 2 MiB
    // for the script cache and client buffers: far below the ~20 MB that
    // 100,000 leaked jobs would take.
    let bound = allowed + allowed / 10 + (2 << 20);
    println!(
        "used_memory grew {grown} bytes; the keys that remain account for {allowed}; bound {bound}"
    );
    assert!(
        grown <= bound,
        "used_memory grew {grown} bytes, more than the {bound} the caps allow"
    );
}
