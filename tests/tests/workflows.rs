//! Batches and chains against a real Redis, on a single server and on the
//! private cluster (where every queue below is in its own slot): chains
//! pass typed outputs on and stop at a failed step; a batch's callbacks
//! run once with the right summary, on_success only when all succeeded; a
//! child's end waits in its queue's outbox until a runner relays it; a
//! repeated relay counts nothing twice.
//!
//! The multi-process batch (1,000 children, 2 runner processes, one
//! killed) is in `workflow_processes.rs`.

use std::sync::Mutex;
use std::time::Duration;

use jobqueue::queue::JobStatus;
use jobqueue::workflow::{BatchState, BatchSummary};
use jobqueue::{Error, JobError, Runner, job};
use jobqueue_tests::*;

/// Every callback run: (queue, summary as JSON).
static CALLBACKS: Mutex<Vec<(String, serde_json::Value)>> = Mutex::new(Vec::new());

fn callbacks_of(batch: &str) -> Vec<serde_json::Value> {
    CALLBACKS
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s)| s["batch"] == batch)
        .map(|(_, s)| s.clone())
        .collect()
}

#[job(queue = "wf-fetch")]
async fn wf_fetch(url: String) -> Result<String, String> {
    Ok(format!("<html>{url}</html>"))
}

#[job(queue = "wf-measure")]
async fn wf_measure(body: String) -> Result<usize, String> {
    Ok(body.len())
}

#[job(queue = "wf-report")]
async fn wf_report(length: usize) -> Result<String, String> {
    Ok(format!("{length} bytes"))
}

/// Fails for good on an empty body.
#[job(queue = "wf-measure", max_attempts = 1)]
async fn wf_strict(body: String) -> Result<usize, JobError> {
    if body.contains("empty") {
        return Err(JobError::permanent("the page was empty"));
    }
    Ok(body.len())
}

/// A child: fails for good when `n` is a multiple of 5.
#[job(queue = "wf-kids", max_attempts = 1)]
async fn wf_child(n: u64) -> Result<u64, JobError> {
    if n.is_multiple_of(5) {
        return Err(JobError::permanent(format!("{n} is a multiple of 5")));
    }
    Ok(n * 2)
}

/// A child on another queue, always completes.
#[job(queue = "wf-other")]
async fn wf_other(n: u64) -> u64 {
    n
}

/// A child on a third queue, with a short random-ish nap so that ends
/// interleave across runners.
#[job(queue = "wf-race")]
async fn wf_race(n: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(n % 7)).await;
    n
}

/// A child that waits (queue nobody runs in some tests).
#[job(queue = "wf-idle")]
async fn wf_idle(n: u64) -> u64 {
    n
}

/// Outputs more than a job payload may hold (512 KiB by default).
#[job(queue = "wf-fetch")]
async fn wf_huge(n: usize) -> Result<String, String> {
    Ok("x".repeat(n))
}

/// Unique by its payload for a minute.
#[job(queue = "wf-other", unique_for = "1m")]
async fn wf_unique(n: u64) -> u64 {
    n
}

#[job(queue = "wf-done")]
async fn wf_done(summary: BatchSummary<String>) {
    let value = serde_json::to_value(&summary).unwrap();
    CALLBACKS.lock().unwrap().push(("complete".into(), value));
}

#[job(queue = "wf-done")]
async fn wf_all_good(summary: BatchSummary<String>) {
    let value = serde_json::to_value(&summary).unwrap();
    CALLBACKS.lock().unwrap().push(("success".into(), value));
}

