//! Flow control across the fleet, against a single server and a
//! three-primary cluster: priorities order claims, a rate limit spaces
//! starts and says how long to wait, max_running holds across runners, a
//! throttled rate key holds back only its own jobs, a handler's upstream 429
//! backs off the whole queue, limits changed live apply within a second, and
//! a runner's slots are shared between queues by weight.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobqueue::client::EnqueueOptions;
use jobqueue::queue::{NewJob, QueueOptions};
use jobqueue::{Client, JobError, Limits, Rate, Runner, job};
use jobqueue_tests::*;

/// When each test's jobs started, by test key: (payload, instant).
static STARTS: Mutex<BTreeMap<String, Vec<(u32, Instant)>>> = Mutex::new(BTreeMap::new());

fn started(key: &str, n: u32) {
    STARTS
        .lock()
        .unwrap()
        .entry(key.to_owned())
        .or_default()
        .push((n, Instant::now()));
}

fn starts(key: &str) -> Vec<(u32, Instant)> {
    STARTS.lock().unwrap().get(key).cloned().unwrap_or_default()
}

/// Records its start and sleeps its payload's ms.
#[job(queue = "flow")]
async fn step(args: (String, u32, u64)) {
    started(&args.0, args.1);
    tokio::time::sleep(Duration::from_millis(args.2)).await;
}

/// Records its start; its rate key is the payload's tenant.
#[job(queue = "flow-keys", rate_key = |p: &(String, String, u32)| p.1.clone())]
async fn tenant_call(args: (String, String, u32)) {
    started(&format!("{}/{}", args.0, args.1), args.2);
}

/// Reports an upstream 429 on its first run (number 0), then completes.
#[job(queue = "flow-429")]
async fn upstream(args: (String, u32)) -> Result<(), JobError> {
    let first = starts(&args.0).iter().all(|(n, _)| *n != args.1);
    started(&args.0, args.1);
    if first && args.1 == 0 {
        return Err(JobError::rate_limited(Duration::from_millis(800)));
    }
    Ok(())
}

/// A high-priority job by declaration.
#[job(queue = "flow", priority = 2)]
async fn urgent(args: (String, u32)) {
    started(&args.0, args.1);
}

/// A new job with `payload` and `options`.
fn with<P: serde::Serialize>(payload: &P, options: EnqueueOptions) -> NewJob {
    NewJob::new(payload).unwrap().options(options)
}

async fn priorities_order_claims_highest_level_first_fifo_within(redis: TestRedis) {
    let q = redis.queue("flow-prio", QueueOptions::new()).await;
    let mut expected = Vec::new();
    let mut ids = BTreeMap::new();
    for (i, level) in [0i8, -1, 3, 0, 1, -3, 3, 2, -1, 1].into_iter().enumerate() {
        let id = q
            .submit(with(&i, EnqueueOptions::new().priority(level)))
            .await
            .unwrap();
        ids.insert(id.clone(), i);
        expected.push((-level, i));
    }
    expected.sort();
    let order: Vec<usize> = expected.into_iter().map(|(_, i)| i).collect();
    let mut claimed = Vec::new();
    while let Some(job) = q.claim(Duration::ZERO).await.unwrap() {
        claimed.push(ids[job.id()]);
    }
    assert_eq!(claimed, order, "highest level first, FIFO within a level");
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.pending_depth, 0);
    // A batch claim crosses levels in the same order.
    for (i, level) in [(0usize, -2i8), (1, 0), (2, 2)] {
        q.submit(with(&i, EnqueueOptions::new().priority(level)))
            .await
            .unwrap();
    }
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.pending_depth, stats.prioritized_depth), (3, 2));
    let batch = q.claim_many(10, Duration::ZERO).await.unwrap();
    let payloads: Vec<usize> = batch.iter().map(|j| j.payload().unwrap()).collect();
    assert_eq!(payloads, vec![2, 1, 0]);
    assert!(
        q.submit(with(&0, EnqueueOptions::new().priority(4)))
            .await
            .is_err(),
        "levels run from -3 to 3"
    );
}

async fn an_idle_runner_wakes_at_once_for_a_job_in_any_lane(redis: TestRedis) {
    let client = redis.client().await;
    let runner = Runner::builder(client.clone())
        .queues(["flow", "flow-keys"])
        .claim_block(Duration::from_secs(20))
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    // Let both queues go idle (blocked for 20 s).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let key = unique_key("wake");
    let began = Instant::now();
    let high = client.enqueue::<urgent>((key.clone(), 1)).await.unwrap();
    high.wait(Duration::from_secs(5)).await.unwrap();
    let high_took = began.elapsed();
    let began = Instant::now();
    let keyed = client
        .enqueue::<tenant_call>((key.clone(), "t1".into(), 1))
        .await
        .unwrap();
    keyed.wait(Duration::from_secs(5)).await.unwrap();
    let keyed_took = began.elapsed();
    stop_runner(token, task).await;
    println!("priority job ran after {high_took:?}, keyed job after {keyed_took:?}");
    assert!(high_took < Duration::from_secs(2), "{high_took:?}");
    assert!(keyed_took < Duration::from_secs(2), "{keyed_took:?}");
}

async fn a_rate_limit_spaces_claims_and_says_how_long_to_wait(redis: TestRedis) {
    let q = redis.queue("flow-rate", QueueOptions::new()).await;
    q.set_limits(
        &Limits::new()
            .rate(Rate::new(10, Duration::from_secs(1)))
            .burst(3),
    )
    .await
    .unwrap();
    for i in 0..20 {
        q.enqueue(&i).await.unwrap();
    }
    let first = q.claim_many(20, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 3, "the burst");
    let began = Instant::now();
    let next = q.claim_many(20, Duration::from_secs(2)).await.unwrap();
    let waited = began.elapsed();
    println!("after the burst, {} job(s) after {waited:?}", next.len());
    assert_eq!(next.len(), 1, "then one per 100 ms");
    assert!(
        waited >= Duration::from_millis(60) && waited < Duration::from_millis(400),
        "{waited:?}"
    );
    let limits = q.limits().await.unwrap();
    assert_eq!(limits.queue.rate, Some(Rate::new(10, Duration::from_secs(1))));
    assert_eq!(limits.queue.burst, Some(3));
    // Removed: everything waiting is claimable at once.
    q.set_limits(&Limits::new()).await.unwrap();
    assert_eq!(q.claim_many(100, Duration::ZERO).await.unwrap().len(), 16);
}

on_each_topology! {
    #[tokio::test(flavor = "multi_thread")] priorities_order_claims_highest_level_first_fifo_within,
    #[tokio::test(flavor = "multi_thread")] an_idle_runner_wakes_at_once_for_a_job_in_any_lane,
    #[tokio::test(flavor = "multi_thread")] a_rate_limit_spaces_claims_and_says_how_long_to_wait,
}
