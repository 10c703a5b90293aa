//! How a handler's return value becomes the job's outcome: [`JobError`] and
//! its [`Disposition`], the [`JobResultExt`] shorthands, and the return
//! types `#[job]` accepts ([`IntoJobResult`]).

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// A job's failure, and what to do about it.
///
/// A handler may return any `E: Display` as its error; it becomes a
/// retryable `JobError` with that text. Return a `JobError` (or wrap one in
/// `anyhow::Error` or `Box<dyn Error>`) to choose: [`retry_after`], or
/// [`permanent`] for a failure no retry can fix (asynq's `SkipRetry`,
/// River's `JobCancel`). With `?`, the usual error types convert into a
/// retryable `JobError`, and [`JobResultExt`] marks a `Result` on the way:
///
/// ```
/// use jobqueue::JobError;
/// use jobqueue::outcome::JobResultExt;
///
/// fn parse(text: &str) -> Result<u32, JobError> {
///     // Bad input will be as bad next time: fail for good.
///     let n: u32 = text.parse().permanent()?;
///     // An io::Error converts with `?` and is retried.
///     std::fs::metadata("/tmp")?;
///     Ok(n)
/// }
/// # assert!(parse("x").is_err());
/// ```
///
/// [`retry_after`]: JobError::retry_after
/// [`permanent`]: JobError::permanent
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    message: String,
    disposition: Disposition,
}

/// What a runner does with a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Retry with the job's backoff policy while attempts remain.
    Retry,
    /// Retry after this delay while attempts remain.
    RetryAfter(Duration),
    /// Fail for good now, whatever attempts remain.
    Permanent,
    /// Not a failure: run the job again after this delay, without charging
    /// the attempt (see [`JobError::snooze`]).
    Snooze(Duration),
    /// An upstream rate limit: the job goes back to the front of its lane
    /// without charging the attempt, and its queue (or its rate key) takes
    /// no job for this long (see [`JobError::rate_limited`]).
    RateLimited(Duration),
    /// Leave the job as a crashed worker would: not settled, its lease no
    /// longer renewed, so a sweep takes it back once the lease runs out. A
    /// fault-injection hook for the demo and tests, not a stable API.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    Abandon,
}

impl JobError {
    /// A failure to retry while attempts remain.
    pub fn retry(message: impl fmt::Display) -> Self {
        Self::new(message, Disposition::Retry)
    }

    /// A failure to retry after `delay` while attempts remain.
    pub fn retry_after(message: impl fmt::Display, delay: Duration) -> Self {
        Self::new(message, Disposition::RetryAfter(delay))
    }

