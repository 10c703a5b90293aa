//! How a handler's return value becomes the job's outcome.

use std::any::Any;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// A job's failure, and what to do about it. Any `E: Display` a handler
/// returns becomes a retryable `JobError` with its text; return a `JobError`
/// itself to choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    message: String,
    kind: ErrorKind,
}

/// What a runner does with a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Retry with the backoff policy while attempts remain.
    Retry,
    /// Retry after this delay while attempts remain.
    RetryAfter(Duration),
    /// Fail for good now, whatever attempts remain.
    Permanent,
    /// Leave the job as a crashed worker would: not settled, its lease no
    /// longer renewed, so a sweep takes it back once the lease runs out. For
    /// demos and fault-injection tests.
    Abandon,
}

impl JobError {
    /// A failure to retry while attempts remain.
    pub fn retry(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            kind: ErrorKind::Retry,
        }
    }

    /// A failure to retry after `delay` while attempts remain.
    pub fn retry_after(message: impl fmt::Display, delay: Duration) -> Self {
        Self {
            message: message.to_string(),
            kind: ErrorKind::RetryAfter(delay),
        }
    }

    /// A failure that no retry can fix.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            kind: ErrorKind::Permanent,
        }
    }

    /// Walks away from the job as a crashed worker would (see
    /// [`ErrorKind::Abandon`]): nothing is written, the lease lapses.
    pub fn abandon(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            kind: ErrorKind::Abandon,
        }
    }

    /// The text stored as the job's `last_error`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What to do about it.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JobError {}

/// The return types a job handler may have: `()`, or `Result<T, E>` with
/// `T: Serialize` and `E: Display`.
pub trait IntoJobResult {
    /// What a successful run produces.
    type Output: Serialize + Send + 'static;
    /// Splits the return value into output or error.
    fn into_job_result(self) -> Result<Self::Output, JobError>;
}

impl IntoJobResult for () {
    type Output = ();
    fn into_job_result(self) -> Result<(), JobError> {
        Ok(())
    }
}

impl<T, E> IntoJobResult for Result<T, E>
where
    T: Serialize + Send + 'static,
    E: fmt::Display + 'static,
{
    type Output = T;
    fn into_job_result(self) -> Result<T, JobError> {
        self.map_err(|e| match (&e as &dyn Any).downcast_ref::<JobError>() {
            Some(job_error) => job_error.clone(),
            None => JobError::retry(e),
        })
    }
}
