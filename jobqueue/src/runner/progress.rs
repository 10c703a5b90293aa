//! The progress a run reports, buffered until a lease renewal carries it.
//!
//! [`JobContext::progress`](crate::JobContext::progress) only keeps the
//! latest value here: a handler may report in a tight loop, and a round trip
//! per report would cost more than the work it reports on. The lease task
//! renews every running job every third of a lease anyway; each renewal
//! takes the value still unwritten and sends it in the same script call
//! (`Queue::extend_with_progress`). [`ProgressBuffer::flush`] sends it at
//! once, for a handler that wants it seen now, and the runner flushes what a
//! run leaves unwritten before it writes the outcome, so the last value a
//! job reports is the one stored.
//!
//! Two calls carrying one run's progress are never on their way at once
//! (the `sending` lock): the later value could otherwise reach Redis first
//! and be overwritten by the earlier one.

use std::fmt;
use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;
use tokio::sync::OwnedMutexGuard;

use crate::error::{Error, Result};
use crate::queue::{Ack, ClaimedJob, Queue};

/// One run's progress: the latest value reported, and whether it was
/// written. Shared by the run's context (and its clones) and the runner.
#[derive(Default)]
pub(crate) struct ProgressBuffer {
    state: Mutex<State>,
    /// Held while a call carrying this run's progress is on its way.
    sending: Arc<tokio::sync::Mutex<()>>,
    /// The claim the value is written with; none for a context built by
    /// hand, whose progress is only kept.
    claim: Option<(Queue, Arc<ClaimedJob>)>,
}

/// Shows the value and whether it was written, not the claim (whose payload
/// a context's `Debug` would print with every log line).
impl fmt::Debug for ProgressBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock().expect("progress lock");
        f.debug_struct("ProgressBuffer")
            .field("latest", &state.latest.as_ref().map(|v| v.get()))
            .field("written", &(state.version == state.written))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    latest: Option<Arc<RawValue>>,
    /// Counts the distinct values reported.
    version: u64,
    /// The version Redis holds (or held: a later report may have changed
    /// it since).
    written: u64,
}

impl State {
    /// The value to send, and its version, when Redis lacks it.
    fn unwritten(&self) -> Option<(u64, Arc<RawValue>)> {
        let latest = self.latest.as_ref()?;
        (self.version > self.written).then(|| (self.version, Arc::clone(latest)))
    }
}

impl ProgressBuffer {
    /// The buffer of a run of `job`, claimed from `queue`.
    pub(crate) fn for_claim(queue: Queue, job: Arc<ClaimedJob>) -> Self {
        Self {
            claim: Some((queue, job)),
            ..Self::default()
        }
    }

    /// Keeps `value` as the latest report; a value equal to the latest one
    /// changes nothing (so it is not sent again).
    pub(crate) fn report(&self, value: Box<RawValue>) {
        let mut state = self.state.lock().expect("progress lock");
        if state
            .latest
            .as_ref()
            .is_some_and(|l| l.get() == value.get())
        {
            return;
        }
        state.latest = Some(Arc::from(value));
        state.version += 1;
    }

    /// The latest value reported, written or not.
    pub(crate) fn latest(&self) -> Option<Arc<RawValue>> {
        self.state.lock().expect("progress lock").latest.clone()
    }

    /// The value a lease renewal should carry: the latest, unless Redis has
    /// it already or a flush is sending it now (the renewal then goes
    /// without; the flush writes it).
    pub(crate) fn outgoing(self: &Arc<Self>) -> Option<Outgoing> {
        let sending = Arc::clone(&self.sending).try_lock_owned().ok()?;
        let (version, value) = self.state.lock().expect("progress lock").unwritten()?;
        Some(Outgoing {
            buffer: Arc::clone(self),
            version,
            value,
            _sending: sending,
        })
    }

    /// Notes that Redis holds `version` (or a later one).
    fn written(&self, version: u64) {
        let mut state = self.state.lock().expect("progress lock");
        state.written = state.written.max(version);
    }

    /// Writes the latest value now, if Redis lacks it: one lease renewal
    /// for this job alone, fenced by its claim token. Nothing to do for a
    /// value already written or a context without a claim.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the claim no longer holds the job (nothing
    /// is written); a Redis error after the connection's retries (the value
    /// stays buffered for the next renewal).
    pub(crate) async fn flush(&self) -> Result<()> {
        let Some((queue, job)) = &self.claim else {
            return Ok(());
        };
        let _sending = self.sending.lock().await;
        let Some((version, value)) = self.state.lock().expect("progress lock").unwritten() else {
            return Ok(());
        };
        let acks = queue
            .extend_with_progress(&[(&**job, Some(&*value))])
            .await?;
        match acks.first() {
            Some(Ack::Extended | Ack::CancelRequested) => {
                self.written(version);
                Ok(())
            }
            _ => Err(Error::LeaseLost {
                id: job.id().to_owned(),
            }),
        }
    }
}

/// A value on its way in a lease renewal; no flush of the same run sends
/// meanwhile.
#[derive(Debug)]
pub(crate) struct Outgoing {
    buffer: Arc<ProgressBuffer>,
    version: u64,
    value: Arc<RawValue>,
    _sending: OwnedMutexGuard<()>,
}

impl Outgoing {
    /// The JSON to send.
    pub(crate) fn value(&self) -> &RawValue {
        &self.value
    }

    /// The renewal that carried the value held the job: Redis has it.
    pub(crate) fn written(self) {
        self.buffer.written(self.version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn a_renewal_carries_the_latest_value_once_until_another_is_reported() {
        let buffer = Arc::new(ProgressBuffer::default());
        assert!(buffer.outgoing().is_none(), "nothing reported");
        buffer.report(json("0.1"));
        buffer.report(json("0.2"));
        let out = buffer.outgoing().unwrap();
        assert_eq!(out.value().get(), "0.2", "only the latest is sent");
        // A flush meanwhile would wait: the renewal is on its way.
        assert!(buffer.outgoing().is_none());
        out.written();
        assert!(buffer.outgoing().is_none(), "written already");
        buffer.report(json("0.2"));
        assert!(buffer.outgoing().is_none(), "the same value again");
        buffer.report(json("0.3"));
        let out = buffer.outgoing().unwrap();
        // Reported while the renewal was on its way: still to send after.
        buffer.report(json("0.4"));
        out.written();
        assert_eq!(buffer.outgoing().unwrap().value().get(), "0.4");
        assert_eq!(buffer.latest().unwrap().get(), "0.4");
    }

    #[test]
    fn a_renewal_that_failed_leaves_the_value_to_send_again() {
        let buffer = Arc::new(ProgressBuffer::default());
        buffer.report(json(r#"{"done":1}"#));
        drop(buffer.outgoing().unwrap());
        assert_eq!(buffer.outgoing().unwrap().value().get(), r#"{"done":1}"#);
    }

    #[tokio::test]
    async fn a_context_without_a_claim_keeps_its_progress_and_flushes_nothing() {
        let buffer = ProgressBuffer::default();
        buffer.report(json("1.0"));
        buffer.flush().await.unwrap();
        assert_eq!(buffer.latest().unwrap().get(), "1.0");
    }
}
