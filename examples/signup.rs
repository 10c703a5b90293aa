//! Run with: `cargo run -p jobqueue-examples --example signup` (Redis on
//! 127.0.0.1:6379, or set `REDIS_URL`); its tests with
//! `cargo test -p jobqueue-examples --example signup`.
//!
//! Application code that enqueues jobs, jobs that enqueue jobs, and the
//! tests a team writes for them with `jobqueue::testing` (feature
//! `testing`, a dev-dependency): a unit test of the code that enqueues
//! (recording client, no Redis), a unit test of a handler (`testing::run`),
//! a test that runs everything a sign-up causes (`testing::drain`), and an
//! integration test against a private `redis-server`.

use std::io::IsTerminal;
use std::time::Duration;

use jobqueue::client::EnqueueOptions;
use jobqueue::{CancellationToken, Client, JobContext, JobError, Runner, job};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Welcome {
    user: u64,
    to: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    message_id: String,
}

/// Sends the welcome mail, then records the event for analytics (through
/// the runner's client, so a test's `drain` runs it too).
#[job(queue = "signup-email", max_attempts = 5)]
async fn send_welcome(args: Welcome, ctx: JobContext) -> Result<Receipt, JobError> {
    if !args.to.contains('@') {
        return Err(JobError::permanent(format!(
            "{:?} is not an address",
            args.to
        )));
    }
    let client = ctx
        .client()
        .ok_or_else(|| JobError::permanent("no client"))?;
    client
        .enqueue::<track>(format!("welcomed {}", args.user))
        .await
        .map_err(JobError::retry)?;
    Ok(Receipt {
        message_id: format!("{}-{}", ctx.id(), ctx.attempt()),
    })
}

/// Records an analytics event.
#[job(queue = "signup-analytics")]
async fn track(event: String) -> Result<usize, String> {
    Ok(event.len())
}

/// The application code under test: signs a user up and has the welcome
/// sent a little later (a user who deletes the account at once gets none).
async fn sign_up(client: &Client, user: u64, email: &str) -> jobqueue::Result<String> {
    let welcome = Welcome {
        user,
        to: email.to_owned(),
    };
    let options = EnqueueOptions::new().delay(Duration::from_secs(2));
    let handle = client
        .enqueue_with::<send_welcome>(welcome, options)
        .await?;
    Ok(handle.id().to_owned())
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
        .with_env_filter("info")
        .init();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let client = Client::connect(&url).await?;
    let id = sign_up(&client, 1, "ada@example.com").await?;
    let shutdown = CancellationToken::new();
    let runner = Runner::builder(client.clone()).build()?;
    let running = tokio::spawn(runner.run(shutdown.clone()));
    let receipt = client
        .handle::<send_welcome>(&id)?
        .wait(Duration::from_secs(30))
        .await?;
    println!("welcome sent: {}", receipt.message_id);
    shutdown.cancel();
    let _ = running.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobqueue::testing;

    /// The code that enqueues, tested without Redis: what it enqueued, and
    /// with which options.
    #[tokio::test]
    async fn signing_up_enqueues_a_delayed_welcome() {
        let client = Client::recording();
        let id = sign_up(&client, 7, "ada@example.com").await.unwrap();
        let job = testing::assert_enqueued::<send_welcome>(&client, |w| w.to == "ada@example.com");
        assert_eq!(job.id, id);
        assert_eq!(job.payload.user, 7);
        assert_eq!(
            job.options.when,
            jobqueue::client::When::After(Duration::from_secs(2))
        );
        assert_eq!(job.options.max_attempts, Some(5), "the #[job] default");
        testing::refute_enqueued::<track>(&client, |_| true);
    }

    /// A handler, tested alone: a bad address fails for good (no retry
    /// can fix it).
    #[tokio::test]
    async fn a_welcome_to_a_bad_address_fails_for_good() {
        let outcome = testing::run::<send_welcome>(Welcome {
            user: 1,
            to: "nobody".into(),
        })
        .await;
        assert_eq!(
            outcome.error().unwrap().disposition(),
            jobqueue::outcome::Disposition::Permanent
        );
    }

    /// Everything a sign-up causes, run inline: the welcome, then the
    /// analytics event it enqueues.
    #[tokio::test]
    async fn a_sign_up_ends_with_the_welcome_sent_and_tracked() {
        let client = Client::recording();
        sign_up(&client, 9, "grace@example.com").await.unwrap();
        let drained = testing::drain(&client).await;
        assert!(drained.failed.is_empty(), "{:?}", drained.failed);
        let names: Vec<&str> = drained.completed.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["send_welcome", "track"]);
        testing::assert_enqueued::<track>(&client, |event| event == "welcomed 9");
    }

    /// The same through real Redis and a real Runner, on a private
    /// `redis-server` that is killed when the test ends.
    #[tokio::test]
    async fn a_sign_up_is_welcomed_by_a_runner() {
        let server = testing::RedisServer::start();
        let client = Client::connect(&server.url()).await.unwrap();
        let id = sign_up(&client, 3, "alan@example.com").await.unwrap();
        let shutdown = CancellationToken::new();
        let runner = Runner::builder(client.clone())
            .queues(["signup-email", "signup-analytics"])
            .build()
            .unwrap();
        let running = tokio::spawn(runner.run(shutdown.clone()));
        let receipt = client
            .handle::<send_welcome>(&id)
            .unwrap()
            .wait(Duration::from_secs(30))
            .await
            .unwrap();
        assert!(receipt.message_id.starts_with(&id));
        let analytics = client.queue("signup-analytics").unwrap();
        let mut tracked = 0;
        for _ in 0..100 {
            tracked = analytics.stats().await.unwrap().completed_total;
            if tracked == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shutdown.cancel();
        running.await.unwrap();
        assert_eq!(tracked, 1, "the analytics event ran once");
    }
}
