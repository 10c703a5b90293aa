//! Outcomes waiting to be written. A finished job leaves its outcome here,
//! with its slot, and the queue's claim loop writes every outcome waiting in
//! one settle call, sent together with its next claim: under load one round
//! trip acknowledges a batch of jobs and takes the next batch, and Redis pays
//! the fixed price of a script call once per batch instead of once per job.
//!
//! An outcome waits at most for the claim loop's call in flight (one round
//! trip) plus a few scheduler turns. Until it is written the job stays among
//! the running ones, so its lease keeps being renewed; if the process dies
//! first, the outcomes waiting here are lost and those jobs run again once
//! their leases run out, as after any crash.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::slot::Slot;
use crate::queue::{ClaimedJob, Settlement};

/// A finished job whose outcome is not written yet.
pub(super) struct Finished {
    pub(super) job: Arc<ClaimedJob>,
    pub(super) settlement: Settlement,
    /// The slot the job ran in: handed to a job claimed in the same call,
    /// or freed once the outcome is written.
    pub(super) slot: Slot,
    /// The job's span, to log the outcome in.
    pub(super) span: tracing::Span,
    /// Failed attempts to write the outcome so far.
    pub(super) tries: u32,
    /// Where the written outcome is counted.
    pub(super) meter: super::meter::Meter,
}

/// The outcomes waiting for one queue's claim loop.
#[derive(Debug, Default)]
pub(super) struct Acks {
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Default)]
struct State {
    waiting: Vec<Finished>,
    /// The claim loop has stopped: outcomes are written by their own tasks.
    closed: bool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("waiting", &self.waiting.len())
            .field("closed", &self.closed)
            .finish()
    }
}

impl Acks {
    /// Leaves an outcome for the claim loop; gives it back when the loop
    /// has stopped (shutdown): the caller then writes it itself.
    #[must_use = "an outcome given back must be written by the caller"]
    pub(super) fn push(&self, finished: Finished) -> Option<Finished> {
        let mut state = self.state.lock().expect("acks lock");
        if state.closed {
            return Some(finished);
        }
        state.waiting.push(finished);
        drop(state);
        self.ready.notify_one();
        None
    }

    /// How many outcomes wait.
    pub(super) fn len(&self) -> usize {
        self.state.lock().expect("acks lock").waiting.len()
    }

    /// Takes up to `max` of the outcomes waiting, oldest first.
    pub(super) fn take(&self, max: usize) -> Vec<Finished> {
        let mut state = self.state.lock().expect("acks lock");
        let n = state.waiting.len().min(max);
        let rest = state.waiting.split_off(n);
        std::mem::replace(&mut state.waiting, rest)
    }

    /// Puts back outcomes whose write failed, ahead of the newer ones.
    pub(super) fn put_back(&self, mut finished: Vec<Finished>) {
        let mut state = self.state.lock().expect("acks lock");
        finished.append(&mut state.waiting);
        state.waiting = finished;
    }

    /// Stops taking outcomes and returns those still waiting.
    pub(super) fn close(&self) -> Vec<Finished> {
        let mut state = self.state.lock().expect("acks lock");
        state.closed = true;
        std::mem::take(&mut state.waiting)
    }

    /// Resolves when an outcome was left since the last call.
    pub(super) async fn ready(&self) {
        self.ready.notified().await;
    }
}