    /// A failure that no retry can fix: the job fails for good now.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self::new(message, Disposition::Permanent)
    }

    /// Not a failure: the job is not ready to run (a resource is busy, an
    /// upstream result is not there yet), so run it again after `delay`
    /// (zero: back in pending at once, behind the jobs already waiting). The
    /// attempt is given back: snoozing never uses up `max_attempts`, and no
    /// error is recorded. A queue caps the snoozes of one job
    /// ([`QueueOptions::max_snoozes`](crate::queue::QueueOptions::max_snoozes),
    /// default 1,000): the next one sends the job to the dead letters with
    /// the reason. A snooze that would start the job past its expiry
    /// ([`EnqueueOptions::expires_in`](crate::client::EnqueueOptions::expires_in))
    /// ends it as expired. River's `JobSnooze`, BullMQ's `moveToDelayed`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use jobqueue::JobError;
    ///
    /// fn check(ready: bool) -> Result<(), JobError> {
    ///     if !ready {
    ///         return Err(JobError::snooze(Duration::from_secs(30)));
    ///     }
    ///     Ok(())
    /// }
    /// # assert!(check(false).is_err());
    /// ```
    pub fn snooze(delay: Duration) -> Self {
        Self::new(
            format!("snoozed for {} ms", delay.as_millis()),
            Disposition::Snooze(delay),
        )
    }

    /// The upstream said "too many requests" (an HTTP 429 and its
    /// `Retry-After`): back off the whole queue, or the job's rate key when
    /// it has one, for `retry_after`, not only this job. The job goes back
    /// to the front of its lane and the attempt is given back; it counts as
    /// a snooze against [`max_snoozes`](crate::queue::QueueOptions::max_snoozes),
    /// so a job that always gets a 429 ends in the dead letters. BullMQ's
    /// `RateLimitError`, Sidekiq Enterprise's `OverLimit`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use jobqueue::JobError;
    ///
    /// fn call_api(status: u16, retry_after_s: u64) -> Result<(), JobError> {
    ///     if status == 429 {
    ///         return Err(JobError::rate_limited(Duration::from_secs(retry_after_s)));
    ///     }
    ///     Ok(())
    /// }
    /// # assert!(call_api(429, 2).is_err());
    /// ```
    pub fn rate_limited(retry_after: Duration) -> Self {
        Self::new(
            format!(
                "rate limited upstream; retry after {} ms",
                retry_after.as_millis()
            ),
            Disposition::RateLimited(retry_after),
        )
    }

    /// Walks away from the job as a crashed worker would: nothing is
    /// written, the lease lapses. A fault-injection hook, not a stable API.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn abandon(message: impl fmt::Display) -> Self {
        Self::new(message, Disposition::Abandon)
    }

    fn new(message: impl fmt::Display, disposition: Disposition) -> Self {
        Self {
            message: message.to_string(),
            disposition,
        }
    }

    /// The text stored as the job's `last_error`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What to do about it.
    pub fn disposition(&self) -> Disposition {
        self.disposition
    }

    /// An error's text followed by its sources (`outer: inner: root`), so
    /// the stored `last_error` says what really went wrong.
    fn from_error(error: &(dyn StdError + 'static)) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::retry(message)
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for JobError {}

/// `?` on these errors inside a handler that returns `Result<_, JobError>`
/// gives a retryable `JobError` with the error's text and sources.
macro_rules! retryable_from {
    ($($ty:ty),* $(,)?) => {$(
        impl From<$ty> for JobError {
            fn from(error: $ty) -> Self {
                Self::from_error(&error)
            }
        }
    )*};
}

retryable_from!(
    std::io::Error,
    std::fmt::Error,
    std::num::ParseIntError,
    std::num::ParseFloatError,
    std::str::Utf8Error,
    std::string::FromUtf8Error,
    serde_json::Error,
    redis::RedisError,
    tokio::time::error::Elapsed,
    crate::error::Error,
);

impl From<String> for JobError {
    fn from(message: String) -> Self {
        Self::retry(message)
    }
}

impl From<&str> for JobError {
    fn from(message: &str) -> Self {
        Self::retry(message)
    }
}

/// A boxed error carrying a `JobError` keeps its disposition.
impl From<Box<dyn StdError + Send + Sync>> for JobError {
    fn from(error: Box<dyn StdError + Send + Sync>) -> Self {
        match error.downcast::<JobError>() {
            Ok(job_error) => *job_error,
            Err(other) => Self::from_error(&*other),
        }
    }
}

/// An `anyhow::Error` carrying a `JobError` (`Err(JobError::permanent(..))?`
/// in an `anyhow::Result` handler) keeps its disposition.
#[cfg(feature = "anyhow")]
#[cfg_attr(docsrs, doc(cfg(feature = "anyhow")))]
impl From<anyhow::Error> for JobError {
    fn from(error: anyhow::Error) -> Self {
        match error.downcast::<JobError>() {
            Ok(job_error) => job_error,
            Err(other) => Self::retry(format!("{other:#}")),
        }
    }
}

/// Marks a `Result`'s error with what the runner should do about it.
pub trait JobResultExt<T> {
    /// The error, if any, fails the job for good.
    fn permanent(self) -> Result<T, JobError>;
    /// The error, if any, is retried after `delay` (while attempts remain).
    fn retry_after(self, delay: Duration) -> Result<T, JobError>;
}

impl<T, E: fmt::Display> JobResultExt<T> for Result<T, E> {
    fn permanent(self) -> Result<T, JobError> {
        self.map_err(JobError::permanent)
    }

    fn retry_after(self, delay: Duration) -> Result<T, JobError> {
        self.map_err(|e| JobError::retry_after(e, delay))
    }
}

/// The `Result`-like return types of a job handler: `Result<T, E>` (or an
/// alias of it, such as `anyhow::Result<T>`) with `T: Serialize` and
/// `E: Display`. A handler returning anything else that is `Serialize`
/// (`()`, `u64`, a struct) always succeeds with that value.
pub trait IntoJobResult {
    /// What a successful run produces.
    type Output: Serialize + Send + 'static;
    /// Splits the return value into output or error.
    fn into_job_result(self) -> Result<Self::Output, JobError>;
}

impl<T, E> IntoJobResult for Result<T, E>
where
    T: Serialize + Send + 'static,
    E: fmt::Display + 'static,
{
    type Output = T;
    fn into_job_result(self) -> Result<T, JobError> {
        self.map_err(|e| {
            let any = &e as &dyn Any;
            if let Some(job_error) = any.downcast_ref::<JobError>() {
                return job_error.clone();
            }
            if let Some(boxed) = any.downcast_ref::<Box<dyn StdError + Send + Sync>>()
                && let Some(job_error) = boxed.downcast_ref::<JobError>()
            {
                return job_error.clone();
            }
            #[cfg(feature = "anyhow")]
            if let Some(error) = any.downcast_ref::<anyhow::Error>() {
                return match error.downcast_ref::<JobError>() {
                    Some(job_error) => job_error.clone(),
                    None => JobError::retry(format!("{error:#}")),
                };
            }
            JobError::retry(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_mark_on_common_errors_retries_with_the_whole_chain() {
        fn run() -> Result<(), JobError> {
            let _: u8 = "300".parse()?;
            Ok(())
        }
        let error = run().unwrap_err();
        assert_eq!(error.disposition(), Disposition::Retry);
        assert!(error.message().contains("too large"), "{error}");
    }

    #[test]
    fn marks_survive_boxing() {
        let boxed: Box<dyn StdError + Send + Sync> = Box::new(JobError::permanent("bad input"));
        let returned: Result<(), _> = Err(boxed);
        let error = returned.into_job_result().unwrap_err();
        assert_eq!(error.disposition(), Disposition::Permanent);
        let delayed = Err::<(), _>("busy").retry_after(Duration::from_secs(3));
        assert_eq!(
            delayed.unwrap_err().disposition(),
            Disposition::RetryAfter(Duration::from_secs(3))
        );
        let plain: Result<(), String> = Err("plain".into());
        assert_eq!(
            plain.into_job_result().unwrap_err().disposition(),
            Disposition::Retry
        );
    }
}
