//! One queue split into shards: jobs spread over the shards (and, on a
//! cluster, over the primaries), runners claim from every shard under one
//! limit, and handles find their job from its id alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use jobqueue::client::EnqueueOptions;
use jobqueue::queue::{CancelOutcome, JobStatus, QueueOptions};
use jobqueue::{Client, JobContext, Runner, job};
use jobqueue_tests::*;

/// What one test's `heat` jobs did: runs by job id, and how many ran at once.
#[derive(Debug, Default)]
struct Heat {
    runs: BTreeMap<String, usize>,
    running: usize,
    most_running: usize,
}

/// By the test key every `heat` payload carries (see `unique_key`), so tests
/// running side by side in one process (`cargo test`) keep their own counts.
static HEAT: Mutex<BTreeMap<String, Heat>> = Mutex::new(BTreeMap::new());

#[job(queue = "hot")]
async fn heat(args: (String, u64), ctx: JobContext) -> Result<u64, String> {
    assert_eq!(ctx.queue(), "hot", "handlers see the logical queue");
    let (key, n) = args;
    {
        let mut tests = HEAT.lock().unwrap();
        let heat = tests.entry(key.clone()).or_default();
        *heat.runs.entry(ctx.id().to_owned()).or_default() += 1;
        heat.running += 1;
        heat.most_running = heat.most_running.max(heat.running);
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    HEAT.lock().unwrap().get_mut(&key).unwrap().running -= 1;
    Ok(n)
}

async fn a_sharded_queue_spreads_its_jobs_and_runs_each_once(redis: TestRedis) {
    const JOBS: u64 = 3_000;
    // History long enough that every finished job can still be waited on.
    let options = QueueOptions::default().completed_history(10_000);
    let client = Client::builder(&redis.connection().await)
        .queue_options(options)
        .shards("hot", 6)
        .build()
        .unwrap();
    let key = unique_key("heat");
    let handles = client
        .enqueue_many::<heat>((0..JOBS).map(|n| (key.clone(), n)))
        .await
        .unwrap();
    let single = client.enqueue::<heat>((key.clone(), JOBS)).await.unwrap();

    let shards = client.shard_queues("hot").unwrap();
    let names: Vec<&str> = shards.iter().map(|q| q.name()).collect();
    assert_eq!(names.len(), 6);
    assert_eq!(names[0], "hot", "shard 0 is the queue itself");
    for (i, name) in names.iter().enumerate().skip(1) {
        assert!(name.starts_with(&format!("hot~{i}")), "{names:?}");
    }
    let mut total = 0;
    for shard in &shards {
        let depth = shard.stats().await.unwrap().pending_depth;
        assert!(
            depth > JOBS / 12,
            "{} holds {depth} of {JOBS}",
            shard.name()
        );
        total += depth;
    }
    assert_eq!(total, JOBS + 1);
    if let TestRedis::Cluster(cluster) = &redis {
        let primaries: BTreeSet<usize> = shards
            .iter()
            .map(|q| cluster.primary_for(&q.keys().pending()))
            .collect();
        assert_eq!(primaries.len(), 3, "six shards use all three primaries");
    }
    // A handle rebuilt from the id alone finds the job's shard.
    let found = client.handle::<heat>(single.id()).unwrap();
    assert_eq!(found.status().await.unwrap(), Some(JobStatus::Pending));

    let runner = Runner::builder(client.clone())
        .queues(["hot"])
        .concurrency(20)
        .queue_concurrency("hot", 8)
        .build()
        .unwrap();
    assert_eq!(runner.queues().count(), 6, "one claim loop per shard");
    let (token, task) = start_runner(runner);
    assert_eq!(found.wait(Duration::from_secs(30)).await.unwrap(), JOBS);
    for (n, handle) in handles.iter().enumerate().step_by(500) {
        assert_eq!(
            handle.wait(Duration::from_secs(30)).await.unwrap(),
            n as u64
        );
    }
    let all_done = eventually(Duration::from_secs(60), || async {
        let mut completed = 0;
        for shard in &shards {
            completed += shard.stats().await.unwrap().completed_total;
        }
        completed == JOBS + 1
    })
    .await;
    stop_runner(token, task).await;
    assert!(all_done, "every job completed");
    let heat = HEAT.lock().unwrap().remove(&key).unwrap_or_default();
    assert_eq!(heat.runs.len() as u64, JOBS + 1);
    assert!(heat.runs.values().all(|&n| n == 1), "a job ran twice");
    assert_eq!(
        heat.most_running, 8,
        "the queue limit holds across its shards, and is reached"
    );
}

/// A job placed by its key (a rate key, a unique key) gets an id of the
/// same shard, so a handle built from the id alone finds it, and a cancel
/// by id reaches it.
async fn a_job_placed_by_its_key_is_found_from_its_id_alone(redis: TestRedis) {
    let client = Client::builder(&redis.connection().await)
        .shards("hot", 6)
        .build()
        .unwrap();
    let key = unique_key("placed");
    let mut shards = BTreeSet::new();
    for i in 0..12 {
        let handle = client
            .enqueue_with::<heat>(
                (key.clone(), i),
                EnqueueOptions::new().rate_key(format!("tenant-{i}")),
            )
            .await
            .unwrap();
        shards.insert(handle.queue().name().to_owned());
        let found = client.handle::<heat>(handle.id()).unwrap();
        assert_eq!(
            found.queue().name(),
            handle.queue().name(),
            "{}",
            handle.id()
        );
        assert_eq!(found.status().await.unwrap(), Some(JobStatus::Pending));
    }
    assert!(
        shards.len() > 1,
        "rate keys spread over the shards: {shards:?}"
    );
    let unique = client
        .enqueue_with::<heat>(
            (key.clone(), 99),
            EnqueueOptions::new().unique_key("only-one"),
        )
        .await
        .unwrap();
    assert_eq!(
        client.cancel::<heat>(unique.id()).await.unwrap(),
        CancelOutcome::Cancelled(JobStatus::Pending)
    );
}

#[test]
fn shard_counts_outside_the_allowed_range_are_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let redis = TestRedis::start(Topology::Single);
        let conn = redis.connection().await;
        let err = Client::builder(&conn).shards("hot", 0).build().unwrap_err();
        assert!(err.to_string().contains("shards"), "{err}");
        let err = Client::builder(&conn)
            .shards("bad name", 2)
            .build()
            .unwrap_err();
        assert!(matches!(err, jobqueue::Error::InvalidName { .. }), "{err}");
    });
}

on_each_topology! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] a_sharded_queue_spreads_its_jobs_and_runs_each_once,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] a_job_placed_by_its_key_is_found_from_its_id_alone,
}
