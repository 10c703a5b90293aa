//! [`QueueOptions`]: how one queue behaves, with the reference design's
//! defaults.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::keys::KeyLayout;

/// Options of a [`Queue`](super::Queue), with the reference design's
/// defaults. The queue's name is not an option: it is given beside them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueOptions {
    /// How key names are spelled. Default (`None`): the reference layout on
    /// a single server, the hash-tagged layout on a Redis Cluster (where the
    /// reference layout cannot work: a queue's keys would land in different
    /// slots).
    pub layout: Option<KeyLayout>,
    /// How long a claim lasts without renewal. Default 5000 ms.
    pub visibility: Duration,
    /// How long a completed job's hash is kept, for jobs enqueued without
    /// their own. Default 300 s; zero keeps it until it is trimmed off the
    /// completed history.
    pub completed_ttl: Duration,
    /// How many ids the completed history keeps. Default 50.
    pub completed_history: usize,
    /// How many dead letters the failed list keeps (their hashes live exactly
    /// as long). Default 10,000.
    pub failed_history: usize,
    /// Claims a job gets before it fails for good, for jobs enqueued without
    /// their own. Default 3.
    pub max_attempts: u32,
    /// Largest payload accepted at enqueue, in bytes. Default 512 KiB.
    pub max_payload_bytes: usize,
    /// Snoozes a job may take ([`JobError::snooze`](crate::JobError::snooze));
    /// the next one sends it to the dead letters with the reason, so a job
    /// that snoozes for ever cannot. Snoozes do not use up attempts.
    /// Default 1,000.
    pub max_snoozes: u32,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            layout: None,
            visibility: jobqueue_rules::DEFAULT_VISIBILITY,
            completed_ttl: Duration::from_secs(300),
            completed_history: 50,
            failed_history: 10_000,
            max_attempts: jobqueue_rules::DEFAULT_MAX_ATTEMPTS,
            max_payload_bytes: 512 * 1024,
            max_snoozes: 1_000,
        }
    }
}

impl QueueOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`layout`](Self::layout).
    pub fn layout(mut self, layout: KeyLayout) -> Self {
        self.layout = Some(layout);
        self
    }

    /// Sets [`visibility`](Self::visibility).
    pub fn visibility(mut self, visibility: Duration) -> Self {
        self.visibility = visibility;
        self
    }

    /// Sets [`completed_ttl`](Self::completed_ttl).
    pub fn completed_ttl(mut self, ttl: Duration) -> Self {
        self.completed_ttl = ttl;
        self
    }

    /// Sets [`completed_history`](Self::completed_history).
    pub fn completed_history(mut self, cap: usize) -> Self {
        self.completed_history = cap;
        self
    }

    /// Sets [`failed_history`](Self::failed_history).
    pub fn failed_history(mut self, cap: usize) -> Self {
        self.failed_history = cap;
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets [`max_snoozes`](Self::max_snoozes).
    pub fn max_snoozes(mut self, max_snoozes: u32) -> Self {
        self.max_snoozes = max_snoozes;
        self
    }

    /// Sets [`max_payload_bytes`](Self::max_payload_bytes).
    pub fn max_payload_bytes(mut self, limit: usize) -> Self {
        self.max_payload_bytes = limit;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        jobqueue_rules::check_max_attempts(self.max_attempts)
            .map_err(|reason| Error::invalid_option("max_attempts", reason))?;
        jobqueue_rules::check_visibility(self.visibility)
            .map_err(|reason| Error::invalid_option("visibility", reason))?;
        for (option, cap) in [
            ("completed_history", self.completed_history),
            ("failed_history", self.failed_history),
        ] {
            if cap == 0 {
                return Err(Error::invalid_option(
                    option,
                    "must be at least 1: a job's hash lives as long as its listing",
                ));
            }
        }
        check_ttl(self.completed_ttl)
    }
}

/// A job's own limits, when given: the same rules as the queue's.
pub(crate) fn check_job_limits(
    max_attempts: Option<u32>,
    visibility: Option<Duration>,
) -> Result<()> {
    if let Some(max) = max_attempts {
        jobqueue_rules::check_max_attempts(max)
            .map_err(|reason| Error::invalid_option("max_attempts", reason))?;
    }
    if let Some(visibility) = visibility {
        jobqueue_rules::check_visibility(visibility)
            .map_err(|reason| Error::invalid_option("visibility", reason))?;
    }
    Ok(())
}

/// A completed job's TTL: whole seconds (Redis `EXPIRE` takes seconds).
pub(crate) fn check_ttl(ttl: Duration) -> Result<()> {
    if ttl.subsec_nanos() != 0 {
        return Err(Error::invalid_option(
            "completed_ttl",
            format!("{ttl:?} is not whole seconds (Redis EXPIRE takes seconds)"),
        ));
    }
    Ok(())
}
