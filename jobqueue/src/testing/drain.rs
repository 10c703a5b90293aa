//! [`drain`]: running a recording client's jobs inline.

use crate::client::Client;
use crate::context::JobContext;
use crate::middleware::JobOutcome;

use super::record::{EnqueuedJob, recorder_of};
use super::run::{registered, run_json};

/// How many rounds [`drain`] runs before it decides the jobs enqueue each
/// other forever.
const MAX_ROUNDS: usize = 100;

/// What [`drain`] ran.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Drained {
    /// The jobs that completed.
    pub completed: Vec<EnqueuedJob>,
    /// The jobs that did not, each with how its run ended.
    pub failed: Vec<(EnqueuedJob, JobOutcome)>,
}

impl Drained {
    /// How many jobs ran.
    pub fn ran(&self) -> usize {
        self.completed.len() + self.failed.len()
    }
}

/// Runs every job `client` (a [`Client::recording`]) recorded and has not
/// run yet, in order, each once, through [`run`](super::run)'s path; then
/// the jobs those jobs enqueued through their context's
/// [`client`](JobContext::client), round after round, until none is left
/// (Sidekiq's `drain_all`). Delayed jobs run at once. A failed job is
/// reported, not retried.
///
/// ```
/// use jobqueue::{job, testing, Client, JobContext};
///
/// #[job]
/// async fn order(id: u64, ctx: JobContext) -> Result<(), String> {
///     let client = ctx.client().ok_or("no client")?;
///     client.enqueue::<invoice>(id).await.map_err(|e| e.to_string())?;
///     Ok(())
/// }
///
/// #[job]
/// async fn invoice(id: u64) -> Result<String, String> {
///     Ok(format!("invoice {id}"))
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> jobqueue::Result<()> {
/// let client = Client::recording();
/// client.enqueue::<order>(7).await?;
/// let drained = testing::drain(&client).await;
/// assert_eq!(drained.completed.len(), 2); // the order, then its invoice
/// assert!(drained.failed.is_empty());
/// # Ok(()) }
/// ```
///
/// # Panics
/// When `client` is not a recording client, or the jobs still enqueue new
/// ones after 100 rounds.
pub async fn drain(client: &Client) -> Drained {
    let recorder = recorder_of(client);
    let mut drained = Drained::default();
    for _ in 0..MAX_ROUNDS {
        let jobs = recorder.take_new();
        if jobs.is_empty() {
            return drained;
        }
        for job in jobs {
            let outcome = match registered(&job.name) {
                Err(error) => JobOutcome::Failed(error),
                Ok(definition) => {
                    let max_attempts = job
                        .options
                        .max_attempts
                        .unwrap_or(definition.max_attempts());
                    let ctx = JobContext::new(job.id.clone())
                        .with_queue(job.queue.clone())
                        .with_name(job.name.clone())
                        .with_attempt(1, max_attempts)
                        .with_client(client.clone());
                    run_json(definition, &job.payload, ctx).await
                }
            };
            if outcome.is_completed() {
                drained.completed.push(job);
            } else {
                drained.failed.push((job, outcome));
            }
        }
    }
    panic!("testing::drain: the jobs still enqueued new jobs after {MAX_ROUNDS} rounds");
}
