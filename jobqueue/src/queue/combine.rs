//! Enqueues of single jobs from many tasks at once, combined into few script
//! calls. The first caller of an idle queue writes its job at once, alone;
//! jobs submitted while a call is in flight wait, and one task sends them
//! together (in chunks, as `submit_many` does) once that call has answered.
//!
//! The waiting jobs are sent by a spawned task, never by a caller's future:
//! a caller that is dropped mid-call must not strand the jobs of others.

use std::sync::Mutex;

use tokio::sync::oneshot;

use super::Queue;
use super::enqueue::{Checked, ENQUEUE_CHUNK_BYTES, ENQUEUE_CHUNK_JOBS, Enqueued};
use crate::error::{Error, Result};

/// The single-job enqueues of one queue (shared by its clones).
#[derive(Debug, Default)]
pub(super) struct Combiner {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    waiting: Vec<(Checked, oneshot::Sender<Result<Option<String>>>)>,
    /// A call is in flight (a lone caller's, or the sending task's): new
    /// jobs wait for the sending task.
    busy: bool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("waiting", &self.waiting.len())
            .field("busy", &self.busy)
            .finish()
    }
}

/// Hands the queue on when the lone caller's call ends, even when its future
/// is dropped mid-call: jobs that arrived meanwhile get a sending task.
struct HandOver<'a>(&'a Queue);

impl Drop for HandOver<'_> {
    fn drop(&mut self) {
        let mut state = self.0.combiner.state.lock().expect("combiner lock");
        if state.waiting.is_empty() {
            state.busy = false;
        } else {
            tokio::spawn(send_waiting(self.0.clone()));
        }
    }
}

impl Queue {
    /// Writes one checked job, combined with the jobs other tasks submit
    /// meanwhile; says what was written once its call has answered.
    pub(super) async fn submit_combined(&self, job: Checked) -> Result<Enqueued> {
        let id = job.id.clone();
        let (job, receiver) = {
            let mut state = self.combiner.state.lock().expect("combiner lock");
            if state.busy {
                let (sender, receiver) = oneshot::channel();
                state.waiting.push((job, sender));
                (None, Some(receiver))
            } else {
                state.busy = true;
                (Some(job), None)
            }
        };
        let enqueued = |owner: Option<String>| match owner {
            Some(owner) => Enqueued {
                id: owner,
                existing: true,
            },
            None => Enqueued {
                id: id.clone(),
                existing: false,
            },
        };
        if let Some(job) = job {
            let _hand_over = HandOver(self);
            let mut duplicates = self.write_chunk(std::slice::from_ref(&job)).await?;
            return Ok(enqueued(duplicates.pop().map(|(_, owner)| owner)));
        }
        match receiver.expect("a job either goes now or waits").await {
            Ok(written) => written.map(enqueued),
            Err(_) => Err(Error::malformed(
                "enqueue",
                "the task sending combined enqueues ended without an answer",
            )),
        }
    }
}

/// Sends the waiting jobs of `queue`, a chunk per call, until none wait.
async fn send_waiting(queue: Queue) {
    loop {
        let chunk = {
            let mut state = queue.combiner.state.lock().expect("combiner lock");
            if state.waiting.is_empty() {
                state.busy = false;
                return;
            }
            let mut n = 0;
            let mut bytes = 0;
            while n < state.waiting.len()
                && n < ENQUEUE_CHUNK_JOBS
                && (n == 0 || bytes + state.waiting[n].0.bytes <= ENQUEUE_CHUNK_BYTES)
            {
                bytes += state.waiting[n].0.bytes;
                n += 1;
            }
            let rest = state.waiting.split_off(n);
            std::mem::replace(&mut state.waiting, rest)
        };
        let (jobs, senders): (Vec<Checked>, Vec<_>) = chunk.into_iter().unzip();
        let written = queue.write_chunk(&jobs).await;
        for (n, sender) in senders.into_iter().enumerate() {
            let answer = match &written {
                Ok(duplicates) => Ok(duplicates
                    .iter()
                    .find(|(i, _)| *i == n)
                    .map(|(_, owner)| owner.clone())),
                Err(e) => Err(share(e)),
            };
            let _ = sender.send(answer);
        }
    }
}

/// The error of a combined call, for each of its callers.
fn share(error: &Error) -> Error {
    match error {
        Error::Redis(e) => Error::Redis(e.clone()),
        other => Error::malformed("enqueue", other.to_string()),
    }
}
