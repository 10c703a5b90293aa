//! The in-process metrics (feature `metrics`) against a real Redis: every
//! counter equals what was done, the histograms have one sample per run
//! (waits: per first attempt), the running gauge returns to zero and the
//! depth gauge follows the queue.
//!
//! One test in this binary: the recorder is global to the process, and its
//! snapshots reset what they read, so the topologies run one after the
//! other, then the depth gauge is checked.

use std::collections::HashMap;
use std::time::Duration;

use jobqueue::{Client, JobError, Runner, job};
use jobqueue_tests::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

#[job(queue = "mx-work", max_attempts = 2, backoff = "none")]
async fn mx_ok(n: u64) -> Result<u64, String> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(n)
}

#[job(queue = "mx-work")]
async fn mx_later(n: u64) -> u64 {
    n
}

#[job(queue = "mx-work", max_attempts = 2, backoff = "none")]
async fn mx_fails(n: u64) -> Result<(), JobError> {
    Err(JobError::retry(format!("{n} always fails")))
}

/// A metric of the snapshot, by name and labels.
type Values = HashMap<(String, Vec<(String, String)>), DebugValue>;

fn read(snapshotter: &Snapshotter) -> Values {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (_, key) = key.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

fn counter(values: &Values, name: &str, pairs: &[(&str, &str)]) -> u64 {
    match values.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {pairs:?}: {other:?}"),
    }
}

fn samples(values: &Values, name: &str, pairs: &[(&str, &str)]) -> Vec<f64> {
    match values.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.into_inner()).collect(),
        other => panic!("{name} {pairs:?}: {other:?}"),
    }
}

fn gauge(values: &Values, name: &str, pairs: &[(&str, &str)]) -> f64 {
    match values.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{name} {pairs:?}: {other:?}"),
    }
}

