//! A worker process for the multi-process tests: runs a `Runner` on queue
//! `proc` until SIGTERM or SIGINT.
//!
//! Usage: `jobqueue-test-worker REDIS_URL [CONCURRENCY]`

use std::time::Duration;

use jobqueue::{CancellationToken, Client, JobContext, Runner, job};

/// Never finishes on its own: the process must die or shut down.
#[job(queue = "proc", visibility = "500ms")]
async fn hang(_key: String, ctx: JobContext) {
    ctx.cancelled().await;
}

/// Sleeps a little, then completes.
#[job(queue = "proc")]
async fn nap(millis: u64) {
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

#[tokio::main]
async fn main() -> jobqueue::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .expect("usage: jobqueue-test-worker REDIS_URL [CONCURRENCY]");
    let concurrency = args.next().map_or(10, |n| n.parse().expect("a number"));
    let client = Client::connect(&url).await?;
    let runner = Runner::builder(client)
        .queues(["proc"])
        .concurrency(concurrency)
        .sweep_interval(Duration::from_millis(100))
        .shutdown_timeout(Duration::from_secs(1))
        .build()?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            shutdown.cancel();
        }
    });
    println!("ready");
    runner.run(shutdown).await
}
