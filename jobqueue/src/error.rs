//! The crate's error type.

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `jobqueue`.
///
/// Messages never include a Redis password: connection details are shown
/// through [`redis::ConnectionInfo`]'s address only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis answered with an error, or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),

    /// A queue or job name that would break the key layout.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: String,
    },

    /// A payload or result could not be turned into JSON, or back.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),

    /// A payload larger than the queue's `max_payload_bytes`.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size of the serialized payload.
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// Data read from Redis that does not have the shape the design promises:
    /// a missing field, a number that is not one, a reply of the wrong type.
    #[error("malformed data in {key}: {reason}")]
    Malformed {
        /// The key (or job id) the data came from.
        key: String,
        /// What was wrong with it.
        reason: String,
    },

    /// Two `#[job]`s registered under one name.
    #[error(
        "two jobs are named {name:?}: one in `{first}`, one in `{second}`; give one of them another `name`"
    )]
    DuplicateJob {
        /// The shared name.
        name: String,
        /// One module path.
        first: String,
        /// The other module path.
        second: String,
    },

    /// A job whose stored name matches no registered job.
    #[error(
        "no job named {name:?} is registered (queue {queue:?}); is the crate that defines it linked?"
    )]
    UnknownJob {
        /// The stored name.
        name: String,
        /// The queue it came from.
        queue: String,
    },

    /// A job without a name that no rule routes to a handler.
    #[error("job {id} on queue {queue:?} has no handler: {reason}")]
    Unroutable {
        /// The job's id.
        id: String,
        /// The queue it came from.
        queue: String,
        /// What was tried.
        reason: String,
    },

    /// The job failed for good.
    #[error("job {id} failed: {error}")]
    JobFailed {
        /// The job's id.
        id: String,
        /// Its `last_error`.
        error: String,
    },

    /// The job did not finish within the wait.
    #[error("job {id} did not finish within {waited:?}")]
    WaitTimeout {
        /// The job's id.
        id: String,
        /// How long the wait lasted.
        waited: std::time::Duration,
    },

    /// No job has this id: it was never enqueued here (or was deleted
    /// before this handle looked).
    #[error("job {id} does not exist")]
    JobNotFound {
        /// The job's id.
        id: String,
    },

    /// The job existed but its hash is gone: a completed job's hash expires
    /// after its `completed_ttl` (the result goes with it), and a deleted or
    /// purged job leaves nothing behind.
    #[error(
        "job {id} is gone: a completed job's result is kept for its completed_ttl, or it was deleted"
    )]
    JobExpired {
        /// The job's id.
        id: String,
    },

    /// A unique dead letter was not retried: another job holds its unique
    /// lock (the same work is already queued or running).
    #[error("job {id} was not retried: job {holder} holds its unique lock")]
    UniqueLockHeld {
        /// The dead letter's id.
        id: String,
        /// The job holding the lock.
        holder: String,
    },

    /// A step of a chain failed for good or was cancelled: the steps after
    /// it never run.
    #[error("chain {chain} stopped at step {step} of {of} ({job}, job {id}): {error}")]
    ChainStopped {
        /// The chain's id.
        chain: String,
        /// The step that stopped it, from 1.
        step: usize,
        /// How many steps the chain has.
        of: usize,
        /// The step's job name.
        job: String,
        /// The step's job id.
        id: String,
        /// Why: its `last_error`, or its cancel reason.
        error: String,
    },

    /// The job was cancelled, or expired before it started.
    #[error("job {id} was cancelled: {reason}")]
    JobCancelled {
        /// The job's id.
        id: String,
        /// Its `cancel_reason` (an expired job's says "expired: ...").
        reason: String,
    },

    /// A job status that is not one of the six states.
    #[error(
        "{status:?} is not a job status (scheduled, pending, processing, completed, failed, cancelled)"
    )]
    InvalidStatus {
        /// The text given.
        status: String,
    },

    /// A progress value a job reported that cannot be stored: a fraction
    /// that is NaN or outside 0.0..=1.0, a value that is not JSON, or JSON
    /// over [`MAX_PROGRESS_BYTES`](crate::queue::MAX_PROGRESS_BYTES).
    /// Refused when reported, so the handler hears of it; nothing is
    /// buffered.
    #[error("invalid progress: {reason}")]
    InvalidProgress {
        /// Why the value was refused.
        reason: String,
    },

    /// The run's claim no longer holds its job (its lease ran out and a
    /// sweep took the job back, or the job ended): what the run tried to
    /// write (its progress) was not written.
    #[error("job {id}: this run's claim no longer holds the job; nothing was written")]
    LeaseLost {
        /// The job's id.
        id: String,
    },

    /// An option outside its allowed range.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// Why the value was refused.
        reason: String,
    },
}

impl Error {
    pub(crate) fn invalid_option(option: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidOption {
            option,
            reason: reason.into(),
        }
    }

    pub(crate) fn malformed(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Malformed {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// True when the error came from the connection (refused, dropped, timed
    /// out) rather than from Redis rejecting a command: worth retrying once the
    /// connection is back.
    pub fn is_connection_error(&self) -> bool {
        match self {
            Self::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
                    || is_cluster_transient(e)
            }
            _ => false,
        }
    }
}

/// A cluster in the middle of a failover or resharding answers with errors
/// that mean "not now": no node serves the slot yet, the node was just
/// demoted, a multi-key command met a migrating slot. All pass once the
/// cluster settles, so they are retried like a dropped connection.
///
/// `MOVED` and `ASK` are among them: the cluster client follows each at
/// once, but the last step of a slot move reaches its two nodes one after
/// the other, and meanwhile each sends clients to the other. Its immediate
/// retries run out within that moment; ours wait with back-off.
fn is_cluster_transient(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    matches!(
        e.kind(),
        ErrorKind::ClusterConnectionNotFound
            | ErrorKind::Server(
                ServerErrorKind::TryAgain
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::BusyLoading
            )
    )
}
