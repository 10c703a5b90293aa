//! Run with: `cargo run -p jobqueue-examples --example basic` (Redis on
//! 127.0.0.1:6379, or set `REDIS_URL`).
//!
//! Enqueues a few jobs on the low-level [`jobqueue::queue::Queue`], then works them
//! off with a worker loop that renews its lease, completes or fails each job,
//! and sweeps stuck jobs back. Stops on Ctrl-C or when the queue is empty.

use std::io::IsTerminal;
use std::time::Duration;

use jobqueue::queue::{Ack, Queue};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Serialize, Deserialize)]
struct Email {
    to: String,
    n: u32,
}

#[tokio::main]
async fn main() -> jobqueue::Result<()> {
    tracing_subscriber::fmt()
        // Colour only on a terminal: logs sent to a file or a pipe stay
        // plain text. NO_COLOR turns it off too.
        .with_ansi(
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let queue = Queue::connect(&url, "example-email").await?;

    let jobs: Vec<Email> = (1..=5)
        .map(|n| Email {
            to: format!("user{n}@example.com"),
            n,
        })
        .collect();
    let ids = queue.enqueue_many(&jobs).await?;
    tracing::info!(count = ids.len(), "enqueued");

    let work = async {
        while let Some(job) = queue.claim(Duration::from_millis(500)).await? {
            let email: Email = job.payload()?;
            // Long work renews its lease so no sweep hands it to another worker.
            let _ = queue.extend(&job).await?;
            let ack = if email.n.is_multiple_of(5) {
                queue.fail(&job, "mailbox full").await?
            } else {
                queue
                    .complete(&job, &serde_json::json!({"sent_to": email.to}))
                    .await?
            };
            tracing::info!(id = job.id(), ?ack, "settled");
            if ack == Ack::LeaseLost {
                tracing::warn!(id = job.id(), "another worker owns this job now");
            }
        }
        let report = queue.reclaim_stuck().await?;
        tracing::info!(?report, stats = ?queue.stats().await?, "queue drained");
        Ok::<(), jobqueue::Error>(())
    };
    tokio::select! {
        done = work => done?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
    }
    queue.purge().await?;
    Ok(())
}
