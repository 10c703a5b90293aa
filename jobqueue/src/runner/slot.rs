//! Slots: what one running job holds, a permit of the runner's global limit
//! and one of its queue's, so neither limit is ever exceeded.
//!
//! With weights or a strict order ([`RunnerBuilder::weights`],
//! [`RunnerBuilder::strict_order`](super::RunnerBuilder::strict_order)), an
//! [`Arbiter`] decides which queue a freed global slot goes to when several
//! want one: by weighted fair queuing (each queue's virtual time advances by
//! 1/weight per slot it takes, and the queue furthest behind goes next), or
//! strictly in the listed order. Only queues with work compete: one waiting
//! for a slot, or one whose last claim got every job it asked for (a
//! backlog) and that has room under its own concurrency. An idle queue
//! holds nothing back, and no queue with a weight starves.
//!
//! [`RunnerBuilder::weights`]: super::RunnerBuilder::weights

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{QueueRt, Shared};

/// A global slot and a queue slot: what one running job holds.
pub(super) struct Slot {
    _global: OwnedSemaphorePermit,
    _queue: OwnedSemaphorePermit,
}

/// How a runner's queues share its global slots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Sharing {
    /// By weight: each lane's weight.
    Weighted,
    /// The lower lane first, always.
    Strict,
}

/// Shares global slots among the queues (lanes) that want them.
#[derive(Debug)]
pub(super) struct Arbiter {
    sharing: Sharing,
    lanes: Mutex<Vec<Lane>>,
    changed: Notify,
    /// How far behind the furthest lane a lane that was idle may start, in
    /// virtual time: it catches up at most this much at once.
    slack: f64,
}

#[derive(Debug)]
struct Lane {
    weight: f64,
    /// Slots taken, each counted 1/weight.
    vtime: f64,
    /// Claim loops of this lane waiting in `slot` (with their queue slot).
    waiting: usize,
    /// The lane's last claim got every job it asked for: more wait.
    backlog: bool,
    /// The lane's own slots (its queue's concurrency).
    own: Arc<Semaphore>,
}

impl Lane {
    /// True when the lane would take a slot now.
    fn wants(&self) -> bool {
        self.waiting > 0 || (self.backlog && self.own.available_permits() > 0)
    }
}

impl Arbiter {
    /// An arbiter for lanes of these weights (all above zero) and own
    /// slots, in order.
    pub(super) fn new(
        sharing: Sharing,
        lanes: Vec<(f64, Arc<Semaphore>)>,
        concurrency: usize,
    ) -> Self {
        let lightest = lanes.iter().map(|l| l.0).fold(f64::INFINITY, f64::min);
        Self {
            sharing,
            lanes: Mutex::new(
                lanes
                    .into_iter()
                    .map(|(weight, own)| Lane {
                        weight,
                        vtime: 0.0,
                        waiting: 0,
                        backlog: false,
                        own,
                    })
                    .collect(),
            ),
            changed: Notify::new(),
            slack: concurrency as f64 / lightest,
        }
    }

    /// True when `lane` may take a slot now: no other lane waiting for one
    /// is ahead of it (behind in virtual time, or earlier in strict order).
    fn turn(&self, lanes: &[Lane], lane: usize) -> bool {
        let mine = &lanes[lane];
        lanes.iter().enumerate().all(|(i, other)| {
            i == lane
                || !other.wants()
                || match self.sharing {
                    Sharing::Strict => i > lane,
                    Sharing::Weighted => {
                        other.vtime + 1.0 / other.weight > mine.vtime + 1.0 / mine.weight
                            || (other.vtime + 1.0 / other.weight == mine.vtime + 1.0 / mine.weight
                                && i > lane)
                    }
                }
        })
    }

    /// Counts one slot taken by `lane`.
    fn charge(lanes: &mut [Lane], lane: usize) {
        lanes[lane].vtime += 1.0 / lanes[lane].weight;
    }

    /// How many of `n` slots `lane` already holds (those of its finished
    /// jobs) it may keep for its next jobs; each kept is charged. The rest
    /// go back to the runner's pool for a lane whose turn it is.
    pub(super) fn keep(&self, lane: usize, n: usize) -> usize {
        let mut lanes = self.lanes.lock().expect("arbiter lock");
        let mut kept = 0;
        while kept < n && self.turn(&lanes, lane) {
            Self::charge(&mut lanes, lane);
            kept += 1;
        }
        kept
    }

    /// Records whether `lane`'s last claim left a backlog (got every job it
    /// asked for); a lane without one does not hold others back.
    pub(super) fn backlog(&self, lane: usize, backlog: bool) {
        let mut lanes = self.lanes.lock().expect("arbiter lock");
        if lanes[lane].backlog != backlog {
            lanes[lane].backlog = backlog;
            drop(lanes);
            self.changed.notify_waiters();
        }
    }

