//! jobqueue on a Redis Cluster: layout detection, the whole job lifecycle
//! across primaries, failover with replicas, the dashboard and the CLI.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use jobqueue::queue::{Ack, JobStatus, KeyLayout, QueueOptions};
use jobqueue::{Client, JobContext, Runner, job};
use jobqueue_tests::*;

#[tokio::test]
async fn a_cluster_is_detected_and_each_queue_lives_in_one_slot() {
    let cluster = RedisCluster::start(3, 0);
    let conn = jobqueue::connection::Connection::connect(cluster.url().as_str())
        .await
        .unwrap();
    assert!(conn.is_cluster());
    let mut owners = std::collections::BTreeSet::new();
    for name in ["email", "billing", "reports", "images", "search", "audit"] {
        let q = jobqueue::queue::Queue::new_with(&conn, name, QueueOptions::new()).unwrap();
        assert_eq!(q.keys().pending(), format!("queue:{{{name}}}:pending"));
        let id = q.enqueue(&serde_json::json!({ "n": 1 })).await.unwrap();
        let job = q.claim(Duration::from_secs(1)).await.unwrap().unwrap();
        assert_eq!(job.id(), id);
        assert_eq!(
            q.complete(&job, &serde_json::json!("ok")).await.unwrap(),
            Ack::Completed
        );
        owners.insert(cluster.primary_for(&q.keys().pending()));
        assert!(
            q.purge().await.unwrap() >= 2,
            "purge finds the queue's keys on its node"
        );
    }
    assert!(owners.len() > 1, "queues spread over primaries: {owners:?}");
    let err = jobqueue::queue::Queue::new_with(
        &conn,
        "x",
        QueueOptions::new().layout(KeyLayout::Reference),
    )
    .unwrap_err();
    assert!(err.to_string().contains("CROSSSLOT"), "{err}");
}

/// Runs per job id of the failover and resharding tests (ids are random:
/// each test reads the counts of its own ids only, see `runs_of`).
static RUNS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn count_run(ctx: &JobContext) {
    *RUNS.lock().unwrap().entry(ctx.id().to_owned()).or_default() += 1;
}

/// How many times each of `ids` ran, in order.
fn runs_of(ids: &[impl AsRef<str>]) -> Vec<usize> {
    let runs = RUNS.lock().unwrap();
    ids.iter()
        .map(|id| runs.get(id.as_ref()).copied().unwrap_or(0))
        .collect()
}

/// A client on `cluster` keeping enough history to check every job, and the
/// ids of `jobs` jobs `T` it enqueued, in batches of 500.
async fn client_with_jobs<T: jobqueue::definition::Job<Payload = u64>>(
    cluster: &RedisCluster,
    jobs: u64,
) -> (Client, Vec<String>) {
    let conn = jobqueue::connection::Connection::connect(cluster.url().as_str())
        .await
        .unwrap();
    let client = Client::builder(&conn)
        .queue_options(QueueOptions::default().completed_history(10_000))
        .build()
        .unwrap();
    let mut ids = Vec::new();
    for chunk in 0..jobs / 500 {
        let handles = client
            .enqueue_many::<T>((0..500).map(|i| chunk * 500 + i))
            .await
            .unwrap();
        ids.extend(handles.iter().map(|h| h.id().to_owned()));
    }
    (client, ids)
}

