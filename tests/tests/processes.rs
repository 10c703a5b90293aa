//! Runners in real child processes: a worker killed with SIGKILL loses its
//! jobs for no longer than its lease plus a sweep.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobqueue::{JobStatus, NewJob, QueueOptions};
use jobqueue_tests::*;
use serde_json::json;

/// Starts the worker binary against `url` and waits for it to be ready.
fn worker(url: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobqueue-test-worker"))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the worker binary runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("worker output");
    assert_eq!(line.trim(), "ready");
    child
}

#[tokio::test]
async fn a_sigkilled_workers_job_is_back_in_pending_within_its_lease_and_a_sweep() {
    let (server, q, _c) = setup(QueueOptions::new("proc")).await;
    let mut child = worker(&server.url());
    let id = q
        .submit(
            NewJob::new(&json!("k"))
                .unwrap()
                .name("hang")
                .visibility(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            q.get_job(&id).await.unwrap().unwrap().status() == Some(JobStatus::Processing)
        })
        .await,
        "the worker claimed the job"
    );
    // The worker renews the lease: the job stays claimed past its visibility.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(q.reclaim_stuck().await.unwrap().reclaimed.is_empty());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = Instant::now();
    // A sweeper elsewhere (here: every 100 ms) takes the job back once the
    // lease runs out.
    let back = eventually(Duration::from_secs(10), || async {
        let _ = q.reclaim_expired().await.unwrap();
        tokio::time::sleep(Duration::from_millis(90)).await;
        q.get_job(&id).await.unwrap().unwrap().status() == Some(JobStatus::Pending)
    })
    .await;
    assert!(back, "the job came back");
    let waited = killed.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "back after {waited:?}, lease 500 ms + sweep 100 ms"
    );
    let record = q.get_job(&id).await.unwrap().unwrap();
    assert_eq!(record.attempts().unwrap(), 1);
    assert!(record.field("reclaimed_at_ms").is_some());
}

#[tokio::test]
async fn sigterm_drains_a_worker_and_hands_unfinished_jobs_back() {
    let (server, q, _c) = setup(QueueOptions::new("proc")).await;
    let child = worker(&server.url());
    let quick: Vec<NewJob> = (0..5)
        .map(|_| NewJob::new(&100_u64).unwrap().name("nap"))
        .collect();
    let stuck: Vec<NewJob> = (0..5)
        .map(|_| {
            NewJob::new(&"k")
                .unwrap()
                .name("hang")
                .visibility(Duration::from_secs(30))
        })
        .collect();
    q.submit_many(quick).await.unwrap();
    q.submit_many(stuck).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            q.stats().await.unwrap().processing_depth == 10
        })
        .await
    );
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = child;
    let stopped = Instant::now();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(stopped.elapsed() < Duration::from_secs(10));
    let s = q.stats().await.unwrap();
    // The naps finished inside the 1 s shutdown timeout; the hangs went back.
    assert_eq!(
        (s.completed_total, s.pending_depth, s.processing_depth),
        (5, 5, 0)
    );
}
