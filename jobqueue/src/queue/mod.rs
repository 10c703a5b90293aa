//! [`Queue`]: the low-level queue bound to one queue name, the Rust
//! counterpart of the reference design's `RedisJobQueue`, and the types it
//! reads and writes.
//!
//! Most applications use the typed layer ([`Client`](crate::Client) and
//! [`Runner`](crate::Runner)); this layer is for tools, other languages'
//! jobs, and tests. Each operation lives in the file named for it:
//! `enqueue`, `claim` (with its blocking wait), `settle` (complete, fail,
//! release, extend), `sweep` (reclaim and promote), `admin` (pause, retry
//! dead letters, delete, purge), `read` (stats, jobs, lists), `progress`
//! (what a running job reports, carried by extend) and `events`.
//! Every state change is one Lua script (see [`docs::data_model`](crate::docs::data_model)).
//!
//! ```no_run
//! use std::time::Duration;
//! use jobqueue::queue::Queue;
//!
//! # async fn demo() -> jobqueue::Result<()> {
//! let queue = Queue::connect("redis://127.0.0.1:6379/", "email").await?;
//! let id = queue.enqueue(&serde_json::json!({"to": "alice@example.com"})).await?;
//!
//! // In a worker:
//! if let Some(job) = queue.claim(Duration::from_secs(1)).await? {
//!     let to: serde_json::Value = job.payload()?;
//!     // ... send the mail, renewing the lease with queue.extend(&job) if it takes long ...
//!     let _ = queue.complete(&job, &serde_json::json!({"sent_to": to["to"]})).await?;
//! }
//!
//! // In a periodic sweeper:
//! let report = queue.reclaim_stuck().await?;
//! # let _ = (id, report);
//! # Ok(())
//! # }
//! ```

mod admin;
mod age;
mod cancel;
mod claim;
mod claimed;
mod combine;
mod enqueue;
mod events;
mod limits;
mod new_job;
mod options;
mod progress;
mod protocol;
mod read;
mod record;
mod schedules;
mod settle;
mod sweep;
mod unique;
mod workflow;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::keys::{KeyLayout, Keys};
pub use cancel::CancelOutcome;
pub use claimed::{Ack, ClaimedJob};
pub use enqueue::Enqueued;
pub(crate) use events::Decode;
pub use events::{Event, EventKind, Events};
pub use new_job::{EnqueueOptions, NewJob, When};
pub use options::QueueOptions;
pub use progress::{MAX_PROGRESS_BYTES, Progress, ProgressEvent};
pub(crate) use progress::{fraction_json, value_json};
pub use read::Stats;
pub use record::{JobRecord, JobStatus};
pub use schedules::{Misfire, ScheduleInfo, ScheduleOptions, tick_time};
pub use settle::{SETTLE_BATCH, Settlement};
pub use sweep::SweepReport;
pub use unique::{DEFAULT_UNIQUE_WINDOW, Unique, UniqueMode};
pub use workflow::MAX_BATCH_CHILDREN;
pub(crate) use workflow::{Callback, ChildEnd, OutboxEntry, Recorded};

pub use crate::keys::{MAX_PRIORITY, MAX_RATE_KEY, MIN_PRIORITY};
pub(crate) use claim::{ClaimNow, MAX_THROTTLE_SLEEP, PAUSED_POLL};
pub(crate) use limits::check_rate_key;
pub use limits::{Limits, QueueLimits, Rate};
pub(crate) use protocol::Hold;

use crate::connection::Connection;
use crate::error::{Error, Result};

/// One queue of one Redis server (or cluster). Cheap to clone.
///
/// Every state change runs in one Lua script that also updates the fleet-wide
/// counters and publishes the event; see
/// [`docs::data_model`](crate::docs::data_model) for the keys.
#[derive(Debug, Clone)]
pub struct Queue {
    conn: Connection,
    keys: Arc<Keys>,
    options: Arc<QueueOptions>,
    /// Keys of claim requests whose replies arrived, for the next claim to
    /// delete.
    answered: Arc<Mutex<Vec<String>>>,
    /// Single-job enqueues of this queue and its clones, combined.
    combiner: Arc<combine::Combiner>,
}

impl Queue {
    /// Connects to `url` and binds queue `name` with the default options.
    ///
    /// # Cancellation safety
    /// Safe: nothing is written before the future completes.
    pub async fn connect(url: &str, name: &str) -> Result<Self> {
        let conn = Connection::connect(url).await?;
        Self::new(&conn, name)
    }

    /// Binds queue `name` on an open connection (shared by as many queues as
    /// needed), with the default options.
    pub fn new(conn: &Connection, name: &str) -> Result<Self> {
        Self::new_with(conn, name, QueueOptions::default())
    }

    /// Binds queue `name` with `options`.
    pub fn new_with(conn: &Connection, name: &str, options: QueueOptions) -> Result<Self> {
        options.validate()?;
        let layout = match (options.layout, conn.is_cluster()) {
            (None, false) => KeyLayout::Reference,
            (None, true) => KeyLayout::HashTagged,
            (Some(KeyLayout::Reference), true) => {
                return Err(Error::invalid_option(
                    "layout",
                    "the reference layout spreads a queue over many cluster slots, \
                     so its scripts would fail with CROSSSLOT; use KeyLayout::HashTagged",
                ));
            }
            (Some(layout), _) => layout,
        };
        let keys = Keys::new(name, layout)?;
        Ok(Self {
            conn: conn.clone(),
            keys: Arc::new(keys),
            options: Arc::new(options),
            answered: Arc::new(Mutex::new(Vec::new())),
            combiner: Arc::default(),
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        self.keys.name()
    }

    /// The queue's key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The queue's options.
    pub fn options(&self) -> &QueueOptions {
        &self.options
    }

    /// The visibility timeout: how long a claim lasts without renewal.
    pub fn visibility(&self) -> Duration {
        self.options.visibility
    }

    /// The connection the queue uses.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The visibility timeout in whole ms, as the scripts take it.
    fn visibility_ms(&self) -> u64 {
        u64::try_from(self.options.visibility.as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs a script on the shared connection, retrying connection errors.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        self.conn
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
    }
}

/// How many expired leases, processing entries or dead letters one script
/// handles: keeps each script short (a few ms) so Redis stays responsive.
const SCRIPT_BATCH: usize = 200;

/// Most jobs one claim script takes, whatever a caller asks for: a claim
/// stamps, leases and reads back each job, and 5,000 in one call held Redis
/// for over half a second. A caller wanting more claims again.
pub(crate) const CLAIM_BATCH: usize = 100;
