//! Workflows: batches whose callbacks run once when every child has
//! settled, and chains whose steps pass their output on, checked by the
//! compiler.
//!
//! ```no_run
//! # use jobqueue::{job, Client};
//! # use jobqueue::workflow::BatchSummary;
//! # #[job(queue = "thumbs")] async fn thumbnail(path: String) {}
//! # #[job(queue = "reports")] async fn album_done(summary: BatchSummary<u64>) {}
//! # #[job] async fn fetch(url: String) -> Result<String, String> { Ok(url) }
//! # #[job] async fn parse(body: String) -> Result<usize, String> { Ok(body.len()) }
//! # async fn run(client: Client) -> jobqueue::Result<()> {
//! // A batch: the children run in parallel; album_done runs once, after
//! // the last of them, with how each ended.
//! let batch = client
//!     .batch()
//!     .add::<thumbnail>("a.jpg".into())
//!     .add::<thumbnail>("b.jpg".into())
//!     .on_complete::<album_done, _>(42)
//!     .enqueue()
//!     .await?;
//! let status = batch.wait(std::time::Duration::from_secs(60)).await?;
//! println!("{} of {} succeeded", status.succeeded, status.total);
//!
//! // A chain: parse's payload is fetch's output (a compile error if not).
//! let chain = client
//!     .chain::<fetch>("https://example.com".into())
//!     .then::<parse>()
//!     .enqueue()
//!     .await?;
//! let length: usize = chain.wait(std::time::Duration::from_secs(60)).await?;
//! # Ok(()) }
//! ```
//!
//! # How it works
//! A batch lives on its callbacks' queue (without callbacks, on its first
//! child's): `batch_open.lua` writes it (and
//! its callbacks, waiting in no list) before any child exists. Each child's
//! hash names its batch; when a child ends for good (completed, failed,
//! cancelled, expired, deleted), the script that ends it also writes an
//! entry in its own queue's outbox. Runners relay those entries to the
//! batch (`batch_record.lua`, which counts each child once) and delete them
//! after; the call that records the last child releases the callbacks. On
//! a cluster each of those is one script in one slot, so the callback is
//! released once even when two runners relay the last two children at the
//! same moment, or a runner dies between a child's end and the relay (the
//! entry stays in the outbox for the next relay).
//!
//! A chain step that completes leaves its result in its outbox entry; the
//! relay enqueues the next step with that result as its payload and an id
//! derived from the chain's, so a relay repeated finds the step written.
//! A step that fails stops the chain: its dead letter names the chain
//! (`chain_id`, `chain_step`), and [`ChainHandle::wait`] says where it
//! stopped.
//!
//! Relays run in every [`Runner`](crate::Runner), for the queues it
//! serves, a few times a second: a child's end reaches its batch within
//! about [`RELAY_INTERVAL`] when a runner serves the child's queue.
//! Reference workers know nothing of this: a batch child or chain step one
//! of them runs never reports, so keep those queues to our runners.
//!
//! The key layout is in
//! [`docs::data_model`](crate::docs::data_model#workflows).

mod batch;
mod chain;
pub(crate) mod relay;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::queue::MAX_BATCH_CHILDREN;
pub use batch::{BatchBuilder, BatchHandle};
pub use chain::{ChainBuilder, ChainHandle};
pub use relay::RELAY_INTERVAL;

/// What a batch's callback gets as its payload: how the batch's children
/// ended, and the payload it was given (`P`).
///
/// A callback runs at least once, like any job (a crash while it runs means
/// another run), so it should be idempotent; its summary is the same on
/// every run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BatchSummary<P> {
    /// The batch's id.
    pub batch: String,
    /// The queue the batch lives on (its callbacks').
    pub queue: String,
    /// How many children it had.
    pub total: u64,
    /// How many completed.
    pub succeeded: u64,
    /// How many did not: failed for good, cancelled, expired or deleted.
    pub failed: u64,
    /// Every child's id.
    pub children: Vec<String>,
    /// Each child that did not succeed, with why: the first 1,000 (each
    /// reason cut to 256 bytes), so the summary stays small.
    pub failures: Vec<ChildFailure>,
    /// How many failures are not listed in `failures`.
    #[serde(default)]
    pub failures_omitted: u64,
    /// The payload given to `on_complete` or `on_success`.
    pub payload: P,
}

/// A child of a batch that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChildFailure {
    /// The child's id.
    pub id: String,
    /// Its queue (the physical one: a shard's name for a sharded queue).
    pub queue: String,
    /// `failed`, `cancelled` (also an expired job) or `deleted`.
    pub outcome: String,
    /// Its last error, or its cancel reason.
    pub reason: String,
}

/// Where a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BatchState {
    /// Some children have not settled yet.
    Open,
    /// Every child settled; the callbacks were released.
    Done,
}

/// A batch as read from Redis: progress "n of m".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BatchStatus {
    /// The batch's id.
    pub id: String,
    /// The queue it lives on.
    pub queue: String,
    /// Open or done.
    pub state: BatchState,
    /// How many children it has.
    pub total: u64,
    /// How many completed so far.
    pub succeeded: u64,
    /// How many ended otherwise so far.
    pub failed: u64,
    /// When it was written (ms since the epoch, Redis clock).
    pub created_at_ms: u64,
    /// When its last child was recorded (ms), once done.
    pub done_at_ms: Option<u64>,
    /// The id of its `on_complete` callback, if it has one.
    pub on_complete: Option<String>,
    /// The id of its `on_success` callback, if it has one.
    pub on_success: Option<String>,
}

impl BatchStatus {
    /// How many children have settled: succeeded and failed.
    pub fn settled(&self) -> u64 {
        self.succeeded + self.failed
    }

    /// True once every child settled and the callbacks were released.
    pub fn is_done(&self) -> bool {
        self.state == BatchState::Done
    }

    /// Reads a batch hash's fields; `None` for an empty hash (no batch).
    pub(crate) fn from_fields(
        fields: &std::collections::HashMap<String, String>,
    ) -> crate::Result<Option<Self>> {
        if fields.is_empty() {
            return Ok(None);
        }
        let text = |name: &str| fields.get(name).cloned().unwrap_or_default();
        let number = |name: &str| -> crate::Result<u64> {
            let value = text(name);
            value.parse().map_err(|_| {
                crate::Error::malformed(
                    format!("batch {}", text("id")),
                    format!("{name} is {value:?}, not a count"),
                )
            })
        };
        let state = match text("state").as_str() {
            "open" => BatchState::Open,
            "done" => BatchState::Done,
            other => {
                return Err(crate::Error::malformed(
                    format!("batch {}", text("id")),
                    format!("unknown state {other:?}"),
                ));
            }
        };
        let some = |name: &str| Some(text(name)).filter(|v| !v.is_empty());
        Ok(Some(Self {
            id: text("id"),
            queue: text("queue"),
            state,
            total: number("total")?,
            succeeded: number("succeeded")?,
            failed: number("failed")?,
            created_at_ms: number("created_at_ms")?,
            done_at_ms: some("done_at_ms").and_then(|v| v.parse().ok()),
            on_complete: some("on_complete"),
            on_success: some("on_success"),
        }))
    }
}

/// `3 of 10 settled (2 succeeded, 1 failed), open`.
impl fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} settled ({} succeeded, {} failed), {}",
            self.settled(),
            self.total,
            self.succeeded,
            self.failed,
            match self.state {
                BatchState::Open => "open",
                BatchState::Done => "done",
            }
        )
    }
}

/// How long a batch's keys stay once it is done, by default: a week.
pub const DEFAULT_BATCH_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
