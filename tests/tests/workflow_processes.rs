//! A batch across processes, on a single server and on the private
//! cluster: 1,000 children over 3 queues, run by 2 runner processes, 10%
//! failing for good, one runner SIGKILLed mid-batch. The callback runs
//! exactly once, with the right counts, and every child counts once
//! (children the killed runner held are reclaimed and run again).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jobqueue_tests::*;

/// A `jobqueue-test-worker` running the workflow queues, once ready.
fn workflow_worker(url: &str, callbacks: &std::path::Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobqueue-test-worker"))
        .arg(url)
        .arg("workflow")
        .env("JOBQUEUE_TEST_CALLBACKS", callbacks)
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

async fn a_batch_survives_a_killed_runner_and_calls_back_once(redis: TestRedis) {
    const CHILDREN: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let callbacks = dir.path().join("callbacks");
    let url = redis.url();
    let mut doomed = workflow_worker(&url, &callbacks);
    let mut survivor = workflow_worker(&url, &callbacks);

    let out = Command::new(env!("CARGO_BIN_EXE_jobqueue-test-worker"))
        .args([url.as_str(), "enqueue-batch", &CHILDREN.to_string()])
        .output()
        .expect("the worker binary enqueues");
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    let mut words = printed.split_whitespace();
    assert_eq!(words.next(), Some("batch"), "{printed}");
    let (queue, id) = (words.next().unwrap(), words.next().unwrap());
    assert_eq!(queue, "wfp-done");

    let client = redis.client().await;
    let batch = client.batch_handle(queue, id).unwrap();
    // Kill one runner once a fifth of the batch has settled: it holds
    // children at that moment (20 slots, jobs of 30-70 ms).
    assert!(
        eventually(Duration::from_secs(60), || async {
            batch.status().await.unwrap().unwrap().settled() >= CHILDREN / 5
        })
        .await,
        "the batch did not progress"
    );
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let at_kill = batch.status().await.unwrap().unwrap();
    assert!(
        !at_kill.is_done(),
        "the batch was done before the kill: {at_kill}"
    );

    let done = batch.wait(Duration::from_secs(120)).await.unwrap();
    assert_eq!(done.total, CHILDREN);
    assert_eq!(done.succeeded, 900, "{done}");
    assert_eq!(done.failed, 100, "{done}");

    // The callback: released once, run once, with the summary's counts.
    let lines = || {
        std::fs::read_to_string(&callbacks)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(20), || async { !lines().is_empty() }).await,
        "the callback never ran"
    );
    // Time for a second run to show, if there were one: several relay
    // passes and sweeps of the surviving runner.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let runs = lines();
    assert_eq!(
        runs.len(),
        1,
        "the callback ran {} times: {runs:?}",
        runs.len()
    );
    let fields: Vec<&str> = runs[0].split_whitespace().collect();
    assert_eq!(
        &fields[1..],
        ["1000", "900", "100", "100", "1000"],
        "{runs:?}"
    );

    // The killed runner held children: they were reclaimed and run again,
    // and still counted once (900 + 100 above).
    let mut reclaimed = 0;
    for name in ["wfp-a", "wfp-b", "wfp-c"] {
        let stats = client.queue(name).unwrap().stats().await.unwrap();
        reclaimed += stats.reclaimed_total;
    }
    assert!(reclaimed > 0, "the killed runner held no child");
    survivor.kill().unwrap();
    survivor.wait().unwrap();
}

on_each_topology!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_batch_survives_a_killed_runner_and_calls_back_once,
);
