//! Cancel: a waiting job ends at once and never runs; a running one is
//! asked to stop (`cancel.lua`).

use std::fmt;

use super::{JobStatus, Queue};
use crate::error::{Error, Result};
use crate::scripts::SCRIPTS;

/// What [`Queue::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The job was waiting (pending or scheduled, as given): it is now
    /// cancelled and will never run.
    Cancelled(JobStatus),
    /// The job is running: the runner holding it stops the run at its next
    /// lease renewal (a third of the lease at most), and the job then ends
    /// as cancelled whatever its handler returns. Also the answer to a
    /// repeated cancel while it still runs.
    Requested,
    /// The job had already finished (completed, failed or cancelled);
    /// nothing changed.
    AlreadyFinished(JobStatus),
    /// There is no such job (never was, or its hash is gone).
    NotFound,
}

impl CancelOutcome {
    /// The outcome as one word, as the CLI and the dashboard report it:
    /// `cancelled`, `requested`, `already_finished` or `not_found`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancelled(_) => "cancelled",
            Self::Requested => "requested",
            Self::AlreadyFinished(_) => "already_finished",
            Self::NotFound => "not_found",
        }
    }

    /// The status the outcome names: the one a cancelled job had, or the
    /// one a finished job has.
    pub fn status(self) -> Option<JobStatus> {
        match self {
            Self::Cancelled(status) | Self::AlreadyFinished(status) => Some(status),
            Self::Requested | Self::NotFound => None,
        }
    }

    /// True when the cancel changed or asked for something.
    pub fn is_applied(self) -> bool {
        matches!(self, Self::Cancelled(_) | Self::Requested)
    }
}

impl fmt::Display for CancelOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cancelled(status) => write!(f, "cancelled (it was {status})"),
            Self::Requested => f.write_str("cancel requested: it stops at its next lease renewal"),
            Self::AlreadyFinished(status) => write!(f, "not cancelled: it already {status}"),
            Self::NotFound => f.write_str("not cancelled: no such job"),
        }
    }
}

impl Queue {
    /// Cancels job `id`, recording `reason` as its `cancel_reason`.
    ///
    /// A pending or scheduled job ends at once with status `cancelled`
    /// (listed in `queue:{name}:cancelled`, counted in `cancelled_total`, an
    /// event published) and never runs; its id leaves pending, so reference
    /// workers cannot take it either. A running job is asked to stop: its
    /// runner learns of it from the next lease renewal, cancels the job's
    /// [`JobContext`](crate::JobContext) and ends the job as cancelled
    /// however the handler returns, never retried. A job a reference worker
    /// runs is not stopped (it renews no lease of ours): it completes or
    /// fails as usual.
    ///
    /// # Cancellation safety
    /// Safe: cancelling twice answers what the first cancel left.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<CancelOutcome> {
        let mut invocation = SCRIPTS.cancel.prepare_invoke();
        invocation
            .key(self.keys.job(id))
            .key(self.keys.pending())
            .key(self.keys.scheduled())
            .key(self.keys.cancelled())
            .key(self.keys.stats())
            .key(self.keys.outbox())
            .key(self.keys.outbox_entries())
            .arg(id)
            .arg(reason)
            .arg(self.keys.events())
            .arg(self.options.failed_history)
            .arg(self.keys.job_prefix());
        let (outcome, status): (String, String) = self.invoke(&invocation).await?;
        let status = || status.parse::<JobStatus>();
        Ok(match outcome.as_str() {
            "cancelled" => CancelOutcome::Cancelled(status()?),
            "requested" => CancelOutcome::Requested,
            "finished" => CancelOutcome::AlreadyFinished(status()?),
            "missing" => CancelOutcome::NotFound,
            other => {
                return Err(Error::malformed(
                    "cancel script reply",
                    format!("unknown outcome {other:?}"),
                ));
            }
        })
    }
}
