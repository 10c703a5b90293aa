//! [`JobContext`]: what a running job knows about itself.

use std::time::SystemTime;

use std::sync::Arc;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::error::Result;
use crate::runner::ProgressBuffer;

/// Passed to a job's handler (as its optional second argument): which job
/// this is, which attempt of how many, a cancellation signal for
/// cooperative stops, and where to report progress
/// ([`progress`](Self::progress)).
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
    /// Shared by the context's clones and the runner's lease renewal.
    progress: Arc<ProgressBuffer>,
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
            progress: Arc::default(),
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

    /// The same context, reporting progress into the runner's `buffer`.
    pub(crate) fn with_progress_buffer(mut self, buffer: Arc<ProgressBuffer>) -> Self {
        self.progress = buffer;
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

    /// Reports how far the run has got, as a fraction: 0.0 nothing done,
    /// 1.0 all done. Readers see it through
    /// [`JobHandle::progress`](crate::client::JobHandle::progress), the job's
    /// [`JobRecord::progress`](crate::queue::JobRecord::progress), the
    /// dashboard and `jobqueue show`.
    ///
    /// Cheap enough for a tight loop: no round trip. The value is only kept
    /// (the latest replaces the one before), and the runner's next lease
    /// renewal, which it sends anyway (every third of the shortest running
    /// lease, at most 10 s apart), writes it in the same script call, fenced
    /// by the claim token. Readers therefore see a value up to a third of
    /// the job's lease late; [`flush_progress`](Self::flush_progress)
    /// writes it at once. The last value a run reports is written before its
    /// outcome, and stays after it.
    ///
    /// ```
    /// # async fn demo(ctx: jobqueue::JobContext, files: Vec<String>) -> jobqueue::Result<()> {
    /// for (n, file) in files.iter().enumerate() {
    ///     // ... process the file ...
    ///     ctx.progress((n + 1) as f64 / files.len() as f64)?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidProgress`](crate::Error::InvalidProgress) for a
    /// fraction that is NaN, infinite or outside 0.0..=1.0; the value kept
    /// before stays.
    pub fn progress(&self, fraction: f64) -> Result<()> {
        self.progress.report(crate::queue::fraction_json(fraction)?);
        Ok(())
    }

    /// Reports progress as a small JSON value of the handler's own (items
    /// done of how many, the current step), as
    /// [`progress`](Self::progress) does a fraction: kept, and written by
    /// the next lease renewal.
    ///
    /// ```
    /// # async fn demo(ctx: jobqueue::JobContext) -> jobqueue::Result<()> {
    /// ctx.progress_json(&serde_json::json!({"done": 40, "of": 100}))?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidProgress`](crate::Error::InvalidProgress) for a value
    /// that cannot be encoded as JSON, or whose JSON is over
    /// [`MAX_PROGRESS_BYTES`](crate::queue::MAX_PROGRESS_BYTES): progress is
    /// rewritten and published while the job runs, so it must stay small.
    /// The value kept before stays.
    pub fn progress_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.progress.report(crate::queue::value_json(value)?);
        Ok(())
    }

    /// Writes the latest progress now instead of at the next lease renewal:
    /// one renewal of this job's lease, fenced by its claim token, carrying
    /// the value. Does nothing when the value is written already, nothing
    /// was reported, or the context was built by hand (no runner).
    ///
    /// # Errors
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when the run's claim no
    /// longer holds the job (nothing is written; the runner stops the run);
    /// a Redis error once the connection's retries are spent (the value
    /// stays kept, for the next renewal).
    ///
    /// # Cancellation safety
    /// Safe: a dropped flush may or may not have written the value, which
    /// stays kept until a renewal is known to have written it; writing it
    /// twice stores and publishes it once.
    pub async fn flush_progress(&self) -> Result<()> {
        self.progress.flush().await
    }

    /// The latest progress this run reported, written yet or not: for unit
    /// tests of a handler run with a context of their own
    /// ([`testing::run_with`](crate::testing::run_with) keeps a clone's
    /// reports). `None` before any report.
    ///
    /// ```
    /// let ctx = jobqueue::JobContext::new("job-1");
    /// ctx.progress(0.25).unwrap();
    /// assert_eq!(ctx.reported_progress(), Some(serde_json::json!(0.25)));
    /// assert!(ctx.progress(f64::NAN).is_err());
    /// assert_eq!(ctx.reported_progress(), Some(serde_json::json!(0.25)));
    /// ```
    pub fn reported_progress(&self) -> Option<serde_json::Value> {
        let latest = self.progress.latest()?;
        serde_json::from_str(latest.get()).ok()
    }
}