#[tokio::test]
async fn the_counters_equal_the_jobs_run_and_the_histograms_have_a_sample_per_run() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this process");
    for topology in [Topology::Single, Topology::Cluster] {
        let redis = TestRedis::start(topology);
        let client: Client = redis.client().await;
        const OK: u64 = 40;
        const FAILING: u64 = 6;
        // Built before anything runs, so its series exist (at zero) from
        // the start; the snapshot resets the counters of the last round.
        let runner = Runner::builder(client.clone())
            .queues(["mx-work"])
            .concurrency(8)
            .build()
            .unwrap();
        let before = read(&snapshotter);
        assert_eq!(
            counter(
                &before,
                "jobqueue_jobs_started_total",
                &[("queue", "mx-work"), ("job", "mx_ok")]
            ),
            0,
            "{topology:?}: the runner's series exist before any run"
        );
        let handles = client.enqueue_many::<mx_ok>(0..OK).await.unwrap();
        let failing = client.enqueue_many::<mx_fails>(0..FAILING).await.unwrap();
        // Delayed 3 s: their wait counts from their due time, not from the
        // enqueue (the sweep promotes them within a second of it).
        let mut later = Vec::new();
        for n in 0..3 {
            let options = jobqueue::client::EnqueueOptions::new().delay(Duration::from_secs(3));
            later.push(client.enqueue_with::<mx_later>(n, options).await.unwrap());
        }
        let (token, task) = start_runner(runner);
        for handle in &handles {
            handle.wait(Duration::from_secs(20)).await.unwrap();
        }
        for handle in &failing {
            assert!(handle.wait(Duration::from_secs(20)).await.is_err());
        }
        for handle in &later {
            handle.wait(Duration::from_secs(20)).await.unwrap();
        }
        // The last outcomes are counted once written.
        let queue = client.queue("mx-work").unwrap();
        assert!(
            eventually(Duration::from_secs(5), || async {
                let s = queue.stats().await.unwrap();
                s.completed_total == OK + 3 && s.failed_total == FAILING && s.processing_depth == 0
            })
            .await
        );
        stop_runner(token, task).await;
        let after = read(&snapshotter);
        let ok = [("queue", "mx-work"), ("job", "mx_ok")];
        let bad = [("queue", "mx-work"), ("job", "mx_fails")];
        let seen = |name: &str, pairs: &[(&str, &str)]| counter(&after, name, pairs);
        assert_eq!(
            (
                seen("jobqueue_jobs_enqueued_total", &ok),
                seen("jobqueue_jobs_started_total", &ok),
                seen("jobqueue_jobs_completed_total", &ok),
                seen("jobqueue_jobs_retried_total", &ok),
                seen("jobqueue_jobs_failed_total", &ok),
            ),
            (OK, OK, OK, 0, 0),
            "{topology:?}: enqueued, started, completed, retried, failed of mx_ok"
        );
        assert_eq!(
            (
                seen("jobqueue_jobs_enqueued_total", &bad),
                seen("jobqueue_jobs_started_total", &bad),
                seen("jobqueue_jobs_completed_total", &bad),
                seen("jobqueue_jobs_retried_total", &bad),
                seen("jobqueue_jobs_failed_total", &bad),
            ),
            (FAILING, 2 * FAILING, 0, FAILING, FAILING),
            "{topology:?}: two attempts each, the first retried, the second failed"
        );
        let durations = samples(&after, "jobqueue_job_duration_seconds", &ok);
        assert_eq!(
            durations.len() as u64,
            OK,
            "{topology:?}: one duration per run"
        );
        assert!(
            durations.iter().all(|d| (0.004..10.0).contains(d)),
            "{topology:?}: each run slept 5 ms: {durations:?}"
        );
        assert_eq!(
            samples(&after, "jobqueue_job_duration_seconds", &bad).len() as u64,
            2 * FAILING
        );
        let waits = samples(&after, "jobqueue_job_wait_seconds", &ok);
        assert_eq!(
            waits.len() as u64,
            OK,
            "{topology:?}: one wait per first attempt"
        );
        assert!(waits.iter().all(|w| (0.0..20.0).contains(w)), "{waits:?}");
        assert_eq!(
            samples(&after, "jobqueue_job_wait_seconds", &bad).len() as u64,
            FAILING,
            "{topology:?}: retries record no wait"
        );
        let later_waits = samples(
            &after,
            "jobqueue_job_wait_seconds",
            &[("queue", "mx-work"), ("job", "mx_later")],
        );
        assert_eq!(later_waits.len(), 3);
        assert!(
            later_waits.iter().all(|w| *w < 2.5),
            "{topology:?}: a delayed job waits from its due time: {later_waits:?}"
        );
        assert_eq!(
            gauge(&after, "jobqueue_running_jobs", &[("queue", "mx-work")]),
            0.0,
            "{topology:?}: nothing runs once the runner stopped"
        );
        println!(
            "{topology:?}: {OK} completed, {FAILING} failed after a retry; median wait {:.4} s",
            {
                let mut w = waits.clone();
                w.sort_by(f64::total_cmp);
                w[w.len() / 2]
            }
        );
    }

    // The depth gauge, sampled from Redis when the runner starts: 25 jobs
    // wait in a paused queue, so the depth holds still while it is read.
    let redis = TestRedis::start(Topology::Single);
    let client = redis.client().await;
    client.enqueue_many::<mx_ok>(0..25).await.unwrap();
    client.queue("mx-work").unwrap().pause().await.unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["mx-work"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let mut pending = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(DebugValue::Gauge(v)) = read(&snapshotter).get(&(
            "jobqueue_pending_jobs".to_owned(),
            labels(&[("queue", "mx-work")]),
        )) && v.into_inner() > 0.0
        {
            pending = Some(v.into_inner());
            break;
        }
    }
    stop_runner(token, task).await;
    assert_eq!(
        pending,
        Some(25.0),
        "the depth gauge of a queue holding 25 jobs"
    );
}
