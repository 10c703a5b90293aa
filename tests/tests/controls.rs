//! Snooze, expiry and cancellation, against a single server and a
//! three-primary cluster: a snooze gives the attempt back and is capped; a
//! job that cannot start by its deadline never runs; a cancelled waiting job
//! never runs, and a running one is stopped at its next lease renewal and
//! ends as cancelled however it settles, never retried.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobqueue::client::EnqueueOptions;
use jobqueue::queue::{Ack, CancelOutcome, JobStatus, QueueOptions};
use jobqueue::{Client, Error, JobContext, JobError, Runner, job};
use jobqueue_tests::*;

/// How many times each test's key ran, and when a run saw its cancel.
static RUNS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());
static SAW_CANCEL: Mutex<BTreeMap<String, Instant>> = Mutex::new(BTreeMap::new());

fn ran(key: &str) -> u32 {
    let mut runs = RUNS.lock().unwrap();
    let n = runs.entry(key.to_owned()).or_default();
    *n += 1;
    *n
}

fn runs(key: &str) -> u32 {
    RUNS.lock().unwrap().get(key).copied().unwrap_or(0)
}

/// Snoozes its first `times` runs (alternately for 0 and 50 ms), then
/// returns how many runs it took. One attempt only: a snooze that charged
/// an attempt would send it to the dead letters.
#[job(queue = "ctl-snooze", max_attempts = 1)]
async fn snoozer(args: (String, u32)) -> Result<u32, JobError> {
    let n = ran(&args.0);
    if n <= args.1 {
        let delay = if n.is_multiple_of(2) { 0 } else { 50 };
        return Err(JobError::snooze(Duration::from_millis(delay)));
    }
    Ok(n)
}

/// Counts its runs.
#[job(queue = "ctl-expire")]
async fn counted(key: String) {
    ran(&key);
}

/// Must start within 150 ms of being enqueued.
#[job(queue = "ctl-expire", expires = "150ms")]
async fn perishable(key: String) {
    ran(&key);
}

/// Fails once, asking for a retry in 2 s.
#[job(queue = "ctl-expire")]
async fn late_retry(key: String) -> Result<(), JobError> {
    ran(&key);
    Err(JobError::retry_after("not yet", Duration::from_secs(2)))
}

/// Waits for its cancel (up to 30 s), records when it saw it, and then
/// reports success: a cancelled job must still end as cancelled.
#[job(queue = "ctl-cancel", visibility = "600ms")]
async fn patient(key: String, ctx: JobContext) -> Result<String, JobError> {
    ran(&key);
    if tokio::time::timeout(Duration::from_secs(30), ctx.cancelled())
        .await
        .is_ok()
    {
        SAW_CANCEL
            .lock()
            .unwrap()
            .insert(key.clone(), Instant::now());
    }
    Ok("finished anyway".to_owned())
}

fn runner(client: Client, queues: &[&str]) -> Runner {
    Runner::builder(client)
        .queues(queues.iter().copied())
        .sweep_interval(Duration::from_millis(100))
        .build()
        .unwrap()
}

async fn snoozing_gives_the_attempt_back_and_counts_the_snoozes(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("snooze");
    let handle = client.enqueue::<snoozer>((key.clone(), 5)).await.unwrap();
    let (token, task) = start_runner(runner(client.clone(), &["ctl-snooze"]));
    let out = handle.wait(Duration::from_secs(20)).await;
    stop_runner(token, task).await;
    assert_eq!(out.unwrap(), 6, "five snoozes, then the run that completed");
    let record = handle.record().await.unwrap().unwrap();
    assert_eq!(
        record.field("attempts"),
        Some("1"),
        "snoozes charge no attempt"
    );
    assert_eq!(record.field("snoozes"), Some("5"));
    assert_eq!(record.last_error(), None, "a snooze records no error");
    let stats = handle.queue().stats().await.unwrap();
    assert_eq!(stats.snoozed_total, 5);
    assert_eq!((stats.retried_total, stats.failed_total), (0, 0));
}

async fn a_job_that_snoozes_past_the_cap_becomes_a_dead_letter(redis: TestRedis) {
    let client = Client::builder(&redis.connection().await)
        .queue_options(QueueOptions::new().max_snoozes(3))
        .build()
        .unwrap();
    let key = unique_key("snooze-cap");
    let handle = client.enqueue::<snoozer>((key.clone(), 100)).await.unwrap();
    let (token, task) = start_runner(runner(client.clone(), &["ctl-snooze"]));
    let out = handle.wait(Duration::from_secs(20)).await;
    stop_runner(token, task).await;
    match out {
        Err(Error::JobFailed { error, .. }) => {
            assert!(error.contains("snoozed 3 times"), "{error}");
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
    assert_eq!(runs(&key), 4, "three snoozes, then the one past the cap");
    assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Failed));
}