#[job(queue = "failover", visibility = "1s")]
async fn hop(_n: u64, ctx: JobContext) {
    count_run(&ctx);
    tokio::time::sleep(Duration::from_millis(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_failing_over_mid_run_loses_no_job() {
    const JOBS: u64 = 2_000;
    let mut cluster = RedisCluster::start(3, 1);
    let (client, ids) = client_with_jobs::<hop>(&cluster, JOBS).await;
    let q = client.queue("failover").unwrap();
    let old_primary = cluster.primary_for(&q.keys().pending());
    // Replication is asynchronous: a write acknowledged by a primary that
    // dies before sending it on is gone. The enqueues are made safe first;
    // what the run writes later is what the failover puts at risk.
    cluster.wait_for_replicas(Duration::from_secs(10));

    let runner = Runner::builder(client.clone())
        .queues(["failover"])
        .concurrency(20)
        .sweep_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let quarter = stats_reach(&q, Duration::from_secs(30), |s| {
        s.completed_total >= JOBS / 4
    })
    .await;
    assert!(quarter, "a quarter of the jobs ran before the failover");
    let at_kill = q.stats().await.unwrap();
    cluster.node_mut(old_primary).kill();
    let killed_at = std::time::Instant::now();
    assert!(
        at_kill.completed_total < JOBS / 2,
        "the primary died mid-run: {at_kill:?}"
    );

    let finished = stats_reach(&q, Duration::from_secs(90), |s| {
        s.completed_total == JOBS
            && s.pending_depth == 0
            && s.processing_depth == 0
            && s.scheduled_depth == 0
    })
    .await;
    let stats = q.stats().await.unwrap();
    assert!(
        finished,
        "every job completed after the failover: {stats:?}"
    );
    stop_runner(token, task).await;

    let new_primary = cluster.primary_for(&q.keys().pending());
    assert_ne!(new_primary, old_primary, "the replica took over");
    assert_eq!((stats.failed_total, stats.failed_depth), (0, 0));
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for (id, record) in ids.iter().zip(q.get_jobs(&ids).await.unwrap()) {
        let record = record.unwrap_or_else(|| panic!("job {id} has a hash"));
        assert_eq!(record.status(), Some(JobStatus::Completed), "job {id}");
    }
    let hops = runs_of(&ids);
    assert!(hops.iter().all(|&n| n >= 1), "every job ran");
    let again = hops.iter().filter(|&&n| n > 1).count();
    eprintln!(
        "failover: killed at {} completed, all {JOBS} completed {:?} later; \
         {again} jobs ran more than once",
        at_kill.completed_total,
        killed_at.elapsed()
    );
}

#[tokio::test]
async fn the_dashboard_finds_queues_on_every_primary() {
    use tower::ServiceExt;
    let cluster = RedisCluster::start(3, 0);
    let conn = jobqueue::connection::Connection::connect(cluster.url().as_str())
        .await
        .unwrap();
    let names = ["email", "billing", "reports", "images", "search", "audit"];
    let mut owners = std::collections::BTreeSet::new();
    for name in names {
        let q = jobqueue::queue::Queue::new_with(&conn, name, QueueOptions::new()).unwrap();
        q.enqueue(&serde_json::json!({})).await.unwrap();
        owners.insert(cluster.primary_for(&q.keys().pending()));
    }
    assert_eq!(owners.len(), 3, "the queues live on all three primaries");
    let app = jobqueue::dashboard::router(Client::new(&conn));
    let request = axum::http::Request::get("/api/overview")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), axum::http::StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let overview: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for name in names {
        let queue = overview["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed: {overview}"));
        assert_eq!(queue["stats"]["pending_depth"], 1, "{name}");
    }
}

#[job(queue = "resharded", visibility = "2s")]
async fn stay(_n: u64, ctx: JobContext) {
    count_run(&ctx);
    tokio::time::sleep(Duration::from_millis(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_whose_slot_moves_mid_run_follows_it() {
    const JOBS: u64 = 3_000;
    let cluster = RedisCluster::start(3, 0);
    let (client, ids) = client_with_jobs::<stay>(&cluster, JOBS).await;
    let q = client.queue("resharded").unwrap();
    let key = q.keys().pending();
    let old_owner = cluster.primary_for(&key);
    let new_owner = (old_owner + 1) % 3;
    let runner = Runner::builder(client.clone())
        .queues(["resharded"])
        .concurrency(20)
        .sweep_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    assert!(
        stats_reach(&q, Duration::from_secs(30), |s| s.completed_total
            >= JOBS / 5)
        .await
    );
    let at_move = q.stats().await.unwrap();
    // Small batches keep the slot half-moved for a while.
    let mover = tokio::task::spawn_blocking(move || {
        cluster.move_slot(&key, new_owner, 20);
        cluster
    });
    let moving = std::time::Instant::now();
    let cluster = mover.await.unwrap();
    let after_move = q.stats().await.unwrap();
    eprintln!(
        "resharding: the slot took {:?} to move; {} jobs completed meanwhile",
        moving.elapsed(),
        after_move.completed_total - at_move.completed_total
    );
    assert_eq!(cluster.primary_for(&q.keys().pending()), new_owner);
    assert!(
        at_move.completed_total < JOBS * 3 / 4,
        "the slot moved mid-run: {at_move:?}"
    );
    let finished = stats_reach(&q, Duration::from_secs(60), |s| {
        s.completed_total == JOBS && s.pending_depth + s.processing_depth == 0
    })
    .await;
    let stats = q.stats().await.unwrap();
    assert!(finished, "every job completed after the move: {stats:?}");
    stop_runner(token, task).await;
    assert_eq!(stats.failed_total, 0);
    let moves = runs_of(&ids);
    assert!(moves.iter().all(|&n| n == 1), "each job ran once");
}