    /// Marks `lane` as waiting for a slot until the guard drops; a lane back
    /// from idle starts no further behind the others than the slack.
    fn want(self: &Arc<Self>, lane: usize) -> Waiting {
        let mut lanes = self.lanes.lock().expect("arbiter lock");
        let front = lanes.iter().map(|l| l.vtime).fold(0.0, f64::max);
        let floor = front - self.slack;
        let l = &mut lanes[lane];
        if !l.wants() && l.vtime < floor {
            l.vtime = floor;
        }
        l.waiting += 1;
        drop(lanes);
        self.changed.notify_waiters();
        Waiting {
            arbiter: Arc::clone(self),
            lane,
        }
    }
}

/// A lane's claim loop waiting for a slot; dropping it stops the wait.
struct Waiting {
    arbiter: Arc<Arbiter>,
    lane: usize,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut lanes = self.arbiter.lanes.lock().expect("arbiter lock");
        lanes[self.lane].waiting -= 1;
        drop(lanes);
        self.arbiter.changed.notify_waiters();
    }
}

/// Waits for a free slot, global and for the queue; `None` on shutdown.
pub(super) async fn slot(
    shared: &Shared,
    q: &QueueRt,
    shutdown: &CancellationToken,
) -> Option<Slot> {
    let queue = tokio::select! {
        permit = Arc::clone(&q.slots).acquire_owned() => permit.ok()?,
        () = shutdown.cancelled() => return None,
    };
    let Some(arbiter) = &shared.arbiter else {
        let global = tokio::select! {
            permit = Arc::clone(&shared.slots).acquire_owned() => permit.ok()?,
            () = shutdown.cancelled() => return None,
        };
        return Some(Slot {
            _global: global,
            _queue: queue,
        });
    };
    let _waiting = arbiter.want(q.lane);
    loop {
        let changed = arbiter.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let my_turn = {
            let lanes = arbiter.lanes.lock().expect("arbiter lock");
            arbiter.turn(&lanes, q.lane)
        };
        if my_turn {
            // Our turn: take the next global slot that frees, unless the
            // turn passes meanwhile (another lane starts waiting).
            tokio::select! {
                permit = Arc::clone(&shared.slots).acquire_owned() => {
                    let global = permit.ok()?;
                    let mut lanes = arbiter.lanes.lock().expect("arbiter lock");
                    if arbiter.turn(&lanes, q.lane) {
                        Arbiter::charge(&mut lanes, q.lane);
                        drop(lanes);
                        arbiter.changed.notify_waiters();
                        return Some(Slot { _global: global, _queue: queue });
                    }
                    // Not ours any more: the permit goes back, to the lane
                    // whose turn it is.
                }
                () = &mut changed => {}
                () = shutdown.cancelled() => return None,
            }
        } else {
            tokio::select! {
                () = &mut changed => {}
                () = shutdown.cancelled() => return None,
            }
        }
    }
}

/// A free slot if there is one right now (and, with an arbiter, it is this
/// queue's turn).
pub(super) fn try_slot(shared: &Shared, q: &QueueRt) -> Option<Slot> {
    let queue = Arc::clone(&q.slots).try_acquire_owned().ok()?;
    if let Some(arbiter) = &shared.arbiter {
        let mut lanes = arbiter.lanes.lock().expect("arbiter lock");
        if !arbiter.turn(&lanes, q.lane) {
            return None;
        }
        let global = Arc::clone(&shared.slots).try_acquire_owned().ok()?;
        Arbiter::charge(&mut lanes, q.lane);
        return Some(Slot {
            _global: global,
            _queue: queue,
        });
    }
    let global = Arc::clone(&shared.slots).try_acquire_owned().ok()?;
    Some(Slot {
        _global: global,
        _queue: queue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lanes(weights: &[f64]) -> Vec<(f64, Arc<Semaphore>)> {
        weights
            .iter()
            .map(|w| (*w, Arc::new(Semaphore::new(10))))
            .collect()
    }

    #[test]
    fn weighted_turns_follow_the_weights_among_waiting_lanes() {
        let arbiter = Arc::new(Arbiter::new(Sharing::Weighted, lanes(&[3.0, 1.0]), 10));
        let _a = arbiter.want(0);
        let _b = arbiter.want(1);
        let mut taken = [0usize; 2];
        for _ in 0..4000 {
            let lane = if arbiter.keep(0, 1) == 1 {
                0
            } else {
                assert_eq!(arbiter.keep(1, 1), 1);
                1
            };
            taken[lane] += 1;
        }
        assert_eq!(taken, [3000, 1000]);
    }

    #[test]
    fn a_lane_alone_takes_every_slot_and_a_strict_order_never_yields() {
        let arbiter = Arc::new(Arbiter::new(Sharing::Weighted, lanes(&[3.0, 1.0]), 10));
        assert_eq!(arbiter.keep(1, 50), 50, "nobody else waits");
        arbiter.backlog(0, true);
        assert!(
            arbiter.keep(1, 50) < 50,
            "a lane with a backlog takes its share"
        );
        let strict = Arc::new(Arbiter::new(Sharing::Strict, lanes(&[1.0, 1.0]), 10));
        let _first = strict.want(0);
        assert_eq!(strict.keep(1, 5), 0, "the first lane waits");
        assert_eq!(strict.keep(0, 5), 5);
    }
}
