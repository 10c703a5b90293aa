//! One complete program: defines a job, runs it and awaits its result, in
//! one process. `cargo run -p jobqueue-examples --example quickstart`
//! (Redis at `REDIS_URL`, or 127.0.0.1:6379).

use std::io::IsTerminal;
use std::time::Duration;

use jobqueue::{CancellationToken, Client, JobContext, Runner, job};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    to: String,
}

#[derive(Serialize, Deserialize)]
struct Receipt {
    message_id: String,
}

#[job(queue = "email", max_attempts = 3, visibility = "2m")]
async fn send_welcome(args: Welcome, ctx: JobContext) -> Result<Receipt, std::io::Error> {
    tracing::info!(to = %args.to, "sending a welcome");
    Ok(Receipt {
        message_id: format!("{}:{}", ctx.id(), args.to),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The runner logs through `tracing`: without this line it prints nothing.
    tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .init();

    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let client = Client::connect(&url).await?;

    // Runs every #[job] of this program until `shutdown` is cancelled.
    let runner = Runner::builder(client.clone()).build()?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));

    let welcome = Welcome {
        to: "alice@example.com".into(),
    };
    let handle = client.enqueue::<send_welcome>(welcome).await?;
    let receipt = handle.wait(Duration::from_secs(30)).await?;
    println!("sent {}", receipt.message_id);

    // Stops claiming, lets running jobs finish, then returns.
    shutdown.cancel();
    running.await?;
    Ok(())
}
