//! A runner started in a process with no `tracing` subscriber says once, on
//! stderr, that its logs go nowhere and how to see them.
//!
//! Whether a subscriber is installed is a property of the whole process, so
//! the test runs its runners in a child process: this test binary again,
//! asked for this test alone, with a variable that makes it the child.

use std::process::Command;
use std::time::Duration;

use jobqueue::{CancellationToken, Client, Runner, job};
use jobqueue_tests::RedisServer;

const CHILD: &str = "JOBQUEUE_LOG_HINT_CHILD";

#[job(queue = "log-hint")]
async fn hinted(n: u32) -> u32 {
    n
}

/// The child: two runners, one after the other, each running a job.
async fn run_two_runners() {
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).await.unwrap();
    for n in 0..2 {
        let runner = Runner::builder(client.clone())
            .queues(["log-hint"])
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(runner.run(shutdown.clone()));
        let handle = client.enqueue::<hinted>(n).await.unwrap();
        assert_eq!(handle.wait(Duration::from_secs(20)).await.unwrap(), n);
        shutdown.cancel();
        running.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_without_a_tracing_subscriber_says_so_once() {
    if std::env::var_os(CHILD).is_some() {
        return run_two_runners().await;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_runner_without_a_tracing_subscriber_says_so_once",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
    let hints = stderr
        .lines()
        .filter(|line| line.contains("no tracing subscriber is installed"))
        .collect::<Vec<_>>();
    assert_eq!(hints.len(), 1, "{stderr}");
    assert!(
        hints[0].contains("tracing_subscriber::fmt().init()"),
        "{}",
        hints[0]
    );
}
