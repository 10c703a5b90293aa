//! [`JobContext`]: what a running job knows about itself.

use std::time::SystemTime;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::client::Client;

/// Passed to a job's handler (as its optional second argument): which job
/// this is, which attempt of how many, and a cancellation signal for
/// cooperative stops.
///
/// Runners build contexts. To call a handler directly, in a unit test for
/// example, build one with [`JobContext::new`] and the `with_*` methods:
///
/// ```
/// use jobqueue::JobContext;
///
/// let ctx = JobContext::new("job-1").with_queue("email").with_attempt(2, 5);
/// assert_eq!((ctx.attempt(), ctx.max_attempts()), (2, 5));
/// ```
#[derive(Debug, Clone)]
pub struct JobContext {
    id: String,
    queue: String,
    name: String,
    attempt: u32,
    max_attempts: u32,
    enqueued_at: Option<SystemTime>,
    claim_token: String,
    cancel: CancellationToken,
    client: Option<Arc<Client>>,
}

impl JobContext {
    /// A context for job `id`: first attempt of one, no queue or name,
    /// never cancelled.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            queue: String::new(),
            name: String::new(),
            attempt: 1,
            max_attempts: 1,
            enqueued_at: None,
            claim_token: String::new(),
            cancel: CancellationToken::new(),
            client: None,
        }
    }

    /// A context for a unit test of a handler: job `test-job`, first
    /// attempt of one, never cancelled unless the test cancels it
    /// ([`with_cancellation`](Self::with_cancellation)). Its queue and name
    /// are empty: [`testing::run`](crate::testing::run) fills them from the
    /// job's definition. Adjust it with the `with_*` methods.
    ///
    /// ```
    /// let ctx = jobqueue::JobContext::for_test().with_attempt(3, 3);
    /// assert_eq!(ctx.id(), "test-job");
    /// assert!(ctx.attempt() == ctx.max_attempts());
    /// ```
    #[cfg(feature = "testing")]
    #[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
    pub fn for_test() -> Self {
        Self::new("test-job")
    }

    /// The same context, for a job of `queue`.
    pub fn with_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// The same context, for a job registered as `name`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same context, on attempt `attempt` (1 for the first) of
    /// `max_attempts`.
    pub fn with_attempt(mut self, attempt: u32, max_attempts: u32) -> Self {
        self.attempt = attempt;
        self.max_attempts = max_attempts;
        self
    }

    /// The same context, for a job Redis received at `time`.
    pub fn with_enqueued_at(mut self, time: SystemTime) -> Self {
        self.enqueued_at = Some(time);
        self
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

    /// The same context, giving the handler `client` (see
    /// [`client`](Self::client)).
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(Arc::new(client));
        self
    }

    /// The same context, sharing a runner's client.
    pub(crate) fn with_shared_client(mut self, client: Arc<Client>) -> Self {
        self.client = Some(client);
        self
    }

    /// The client of the runner running the job: a handler that enqueues
    /// more jobs uses it (River's `ClientFromContext`), so that in a test,
    /// [`testing::drain`](crate::testing::drain) also runs what the jobs
    /// enqueue. `None` for a context built by hand without
    /// [`with_client`](Self::with_client).
    pub fn client(&self) -> Option<&Client> {
        self.client.as_deref()
    }

    /// The cancellation token of the run (a test's run stops on it).
    #[cfg(feature = "testing")]
    pub(crate) fn cancellation(&self) -> &CancellationToken {
        &self.cancel
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

    /// Which attempt this run is: 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many attempts the job gets in all (the one stored with the job,
    /// else the queue's): `attempt() == max_attempts()` is the last chance.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// When Redis received the job (by Redis's clock), when known: jobs
    /// written by other clients may lack the field.
    pub fn enqueued_at(&self) -> Option<SystemTime> {
        self.enqueued_at
    }

    /// The claim token of this run: every state change of the job is fenced
    /// by it, and a handler can use it to fence its own side effects (a row
    /// written with it can be told apart from one written by a stale run).
    /// Empty for a context built by hand.
    pub fn claim_token(&self) -> &str {
        &self.claim_token
    }

    /// True once the runner asked the job to stop (shutdown, timeout, or a
    /// lost lease).
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