async fn three_typed_steps_return_the_last_output(redis: TestRedis) {
    let client = redis.client().await;
    let runner = Runner::builder(client.clone())
        .queues(["wf-fetch", "wf-measure", "wf-report"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let chain = client
        .chain::<wf_fetch>("example.com".into())
        .then::<wf_measure>()
        .then::<wf_report>()
        .enqueue()
        .await
        .unwrap();
    let out = chain.wait(Duration::from_secs(20)).await.unwrap();
    // "<html>example.com</html>" is 24 bytes.
    assert_eq!(out, "24 bytes");
    // Each step's hash says where it is in which chain.
    for step in 1..=3 {
        let queue = ["wf-fetch", "wf-measure", "wf-report"][step - 1];
        let record = client
            .queue(queue)
            .unwrap()
            .get_job(&chain.step_id(step))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.status(), Some(JobStatus::Completed));
        assert_eq!(record.field("chain_id"), Some(chain.id()));
        assert_eq!(
            record.field("chain_step"),
            Some(format!("{step}/3").as_str())
        );
    }
    stop_runner(token, task).await;
}

async fn a_failed_step_stops_the_chain_and_says_where(redis: TestRedis) {
    let client = redis.client().await;
    let runner = Runner::builder(client.clone())
        .queues(["wf-fetch", "wf-measure", "wf-report"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let chain = client
        .chain::<wf_fetch>("empty".into())
        .then::<wf_strict>()
        .then::<wf_report>()
        .enqueue()
        .await
        .unwrap();
    let err = chain.wait(Duration::from_secs(20)).await.unwrap_err();
    match &err {
        Error::ChainStopped {
            chain: id,
            step,
            of,
            job,
            error,
            ..
        } => {
            assert_eq!(id, chain.id());
            assert_eq!((*step, *of), (2, 3));
            assert_eq!(job, "wf_strict");
            assert_eq!(error, "the page was empty");
        }
        other => panic!("expected ChainStopped, got {other}"),
    }
    // The dead letter names the chain; the third step never exists, even
    // after a few relay passes.
    let failed = client
        .queue("wf-measure")
        .unwrap()
        .get_job(&chain.step_id(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status(), Some(JobStatus::Failed));
    assert_eq!(failed.field("chain_id"), Some(chain.id()));
    assert_eq!(failed.field("chain_step"), Some("2/3"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let third = client
        .queue("wf-report")
        .unwrap()
        .get_job(&chain.step_id(3))
        .await
        .unwrap();
    assert!(third.is_none(), "the step after a failed one was written");
    stop_runner(token, task).await;
}

async fn a_batch_calls_back_once_with_its_summary(redis: TestRedis) {
    let client = redis.client().await;
    let runner = Runner::builder(client.clone())
        .queues(["wf-kids", "wf-other", "wf-done"])
        .concurrency(8)
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let mut batch = client.batch();
    for n in 1..=20 {
        batch = batch.add::<wf_child>(n);
    }
    for n in 0..5 {
        batch = batch.add::<wf_other>(n);
    }
    let handle = batch
        .on_complete::<wf_done, _>("label".to_owned())
        .on_success::<wf_all_good, _>("never".to_owned())
        .enqueue()
        .await
        .unwrap();
    assert_eq!(handle.children().len(), 25);
    let status = handle.wait(Duration::from_secs(30)).await.unwrap();
    assert_eq!(status.state, BatchState::Done);
    assert_eq!((status.total, status.succeeded, status.failed), (25, 21, 4));
    // The callback is released in the call that completed the batch; give
    // it the time to run.
    let id = handle.id().to_owned();
    assert!(
        eventually(Duration::from_secs(10), || async {
            !callbacks_of(&id).is_empty()
        })
        .await
    );
    // on_success was not released: 4 children failed. It ended as
    // cancelled, with the reason.
    let on_success = status.on_success.clone().unwrap();
    let skipped = client
        .queue("wf-done")
        .unwrap()
        .get_job(&on_success)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(skipped.status(), Some(JobStatus::Cancelled));
    assert_eq!(
        skipped.cancel_reason(),
        Some(format!("batch {id}: 4 of 25 children did not succeed").as_str())
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let runs = callbacks_of(&id);
    assert_eq!(runs.len(), 1, "the callback ran {} times", runs.len());
    let summary = &runs[0];
    assert_eq!(summary["total"], 25);
    assert_eq!(summary["succeeded"], 21);
    assert_eq!(summary["failed"], 4);
    assert_eq!(summary["payload"], "label");
    assert_eq!(summary["children"].as_array().unwrap().len(), 25);
    let mut reasons: Vec<String> = summary["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["outcome"], "failed");
            f["reason"].as_str().unwrap().to_owned()
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "10 is a multiple of 5",
            "15 is a multiple of 5",
            "20 is a multiple of 5",
            "5 is a multiple of 5"
        ]
    );
    // The batch is listed for the dashboard and the CLI.
    let listed = client.batches("wf-done", 10).await.unwrap();
    assert!(listed.iter().any(|b| b.id == id && b.is_done()));
    // Every outbox was emptied by the relay.
    let mut conn = redis.conn().await;
    for queue in ["wf-kids", "wf-other"] {
        let outbox = client.queue(queue).unwrap().keys().outbox();
        let left: u64 = redis::cmd("ZCARD")
            .arg(&outbox)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(left, 0, "{outbox}");
    }
    stop_runner(token, task).await;
}

async fn on_success_runs_when_every_child_succeeded(redis: TestRedis) {
    let client = redis.client().await;
    let runner = Runner::builder(client.clone())
        .queues(["wf-other", "wf-done"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let handle = client
        .batch()
        .add::<wf_other>(1)
        .add::<wf_other>(2)
        .add::<wf_other>(3)
        .on_success::<wf_all_good, _>("all".to_owned())
        .enqueue()
        .await
        .unwrap();
    let status = handle.wait(Duration::from_secs(20)).await.unwrap();
    assert_eq!((status.succeeded, status.failed), (3, 0));
    let id = handle.id().to_owned();
    assert!(
        eventually(Duration::from_secs(10), || async {
            callbacks_of(&id).len() == 1
        })
        .await
    );
    let summary = &callbacks_of(&id)[0];
    assert_eq!(summary["payload"], "all");
    assert_eq!(summary["failures"].as_array().unwrap().len(), 0);
    stop_runner(token, task).await;
}

/// A child's end waits in its queue's outbox while no runner relays it
/// (here: children cancelled by a caller, no runner at all), and the batch
/// completes once one does. Then a relay repeated by hand (the same ends
/// written to the outbox again, as after a crash between the relay and the
/// delete) changes no count and releases nothing twice.
async fn ends_wait_in_the_outbox_and_count_once(redis: TestRedis) {
    let client = redis.client().await;
    let handle = client
        .batch()
        .add::<wf_idle>(1)
        .add::<wf_idle>(2)
        .on_complete::<wf_done, _>("cancelled ones".to_owned())
        .enqueue()
        .await
        .unwrap();
    for (_, id) in handle.children() {
        client.cancel::<wf_idle>(id).await.unwrap();
    }
    let idle = client.queue("wf-idle").unwrap();
    let mut conn = redis.conn().await;
    let waiting: Vec<String> = redis::cmd("ZRANGE")
        .arg(idle.keys().outbox())
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(waiting.len(), 2, "each cancelled child left an entry");
    let status = handle.status().await.unwrap().unwrap();
    assert_eq!((status.state, status.failed), (BatchState::Open, 0));

    // A runner for the children's queue relays them; the callback queue's
    // runner runs the callback.
    let runner = Runner::builder(client.clone())
        .queues(["wf-idle", "wf-done"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let status = handle.wait(Duration::from_secs(20)).await.unwrap();
    assert_eq!((status.succeeded, status.failed), (0, 2));
    let id = handle.id().to_owned();
    assert!(
        eventually(Duration::from_secs(10), || async {
            callbacks_of(&id).len() == 1
        })
        .await
    );
    assert_eq!(callbacks_of(&id)[0]["failures"][0]["outcome"], "cancelled");

    // The same two ends again, as a crashed relay would leave them.
    for (_, child) in handle.children() {
        let entry = serde_json::json!({
            "outcome": "ok", "detail": "", "batch": format!("wf-done/{id}"), "chain": ""
        })
        .to_string();
        exec(
            &mut conn,
            &["HSET", &idle.keys().outbox_entries(), child, &entry],
        )
        .await;
        exec(&mut conn, &["ZADD", &idle.keys().outbox(), "1", child]).await;
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            let left: u64 = redis::cmd("ZCARD")
                .arg(idle.keys().outbox())
                .query_async(&mut redis.conn().await)
                .await
                .unwrap();
            left == 0
        })
        .await
    );
    let status = handle.status().await.unwrap().unwrap();
    assert_eq!(
        (status.succeeded, status.failed),
        (0, 2),
        "a repeat counted"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(callbacks_of(&id).len(), 1, "a repeat released the callback");
    stop_runner(token, task).await;
}

/// Bad batches are refused before anything is written.
async fn bad_batches_are_refused_with_nothing_written(redis: TestRedis) {
    let client = redis.client().await;
    let err = client.batch().enqueue().await.unwrap_err();
    assert!(err.to_string().contains("at least one child"), "{err}");
    let err = client
        .batch()
        .add::<wf_other>(1)
        .on_complete::<wf_done, _>("a".to_owned())
        .id("fixed-id")
        .enqueue()
        .await
        .map(|h| h.id().to_owned());
    assert_eq!(err.unwrap(), "fixed-id");
    let again = client
        .batch()
        .add::<wf_other>(1)
        .on_complete::<wf_done, _>("a".to_owned())
        .id("fixed-id")
        .enqueue()
        .await
        .unwrap_err();
    assert!(again.to_string().contains("exists already"), "{again}");
    let too_many = (0..=jobqueue::workflow::MAX_BATCH_CHILDREN as u64)
        .fold(client.batch(), |b, n| b.add::<wf_other>(n))
        .enqueue()
        .await
        .unwrap_err();
    assert!(too_many.to_string().contains("at most"), "{too_many}");
    // Only the one batch exists.
    assert_eq!(client.batches("wf-done", 10).await.unwrap().len(), 1);
    assert_eq!(client.batches("wf-other", 10).await.unwrap().len(), 0);
}

/// Many small batches whose children run on three runners at once: the
/// last children of a batch often end on different runners within the
/// same moment, and their relays race. Every batch calls back exactly once.
async fn racing_last_children_release_each_callback_once(redis: TestRedis) {
    const BATCHES: usize = 30;
    let client = redis.client().await;
    let runners: Vec<_> = (0..3)
        .map(|_| {
            let runner = Runner::builder(client.clone())
                .queues(["wf-other", "wf-race", "wf-done"])
                .concurrency(4)
                .build()
                .unwrap();
            start_runner(runner)
        })
        .collect();
    let mut handles = Vec::new();
    for b in 0..BATCHES as u64 {
        let handle = client
            .batch()
            .add::<wf_other>(b)
            .add::<wf_race>(b)
            .add::<wf_other>(b + 1)
            .add::<wf_race>(b + 1)
            .on_complete::<wf_done, _>(format!("race {b}"))
            .enqueue()
            .await
            .unwrap();
        handles.push(handle);
    }
    for handle in &handles {
        let status = handle.wait(Duration::from_secs(30)).await.unwrap();
        assert_eq!((status.succeeded, status.failed), (4, 0));
    }
    let ids: Vec<String> = handles.iter().map(|h| h.id().to_owned()).collect();
    assert!(
        eventually(Duration::from_secs(15), || async {
            ids.iter().all(|id| !callbacks_of(id).is_empty())
        })
        .await,
        "some callbacks never ran"
    );
    // Several relay passes of every runner later, still one run each.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for id in &ids {
        assert_eq!(callbacks_of(id).len(), 1, "batch {id}");
    }
    for (token, task) in runners {
        stop_runner(token, task).await;
    }
}

/// Children the enqueue leaves unwritten (a unique child whose lock is
/// held, an id of the caller's that names an existing job) are recorded as
/// failed at once, so the batch still completes; a batch given a callback
/// twice, or a child id twice, is refused before anything is written.
async fn children_that_cannot_be_written_still_let_the_batch_complete(redis: TestRedis) {
    let client = redis.client().await;
    let holder = client.enqueue::<wf_unique>(7).await.unwrap();
    let taken = client
        .enqueue_with::<wf_other>(1, jobqueue::client::EnqueueOptions::new().id("taken-id"))
        .await
        .unwrap();
    let handle = client
        .batch()
        .add::<wf_unique>(7)
        .add_with::<wf_other>(2, jobqueue::client::EnqueueOptions::new().id("taken-id"))
        .add::<wf_other>(3)
        .on_complete::<wf_done, _>("unwritten".to_owned())
        .enqueue()
        .await
        .unwrap();
    let status = handle.status().await.unwrap().unwrap();
    assert_eq!((status.failed, status.succeeded), (2, 0), "{status}");
    let runner = Runner::builder(client.clone())
        .queues(["wf-other", "wf-done"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let status = handle.wait(Duration::from_secs(20)).await.unwrap();
    assert_eq!((status.succeeded, status.failed), (1, 2), "{status}");
    let id = handle.id().to_owned();
    assert!(
        eventually(Duration::from_secs(10), || async {
            callbacks_of(&id).len() == 1
        })
        .await
    );
    let mut reasons: Vec<String> = callbacks_of(&id)[0]["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reason"].as_str().unwrap().to_owned())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "not enqueued: a job with id taken-id exists already".to_owned(),
            format!(
                "not enqueued: its unique lock is held by job {}",
                holder.id()
            ),
        ]
    );
    // The job that held the id is untouched (not part of the batch).
    let record = client
        .queue("wf-other")
        .unwrap()
        .get_job(taken.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.field("batch"), None);
    stop_runner(token, task).await;

    let twice = client
        .batch()
        .add::<wf_other>(1)
        .on_complete::<wf_done, _>("a".to_owned())
        .on_complete::<wf_done, _>("b".to_owned())
        .enqueue()
        .await
        .unwrap_err();
    assert!(
        twice.to_string().contains("on_complete is given twice"),
        "{twice}"
    );
    let same_id = client
        .batch()
        .add_with::<wf_other>(1, jobqueue::client::EnqueueOptions::new().id("dup"))
        .add_with::<wf_other>(2, jobqueue::client::EnqueueOptions::new().id("dup"))
        .enqueue()
        .await
        .unwrap_err();
    assert!(same_id.to_string().contains("given twice"), "{same_id}");
    assert_eq!(client.batches("wf-done", 10).await.unwrap().len(), 1);
}

/// A step whose output cannot be the next step's payload (over the
/// payload limit) stops the chain, and the wait says where and why.
async fn a_step_the_relay_cannot_write_stops_the_chain(redis: TestRedis) {
    let client = redis.client().await;
    let runner = Runner::builder(client.clone())
        .queues(["wf-fetch", "wf-measure"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let chain = client
        .chain::<wf_huge>(600 * 1024)
        .then::<wf_measure>()
        .enqueue()
        .await
        .unwrap();
    let err = chain.wait(Duration::from_secs(20)).await.unwrap_err();
    match &err {
        Error::ChainStopped {
            step, of, error, ..
        } => {
            assert_eq!((*step, *of), (2, 2));
            assert!(
                error.starts_with("the next step could not be written"),
                "{error}"
            );
        }
        other => panic!("expected ChainStopped, got {other}"),
    }
    stop_runner(token, task).await;
}

on_each_topology!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    three_typed_steps_return_the_last_output,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_failed_step_stops_the_chain_and_says_where,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_batch_calls_back_once_with_its_summary,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    on_success_runs_when_every_child_succeeded,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    ends_wait_in_the_outbox_and_count_once,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    bad_batches_are_refused_with_nothing_written,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    racing_last_children_release_each_callback_once,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    children_that_cannot_be_written_still_let_the_batch_complete,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_step_the_relay_cannot_write_stops_the_chain,
);
