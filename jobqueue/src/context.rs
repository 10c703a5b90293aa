//! [`JobContext`]: what a running job knows about itself.

use tokio_util::sync::CancellationToken;

/// Passed to a job's handler (as its optional second argument): which job
/// this is, which attempt, and a cancellation signal for cooperative stops.
#[derive(Debug, Clone)]
pub struct JobContext {
    id: String,
    queue: String,
    name: String,
    attempt: u32,
    claim_token: String,
    cancel: CancellationToken,
}

impl JobContext {
    /// A context for job `id` of job type `name` in `queue`, on its
    /// `attempt`th claim, never cancelled. Runners build contexts; call this
    /// to run a handler directly, for example in a unit test.
    pub fn new(
        id: impl Into<String>,
        queue: impl Into<String>,
        name: impl Into<String>,
        attempt: u32,
    ) -> Self {
        Self {
            id: id.into(),
            queue: queue.into(),
            name: name.into(),
            attempt,
            claim_token: String::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// The same context, for the claim fenced by `token`.
    pub fn with_claim_token(mut self, token: impl Into<String>) -> Self {
        self.claim_token = token.into();
        self
    }

    /// The same context, cancelled through `token`.
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The queue it came from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The job's registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which claim this is: 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The claim token of this run: every state change of the job is fenced
    /// by it, and a handler can use it to fence its own side effects (a row
    /// written with it can be told apart from one written by a stale run).
    /// Empty for a context built by hand.
    pub fn claim_token(&self) -> &str {
        &self.claim_token
    }

    /// True once the runner asked the job to stop (shutdown or timeout).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the runner asks the job to stop.
    ///
    /// # Cancellation safety
    /// Safe: waiting again later sees the same signal.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }
}