async fn a_job_not_started_by_its_deadline_never_runs(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("expire");
    // Due at once, with 150 ms to start (the #[job] default).
    let waiting = client.enqueue::<perishable>(key.clone()).await.unwrap();
    // Due in 300 ms, with 50 ms to start once due.
    let delayed = client
        .enqueue_with::<counted>(
            key.clone(),
            EnqueueOptions::new()
                .delay(Duration::from_millis(300))
                .expires_in(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    // No deadline: runs.
    let control_key = unique_key("expire-control");
    let control = client
        .enqueue::<counted>(control_key.clone())
        .await
        .unwrap();
    // Nothing runs until both deadlines have passed.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (token, task) = start_runner(runner(client.clone(), &["ctl-expire"]));
    control.wait(Duration::from_secs(10)).await.unwrap();
    let expired = |e: Result<(), Error>| match e {
        Err(Error::JobCancelled { reason, .. }) => reason.starts_with("expired"),
        _ => false,
    };
    assert!(expired(waiting.wait(Duration::from_secs(10)).await));
    assert!(expired(delayed.wait(Duration::from_secs(10)).await));
    stop_runner(token, task).await;
    assert_eq!(runs(&key), 0, "neither ran");
    assert_eq!(runs(&control_key), 1);
    let stats = waiting.queue().stats().await.unwrap();
    assert_eq!(stats.expired_total, 2);
    assert_eq!(stats.cancelled_depth, 2, "both listed in cancelled");
    assert_eq!((stats.pending_depth, stats.scheduled_depth), (0, 0));
    assert_eq!(
        waiting.status().await.unwrap(),
        Some(JobStatus::Cancelled),
        "an expired job's status"
    );
}

async fn a_retry_that_would_start_past_the_deadline_ends_the_job_as_expired(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("late-retry");
    let handle = client
        .enqueue_with::<late_retry>(
            key.clone(),
            EnqueueOptions::new().expires_in(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    let (token, task) = start_runner(runner(client.clone(), &["ctl-expire"]));
    let out = handle.wait(Duration::from_secs(10)).await;
    stop_runner(token, task).await;
    match out {
        Err(Error::JobCancelled { reason, .. }) => {
            assert!(reason.starts_with("expired"), "{reason}")
        }
        other => panic!("expected expired, got {other:?}"),
    }
    assert_eq!(runs(&key), 1, "not retried");
    let stats = handle.queue().stats().await.unwrap();
    assert_eq!((stats.expired_total, stats.retried_total), (1, 0));
}

async fn a_cancelled_waiting_job_never_runs(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("cancel-waiting");
    let pending = client.enqueue::<counted>(key.clone()).await.unwrap();
    let scheduled = client
        .enqueue_with::<counted>(
            key.clone(),
            EnqueueOptions::new().delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    assert_eq!(
        pending.cancel().await.unwrap(),
        CancelOutcome::Cancelled(JobStatus::Pending)
    );
    assert_eq!(
        client.cancel::<counted>(scheduled.id()).await.unwrap(),
        CancelOutcome::Cancelled(JobStatus::Scheduled)
    );
    assert_eq!(
        pending.cancel().await.unwrap(),
        CancelOutcome::AlreadyFinished(JobStatus::Cancelled),
        "a second cancel says so"
    );
    assert_eq!(
        client.cancel::<counted>("no-such-job").await.unwrap(),
        CancelOutcome::NotFound
    );
    let stats = pending.queue().stats().await.unwrap();
    assert_eq!((stats.pending_depth, stats.scheduled_depth), (0, 0));
    assert_eq!((stats.cancelled_depth, stats.cancelled_total), (2, 2));
    match pending.wait(Duration::from_secs(5)).await {
        Err(Error::JobCancelled { reason, .. }) => assert_eq!(reason, "cancelled by a caller"),
        other => panic!("expected cancelled, got {other:?}"),
    }
    // A runner that drains the queue never runs them.
    let control_key = unique_key("cancel-control");
    let control = client
        .enqueue::<counted>(control_key.clone())
        .await
        .unwrap();
    let (token, task) = start_runner(runner(client.clone(), &["ctl-expire"]));
    control.wait(Duration::from_secs(10)).await.unwrap();
    stop_runner(token, task).await;
    assert_eq!(runs(&key), 0);
    let done = pending
        .queue()
        .get_job(pending.id())
        .await
        .unwrap()
        .unwrap();
    assert!(done.field("cancelled_at_ms").is_some());
}

async fn a_running_job_stops_at_its_next_renewal_and_ends_cancelled(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("cancel-running");
    let handle = client.enqueue::<patient>(key.clone()).await.unwrap();
    let (token, task) = start_runner(runner(client.clone(), &["ctl-cancel"]));
    assert!(
        eventually(Duration::from_secs(10), || async { runs(&key) == 1 }).await,
        "the job started"
    );
    let asked = Instant::now();
    assert_eq!(handle.cancel().await.unwrap(), CancelOutcome::Requested);
    assert_eq!(
        handle.cancel().await.unwrap(),
        CancelOutcome::Requested,
        "asked again while it runs"
    );
    let out = handle.wait(Duration::from_secs(10)).await;
    let saw = SAW_CANCEL.lock().unwrap().get(&key).copied();
    let saw = saw.expect("the handler saw ctx.cancelled()");
    // Renewals come every third of the 600 ms lease: the cancel arrives with
    // the next one, long before the handler's own 30 s wait would end.
    let after = saw.duration_since(asked);
    assert!(after < Duration::from_secs(2), "the cancel took {after:?}");
    eprintln!("cancel: the running handler saw it {after:?} after the request (lease 600 ms)");
    match out {
        Err(Error::JobCancelled { reason, .. }) => assert_eq!(reason, "cancelled by a caller"),
        other => panic!("a success after a cancel still ends cancelled, got {other:?}"),
    }
    // Never retried.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_runner(token, task).await;
    assert_eq!(runs(&key), 1);
    let stats = handle.queue().stats().await.unwrap();
    assert_eq!(
        (
            stats.cancelled_total,
            stats.completed_total,
            stats.processing_depth
        ),
        (1, 0, 0)
    );
}

async fn a_claim_whose_job_was_cancelled_ends_cancelled_however_it_settles(redis: TestRedis) {
    let q = redis
        .queue(
            "ctl-claims",
            QueueOptions::new().visibility(Duration::from_millis(300)),
        )
        .await;
    for n in 0..4 {
        q.enqueue(&n).await.unwrap();
    }
    let jobs = q.claim_many(4, Duration::from_secs(1)).await.unwrap();
    assert_eq!(jobs.len(), 4);
    for job in &jobs {
        assert_eq!(
            q.cancel(job.id(), "operator").await.unwrap(),
            CancelOutcome::Requested
        );
    }
    let [complete, fail, release, abandon] = &jobs[..] else {
        unreachable!()
    };
    assert_eq!(q.extend(complete).await.unwrap(), Ack::CancelRequested);
    assert_eq!(q.complete(complete, &"done").await.unwrap(), Ack::Cancelled);
    assert_eq!(
        q.complete(complete, &"done").await.unwrap(),
        Ack::Duplicate,
        "a repeat is a duplicate"
    );
    assert_eq!(
        q.fail(fail, "boom").await.unwrap(),
        Ack::Cancelled,
        "not retried"
    );
    assert_eq!(q.release(release).await.unwrap(), Ack::Cancelled);
    // The last one's worker "died": its lease runs out and the sweep ends it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = q.reclaim_stuck().await.unwrap();
    assert_eq!(report.cancelled, vec![abandon.id().to_owned()]);
    assert!(report.reclaimed.is_empty());
    for job in &jobs {
        let record = q.get_job(job.id()).await.unwrap().unwrap();
        assert_eq!(record.status(), Some(JobStatus::Cancelled), "{}", job.id());
        assert_eq!(record.cancel_reason(), Some("operator"));
    }
    let stats = q.stats().await.unwrap();
    assert_eq!(
        (
            stats.cancelled_total,
            stats.pending_depth,
            stats.processing_depth,
            stats.retried_total
        ),
        (4, 0, 0, 0)
    );
    assert_eq!(stats.cancelled_depth, 4);
    assert_eq!(
        q.cancel(complete.id(), "again").await.unwrap(),
        CancelOutcome::AlreadyFinished(JobStatus::Cancelled)
    );
}

on_each_topology! {
    #[tokio::test(flavor = "multi_thread")] snoozing_gives_the_attempt_back_and_counts_the_snoozes,
    #[tokio::test(flavor = "multi_thread")] a_job_that_snoozes_past_the_cap_becomes_a_dead_letter,
    #[tokio::test(flavor = "multi_thread")] a_job_not_started_by_its_deadline_never_runs,
    #[tokio::test(flavor = "multi_thread")] a_retry_that_would_start_past_the_deadline_ends_the_job_as_expired,
    #[tokio::test(flavor = "multi_thread")] a_cancelled_waiting_job_never_runs,
    #[tokio::test(flavor = "multi_thread")] a_running_job_stops_at_its_next_renewal_and_ends_cancelled,
    #[tokio::test(flavor = "multi_thread")] a_claim_whose_job_was_cancelled_ends_cancelled_however_it_settles,
}
