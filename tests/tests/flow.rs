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

/// Jobs of two queues a runner shares its slots between; each records the
/// order it completed in.
#[job(queue = "flow-a")]
async fn job_a(key: String) {
    finished(&key, 'a');
}

#[job(queue = "flow-b")]
async fn job_b(key: String) {
    finished(&key, 'b');
}

static FINISHED: Mutex<BTreeMap<String, Vec<char>>> = Mutex::new(BTreeMap::new());

fn finished(key: &str, queue: char) {
    FINISHED
        .lock()
        .unwrap()
        .entry(key.to_owned())
        .or_default()
        .push(queue);
}

/// How many jobs of each rate key run at once, and the most seen.
static RUNNING: Mutex<BTreeMap<String, (u32, u32)>> = Mutex::new(BTreeMap::new());

/// Runs for 40 ms, counting how many of its key run at once.
#[job(queue = "flow-capped-keys", rate_key = |p: &(String, String)| p.1.clone())]
async fn per_key(args: (String, String)) {
    let key = format!("{}/{}", args.0, args.1);
    let all = format!("{}/*", args.0);
    for k in [&key, &all] {
        let mut running = RUNNING.lock().unwrap();
        let e = running.entry(k.clone()).or_default();
        e.0 += 1;
        e.1 = e.1.max(e.0);
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    for k in [&key, &all] {
        RUNNING.lock().unwrap().get_mut(k).unwrap().0 -= 1;
    }
}

/// Declares its queue's limits.
#[job(queue = "flow-declared", rate = "20/s", burst = 2, max_running = 3)]
async fn declared(_n: u32) {}

/// Fails for good when its payload says so, else sleeps 50 ms.
#[job(queue = "flow-capped")]
async fn capped_step(args: (String, u32, bool)) -> Result<(), JobError> {
    started(&args.0, args.1);
    if args.2 {
        return Err(JobError::permanent("no"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
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
    // The listing shows them in the order claims will take them, paged.
    let listed: Vec<usize> = q
        .list_pending(0..20)
        .await
        .unwrap()
        .iter()
        .map(|id| ids[id])
        .collect();
    assert_eq!(listed, order);
    let page: Vec<usize> = q
        .list_pending(3..6)
        .await
        .unwrap()
        .iter()
        .map(|id| ids[id])
        .collect();
    assert_eq!(page, order[3..6]);
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
        waited >= Duration::from_millis(60) && waited < Duration::from_secs(1),
        "{waited:?}"
    );
    let limits = q.limits().await.unwrap();
    assert_eq!(
        limits.queue.rate,
        Some(Rate::new(10, Duration::from_secs(1)))
    );
    assert_eq!(limits.queue.burst, Some(3));
    // Removed: everything waiting is claimable at once.
    q.set_limits(&Limits::new()).await.unwrap();
    assert_eq!(q.claim_many(100, Duration::ZERO).await.unwrap().len(), 16);
}

/// Samples how many leases `queue` holds every 5 ms until `stop` is
/// cancelled; returns the samples.
async fn sample_leases(
    redis: &TestRedis,
    queue: &str,
    stop: jobqueue::CancellationToken,
) -> tokio::task::JoinHandle<Vec<u64>> {
    let leases = if redis.is_cluster() {
        format!("queue:{{{queue}}}:leases")
    } else {
        format!("queue:{queue}:leases")
    };
    let conn = redis.conn().await;
    tokio::spawn(async move {
        let mut conn = conn;
        let mut samples = Vec::new();
        while !stop.is_cancelled() {
            let n: u64 = redis::cmd("ZCARD")
                .arg(&leases)
                .query_async(&mut conn)
                .await
                .unwrap();
            samples.push(n);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        samples
    })
}

fn flow_runner(client: Client, queue: &str, concurrency: usize) -> Runner {
    Runner::builder(client)
        .queues([queue])
        .concurrency(concurrency)
        .sweep_interval(Duration::from_millis(200))
        .build()
        .unwrap()
}

async fn max_running_holds_across_three_runners_and_is_reached(redis: TestRedis) {
    let client = redis.client().await;
    client
        .set_limits("flow", Limits::new().max_running(5))
        .await
        .unwrap();
    let key = unique_key("cap");
    let handles = client
        .enqueue_many::<step>((0..60).map(|i| (key.clone(), i, 60)))
        .await
        .unwrap();
    let stop = jobqueue::CancellationToken::new();
    let sampler = sample_leases(&redis, "flow", stop.clone()).await;
    let runners: Vec<_> = (0..3)
        .map(|_| start_runner(flow_runner(client.clone(), "flow", 10)))
        .collect();
    for handle in &handles {
        handle.wait(Duration::from_secs(30)).await.unwrap();
    }
    stop.cancel();
    let samples = sampler.await.unwrap();
    for (token, task) in runners {
        stop_runner(token, task).await;
    }
    let most = samples.iter().copied().max().unwrap();
    println!(
        "{} samples of the leases held; the most at once: {most}",
        samples.len()
    );
    assert!(most <= 5, "max_running 5 exceeded: {most}");
    assert_eq!(most, 5, "the cap is reached");
    assert_eq!(starts(&key).len(), 60);
}

async fn a_throttled_key_does_not_delay_another_keys_jobs(redis: TestRedis) {
    let client = redis.client().await;
    // Each key: 2 jobs a second, one at a time.
    client
        .set_key_limits(
            "flow-keys",
            Limits::new()
                .rate(Rate::new(2, Duration::from_secs(1)))
                .burst(1),
        )
        .await
        .unwrap();
    let key = unique_key("keys");
    // The slow key's 30 jobs are enqueued first: in one FIFO list they
    // would hold the fast key's jobs back for 15 s.
    client
        .enqueue_many::<tenant_call>((0..30).map(|i| (key.clone(), "slow".to_owned(), i)))
        .await
        .unwrap();
    let began = Instant::now();
    // The fast key has limits of its own: none.
    client
        .set_limits_of_key(
            "flow-keys",
            "fast",
            Some(Limits::new().rate(Rate::new(1000, Duration::from_secs(1)))),
        )
        .await
        .unwrap();
    let fast = client
        .enqueue_many::<tenant_call>((0..20).map(|i| (key.clone(), "fast".to_owned(), i)))
        .await
        .unwrap();
    let (token, task) = start_runner(flow_runner(client.clone(), "flow-keys", 10));
    for handle in &fast {
        handle.wait(Duration::from_secs(10)).await.unwrap();
    }
    let fast_done = began.elapsed();
    let slow_by_then = starts(&format!("{key}/slow")).len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let slow_later = starts(&format!("{key}/slow")).len();
    stop_runner(token, task).await;
    println!(
        "the fast key's 20 jobs done in {fast_done:?}; the slow key had started {slow_by_then}, then {slow_later} two seconds later"
    );
    assert!(fast_done < Duration::from_secs(3), "{fast_done:?}");
    assert!(
        slow_by_then <= 1 + 2 * (fast_done.as_secs() as usize + 1),
        "{slow_by_then}"
    );
    assert!(
        (slow_later - slow_by_then) <= 6,
        "the slow key keeps its rate: {slow_by_then} -> {slow_later}"
    );
    assert!(slow_later > slow_by_then, "the slow key is not starved");
    // The slow key's starts are spaced by its rate (500 ms, less what a
    // handler's start may lag behind its claim under load).
    let times: Vec<Instant> = starts(&format!("{key}/slow"))
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(400),
            "two starts {gap:?} apart"
        );
    }
}

async fn an_upstream_429_backs_off_the_whole_queue(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("429");
    let first = client.enqueue::<upstream>((key.clone(), 0)).await.unwrap();
    let (token, task) = start_runner(flow_runner(client.clone(), "flow-429", 4));
    // The first run reports the 429; wait for it.
    assert!(
        eventually(Duration::from_secs(5), || async {
            !starts(&key).is_empty()
        })
        .await,
        "the first job ran"
    );
    // ... and until its outcome (the 429) is written.
    assert!(
        eventually(Duration::from_secs(5), || async {
            first.record().await.unwrap().unwrap().field("snoozes") == Some("1")
        })
        .await,
        "the 429 was recorded"
    );
    let reported = Instant::now();
    let others = client
        .enqueue_many::<upstream>((1..6).map(|i| (key.clone(), i)))
        .await
        .unwrap();
    // Held back, nothing is claimed; the throttled job is first in line.
    let q = first.queue();
    let next = q.list_pending(0..1).await.unwrap();
    assert_eq!(
        next,
        vec![first.id().to_owned()],
        "the throttled job went back first in line"
    );
    first.wait(Duration::from_secs(10)).await.unwrap();
    for handle in &others {
        handle.wait(Duration::from_secs(10)).await.unwrap();
    }
    stop_runner(token, task).await;
    let runs = starts(&key);
    let later: Vec<Duration> = runs[1..]
        .iter()
        .map(|(_, t)| t.saturating_duration_since(reported))
        .collect();
    println!("runs after the 429 began at {later:?}");
    assert_eq!(runs.len(), 7, "the first job twice, the others once");
    for after in &later {
        // Held back 800 ms from the settle; the settle came a little after
        // the run, which is what `reported` measures from.
        assert!(
            *after >= Duration::from_millis(600),
            "a job started {after:?} after the 429"
        );
    }
    let record = first.record().await.unwrap().unwrap();
    assert_eq!(
        record.field("attempts"),
        Some("1"),
        "the attempt was given back"
    );
}

async fn limits_changed_live_apply_within_a_second_on_every_runner(redis: TestRedis) {
    let client = redis.client().await;
    client
        .set_limits(
            "flow",
            Limits::new()
                .rate(Rate::new(1, Duration::from_secs(3)))
                .burst(1),
        )
        .await
        .unwrap();
    let key = unique_key("live");
    client
        .enqueue_many::<step>((0..40).map(|i| (key.clone(), i, 1_000)))
        .await
        .unwrap();
    // Three runners of one slot each: three jobs run at once only when all
    // three runners claim.
    let runners: Vec<_> = (0..3)
        .map(|_| start_runner(flow_runner(client.clone(), "flow", 1)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = starts(&key).len();
    let stop = jobqueue::CancellationToken::new();
    let sampler = sample_leases(&redis, "flow", stop.clone()).await;
    let changed = Instant::now();
    client
        .set_limits(
            "flow",
            Limits::new().rate(Rate::new(1000, Duration::from_secs(1))),
        )
        .await
        .unwrap();
    let all_three = eventually(Duration::from_secs(1), || async {
        starts(&key).iter().filter(|(_, t)| *t >= changed).count() >= 3
    })
    .await;
    let took = changed.elapsed();
    // The sampler sees the third lease a moment after the third start
    // (both follow the claim).
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    let most = sampler.await.unwrap().into_iter().max().unwrap_or(0);
    // And back down: a limit set live stops new starts at once.
    client
        .set_limits(
            "flow",
            Limits::new()
                .rate(Rate::new(1, Duration::from_secs(60)))
                .burst(1),
        )
        .await
        .unwrap();
    let lowered = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after_lowering = starts(&key)
        .iter()
        .filter(|(_, t)| *t >= lowered + Duration::from_millis(500))
        .count();
    for (token, task) in runners {
        stop_runner(token, task).await;
    }
    println!(
        "{before} start(s) under 1 per 3 s; after raising the limit, three runners started jobs within {took:?} ({most} leases at once); {after_lowering} started after lowering it"
    );
    assert!(before <= 1, "{before}");
    assert!(
        all_three,
        "three runners started jobs within a second of the change"
    );
    assert_eq!(most, 3, "all three runners held a job at once");
    assert!(
        after_lowering <= 1,
        "{after_lowering} started after lowering the limit"
    );
}

/// The completion times (ms, Redis clock) of the jobs in `queue`'s
/// completed history.
async fn completion_times(redis: &TestRedis, queue: &str) -> Vec<u64> {
    let client = redis.client().await;
    let q = client.queue(queue).unwrap();
    let ids = q
        .list(jobqueue::queue::JobStatus::Completed, 0..10_000)
        .await
        .unwrap();
    let mut times = Vec::with_capacity(ids.len());
    for id in ids {
        let record = q.get_job(&id).await.unwrap().unwrap();
        times.push(record.field("completed_at_ms").unwrap().parse().unwrap());
    }
    times.sort_unstable();
    times
}

async fn four_runner_processes_keep_a_fleet_wide_rate_of_fifty_a_second(redis: TestRedis) {
    let client = redis.client().await;
    client
        .set_limits(
            "proc-rate",
            Limits::new()
                .rate(Rate::new(50, Duration::from_secs(1)))
                .burst(5),
        )
        .await
        .unwrap();
    let q = client.queue("proc-rate").unwrap();
    let jobs: Vec<NewJob> = (0..1500u32)
        .map(|n| NewJob::new(&n).unwrap().name("paced"))
        .collect();
    q.submit_many(jobs).await.unwrap();
    let mut workers: Vec<std::process::Child> = (0..4)
        .map(|_| {
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jobqueue-test-worker"))
                .arg(redis.url())
                .arg("paced")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("the worker binary runs");
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.stdout.take().unwrap()),
                &mut line,
            )
            .unwrap();
            assert_eq!(line.trim(), "ready");
            child
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(12)).await;
    for worker in &mut workers {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(worker.id().to_string())
            .status();
    }
    for worker in &mut workers {
        worker.wait().unwrap();
    }
    let times = completion_times(&redis, "proc-rate").await;
    let first = times[0];
    let in_ten_seconds = times.iter().filter(|t| **t < first + 10_000).count();
    // The busiest one-second window, starting at each completion.
    let busiest = times
        .iter()
        .enumerate()
        .map(|(i, t)| times[i..].iter().take_while(|u| **u < t + 1_000).count())
        .max()
        .unwrap();
    println!(
        "{} completed in all; {in_ten_seconds} in the first 10 s; at most {busiest} in any one-second window",
        times.len()
    );
    assert!(
        (475..=525).contains(&in_ten_seconds),
        "500 +- 5% in 10 s, got {in_ten_seconds}"
    );
    assert!(
        busiest <= 50 + 5,
        "at most 50 a second plus the burst, got {busiest}"
    );
}

async fn weights_share_a_runners_slots_within_ten_percent_over_ten_thousand_jobs(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("weights");
    client
        .enqueue_many::<job_a>((0..10_000).map(|_| key.clone()))
        .await
        .unwrap();
    client
        .enqueue_many::<job_b>((0..10_000).map(|_| key.clone()))
        .await
        .unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["flow-a", "flow-b"])
        .weights([("flow-a", 3), ("flow-b", 1)])
        .concurrency(8)
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let done = eventually(Duration::from_secs(120), || async {
        FINISHED.lock().unwrap().get(&key).map_or(0, Vec::len) >= 10_000
    })
    .await;
    stop_runner(token, task).await;
    assert!(done, "10,000 jobs ran");
    let order = FINISHED.lock().unwrap()[&key].clone();
    let a = order[..10_000].iter().filter(|q| **q == 'a').count();
    let b = 10_000 - a;
    let ratio = a as f64 / b as f64;
    println!(
        "of the first 10,000 jobs: {a} from the weight-3 queue, {b} from the weight-1 queue: {ratio:.3} to 1"
    );
    assert!(
        (2.7..=3.3).contains(&ratio),
        "3:1 within 10%, got {ratio:.3}"
    );
}

async fn a_strict_order_serves_a_later_queue_only_when_earlier_ones_wait_for_nothing(
    redis: TestRedis,
) {
    let client = redis.client().await;
    let key = unique_key("strict");
    client
        .enqueue_many::<job_a>((0..400).map(|_| key.clone()))
        .await
        .unwrap();
    client
        .enqueue_many::<job_b>((0..100).map(|_| key.clone()))
        .await
        .unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["flow-a", "flow-b"])
        .strict_order(true)
        .concurrency(4)
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let done = eventually(Duration::from_secs(60), || async {
        FINISHED.lock().unwrap().get(&key).map_or(0, Vec::len) >= 500
    })
    .await;
    stop_runner(token, task).await;
    assert!(done, "every job ran");
    let order = FINISHED.lock().unwrap()[&key].clone();
    let last_a = order.iter().rposition(|q| *q == 'a').unwrap();
    let b_before = order[..last_a].iter().filter(|q| **q == 'b').count();
    println!("{b_before} job(s) of the second queue finished before the first queue's last");
    // Only slots the first queue was not waiting for at that moment (at
    // the start, between its claims) go to the second.
    assert!(b_before <= 8, "{b_before}");
}

async fn max_running_per_key_holds_and_keys_run_side_by_side(redis: TestRedis) {
    let client = redis.client().await;
    client
        .set_key_limits("flow-capped-keys", Limits::new().max_running(2))
        .await
        .unwrap();
    let key = unique_key("key-cap");
    let handles = client
        .enqueue_many::<per_key>((0..60).map(|i| (key.clone(), format!("tenant-{}", i % 3))))
        .await
        .unwrap();
    let (token, task) = start_runner(flow_runner(client.clone(), "flow-capped-keys", 20));
    for handle in &handles {
        handle.wait(Duration::from_secs(30)).await.unwrap();
    }
    stop_runner(token, task).await;
    let running = RUNNING.lock().unwrap().clone();
    let most: Vec<u32> = (0..3)
        .map(|i| running[&format!("{key}/tenant-{i}")].1)
        .collect();
    let together = running[&format!("{key}/*")].1;
    println!("most running at once per key: {most:?}; all keys together: {together}");
    assert_eq!(
        most,
        vec![2, 2, 2],
        "each key's cap is reached and never exceeded"
    );
    assert!(together >= 4, "keys run side by side: {together}");
}

async fn a_high_priority_job_goes_ahead_of_a_backlog_under_load(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("prio-load");
    client
        .enqueue_many::<step>((0..300).map(|i| (key.clone(), i, 5)))
        .await
        .unwrap();
    let (token, task) = start_runner(flow_runner(client.clone(), "flow", 2));
    assert!(
        eventually(Duration::from_secs(10), || async {
            starts(&key).len() >= 20
        })
        .await,
        "the backlog is being worked"
    );
    let urgent_handles = client
        .enqueue_many::<urgent>((1000..1010).map(|i| (key.clone(), i)))
        .await
        .unwrap();
    let enqueued_at = starts(&key).len();
    for handle in &urgent_handles {
        handle.wait(Duration::from_secs(10)).await.unwrap();
    }
    stop_runner(token, task).await;
    let order: Vec<u32> = starts(&key).into_iter().map(|(n, _)| n).collect();
    let last_urgent = order.iter().rposition(|n| *n >= 1000).unwrap();
    let backlog_between = order[enqueued_at..last_urgent]
        .iter()
        .filter(|n| **n < 1000)
        .count();
    let urgent_order: Vec<u32> = order.iter().copied().filter(|n| *n >= 1000).collect();
    println!(
        "{backlog_between} backlog job(s) started between the urgent jobs' enqueue and the last of them"
    );
    assert!(backlog_between <= 6, "{backlog_between}");
    // FIFO within the level (two run at once, so neighbours may swap as
    // their handlers start).
    for (i, n) in urgent_order.iter().enumerate() {
        assert!(n.abs_diff(1000 + i as u32) <= 1, "{urgent_order:?}");
    }
}

/// The name of `suffix` of `queue` in the layout `redis` uses.
fn key_of(redis: &TestRedis, queue: &str, suffix: &str) -> String {
    if redis.is_cluster() {
        format!("queue:{{{queue}}}:{suffix}")
    } else {
        format!("queue:{queue}:{suffix}")
    }
}

async fn malformed_limits_refuse_the_claim_and_write_nothing(redis: TestRedis) {
    let q = redis.queue("flow-bad", QueueOptions::new()).await;
    let id = q.enqueue(&1).await.unwrap();
    let mut conn = redis.conn().await;
    hset(
        &mut conn,
        &key_of(&redis, "flow-bad", "limits"),
        &[("rate", "lots")],
    )
    .await;
    let err = q.claim(Duration::ZERO).await.unwrap_err();
    println!("claim with malformed limits: {err}");
    assert!(err.to_string().contains("limits"), "{err}");
    assert_eq!(
        q.list_pending(0..10).await.unwrap(),
        vec![id.clone()],
        "nothing was taken"
    );
    assert_eq!(q.stats().await.unwrap().processing_depth, 0);
    // The writer refuses what the claim would: nothing malformed is stored
    // through it, and a valid write repairs the queue.
    q.set_limits(&Limits::new().max_running(3)).await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(job.id(), id);
}

async fn a_lane_key_of_another_type_loses_no_job(redis: TestRedis) {
    let q = redis.queue("flow-hostile", QueueOptions::new()).await;
    let mut conn = redis.conn().await;
    let lane = key_of(&redis, "flow-hostile", "pending:2");
    let keyed = key_of(&redis, "flow-hostile", "keyed:t1");
    exec(&mut conn, &["SET", &lane, "not a list"]).await;
    exec(&mut conn, &["SET", &keyed, "not a list either"]).await;
    let high = q
        .submit(with(&1, EnqueueOptions::new().priority(2)))
        .await
        .unwrap();
    let tenant = q
        .submit(with(&2, EnqueueOptions::new().rate_key("t1")))
        .await
        .unwrap();
    // Both wait in pending instead, and are claimed from there.
    let pending = q.list_pending(0..10).await.unwrap();
    assert_eq!(pending, vec![high.clone(), tenant.clone()]);
    let jobs = q.claim_many(10, Duration::ZERO).await.unwrap();
    let ids: Vec<&str> = jobs.iter().map(|j| j.id()).collect();
    assert_eq!(ids, vec![high.as_str(), tenant.as_str()]);
    // Marked as a level with jobs, the broken lane does not stop a claim.
    exec(
        &mut conn,
        &["SADD", &key_of(&redis, "flow-hostile", "levels"), "2"],
    )
    .await;
    let next = q.enqueue(&3).await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(job.id(), next);
}

async fn a_purge_empties_every_lane_and_keeps_the_limits(redis: TestRedis) {
    let q = redis.queue("flow-purge", QueueOptions::new()).await;
    let limits = Limits::new().max_running(7);
    q.set_limits(&limits).await.unwrap();
    q.enqueue(&0).await.unwrap();
    q.submit(with(&1, EnqueueOptions::new().priority(3)))
        .await
        .unwrap();
    q.submit(with(&2, EnqueueOptions::new().priority(-1)))
        .await
        .unwrap();
    q.submit(with(&3, EnqueueOptions::new().rate_key("t1")))
        .await
        .unwrap();
    assert_eq!(q.stats().await.unwrap().pending_depth, 4);
    q.purge().await.unwrap();
    let stats = q.stats().await.unwrap();
    assert_eq!(
        (
            stats.pending_depth,
            stats.prioritized_depth,
            stats.keyed_depth,
            stats.rate_keys
        ),
        (0, 0, 0, 0)
    );
    assert!(q.list_pending(0..10).await.unwrap().is_empty());
    assert_eq!(
        q.limits().await.unwrap().queue,
        limits,
        "configuration survives a purge"
    );
    let id = q
        .submit(with(&4, EnqueueOptions::new().priority(3)))
        .await
        .unwrap();
    assert_eq!(q.claim(Duration::ZERO).await.unwrap().unwrap().id(), id);
}

/// Redis < 6.2 has no BLMOVE: an idle runner blocks in BRPOPLPUSH, which
/// moves a job before the claim script sees the limits (forced here, as the
/// server is newer). A job it took while the rate is spent goes back first
/// in line unclaimed, and a job in another lane wakes the runner within
/// about a second (the wake list is looked at between waits).
#[tokio::test(flavor = "multi_thread")]
async fn with_brpoplpush_a_rate_still_holds_and_other_lanes_wake_the_runner() {
    let server = RedisServer::start();
    let conn = jobqueue::connection::Connection::connect_with(
        server.url().as_str(),
        jobqueue::connection::ConnectionOptions::new().force_legacy_claim(true),
    )
    .await
    .unwrap();
    assert!(conn.legacy_claim());
    let client = Client::new(&conn);
    client
        .set_limits(
            "flow",
            Limits::new()
                .rate(Rate::new(2, Duration::from_secs(1)))
                .burst(1),
        )
        .await
        .unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["flow"])
        .claim_block(Duration::from_secs(20))
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let key = unique_key("legacy");
    // Arriving one by one at an idle runner: each is taken by BRPOPLPUSH.
    let mut handles = Vec::new();
    for i in 0..5 {
        handles.push(client.enqueue::<step>((key.clone(), i, 0)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for handle in &handles {
        handle.wait(Duration::from_secs(10)).await.unwrap();
    }
    let times: Vec<Instant> = starts(&key).into_iter().map(|(_, t)| t).collect();
    let gaps: Vec<Duration> = times.windows(2).map(|p| p[1] - p[0]).collect();
    println!("starts under 2/s with BRPOPLPUSH, apart by {gaps:?}");
    for gap in &gaps {
        assert!(*gap >= Duration::from_millis(400), "{gaps:?}");
    }
    client.set_limits("flow", Limits::new()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = Instant::now();
    let high = client.enqueue::<urgent>((key.clone(), 99)).await.unwrap();
    high.wait(Duration::from_secs(5)).await.unwrap();
    let took = began.elapsed();
    stop_runner(token, task).await;
    println!("a priority job woke the BRPOPLPUSH runner after {took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

async fn declared_limits_are_written_once_and_never_revert_an_operators(redis: TestRedis) {
    let client = redis.client().await;
    let declared_limits = Limits::new()
        .rate(Rate::new(20, Duration::from_secs(1)))
        .burst(2)
        .max_running(3);
    let start = || start_runner(flow_runner(client.clone(), "flow-declared", 2));
    let (token, task) = start();
    let written = eventually(Duration::from_secs(5), || async {
        client.limits("flow-declared").await.unwrap().queue == declared_limits
    })
    .await;
    stop_runner(token, task).await;
    assert!(written, "the runner wrote the declared limits");
    // An operator lifts the cap; a restarted runner (a deploy) keeps it so.
    let operators = Limits::new().rate(Rate::new(5, Duration::from_secs(1)));
    client.set_limits("flow-declared", operators).await.unwrap();
    let (token, task) = start();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop_runner(token, task).await;
    let after = client.limits("flow-declared").await.unwrap().queue;
    assert_eq!(after.rate, operators.rate);
    assert_eq!(after.max_running, None, "the operator's removal stands");
    // Cleared by the operator: still not reverted.
    client
        .set_limits("flow-declared", Limits::new())
        .await
        .unwrap();
    let (token, task) = start();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop_runner(token, task).await;
    assert!(
        client
            .limits("flow-declared")
            .await
            .unwrap()
            .queue
            .is_empty()
    );
}

async fn a_slot_freed_by_a_dead_letter_wakes_a_runner_waiting_at_the_cap(redis: TestRedis) {
    let client = redis.client().await;
    client
        .set_limits("flow-capped", Limits::new().max_running(1))
        .await
        .unwrap();
    let key = unique_key("cap-wake");
    let q = client.queue("flow-capped").unwrap();
    client
        .enqueue::<capped_step>((key.clone(), 0, false))
        .await
        .unwrap();
    let next = client
        .enqueue::<capped_step>((key.clone(), 1, false))
        .await
        .unwrap();
    // Another worker holds the one slot...
    let held = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["flow-capped"])
        .claim_block(Duration::from_secs(20))
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(starts(&key).is_empty(), "the cap holds the runner back");
    // ... and fails its job for good.
    let failed = Instant::now();
    assert_eq!(
        q.fail_permanently(&held, "no").await.unwrap(),
        jobqueue::queue::Ack::Failed
    );
    next.wait(Duration::from_secs(10)).await.unwrap();
    stop_runner(token, task).await;
    let gap = starts(&key)[0].1 - failed;
    println!(
        "the waiting runner started the next job {gap:?} after the slot was freed by a dead letter"
    );
    // Before, only a completion or a retry woke the waiter; a dead letter
    // left it to the lease deadline (5 s).
    assert!(gap < Duration::from_secs(2), "{gap:?}");
}

async fn a_claim_a_reference_sweeper_took_back_frees_its_key_slot(redis: TestRedis) {
    let q = redis
        .queue(
            "flow-leak",
            QueueOptions::new().visibility(Duration::from_millis(200)),
        )
        .await;
    q.set_key_limits(&Limits::new().max_running(1))
        .await
        .unwrap();
    let id = q
        .submit(with(&1, EnqueueOptions::new().rate_key("t1")))
        .await
        .unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(job.id(), id);
    let mut conn = redis.conn().await;
    let key_leases = key_of(&redis, "flow-leak", "key-leases:t1");
    let held: u64 = redis::cmd("ZCARD")
        .arg(&key_leases)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(held, 1);
    // A reference sweeper takes the job back on its own (it knows nothing
    // of leases), and its lease then runs out.
    exec(
        &mut conn,
        &["LREM", &key_of(&redis, "flow-leak", "processing"), "0", &id],
    )
    .await;
    exec(
        &mut conn,
        &["LPUSH", &key_of(&redis, "flow-leak", "pending"), &id],
    )
    .await;
    hset(
        &mut conn,
        &key_of(&redis, "flow-leak", &format!("job:{id}")),
        &[("status", "pending"), ("claim_token", "")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    q.reclaim_stuck().await.unwrap();
    let held: u64 = redis::cmd("ZCARD")
        .arg(&key_leases)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(held, 0, "the key's slot is free again");
}
on_each_topology! {
    #[tokio::test(flavor = "multi_thread")] priorities_order_claims_highest_level_first_fifo_within,
    #[tokio::test(flavor = "multi_thread")] an_idle_runner_wakes_at_once_for_a_job_in_any_lane,
    #[tokio::test(flavor = "multi_thread")] a_rate_limit_spaces_claims_and_says_how_long_to_wait,
    #[tokio::test(flavor = "multi_thread")] max_running_holds_across_three_runners_and_is_reached,
    #[tokio::test(flavor = "multi_thread")] a_throttled_key_does_not_delay_another_keys_jobs,
    #[tokio::test(flavor = "multi_thread")] an_upstream_429_backs_off_the_whole_queue,
    #[tokio::test(flavor = "multi_thread")] limits_changed_live_apply_within_a_second_on_every_runner,
    #[tokio::test(flavor = "multi_thread")] four_runner_processes_keep_a_fleet_wide_rate_of_fifty_a_second,
    #[tokio::test(flavor = "multi_thread")] weights_share_a_runners_slots_within_ten_percent_over_ten_thousand_jobs,
    #[tokio::test(flavor = "multi_thread")] a_strict_order_serves_a_later_queue_only_when_earlier_ones_wait_for_nothing,
    #[tokio::test(flavor = "multi_thread")] max_running_per_key_holds_and_keys_run_side_by_side,
    #[tokio::test(flavor = "multi_thread")] a_high_priority_job_goes_ahead_of_a_backlog_under_load,
    #[tokio::test(flavor = "multi_thread")] malformed_limits_refuse_the_claim_and_write_nothing,
    #[tokio::test(flavor = "multi_thread")] a_lane_key_of_another_type_loses_no_job,
    #[tokio::test(flavor = "multi_thread")] a_purge_empties_every_lane_and_keeps_the_limits,
    #[tokio::test(flavor = "multi_thread")] declared_limits_are_written_once_and_never_revert_an_operators,
    #[tokio::test(flavor = "multi_thread")] a_slot_freed_by_a_dead_letter_wakes_a_runner_waiting_at_the_cap,
    #[tokio::test(flavor = "multi_thread")] a_claim_a_reference_sweeper_took_back_frees_its_key_slot,
}
