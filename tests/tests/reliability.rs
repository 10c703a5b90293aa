//! Redis faults under a running Runner: a crash and restart with an
//! append-only file, a pause longer than the response timeout; and memory
//! that returns to what the history caps allow after 100,000 jobs.

use std::time::Duration;

use jobqueue::connection::{Connection, ConnectionOptions};
use jobqueue::queue::{NewJob, QueueOptions};
use jobqueue::{Client, JobError, Runner, job};
use jobqueue_tests::*;

/// Completes, unless its payload asks it to fail for good.
#[job(queue = "rel")]
async fn unit(fail: bool) -> Result<(), JobError> {
    if fail {
        return Err(JobError::permanent("asked to fail"));
    }
    Ok(())
}

async fn enqueue(q: &jobqueue::queue::Queue, n: usize, fail_every: usize) {
    let mut batch = Vec::new();
    for i in 0..n {
        let fail = fail_every > 0 && i % fail_every == 0;
        batch.push(NewJob::new(&fail).unwrap().name("unit"));
        if batch.len() == 1000 {
            q.submit_many(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    q.submit_many(batch).await.unwrap();
}

/// `n` jobs on queue `rel` of `server` (history long enough to check them
/// all) and a runner working them over a connection with `options`.
async fn run_jobs(
    server: &RedisServer,
    n: usize,
    options: ConnectionOptions,
) -> (
    jobqueue::queue::Queue,
    jobqueue::CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let queue_options = QueueOptions::new().completed_history(10_000);
    let q = queue(server, "rel", queue_options.clone()).await;
    enqueue(&q, n, 0).await;
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
    (q, token, task)
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
    let (q, token, task) = run_jobs(&server, 3000, ConnectionOptions::new()).await;
    assert!(stats_reach(&q, Duration::from_secs(30), |s| s.completed_total >= 500).await);
    server.kill(); // SIGKILL: whatever was acknowledged is in the AOF
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
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
    let ids = q.list_completed(0..10_000).await.unwrap();
    assert_eq!(ids.len(), 3000);
    assert_eq!(
        statuses(&q, &ids).await,
        [("completed".to_owned(), 3000)].into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_pause_longer_than_the_response_timeout_is_ridden_out() {
    let server = RedisServer::start();
    let options = ConnectionOptions::new().response_timeout(Duration::from_millis(500));
    let (q, token, task) = run_jobs(&server, 2000, options).await;
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
